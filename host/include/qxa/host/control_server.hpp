// SPDX-License-Identifier: MIT
// The server side of the control socket, in qx-agentd: one coroutine per connection, one per
// call; a connection's calls are cancelled when it closes.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <memory>
#include <optional>
#include <string>

#include "qxa/common/error.hpp"
#include "qxa/host/agent_manager.hpp"
#include "qxa/host/control.hpp"

namespace qxa::host {

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

}  // namespace qxa::host
