// SPDX-License-Identifier: MIT
// An in-process fake guest agent on a real unix socket, for host-side tests.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/common/message_stream.hpp"

namespace qxa::test {

namespace pb = ::quantix::agent::v1;

/// A ping request (the request id is the client's to set).
inline pb::Envelope ping_request(std::uint64_t nonce = 1) {
  pb::Envelope e;
  e.mutable_ping()->set_nonce(nonce);
  return e;
}

/// The HelloAck a guest answers `hello` with (agent pid 4242).
inline pb::Envelope hello_ack_for(const pb::Envelope& hello) {
  pb::Envelope ack;
  ack.set_reply_to(hello.request_id());
  ack.set_session_id(hello.session_id());
  ack.mutable_hello_ack()->set_session_id(hello.session_id());
  ack.mutable_hello_ack()->set_agent_pid(4242);
  return ack;
}

enum class behaviour {
  answer,        // answers every request with a Pong (an exec with one partial reply first),
                 // a TimeRequest with its clock
  hold,          // reads requests, answers nothing
  stop_reading,  // handshakes, then never reads again
};

/// Listens on `path`, handshakes with each client and then behaves as told. Exposes the
/// accepted streams so that a test can close them.
struct fake_guest {
  using stream = common::message_stream<asio::local::stream_protocol::socket>;

  fake_guest(asio::io_context& io, const std::string& path, behaviour b)
      : acceptor(io, asio::local::stream_protocol::endpoint(path)), mode(b) {
    asio::co_spawn(io, serve(), asio::detached);
  }

  asio::awaitable<void> serve() {
    for (;;) {
      auto [ec, socket] =
          co_await acceptor.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      auto s = stream::create(std::move(socket));
      s->start();
      streams.push_back(s);
      asio::co_spawn(acceptor.get_executor(), talk(s), asio::detached);
    }
  }

  asio::awaitable<void> talk(std::shared_ptr<stream> s) {
    for (;;) {
      auto r = co_await s->receive();
      if (!r) co_return;
      if (r->has_hello()) {
        (void)s->post(hello_ack_for(*r));
        if (on_handshake) on_handshake(*s);
        if (mode == behaviour::stop_reading) co_return;
        continue;
      }
      ++requests_seen;
      if (mode == behaviour::answer && r->has_exec_request()) {
        // A command's output comes first, as partial replies.
        pb::Envelope partial;
        partial.set_reply_to(r->request_id());
        partial.set_session_id(r->session_id());
        partial.set_more(true);
        partial.mutable_exec_output()->set_data("output");
        (void)s->post(partial);
      }
      if (mode == behaviour::answer && r->has_time_request()) {
        // A clock that can be set: it keeps the offset from this host's that it was set to.
        const auto& t = r->time_request();
        if (t.set()) {
          clock_offset = std::chrono::nanoseconds(t.set_unix_ns() - unix_ns_now());
          ++clock_sets;
        }
        pb::Envelope reply;
        reply.set_reply_to(r->request_id());
        reply.set_session_id(r->session_id());
        reply.mutable_time_reply()->set_unix_ns(unix_ns_now() + clock_offset.count());
        reply.mutable_time_reply()->set_was_set(t.set());
        (void)s->post(reply);
        continue;
      }
      if (mode == behaviour::answer) {
        pb::Envelope pong;
        pong.set_reply_to(r->request_id());
        pong.set_session_id(r->session_id());
        pong.mutable_pong()->set_unix_ns(unix_ns_now() + clock_offset.count());
        (void)s->post(pong);
      }
    }
  }

  asio::local::stream_protocol::acceptor acceptor;
  behaviour mode;
  std::vector<std::shared_ptr<stream>> streams;
  std::function<void(stream&)> on_handshake;
  int requests_seen = 0;
  std::chrono::nanoseconds clock_offset{0};  ///< of this guest's clock from this host's
  int clock_sets = 0;                        ///< TimeRequests that set the clock

  static std::int64_t unix_ns_now() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
};

}  // namespace qxa::test
