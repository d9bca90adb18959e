// SPDX-License-Identifier: MIT
// Detached jobs end to end: the real agent, the real qx-agentd (killed and restarted while a job
// runs) and the real qx-agent.
#include <signal.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::cli_bin;
using qxa::test::daemon_cli;
using qxa::test::temp_dir;
using json = nlohmann::json;

namespace {

// The real agent of VM "vm" and a qx-agentd that has it ready; `work` for the test's files.
struct one_vm {
  one_vm() : agent(qxa::test::start_agent(vms / "vm.agent.sock")) { start_daemon(); }
  void start_daemon() {
    daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
    REQUIRE(qxa::test::wait_vm_state(ctl, "vm", "ready", 10s));
  }
  temp_dir vms, run, work;
  const std::string ctl = run / "ctl.sock";
  std::unique_ptr<child_process> agent, daemon;
};

// A JSON number field of a protobuf message: 64-bit ones come as strings.
std::uint64_t number(const json& j) {
  return j.is_string() ? std::stoull(j.get<std::string>()) : j.get<std::uint64_t>();
}

json job_in_list(const std::string& ctl, std::uint64_t id) {
  auto r = daemon_cli(ctl, {"--json", "jobs", "vm"});
  REQUIRE(r.status == 0);
  const auto listed = json::parse(r.out);
  for (const auto& j : listed["jobs"]) {
    if (number(j["id"]) == id) return j;
  }
  return nullptr;
}

}  // namespace

TEST_CASE(
    "a detached job outlives qx-agentd killed and restarted, and attach then replays all of its "
    "output and ends with its status",
    "[integration][jobs]") {
  one_vm vm;
  const std::string& ctl = vm.ctl;

  // The job writes a line, then waits for a file the test makes, then ends with status 3.
  const std::string flag = vm.work / "go";
  auto started = daemon_cli(ctl, {"--json", "exec", "--detach", "vm", "--", "sh", "-c",
                                  "echo started; while [ ! -e " + flag +
                                      " ]; do sleep 0.05; done; echo finishing >&2; exit 3"});
  REQUIRE(started.status == 0);
  const auto job = json::parse(started.out);
  const auto id = number(job["id"]);
  CHECK(job.value("finished", false) == false);
  const auto text_jobs = daemon_cli(ctl, {"jobs", "vm"});
  CHECK_THAT(text_jobs.out, Catch::Contains("running") && Catch::Contains("sh -c"));

  // An attach that follows, cut off by the daemon's death.
  child_process follower({cli_bin, "--control-socket", ctl, "attach", "vm", std::to_string(id)}, {},
                         true);
  CHECK(follower.wait_for_output("started", 10s));
  vm.daemon->signal(SIGKILL);
  REQUIRE(vm.daemon->wait_exit(5s).has_value());
  const auto cut = follower.wait_exit(15s);
  REQUIRE(cut.has_value());
  CHECK(*cut != 0);

  vm.start_daemon();
  const auto still = job_in_list(ctl, id);
  REQUIRE(still.is_object());
  CHECK(still.value("finished", false) == false);

  // Attached again: the output so far, then the rest once the job goes on, then its status.
  child_process again({cli_bin, "--control-socket", ctl, "attach", "vm", std::to_string(id)}, {},
                      true);
  CHECK(again.wait_for_output("started", 10s));
  std::ofstream(flag).put('\n');
  const auto status = again.wait_exit(20s);
  REQUIRE(status.has_value());
  CHECK(*status == 3);
  again.drain();  // what it wrote last may still be in the pipes
  CHECK(again.output() == "started\n");
  CHECK_THAT(again.log(), Catch::Contains("finishing\n"));

  const auto ended = job_in_list(ctl, id);
  REQUIRE(ended.is_object());
  CHECK(ended.value("finished", false) == true);
  CHECK(ended.value("exit_code", -1) == 3);
  auto killed = daemon_cli(ctl, {"kill", "vm", std::to_string(id)});
  CHECK(killed.status == 1);
  CHECK_THAT(killed.err, Catch::Contains("has already ended"));
}

TEST_CASE(
    "qx-agent attach: Ctrl-C leaves the job running, kill ends it with its signal, and bad "
    "input is refused clearly",
    "[integration][jobs]") {
  one_vm vm;
  const std::string& ctl = vm.ctl;

  auto started =
      daemon_cli(ctl, {"exec", "--detach", "vm", "--", "sh", "-c", "echo up; exec sleep 300"});
  REQUIRE(started.status == 0);
  CHECK_THAT(started.out,
             Catch::Contains("job 1 started in vm") && Catch::Contains("qx-agent attach vm 1"));

  child_process follower({cli_bin, "--control-socket", ctl, "attach", "vm", "1"}, {}, true);
  CHECK(follower.wait_for_output("up", 10s));
  follower.signal(SIGINT);
  const auto interrupted = follower.wait_exit(10s);
  REQUIRE(interrupted.has_value());
  CHECK(*interrupted == 130);
  follower.drain();
  CHECK_THAT(follower.log(), Catch::Contains("keeps running"));
  CHECK(job_in_list(ctl, 1).value("finished", true) == false);

  // Without following: what the ring holds, at once.
  auto tail = daemon_cli(ctl, {"attach", "vm", "1", "--no-follow"});
  CHECK(tail.status == 0);
  CHECK(tail.out == "up\n");

  auto bad = daemon_cli(ctl, {"kill", "vm", "1", "--signal", "NOPE"});
  CHECK(bad.status == 2);
  CHECK_THAT(bad.err, Catch::Contains("not a signal"));
  auto killed = daemon_cli(ctl, {"kill", "vm", "1", "--signal", "KILL"});
  CHECK(killed.status == 0);
  CHECK_THAT(killed.out, Catch::Contains("sent SIGKILL to job 1"));
  auto end = daemon_cli(ctl, {"attach", "vm", "1"});
  CHECK(end.status == 128 + 9);
  CHECK_THAT(end.err, Catch::Contains("killed by signal 9"));

  auto missing = daemon_cli(ctl, {"attach", "vm", "42"});
  CHECK(missing.status == 1);
  CHECK_THAT(missing.err, Catch::Contains("no job 42"));
  auto json_jobs = daemon_cli(ctl, {"--json", "jobs", "vm"});
  REQUIRE(json_jobs.status == 0);
  CHECK(number(json::parse(json_jobs.out)["max_jobs"]) == 16);
}

TEST_CASE("a quiet job stays attached past the attach's deadline", "[integration][jobs]") {
  one_vm vm;
  const std::string& ctl = vm.ctl;
  const std::string flag = vm.work / "go";
  REQUIRE(daemon_cli(ctl, {"exec", "--detach", "vm", "--", "sh", "-c",
                           "while [ ! -e " + flag + " ]; do sleep 0.05; done; echo done"})
              .status == 0);
  // The attach gives up after 7 s without a word from the guest; the job says nothing for 12 s,
  // but the agent sends its state every 5 s.
  child_process follower({cli_bin, "--control-socket", ctl, "attach", "vm", "1", "--timeout", "7s"},
                         {}, true);
  REQUIRE(vm.agent->wait_for_log("op=job-attach", 10s));
  CHECK_FALSE(follower.wait_exit(12s).has_value());
  std::ofstream(flag).put('\n');
  const auto status = follower.wait_exit(10s);
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  follower.drain();
  CHECK(follower.output() == "done\n");
}
