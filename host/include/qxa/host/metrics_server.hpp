// SPDX-License-Identifier: MIT
// qx-agentd's Prometheus endpoint: GET /metrics over a minimal HTTP/1.1 server (one request per
// connection, bounded request size and time; 404 for other paths, 405 for other methods; at
// most max_metrics_connections at once), and the parser of its listen address.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qxa/common/async.hpp"
#include "qxa/common/error.hpp"
#include "qxa/host/agent_manager.hpp"
#include "qxa/host/metrics_text.hpp"

namespace qxa::host {

/// Connections served at once; an idle one is closed after 5 s without a whole request.
inline constexpr std::size_t max_metrics_connections = 8;

/// "ADDR:PORT" or "[V6ADDR]:PORT" to an endpoint; ":PORT" means the loopback address.
common::result<asio::ip::tcp::endpoint> parse_listen_address(const std::string& text);

class metrics_server : public std::enable_shared_from_this<metrics_server> {
 public:
  static std::shared_ptr<metrics_server> create(asio::any_io_executor ex,
                                                std::shared_ptr<agent_manager> manager);
  std::optional<common::error_info> listen(const asio::ip::tcp::endpoint& at);
  void start();
  void stop();
  [[nodiscard]] asio::ip::tcp::endpoint local_endpoint() const;

 private:
  metrics_server(asio::any_io_executor ex, std::shared_ptr<agent_manager> manager);
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> serve(asio::ip::tcp::socket socket);

  asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<agent_manager> manager_;
  std::size_t open_ = 0;  ///< connections being served
  common::async_event freed_;
};

}  // namespace qxa::host
