// SPDX-License-Identifier: MIT
// The real agent's qemu-guest-agent port, beside the real qemu-guest-agent on the same machine:
// the same commands get the same answers, field for field, and the same errors.
#include "support/qga.hpp"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fmt/format.h>
#include <sstream>
#include <map>
#include <set>
#include <thread>

#include "support/cli.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/shipped.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::qga_client;
using qxa::test::temp_dir;
using ojson = qga_client::json;

namespace {

const std::string qemu_ga_binary = "/usr/sbin/qemu-ga";

// The agent with its native port and its qemu-ga port on unix sockets in `dir`, and `config`.
std::unique_ptr<child_process> start_agent_with_qga(const temp_dir& dir,
                                                    const std::string& config_text = {}) {
  const auto config =
      config_text.empty() ? qxa::test::shipped_agent_config : dir.write("agent.toml", config_text);
  auto agent = std::make_unique<child_process>(std::vector<std::string>{
      QXA_AGENT_PATH, "--config", config, "--port", "unix-listen:" + (dir / "native.sock"),
      "--qemu-ga-port", "unix-listen:" + (dir / "ours.sock")});
  const bool serving = agent->wait_for_log("serving the qemu-guest-agent protocol", 10s);
  INFO(agent->log());
  REQUIRE(serving);
  return agent;
}

// qemu-guest-agent itself, on a unix socket in `dir`.
std::unique_ptr<child_process> start_qemu_ga(const temp_dir& dir) {
  return std::make_unique<child_process>(
      std::vector<std::string>{qemu_ga_binary, "-m", "unix-listen", "-p", dir / "qga.sock", "-t",
                               dir.path(), "-f", dir / "qga.pid"});
}

ojson sorted_by(ojson list, const char* key) {
  std::sort(list.begin(), list.end(),
            [&](const ojson& a, const ojson& b) { return a[key] < b[key]; });
  return list;
}

// An interface's addresses as a set of "type address/prefix".
std::set<std::string> addresses_of(const ojson& interface) {
  std::set<std::string> out;
  if (!interface.contains("ip-addresses")) return out;
  for (const auto& a : interface["ip-addresses"]) {
    out.insert(a["ip-address-type"].get<std::string>() + " " + a["ip-address"].get<std::string>() +
               "/" + std::to_string(a["prefix"].get<int>()));
  }
  return out;
}

}  // namespace

TEST_CASE("the qemu-ga port answers as qemu-guest-agent does, field for field", "[qga]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir);
  auto peer = start_qemu_ga(dir);
  qga_client ours(dir / "ours.sock"), theirs(dir / "qga.sock");
  REQUIRE(ours.connected());
  REQUIRE(theirs.connected());

  // Identical answers.
  for (const char* command : {"guest-ping", "guest-get-osinfo", "guest-get-host-name",
                              "guest-get-timezone", "guest-get-users", "guest-fsfreeze-status"}) {
    INFO(command);
    const auto a = ours.call(command), b = theirs.call(command);
    REQUIRE(b.contains("return"));
    CHECK(a == b);
  }
  CHECK(ours.call("guest-sync", {{"id", 1234567890123}}) ==
        theirs.call("guest-sync", {{"id", 1234567890123}}));
  CHECK(sorted_by(ours.call("guest-get-vcpus")["return"], "logical-id") ==
        sorted_by(theirs.call("guest-get-vcpus")["return"], "logical-id"));
  const auto our_time = ours.call("guest-get-time")["return"].get<std::int64_t>();
  const auto their_time = theirs.call("guest-get-time")["return"].get<std::int64_t>();
  CHECK(std::abs(our_time - their_time) < 5'000'000'000);

  // Every interface we list (loopback and the like are left out, as the agent's telemetry is
  // configured), qemu-ga lists with the same MAC and addresses.
  const auto our_nics = ours.call("guest-network-get-interfaces")["return"];
  const auto their_nics = theirs.call("guest-network-get-interfaces")["return"];
  REQUIRE(our_nics.is_array());
  CHECK_FALSE(our_nics.empty());
  for (const auto& nic : our_nics) {
    INFO(nic.dump());
    CHECK(nic["statistics"].size() == 8);
    const auto match = std::find_if(their_nics.begin(), their_nics.end(),
                                    [&](const ojson& t) { return t["name"] == nic["name"]; });
    REQUIRE(match != their_nics.end());
    CHECK(nic["hardware-address"] == (*match)["hardware-address"]);
    CHECK(addresses_of(nic) == addresses_of(*match));
  }

  // Filesystems and disks: the same names, types and disk addresses (the byte counts move).
  const auto our_fs = ours.call("guest-get-fsinfo")["return"];
  const auto their_fs = theirs.call("guest-get-fsinfo")["return"];
  for (const auto& fs : our_fs) {
    INFO(fs.dump());
    const auto match = std::find_if(their_fs.begin(), their_fs.end(), [&](const ojson& t) {
      return t["mountpoint"] == fs["mountpoint"];
    });
    REQUIRE(match != their_fs.end());
    CHECK(fs["name"] == (*match)["name"]);
    CHECK(fs["type"] == (*match)["type"]);
    REQUIRE(fs["disk"].size() == (*match)["disk"].size());
    for (std::size_t i = 0; i < fs["disk"].size(); ++i) {
      for (const char* key : {"pci-controller", "bus-type", "bus", "target", "unit", "dev"}) {
        CHECK(fs["disk"][i][key] == (*match)["disk"][i][key]);
      }
    }
    const double total = fs["total-bytes"].get<double>();
    CHECK(std::abs(total - (*match)["total-bytes"].get<double>()) <= total * 0.01);
  }
  const auto our_disks = ours.call("guest-get-disks")["return"];
  const auto their_disks = theirs.call("guest-get-disks")["return"];
  for (const auto& d : our_disks) {
    INFO(d.dump());
    const auto match = std::find_if(their_disks.begin(), their_disks.end(),
                                    [&](const ojson& t) { return t["name"] == d["name"]; });
    if (match == their_disks.end()) continue;  // qemu-ga lists only some kinds of device
    CHECK(d["partition"] == (*match)["partition"]);
    CHECK(d["dependencies"] == (*match)["dependencies"]);
    if (match->contains("address")) {
      for (const char* key : {"pci-controller", "bus-type", "bus", "target", "unit", "dev"}) {
        CHECK(d["address"][key] == (*match)["address"][key]);
      }
    }
  }

  // The same errors for the same mistakes.
  for (const std::string bad : {
           R"({"execute":"guest-nonexistent"})",
           R"({"execute":"guest-ping","arguments":{"x":1}})",
           R"({"execute":"guest-sync"})",
           R"({"execute":"guest-sync","arguments":{"id":1.5}})",
           R"({"execute":"guest-set-time","arguments":{"time":"99"}})",
           R"({"execute":"guest-exec-status","arguments":{"pid":1}})",
           R"({"execute":"guest-ping","arguments":[]})",
           R"({"execute":5})",
           R"({"foo":1})",
           R"([1])",
           R"({"execute":"guest-ping","id":{"any":["thing"]}})",
           R"({"execute":"guest-shutdown","arguments":{"mode":"explode"}})",
       }) {
    INFO(bad);
    REQUIRE(ours.send_raw(bad + "\n"));
    REQUIRE(theirs.send_raw(bad + "\n"));
    const auto a = qga_client::parse(ours.line()), b = qga_client::parse(theirs.line());
    REQUIRE(b.is_object());
    CHECK(a == b);
  }
}

TEST_CASE("guest-sync-delimited and 0xFF resynchronise a client as qemu-ga's do", "[qga]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir);
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  // Half a command, then the reset marker and a sync: only the sync is answered, after 0xFF.
  REQUIRE(c.send_raw(R"({"execute":"guest-exec","arguments":{"path":"/bin/tou)"));
  REQUIRE(
      c.send_raw("\xff"
                 R"({"execute":"guest-sync-delimited","arguments":{"id":77}})"
                 "\n"));
  CHECK(c.line() == "\xff{\"return\":77}");
  // Answers keep the order of the commands; an id is echoed.
  REQUIRE(
      c.send_raw(R"({"execute":"guest-ping","id":1}{"execute":"guest-sync","arguments":{"id":2}})"
                 "\n garbage \n"
                 R"({"execute":"guest-ping","id":"three"})"));
  CHECK(c.line() == R"({"return":{},"id":1})");
  CHECK(c.line() == R"({"return":2})");
  CHECK(c.line().starts_with(R"({"error":{"class":"GenericError","desc":"JSON parse error, )"));
  CHECK(c.line() == R"({"return":{},"id":"three"})");
  CHECK(c.line(200ms).empty());  // nothing else
}

TEST_CASE("the qemu-ga port goes through the guest's policy", "[qga]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir, "[policy]\nblock = [\"exec\", \"ssh-key\"]\n");
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  const auto info = c.call("guest-info")["return"];
  std::map<std::string, bool> enabled;
  for (const auto& cmd : info["supported_commands"]) {
    enabled[cmd["name"].get<std::string>()] = cmd["enabled"].get<bool>();
    // qemu-ga answers these only when they fail.
    const bool silent = cmd["name"] == "guest-shutdown" ||
                        cmd["name"].get<std::string>().starts_with("guest-suspend-");
    CHECK(cmd["success-response"] == !silent);
  }
  for (const char* name : {"guest-sync",
                           "guest-sync-delimited",
                           "guest-ping",
                           "guest-info",
                           "guest-get-osinfo",
                           "guest-get-host-name",
                           "guest-get-time",
                           "guest-set-time",
                           "guest-get-timezone",
                           "guest-get-users",
                           "guest-network-get-interfaces",
                           "guest-get-fsinfo",
                           "guest-get-disks",
                           "guest-fsfreeze-status",
                           "guest-fsfreeze-freeze",
                           "guest-fsfreeze-freeze-list",
                           "guest-fsfreeze-thaw",
                           "guest-fstrim",
                           "guest-shutdown",
                           "guest-exec",
                           "guest-exec-status",
                           "guest-set-user-password",
                           "guest-ssh-get-authorized-keys",
                           "guest-ssh-add-authorized-keys",
                           "guest-ssh-remove-authorized-keys",
                           "guest-get-vcpus",
                           "guest-get-memory-blocks",
                           "guest-file-open",
                           "guest-file-read",
                           "guest-file-write",
                           "guest-file-seek",
                           "guest-file-flush",
                           "guest-file-close"}) {
    INFO(name);
    CHECK(enabled.contains(name));
  }
  CHECK_FALSE(enabled["guest-exec"]);
  CHECK_FALSE(enabled["guest-exec-status"]);  // the job operations are exec's family
  CHECK_FALSE(enabled["guest-ssh-get-authorized-keys"]);
  CHECK(enabled["guest-get-osinfo"]);
  const auto refused = c.call("guest-exec", {{"path", "/bin/true"}});
  CHECK(refused["error"]["class"] == "CommandNotFound");
  CHECK(refused["error"]["desc"].get<std::string>().starts_with(
      "Command guest-exec has been disabled: "));
  CHECK(agent->wait_for_log("audit: op=exec port=qemu-ga command=guest-exec outcome=refused", 5s));
  CHECK(c.call("guest-ssh-get-authorized-keys", {{"username", "root"}})["error"]["class"] ==
        "CommandNotFound");
}

TEST_CASE("guest-exec runs a command as a job and guest-exec-status reports it once", "[qga]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir);
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  const auto started = c.call("guest-exec", {{"path", "/bin/sh"},
                                             {"arg", {"-c", "cat; echo err >&2; exit 3"}},
                                             {"input-data", "aW5wdXQ="},  // "input"
                                             {"capture-output", true}});
  REQUIRE(started["return"]["pid"].is_number_integer());
  const auto pid = started["return"]["pid"];
  ojson status;
  const auto until = std::chrono::steady_clock::now() + 20s;
  do {
    status = c.call("guest-exec-status", {{"pid", pid}})["return"];
  } while (status.is_object() && !status["exited"].get<bool>() &&
           std::chrono::steady_clock::now() < until);
  INFO(status.dump());
  REQUIRE(status["exited"] == true);
  CHECK(status["exitcode"] == 3);
  CHECK(status["out-data"] == "aW5wdXQ=");
  CHECK(status["err-data"] == "ZXJyCg==");  // "err\n"
  // Reported once, as qemu-ga does.
  CHECK(c.call("guest-exec-status", {{"pid", pid}})["error"]["desc"] == "Invalid parameter 'pid'");
  // Without capture-output nothing comes back; a signal is told as such.
  const auto killed =
      c.call("guest-exec", {{"path", "/bin/sh"}, {"arg", {"-c", "echo lost; kill -9 $$"}}});
  const auto kpid = killed["return"]["pid"];
  do {
    status = c.call("guest-exec-status", {{"pid", kpid}})["return"];
  } while (status.is_object() && !status["exited"].get<bool>() &&
           std::chrono::steady_clock::now() < until);
  CHECK(status == ojson{{"exited", true}, {"signal", 9}});
  CHECK(c.call("guest-exec", {{"path", "/bin/true"}, {"env", {"NOEQUALS"}}})["error"]["desc"] ==
        "Invalid parameter 'env': 'NOEQUALS' is not NAME=VALUE");
}

TEST_CASE("a guest-exec whose job record expired before its status was asked is unknown", "[qga]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir, "[jobs]\nkeep_finished = \"0s\"\n");
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  const auto pid = c.call("guest-exec", {{"path", "/bin/true"}})["return"]["pid"];
  REQUIRE(pid.is_number_integer());
  REQUIRE(agent->wait_for_log("ended: exit 0", 10s));
  // The job table drops the ended job's record at once; its pid is unknown, as qemu-ga has it.
  ojson status;
  REQUIRE(qxa::test::eventually(
      [&] {
        status = c.call("guest-exec-status", {{"pid", pid}});
        return status.contains("error");
      },
      10s, 50ms));
  CHECK(status["error"]["desc"] == "Invalid parameter 'pid'");
}

TEST_CASE(
    "a hostile qemu-ga client costs the agent nothing it keeps, and the native port "
    "goes on",
    "[qga]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir);
  {
    qga_client c(dir / "ours.sock");
    REQUIRE(c.connected());
    // 40 MiB in one command, more than the 16 MiB limit: skipped to its end, answered with an
    // error, and the next command is read.
    std::string big = R"({"execute":"guest-exec","arguments":{"path":")";
    big += std::string(40u << 20, 'a');
    big += R"("}})";
    REQUIRE(c.send_raw(big + R"({"execute":"guest-sync","arguments":{"id":5}})"));
    CHECK(c.line() == R"({"error":{"class":"GenericError","desc":"JSON parse error, the command )"
                      R"(is longer than 16777216 bytes"}})");
    CHECK(c.line() == R"({"return":5})");
#ifndef QXA_SANITIZED
    CHECK(qxa::test::process_peak_rss_bytes(agent->pid()) < (48u << 20));
#endif
    // Nesting that would take a recursive parser's stack.
    REQUIRE(c.send_raw(std::string(100'000, '[') + std::string(100'000, ']') +
                       R"({"execute":"guest-ping"})"));
    CHECK(c.line().find("nests deeper than") != std::string::npos);
    CHECK(c.line() == R"({"return":{}})");
    // A client that sends and never reads: once an answer waits longer than the write timeout
    // the agent drops it (its sending then fails), and the native port answers meanwhile.
    std::string many;
    for (int i = 0; i < 20'000; ++i) many += R"({"execute":"guest-get-osinfo"})";
    std::thread sender([&] { c.send_raw(many); });
    const auto r = qxa::test::run_cli({"--connect", dir / "native.sock", "ping", "-"}, 10s);
    INFO(r.out);
    CHECK(r.status == 0);
    CHECK(agent->wait_for_log(
        "qemu-ga port: client ended (an answer was not taken within the write timeout)", 30s));
    sender.join();
  }
  qga_client next(dir / "ours.sock");
  REQUIRE(next.connected());
  CHECK(next.call("guest-ping") == ojson{{"return", ojson::object()}});
}

TEST_CASE("guest-file-* read and write files by handle, placed by the native rules", "[qga]") {
  temp_dir dir, files;
  const std::string root = files.path();
  auto agent = start_agent_with_qga(
      dir, "[policy]\nread_roots = [\"" + root + "\"]\nwrite_roots = [\"" + root + "/out\"]\n");
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  const auto handle_of = [&](const std::string& path, const std::string& mode) {
    const auto r = c.call("guest-file-open", {{"path", path}, {"mode", mode}});
    INFO(r.dump());
    REQUIRE(r["return"].is_number_integer());
    return r["return"].get<std::int64_t>();
  };

  // Write, seek back, read what was written; then append.
  std::filesystem::create_directories(root + "/out");
  const auto w = handle_of(root + "/out/data", "w+");
  CHECK(w >= 1000);
  CHECK(c.call("guest-file-write", {{"handle", w}, {"buf-b64", "aGVsbG8gd29ybGQ="}})["return"] ==
        ojson{{"count", 11}, {"eof", false}});
  CHECK(c.call("guest-file-seek", {{"handle", w}, {"offset", 6}, {"whence", "set"}})["return"] ==
        ojson{{"position", 6}, {"eof", false}});
  CHECK(c.call("guest-file-read", {{"handle", w}, {"count", 100}})["return"] ==
        ojson{{"count", 5}, {"buf-b64", "d29ybGQ="}, {"eof", true}});
  CHECK(c.call("guest-file-flush", {{"handle", w}})["return"] == ojson::object());
  CHECK(c.call("guest-file-close", {{"handle", w}})["return"] == ojson::object());
  CHECK(c.call("guest-file-close", {{"handle", w}})["error"]["desc"] ==
        "handle '" + std::to_string(w) + "' has not been found");
  const auto a = handle_of(root + "/out/data", "a");
  c.call("guest-file-write", {{"handle", a}, {"buf-b64", "IQ=="}, {"count", 1}});
  c.call("guest-file-close", {{"handle", a}});
  CHECK(qxa::test::file_contents(root + "/out/data") == "hello world!");

  // Reading in pieces: count bytes at a time, eof at the end.
  const auto r = handle_of(root + "/out/data", "r");
  CHECK(c.call("guest-file-read", {{"handle", r}, {"count", 5}})["return"]["buf-b64"] ==
        "aGVsbG8=");
  CHECK(c.call("guest-file-seek",
               {{"handle", r}, {"offset", -1}, {"whence", 2}})["return"]["position"] == 11);
  CHECK(c.call("guest-file-read", {{"handle", r}})["return"] ==
        ojson{{"count", 1}, {"buf-b64", "IQ=="}, {"eof", true}});
  // A handle opened for reading does not write.
  CHECK(c.call("guest-file-write", {{"handle", r}, {"buf-b64", "IQ=="}})["error"]["desc"] ==
        "the file was not opened for writing");

  // Outside the roots, through a link, not a regular file, or linked elsewhere: refused, and
  // nothing is emptied.
  std::filesystem::create_symlink("/etc", root + "/out/etc");
  ::mkfifo((root + "/out/fifo").c_str(), 0600);
  dir.write("outside", "keep");
  std::filesystem::create_hard_link(dir / "outside", root + "/out/linked");
  for (const auto& [path, mode] :
       std::vector<std::pair<std::string, std::string>>{{"/etc/hostname", "r"},
                                                        {root + "/data-outside-write-root", "w"},
                                                        {root + "/out/etc/passwd", "r"},
                                                        {root + "/out/fifo", "w"},
                                                        {root + "/out/fifo", "r"},
                                                        {root + "/out/linked", "r+"},
                                                        {root + "/out/linked", "a"},
                                                        {root + "/out", "r"},
                                                        {root + "/out/data", "x"}}) {
    INFO(path << " " << mode);
    const auto refused = c.call("guest-file-open", {{"path", path}, {"mode", mode}});
    CHECK(refused["error"]["class"] == "GenericError");
  }
  CHECK(qxa::test::file_contents(dir / "outside") == "keep");
  // "w" replaces the name, as cp does: the file linked elsewhere is left as it was.
  const auto replaced = handle_of(root + "/out/linked", "w");
  c.call("guest-file-write", {{"handle", replaced}, {"buf-b64", "bmV3"}});
  CHECK(c.call("guest-file-close", {{"handle", replaced}})["return"] == ojson::object());
  CHECK(qxa::test::file_contents(root + "/out/linked") == "new");
  CHECK(qxa::test::file_contents(dir / "outside") == "keep");
}

TEST_CASE(
    "guest-file-open writes by cp's rules, so a setuid file is never written in place nor "
    "replaced keeping its bit, and a file a user planted is not handed back to her",
    "[qga][hostile]") {
  REQUIRE(::geteuid() == 0);  // files of root's and of another user's
  temp_dir dir, files;
  const std::string root = files.path();
  REQUIRE(::chmod(root.c_str(), 01777) == 0);  // as /tmp is
  auto agent = start_agent_with_qga(dir, "[policy]\nwrite_roots = [\"" + root + "\"]\n");
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  const auto tool = files.write("tool", "root's setuid tool\n");
  REQUIRE(::chmod(tool.c_str(), 04755) == 0);
  for (const char* mode : {"w", "w+", "r+", "a", "a+"}) {
    INFO(mode);
    const auto r = c.call("guest-file-open", {{"path", tool}, {"mode", mode}});
    CHECK(r["error"]["class"] == "GenericError");
    CHECK_THAT(r["error"]["desc"].get<std::string>(), Catch::Contains("policy.write_setid"));
  }
  struct stat st {};
  REQUIRE(::stat(tool.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 04755);
  CHECK(qxa::test::file_contents(tool) == "root's setuid tool\n");

  // A user plants the name the host's script will have; the host writes it with "w".
  const auto script = files.write("backup.sh", "planted\n");
  REQUIRE(::chown(script.c_str(), 1000, 1000) == 0);
  REQUIRE(::chmod(script.c_str(), 0777) == 0);
  const auto w = c.call("guest-file-open", {{"path", script}, {"mode", "w"}});
  REQUIRE(w["return"].is_number_integer());
  c.call("guest-file-write", {{"handle", w["return"]}, {"buf-b64", "ZWNobyBob3N0Cg=="}});
  REQUIRE(c.call("guest-file-close", {{"handle", w["return"]}})["return"] == ojson::object());
  REQUIRE(::stat(script.c_str(), &st) == 0);
  CHECK(st.st_uid == 0);
  CHECK((st.st_mode & 022) == 0);
  CHECK(qxa::test::file_contents(script) == "echo host\n");
  // In place, her file stays hers: refused without policy.write_owner.
  const auto mine = files.write("hers", "hers\n");
  REQUIRE(::chown(mine.c_str(), 1000, 1000) == 0);
  const auto in_place = c.call("guest-file-open", {{"path", mine}, {"mode", "a"}});
  CHECK_THAT(in_place["error"]["desc"].get<std::string>(), Catch::Contains("policy.write_owner"));
  CHECK(qxa::test::file_contents(mine) == "hers\n");
}

TEST_CASE(
    "a qemu-ga command of many small values is refused before it is parsed, its memory "
    "bounded",
    "[qga][hostile]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir);
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  // Just under the 16 MiB limit, and three bytes a value.
  std::string many = R"({"execute":"guest-ping","arguments":{"x":[)";
  while (many.size() < (16u << 20) - 64) many += "[],";
  many += "[]]}}";
  REQUIRE(c.send_raw(many + R"({"execute":"guest-sync","arguments":{"id":6}})"));
  CHECK(c.line() == R"({"error":{"class":"GenericError","desc":"JSON parse error, the command )"
                    R"(holds more than 65536 values"}})");
  CHECK(c.line() == R"({"return":6})");
#ifndef QXA_SANITIZED
  // The text itself, a little more, not the 650 MiB a parse of it took.
  CHECK(qxa::test::process_peak_rss_bytes(agent->pid()) < (64u << 20));
#endif
  // A real command with many values is still read.
  std::string args = R"({"execute":"guest-sync","arguments":{"id":7,"x":[)";
  for (int i = 0; i < 1000; ++i) args += "1,";
  args += "1]}}";
  REQUIRE(c.send_raw(args));
  // Read and parsed: its arguments are checked (x is not guest-sync's), not refused unread.
  CHECK(c.line() == R"({"error":{"class":"GenericError","desc":"Parameter 'x' is unexpected"}})");
}

namespace {

// guest-exec-status until the process has exited (qemu-ga's own tests give it 5 s; a loaded
// machine more).
ojson exec_to_end(qga_client& c, const ojson& pid) {
  ojson status;
  const auto until = std::chrono::steady_clock::now() + 20s;
  do {
    status = c.call("guest-exec-status", {{"pid", pid}});
  } while (status.contains("return") && !status["return"]["exited"].get<bool>() &&
           std::chrono::steady_clock::now() < until);
  return status;
}

// Base64 text (RFC 4648, padded), decoded; a missing field is empty.
std::string decoded(const ojson& base64) {
  if (!base64.is_string()) return {};
  static const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  std::uint32_t bits = 0;
  int count = 0;
  for (const char ch : base64.get<std::string>()) {
    const auto at = alphabet.find(ch);
    if (at == std::string::npos) continue;  // padding
    bits = (bits << 6) | static_cast<std::uint32_t>(at);
    if ((count += 6) >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xFF);
    }
  }
  return out;
}

// The version a qemu-ga port reports, as a number: 7.2.0 -> 70200.
int version_of(qga_client& c) {
  const auto v = c.call("guest-info")["return"]["version"].get<std::string>();
  int major = 0, minor = 0, micro = 0;
  std::sscanf(v.c_str(), "%d.%d.%d", &major, &minor, &micro);
  return major * 10000 + minor * 100 + micro;
}

}  // namespace

// QEMU's tests/unit/test-qga.c (QEMU 10.x) for the commands of QEMU 8.0 to 10.x, replayed
// against our port and against Debian's qemu-ga where it has the command (7.2 lacks guest-get-load
// and capture-output's modes). Each SECTION is one of its test functions, its checks as there.
TEST_CASE("QEMU's test-qga.c expectations hold on our qemu-ga port and on qemu-ga itself",
          "[qga][compat]") {
  temp_dir dir;
  // ours: ping and get-time blocked as test-qga's blockedrpcs does with -b.
  auto agent = start_agent_with_qga(dir);
  auto peer = start_qemu_ga(dir);
  qga_client ours(dir / "ours.sock"), theirs(dir / "qga.sock");
  REQUIRE(ours.connected());
  REQUIRE(theirs.connected());
  const int their_version = version_of(theirs);
  struct port {
    const char* name;
    qga_client* c;
    bool has_load, has_capture_modes;
  };
  const port ports[] = {{"ours", &ours, true, true},
                        {"qemu-ga", &theirs, their_version >= 100000, their_version >= 80000}};

  SECTION("get-load: load1m, load5m and load15m") {
    for (const auto& p : ports) {
      INFO(p.name);
      if (!p.has_load) {
        CHECK(p.c->call("guest-get-load")["error"]["class"] == "CommandNotFound");
        continue;
      }
      const auto r = p.c->call("guest-get-load");
      INFO(r.dump());
      REQUIRE(r.contains("return"));
      for (const char* key : {"load1m", "load5m", "load15m"}) {
        CHECK(r["return"][key].is_number());
        CHECK(r["return"][key].get<double>() >= 0);
      }
    }
  }

  SECTION("guest-exec: capture-output true gives the output, base64") {
    for (const auto& p : ports) {
      INFO(p.name);
      const auto started = p.c->call(
          "guest-exec",
          {{"path", "echo"}, {"arg", {"-n", "\" test_str \""}}, {"capture-output", true}});
      REQUIRE(started["return"]["pid"].get<std::int64_t>() > 0);
      const auto status = exec_to_end(*p.c, started["return"]["pid"]);
      INFO(status.dump());
      REQUIRE(status["return"]["exited"] == true);
      CHECK(status["return"]["exitcode"] == 0);
      CHECK(decoded(status["return"]["out-data"]) == "\" test_str \"");
    }
  }

  SECTION("guest-exec: capture-output separated and merged") {
    const std::string script =
        "for i in $(seq 4); do if (( $i % 2 )); then echo stdout; else echo stderr 1>&2; fi; "
        "done;";
    for (const auto& p : ports) {
      INFO(p.name);
      if (!p.has_capture_modes) continue;
      auto started =
          p.c->call("guest-exec",
                    {{"path", "bash"}, {"arg", {"-c", script}}, {"capture-output", "separated"}});
      REQUIRE(started["return"]["pid"].get<std::int64_t>() > 0);
      auto status = exec_to_end(*p.c, started["return"]["pid"]);
      INFO(status.dump());
      CHECK(status["return"]["exitcode"] == 0);
      CHECK(decoded(status["return"]["out-data"]) == "stdout\nstdout\n");
      CHECK(decoded(status["return"]["err-data"]) == "stderr\nstderr\n");

      started = p.c->call(
          "guest-exec", {{"path", "bash"}, {"arg", {"-c", script}}, {"capture-output", "merged"}});
      REQUIRE(started["return"]["pid"].get<std::int64_t>() > 0);
      status = exec_to_end(*p.c, started["return"]["pid"]);
      INFO(status.dump());
      CHECK(status["return"]["exitcode"] == 0);
      CHECK(decoded(status["return"]["out-data"]) == "stdout\nstderr\nstdout\nstderr\n");
      CHECK_FALSE(status["return"].contains("err-data"));

      // Beyond test-qga: one stream only, and none.
      started = p.c->call(
          "guest-exec", {{"path", "bash"}, {"arg", {"-c", script}}, {"capture-output", "stderr"}});
      status = exec_to_end(*p.c, started["return"]["pid"]);
      INFO(status.dump());
      CHECK_FALSE(status["return"].contains("out-data"));
      CHECK(decoded(status["return"]["err-data"]) == "stderr\nstderr\n");
      started = p.c->call("guest-exec",
                          {{"path", "bash"}, {"arg", {"-c", script}}, {"capture-output", "none"}});
      status = exec_to_end(*p.c, started["return"]["pid"]);
      CHECK(status["return"] == ojson{{"exited", true}, {"exitcode", 0}});
    }
    CHECK(
        ours.call("guest-exec", {{"path", "true"}, {"capture-output", "both"}})["error"]["class"] ==
        "GenericError");
  }

  SECTION("guest-exec-invalid: no such program, no such pid") {
    for (const auto& p : ports) {
      INFO(p.name);
      CHECK(p.c->call("guest-exec", {{"path", "/bin/invalid-cmd42"}})["error"]["class"] ==
            "GenericError");
      const auto r = p.c->call("guest-exec-status", {{"pid", 0}});
      CHECK(r["error"]["class"] == "GenericError");
      CHECK_FALSE(r["error"]["desc"].get<std::string>().empty());
    }
  }
}

TEST_CASE("test-qga.c's blockedrpcs: guest-ping and guest-get-time blocked, as qemu-ga's -b does",
          "[qga][compat]") {
  temp_dir dir;
  // The native heartbeat is never blocked (qx-agentd would take the VM for dead), so guest-ping
  // is blocked for the qemu-ga port alone, as qemu-ga's -b does; guest-get-time by the policy,
  // for both ports.
  auto agent = start_agent_with_qga(
      dir, "[policy]\nblock = [\"time\"]\n[qemu_ga]\nblock_rpcs = [\"guest-ping\"]\n");
  auto peer = std::make_unique<child_process>(std::vector<std::string>{
      qemu_ga_binary, "-m", "unix-listen", "-p", dir / "qga.sock", "-t", dir.path(), "-f",
      dir / "qga.pid", "-b", "guest-ping,guest-get-time"});
  qga_client ours(dir / "ours.sock"), theirs(dir / "qga.sock");
  REQUIRE(ours.connected());
  REQUIRE(theirs.connected());
  for (auto* c : {&ours, &theirs}) {
    for (const char* command : {"guest-ping", "guest-get-time"}) {
      INFO(command);
      const auto r = c->call(command);
      INFO(r.dump());
      CHECK(r["error"]["class"] == "CommandNotFound");
      CHECK_THAT(r["error"]["desc"].get<std::string>(), Catch::Contains("has been disabled"));
    }
    CHECK(c->call("guest-get-fsinfo").contains("return"));
  }
  const auto info = ours.call("guest-info")["return"]["supported_commands"];
  for (const auto& cmd : info) {
    if (cmd["name"] == "guest-ping" || cmd["name"] == "guest-get-time") {
      CHECK(cmd["enabled"] == false);
    }
  }
  CHECK(agent->wait_for_log("audit: op=time port=qemu-ga command=guest-get-time outcome=refused",
                            5s));
}

TEST_CASE(
    "[qemu_ga] block_rpcs and allow_rpcs name qemu-ga commands, checked when the agent starts",
    "[qga]") {
  temp_dir dir;
  const auto config = dir.write("agent.toml", "[qemu_ga]\nblock_rpcs = [\"guest-pong\"]\n");
  child_process agent(
      {QXA_AGENT_PATH, "--config", config, "--port", "unix-listen:" + (dir / "native.sock")});
  // Its complaint as it reaches the log (the process may end before the log is all read).
  CHECK(agent.wait_for_log("names an unknown qemu-ga command 'guest-pong'", 10s));
  const auto status = agent.wait_exit(10s);
  INFO(agent.log());
  REQUIRE(status);
  CHECK(*status == 2);
  CHECK_THAT(agent.log(), Catch::Contains("qemu_ga.block_rpcs"));

  // An allow list names all that may run on the port.
  auto allowing = start_agent_with_qga(
      dir, "[qemu_ga]\nallow_rpcs = [\"guest-ping\", \"guest-get-time\", \"guest-info\"]\n");
  qga_client c(dir / "ours.sock");
  REQUIRE(c.connected());
  CHECK(c.call("guest-ping").contains("return"));
  CHECK(c.call("guest-get-time").contains("return"));
  CHECK(c.call("guest-get-fsinfo")["error"]["class"] == "CommandNotFound");
}

TEST_CASE(
    "guest-network-get-route, guest-set-memory-blocks, guest-suspend-* and fsinfo's "
    "total-bytes-privileged answer as the QAPI schema of QEMU 9.1 says, and as qemu-ga where it "
    "has them",
    "[qga][compat]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir);
  auto peer = start_qemu_ga(dir);
  qga_client ours(dir / "ours.sock"), theirs(dir / "qga.sock");
  REQUIRE(ours.connected());
  REQUIRE(theirs.connected());

  SECTION("guest-network-get-route: every IPv4 route of /proc/net/route, as qemu-ga words it") {
    const auto r = ours.call("guest-network-get-route");
    INFO(r.dump());
    REQUIRE(r["return"].is_array());
    std::set<std::string> ours_v4;
    for (const auto& route : r["return"]) {
      CHECK(route["iface"].is_string());
      CHECK(route["metric"].is_number_integer());
      if (route["version"] == 4) {
        ours_v4.insert(route["iface"].get<std::string>() + " " +
                       route["destination"].get<std::string>() + " " +
                       route["mask"].get<std::string>() + " " +
                       route["gateway"].get<std::string>());
      }
    }
    // The kernel's own table: hex, little endian.
    const auto dotted = [](const std::string& hex) {
      const auto v = static_cast<std::uint32_t>(std::stoul(hex, nullptr, 16));
      return fmt::format("{}.{}.{}.{}", v & 0xFF, (v >> 8) & 0xFF, (v >> 16) & 0xFF, v >> 24);
    };
    std::istringstream table(qxa::test::file_contents("/proc/net/route"));
    std::string line;
    std::getline(table, line);  // the header
    int kernel_routes = 0;
    while (std::getline(table, line)) {
      std::istringstream f(line);
      std::string iface, dest, gateway, flags, refcnt, use, metric, mask;
      if (!(f >> iface >> dest >> gateway >> flags >> refcnt >> use >> metric >> mask)) continue;
      ++kernel_routes;
      INFO(line);
      CHECK(ours_v4.contains(iface + " " + dotted(dest) + " " + dotted(mask) + " " +
                             dotted(gateway)));
    }
    CHECK(kernel_routes > 0);
  }

  SECTION("guest-set-memory-blocks: a block the guest lacks and one already online, as qemu-ga") {
    const ojson asked = {{"mem-blks",
                          {{{"phys-index", 999999}, {"online", true}},
                           {{"phys-index", 0}, {"online", true}}}}};
    const auto a = ours.call("guest-set-memory-blocks", asked);
    const auto b = theirs.call("guest-set-memory-blocks", asked);
    INFO(a.dump() << " " << b.dump());
    REQUIRE(b.contains("return"));
    CHECK(a == b);
    CHECK(a["return"][0]["response"] == "not-found");
    CHECK(ours.call("guest-set-memory-blocks", {{"mem-blks", {{{"online", true}}}}})["error"]
              ["class"] == "GenericError");
  }

  SECTION("guest-get-fsinfo: total-bytes-privileged is the whole filesystem, root's share too") {
    const auto r = ours.call("guest-get-fsinfo");
    REQUIRE(r["return"].is_array());
    for (const auto& fs : r["return"]) {
      INFO(fs.dump());
      struct statvfs st {};
      REQUIRE(::statvfs(fs["mountpoint"].get<std::string>().c_str(), &st) == 0);
      CHECK(fs["total-bytes-privileged"].get<std::uint64_t>() ==
            static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize);
      CHECK(fs["total-bytes-privileged"].get<std::uint64_t>() >=
            fs["total-bytes"].get<std::uint64_t>());
    }
  }

  SECTION("guest-suspend-*: listed without a success response, and refused by the policy") {
    std::map<std::string, ojson> listed;
    const auto info = ours.call("guest-info");
    for (const auto& cmd : info["return"]["supported_commands"]) {
      listed[cmd["name"].get<std::string>()] = cmd;
    }
    for (const char* name : {"guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"}) {
      INFO(name);
      REQUIRE(listed.contains(name));
      CHECK(listed[name]["success-response"] == false);
      CHECK(listed[name]["enabled"] == true);
    }
    temp_dir blocked_dir;
    auto blocked = start_agent_with_qga(blocked_dir, "[policy]\nblock = [\"suspend\"]\n");
    qga_client c(blocked_dir / "ours.sock");
    REQUIRE(c.connected());
    for (const char* name : {"guest-suspend-disk", "guest-suspend-ram", "guest-suspend-hybrid"}) {
      INFO(name);
      const auto r = c.call(name);
      CHECK(r["error"]["class"] == "CommandNotFound");
      CHECK_THAT(r["error"]["desc"].get<std::string>(), Catch::Contains("has been disabled"));
    }
  }
}

TEST_CASE(
    "guest-get-cpustats and guest-get-diskstats count as qemu-ga does: each counter between two "
    "readings of qemu-ga's taken before and after ours",
    "[qga][compat]") {
  temp_dir dir;
  auto agent = start_agent_with_qga(dir);
  auto peer = start_qemu_ga(dir);
  qga_client ours(dir / "ours.sock"), theirs(dir / "qga.sock");
  REQUIRE(ours.connected());
  REQUIRE(theirs.connected());
  // Counters only grow: qemu-ga's reading before ours is at most ours, its reading after at
  // least (a millisecond either way for rounding).
  const auto between = [](const ojson& before, const ojson& value, const ojson& after) {
    const auto v = value.get<std::uint64_t>();
    return before.get<std::uint64_t>() <= v + 1 && v <= after.get<std::uint64_t>() + 1;
  };

  SECTION("cpustats") {
    const auto before = theirs.call("guest-get-cpustats");
    const auto mine = ours.call("guest-get-cpustats");
    const auto after = theirs.call("guest-get-cpustats");
    INFO(mine.dump() << "\n" << before.dump());
    REQUIRE(mine["return"].is_array());
    REQUIRE(mine["return"].size() == before["return"].size());
    for (std::size_t i = 0; i < mine["return"].size(); ++i) {
      const auto& m = mine["return"][i];
      CHECK(m["type"] == "linux");
      CHECK(m["cpu"] == before["return"][i]["cpu"]);
      for (const char* f : {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}) {
        INFO(f);
        CHECK(between(before["return"][i][f], m[f], after["return"][i][f]));
      }
    }
  }

  SECTION("diskstats, for the whole disks ours lists") {
    const auto before = theirs.call("guest-get-diskstats");
    const auto mine = ours.call("guest-get-diskstats");
    const auto after = theirs.call("guest-get-diskstats");
    INFO(mine.dump());
    REQUIRE(mine["return"].is_array());
    const auto find = [](const ojson& list, const ojson& name) {
      for (const auto& d : list) {
        if (d["name"] == name) return d;
      }
      return ojson();
    };
    for (const auto& d : mine["return"]) {
      INFO(d.dump());
      const auto b = find(before["return"], d["name"]), a = find(after["return"], d["name"]);
      REQUIRE(b.is_object());
      CHECK(d["major"] == b["major"]);
      CHECK(d["minor"] == b["minor"]);
      for (const auto& [field, value] : d["stats"].items()) {
        if (field == "ios-pgr") continue;  // what is in flight now, not a count
        INFO(field);
        CHECK(between(b["stats"][field], value, a["stats"][field]));
      }
    }
  }
}
