// SPDX-License-Identifier: MIT
// qx-agent's bash completion as bash runs it: the shipped file sourced, the completion function
// called on a command line as bash would call it, with the built qx-agent first on PATH.
#include <fmt/format.h>

#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <set>
#include <sstream>

#include "support/daemon.hpp"
#include "support/process.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::temp_dir;

namespace {

const std::string completion = std::string(QXA_SOURCE_DIR) + "/packaging/bash-completion/qx-agent";

struct offered {
  std::set<std::string> words;
  std::string err;
  int status = -1;
  std::chrono::steady_clock::duration took{};
};

// What the completion offers for the command line `words`, the last being the word completed
// (empty: after a space), with an empty directory as the current one.
offered complete(std::vector<std::string> words) {
  temp_dir here;
  const std::string script = R"(cd "$1" && PATH="$2:$PATH" && . "$3" && shift 3 &&
COMP_WORDS=("$@") && COMP_CWORD=$(($# - 1)) && COMPREPLY=() && { _qx_agent; true; } &&
if [ ${#COMPREPLY[@]} -gt 0 ]; then printf '%s\n' "${COMPREPLY[@]}"; fi)";
  std::vector<std::string> args{
      "/bin/bash", "-c",        script,
      "bash",      here.path(), std::filesystem::path(QXA_CLI_PATH).parent_path().string(),
      completion};
  args.insert(args.end(), words.begin(), words.end());
  auto r = qxa::test::run_command(args, 30s);
  offered o{.words = {}, .err = r.err, .status = r.status, .took = r.took};
  std::istringstream lines(r.out);
  for (std::string w; std::getline(lines, w);) o.words.insert(w);
  return o;
}

std::set<std::string> words_of(std::vector<std::string> line) { return complete(line).words; }

}  // namespace

TEST_CASE("bash completes qx-agent's commands, their options and the values some take",
          "[integration][completion]") {
  CHECK(words_of({"qx-agent", "st"}) == std::set<std::string>{"stat", "status"});
  const auto verbs = words_of({"qx-agent", ""});
  CHECK(verbs.size() >= 30);
  for (const char* v : {"status", "ping", "exec", "cp", "ssh-key", "freeze", "upgrade-status"}) {
    CHECK(verbs.count(v) == 1);
  }
  CHECK(words_of({"qx-agent", "--c"}) == std::set<std::string>{"--connect", "--control-socket"});
  // Options go before the command too.
  CHECK(words_of({"qx-agent", "--json", "pi"}) == std::set<std::string>{"ping"});
  const auto exec = words_of({"qx-agent", "exec", "--"});
  for (const char* o :
       {"--shell", "--user", "--cwd", "--env", "--stdin", "--detach", "--timeout"}) {
    CHECK(exec.count(o) == 1);
  }
  CHECK(exec.count("--json") == 0);  // qx-agent's own, not exec's
  // The value of an option is not a VM or a command.
  CHECK(words_of({"qx-agent", "exec", "--user", ""}).empty());
  CHECK(words_of({"qx-agent", "ssh-key", "web1", ""}) ==
        std::set<std::string>{"add", "remove", "list"});
  CHECK(words_of({"qx-agent", "ssh-key", "--timeout", "5s", "web1", "r"}) ==
        std::set<std::string>{"remove"});
}

TEST_CASE("bash completes the VMs qx-agentd serves, and says nothing when it cannot ask",
          "[integration][completion]") {
  temp_dir vms, run;
  const std::string ctl = run / "ctl.sock";
  auto daemon = qxa::test::start_quick_daemon(vms, run);
  auto web = qxa::test::start_vm_agent(vms, "web1");
  auto db = qxa::test::start_vm_agent(vms, "db2");
  REQUIRE(qxa::test::wait_vm_state(ctl, "web1", "ready", 10s));
  REQUIRE(qxa::test::wait_vm_state(ctl, "db2", "ready", 10s));

  const auto all = complete({"qx-agent", "--control-socket", ctl, "ping", ""});
  CHECK(all.words == std::set<std::string>{"db2", "web1"});
  CHECK(all.err.empty());
  CHECK(words_of({"qx-agent", "--control-socket=" + ctl, "info", "w"}) ==
        std::set<std::string>{"web1"});
  // After the command's options and their values.
  CHECK(words_of({"qx-agent", "--control-socket", ctl, "exec", "--user", "root", "--timeout", "5s",
                  "d"}) == std::set<std::string>{"db2"});
  // status takes a VM too; the second argument of ping is no VM.
  CHECK(words_of({"qx-agent", "--control-socket", ctl, "status", ""}).size() == 2);
  CHECK(words_of({"qx-agent", "--control-socket", ctl, "ping", "web1", ""}).empty());
  // cp: VM:PATH, or a local file (there are none in the empty directory it runs in).
  CHECK(words_of({"qx-agent", "--control-socket", ctl, "cp", "w"}) ==
        std::set<std::string>{"web1:"});
  CHECK(words_of({"qx-agent", "--control-socket", ctl, "cp", "web1", ":", "/etc/hosts", "d"}) ==
        std::set<std::string>{"db2:"});

  // No daemon: nothing offered, nothing printed.
  const auto none = complete({"qx-agent", "--control-socket", run / "nothing.sock", "ping", ""});
  CHECK(none.status == 0);
  CHECK(none.words.empty());
  CHECK(none.err.empty());

  // A daemon that takes the connection and never answers: the completion gives up by itself
  // (after a second), silently, rather than hang the shell.
  asio::io_context io;
  asio::local::stream_protocol::acceptor stuck(
      io, asio::local::stream_protocol::endpoint(run / "stuck.sock"));
  const auto hung = complete({"qx-agent", "--control-socket", run / "stuck.sock", "ping", ""});
  CHECK(hung.status == 0);
  CHECK(hung.words.empty());
  CHECK(hung.err.empty());
  CHECK(hung.took < 10s);
}
