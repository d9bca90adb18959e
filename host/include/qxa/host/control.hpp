// SPDX-License-Identifier: MIT
// The daemon's control socket: the server side in qx-agentd, the client side for qx-agent and
// for programs that embed qxa::host. Same framing as the agent channel, ControlMessage bodies.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/common/message_stream.hpp"
#include "qxa/host/agent_manager.hpp"

namespace qxa::host {

using control_stream =
    common::message_stream<asio::local::stream_protocol::socket, pb::ControlMessage>;

inline constexpr const char* default_control_socket = "/run/quantix-kvm/qx-agentd.sock";

/// The error code carried on the wire for a local error.
pb::ErrorCode wire_code(std::error_code ec) noexcept;

class control_server : public std::enable_shared_from_this<control_server> {
 public:
  static std::shared_ptr<control_server> create(asio::any_io_executor ex, std::string path,
                                                std::shared_ptr<agent_manager> manager);
  /// Binds the socket (replacing a stale file, refusing one a live daemon listens on) with
  /// permissions 0660.
  std::optional<common::error_info> listen();
  void start();
  void stop();

 private:
  control_server(asio::any_io_executor ex, std::string path, std::shared_ptr<agent_manager> m);
  asio::awaitable<void> accept_loop();
  struct connection;
  asio::awaitable<void> serve(std::shared_ptr<control_stream> stream);
  asio::awaitable<void> serve_call(std::shared_ptr<connection> conn, pb::ControlMessage m);
  asio::awaitable<void> serve_watch(std::shared_ptr<control_stream> stream, pb::ControlMessage m);

  asio::local::stream_protocol::acceptor acceptor_;
  std::string path_;
  std::shared_ptr<agent_manager> manager_;
  bool bound_ = false;
};

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
