// SPDX-License-Identifier: MIT
// The client side of the control socket: qx-agent, and programs that embed qxa::host. One
// reader hands each response to the call it answers, so calls run concurrently.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "qxa/common/error.hpp"
#include "qxa/host/control.hpp"

namespace qxa::host {

/// A connection to qx-agentd's control socket.
class control_client {
 public:
  explicit control_client(asio::any_io_executor ex) : ex_(std::move(ex)) {}
  /// Fails with the connect error (the daemon is not running, or we may not talk to it).
  asio::awaitable<std::error_code> connect(const std::string& path);
  /// Sends one request and waits for its response (the first, for a watch). call() and stream()
  /// support Asio cancellation: the awaiting coroutine's cancellation ends them at once with
  /// `cancelled`, a VmCall is cancelled in the daemon (and so in the guest), and nothing of the
  /// call is left behind.
  asio::awaitable<common::result<pb::ControlMessage>> call(pb::ControlMessage request,
                                                           std::chrono::nanoseconds timeout);
  /// Sends a watch (or a VmCall with stream_progress) and hands each response to `on_message`
  /// until it returns false, the daemon ends the stream or the connection closes. Returns the
  /// error that ended it, if any. `on_sent` learns the request id (for cancel()).
  asio::awaitable<std::error_code> stream(
      pb::ControlMessage request, std::function<bool(const pb::ControlMessage&)> on_message,
      std::function<void(std::uint64_t)> on_sent = {},
      std::optional<std::chrono::nanoseconds> timeout = std::nullopt);
  /// Asks the daemon to cancel a VmCall of this connection.
  void cancel(std::uint64_t request_id);
  /// Waits (up to `timeout`) until every queued request is written; true when they were.
  asio::awaitable<bool> flush(std::chrono::nanoseconds timeout);
  /// Calls waiting for a response.
  [[nodiscard]] std::size_t pending_calls() const noexcept { return pending_->size(); }

 private:
  struct pending;
  using pending_map = std::map<std::uint64_t, std::shared_ptr<pending>>;
  static asio::awaitable<void> read_loop(std::shared_ptr<control_stream> stream,
                                         std::shared_ptr<pending_map> calls);

  asio::any_io_executor ex_;
  std::shared_ptr<control_stream> stream_;
  std::shared_ptr<pending_map> pending_ = std::make_shared<pending_map>();
  std::uint64_t next_id_ = 1;
};

}  // namespace qxa::host
