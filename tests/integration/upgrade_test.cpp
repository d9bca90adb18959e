// SPDX-License-Identifier: MIT
// qx-agent upgrade end to end: the real agent, run from a copy of its binary under a small
// supervisor loop (what a service manager does: start it again whenever it exits), the real
// qx-agentd and qx-agent. A working upgrade, one to a binary that does not start (the guard
// rolls it back), several VMs at once, and the refusals.
#include <signal.h>
#include <sys/stat.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "qxa/common/message_stream.hpp"
#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/files.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::cli_bin;
using qxa::test::daemon_cli;
using qxa::test::file_sha256;
using qxa::test::temp_dir;
using json = nlohmann::json;
namespace pb = quantix::agent::v1;

namespace {

// The agent of VM `name` installed in its own directory, restarted whenever it exits.
struct supervised_agent {
  supervised_agent(const temp_dir& vms, const std::string& name, const std::string& more_config) {
    std::filesystem::create_directories(bin);
    ::chmod(bin.c_str(), 0755);
    std::filesystem::copy_file(QXA_AGENT_PATH, binary);
    config = home.write("agent.toml",
                        "[upgrade]\nstate_dir = \"" + home / "state" + "\"\n" + more_config);
    const std::string loop =
        "trap 'kill $pid 2>/dev/null; exit 0' TERM; while :; do \"$0\" --config \"$1\" --port "
        "\"unix-listen:$2\" --telemetry-interval 1s & pid=$!; wait $pid; sleep 0.2; done";
    supervisor = std::make_unique<child_process>(std::vector<std::string>{
        "/bin/sh", "-c", loop, binary, config, vms / (name + ".agent.sock")});
  }
  ~supervised_agent() {
    ::kill(supervisor->pid(), SIGTERM);
    supervisor->wait_exit(10s);
  }
  temp_dir home;
  const std::string bin = home / "sbin";
  const std::string binary = bin + "/quantix-kvm-agent";
  std::string config;
  std::unique_ptr<child_process> supervisor;
};

// One VM's supervised agent (with `more_config` in its configuration) and a qx-agentd that has
// it ready; `work` for the test's files.
struct supervised_vm {
  explicit supervised_vm(const std::string& more_config = "") : agent(vms, "vm", more_config) {
    REQUIRE(qxa::test::wait_vm_state(ctl, "vm", "ready", 10s));
  }
  temp_dir vms, run, work;
  const std::string ctl = run / "ctl.sock";
  supervised_agent agent;
  std::unique_ptr<child_process> daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
};

// A copy of the agent's binary that differs from it (bytes after its end, which ELF ignores):
// a new binary whose SHA-256 shows which one runs.
std::string new_agent_binary(const temp_dir& dir) {
  const auto path = dir / "new-quantix-kvm-agent";
  std::filesystem::copy_file(QXA_AGENT_PATH, path);
  std::ofstream(path, std::ios::app | std::ios::binary) << "\nan upgraded agent\n";
  return path;
}

// Whether a guard for the state directory `dir` runs (its command line names it).
bool guard_running(const std::string& dir) {
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmdline.find(std::string("--upgrade-guard") + '\0' + dir) != std::string::npos) {
      return true;
    }
  }
  return false;
}

std::uint32_t agent_pid(const std::string& ctl, const std::string& vm) {
  return qxa::test::required_vm_status(ctl, vm)["agent_pid"].get<std::uint32_t>();
}

}  // namespace

TEST_CASE(
    "qx-agent upgrade swaps the agent's binary, the new agent answers and is confirmed, the old "
    "one is kept as .previous, and the same binary again changes nothing",
    "[integration][upgrade]") {
  supervised_vm f;
  const auto old_sha = file_sha256(f.agent.binary);
  const auto old_pid = agent_pid(f.ctl, "vm");
  const auto binary = new_agent_binary(f.work);

  auto r =
      daemon_cli(f.ctl, {"--json", "upgrade", "vm", "--binary", binary, "--confirm-within", "20s"});
  INFO(r.out << r.err << f.agent.supervisor->log());
  REQUIRE(r.status == 0);
  const auto j = json::parse(r.out);
  CHECK(j["result"] == "upgraded");
  CHECK(file_sha256(f.agent.binary) == file_sha256(binary));
  CHECK(file_sha256(f.agent.binary + ".previous") == old_sha);
  CHECK_FALSE(std::filesystem::exists(f.agent.bin + "/.quantix-kvm-agent.upgrade"));
  CHECK(agent_pid(f.ctl, "vm") != old_pid);

  const auto status = daemon_cli(f.ctl, {"--json", "upgrade-status", "vm"});
  REQUIRE(status.status == 0);
  const auto s = json::parse(status.out);
  CHECK(s["state"] == "confirmed");
  CHECK(s["binary"] == f.agent.binary);
  const auto text = daemon_cli(f.ctl, {"upgrade-status", "vm"});
  CHECK_THAT(text.out, Catch::Contains("confirmed; the previous binary is kept as"));
  // The guard saw the confirmation and ended.
  CHECK(qxa::test::eventually([&] { return !guard_running(f.agent.home / "state"); }, 5s));

  const auto pid = agent_pid(f.ctl, "vm");
  auto again = daemon_cli(f.ctl, {"upgrade", "vm", "--binary", binary});
  CHECK(again.status == 0);
  CHECK_THAT(again.out, Catch::Contains("unchanged, already runs this binary"));
  CHECK(agent_pid(f.ctl, "vm") == pid);
}

TEST_CASE(
    "an upgrade to a binary that does not start is rolled back by the guard: the old binary is "
    "put back and its agent answers again",
    "[integration][upgrade]") {
  supervised_vm f;
  const auto old_sha = file_sha256(f.agent.binary);

  const auto started = std::chrono::steady_clock::now();
  auto r = daemon_cli(
      f.ctl, {"upgrade", "vm", "--binary", QXA_BROKEN_AGENT_PATH, "--confirm-within", "10s"}, 120s);
  const auto took = std::chrono::steady_clock::now() - started;
  INFO(r.out << r.err << f.agent.supervisor->log());
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("vm: rolled back to") &&
                        Catch::Contains("no confirmation within the deadline"));
  CHECK(took >= 10s);  // not before the deadline
  CHECK(file_sha256(f.agent.binary) == old_sha);
  // Meanwhile the broken binary ran, and failed, under the supervisor.
  CHECK_THAT(f.agent.supervisor->log(), Catch::Contains("this agent does not start"));
  REQUIRE(qxa::test::wait_vm_state(f.ctl, "vm", "ready", 10s));
  const auto status = daemon_cli(f.ctl, {"--json", "upgrade-status", "vm"});
  const auto s = json::parse(status.out);
  CHECK(s["state"] == "rolled-back");
  CHECK(s["to_version"] == "0.0.0-broken");
  CHECK(daemon_cli(f.ctl, {"ping", "vm"}).status == 0);
}

TEST_CASE("qx-agent upgrade --all upgrades every ready VM, at most --parallel at a time",
          "[integration][upgrade]") {
  temp_dir vms, run, work;
  const std::string ctl = run / "ctl.sock";
  supervised_agent a(vms, "vm-a", ""), b(vms, "vm-b", "");
  auto daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
  REQUIRE(qxa::test::wait_all_ready(ctl, 2, 10s));
  const auto binary = new_agent_binary(work);
  auto r = daemon_cli(ctl, {"--json", "upgrade", "--all", "--parallel", "1", "--binary", binary});
  INFO(r.out << r.err);
  REQUIRE(r.status == 0);
  const auto j = json::parse(r.out);
  REQUIRE(j["vms"].size() == 2);
  for (const auto& v : j["vms"]) CHECK(v["result"] == "upgraded");
  CHECK(file_sha256(a.binary) == file_sha256(binary));
  CHECK(file_sha256(b.binary) == file_sha256(binary));
}

TEST_CASE(
    "upgrades refused: by policy.upgrade = false (nothing staged), a file that is not a "
    "program, no VM named, and --connect",
    "[integration][upgrade]") {
  supervised_vm f("[policy]\nupgrade = false\n");
  const auto old_sha = file_sha256(f.agent.binary);

  auto refused = daemon_cli(f.ctl, {"upgrade", "vm", "--binary", new_agent_binary(f.work)});
  CHECK(refused.status == 1);
  CHECK_THAT(refused.err, Catch::Contains("policy.upgrade"));
  CHECK(file_sha256(f.agent.binary) == old_sha);
  CHECK_FALSE(std::filesystem::exists(f.agent.bin + "/.quantix-kvm-agent.upgrade"));

  const auto text = f.work.write("notes.txt", "not a program\n");
  auto not_elf = daemon_cli(f.ctl, {"upgrade", "vm", "--binary", text});
  CHECK(not_elf.status == 2);
  CHECK_THAT(not_elf.err, Catch::Contains("is not an ELF program"));
  CHECK(daemon_cli(f.ctl, {"upgrade", "--binary", text}).status == 2);
  CHECK(daemon_cli(f.ctl, {"upgrade", "vm", "--all", "--binary", text}).status == 2);
  auto direct = qxa::test::run_command(
      {cli_bin, "--connect", f.vms / "vm.agent.sock", "upgrade", "vm", "--binary", text}, 30s);
  CHECK(direct.status == 2);
  CHECK_THAT(direct.err, Catch::Contains("through qx-agentd"));
}

TEST_CASE("an upgrade waits for detached jobs (the agent's restart would end them) unless forced",
          "[integration][upgrade]") {
  supervised_vm f;
  REQUIRE(daemon_cli(f.ctl, {"exec", "--detach", "vm", "--", "sleep", "600"}).status == 0);
  const auto binary = new_agent_binary(f.work);
  auto refused = daemon_cli(f.ctl, {"upgrade", "vm", "--binary", binary});
  CHECK(refused.status == 1);
  CHECK_THAT(refused.err, Catch::Contains("1 detached job is running"));
  CHECK(file_sha256(f.agent.binary) != file_sha256(binary));
  auto forced = daemon_cli(f.ctl, {"upgrade", "vm", "--binary", binary, "--force"});
  INFO(forced.out << forced.err);
  CHECK(forced.status == 0);
  CHECK(file_sha256(f.agent.binary) == file_sha256(binary));
}

namespace {

// A guest whose upgrade goes the way the guard's rollback goes under load: the agent restarts
// (the old binary, put back), answers the host's first confirmation "pending" (the guard has
// not written its record yet), and only later "rolled back", with neither its pid nor its
// session changing in between. In-process, on a thread of its own.
class rollback_race_guest {
 public:
  explicit rollback_race_guest(const std::string& socket)
      : acceptor_(io_, asio::local::stream_protocol::endpoint(socket)) {
    asio::co_spawn(io_, serve(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~rollback_race_guest() {
    io_.stop();
    thread_.join();
  }
  rollback_race_guest(const rollback_race_guest&) = delete;
  rollback_race_guest& operator=(const rollback_race_guest&) = delete;
  [[nodiscard]] int confirmations() const { return confirmations_; }

 private:
  using stream = qxa::common::message_stream<asio::local::stream_protocol::socket>;

  asio::awaitable<void> serve() {
    auto [ec, socket] =
        co_await acceptor_.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    auto s = stream::create(std::move(socket));
    s->start();
    std::uint32_t pid = 100;
    for (;;) {
      auto r = co_await s->receive();
      if (!r) co_return;
      pb::Envelope out;
      out.set_reply_to(r->request_id());
      out.set_session_id(r->session_id());
      if (r->has_hello()) {
        out.mutable_hello_ack()->set_session_id(r->session_id());
        out.mutable_hello_ack()->set_agent_pid(pid);
        out.mutable_hello_ack()->set_software_version("1.0");
      } else if (r->has_upgrade_status_request()) {
        out.mutable_upgrade_status()->set_running_sha256(std::string(32, 'x'));
      } else if (r->has_file_write_open()) {
        out.mutable_file_write_reply()->set_handle(1);
      } else if (r->has_file_write_chunk()) {
        out.mutable_file_write_reply()->set_handle(1);
      } else if (r->has_file_write_close()) {
        out.mutable_file_write_reply()->set_handle(1);
        out.mutable_file_write_reply()->set_committed(true);
      } else if (r->has_upgrade_request()) {
        auto* st = out.mutable_upgrade_status();
        st->set_state(pb::UpgradeStatus::STATE_PENDING);
        st->set_token("token");
        st->set_to_version("0.0.0-broken");
        (void)s->post(out);
        // The old agent exits; the old binary, put back, starts as a new agent.
        pb::Envelope ready;
        ready.mutable_agent_ready()->set_agent_pid(++pid);
        (void)s->post(ready);
        continue;
      } else if (r->has_upgrade_confirm_request()) {
        auto* st = out.mutable_upgrade_status();
        st->set_token("token");
        st->set_to_version("0.0.0-broken");
        st->set_running_version("1.0");
        if (++confirmations_ == 1) {
          st->set_state(pb::UpgradeStatus::STATE_PENDING);  // the guard's record comes later
        } else {
          st->set_state(pb::UpgradeStatus::STATE_ROLLED_BACK);
          st->set_detail("no confirmation within the deadline: the old binary was put back");
        }
      } else {
        out.mutable_pong();
      }
      (void)s->post(out);
    }
  }

  asio::io_context io_;
  asio::local::stream_protocol::acceptor acceptor_;
  std::thread thread_;
  std::atomic<int> confirmations_{0};
};

}  // namespace

TEST_CASE(
    "qx-agent upgrade asks an agent that answered pending again, and so sees a rollback the "
    "guard records after the old agent is back",
    "[integration][upgrade]") {
  temp_dir vms, run, work;
  rollback_race_guest guest(vms / "vm.agent.sock");
  auto daemon = qxa::test::start_daemon(vms, run, "250ms", "1s");
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::wait_vm_state(ctl, "vm", "ready", 10s));
  auto r = daemon_cli(
      ctl, {"upgrade", "vm", "--binary", QXA_BROKEN_AGENT_PATH, "--confirm-within", "10s"}, 120s);
  INFO(r.out << r.err);
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("vm: rolled back to 1.0") &&
                        Catch::Contains("no confirmation within the deadline"));
  CHECK(guest.confirmations() >= 2);
  CHECK(r.took < 60s);  // long before the CLI's own deadline (the guest's plus a minute)
}
