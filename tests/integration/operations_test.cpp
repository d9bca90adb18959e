// SPDX-License-Identifier: MIT
// Guest operations end to end: the real agent (unix-listen) driven by the real qx-agent with
// --connect, or by the qxa::host client library.
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "qxa/guest/core/log_text.hpp"
#include "qxa/host/agent_client.hpp"
#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/files.hpp"
#include "support/pinger.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/run.hpp"
#include "support/shipped.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::cli_bin;
using qxa::test::file_sha256;
using qxa::test::temp_dir;
using qxa::test::write_random_file;
using json = nlohmann::json;
namespace qc = qxa::common;
namespace qh = qxa::host;
namespace pb = quantix::agent::v1;

namespace {

const std::string agent_bin = QXA_AGENT_PATH;

struct agent_under_test {
  explicit agent_under_test(const temp_dir& dir,
                            const std::string& config = qxa::test::shipped_agent_config)
      : socket(dir / "agent.sock"),
        process({agent_bin, "--config", config, "--port", "unix-listen:" + socket,
                 "--telemetry-interval", "1s"}) {
    REQUIRE(process.wait_for_log(qxa::guest::log_text::started, 10s));
  }
  qxa::test::command_result cli(std::vector<std::string> args,
                                std::chrono::steady_clock::duration timeout = 60s) {
    args.insert(args.begin(), {cli_bin, "--connect", socket});
    return qxa::test::run_command(std::move(args), timeout);
  }
  std::string socket;
  child_process process;
};

// Processes whose command line is exactly `argv`.
std::size_t processes_running(const std::vector<std::string>& argv) {
  std::string want;
  for (const auto& a : argv) want += a + '\0';
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    // Any process may exit while we look; its files then read as empty.
    const std::string cmd = qxa::test::read_proc_file(e.path() / "cmdline");
    const std::string stat = qxa::test::read_proc_file(e.path() / "stat");
    const auto close = stat.rfind(')');
    const bool zombie =
        close != std::string::npos && stat.size() > close + 2 && stat[close + 2] == 'Z';
    if (cmd == want || (zombie && stat.find("(" + argv.front() + ")") != std::string::npos)) ++n;
  }
  return n;
}

// Waits (with a deadline) until `n` processes run `argv`: a killed process takes a moment to
// die, a started one to exec.
bool processes_become(const std::vector<std::string>& argv, std::size_t n) {
  return qxa::test::eventually([&] { return processes_running(argv) == n; }, 5s, 5ms);
}
bool processes_gone(const std::vector<std::string>& argv) { return processes_become(argv, 0); }

// Waits (with a deadline) for a file whose name starts with `prefix` to show up in `dir`.
bool wait_for_file(const std::string& dir, const std::string& prefix,
                   std::chrono::steady_clock::duration timeout) {
  return qxa::test::eventually(
      [&] {
        for (const auto& e : std::filesystem::directory_iterator(dir)) {
          if (e.path().filename().string().starts_with(prefix)) return true;
        }
        return false;
      },
      timeout, 1ms);
}

}  // namespace

TEST_CASE("qx-agent exec: exit codes, signals, output that shows up live, and interruption",
          "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  auto r = agent.cli({"exec", "-", "--", "sh", "-c", "echo out; echo err >&2; exit 7"});
  CHECK(r.status == 7);
  CHECK(r.out == "out\n");
  CHECK_THAT(r.err, Catch::Contains("err\n"));
  r = agent.cli({"exec", "-", "--", "sh", "-c", "kill -KILL $$"});
  CHECK(r.status == 128 + 9);
  CHECK_THAT(r.err, Catch::Contains("killed by signal 9"));
  r = agent.cli({"exec", "-", "--shell", "--", "echo", "$((6*7))"});
  CHECK(r.out == "42\n");
  r = agent.cli({"exec", "-", "--", "no-such-program-here"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("no such program"));
  // Options before the VM name: --env takes one value each, never the VM's name.
  r = agent.cli(
      {"exec", "--env", "A=1", "--env", "B=two words", "-", "--", "sh", "-c", "echo \"$A/$B\""});
  CHECK(r.status == 0);
  CHECK(r.out == "1/two words\n");

  // Live: the first line arrives while the command still runs.
  child_process live({cli_bin, "--connect", agent.socket, "exec", "-", "--", "sh", "-c",
                      "echo first; exec sleep 101"},
                     {}, true);
  CHECK(live.wait_for_output("first", 10s));
  CHECK(live.running());
  CHECK(processes_become({"sleep", "101"}, 1));
  live.signal(SIGINT);  // Ctrl-C cancels the command in the guest
  const auto status = live.wait_exit(10s);
  REQUIRE(status.has_value());
  CHECK(*status == 130);
  CHECK(agent.process.wait_for_log(
      "cancelled: " + std::string(qxa::guest::log_text::host_cancelled), 5s));
  // Killed and reaped (no zombie either).
  CHECK(processes_gone({"sleep", "101"}));
}

TEST_CASE("qx-agent exec: 20 MiB on stdout and 20 MiB on stderr complete and report truncation",
          "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  auto r = agent.cli({"--json", "exec", "-", "--", "sh", "-c",
                      "head -c 20971520 /dev/zero; head -c 20971520 /dev/zero >&2"});
  CHECK(r.status == 0);
  // The guest's default cap is 16 MiB per stream; what was produced is counted anyway.
  CHECK(r.out.size() == 16u << 20);
  CHECK_THAT(r.err, Catch::Contains("output truncated by the guest's limit (stdout 20971520 bytes, "
                                    "stderr 20971520 bytes produced)"));
  CHECK_THAT(r.err, Catch::Contains("\"stdout_truncated\":true") &&
                        Catch::Contains("\"stderr_truncated\":true"));
}

TEST_CASE(
    "qx-agent exec: sleep 100 with a 1 s timeout returns in about a second and leaves no "
    "process",
    "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  auto r =
      // A duration no other test uses: processes are found by their command line, machine-wide,
      // and unit tests run beside this one.
      agent.cli({"exec", "-", "--timeout", "1s", "--", "sh", "-c", "sleep 1007 & exec sleep 1007"});
  CHECK(r.status == 75);
  CHECK_THAT(r.err, Catch::Contains("timed out after 1000 ms and was killed"));
  const double secs = std::chrono::duration<double>(r.took).count();
  WARN(fmt::format("exec of sleep 100 with a 1 s timeout returned after {:.2f} s", secs));
  CHECK(secs < 5);
  CHECK(processes_gone({"sleep", "1007"}));
}

// 256 MiB in the release build; a quarter of it under the sanitizers, whose instrumented copy
// loops take five times as long.
#ifdef QXA_SANITIZED
constexpr std::uintmax_t big_copy_mib = 64;
#else
constexpr std::uintmax_t big_copy_mib = 256;
#endif

TEST_CASE("qx-agent cp: a big file both ways with matching SHA-256", "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  const auto source = dir / "source.bin";
  write_random_file(source, big_copy_mib << 20);
  const auto expected = file_sha256(source);
  auto up = agent.cli({"--json", "cp", source, "-:" + (dir / "guest/up.bin"), "--parents"});
  REQUIRE(up.status == 0);
  CHECK(json::parse(up.out)["sha256"] == expected);
  CHECK(file_sha256(dir / "guest/up.bin") == expected);
  auto down = agent.cli({"--json", "cp", "-:" + (dir / "guest/up.bin"), dir / "down.bin"});
  REQUIRE(down.status == 0);
  CHECK(json::parse(down.out)["sha256"] == expected);
  CHECK(file_sha256(dir / "down.bin") == expected);
  WARN(fmt::format("{} MiB up in {:.2f} s, down in {:.2f} s", big_copy_mib,
                   std::chrono::duration<double>(up.took).count(),
                   std::chrono::duration<double>(down.took).count()));
  // A copy into a directory keeps the name; the local file keeps the guest file's mode.
  std::filesystem::create_directory(dir / "into");
  REQUIRE(agent.cli({"cp", "-:" + source, dir / "into"}).status == 0);
  CHECK(std::filesystem::file_size(dir / "into/source.bin") == big_copy_mib << 20);
}

TEST_CASE(
    "qx-agent cp out of a guest gives the local file the guest's permission bits under this "
    "side's umask, never its set-id bits",
    "[integration][ops][hostile]") {
  temp_dir dir;
  agent_under_test agent(dir);
  // A guest user's file, as open as a mode can be.
  const auto guest_file = dir.write("guest/wide-open", "payload\n");
  REQUIRE(::chmod(guest_file.c_str(), 06777) == 0);
  for (const auto& [umask, expected] : {std::pair{"022", 0755}, std::pair{"077", 0700}}) {
    INFO("umask " << umask);
    const auto local = dir / fmt::format("down-{}", umask);
    auto r = qxa::test::run_command({"/bin/sh", "-c",
                                     fmt::format("umask {} && exec {} --connect {} cp -:{} {}",
                                                 umask, cli_bin, agent.socket, guest_file, local)},
                                    30s);
    INFO(r.err);
    REQUIRE(r.status == 0);
    struct stat st {};
    REQUIRE(::stat(local.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == static_cast<mode_t>(expected));
  }
}

TEST_CASE("a copy cut short by killing either side leaves no file at the destination",
          "[integration][ops]") {
  temp_dir dir;
  const auto source = dir / "source.bin";
  write_random_file(source, 256u << 20);
  std::filesystem::create_directory(dir / "host");
  std::filesystem::create_directory(dir / "guest");
  {
    // The host side dies during a download.
    agent_under_test agent(dir);
    child_process cp({cli_bin, "--connect", agent.socket, "cp", "-:" + source, dir / "host/copy"});
    REQUIRE(wait_for_file(dir / "host", ".copy.qxa-", 10s));
    cp.signal(SIGKILL);
    cp.wait_exit(5s);
    CHECK_FALSE(std::filesystem::exists(dir / "host/copy"));
  }
  {
    // The guest side dies during an upload.
    temp_dir sockdir;
    agent_under_test agent(sockdir);
    child_process cp(
        {cli_bin, "--connect", agent.socket, "cp", source, "-:" + (dir / "guest/copy")});
    REQUIRE(agent.process.wait_for_log("outcome=opened", 10s));
    agent.process.signal(SIGKILL);
    const auto status = cp.wait_exit(10s);
    REQUIRE(status.has_value());
    CHECK(*status == 75);  // connection lost
    // Not even a temporary file: the upload had no name until it was complete.
    CHECK(std::filesystem::is_empty(dir / "guest"));
  }
  {
    // An agent that stays up discards the upload of a host that went away.
    temp_dir sockdir;
    agent_under_test agent(sockdir);
    child_process cp(
        {cli_bin, "--connect", agent.socket, "cp", source, "-:" + (dir / "guest/again")});
    REQUIRE(agent.process.wait_for_log("outcome=opened", 10s));
    cp.signal(SIGKILL);
    CHECK(agent.process.wait_for_log(qxa::guest::log_text::uploads_discarded, 10s));
    CHECK_FALSE(std::filesystem::exists(dir / "guest/again"));
    for (const auto& e : std::filesystem::directory_iterator(dir / "guest")) {
      CHECK_FALSE(e.path().filename().string().starts_with(".again.qxa-"));
    }
  }
}

TEST_CASE("Ctrl-C during a copy either way or a telemetry watch: nothing left behind, 130 or 0",
          "[integration][ops]") {
  temp_dir dir;
  const auto source = dir / "source.bin";
  write_random_file(source, 256u << 20);
  std::filesystem::create_directory(dir / "host");
  std::filesystem::create_directory(dir / "guest");
  agent_under_test agent(dir);
  {
    // A download: the partial file goes, the call is cancelled in the guest.
    child_process cp({cli_bin, "--connect", agent.socket, "cp", "-:" + source, dir / "host/copy"});
    REQUIRE(wait_for_file(dir / "host", ".copy.qxa-", 10s));
    cp.signal(SIGINT);
    const auto status = cp.wait_exit(10s);
    REQUIRE(status.has_value());
    CHECK(*status == 130);
    CHECK(std::filesystem::is_empty(dir / "host"));
    CHECK(agent.process.wait_for_log(
        "(file-read) cancelled: " + std::string(qxa::guest::log_text::host_cancelled), 10s));
  }
  {
    // An upload: aborted in the guest before the program ends.
    child_process cp(
        {cli_bin, "--connect", agent.socket, "cp", source, "-:" + (dir / "guest/copy")});
    REQUIRE(agent.process.wait_for_log("outcome=opened", 10s));
    cp.signal(SIGINT);
    const auto status = cp.wait_exit(10s);
    REQUIRE(status.has_value());
    CHECK(*status == 130);
    CHECK(std::filesystem::is_empty(dir / "guest"));
  }
  {
    // Ctrl-C is how a watch ends: status 0.
    child_process watch({cli_bin, "--connect", agent.socket, "telemetry", "-", "--watch"}, {},
                        true);
    REQUIRE(watch.wait_for_output("memory", 10s));
    watch.signal(SIGINT);
    const auto status = watch.wait_exit(10s);
    REQUIRE(status.has_value());
    CHECK(*status == 0);
  }
  // The agent served all of it on one connection after another, and still answers.
  CHECK(agent.cli({"ping", "-"}).status == 0);
}

TEST_CASE(
    "policy refusals through qx-agent: blocked operation, exec off, program not allowed, "
    "path escapes, oversized file",
    "[integration][ops]") {
  temp_dir dir;
  dir.write("inside/ok.txt", "fine");
  dir.write("outside/secret.txt", "secret");
  REQUIRE(::symlink((dir / "outside/secret.txt").c_str(), (dir / "inside/link").c_str()) == 0);
  dir.write("big.txt", std::string(5000, 'x'));
  const auto config =
      dir.write("agent.toml",
                fmt::format("[policy]\nblock = [\"hostname\"]\nexec_allow = [\"/usr/bin/true\"]\n"
                            "read_roots = [\"{0}/inside\"]\nwrite_roots = [\"{0}/inside\"]\n"
                            "max_file_bytes = 1000\n",
                            dir.path()));
  agent_under_test agent(dir, config);
  struct refusal {
    std::vector<std::string> args;
    std::string rule, op;
  };
  const std::vector<refusal> cases = {
      {{"hostname", "-", "renamed"}, "policy.block", "hostname"},
      {{"exec", "-", "--", "/bin/sh", "-c", "true"}, "policy.exec_allow", "exec"},
      {{"cp", "-:" + (dir / "inside/../outside/secret.txt"), dir / "got1"},
       "policy.read_roots",
       "file-read"},
      {{"cp", "-:" + (dir / "inside/link"), dir / "got2"}, "policy.read_roots", "file-read"},
      {{"cp", dir / "big.txt", "-:" + (dir / "inside/big.txt")},
       "policy.max_file_bytes",
       "file-write"},
      {{"cp", dir / "inside/ok.txt", "-:" + (dir / "inside/../outside/new.txt")},
       "policy.write_roots",
       "file-write"},
  };
  for (const auto& c : cases) {
    INFO(c.args[0] << " " << c.args[1] << " " << c.args[2]);
    auto r = agent.cli(c.args);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("(rule " + c.rule + ")"));
    CHECK(agent.process.wait_for_log(fmt::format("audit: op={} session=", c.op), 5s));
  }
  CHECK(agent.process.wait_for_log("outcome=refused rule=", 5s, cases.size()));
  CHECK(agent.process.count_in_log("outcome=refused rule=") == cases.size());
  CHECK_FALSE(std::filesystem::exists(dir / "got1"));
  CHECK_FALSE(std::filesystem::exists(dir / "got2"));
  CHECK_FALSE(std::filesystem::exists(dir / "outside/new.txt"));
  // What the policy allows still works.
  CHECK(agent.cli({"exec", "-", "--", "/usr/bin/true"}).status == 0);
  CHECK(agent.cli({"cp", "-:" + (dir / "inside/ok.txt"), dir / "ok.txt"}).status == 0);

  temp_dir other;
  const auto off = other.write("agent.toml", "[policy]\nexec = false\n");
  agent_under_test no_exec(other, off);
  auto r = no_exec.cli({"exec", "-", "--", "/usr/bin/true"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("(rule policy.exec)"));
  CHECK(no_exec.process.wait_for_log("audit: op=exec session=", 5s));
  CHECK(no_exec.process.wait_for_log("outcome=refused rule=policy.exec", 5s));
}

TEST_CASE("qx-agent stat, ls, mkdir, mv and rm manage the guest's files, as text and JSON",
          "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  const auto g = dir / "g";
  auto r = agent.cli({"mkdir", "-", g + "/a/b", "--parents", "--mode", "0700"});
  REQUIRE(r.status == 0);
  CHECK(r.out == g + "/a/b: made\n");
  r = agent.cli({"--json", "stat", "-", g + "/a/b"});
  REQUIRE(r.status == 0);
  auto j = json::parse(r.out);
  CHECK(j["type"] == "directory");
  CHECK(j["mode"] == "0700");
  CHECK(agent.cli({"mkdir", "-", g + "/a/b"}).status == 1);
  CHECK(agent.cli({"mkdir", "-p", "-", g + "/a/b"}).out == g + "/a/b: already a directory\n");

  // 2,500 entries: more than a page of the guest's listing. Names a terminal must not obey,
  // and one that is not UTF-8, among them.
  for (int i = 0; i < 2500; ++i) dir.write(fmt::format("g/many/f{:04}", i), "x");
  dir.write("g/names/\x1b[2Jclear", "e");
  dir.write("g/names/latin1-\xe9", "l");
  r = agent.cli({"ls", "-", g + "/many"});
  REQUIRE(r.status == 0);
  CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 2500);
  CHECK(r.out.starts_with("f0000\nf0001\n"));
  CHECK(r.out.ends_with("f2499\n"));
  r = agent.cli({"ls", "-l", "-", g + "/names"});
  REQUIRE(r.status == 0);
  CHECK(r.out.find('\x1b') == std::string::npos);
  CHECK_THAT(r.out, Catch::StartsWith("-rw-r--r--") && Catch::Contains("\\e[2Jclear"));
  r = agent.cli({"--json", "ls", "-", g + "/names"});
  REQUIRE(r.status == 0);
  j = json::parse(r.out);
  REQUIRE(j["entries"].size() == 2);
  CHECK(j["entries"][0]["path"] == "\x1b[2Jclear");
  CHECK_FALSE(j["entries"][0].contains("path_base64"));
  CHECK(j["entries"][1]["path_base64"] == "bGF0aW4xLek=");  // "latin1-\xe9"
  CHECK(j["entries"][1]["size"] == 1);

  // mv: into a directory, never over a file unless asked.
  dir.write("g/one", "1");
  dir.write("g/two", "2");
  r = agent.cli({"mv", "-", g + "/one", g + "/a/"});
  REQUIRE(r.status == 0);
  CHECK(std::filesystem::exists(g + "/a/one"));
  r = agent.cli({"mv", "-", g + "/two", g + "/a/one"});
  CHECK(r.status == 1);
  CHECK_THAT(r.err, Catch::Contains("exists"));
  CHECK(agent.cli({"mv", "--replace", "-", g + "/two", g + "/a/one"}).status == 0);
  CHECK(qxa::test::read_proc_file(g + "/a/one") == "2");

  // rm: a directory with entries only with -r; -f for what is not there.
  r = agent.cli({"rm", "-", g + "/a"});
  CHECK(r.status == 1);
  CHECK(std::filesystem::exists(g + "/a/one"));
  r = agent.cli({"rm", "-r", "-", g + "/a"});
  REQUIRE(r.status == 0);
  CHECK(r.out == g + "/a: removed (3 entries)\n");
  CHECK(agent.cli({"rm", "-", g + "/a"}).status == 1);
  CHECK(agent.cli({"rm", "-f", "-", g + "/a"}).out == g + "/a: not there\n");
  r = agent.cli({"--json", "rm", "-r", "-", g + "/many"});
  REQUIRE(r.status == 0);
  CHECK(json::parse(r.out)["removed"] == 2501);
  CHECK(agent.process.wait_for_log("audit: op=file-remove session=", 5s));

  // A guest that blocks file-write blocks all of these.
  temp_dir other;
  agent_under_test strict(other, other.write("agent.toml", "[policy]\nblock = [\"file-write\"]\n"));
  for (const std::vector<std::string>& args : {std::vector<std::string>{"rm", "-r", "-", g},
                                               {"mkdir", "-", g + "/new"},
                                               {"mv", "-", g + "/names", g + "/moved"}}) {
    r = strict.cli(args);
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains("(rule policy.block)"));
  }
  CHECK(std::filesystem::exists(g + "/names"));
}

namespace {

/// A network namespace with a LAN interface (a static and a dynamic address, a default route),
/// a veth peer and a docker bridge, and a resolv.conf of its own (`ip netns exec` puts
/// /etc/netns/NAME/resolv.conf in place of /etc/resolv.conf). Removed at the end of the scope.
struct network_namespace {
  network_namespace() : name(fmt::format("qxa-test-{}", ::getpid())) {
    for (const auto& step : std::vector<std::vector<std::string>>{
             {"netns", "add", name},
             {"-n", name, "link", "add", "lan0", "type", "veth", "peer", "name", "veth9"},
             {"-n", name, "link", "set", "lan0", "up"},
             {"-n", name, "link", "set", "veth9", "up"},
             {"-n", name, "addr", "add", "10.9.8.7/24", "dev", "lan0"},
             {"-n", name, "addr", "add", "10.9.9.9/24", "dev", "lan0", "valid_lft", "300",
              "preferred_lft", "300"},
             {"-n", name, "route", "add", "default", "via", "10.9.8.1"},
             {"-n", name, "link", "add", "docker0", "type", "bridge"},
             {"-n", name, "addr", "add", "172.17.0.1/16", "dev", "docker0"},
             {"-n", name, "link", "set", "docker0", "up"}}) {
      std::vector<std::string> argv = {"/sbin/ip"};
      argv.insert(argv.end(), step.begin(), step.end());
      const auto r = qxa::test::run_command(argv, 10s);
      INFO(r.err);
      REQUIRE(r.status == 0);
    }
    std::filesystem::create_directories(etc());
    std::ofstream(etc() + "/resolv.conf") << "nameserver 10.9.8.53\nsearch example.test lab.test\n";
  }
  ~network_namespace() {
    (void)qxa::test::run_command({"/sbin/ip", "netns", "del", name}, 10s);
    std::error_code ec;
    std::filesystem::remove_all(etc(), ec);
  }
  [[nodiscard]] std::string etc() const { return "/etc/netns/" + name; }
  std::string name;
};

}  // namespace

TEST_CASE(
    "in a network namespace: qx-agent network shows static and dynamic addresses, the "
    "default route, DNS and the primary address, and leaves veth and docker out",
    "[integration][ops]") {
  REQUIRE(::geteuid() == 0);  // making a network namespace
  network_namespace ns;
  temp_dir dir;
  const auto socket = dir / "agent.sock";
  child_process agent({"/sbin/ip", "netns", "exec", ns.name, agent_bin, "--config",
                       qxa::test::shipped_agent_config, "--port", "unix-listen:" + socket});
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {cli_bin, "--connect", socket});
    return qxa::test::run_command(std::move(args), 30s);
  };
  auto r = cli({"--json", "network", "-"});
  REQUIRE(r.status == 0);
  const auto n = json::parse(r.out);
  REQUIRE(n["interfaces"].size() == 1);  // lan0 only: veth9 and docker0 left out
  const auto& lan = n["interfaces"][0];
  CHECK(lan["name"] == "lan0");
  std::map<std::string, bool> dynamic;
  for (const auto& a : lan["addresses"]) dynamic[a["address"]] = a["dynamic"];
  CHECK(dynamic.at("10.9.8.7") == false);
  CHECK(dynamic.at("10.9.9.9") == true);
  CHECK(n["primary_address"] == "10.9.8.7");
  bool default_route = false;
  for (const auto& route : n["routes"]) {
    CHECK(route["interface"] == "lan0");  // none of the left-out interfaces' routes
    default_route |= route["destination"] == "0.0.0.0/0" && route["gateway"] == "10.9.8.1";
  }
  CHECK(default_route);
  CHECK(n["dns_servers"] == json::array({"10.9.8.53"}));
  CHECK(n["search_domains"] == json::array({"example.test", "lab.test"}));
  CHECK(n["excluded_patterns"] == json::array({"docker*", "veth*", "cni*"}));
  r = cli({"network", "-"});
  REQUIRE(r.status == 0);
  CHECK_THAT(r.out, Catch::Contains("10.9.9.9/24 (dynamic)") &&
                        Catch::Contains("route   0.0.0.0/0            via 10.9.8.1 dev lan0") &&
                        Catch::Contains("dns     10.9.8.53  search example.test lab.test"));
  // Telemetry says the same: the interfaces left out, the primary address.
  r = cli({"--json", "telemetry", "-"});
  REQUIRE(r.status == 0);
  const auto t = json::parse(r.out);
  CHECK(t["primary_address"] == "10.9.8.7");
  CHECK(t["interfaces"].size() == 1);
}

TEST_CASE("qx-agent freeze --status reports a thawed guest", "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  auto r = agent.cli({"--json", "freeze", "--status", "-"});
  REQUIRE(r.status == 0);
  const auto j = json::parse(r.out);
  CHECK(j["frozen"] == false);
  CHECK(j["lease_expires_unix_ms"] == 0);
  r = agent.cli({"freeze", "--status", "-"});
  CHECK(r.out == "thawed\n");
}

TEST_CASE(
    "qx-agent disks maps this machine's filesystems to its block devices, as text and JSON, "
    "and freeze --disk refuses a serial no disk has",
    "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  auto r = agent.cli({"--json", "disks", "-"});
  REQUIRE(r.status == 0);
  const auto j = json::parse(r.out);
  REQUIRE(j["devices"].is_array());
  std::set<std::string> devices;
  for (const auto& d : j["devices"]) devices.insert(d["name"].get<std::string>());
  // Every filesystem's device and disks are listed devices, and its disks are disks.
  std::string root_device;
  for (const auto& fs : j["filesystems"]) {
    const auto device = fs["device"].get<std::string>();
    if (fs["mount_point"] == "/") root_device = device;
    if (device.empty()) continue;
    CHECK(devices.count(device) == 1);
    CHECK_FALSE(fs["disks"].empty());
    for (const auto& disk : fs["disks"]) {
      for (const auto& d : j["devices"]) {
        if (d["name"] == disk) CHECK(d["kind"] == "disk");
      }
    }
  }
  // The root filesystem's device is the one sysfs names for its device number.
  struct stat st {};
  REQUIRE(::stat("/", &st) == 0);
  const auto sys = fmt::format("/sys/dev/block/{}:{}", major(st.st_dev), minor(st.st_dev));
  std::error_code ec;
  if (const auto real = std::filesystem::canonical(sys, ec); !ec) {
    CHECK(root_device == real.filename().string());
    r = agent.cli({"disks", "-"});
    REQUIRE(r.status == 0);
    CHECK_THAT(r.out, Catch::Contains("DEVICE     KIND"));
    CHECK_THAT(r.out, Catch::Contains(" on " + root_device));
  } else {
    CHECK(root_device.empty());  // a root with no block device (overlay, tmpfs): none claimed
  }
  r = agent.cli({"freeze", "--disk", "no-such-serial", "-"});
  CHECK(r.status == 1);  // the agent's refusal
  CHECK_THAT(r.err, Catch::Contains("no disk has the serial no-such-serial"));
}

TEST_CASE("a ping never waits behind a long exec or a file transfer on the same connection",
          "[integration][ops]") {
  temp_dir dir;
  const auto big = dir / "big.bin";
  write_random_file(big, 128u << 20);
  // Output is streamed up to 1 GiB here, so that it flows for as long as the file read.
  agent_under_test agent(dir, dir.write("agent.toml", "[policy]\nmax_output_bytes = 1073741824\n"));
  std::vector<double> idle_ms, busy_ms;
  std::uint64_t output_bytes = 0, file_bytes = 0;
  qxa::test::run_async(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto client = qh::agent_client::create(io.get_executor(), agent.socket);
        auto ec = co_await client->connect();
        REQUIRE_FALSE(ec);
        auto ping = [&]() -> asio::awaitable<double> {
          pb::Envelope p;
          p.mutable_ping();
          const auto t0 = std::chrono::steady_clock::now();
          auto r = co_await client->request(p, 5s);
          REQUIRE(r);
          REQUIRE(r->has_pong());
          co_return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
              .count();
        };
        for (int i = 0; i < 20; ++i) idle_ms.push_back(co_await ping());

        bool exec_done = false, read_done = false;
        // A command that writes output without pause, streamed.
        pb::Envelope e;
        e.mutable_exec_request()->add_argv("sh");
        e.mutable_exec_request()->add_argv("-c");
        e.mutable_exec_request()->add_argv("head -c 300000000 /dev/zero");
        e.mutable_exec_request()->set_stream_output(true);
        e.mutable_exec_request()->set_max_output_bytes(1ull << 40);
        qh::call_options eo;
        eo.timeout = 60s;
        eo.on_progress = [&](const pb::Envelope& m) {
          output_bytes += m.exec_output().data().size();
        };
        asio::co_spawn(
            io,
            [](std::shared_ptr<qh::agent_client> c, pb::Envelope req, qh::call_options o,
               bool& done) -> asio::awaitable<void> {
              (void)co_await c->request(std::move(req), std::move(o));
              done = true;
            }(client, e, eo, exec_done),
            asio::detached);
        pb::Envelope f;
        f.mutable_file_read_request()->set_path(big);
        qh::call_options fo;
        fo.timeout = 60s;
        fo.on_progress = [&](const pb::Envelope& m) { file_bytes += m.file_chunk().data().size(); };
        asio::co_spawn(
            io,
            [](std::shared_ptr<qh::agent_client> c, pb::Envelope req, qh::call_options o,
               bool& done) -> asio::awaitable<void> {
              (void)co_await c->request(std::move(req), std::move(o));
              done = true;
            }(client, f, fo, read_done),
            asio::detached);
        // Ping while both stream.
        while (!(exec_done && read_done) && busy_ms.size() < 400) {
          if (output_bytes > 0 && file_bytes > 0) busy_ms.push_back(co_await ping());
          co_await qxa::test::sleep_for(5ms);
        }
        client->close();
      },
      90s);
  REQUIRE(busy_ms.size() >= 10);
  std::sort(idle_ms.begin(), idle_ms.end());
  std::sort(busy_ms.begin(), busy_ms.end());
  const double idle_p50 = idle_ms[idle_ms.size() / 2];
  const double busy_p50 = busy_ms[busy_ms.size() / 2];
  const double busy_max = busy_ms.back();
  WARN(fmt::format(
      "ping idle p50 {:.2f} ms; during exec output ({} MiB) and a file read ({} MiB): "
      "{} pings, p50 {:.2f} ms, max {:.2f} ms",
      idle_p50, output_bytes >> 20, file_bytes >> 20, busy_ms.size(), busy_p50, busy_max));
  CHECK(output_bytes > 0);
  CHECK(file_bytes > 0);
  // A pong goes ahead of queued bulk data: it waits for at most the frame being written.
  CHECK(busy_max < 500);
}

TEST_CASE(
    "a host that accepts only small frames gets replies that fit: command output cut to "
    "its limit, a long listing in pages, the connection kept",
    "[integration][ops]") {
  temp_dir dir;
  agent_under_test agent(dir);
  for (int i = 0; i < 3000; ++i)
    dir.write(fmt::format("many/{:04}-{}", i, std::string(150, 'n')), "");
  qxa::test::run_async(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        qh::client_options small;
        small.max_frame_size = 256u << 10;  // said in the Hello
        auto client = qh::agent_client::create(io.get_executor(), agent.socket, small);
        const auto connected = co_await client->connect();
        REQUIRE_FALSE(connected);
        pb::Envelope e;
        e.mutable_exec_request()->add_argv("sh");
        e.mutable_exec_request()->add_argv("-c");
        e.mutable_exec_request()->add_argv(
            "head -c 3000000 /dev/zero; head -c 3000000 /dev/zero >&2");
        auto r = co_await client->request(e, 30s);
        REQUIRE(r);
        REQUIRE(r->has_exec_result());
        const auto& x = r->exec_result();
        CHECK(x.stdout_truncated());
        CHECK(x.stdout_bytes() == 3'000'000);
        CHECK(x.stdout().size() + x.stderr().size() < (256u << 10));
        std::size_t listed = 0;
        pb::Envelope list;
        list.mutable_dir_list_request()->set_path(dir / "many");
        list.mutable_dir_list_request()->set_limit(10'000);
        for (int page = 0; page < 100; ++page) {
          auto l = co_await client->request(list, 30s);
          REQUIRE(l);
          REQUIRE(l->has_dir_list());
          listed += static_cast<std::size_t>(l->dir_list().entries_size());
          if (l->dir_list().next_after().empty()) break;
          list.mutable_dir_list_request()->set_after(l->dir_list().next_after());
        }
        CHECK(listed == 3000);
        // By position, as hosts list now: pages that fit too, and every entry once.
        std::set<std::string> names;
        pb::Envelope by_position;
        by_position.mutable_dir_list_request()->set_path(dir / "many");
        by_position.mutable_dir_list_request()->set_limit(10'000);
        by_position.mutable_dir_list_request()->set_by_position(true);
        for (int page = 0; page < 100; ++page) {
          auto l = co_await client->request(by_position, 30s);
          REQUIRE(l);
          REQUIRE(l->has_dir_list());
          for (const auto& entry : l->dir_list().entries())
            CHECK(names.insert(entry.path()).second);
          if (l->dir_list().next_position() == 0) break;
          by_position.mutable_dir_list_request()->set_position(l->dir_list().next_position());
        }
        CHECK(names.size() == 3000);
        CHECK(client->is_connected());
        CHECK(client->stats().bad_frames == 0);
      },
      60s);
}

TEST_CASE(
    "a directory of 200,000 entries lists whole and sorted in pages that each read only their "
    "part of it, and the agent answers pings throughout",
    "[integration][ops][hostile]") {
  temp_dir vms, run;
  // In memory (tmpfs, where there is one): made in a second, where a disk takes many.
  temp_dir dir(std::filesystem::is_directory("/dev/shm") ? "/dev/shm" : "/tmp");
  const std::string ctl = run / "ctl.sock";
  auto agent = qxa::test::start_vm_agent(vms, "vm");
  auto daemon = qxa::test::start_daemon(vms, run, "500ms", "2s");
  REQUIRE(qxa::test::wait_vm_state(ctl, "vm", "ready", 10s));
  // What a user can make in her home in a few seconds; names too long to be kept inline.
  const std::string many = dir / "many";
  std::filesystem::create_directories(many);
  constexpr int count = 200'000;
  const std::string tail(40, 'x');
  const auto name_of = [&](int i) { return fmt::format("f{:06}-{}", i, tail); };
  int made = 0;
  for (int i = 0; i < count; ++i) {
    const int fd = ::open((many + "/" + name_of(i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    made += fd >= 0 ? 1 : 0;
    ::close(fd);
  }
  REQUIRE(made == count);
  const auto peak_before = qxa::test::process_peak_rss_bytes(agent->pid());
  qxa::test::pinger pings(cli_bin, ctl, "vm");
  auto ls = qxa::test::run_command(
      {cli_bin, "--control-socket", ctl, "ls", "vm", many, "--timeout", "30s"}, 150s);
  pings.stop();
  INFO(ls.err);
  REQUIRE(ls.status == 0);
  std::vector<std::string> names;
  for (std::size_t at = 0; at < ls.out.size();) {
    const auto nl = ls.out.find('\n', at);
    names.push_back(ls.out.substr(at, nl - at));
    at = nl + 1;
  }
  CHECK(names.size() == count);
  CHECK(std::is_sorted(names.begin(), names.end()));
  CHECK(names.front() == name_of(0));
  CHECK(names.back() == name_of(count - 1));
  // A page is the page's work: the agent never held the whole directory's names at once (about
  // 16 MiB of them), as it did when it sorted them all for every page.
  const auto grew = qxa::test::process_peak_rss_bytes(agent->pid()) - peak_before;
  WARN(fmt::format("the agent's peak RSS grew by {:.1f} MiB listing {} entries",
                   static_cast<double>(grew) / (1 << 20), count));
#ifndef QXA_SANITIZED
  CHECK(grew < (4u << 20));
#endif
  INFO(fmt::format("{} pings during the listing, {} failed or slower than 2 s, slowest {:.0f} ms",
                   pings.sent(), pings.failed(), pings.worst_ms()));
  CHECK(pings.failed() == 0);
}
