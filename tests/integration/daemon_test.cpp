// SPDX-License-Identifier: MIT
// Process-level tests of qx-agentd and qx-agent with real agents: VMs coming and going, the
// command line, bad configurations, systemd notification.
#include "support/daemon.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "qxa/common/message_stream.hpp"
#include "support/cli.hpp"
#include "support/files.hpp"
#include "support/hostile.hpp"
#include "support/notify.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/shipped.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::daemon_status;
using qxa::test::run_cli;
using qxa::test::start_quick_daemon;
using qxa::test::start_vm_agent;
using qxa::test::temp_dir;
using qxa::test::vm_states;
using json = nlohmann::json;

namespace {

const std::string daemon_bin = QXA_AGENTD_PATH;

}  // namespace

TEST_CASE("qx-agentd with 20 agents: kill, restart, stop and continue one of them",
          "[integration][host]") {
  temp_dir vms, run;
  std::vector<std::unique_ptr<child_process>> agents;
  for (int i = 0; i < 20; ++i) agents.push_back(start_vm_agent(vms, fmt::format("vm{:02}", i)));
  auto daemon = start_quick_daemon(vms, run);
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::wait_all_ready(ctl, 20, 10s));
  {
    const auto s = vm_states(daemon_status(run / "ctl.sock"));
    REQUIRE(s.size() == 20);
    for (const auto& [vm, state] : s) CHECK(state == "ready");
  }
  CHECK((std::filesystem::status(run / "ctl.sock").permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
         std::filesystem::perms::group_read | std::filesystem::perms::group_write));

  // SIGKILL: the socket closes, the reader ends, the VM leaves ready at once.
  const auto vm07_session = qxa::test::ready_session(ctl, "vm07");
  REQUIRE_FALSE(vm07_session.empty());
  const auto t0 = std::chrono::steady_clock::now();
  agents[7]->signal(SIGKILL);
#ifdef QXA_SANITIZED
  // Each status poll starts an instrumented qx-agent, which alone takes a good part of 1 s.
  constexpr auto at_once = 3s;
#else
  constexpr auto at_once = 1s;
#endif
  // Connecting, and soon stale-socket (the file stays, nobody listens): a poll may see either.
  REQUIRE(qxa::test::eventually(
      [&] {
        const auto state = qxa::test::required_vm_status(ctl, "vm07")["state"];
        return state == "connecting" || state == "stale-socket";
      },
      at_once));
  CHECK(std::chrono::steady_clock::now() - t0 < at_once);
  auto ping = run_cli({"--control-socket", run / "ctl.sock", "ping", "vm07"});
  CHECK(ping.status == 69);  // unavailable, as the README says; 75 is for a call cut short
  CHECK(ping.took < 1s);
  // Connecting, or already found stale (its socket file stays, nobody listens): not ready.
  CHECK_THAT(ping.err, Catch::Contains("vm vm07 is connecting") ||
                           Catch::Contains("vm vm07 is stale-socket"));
  CHECK(ping.err.find("(unavailable) (unavailable)") == std::string::npos);  // said once
  {
    const auto s = vm_states(daemon_status(run / "ctl.sock"));
    for (const auto& [vm, state] : s) {
      if (vm != "vm07") CHECK(state == "ready");
    }
  }
  auto other = run_cli({"--control-socket", run / "ctl.sock", "ping", "vm08"});
  CHECK(other.status == 0);

  // Restarted, it is ready again within 2 s.
  const auto t1 = std::chrono::steady_clock::now();
  agents[7] = start_vm_agent(vms, "vm07");
  REQUIRE_FALSE(qxa::test::wait_new_session(ctl, "vm07", vm07_session, 2s).empty());
  CHECK(std::chrono::steady_clock::now() - t1 < 2s);
  CHECK(run_cli({"--control-socket", run / "ctl.sock", "ping", "vm07"}).status == 0);

  // SIGSTOP: the socket stays open, only the heartbeat notices.
  agents[3]->signal(SIGSTOP);
  REQUIRE(qxa::test::wait_vm_state(ctl, "vm03", "unresponsive", 3s));
  CHECK(vm_states(daemon_status(run / "ctl.sock"))["vm03"] == "unresponsive");
  agents[3]->signal(SIGCONT);
  REQUIRE(qxa::test::wait_vm_state(ctl, "vm03", "ready", 3s));
  CHECK(daemon->count_in_log("vm vm03: ready -> unresponsive") == 1);  // logged once

  // A VM whose socket disappears is dropped.
  agents[5]->signal(SIGTERM);
  REQUIRE(
      qxa::test::eventually([&] { return vm_states(daemon_status(ctl)).count("vm05") == 0; }, 3s));
  CHECK(daemon->count_in_log("vm vm05: socket removed; dropping the VM") == 1);  // and said so
  auto gone = run_cli({"--control-socket", run / "ctl.sock", "ping", "vm05"});
  CHECK(gone.status == 69);

  daemon->signal(SIGTERM);
  CHECK(daemon->wait_exit(5s) == 0);
  CHECK_FALSE(std::filesystem::exists(run / "ctl.sock"));
}

TEST_CASE(
    "what status says of a VM is true: a stale socket, how long it has been down, what was "
    "last seen, counters that move",
    "[integration][host]") {
  using qxa::test::eventually;
  temp_dir vms;
  temp_dir run;
  // A socket file nobody listens on, as a QEMU that exited leaves it.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string stale = vms / "dead.agent.sock";
    std::strncpy(a.sun_path, stale.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::close(fd);
  }
  auto agent = start_vm_agent(vms, "live");
  auto daemon = start_quick_daemon(vms, run);
  auto vm = [&](const std::string& name) {
    const auto status = daemon_status(run / "ctl.sock");
    for (const auto& v : status["vms"]) {
      if (v["vm"] == name) return v;
    }
    return json{};
  };
  REQUIRE(eventually([&] { return vm("live")["state"] == "ready"; }, 10s));
  REQUIRE(eventually([&] { return vm("dead")["state"] == "stale-socket"; }, 10s));
  CHECK_THAT(vm("dead")["last_error"].get<std::string>(), Catch::Contains("refused"));
  CHECK(vm("dead")["last_seen_unix_ms"] == 0);

  // Retries go on at the backoff (50 ms doubling to 500 ms), each counted, logged once.
  const auto dead_since = vm("dead")["not_ready_since_unix_ms"].get<std::int64_t>();
  CHECK(dead_since > 0);
  REQUIRE(eventually([&] { return vm("dead")["reconnects"].get<int>() >= 4; }, 10s));
  CHECK(vm("dead")["not_ready_since_unix_ms"] == dead_since);
  CHECK(daemon->count_in_log("vm dead: connecting -> stale-socket") == 1);
  CHECK(daemon->count_in_log("vm dead: stale-socket ->") == 0);

  // A fresh connection has answered no stranger's reply, and is one session.
  const auto live = vm("live");
  CHECK(live["unknown_replies"] == 0);
  CHECK(live["reconnects"] == 0);
  CHECK(live["current"] == true);
  CHECK(live["not_ready_since_unix_ms"] == 0);
  auto info = run_cli({"--json", "--control-socket", run / "ctl.sock", "info", "live"});
  REQUIRE(info.status == 0);
  const auto i = json::parse(info.out);
  CHECK(i["sessions"] == 1);
  std::set<std::string> unique;
  for (const auto& c : i["capabilities"]) CHECK(unique.insert(c.get<std::string>()).second);

  // Killed, its socket stays behind: stale, with what was seen of it marked as such.
  const auto version = live["agent_version"].get<std::string>();
  agent->signal(SIGKILL);
  (void)agent->wait_exit(5s);
  REQUIRE(eventually([&] { return vm("live")["state"] == "stale-socket"; }, 10s));
  auto down = vm("live");
  CHECK(down["current"] == false);
  CHECK(down["agent_version"] == version);  // last seen, not current
  CHECK(down["last_seen_unix_ms"].get<std::int64_t>() > 0);
  CHECK(down["rtt_ms"] == 0);
  const auto down_since = down["not_ready_since_unix_ms"].get<std::int64_t>();
  CHECK(down_since > 0);
  const auto attempts = down["reconnects"].get<int>();
  REQUIRE(eventually([&] { return vm("live")["reconnects"].get<int>() >= attempts + 2; }, 10s));
  CHECK(vm("live")["not_ready_since_unix_ms"] == down_since);
  auto table = run_cli({"--control-socket", run / "ctl.sock", "status"});
  CHECK_THAT(table.out, Catch::Contains("SEEN") && Catch::Contains(" ago"));

  // Back: ready, current, the time down cleared.
  agent = start_vm_agent(vms, "live");
  REQUIRE(eventually([&] { return vm("live")["state"] == "ready"; }, 10s));
  CHECK(vm("live")["not_ready_since_unix_ms"] == 0);
  CHECK(vm("live")["current"] == true);
}

TEST_CASE("qx-agent talks to one agent with --connect and no daemon", "[integration][host]") {
  temp_dir vms;
  auto agent = start_vm_agent(vms, "solo");
  const auto sock = vms / "solo.agent.sock";
  auto ping = run_cli({"--connect", sock, "ping", "-"});
  CHECK(ping.status == 0);
  CHECK_THAT(ping.out, Catch::StartsWith("pong from - in"));
  auto info = run_cli({"--json", "--connect", sock, "info", "-"});
  REQUIRE(info.status == 0);
  const auto j = json::parse(info.out);
  CHECK(j["agent_pid"] == agent->pid());
  CHECK_FALSE(j["os"]["kernel_release"].get<std::string>().empty());
  auto telemetry = run_cli({"--json", "--connect", sock, "telemetry", "-"});
  REQUIRE(telemetry.status == 0);
  CHECK(json::parse(telemetry.out)["memory"]["total_bytes"].get<std::uint64_t>() > 0);
  auto status = run_cli({"--connect", sock, "status"});
  CHECK(status.status == 0);
  CHECK_THAT(status.out, Catch::Contains("ready"));
  // The guest clock is this machine's clock here: the offset is within the round trip.
  auto time = run_cli({"--json", "--connect", sock, "time", "-"});
  REQUIRE(time.status == 0);
  const auto t = json::parse(time.out);
  CHECK(std::abs(t["offset_ms"].get<double>()) < 1000);
  CHECK(t["was_set"] == false);
  auto human = run_cli({"--connect", sock, "time", "-"});
  CHECK_THAT(human.out, Catch::StartsWith("guest clock ") && Catch::Contains("ms from this host"));
}

TEST_CASE("qx-agent says clearly when the daemon or agent is not there, and checks its usage",
          "[integration][host]") {
  temp_dir run;
  auto no_daemon = run_cli({"--control-socket", run / "missing.sock", "status"});
  CHECK(no_daemon.status == 69);
  CHECK_THAT(no_daemon.err, Catch::Contains("cannot reach qx-agentd") &&
                                Catch::Contains("is the daemon running?"));
  auto no_agent = run_cli({"--connect", run / "missing.agent.sock", "ping", "-"});
  CHECK(no_agent.status == 69);
  CHECK_THAT(no_agent.err, Catch::Contains("cannot reach the agent"));
  CHECK(run_cli({"ping"}).status == 2);        // missing VM
  CHECK(run_cli({"frobnicate"}).status == 2);  // unknown verb
  CHECK(run_cli({"ping", "vm", "--timeout", "soon"}).status == 2);
  // 5,000 digits: a usage error with a message, not an uncaught exception.
  auto huge = run_cli({"ping", "vm", "--timeout", std::string(5000, '9') + "s"});
  CHECK(huge.status == 2);
  CHECK_THAT(huge.err, Catch::Contains("out of range"));
  auto help = run_cli({"telemetry", "--help"});
  CHECK(help.status == 0);
  CHECK_THAT(help.out, Catch::Contains("--watch"));
  // exec's --timeout has its own default, and its help says which.
  auto exec_help = run_cli({"exec", "--help"});
  CHECK(exec_help.status == 0);
  CHECK_THAT(exec_help.out,
             Catch::Contains("kill the command after this long [60s; with --detach: no limit]"));
  CHECK_THAT(exec_help.out, !Catch::Contains("=10s"));
  // So do the power verbs': the guest's power hooks run before the answer.
  for (const char* verb : {"shutdown", "reboot", "suspend"}) {
    auto power_help = run_cli({verb, "--help"});
    CHECK(power_help.status == 0);
    CHECK_THAT(power_help.out, Catch::Contains("[5m: the guest's power hooks run first]"));
  }
}

TEST_CASE("qx-agentd refuses unusable directories and configs with a clear error",
          "[integration][host]") {
  temp_dir run;
  child_process no_dir({daemon_bin, "--config", "/dev/null", "--socket-dir", run / "nope",
                        "--control-socket", run / "ctl.sock"});
  CHECK(no_dir.wait_exit(10s) == 1);
  no_dir.drain();
  CHECK_THAT(no_dir.log(), Catch::Contains("socket directory") && Catch::Contains("nope"));
  const auto bad = run.write("d.toml", "[heartbeat]\ninterval = \"fast\"\n");
  child_process bad_config({daemon_bin, "--config", bad});
  CHECK(bad_config.wait_exit(10s) == 2);
  bad_config.drain();
  CHECK_THAT(bad_config.log(),
             Catch::Contains("d.toml:2: 'heartbeat.interval' is not a valid duration"));
  const auto huge =
      run.write("h.toml", "[limits]\nrequest_timeout = \"" + std::string(5000, '9') + "s\"\n");
  child_process huge_config({daemon_bin, "--config", huge});
  CHECK(huge_config.wait_exit(10s) == 2);
  huge_config.drain();
  CHECK_THAT(huge_config.log(), Catch::Contains("out of range"));
  // The file the package installs starts the daemon (every key in it commented out).
  child_process shipped({daemon_bin, "--config", qxa::test::shipped_daemon_config, "--socket-dir",
                         run.path(), "--control-socket", run / "shipped.sock"});
  CHECK(shipped.wait_for_log("ready: vm sockets in", 10s));
  child_process no_run_dir({daemon_bin, "--config", "/dev/null", "--socket-dir", run.path(),
                            "--control-socket", run / "missing/dir/ctl.sock"});
  CHECK(no_run_dir.wait_exit(10s) == 1);
  no_run_dir.drain();
  CHECK_THAT(no_run_dir.log(), Catch::Contains("cannot listen on control socket"));
}

TEST_CASE("qx-agentd tells systemd it is ready, alive and stopping, and reloads on SIGHUP",
          "[integration][host]") {
  temp_dir vms, run;
  qxa::test::notify_listener notify(run / "notify.sock");
  const auto config = run.write("qx-agentd.toml", "[heartbeat]\ninterval = \"1s\"\n");
  child_process daemon({daemon_bin, "--config", config, "--socket-dir", vms.path(),
                        "--control-socket", run / "ctl.sock"},
                       {"NOTIFY_SOCKET=" + (run / "notify.sock"), "WATCHDOG_USEC=200000"});
  REQUIRE(notify.wait_for("READY=1", 5000ms));
  REQUIRE(notify.wait_for("WATCHDOG=1", 1000ms));  // every 100 ms: half of WATCHDOG_USEC
  REQUIRE(notify.wait_for("WATCHDOG=1", 1000ms));

  run.write("qx-agentd.toml", "log_level = \"debug\"\n[heartbeat]\ninterval = \"2s\"\n");
  daemon.signal(SIGHUP);
  REQUIRE(daemon.wait_for_log("configuration reloaded", 5s));
  run.write("qx-agentd.toml", "[heartbeat]\nintervall = \"2s\"\n");
  daemon.signal(SIGHUP);
  REQUIRE(daemon.wait_for_log("reload refused, keeping the running configuration", 5s));
  CHECK(daemon.count_in_log("unknown key 'heartbeat.intervall'") == 1);
  CHECK(daemon.running());

  daemon.signal(SIGTERM);
  CHECK(notify.wait_for("STOPPING=1", 5000ms));
  CHECK(daemon.wait_exit(5s) == 0);

  // A configuration it cannot start with: an error in the journal, and no readiness.
  child_process bad({daemon_bin, "--config", config, "--socket-dir", vms.path(), "--control-socket",
                     run / "ctl.sock"},
                    {"NOTIFY_SOCKET=" + (run / "notify.sock"), "JOURNAL_STREAM=8:12345"});
  CHECK(bad.wait_exit(10s) == 2);
  bad.drain();
  CHECK_THAT(bad.log(), Catch::StartsWith("<3>qx-agentd: ") &&
                            Catch::Contains("unknown key 'heartbeat.intervall'"));
  CHECK_FALSE(notify.wait_for("READY=1", 1ms));
}

TEST_CASE(
    "qx-agentd's control socket is 0660 from the moment it listens, whatever the umask it was "
    "started with",
    "[integration][host][hostile]") {
  temp_dir vms, run;
  const auto probe = run / "listening";
  // What the socket's mode is when listen() is called (an LD_PRELOAD shim), under umask 000.
  child_process daemon(
      {"/bin/sh", "-c",
       fmt::format("umask 000 && exec env LD_PRELOAD={} QXA_LISTEN_PROBE={} "
                   "ASAN_OPTIONS=$ASAN_OPTIONS:verify_asan_link_order=0 {} --config /dev/null "
                   "--socket-dir {} --control-socket {}",
                   QXA_LISTEN_PROBE_PATH, probe, daemon_bin, vms.path(), run / "ctl.sock")});
  REQUIRE(daemon.wait_for_log("ready: vm sockets in", 10s));
  const auto seen = qxa::test::file_contents(probe);
  INFO(seen);
  CHECK(seen == run / "ctl.sock" + " 660\n");
  struct stat st {};
  REQUIRE(::stat((run / "ctl.sock").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0660);
}
