// SPDX-License-Identifier: MIT
// The guest session's rules (request_gate) without I/O, and the session driving real handlers
// over a socketpair: a handler that throws is answered at once, never left to time out.
#include "qxa/guest/core/session.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <variant>

#include "guest/ops_test_support.hpp"
#include "qxa/common/envelope.hpp"
#include "qxa/common/message_stream.hpp"
#include "qxa/guest/core/request_gate.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::guest::request_gate;
using qxa::test::handler_bench;
using qxa::test::run_async;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
namespace ops = qxa::guest::ops;

namespace {

constexpr std::uint64_t session_a = 0xaaaa;
constexpr std::uint64_t session_b = 0xbbbb;

asio::awaitable<pb::Envelope> answer_nothing(qxa::guest::request_context, pb::Envelope) {
  co_return pb::Envelope{};
}

// A handler that fails the way a resource shortage would, after it has started waiting.
asio::awaitable<pb::Envelope> throw_after_a_wait(qxa::guest::request_context, pb::Envelope) {
  co_await asio::post(asio::use_awaitable);
  throw std::system_error(EMFILE, std::system_category(), "child_process::wait");
}

// A table of test handlers: info answers, exec (own deadline) and time throw, telemetry runs
// while frozen.
constexpr std::array test_table = {
    qg::operation{pb::Envelope::kPing, "ping", &answer_nothing, false, true},
    qg::operation{pb::Envelope::kInfoRequest, "info", &answer_nothing},
    qg::operation{pb::Envelope::kTelemetryRequest, "telemetry", &answer_nothing, false, true},
    qg::operation{pb::Envelope::kFileWriteOpen, "file-write", &answer_nothing},
    qg::operation{pb::Envelope::kFileWriteChunk, "file-write", &answer_nothing},
    qg::operation{pb::Envelope::kExecRequest, "exec", &throw_after_a_wait, true},
    qg::operation{pb::Envelope::kTimeRequest, "time", &throw_after_a_wait},
};

pb::Envelope hello(std::uint64_t id, std::uint64_t session, std::uint32_t max_frame = 0) {
  pb::Envelope e;
  e.set_request_id(id);
  e.set_session_id(session);
  e.mutable_hello()->set_session_id(session);
  if (max_frame != 0) e.mutable_hello()->mutable_limits()->set_max_frame_bytes(max_frame);
  return e;
}

template <typename Body>
pb::Envelope request(std::uint64_t id, std::uint64_t session, Body set_body) {
  pb::Envelope e;
  e.set_request_id(id);
  e.set_session_id(session);
  set_body(e);
  return e;
}

pb::Envelope info(std::uint64_t id, std::uint64_t session = session_a) {
  return request(id, session, [](pb::Envelope& e) { e.mutable_info_request(); });
}
pb::Envelope session_ping(std::uint64_t id, std::uint64_t session = session_a) {
  return request(id, session, [](pb::Envelope& e) { e.mutable_ping(); });
}

using host_stream = qxa::common::message_stream<asio::posix::stream_descriptor>;

// A session running `table` over a socketpair, and the host's end of it, started.
struct running_session {
  std::shared_ptr<host_stream> host;
  std::shared_ptr<qg::session> session;
};
running_session start_session(asio::io_context& io, qg::agent_state& state,
                              qg::operation_table table) {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  auto agent_end = qg::guest_stream::create(asio::posix::stream_descriptor(io, fds[0]));
  auto host = host_stream::create(asio::posix::stream_descriptor(io, fds[1]));
  host->start();
  auto s = std::make_shared<qg::session>(state, agent_end, table);
  asio::co_spawn(io, s->run(), asio::detached);
  return {host, s};
}

template <typename A>
const A& as(const request_gate::action& a) {
  REQUIRE(std::holds_alternative<A>(a));
  return std::get<A>(a);
}

}  // namespace

TEST_CASE("the gate: replies and events from the host are ignored, all else needs a session",
          "[unit][guest]") {
  qg::local_policy policy;
  qg::inflight_limit limit(64);
  request_gate gate(test_table, policy, limit);
  pb::Envelope reply = info(0);
  reply.set_reply_to(5);
  as<request_gate::ignore>(gate.on_envelope(reply, false));
  as<request_gate::ignore>(gate.on_envelope(info(0), false));  // request id 0: an event
  auto no = as<request_gate::refuse>(gate.on_envelope(info(1), false));
  CHECK(no.why == request_gate::reason::no_session);
  CHECK(no.code == pb::ERROR_CODE_NO_SESSION);
  // Not even a cancel or a ping is served before the Hello.
  CHECK(as<request_gate::refuse>(gate.on_envelope(session_ping(2), false)).code ==
        pb::ERROR_CODE_NO_SESSION);
  CHECK(gate.session() == 0);
}

TEST_CASE("the gate: a Hello opens, repeats or replaces a session, and only ids that agree",
          "[unit][guest]") {
  qg::local_policy policy;
  qg::inflight_limit limit(64);
  request_gate gate(test_table, policy, limit);
  auto bad = hello(1, session_a);
  bad.mutable_hello()->set_session_id(session_b);
  CHECK(as<request_gate::refuse>(gate.on_envelope(bad, false)).why ==
        request_gate::reason::bad_hello);
  CHECK(as<request_gate::refuse>(gate.on_envelope(hello(2, 0), false)).why ==
        request_gate::reason::bad_hello);
  CHECK(gate.session() == 0);

  auto opened = as<request_gate::open_session>(gate.on_envelope(hello(3, session_a), false));
  CHECK(opened.session == session_a);
  CHECK_FALSE(opened.repeated);
  CHECK(opened.replaced == 0);
  auto again = as<request_gate::open_session>(gate.on_envelope(hello(4, session_a), false));
  CHECK(again.repeated);
  CHECK(again.replaced == 0);
  auto next = as<request_gate::open_session>(gate.on_envelope(hello(5, session_b), false));
  CHECK(next.replaced == session_a);
  CHECK(gate.is_current(session_b));
  CHECK_FALSE(gate.is_current(session_a));

  auto stale = as<request_gate::refuse>(gate.on_envelope(info(6, session_a), false));
  CHECK(stale.why == request_gate::reason::stale_session);
  CHECK(stale.code == pb::ERROR_CODE_STALE_SESSION);
  CHECK_THAT(stale.message, Catch::Contains("000000000000aaaa"));
}

TEST_CASE("the gate: a host's frame limit is kept, never below what an error needs",
          "[unit][guest]") {
  qg::local_policy policy;
  qg::inflight_limit limit(64);
  request_gate gate(test_table, policy, limit);
  as<request_gate::open_session>(gate.on_envelope(hello(1, session_a), false));
  CHECK(gate.host_max_frame() == 0);
  as<request_gate::open_session>(gate.on_envelope(hello(2, session_a, 100), false));
  CHECK(gate.host_max_frame() == 4096);
  as<request_gate::open_session>(gate.on_envelope(hello(3, session_a, 1u << 20), false));
  CHECK(gate.host_max_frame() == 1u << 20);
}

TEST_CASE("the gate: unknown, refused by policy, frozen, and over the in-flight limit",
          "[unit][guest]") {
  qg::local_policy policy;
  policy.block = {"info"};
  qg::inflight_limit limit(2);
  request_gate gate(test_table, policy, limit);
  as<request_gate::open_session>(gate.on_envelope(hello(1, session_a), false));

  auto unknown = request(2, session_a, [](pb::Envelope& e) { e.mutable_power_request(); });
  CHECK(as<request_gate::refuse>(gate.on_envelope(unknown, false)).code ==
        pb::ERROR_CODE_UNKNOWN_REQUEST);

  auto blocked = as<request_gate::refuse>(gate.on_envelope(info(3), false));
  CHECK(blocked.why == request_gate::reason::policy);
  CHECK(blocked.code == pb::ERROR_CODE_PERMISSION_DENIED);
  CHECK_FALSE(blocked.rule.empty());
  CHECK(std::string(blocked.operation) == "info");

  // Frozen: what writes waits; what only reads, ping and cancel go on.
  auto time = request(4, session_a, [](pb::Envelope& e) { e.mutable_time_request(); });
  auto frozen = as<request_gate::refuse>(gate.on_envelope(time, true));
  CHECK(frozen.code == pb::ERROR_CODE_FAILED_PRECONDITION);
  CHECK(frozen.rule == "frozen");
  auto telemetry = request(5, session_a, [](pb::Envelope& e) { e.mutable_telemetry_request(); });
  CHECK(as<request_gate::run>(gate.on_envelope(telemetry, true)).entry->request ==
        pb::Envelope::kTelemetryRequest);
  as<request_gate::answer_ping>(gate.on_envelope(session_ping(6), true));
  auto cancel =
      request(7, session_a, [](pb::Envelope& e) { e.mutable_cancel_request()->set_request_id(5); });
  CHECK(as<request_gate::cancel>(gate.on_envelope(cancel, true)).target == 5);
  // A credit, like a cancel, goes through while frozen and takes no slot.
  auto credit = request(9, session_a, [](pb::Envelope& e) {
    e.mutable_stream_credit()->set_request_id(5);
    e.mutable_stream_credit()->set_replies(2);
  });
  const auto given = as<request_gate::credit>(gate.on_envelope(credit, true));
  CHECK(given.target == 5);
  CHECK(given.replies == 2);

  // Two in flight (telemetry and this one, each holding its slot); a third waits for a slot;
  // pings never do. A slot is given back when the request that held it ends.
  std::optional<request_gate::action> held =
      gate.on_envelope(telemetry, false);  // the run above let its slot go at once
  auto second = gate.on_envelope(time, false);
  as<request_gate::run>(second);
  CHECK(gate.inflight() == 2);
  CHECK(limit.count() == 2);  // the limit the ports share
  auto busy = as<request_gate::refuse>(gate.on_envelope(time, false));
  CHECK(busy.code == pb::ERROR_CODE_TOO_MANY_REQUESTS);
  as<request_gate::answer_ping>(gate.on_envelope(session_ping(8), false));
  held.reset();
  CHECK(gate.inflight() == 1);
  {
    auto third = gate.on_envelope(time, false);
    as<request_gate::run>(third);
    CHECK(gate.inflight() == 2);
  }
  second = request_gate::ignore{};
  CHECK(gate.inflight() == 0);
}

TEST_CASE("the gate lists each capability once, cancel and stream-credit", "[unit][guest]") {
  qg::local_policy policy;
  qg::inflight_limit limit(64);
  request_gate gate(test_table, policy, limit);
  const auto caps = gate.capabilities();
  CHECK(std::count(caps.begin(), caps.end(), "file-write") == 1);
  CHECK(std::count(caps.begin(), caps.end(), "cancel") == 1);
  CHECK(std::count(caps.begin(), caps.end(), "stream-credit") == 1);
  CHECK(caps.size() == 8);
  request_gate real(ops::table(), policy, limit);
  const auto all = real.capabilities();
  for (const auto& c : all) CHECK(std::count(all.begin(), all.end(), c) == 1);
}

TEST_CASE("a handler that throws is answered INTERNAL at once, and frees its slot",
          "[unit][guest]") {
  run_async([](asio::io_context& io) -> asio::awaitable<void> {
    qg::agent_options options;
    options.request_timeout = 30s;  // a timeout would take this long
    options.max_inflight_requests = 1;
    handler_bench bench(io.get_executor(), options);
    auto [host, s] = start_session(io, bench.state, test_table);

    auto ready = co_await host->receive();  // the agent announces itself first
    REQUIRE(ready);
    CHECK(ready->has_agent_ready());
    // Never co_await inside a Catch macro: GCC evaluates the expression more than once there.
    auto sent = co_await host->send(hello(1, session_a));
    REQUIRE_FALSE(sent);
    auto ack = co_await host->receive();
    REQUIRE(ack);
    REQUIRE(ack->has_hello_ack());
    CHECK(ack->hello_ack().capabilities_size() == 8);

    // exec bounds its own run time: without the guard it would never be answered at all;
    // time would be answered TIMEOUT after 30 s. One slot: the second needs the first's back.
    for (std::uint64_t id : {2, 3, 4}) {
      auto body = id == 3
                      ? request(id, session_a, [](pb::Envelope& e) { e.mutable_time_request(); })
                      : request(id, session_a, [](pb::Envelope& e) {
                          e.mutable_exec_request()->add_argv("/bin/true");
                        });
      sent = co_await host->send(body);
      REQUIRE_FALSE(sent);
      auto r = co_await host->receive();
      REQUIRE(r);
      CHECK(r->reply_to() == id);
      REQUIRE(r->has_error());
      CHECK(r->error().code() == pb::ERROR_CODE_INTERNAL);
      CHECK_THAT(r->error().message(), Catch::Contains("failed inside the agent"));
    }
    // The session goes on.
    sent = co_await host->send(info(5));
    REQUIRE_FALSE(sent);
    auto r = co_await host->receive();
    REQUIRE(r);
    CHECK(r->reply_to() == 5);
    CHECK_FALSE(r->has_error());
    host->close();
  });
}

TEST_CASE(
    "a paced request sends no more partial replies than its window until the host gives credit, "
    "and pings pass meanwhile",
    "[unit][guest]") {
  qxa::test::temp_dir dir;
  const auto file = dir.write("data", std::string(16 * 4096, 'q'));
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor());
    auto [host, s] = start_session(io, bench.state, ops::table());
    auto got = co_await host->receive();  // AgentReady
    REQUIRE(got);
    auto sent = co_await host->send(hello(1, session_a));
    REQUIRE_FALSE(sent);
    got = co_await host->receive();
    REQUIRE(got);
    REQUIRE(got->has_hello_ack());

    auto read = request(2, session_a, [&](pb::Envelope& e) {
      e.mutable_file_read_request()->set_path(file);
      e.mutable_file_read_request()->set_chunk_bytes(4096);
    });
    read.set_stream_window(2);
    sent = co_await host->send(read);
    REQUIRE_FALSE(sent);
    int chunks = 0;
    // The next message after a ping: a chunk, or the pong when the agent waits for credit.
    std::uint64_t next_id = 3;
    auto chunks_before_pong = [&]() -> asio::awaitable<int> {
      const auto id = next_id++;
      auto ping_sent = co_await host->send(session_ping(id));
      REQUIRE_FALSE(ping_sent);
      int seen = 0;
      for (;;) {
        auto m = co_await host->receive();
        REQUIRE(m);
        if (m->has_pong()) {
          CHECK(m->reply_to() == id);
          co_return seen;
        }
        REQUIRE(m->has_file_chunk());
        REQUIRE(m->more());
        ++seen;
      }
    };
    auto credit = [&](std::uint32_t replies) -> asio::awaitable<void> {
      auto e = request(next_id++, session_a, [&](pb::Envelope& c) {
        c.mutable_stream_credit()->set_request_id(2);
        c.mutable_stream_credit()->set_replies(replies);
      });
      auto credit_sent = co_await host->send(e);
      REQUIRE_FALSE(credit_sent);
    };
    // Two chunks, then the agent waits: pings are answered with nothing behind them.
    for (int i = 0; i < 2; ++i) {
      auto m = co_await host->receive();
      REQUIRE(m);
      REQUIRE(m->has_file_chunk());
      ++chunks;
    }
    auto seen = co_await chunks_before_pong();
    CHECK(seen == 0);
    seen = co_await chunks_before_pong();
    CHECK(seen == 0);
    // One credit: one chunk more, and no other.
    co_await credit(1);
    auto third = co_await host->receive();
    REQUIRE(third);
    REQUIRE(third->has_file_chunk());
    ++chunks;
    seen = co_await chunks_before_pong();
    CHECK(seen == 0);
    // Enough for the rest: the chunks, then the final reply.
    co_await credit(100);
    for (;;) {
      auto m = co_await host->receive();
      REQUIRE(m);
      if (!m->more()) {
        REQUIRE(m->has_file_read_result());
        CHECK(m->file_read_result().size() == 16 * 4096);
        break;
      }
      ++chunks;
    }
    CHECK(chunks == 16);
    host->close();
  });
}
