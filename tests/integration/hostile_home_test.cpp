// SPDX-License-Identifier: MIT
// The real agent, as root, among a hostile user's files: alice plants links, a FIFO, a link to
// /dev/zero and a FUSE filesystem that never answers in her home, then the host runs ssh-key,
// cp to and from her home and exec --user alice. Nothing outside her home may change, nothing
// may be given to her, and the agent must answer pings throughout.
//
// The agent runs in a private mount namespace whose /etc/passwd, /etc/group and /etc/shadow
// are the test's (alice is uid 1000 there) and whose /home is the test's; the decoys sit
// outside /home, root's, where alice can see them but not write.
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "qxa/guest/log_text.hpp"
#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/pinger.hpp"
#include "support/process.hpp"
#include "support/run.hpp"
#include "support/shipped.hpp"
#include "support/status.hpp"
#include "support/stuck_fuse.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::cli_bin;
using qxa::test::temp_dir;
namespace fs = std::filesystem;

namespace {

constexpr uid_t alice = 1000;
const std::string key1 =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl key1@host";
const std::string key2 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 key2@host";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

struct file_state {
  std::string content;
  uid_t uid;
  gid_t gid;
  mode_t mode;
  bool operator==(const file_state&) const = default;
};

file_state state_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return {S_ISREG(st.st_mode) ? slurp(path) : std::string(), st.st_uid, st.st_gid, st.st_mode};
}

// The guest: a tree the test can see, and the agent in a namespace that sees it as / would.
struct hostile_guest {
  temp_dir t;
  std::string home = t / "home/alice";  // /home/alice inside the namespace
  std::string decoys = t / "decoys";
  std::string vms = t / "vms";
  std::unique_ptr<child_process> agent;
  std::unique_ptr<qxa::test::stuck_fuse> fuse;

  hostile_guest() {
    REQUIRE(::geteuid() == 0);  // namespaces, a FUSE mount, and users to switch to
    REQUIRE(::chmod(t.path().c_str(), 0755) == 0);  // alice can reach the decoys to try
    t.write("etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n");
    t.write("etc/group", "root:x:0:\nalice:x:1000:\n");
    t.write("etc/shadow", "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\n");
    t.write("decoys/target", "decoy target\n");
    t.write("decoys/secret", "decoy secret\n");
    REQUIRE(::chmod((decoys + "/secret").c_str(), 0600) == 0);
    fs::create_directories(decoys + "/keys-dir");
    fs::create_directories(home);
    fs::create_directories(vms);
    REQUIRE(::chown(home.c_str(), alice, alice) == 0);
    // Her stuck FUSE filesystem, named like a disk.
    as_alice("mkdir -p mnt");
    fuse = std::make_unique<qxa::test::stuck_fuse>(home + "/mnt", "sshfs", "/dev/vda1");
    const std::string script = fmt::format(
        "set -e; mount --bind {0}/etc/passwd /etc/passwd; mount --bind {0}/etc/group /etc/group; "
        "mount --bind {0}/etc/shadow /etc/shadow; mount --rbind {0}/home /home; "
        "exec {1} --config {2} --port unix-listen:{3}/alicevm.agent.sock",
        t.path(), QXA_AGENT_PATH, qxa::test::shipped_agent_config, vms);
    agent = std::make_unique<child_process>(std::vector<std::string>{
        "/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script});
    const bool started = agent->wait_for_log(qxa::guest::log_text::started, 10s);
    INFO(agent->log());
    REQUIRE(started);
  }

  /// Runs a shell line as alice, in her home.
  void as_alice(const std::string& line) const {
    auto r = qxa::test::run_command(
        {"/usr/bin/setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", "--", "/bin/sh",
         "-c", "cd " + home + " && " + line},
        20s);
    INFO(line << ": " << r.err);
    REQUIRE(r.status == 0);
  }

  /// Her home as it was made: only the FUSE mount point.
  void reset_home() const {
    for (const auto& e : fs::directory_iterator(home)) {
      if (e.path().filename() != "mnt") fs::remove_all(e.path());
    }
  }

  /// Every path outside her home that is hers.
  std::vector<std::string> hers_outside_home() const {
    std::vector<std::string> out;
    for (auto it = fs::recursive_directory_iterator(t.path()); it != fs::end(it); ++it) {
      if (it->path().string().starts_with(home)) {
        it.disable_recursion_pending();
        continue;
      }
      struct stat st {};
      if (::lstat(it->path().c_str(), &st) == 0 && (st.st_uid == alice || st.st_gid == alice)) {
        out.push_back(it->path());
      }
    }
    return out;
  }
};

}  // namespace

// (No colon in the name: Catch 2.13 loops forever wrapping a heading whose colon sits near
// the end of its first line.)
TEST_CASE(
    "a hostile user's links, FIFO, /dev/zero link and stuck FUSE mount in her home change "
    "nothing outside it under ssh-key, cp and exec --user, and pings go on",
    "[integration][guest][hostile]") {
  hostile_guest g;
  temp_dir run;
  auto daemon = qxa::test::start_daemon(g.vms, run, "500ms", "1s");
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "alicevm", "ready", 10s));
  const std::string ctl = run / "ctl.sock";
  const auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {cli_bin, "--control-socket", ctl});
    return qxa::test::run_command(std::move(args), 40s);
  };
  const auto decoy_target = state_of(g.decoys + "/target");
  const auto decoy_secret = state_of(g.decoys + "/secret");
  qxa::test::pinger pings(cli_bin, ctl, "alicevm");

  SECTION("ssh-key with a link planted at the temporary's name an older agent used") {
    g.as_alice("mkdir .ssh && echo '" + key2 + "' > .ssh/authorized_keys && ln -s " + g.decoys +
               "/target .ssh/authorized_keys.qxa-tmp");
    auto add = cli({"ssh-key", "alicevm", "add", "alice", key1});
    INFO(add.err);
    CHECK(add.status == 0);
    const auto keys = state_of(g.home + "/.ssh/authorized_keys");
    CHECK(S_ISREG(keys.mode));
    CHECK(keys.content == key2 + "\n" + key1 + "\n");
    CHECK(keys.uid == alice);  // written by alice's own process
    CHECK(fs::is_symlink(g.home + "/.ssh/authorized_keys.qxa-tmp"));
    auto list = cli({"ssh-key", "alicevm", "list", "alice"});
    CHECK(list.out == key2 + "\n" + key1 + "\n");
    auto remove = cli({"ssh-key", "alicevm", "remove", "alice", key2});
    CHECK(remove.status == 0);
    CHECK(slurp(g.home + "/.ssh/authorized_keys") == key1 + "\n");
  }
  SECTION("ssh-key when ~/.ssh is a link to a directory of root's") {
    g.as_alice("ln -s " + g.decoys + "/keys-dir .ssh");
    auto add = cli({"ssh-key", "alicevm", "add", "alice", key1});
    CHECK(add.status == 1);
    CHECK_THAT(add.err, Catch::Contains("not a directory"));
    CHECK(fs::is_empty(g.decoys + "/keys-dir"));
  }
  SECTION("ssh-key when authorized_keys is a FIFO, a link to /dev/zero or to root's secret") {
    for (const auto& plant : std::vector<std::string>{
             "mkfifo .ssh/authorized_keys", "ln -s /dev/zero .ssh/authorized_keys",
             "ln -s " + g.decoys + "/secret .ssh/authorized_keys"}) {
      INFO(plant);
      g.reset_home();
      g.as_alice("mkdir .ssh && " + plant);
      for (const char* action : {"list", "add"}) {
        std::vector<std::string> args = {"ssh-key", "alicevm", action, "alice"};
        if (std::string(action) == "add") args.push_back(key1);
        auto r = cli(args);
        CHECK(r.status == 1);
        CHECK_THAT(r.err, Catch::Contains("not a regular file"));
        CHECK(std::chrono::duration_cast<std::chrono::seconds>(r.took) < 10s);
        CHECK(r.out.find("decoy") == std::string::npos);
      }
    }
  }
  SECTION("ssh-key when ~/.ssh is a FUSE filesystem that never answers") {
    g.reset_home();
    g.as_alice("ln -s mnt .ssh");  // and the mount itself, through the link or not
    auto r = cli({"ssh-key", "alicevm", "list", "alice"});
    CHECK(r.status == 1);
    auto helper_into_fuse = cli({"exec", "alicevm", "--user", "alice", "--", "true"});
    CHECK(helper_into_fuse.status == 0);
  }
  SECTION("cp into her home through links is refused, and lands nowhere else") {
    const auto local = run.write("payload", "payload\n");
    g.as_alice("ln -s " + g.decoys + " away && ln -s " + g.decoys +
               "/target file-link && mkdir ok");
    for (const auto& to :
         std::vector<std::string>{"/home/alice/away/target", "/home/alice/away/new",
                                  "/home/alice/file-link", "/home/alice/mnt/new"}) {
      INFO(to);
      auto r = cli({"cp", local, "alicevm:" + to});
      CHECK(r.status == 1);
      CHECK(std::chrono::duration_cast<std::chrono::seconds>(r.took) < 10s);
    }
    CHECK(fs::is_symlink(g.home + "/file-link"));
    auto fine = cli({"cp", local, "alicevm:/home/alice/ok/placed"});
    CHECK(fine.status == 0);
    CHECK(slurp(g.home + "/ok/placed") == "payload\n");
  }
  SECTION("cp from her home reads only her regular files, never blocking") {
    g.as_alice("mkfifo fifo && ln -s /dev/zero zero && ln -s " + g.decoys +
               "/secret secret-link && echo mine > mine");
    for (const auto& from :
         std::vector<std::string>{"fifo", "zero", "secret-link", "mnt/x", "mnt"}) {
      INFO(from);
      const auto local = run / ("got-" + std::to_string(from.size()));
      auto r = cli({"cp", "alicevm:/home/alice/" + from, local});
      CHECK(r.status == 1);
      CHECK(std::chrono::duration_cast<std::chrono::seconds>(r.took) < 10s);
      CHECK_FALSE(fs::exists(local));
    }
    auto mine = cli({"cp", "alicevm:/home/alice/mine", run / "mine"});
    CHECK(mine.status == 0);
    CHECK(slurp(run / "mine") == "mine\n");
  }
  SECTION("exec --user alice runs as alice, with nothing of root's") {
    auto id = cli({"exec", "alicevm", "--user", "alice", "--", "sh", "-c", "id -u; id -G"});
    CHECK(id.status == 0);
    CHECK(id.out == "1000\n1000\n");
    auto secret = cli({"exec", "alicevm", "--user", "alice", "--", "cat", g.decoys + "/secret"});
    CHECK(secret.status != 0);
    CHECK(secret.out.find("decoy") == std::string::npos);
    auto write = cli({"exec", "alicevm", "--user", "alice", "--", "sh", "-c",
                      "echo owned > " + g.decoys + "/target"});
    CHECK(write.status != 0);
    auto cwd = cli({"exec", "alicevm", "--user", "alice", "--cwd", "/root", "--", "true"});
    CHECK(cwd.status == 1);
    CHECK_THAT(cwd.err, Catch::Contains("working directory"));
  }

  pings.stop();
  INFO(fmt::format("{} pings during the attacks, {} failed or slower than 2 s, slowest {:.0f} ms",
                   pings.sent(), pings.failed(), pings.worst_ms()));
  CHECK(pings.sent() > 0);
  CHECK(pings.failed() == 0);
  CHECK(state_of(g.decoys + "/target") == decoy_target);
  CHECK(state_of(g.decoys + "/secret") == decoy_secret);
  CHECK(fs::is_empty(g.decoys + "/keys-dir"));
  CHECK(g.hers_outside_home().empty());
  CHECK(g.agent->running());
  // Telemetry went on beside the stuck mount, and left it out.
  auto t = cli({"--json", "telemetry", "alicevm"});
  CHECK(t.status == 0);
  CHECK(t.out.find("/home/alice/mnt") == std::string::npos);
}
