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

#include "qxa/guest/core/log_text.hpp"
#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/pinger.hpp"
#include "support/process.hpp"
#include "support/qga.hpp"
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

// A FUSE mount of a user's, made before the agent starts (its namespace takes a copy).
struct user_mount {
  std::string dir;  ///< in the test's tree, below home/
  uid_t uid;
  bool allow_other;
};

// The guest: a tree the test can see, and the agent in a namespace that sees it as / would.
// Besides alice (uid 1000), bob (1001) and carol (1002, in the sudo group); root's home is
// /home/root, in the test's tree too. The agent runs from a copy of its binary, with the
// qemu-ga port beside the native one, and `config` (the shipped file when empty).
struct hostile_guest {
  temp_dir t;
  std::string home = t / "home/alice";  // /home/alice inside the namespace
  std::string decoys = t / "decoys";
  std::string vms = t / "vms";
  std::string qga_socket = vms + "/alicevm.qga.sock";
  std::string binary = t / "bin/quantix-kvm-agent";
  std::unique_ptr<child_process> agent;
  std::unique_ptr<qxa::test::stuck_fuse> fuse;
  std::vector<std::unique_ptr<qxa::test::stuck_fuse>> user_mounts;

  explicit hostile_guest(const std::string& config = {},
                         const std::vector<user_mount>& mounts = {}) {
    REQUIRE(::geteuid() == 0);  // namespaces, a FUSE mount, and users to switch to
    REQUIRE(::chmod(t.path().c_str(), 0755) == 0);  // alice can reach the decoys to try
    t.write("etc/passwd",
            "root:x:0:0:root:/home/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
            "bob:x:1001:1001:Bob:/home/bob:/bin/sh\ncarol:x:1002:1002:Carol:/home/carol:/bin/sh\n");
    t.write("etc/group", "root:x:0:\nsudo:x:27:carol\nalice:x:1000:\nbob:x:1001:\ncarol:x:1002:\n");
    t.write("etc/shadow",
            "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\nbob:!:19000:0:99999:7:::\n"
            "carol:!:19000:0:99999:7:::\n");
    t.write("decoys/target", "decoy target\n");
    t.write("decoys/secret", "decoy secret\n");
    REQUIRE(::chmod((decoys + "/secret").c_str(), 0600) == 0);
    fs::create_directories(decoys + "/keys-dir");
    fs::create_directories(t / "home/root");
    for (const auto& [user, uid] : {std::pair{"alice", 1000}, {"bob", 1001}, {"carol", 1002}}) {
      const auto h = t / (std::string("home/") + user);
      fs::create_directories(h);
      REQUIRE(::chown(h.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(uid)) == 0);
    }
    fs::create_directories(vms);
    fs::create_directories(t / "bin");
    fs::copy_file(QXA_AGENT_PATH, binary);
    // Her stuck FUSE filesystem, named like a disk.
    as_alice("mkdir -p mnt");
    fuse = std::make_unique<qxa::test::stuck_fuse>(home + "/mnt", "sshfs", "/dev/vda1");
    for (const auto& m : mounts) {
      const auto dir = t / m.dir;
      fs::create_directories(dir);
      REQUIRE(::chown(dir.c_str(), m.uid, m.uid) == 0);
      user_mounts.push_back(std::make_unique<qxa::test::stuck_fuse>(
          dir, qxa::test::stuck_fuse_options{.subtype = "sshfs",
                                             .source = "host:/export",
                                             .owner_uid = m.uid,
                                             .owner_gid = m.uid,
                                             .allow_other = m.allow_other,
                                             .answer_init = true}));
    }
    const auto config_file =
        config.empty() ? qxa::test::shipped_agent_config : t.write("agent.toml", config);
    const std::string script = fmt::format(
        "set -e; mount --bind {0}/etc/passwd /etc/passwd; mount --bind {0}/etc/group /etc/group; "
        "mount --bind {0}/etc/shadow /etc/shadow; mount --rbind {0}/home /home; "
        "exec {1} --config {2} --port unix-listen:{3}/alicevm.agent.sock --qemu-ga-port "
        "unix-listen:{4}",
        t.path(), binary, config_file, vms, qga_socket);
    agent = std::make_unique<child_process>(std::vector<std::string>{
        "/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script});
    const bool started = agent->wait_for_log(qxa::guest::log_text::started, 10s);
    INFO(agent->log());
    REQUIRE(started);
  }
  ~hostile_guest() {
    // The agent first: what it left held by a mount that never answers is freed with the mounts.
    agent.reset();
  }
  hostile_guest(const hostile_guest&) = delete;
  hostile_guest& operator=(const hostile_guest&) = delete;

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

TEST_CASE(
    "a user's own FUSE mounts, hers alone or open to all, never stall the agent, as exec and "
    "jobs into them time out at their own deadline and the qemu-ga port, cp and the diagnosis "
    "of a link never enter them, while pings on both ports go on",
    "[integration][guest][hostile]") {
  // mine: hers alone (a child as alice may enter it, root may not); shared: allow_other; bob's
  // whole home is his mount with allow_other. Each daemon reads requests and answers none.
  hostile_guest g({}, {{"home/alice/mine", 1000, false},
                       {"home/alice/shared", 1000, true},
                       {"home/bob", 1001, true}});
  temp_dir run;
  auto daemon = qxa::test::start_daemon(g.vms, run, "500ms", "1s");
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::wait_vm_state(ctl, "alicevm", "ready", 10s));
  const auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {cli_bin, "--control-socket", ctl});
    return qxa::test::run_command(std::move(args), 60s);
  };
  qxa::test::qga_client qga(g.qga_socket);
  REQUIRE(qga.connected());
  int qga_pings = 0;
  std::string qga_failures;
  const auto qga_ping = [&] {
    const auto r = qga.call("guest-ping", nullptr, 5s);
    if (r == qxa::test::qga_client::json{{"return", qxa::test::qga_client::json::object()}}) {
      ++qga_pings;
    } else {
      qga_failures += r.dump() + "\n";
    }
  };
  qxa::test::pinger pings(cli_bin, ctl, "alicevm");

  // exec --user alice --cwd into her own mount: the child waits there, never the agent.
  for (const bool detach : {false, true}) {
    INFO("detach " << detach);
    std::vector<std::string> args = {"exec",  "alicevm",          "--user",    "alice",
                                     "--cwd", "/home/alice/mine", "--timeout", "3s"};
    if (detach) args.push_back("--detach");
    args.insert(args.end(), {"--", "true"});
    const auto r = cli(args);
    INFO(r.err);
    CHECK(r.status == 75);
    CHECK_THAT(r.err, Catch::Contains("did not start within 3000 ms"));
    CHECK(r.took < 20s);
    qga_ping();
  }
  // bob's home is his mount: exec --user bob starts there by default, as the user.
  auto bob = cli({"exec", "alicevm", "--user", "bob", "--timeout", "3s", "--", "true"});
  CHECK(bob.status == 75);
  CHECK(bob.took < 20s);
  // The ssh-key helper, as bob, in his home: killed at its deadline (half the request's), and
  // answered though the kill cannot end it while his daemon holds it.
  auto keys = cli({"ssh-key", "alicevm", "list", "bob"});
  CHECK(keys.status == 75);
  CHECK_THAT(keys.err, Catch::Contains("did not"));
  CHECK(keys.took < 30s);
  qga_ping();
  // The qemu-ga port opens the last component as cp does: never the mount itself.
  const auto open =
      qga.call("guest-file-open", {{"path", "/home/alice/shared"}, {"mode", "r"}}, 10s);
  CHECK(open["error"]["class"] == "GenericError");
  CHECK_THAT(open["error"]["desc"].get<std::string>(), Catch::Contains("does not enter"));
  qga_ping();
  // A link of hers into the mount: refused, and its real path not looked up through the mount.
  g.as_alice("ln -s shared/x into-shared && ln -s /home/alice/shared into-shared-dir");
  for (const auto& from :
       {"/home/alice/into-shared", "/home/alice/into-shared-dir/y", "/home/alice/shared"}) {
    INFO(from);
    const auto r = cli({"cp", std::string("alicevm:") + from, run / "got"});
    CHECK(r.status == 1);
    CHECK(r.took < 20s);
    CHECK_FALSE(fs::exists(run / "got"));
  }
  const auto list = cli({"ls", "alicevm", "/home/alice/into-shared-dir"});
  CHECK(list.status == 1);
  qga_ping();

  pings.stop();
  INFO(fmt::format("{} pings during the attacks, {} failed or slower than 2 s, slowest {:.0f} ms",
                   pings.sent(), pings.failed(), pings.worst_ms()));
  CHECK(pings.sent() > 0);
  CHECK(pings.failed() == 0);
  INFO(qga_failures);
  CHECK(qga_pings == 5);
  CHECK(g.agent->running());
  // Telemetry and the disks view went on beside the mounts, and left them out.
  auto t = cli({"--json", "telemetry", "alicevm"});
  CHECK(t.status == 0);
  CHECK(t.out.find("/home/alice/shared") == std::string::npos);
  CHECK(cli({"disks", "alicevm"}).status == 0);
}

namespace {

// A policy test's guest: the agent under `policy` (TOML lines of [policy]), hooks in the test's
// tree, and qx-agentd beside it.
struct confined_guest {
  explicit confined_guest(const std::string& policy)
      : g([&] {
          return "[policy]\n" + policy + "\n[freeze]\nhooks_dir = \"" + hooks + "\"\n[power]\n" +
                 "hooks_dir = \"" + hooks + "\"\n";
        }()) {
    daemon = qxa::test::start_daemon(g.vms, run, "500ms", "1s");
    REQUIRE(qxa::test::wait_vm_state(ctl, "alicevm", "ready", 10s));
  }
  qxa::test::command_result cli(std::vector<std::string> args) {
    args.insert(args.begin(), {cli_bin, "--control-socket", ctl});
    return qxa::test::run_command(std::move(args), 60s);
  }
  temp_dir outside;  // where the hooks live: not below the guest's tree (its config is there)
  std::string hooks = [this] {
    fs::create_directories(outside / "hooks");
    return outside / "hooks";
  }();
  hostile_guest g;
  temp_dir run;
  std::string ctl = run / "ctl.sock";
  std::unique_ptr<child_process> daemon;
};

}  // namespace

TEST_CASE(
    "with exec confined no other road runs the host's code as root, so no upgrade, no file "
    "written outside listed roots nor into the agent's hooks, no key or password for root or "
    "a sudoer",
    "[integration][guest][hostile][policy]") {
  temp_dir local;
  const auto hook = local.write("10-evil", "#!/bin/sh\ntouch /tmp/owned\n");
  REQUIRE(::chmod(hook.c_str(), 0755) == 0);
  const std::string key =
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl k@host";

  SECTION("exec blocked, write roots listed") {
    confined_guest c("block = [\"exec\"]\nwrite_roots = [\"" + std::string("/") + "\"]");
    // The hooks directory lies under the listed root "/": refused all the same.
    auto up = c.cli({"cp", hook, "alicevm:" + c.hooks + "/10-evil"});
    INFO(up.err);
    CHECK(up.status == 1);
    CHECK_THAT(up.err, Catch::Contains("rule policy.exec"));
    CHECK_FALSE(fs::exists(c.hooks + "/10-evil"));
    auto mv = c.cli({"mkdir", "alicevm", c.hooks + "/sub"});
    CHECK(mv.status == 1);
    // Elsewhere under the listed root, files are written as before.
    auto fine = c.cli({"cp", hook, "alicevm:" + c.g.t / "srv/file", "--parents"});
    CHECK(fine.status == 0);
    // The agent's binary: no upgrade, nothing staged, the binary unchanged.
    const auto before = qxa::test::file_sha256(c.g.binary);
    auto upgrade = c.cli({"upgrade", "alicevm", "--binary", QXA_AGENT_PATH});
    INFO(upgrade.err);
    CHECK(upgrade.status == 1);
    CHECK_THAT(upgrade.err, Catch::Contains("policy.upgrade") && Catch::Contains("policy.block"));
    CHECK(qxa::test::file_sha256(c.g.binary) == before);
    CHECK_FALSE(fs::exists(c.g.t / "bin/.quantix-kvm-agent.upgrade"));
    // Root's and a sudoer's accounts: no key added, no password set.
    for (const char* user : {"root", "carol"}) {
      INFO(user);
      auto add = c.cli({"ssh-key", "alicevm", "add", user, key});
      CHECK(add.status == 1);
      CHECK_THAT(add.err, Catch::Contains("rule policy.exec"));
      auto pw = qxa::test::run_command(
          {"/bin/sh", "-c",
           fmt::format("echo 'new-password' | {} --control-socket {} passwd alicevm {}", cli_bin,
                       c.ctl, user)},
          30s);
      CHECK(pw.status == 1);
      CHECK_THAT(pw.err, Catch::Contains("rule policy.exec"));
    }
    CHECK_FALSE(fs::exists(c.g.t / "home/root/.ssh"));
    CHECK_FALSE(fs::exists(c.g.t / "home/carol/.ssh"));
    CHECK(qxa::test::file_contents(c.g.t / "etc/shadow").starts_with("root:*:"));
    // An ordinary user's account is no road to root.
    CHECK(c.cli({"ssh-key", "alicevm", "add", "alice", key}).status == 0);
  }
  SECTION("exec off, no write roots listed") {
    confined_guest c("exec = false");
    auto up = c.cli({"cp", hook, "alicevm:" + c.g.t / "srv/file", "--parents"});
    INFO(up.err);
    CHECK(up.status == 1);
    CHECK_THAT(up.err, Catch::Contains("rule policy.write_roots") && Catch::Contains("lists none"));
    CHECK_FALSE(fs::exists(c.g.t / "srv"));
    auto hook_up = c.cli({"cp", hook, "alicevm:" + c.hooks + "/10-evil"});
    CHECK(hook_up.status == 1);
    CHECK_FALSE(fs::exists(c.hooks + "/10-evil"));
    CHECK(c.cli({"upgrade", "alicevm", "--binary", QXA_AGENT_PATH}).status == 1);
    // Reading is no road: the host still reads.
    CHECK(c.cli({"cp", "alicevm:" + c.g.decoys + "/target", local / "read"}).status == 0);
  }
}
