// SPDX-License-Identifier: MIT
#include "qxa/host/metrics_server.hpp"

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <charconv>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"

namespace qxa::host {

using common::errc;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::size_t max_request_bytes = 8192;
constexpr auto request_deadline = std::chrono::seconds(5);

}  // namespace

common::result<asio::ip::tcp::endpoint> parse_listen_address(const std::string& text) {
  using R = common::result<asio::ip::tcp::endpoint>;
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) {
    return R{errc::invalid_argument, fmt::format("'{}': expected ADDR:PORT", text)};
  }
  std::string host = colon == 0 ? "127.0.0.1" : text.substr(0, colon);  // ":PORT": loopback
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const auto port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || p != port_text.data() + port_text.size() || port > 65535) {
    return R{errc::invalid_argument, fmt::format("'{}': bad port '{}'", text, port_text)};
  }
  std::error_code aec;
  const auto address = asio::ip::make_address(host, aec);
  if (aec) return R{errc::invalid_argument, fmt::format("'{}': bad address '{}'", text, host)};
  return R{asio::ip::tcp::endpoint(address, static_cast<std::uint16_t>(port))};
}

std::shared_ptr<metrics_server> metrics_server::create(asio::any_io_executor ex,
                                                       std::shared_ptr<agent_manager> manager) {
  return std::shared_ptr<metrics_server>(new metrics_server(std::move(ex), std::move(manager)));
}

metrics_server::metrics_server(asio::any_io_executor ex, std::shared_ptr<agent_manager> manager)
    : acceptor_(ex), manager_(std::move(manager)), freed_(acceptor_.get_executor()) {}

std::optional<common::error_info> metrics_server::listen(const asio::ip::tcp::endpoint& at) {
  std::error_code ec;
  acceptor_.open(at.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec) {
    return common::error_info{ec, fmt::format("cannot listen for metrics on {}:{}: {}",
                                              at.address().to_string(), at.port(), ec.message())};
  }
  return std::nullopt;
}

asio::ip::tcp::endpoint metrics_server::local_endpoint() const {
  std::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void metrics_server::start() {
  asio::co_spawn(
      acceptor_.get_executor(), [self = shared_from_this()] { return self->accept_loop(); },
      common::contained("the metrics accept loop"));
}

void metrics_server::stop() {
  std::error_code ignored;
  acceptor_.close(ignored);
  freed_.notify_all();
}

asio::awaitable<void> metrics_server::accept_loop() {
  while (acceptor_.is_open()) {
    // At the cap, nothing more is accepted until one ends (each ends within its deadlines):
    // the rest wait in the kernel's backlog, holding none of the daemon's descriptors, which
    // stay for the control socket and the VMs.
    while (open_ >= max_metrics_connections && acceptor_.is_open()) co_await freed_.wait();
    auto [ec, socket] =
        co_await acceptor_.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor_.is_open()) co_return;
      asio::steady_timer t(acceptor_.get_executor());
      t.expires_after(std::chrono::milliseconds(100));  // out of descriptors, say
      co_await t.async_wait(asio::use_awaitable);
      continue;
    }
    asio::co_spawn(
        acceptor_.get_executor(),
        [self = shared_from_this(), socket = std::move(socket)]() mutable {
          return self->serve(std::move(socket));
        },
        common::contained("a metrics connection"));
  }
}

asio::awaitable<void> metrics_server::serve(asio::ip::tcp::socket socket) {
  ++open_;
  struct counted {
    metrics_server& s;
    ~counted() {
      --s.open_;
      s.freed_.notify_all();
    }
  } const count{*this};
  asio::streambuf buf(max_request_bytes);
  asio::steady_timer deadline(socket.get_executor());
  deadline.expires_after(request_deadline);
  // The request line and headers, bounded in size and time; a body is never read.
  auto got = co_await (asio::async_read_until(socket, buf, "\r\n\r\n",
                                              asio::experimental::as_tuple(asio::use_awaitable)) ||
                       deadline.async_wait(asio::use_awaitable));
  std::string status = "200 OK", body, content_type = "text/plain; version=0.0.4; charset=utf-8";
  if (got.index() == 1) co_return;  // too slow: just close
  if (auto [ec, n] = std::get<0>(got); ec) {
    if (ec != asio::error::not_found) co_return;  // closed early
    status = "431 Request Header Fields Too Large";
    body = "request too large\n";
  } else {
    std::string head(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
    const auto line = head.substr(0, head.find("\r\n"));
    const auto sp1 = line.find(' ');
    const auto sp2 = line.find(' ', sp1 + 1);
    const auto method = line.substr(0, sp1);
    const auto target = sp1 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos ||
        !line.substr(sp2 + 1).starts_with("HTTP/1.")) {
      status = "400 Bad Request";
      body = "bad request\n";
    } else if (method != "GET" && method != "HEAD") {
      status = "405 Method Not Allowed";
      body = "only GET\n";
    } else if (target != "/metrics" && !target.starts_with("/metrics?")) {
      status = "404 Not Found";
      body = "not found; metrics are at /metrics\n";
    } else {
      body = render_metrics(manager_->metrics(), manager_->capacity());
      if (method == "HEAD") {
        const auto length = body.size();
        body.clear();
        std::string response = fmt::format(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: "
            "close\r\n\r\n",
            content_type, length);
        co_await asio::async_write(socket, asio::buffer(response),
                                   asio::experimental::as_tuple(asio::use_awaitable));
        co_return;
      }
    }
    if (!status.starts_with("200")) content_type = "text/plain; charset=utf-8";
  }
  // The head and the body as they are: the body of 10,000 VMs is tens of MiB, not copied again.
  const std::string head = fmt::format(
      "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", status,
      content_type, body.size());
  const std::array<asio::const_buffer, 2> response = {asio::buffer(head), asio::buffer(body)};
  deadline.expires_after(request_deadline);
  co_await (
      asio::async_write(socket, response, asio::experimental::as_tuple(asio::use_awaitable)) ||
      deadline.async_wait(asio::use_awaitable));
  std::error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
}

}  // namespace qxa::host
