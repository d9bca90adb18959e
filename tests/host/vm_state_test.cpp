// SPDX-License-Identifier: MIT
// vm_state without sockets or timers: what a VM's status says through refusals, a connection,
// heartbeats and restarts, what is logged, and how long the loop waits.
#include "qxa/host/vm_state.hpp"

#include <catch2/catch.hpp>

namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using namespace std::chrono_literals;

namespace {

const std::error_code refused_ec = std::make_error_code(std::errc::connection_refused);
const std::error_code timeout_ec = std::make_error_code(std::errc::timed_out);

pb::HelloAck hello(std::uint32_t pid) {
  pb::HelloAck h;
  h.set_agent_pid(pid);
  h.set_software_version("0.1.0");
  h.set_hostname("web1");
  return h;
}

}  // namespace

TEST_CASE("a stale socket: logged once, counted on every retry, not ready since the first",
          "[host][vm_state]") {
  qh::vm_state vm("web1", "/run/web1.agent.sock", {.initial = 100ms, .max = 400ms});
  CHECK_FALSE(vm.discovered(1000));  // discovery has its own log line
  CHECK(vm.state() == pb::VM_STATE_CONNECTING);
  vm.attempt_started();
  auto first = vm.attempt_failed(refused_ec, true, 1010);
  REQUIRE(first);
  CHECK(first->to == pb::VM_STATE_STALE_SOCKET);
  CHECK_FALSE(first->quiet);
  CHECK_THAT(first->text("web1"),
             Catch::StartsWith("vm web1: connecting -> stale-socket (connection refused"));
  CHECK(vm.next_backoff() == 100ms);
  for (int i = 0; i < 5; ++i) {
    vm.attempt_started();
    CHECK_FALSE(vm.attempt_failed(refused_ec, true, 2000 + i));  // the same state: nothing
  }
  // Backoff doubles to its cap.
  CHECK(vm.next_backoff() == 200ms);
  CHECK(vm.next_backoff() == 400ms);
  CHECK(vm.next_backoff() == 400ms);
  const auto s = vm.status();
  CHECK(s.reconnects() == 5);  // every attempt after the first
  CHECK(s.not_ready_since_unix_ms() == 1000);
  CHECK(s.state_since_unix_ms() == 1010);
  CHECK_THAT(s.last_error(), Catch::Contains("nothing listens"));

  // QEMU is back but its agent times out: handshaking, quietly (still failing), then connecting.
  vm.attempt_started();
  auto accepted = vm.accepted(3000);
  REQUIRE(accepted);
  CHECK(accepted->quiet);
  auto failed = vm.attempt_failed(timeout_ec, false, 3100);
  REQUIRE(failed);
  CHECK(failed->to == pb::VM_STATE_CONNECTING);
  CHECK_FALSE(failed->quiet);                            // a new failure is worth a line
  CHECK(vm.status().not_ready_since_unix_ms() == 1000);  // held across every retry
}

TEST_CASE("ready, lost soon after, lost after a long life: the backoff and what is current",
          "[host][vm_state]") {
  qh::vm_state vm("web1", "/s", {.initial = 100ms, .max = 30s});
  (void)vm.discovered(1000);
  vm.attempt_started();
  REQUIRE(vm.accepted(1001));
  auto ready = vm.connected(hello(42), 0xabc, 1002);
  REQUIRE(ready);
  CHECK(ready->to == pb::VM_STATE_READY);
  auto s = vm.status();
  CHECK(s.not_ready_since_unix_ms() == 0);
  CHECK(s.last_seen_unix_ms() == 1002);
  CHECK(s.agent_pid() == 42);
  CHECK(s.session_id() == 0xabc);
  CHECK(s.last_error().empty());

  CHECK_FALSE(vm.heartbeat_answered(300us, 1500));  // ready already
  (void)vm.next_backoff();
  (void)vm.next_backoff();  // 100 ms, 200 ms used up: the next would be 400 ms

  bool wait_first = false;
  auto lost = vm.connection_ended("end of file", 2s, 3000, wait_first);
  REQUIRE(lost);
  CHECK(lost->why == "connection lost: end of file");
  CHECK(wait_first);  // a connection that ended soon: not retried at once
  s = vm.status();
  CHECK(s.rtt_ms() == 0);  // no longer current
  CHECK(s.last_seen_unix_ms() == 1500);
  CHECK(s.agent_version() == "0.1.0");  // what was seen, kept
  CHECK(s.not_ready_since_unix_ms() == 3000);
  CHECK(vm.next_backoff() == 400ms);

  vm.attempt_started();
  (void)vm.accepted(3100);
  (void)vm.connected(hello(43), 0xdef, 3200);
  (void)vm.connection_ended("end of file", 1h, 4000, wait_first);
  CHECK_FALSE(wait_first);  // it lasted: retried now, the backoff from its start
  CHECK(vm.next_backoff() == 100ms);
  CHECK(vm.status().reconnects() == 1);
}

TEST_CASE("heartbeats: unresponsive once, ready again, the histogram, and a restarted agent",
          "[host][vm_state]") {
  qh::vm_state vm("web1", "/s");
  (void)vm.discovered(1);
  vm.attempt_started();
  (void)vm.accepted(2);
  (void)vm.connected(hello(1), 1, 3);
  CHECK_FALSE(vm.heartbeat_answered(200us, 10));  // ready already: nothing to log
  auto missed = vm.heartbeat_missed(3s, 20);
  REQUIRE(missed);
  CHECK(missed->why == "no heartbeat reply within 3000 ms");
  CHECK_FALSE(vm.heartbeat_missed(3s, 30));  // once
  auto back = vm.heartbeat_answered(2ms, 40);
  REQUIRE(back);
  CHECK(back->why == "heartbeat answered again");
  const auto m = vm.metrics();
  CHECK(m.rtt_count == 2);
  CHECK(m.rtt_sum_seconds == Approx(0.0022));
  CHECK(m.rtt_bucket_counts[1] == 1);  // 200 us: in (100 us, 250 us]
  CHECK(m.rtt_bucket_counts[4] == 1);  // 2 ms: in (1 ms, 2.5 ms]
  CHECK(m.status.last_seen_unix_ms() == 40);

  REQUIRE(vm.agent_restarted(50));
  CHECK(vm.state() == pb::VM_STATE_HANDSHAKING);
  auto session = vm.new_session(hello(2), 7, 60);
  REQUIRE(session);
  CHECK(session->why == "new session with the restarted agent");
  CHECK(vm.status().agent_pid() == 2);
  CHECK(vm.status().session_id() == 7);
}

TEST_CASE("counters of every connection add up, the current one included", "[host][vm_state]") {
  qh::vm_state vm("web1", "/s");
  qh::client_stats first;
  first.timeouts = 2;
  first.sessions = 1;
  first.bad_frames = 3;
  vm.retire(first);
  qh::client_stats current;
  current.timeouts = 1;
  current.sessions = 1;
  current.unknown_replies = 4;
  const auto s = vm.status(current);
  CHECK(s.timeouts() == 3);
  CHECK(s.sessions() == 2);
  CHECK(s.bad_frames() == 3);
  CHECK(s.unknown_replies() == 4);
  CHECK(vm.status().timeouts() == 2);  // without the current connection
  vm.request_done("ping", "ok");
  vm.request_done("ping", "ok");
  vm.clock_set(true);
  vm.clock_set(false);
  const auto m = vm.metrics();
  CHECK(m.requests.at({"ping", "ok"}) == 2);
  CHECK(m.status.clock_corrections() == 1);
  CHECK(m.status.clock_correction_failures() == 1);
}

TEST_CASE("a VM over capacity: connecting, with the reason in status, quietly, until it may try",
          "[host][vm_state]") {
  qh::vm_state vm("web1", "/run/web1.agent.sock");
  CHECK_FALSE(vm.discovered(1000));
  // No descriptor for it: still connecting, so no change to log; status says why.
  CHECK_FALSE(vm.over_capacity(256, 1001));
  CHECK(vm.status().over_capacity());
  CHECK(vm.last_error() == "over capacity: descriptor limit 256");
  // Its turn: it tries, and is over capacity no more.
  vm.attempt_started();
  CHECK_FALSE(vm.status().over_capacity());
  CHECK(vm.status().reconnects() == 0);
  (void)vm.accepted(1002);
  (void)vm.connected(hello(42), 0xabc, 1003);
  CHECK(vm.last_error().empty());
  // A ready VM whose connection ends and finds no descriptor: a quiet change to connecting.
  bool wait_first = false;
  (void)vm.connection_ended("closed", 20s, 21003, wait_first);
  const auto again = vm.over_capacity(256, 21004);
  if (again) CHECK(again->quiet);
  CHECK(vm.state() == pb::VM_STATE_CONNECTING);
  CHECK(vm.status().over_capacity());
}
