// SPDX-License-Identifier: MIT
// The guest end of the channel. A port hands out one byte stream per period of host presence.
//
// device: the virtio-serial char device. While no host is connected, poll() reports POLLHUP and
//   read() returns 0 at once, so presence is polled on a timer (never a busy loop). The device is
//   closed when a host goes away and opened again, which also discards bytes an old host left in
//   the guest's buffer. EBUSY (another process holds the port) and a missing device are retried
//   with backoff.
// unix-listen: a unix socket served one client at a time, the way QEMU presents the chardev to
//   the host; for tests, benchmarks and the demo.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "qxa/common/error.hpp"

namespace qxa::guest {

using port_stream = asio::posix::stream_descriptor;

inline constexpr const char* default_port_path = "/dev/virtio-ports/org.quantix.agent.0";

struct port_spec {
  enum class kind { device, unix_listen };
  kind type = kind::device;
  std::string path = default_port_path;

  /// "unix-listen:PATH" or a device path.
  static common::result<port_spec> parse(std::string_view text);
  [[nodiscard]] std::string to_string() const;
};

struct port_options {
  /// How often a device port checks whether a host has connected.
  std::chrono::nanoseconds host_poll_interval = std::chrono::milliseconds(100);
  /// Retry delays for EBUSY and a missing device: doubling from the first to the cap.
  std::chrono::nanoseconds retry_initial = std::chrono::milliseconds(100);
  std::chrono::nanoseconds retry_max = std::chrono::seconds(2);
};

class port {
 public:
  virtual ~port() = default;
  /// Completes when a host is present, with the stream to talk to it (the caller owns and
  /// closes it). Retries on its own without spinning; fails only for errors that retrying cannot
  /// fix (a unix-listen path that cannot be bound). Not thread-safe.
  virtual asio::awaitable<common::result<port_stream>> wait_for_host() = 0;
  /// Stops listening and removes what the port created (the unix socket file).
  virtual void close() = 0;
  [[nodiscard]] virtual std::string describe() const = 0;
};

/// Creates the port. For unix-listen the socket is bound here, so that a bad path fails at
/// start-up with a clear message.
common::result<std::unique_ptr<port>> open_port(const asio::any_io_executor& ex,
                                                const port_spec& spec, port_options options = {});

}  // namespace qxa::guest
