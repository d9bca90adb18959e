// SPDX-License-Identifier: MIT
// A scriptable host end for guest tests: connects to an agent, handshakes, sends requests and
// reads what comes back, with a deadline on every step. Reading can be stopped entirely (to
// stall the agent's writes) and resumed.
#pragma once

#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <random>
#include <string>

#include "qxa/common/message_stream.hpp"
#include "qxa/common/version.hpp"
#include "support/run.hpp"

namespace qxa::test {

namespace pb = ::quantix::agent::v1;

/// Connects to a unix socket. Tests first wait for the agent's "agent started" log line, which
/// it writes after binding, so there is nothing to retry.
inline asio::awaitable<unix_socket> connect_unix(const std::string& path) {
  unix_socket s(co_await asio::this_coro::executor);
  auto [ec] = co_await s.async_connect(asio::local::stream_protocol::endpoint(path),
                                       asio::experimental::as_tuple(asio::use_awaitable));
  if (ec) throw std::runtime_error("cannot connect to " + path + ": " + ec.message());
  co_return s;
}

/// Connects at once (the caller knows the socket is listening).
inline unix_socket connect_now(asio::io_context& io, const std::string& path) {
  unix_socket s(io);
  s.connect(asio::local::stream_protocol::endpoint(path));
  return s;
}

/// Waits for `op` or throws when `timeout` passes first.
template <typename T>
asio::awaitable<T> with_deadline(asio::awaitable<T> op, std::chrono::steady_clock::duration timeout,
                                 const char* what) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(timeout);
  auto r = co_await (std::move(op) || t.async_wait(asio::use_awaitable));
  if (r.index() == 1) throw std::runtime_error(std::string("deadline passed waiting for ") + what);
  co_return std::move(std::get<0>(r));
}

template <typename Stream>
class fake_host {
 public:
  using stream_type = common::message_stream<Stream>;

  explicit fake_host(Stream s, common::stream_options o = {}) {
    o.close_on_write_timeout = false;
    stream_ = stream_type::create(std::move(s), o);
    stream_->start();
  }

  ~fake_host() { stream_->close(); }
  fake_host(const fake_host&) = delete;
  fake_host& operator=(const fake_host&) = delete;

  stream_type& stream() { return *stream_; }
  std::uint64_t session() const { return session_; }

  /// Next envelope, within `timeout`.
  asio::awaitable<pb::Envelope> next(std::chrono::steady_clock::duration timeout = 10s) {
    auto r = co_await with_deadline(stream_->receive(), timeout, "a message from the agent");
    if (!r) throw std::runtime_error("agent stream ended: " + r.error().describe());
    co_return std::move(r.value());
  }

  /// Next envelope that answers `request_id`, skipping events and other replies.
  asio::awaitable<pb::Envelope> reply_to(std::uint64_t request_id,
                                         std::chrono::steady_clock::duration timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto e = co_await next(deadline - std::chrono::steady_clock::now());
      if (e.reply_to() == request_id) co_return e;
    }
  }

  /// Sends Hello with a fresh session id and waits for the HelloAck. Like qx-agentd, says Hello
  /// again when the agent announces itself meanwhile (it may have dropped the first one with the
  /// buffer an earlier host left behind).
  asio::awaitable<pb::HelloAck> handshake(std::chrono::steady_clock::duration timeout = 10s) {
    session_ = random_session();
    pb::Envelope e;
    e.set_request_id(++last_id_);
    e.set_session_id(session_);
    auto* h = e.mutable_hello();
    h->set_session_id(session_);
    h->set_protocol_version(common::protocol_version);
    h->set_software_version("fake-host");
    co_await send(e);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto reply = co_await next(deadline - std::chrono::steady_clock::now());
      if (reply.has_agent_ready()) {
        co_await send(e);
        continue;
      }
      if (reply.reply_to() != e.request_id()) continue;
      if (!reply.has_hello_ack()) {
        throw std::runtime_error(std::string("expected hello_ack, got ") +
                                 common::body_name(reply));
      }
      co_return reply.hello_ack();
    }
  }

  /// Sends a request stamped with `session` (default: the current one); returns its id.
  asio::awaitable<std::uint64_t> request(pb::Envelope e,
                                         std::optional<std::uint64_t> session = {}) {
    e.set_request_id(++last_id_);
    e.set_session_id(session.value_or(session_));
    co_await send(e);
    co_return e.request_id();
  }

  asio::awaitable<void> send(const pb::Envelope& e) {
    auto ec = co_await stream_->send(e);
    if (ec) throw std::runtime_error("send failed: " + ec.message());
  }

  static pb::Envelope ping() {
    pb::Envelope e;
    e.mutable_ping()->set_nonce(7);
    return e;
  }

  static std::uint64_t random_session() {
    static std::mt19937_64 rng{std::random_device{}()};
    std::uint64_t v = 0;
    while (v == 0) v = rng();
    return v;
  }

 private:
  std::shared_ptr<stream_type> stream_;
  std::uint64_t session_ = 0;
  std::uint64_t last_id_ = 0;
};

}  // namespace qxa::test
