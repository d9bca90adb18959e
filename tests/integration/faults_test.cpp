// SPDX-License-Identifier: MIT
// Fault injection at process level: the real agent, the real qx-agentd and qx-agent, with a
// relay between daemon and agent that damages the stream, and processes killed mid-transfer.
// What must hold throughout: every call ends with a reply or a definite error, within its
// deadline, exactly once; nothing partial is left behind; the agent never needs a restart.
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "qxa/guest/core/log_text.hpp"
#include "support/cli.hpp"
#include "support/control_calls.hpp"
#include "support/daemon.hpp"
#include "support/fake_host.hpp"
#include "support/fault_proxy.hpp"
#include "support/files.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/run.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::cli_bin;
using qxa::test::control_calls;
using qxa::test::fault_proxy;
using qxa::test::file_sha256;
using qxa::test::temp_dir;
using qxa::test::write_random_file;
using json = nlohmann::json;
namespace fs = std::filesystem;
namespace pb = quantix::agent::v1;
using asio::awaitable;

namespace {

/// One VM: its agent listens in `agents`, the relay where the daemon looks (`vms`).
struct relayed_vm {
  relayed_vm(const temp_dir& agents, const temp_dir& vms, const std::string& name)
      : vm(name),
        agent_socket(agents / (name + ".sock")),
        agent(qxa::test::start_agent(agent_socket, "200ms")),
        relay(vms / (name + ".agent.sock"), agent_socket) {}
  std::string vm;
  std::string agent_socket;
  std::unique_ptr<child_process> agent;
  fault_proxy relay;
};

json status_of(const temp_dir& run, const std::string& vm) {
  auto r = qxa::test::run_command(
      {cli_bin, "--json", "--control-socket", run / "ctl.sock", "status"}, 10s);
  REQUIRE(r.status == 0);
  const auto all = json::parse(r.out);
  for (const auto& v : all["vms"]) {
    if (v["vm"] == vm) return v;
  }
  FAIL("no VM " << vm << " in the status");
  return {};
}

/// Polls the daemon's status until the VM is ready again (a reconnect after damage).
bool becomes_ready(const temp_dir& run, const std::string& vm) {
  return qxa::test::wait_vm_state(run / "ctl.sock", vm, "ready", 15s);
}

pb::Envelope ping_request() {
  pb::Envelope e;
  e.mutable_ping()->set_nonce(1);
  return e;
}

pb::Envelope exec_request(const std::string& shell) {
  pb::Envelope e;
  e.mutable_exec_request()->set_shell_command(shell);
  return e;
}

pb::Envelope read_request(const std::string& path) {
  pb::Envelope e;
  e.mutable_file_read_request()->set_path(path);
  return e;
}

/// Sends a mixed load through the daemon for `length`, keeping `width` calls in flight, and
/// waits for every answer. Returns the calls' accounting.
struct load_report {
  std::size_t calls = 0, ok = 0, errors = 0, strays = 0, unanswered = 0;
  double worst_ms = 0;
};

load_report drive(const temp_dir& run, const std::string& vm, std::chrono::milliseconds length,
                  std::size_t width, std::chrono::milliseconds call_timeout,
                  const std::string& read_path) {
  asio::io_context io;
  control_calls calls(qxa::test::connect_now(io, run / "ctl.sock"));
  load_report rep;
  qxa::test::run_on(
      io,
      [&]() -> awaitable<void> {
        asio::steady_timer t(co_await asio::this_coro::executor);
        const auto until = std::chrono::steady_clock::now() + length;
        std::size_t n = 0;
        while (std::chrono::steady_clock::now() < until) {
          while (calls.open() < width) {
            switch (n++ % 4) {
              case 0:
                calls.start(vm, "ping", ping_request(), call_timeout);
                break;
              case 1:
                calls.start(vm, "exec", exec_request("seq 1 2000"), call_timeout, true);
                break;
              case 2:
                calls.start(vm, "read", read_request(read_path), call_timeout, true);
                break;
              default: {
                pb::Envelope info;
                info.mutable_info_request();
                calls.start(vm, "info", info, call_timeout);
              }
            }
          }
          t.expires_after(2ms);
          co_await t.async_wait(asio::use_awaitable);
        }
        // Every call has its deadline; the daemon answers at the latest then (plus a margin for
        // a loaded machine).
        (void)co_await calls.wait_all(std::chrono::steady_clock::now() + call_timeout + 5s);
      },
      length + call_timeout + 30s);
  rep.calls = calls.calls().size();
  rep.strays = calls.strays();
  for (const auto& [id, c] : calls.calls()) {
    if (c.finals == 0) {
      ++rep.unanswered;
      continue;
    }
    c.ok ? ++rep.ok : ++rep.errors;
    rep.worst_ms = std::max(rep.worst_ms,
                            std::chrono::duration<double, std::milli>(c.answered - c.sent).count());
  }
  return rep;
}

}  // namespace

TEST_CASE(
    "garbage injected mid-stream both ways: every call ends once, in time, and the link "
    "recovers",
    "[integration][faults]") {
  temp_dir agents, vms, run;
  relayed_vm vm(agents, vms, "noisy");
  write_random_file(agents / "data.bin", 64u << 10);
  auto daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "noisy", "ready", 10s));

  vm.relay.garbage = true;
  const auto noisy = drive(run, "noisy", 4000ms, 8, 2000ms, agents / "data.bin");
  vm.relay.garbage = false;
  WARN(
      fmt::format("with garbage: {} calls, {} ok, {} definite errors, {} unanswered, {} strays, "
                  "slowest {:.0f} ms; {} garbage bytes injected into {} relayed",
                  noisy.calls, noisy.ok, noisy.errors, noisy.unanswered, noisy.strays,
                  noisy.worst_ms, vm.relay.garbage_bytes.load(), vm.relay.relayed_bytes.load()));
  CHECK(vm.relay.garbage_bytes > 0);
  CHECK(noisy.calls > 20);
  CHECK(noisy.unanswered == 0);
  CHECK(noisy.strays == 0);
  CHECK(noisy.ok > 0);
  CHECK(noisy.worst_ms < 2000 + 3000);  // its deadline, and scheduling slack

  // Clean again: once the daemon is connected (it may have reconnected), everything succeeds.
  REQUIRE(becomes_ready(run, "noisy"));
  const auto clean = drive(run, "noisy", 1500ms, 8, 5000ms, agents / "data.bin");
  WARN(fmt::format("after: {} calls, {} ok", clean.calls, clean.ok));
  CHECK(clean.unanswered == 0);
  CHECK(clean.strays == 0);
  CHECK(clean.ok == clean.calls);
  const auto s = status_of(run, "noisy");
  CHECK(s["state"] == "ready");
  CHECK(s["bad_frames"].get<std::uint64_t>() > 0);  // the daemon saw and counted the damage
  CHECK(vm.agent->running());                       // the agent never needed a restart
  CHECK(vm.agent->count_in_log("agent started") == 1);
}

TEST_CASE("every frame in 1-byte writes, both ways: output and files arrive intact",
          "[integration][faults]") {
  temp_dir agents, vms, run;
  relayed_vm vm(agents, vms, "slow");
  write_random_file(agents / "data.bin", 256u << 10);
  auto daemon = qxa::test::start_daemon(vms, run, "500ms", "2s");
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "slow", "ready", 10s));
  vm.relay.byte_writes = true;
  const std::string ctl = run / "ctl.sock";
  auto down = qxa::test::run_command({cli_bin, "--json", "--control-socket", ctl, "cp",
                                      "slow:" + (agents / "data.bin"), run / "copy.bin"},
                                     120s);
  REQUIRE(down.status == 0);
  CHECK(file_sha256(run / "copy.bin") == file_sha256(agents / "data.bin"));
  auto up = qxa::test::run_command(
      {cli_bin, "--control-socket", ctl, "cp", run / "copy.bin", "slow:" + (agents / "up.bin")},
      120s);
  REQUIRE(up.status == 0);
  CHECK(file_sha256(agents / "up.bin") == file_sha256(agents / "data.bin"));
  auto out = qxa::test::run_command(
      {cli_bin, "--control-socket", ctl, "exec", "slow", "--", "/bin/sh", "-c", "seq 1 20000"},
      60s);
  REQUIRE(out.status == 0);
  CHECK(std::count(out.out.begin(), out.out.end(), '\n') == 20000);
  const auto rep = drive(run, "slow", 1000ms, 4, 10000ms, agents / "data.bin");
  CHECK(rep.unanswered == 0);
  CHECK(rep.strays == 0);
  CHECK(rep.ok == rep.calls);
  WARN(fmt::format(
      "1-byte writes: 256 KiB down in {:.2f} s and up in {:.2f} s, {} mixed calls "
      "all ok, {} bytes relayed",
      std::chrono::duration<double>(down.took).count(),
      std::chrono::duration<double>(up.took).count(), rep.calls, vm.relay.relayed_bytes.load()));
  CHECK(status_of(run, "slow")["bad_frames"] == 0);
}

TEST_CASE("a truncated frame followed by a close, 20 times: each new connection starts clean",
          "[integration][faults]") {
  temp_dir agents, vms, run;
  relayed_vm vm(agents, vms, "cut");
  auto daemon = qxa::test::start_daemon(vms, run, "100ms", "1s");
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "cut", "ready", 10s));
  const std::string ctl = run / "ctl.sock";
  double worst_recovery_ms = 0;
  for (int i = 1; i <= 20; ++i) {
    INFO("cycle " << i);
    const auto session = qxa::test::ready_session(ctl, "cut");
    REQUIRE_FALSE(session.empty());
    vm.relay.truncate_and_close = true;  // the next chunk either way: a heartbeat, telemetry
    const auto cut_at = std::chrono::steady_clock::now();
    REQUIRE_FALSE(qxa::test::wait_new_session(ctl, "cut", session, 10s).empty());
    worst_recovery_ms = std::max(worst_recovery_ms, std::chrono::duration<double, std::milli>(
                                                        std::chrono::steady_clock::now() - cut_at)
                                                        .count());
    // The first request on the new connection succeeds: no stale half frame in either reader.
    auto r = qxa::test::run_command({cli_bin, "--control-socket", ctl, "ping", "cut"}, 10s);
    REQUIRE(r.status == 0);
  }
  WARN(fmt::format("20 truncations: slowest return to ready {:.0f} ms", worst_recovery_ms));
  CHECK(vm.relay.truncations == 20);
  CHECK(vm.agent->running());
  CHECK(vm.agent->count_in_log("agent started") == 1);
  CHECK(vm.agent->count_in_log("host connection ended") >= 20);
}

namespace {

/// The size of the file the agent is writing (an unnamed upload), found through its open file
/// descriptors; 0 while there is none.
std::uintmax_t upload_in_progress(pid_t agent) {
  std::error_code ec;
  std::uintmax_t biggest = 0;
  for (const auto& e : fs::directory_iterator(fmt::format("/proc/{}/fd", agent), ec)) {
    const auto target = fs::read_symlink(e.path(), ec);
    if (ec || target.string().find("(deleted)") == std::string::npos) continue;
    biggest = std::max(biggest, fs::file_size(e.path(), ec));
  }
  return biggest;
}

/// Waits (polling, with a deadline) until the agent's upload has grown past `bytes`.
bool upload_reaches(pid_t agent, std::uintmax_t bytes) {
  return qxa::test::eventually([&] { return upload_in_progress(agent) >= bytes; }, 30s, 2ms);
}

/// Waits (polling, with a deadline) until a file in `dir` has grown past `bytes`.
bool largest_file_reaches(const std::string& dir, std::uintmax_t bytes) {
  return qxa::test::eventually(
      [&] {
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(dir, ec)) {
          if (fs::file_size(e.path(), ec) >= bytes && !ec) return true;
        }
        return false;
      },
      30s, 1ms);
}

std::size_t entries(const std::string& dir) {
  return static_cast<std::size_t>(
      std::distance(fs::directory_iterator(dir), fs::directory_iterator{}));
}

}  // namespace

TEST_CASE(
    "the guest killed during a 64 MiB transfer: nothing partial on either side, and the "
    "restarted agent serves the same copy",
    "[integration][faults]") {
  temp_dir agents, vms, run, guest_files, host_files;
  const std::string ctl = run / "ctl.sock";
  const auto socket = agents / "vm.sock";
  auto agent = qxa::test::start_agent(socket, "200ms");
  fault_proxy relay(vms / "vm.agent.sock", socket);
  auto daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "vm", "ready", 10s));
  auto session = qxa::test::ready_session(ctl, "vm");
  const auto source = host_files / "source.bin";
  write_random_file(source, 64u << 20);

  // Upload: killed when half of it is in the guest.
  child_process up(
      {cli_bin, "--control-socket", ctl, "cp", source, "vm:" + (guest_files / "copy.bin")});
  REQUIRE(upload_reaches(agent->pid(), 32u << 20));
  agent->signal(SIGKILL);
  auto status = up.wait_exit(15s);
  REQUIRE(status.has_value());
  CHECK(*status != 0);
  CHECK(entries(guest_files.path()) == 0);  // not the file, not a temporary one

  // Download: killed while the host is writing.
  agent = qxa::test::start_agent(socket, "200ms");
  session = qxa::test::wait_new_session(ctl, "vm", session, 10s);
  REQUIRE_FALSE(session.empty());
  fs::copy_file(source, guest_files / "served.bin");
  fs::create_directory(host_files / "in");
  // Killed once the host is writing its temporary file, with the relay slowed to a byte a write
  // (64 MiB would take minutes): the agent is surely mid-file then. Killed at a size instead, it
  // could already have sent all of it, held by qx-agentd for a client slower than the agent.
  relay.byte_writes = true;
  child_process down({cli_bin, "--control-socket", ctl, "cp", "vm:" + (guest_files / "served.bin"),
                      host_files / "in/copy.bin"});
  REQUIRE(largest_file_reaches(host_files / "in", 1));
  agent->signal(SIGKILL);
  relay.byte_writes = false;
  status = down.wait_exit(15s);
  REQUIRE(status.has_value());
  CHECK(*status != 0);
  CHECK(entries(host_files / "in") == 0);  // its temporary file is gone

  // The restarted agent (the service manager's job) serves the upload again, whole.
  agent = qxa::test::start_agent(socket, "200ms");
  REQUIRE_FALSE(qxa::test::wait_new_session(ctl, "vm", session, 10s).empty());
  auto again = qxa::test::run_command({cli_bin, "--json", "--control-socket", ctl, "cp", source,
                                       "vm:" + (guest_files / "copy.bin")},
                                      120s);
  REQUIRE(again.status == 0);
  CHECK(file_sha256(guest_files / "copy.bin") == file_sha256(source));
  CHECK(entries(guest_files.path()) == 2);  // copy.bin and served.bin, nothing else
}

TEST_CASE(
    "qx-agentd killed mid-upload and restarted 5 times: the agent keeps running, drops "
    "each partial upload and takes the sixth whole",
    "[integration][faults]") {
  temp_dir agents, vms, run, guest_files, host_files;
  const auto socket = agents / "vm.sock";
  auto agent = qxa::test::start_agent(socket, "200ms");
  fault_proxy relay(vms / "vm.agent.sock", socket);
  const auto source = host_files / "source.bin";
  write_random_file(source, 64u << 20);
  for (int i = 1; i <= 5; ++i) {
    INFO("cycle " << i);
    auto daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
    REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "vm", "ready", 10s));
    child_process up({cli_bin, "--control-socket", run / "ctl.sock", "cp", source,
                      "vm:" + (guest_files / "copy.bin")});
    REQUIRE(upload_reaches(agent->pid(), 8u << 20));
    daemon->signal(SIGKILL);
    REQUIRE(daemon->wait_exit(5s).has_value());
    const auto status = up.wait_exit(15s);
    REQUIRE(status.has_value());
    CHECK(*status != 0);
    REQUIRE(agent->wait_for_log(qxa::guest::log_text::uploads_discarded, 10s, i));
    CHECK(entries(guest_files.path()) == 0);
  }
  auto daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "vm", "ready", 10s));
  auto last = qxa::test::run_command({cli_bin, "--control-socket", run / "ctl.sock", "cp", source,
                                      "vm:" + (guest_files / "copy.bin")},
                                     120s);
  REQUIRE(last.status == 0);
  CHECK(file_sha256(guest_files / "copy.bin") == file_sha256(source));
  CHECK(entries(guest_files.path()) == 1);
  CHECK(agent->running());
  CHECK(agent->count_in_log("agent started") == 1);
}

TEST_CASE(
    "10,000 requests at once, to the agent and through qx-agentd: all answered, the "
    "excess refused with too_many_requests, memory bounded",
    "[integration][faults]") {
  constexpr int total = 10000;
  SECTION("straight to the agent") {
    temp_dir dir;
    auto agent = qxa::test::start_agent(dir / "agent.sock", "200ms");
    asio::io_context io;
    qxa::test::fake_host<qxa::test::unix_socket> host(
        qxa::test::connect_now(io, dir / "agent.sock"));
    int ok = 0, refused = 0, other = 0;
    const auto start = std::chrono::steady_clock::now();
    qxa::test::run_on(
        io,
        [&]() -> awaitable<void> {
          co_await host.handshake();
          std::set<std::uint64_t> ids;
          for (int i = 0; i < total; ++i) {
            ids.insert(co_await host.request(exec_request("sleep 0.05")));
          }
          while (!ids.empty()) {
            auto e = co_await host.next(30s);
            if (e.more() || !ids.erase(e.reply_to())) continue;  // output, events
            if (e.has_exec_result()) {
              ++ok;
            } else if (e.has_error() && e.error().code() == pb::ERROR_CODE_TOO_MANY_REQUESTS) {
              ++refused;
            } else {
              ++other;
            }
          }
        },
        180s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const auto peak = qxa::test::process_peak_rss_bytes(agent->pid());
    WARN(
        fmt::format("agent: {} requests answered in {:.1f} s: {} ran, {} refused with "
                    "too_many_requests, {} other; peak RSS {:.1f} MiB",
                    total, secs, ok, refused, other, static_cast<double>(peak) / (1 << 20)));
    CHECK(ok + refused == total);
    CHECK(other == 0);
    CHECK(ok >= 64);
    CHECK(refused > 0);
#ifndef QXA_SANITIZED  // ASan's shadow memory and quarantine
    CHECK(peak < (64u << 20));
#endif
    CHECK(agent->running());
  }
  SECTION("through qx-agentd") {
    temp_dir vms, run;
    auto agent = qxa::test::start_agent(vms / "vm.agent.sock", "200ms");
    auto daemon = qxa::test::start_daemon(vms, run, "250ms", "2s");
    REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "vm", "ready", 10s));
    asio::io_context io;
    control_calls calls(qxa::test::connect_now(io, run / "ctl.sock"));
    const auto start = std::chrono::steady_clock::now();
    bool all = false;
    qxa::test::run_on(
        io,
        [&]() -> awaitable<void> {
          for (int i = 0; i < total; ++i)
            calls.start("vm", "exec", exec_request("sleep 0.05"), 60s);
          all = co_await calls.wait_all(std::chrono::steady_clock::now() + 120s);
        },
        180s);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    int ok = 0, by_daemon = 0, by_agent = 0, other = 0;
    for (const auto& [id, c] : calls.calls()) {
      if (c.ok) {
        ++ok;
      } else if (c.daemon_error == pb::ERROR_CODE_TOO_MANY_REQUESTS) {
        ++by_daemon;
      } else if (c.agent_error == pb::ERROR_CODE_TOO_MANY_REQUESTS) {
        ++by_agent;
      } else {
        ++other;
        UNSCOPED_INFO("call " << id << ": " << c.message);
      }
    }
    const auto peak = qxa::test::process_peak_rss_bytes(daemon->pid());
    WARN(
        fmt::format("daemon: {} calls answered in {:.1f} s: {} ran, {} refused by the daemon, "
                    "{} by the agent (too_many_requests), {} other, {} strays; daemon peak RSS "
                    "{:.1f} MiB",
                    total, secs, ok, by_daemon, by_agent, other, calls.strays(),
                    static_cast<double>(peak) / (1 << 20)));
    CHECK(all);
    CHECK(calls.strays() == 0);
    CHECK(ok + by_daemon + by_agent == total);
    CHECK(other == 0);
    CHECK(ok >= 64);
#ifndef QXA_SANITIZED
    CHECK(peak < (128u << 20));
#endif
    auto r =
        qxa::test::run_command({cli_bin, "--control-socket", run / "ctl.sock", "ping", "vm"}, 10s);
    CHECK(r.status == 0);
  }
}
