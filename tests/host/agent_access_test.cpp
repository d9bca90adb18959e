// SPDX-License-Identifier: MIT
// agent_access, as a program that embeds qxa::host uses it: the same calls and the same errors
// straight to a socket and through a daemon.
#include "qxa/host/agent_access.hpp"

#include <catch2/catch.hpp>

#include "qxa/host/agent_manager.hpp"
#include "qxa/host/control_server.hpp"
#include "support/fake_guest.hpp"
#include "support/run.hpp"
#include "support/temp_dir.hpp"

namespace qc = qxa::common;
namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using namespace std::chrono_literals;
using asio::awaitable;
using qxa::test::behaviour;
using qxa::test::fake_guest;
using qxa::test::ping_request;
using qxa::test::run_async;
using qxa::test::temp_dir;

TEST_CASE(
    "agent_access straight to a socket: a call, a status, and unavailable with nobody "
    "there",
    "[host]") {
  temp_dir dir;
  run_async([&](asio::io_context& io) -> awaitable<void> {
    fake_guest guest(io, dir / "vm.agent.sock", behaviour::answer);
    guest.clock_offset = -3s;
    auto access = qh::straight_to(io.get_executor(), dir / "vm.agent.sock");
    const auto opened = co_await access->open();
    REQUIRE_FALSE(opened);
    auto pong = co_await access->call("-", ping_request(), 5s);
    REQUIRE(pong);
    CHECK(pong->has_pong());
    auto status = co_await access->status("-");
    REQUIRE(status);
    REQUIRE(status->vms_size() == 1);
    const auto& s = status->vms(0);
    CHECK(s.state() == pb::VM_STATE_READY);
    CHECK(s.agent_pid() == 4242);
    CHECK(s.clock_offset_ms() < -2500);  // what its Pong said
    CHECK(s.clock_offset_ms() > -3500);

    auto nobody = qh::straight_to(io.get_executor(), dir / "none.agent.sock");
    const auto failed = co_await nobody->open();
    REQUIRE(failed);
    CHECK(failed->code == qc::errc::unavailable);
    CHECK_THAT(failed->message, Catch::Contains("none.agent.sock"));
  });
}

TEST_CASE("agent_access through a daemon: a call, and the daemon's refusals as local errors",
          "[host]") {
  temp_dir dir;
  run_async([&](asio::io_context& io) -> awaitable<void> {
    auto none = qh::through_daemon(io.get_executor(), dir / "no-daemon.sock");
    const auto refused = co_await none->open();
    REQUIRE(refused);
    CHECK(refused->code == qc::errc::unavailable);
    CHECK_THAT(refused->message, Catch::Contains("is the daemon running?"));

    fake_guest guest(io, dir / "vm1.agent.sock", behaviour::answer);
    qh::manager_options o;
    o.socket_dir = dir.path();
    auto manager = qh::agent_manager::create(io.get_executor(), o);
    REQUIRE_FALSE(manager->start());
    auto server = qh::control_server::create(io.get_executor(), dir / "ctl.sock", manager);
    REQUIRE_FALSE(server->listen());
    server->start();
    auto access = qh::through_daemon(io.get_executor(), dir / "ctl.sock");
    REQUIRE_FALSE(co_await access->open());
    // The VM's first connection may still be on its way: ready within the test's deadline.
    qc::result<pb::Envelope> pong = qc::errc::unavailable;
    while (!pong) {
      pong = co_await access->call("vm1", ping_request(), 5s);
      if (!pong) {
        CHECK(pong.code() == qc::errc::unavailable);
        co_await qxa::test::sleep_for(10ms);
      }
    }
    CHECK(pong->has_pong());
    auto unknown = co_await access->call("vm9", ping_request(), 5s);
    REQUIRE_FALSE(unknown);
    CHECK(unknown.code() == qc::errc::unavailable);  // the daemon's UNAVAILABLE, mapped back
    CHECK_THAT(unknown.error().message, Catch::Contains("no VM named 'vm9'"));
    auto status = co_await access->status("vm1");
    REQUIRE(status);
    REQUIRE(status->vms_size() == 1);
    CHECK(status->vms(0).state() == pb::VM_STATE_READY);
    server->stop();
    manager->stop();
  });
}
