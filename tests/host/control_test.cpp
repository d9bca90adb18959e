// SPDX-License-Identifier: MIT
// The control socket's client and server in one process, with a fake guest behind the manager.
#include "qxa/host/control_client.hpp"
#include "qxa/host/control_server.hpp"

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/post.hpp>
#include <catch2/catch.hpp>
#include <optional>

#include "support/fake_guest.hpp"
#include "support/run.hpp"
#include "support/temp_dir.hpp"

namespace qh = qxa::host;
namespace qc = qxa::common;
namespace pb = quantix::agent::v1;
using namespace std::chrono_literals;
using asio::awaitable;
using qxa::test::behaviour;
using qxa::test::fake_guest;
using qxa::test::run_async;
using qxa::test::sleep_for;
using qxa::test::temp_dir;

namespace {

pb::ControlMessage exec_call(const std::string& vm, std::uint32_t timeout_ms) {
  pb::ControlMessage m;
  auto* call = m.mutable_vm_call();
  call->set_vm(vm);
  call->set_timeout_ms(timeout_ms);
  call->mutable_request()->mutable_exec_request()->add_argv("/bin/sleep");
  return m;
}

}  // namespace

TEST_CASE("a cancelled control call ends at once with cancelled and leaves nothing behind",
          "[host]") {
  temp_dir dir;
  run_async([&](asio::io_context& io) -> awaitable<void> {
    // The guest reads requests and answers none: only the daemon's own deadline (300 ms) would
    // end the call, and its answer arrives after the caller has gone.
    fake_guest guest(io, dir / "vm.agent.sock", behaviour::hold);
    qh::manager_options o;
    o.socket_dir = dir.path();
    o.heartbeat_interval = 10s;
    auto manager = qh::agent_manager::create(io.get_executor(), o);
    REQUIRE_FALSE(manager->start());
    auto server = qh::control_server::create(io.get_executor(), dir / "control.sock", manager);
    REQUIRE_FALSE(server->listen());
    server->start();
    while (manager->status("vm").vms(0).state() != pb::VM_STATE_READY) co_await sleep_for(5ms);

    qh::control_client client(io.get_executor());
    auto connected = co_await client.connect(dir / "control.sock");
    REQUIRE_FALSE(connected);
    asio::cancellation_signal cancel;
    std::optional<qc::result<pb::ControlMessage>> outcome;
    asio::co_spawn(
        io,
        [&]() -> awaitable<void> {
          outcome.emplace(co_await client.call(exec_call("vm", 300), 10s));
        },
        asio::bind_cancellation_slot(cancel.slot(), asio::detached));
    while (guest.requests_seen < 1) co_await sleep_for(1ms);  // the call reached the guest
    CHECK(client.pending_calls() == 1);
    cancel.emit(asio::cancellation_type::terminal);
    while (!outcome) co_await asio::post(asio::use_awaitable);
    REQUIRE_FALSE(*outcome);
    CHECK(outcome->code() == qc::errc::cancelled);
    CHECK(client.pending_calls() == 0);
    // The cancel travelled: the daemon cancelled the call in the guest (its second request).
    while (guest.requests_seen < 2) co_await sleep_for(1ms);
    // Whatever the daemon still sends for it lands nowhere (ASan would see a write into the
    // ended call's frame); the connection serves the next call.
    co_await sleep_for(400ms);
    pb::ControlMessage query;
    query.mutable_status_query();
    auto status = co_await client.call(query, 5s);
    REQUIRE(status);
    CHECK(status->has_status_report());
    CHECK(client.pending_calls() == 0);
    server->stop();
    manager->stop();
  });
}
