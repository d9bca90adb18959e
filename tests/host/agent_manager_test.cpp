// SPDX-License-Identifier: MIT
// agent_manager with in-process fake guests in a socket directory: one VM's failure stays its own.
#include "qxa/host/agent_manager.hpp"

#include <asio/post.hpp>
#include <catch2/catch.hpp>
#include <stdexcept>
#include <string>

#include "support/fake_guest.hpp"
#include "support/run.hpp"
#include "support/temp_dir.hpp"

namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using namespace std::chrono_literals;
using asio::awaitable;
using qxa::test::behaviour;
using qxa::test::fake_guest;
using qxa::test::ping_request;
using qxa::test::run_async;
using qxa::test::sleep_for;
using qxa::test::temp_dir;

namespace {

// Waits (polling the manager's own status, a few ms apart) until `vm` is ready with a session
// other than `not_session`; returns that session, or 0 at the deadline.
awaitable<std::uint64_t> ready_session(qh::agent_manager& m, const std::string& vm,
                                       std::uint64_t not_session = 0,
                                       std::chrono::steady_clock::duration deadline = 10s) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    auto report = m.status(vm);
    if (report.vms_size() == 1 && report.vms(0).state() == pb::VM_STATE_READY &&
        report.vms(0).session_id() != not_session) {
      co_return report.vms(0).session_id();
    }
    co_await sleep_for(5ms);
  }
  co_return 0;
}

pb::Envelope exec_request() {
  pb::Envelope e;
  e.mutable_exec_request()->add_argv("/bin/true");
  return e;
}

}  // namespace

TEST_CASE("an exception in one VM's connection is contained: the others go on, it reconnects",
          "[host]") {
  temp_dir dir;
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest a(io, dir / "a.agent.sock", behaviour::answer);
    fake_guest b(io, dir / "b.agent.sock", behaviour::answer);
    qh::manager_options o;
    o.socket_dir = dir.path();
    o.heartbeat_interval = 50ms;
    o.reconnect_initial = 20ms;
    auto m = qh::agent_manager::create(io.get_executor(), o);
    REQUIRE_FALSE(m->start());
    const auto first = co_await ready_session(*m, "a");
    REQUIRE(first != 0);
    REQUIRE(co_await ready_session(*m, "b") != 0);

    // A caller's progress callback that throws runs inside VM a's reader: the reader ends,
    // and with it that one connection.
    qh::call_options throwing;
    throwing.on_progress = [](const pb::Envelope&) {
      throw std::runtime_error("a consumer's bug");
    };
    auto failed = co_await m->call("a", exec_request(), std::move(throwing));
    CHECK(failed.code() == qxa::common::errc::connection_lost);

    // The daemon's io_context is still running (run_async would have seen the exception), VM b
    // answers at once, and VM a comes back with a new session.
    auto pong = co_await m->call("b", ping_request(7));
    REQUIRE(pong);
    CHECK(pong->has_pong());
    const auto second = co_await ready_session(*m, "a", first);
    CHECK(second != 0);
    auto again = co_await m->call("a", ping_request(7));
    REQUIRE(again);
    CHECK(again->has_pong());
    auto status = m->status("a");
    REQUIRE(status.vms_size() == 1);
    CHECK(status.vms(0).reconnects() >= 1);
    m->stop();
  });
}

TEST_CASE("a guest whose clock a pause left 30 s behind has it set once, counted and shown",
          "[host][clock]") {
  temp_dir dir;
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest late(io, dir / "late.agent.sock", behaviour::answer);
    fake_guest fine(io, dir / "fine.agent.sock", behaviour::answer);
    late.clock_offset = -30s;
    fine.clock_offset = -500ms;  // within max_offset: its own business
    qh::manager_options o;
    o.socket_dir = dir.path();
    o.heartbeat_interval = 20ms;
    auto m = qh::agent_manager::create(io.get_executor(), o);
    REQUIRE_FALSE(m->start());
    REQUIRE(co_await ready_session(*m, "late") != 0);
    REQUIRE(co_await ready_session(*m, "fine") != 0);

    // Waits until the late guest's clock was set and ten more heartbeats went by.
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    std::uint64_t heartbeats_after = 0;
    while (std::chrono::steady_clock::now() < deadline && heartbeats_after < 10) {
      if (late.clock_sets > 0) ++heartbeats_after;
      co_await sleep_for(20ms);
    }
    CHECK(late.clock_sets == 1);  // once, not at every heartbeat
    CHECK(fine.clock_sets == 0);
    CHECK(std::chrono::abs(late.clock_offset) < 1s);
    const auto report = m->status();
    REQUIRE(report.vms_size() == 2);
    for (const auto& s : report.vms()) {
      INFO(s.vm());
      if (s.vm() == "late") {
        CHECK(s.clock_corrections() == 1);
        CHECK(std::abs(s.clock_offset_ms()) < 1000);  // measured again after the set
      } else {
        CHECK(s.clock_corrections() == 0);
        CHECK(s.clock_offset_ms() < -400);
        CHECK(s.clock_offset_ms() > -600);
      }
      CHECK(s.clock_correction_failures() == 0);
    }
    m->stop();
  });
}
