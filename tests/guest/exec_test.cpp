// SPDX-License-Identifier: MIT
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <catch2/catch.hpp>
#include <cerrno>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <thread>

#include "guest/ops_test_support.hpp"
#include "qxa/guest/mech/process.hpp"
#include "qxa/guest/platform/accounts.hpp"
#include "support/stuck_fuse.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using qxa::test::handler_bench;
using qxa::test::run_async;
using qxa::test::temp_dir;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
namespace ops = qxa::guest::ops;

namespace {

pb::Envelope exec_request(std::vector<std::string> argv, std::uint32_t timeout_ms = 10'000) {
  pb::Envelope e;
  for (auto& a : argv) e.mutable_exec_request()->add_argv(a);
  e.mutable_exec_request()->set_timeout_ms(timeout_ms);
  return e;
}

pb::Envelope run_exec(pb::Envelope request, qg::agent_options options = {},
                      std::chrono::seconds deadline = 20s) {
  pb::Envelope reply;
  run_async(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        handler_bench bench(io.get_executor(), options);
        reply = co_await ops::exec(bench.context(), request);
      },
      deadline);
  return reply;
}

// True once no process is left in process group `pgid` (within a deadline).
asio::awaitable<bool> group_gone(pid_t pgid) {
  for (int i = 0; i < 300; ++i) {
    if (::kill(-pgid, 0) != 0 && errno == ESRCH) co_return true;
    co_await qxa::test::sleep_for(10ms);
  }
  co_return false;
}

}  // namespace

TEST_CASE("exec reports exit code 7 with its output, and death by a signal",
          "[unit][guest][exec]") {
  auto r = run_exec(exec_request({"sh", "-c", "echo out; echo err >&2; exit 7"}));
  REQUIRE(r.has_exec_result());
  CHECK(r.exec_result().has_exit_code());
  CHECK(r.exec_result().exit_code() == 7);
  CHECK(r.exec_result().stdout() == "out\n");
  CHECK(r.exec_result().stderr() == "err\n");
  CHECK_FALSE(r.exec_result().timed_out());

  r = run_exec(exec_request({"sh", "-c", "kill -KILL $$"}));
  REQUIRE(r.has_exec_result());
  CHECK(r.exec_result().has_signal());
  CHECK(r.exec_result().signal() == SIGKILL);
}

TEST_CASE(
    "exec reads 20 MiB of stdout and 20 MiB of stderr without deadlock and reports truncation",
    "[unit][guest][exec]") {
  qg::agent_options o;
  o.policy.max_output_bytes = 1u << 20;
  auto r = run_exec(exec_request({"sh", "-c",
                                  "head -c 20971520 /dev/zero; head -c 20971520 /dev/zero >&2; "
                                  "exit 3"}),
                    o);
  REQUIRE(r.has_exec_result());
  const auto& x = r.exec_result();
  CHECK(x.exit_code() == 3);
  CHECK(x.stdout().size() == 1u << 20);
  CHECK(x.stderr().size() == 1u << 20);
  CHECK(x.stdout_bytes() == 20u << 20);
  CHECK(x.stderr_bytes() == 20u << 20);
  CHECK(x.stdout_truncated());
  CHECK(x.stderr_truncated());
}

TEST_CASE("exec kills the whole process group at its timeout and leaves no process behind",
          "[unit][guest][exec]") {
  run_async([](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor());
    // A child and a grandchild, both asleep. (GCC 12: no braced lists inside co_await.)
    auto request = exec_request({"sh", "-c", "sleep 100 & sleep 100"}, 500);
    auto r = co_await ops::exec(bench.context(), std::move(request));
    REQUIRE(r.has_exec_result());
    CHECK(r.exec_result().timed_out());
    CHECK(r.exec_result().signal() == SIGKILL);
    const bool gone = co_await group_gone(r.exec_result().pid());
    CHECK(gone);
  });
}

TEST_CASE("a cancelled exec kills and reaps its process", "[unit][guest][exec]") {
  temp_dir dir;
  const auto pid_file = dir / "pid";
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor());
    asio::steady_timer t(io);
    t.expires_after(500ms);
    // What the session does on a Cancel: the handler loses the race and is cancelled.
    auto request = exec_request({"sh", "-c", "echo $$ > " + pid_file + "; exec sleep 100"});
    auto r = co_await (ops::exec(bench.context(), std::move(request)) ||
                       t.async_wait(asio::use_awaitable));
    CHECK(r.index() == 1);
    pid_t pid = 0;
    std::ifstream(pid_file) >> pid;
    REQUIRE(pid > 0);
    const bool gone = co_await group_gone(pid);
    CHECK(gone);
    // Reaped, not a zombie: it is no child of ours any more. (Only this one: a test before may
    // have left a child of its own that its reaper has not collected yet.)
    errno = 0;
    CHECK(::waitpid(pid, nullptr, WNOHANG) == -1);
    CHECK(errno == ECHILD);
  });
}

TEST_CASE("exec passes stdin, environment and working directory", "[unit][guest][exec]") {
  auto req = exec_request({"sh", "-c", "cat; echo \"$FOO\"; pwd; echo \"$USER\""});
  req.mutable_exec_request()->set_stdin("from the host\n");
  (*req.mutable_exec_request()->mutable_env())["FOO"] = "bar baz";
  req.mutable_exec_request()->set_working_directory("/tmp");
  auto r = run_exec(req);
  REQUIRE(r.has_exec_result());
  const auto who = qg::current_account();
  CHECK(r.exec_result().stdout() == "from the host\nbar baz\n/tmp\n" + who->name + "\n");
}

TEST_CASE(
    "a started program holds no descriptor, blocked or ignored signal of the agent's, and "
    "a start that fails says at which step",
    "[unit][guest][exec]") {
  // A descriptor of the agent's without close-on-exec, numbered high, and a signal the agent
  // blocks and one it ignores while it starts the program.
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < 2048 && files.rlim_max >= 2048) {
    files.rlim_cur = 2048;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int held = ::fcntl(null, F_DUPFD, files.rlim_cur > 1500 ? 1500 : 100);
  ::close(null);
  REQUIRE(held >= 100);
  struct sigaction ignore {
  }, old_pipe{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &old_pipe);
  sigset_t usr1, old_mask;
  ::sigemptyset(&usr1);
  ::sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
  // Read by the shell itself: a grep it forks could catch it inside its own fork, where a
  // shell blocks every signal for a moment.
  auto r = run_exec(exec_request(
      {"sh", "-c",
       fmt::format("test -e /proc/$$/fd/{} && echo leaked; while read -r line; do case $line in "
                   "SigBlk*|SigIgn*) echo \"$line\";; esac; done < /proc/$$/status",
                   held)}));
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  ::close(held);
  REQUIRE(r.has_exec_result());
  CHECK(r.exec_result().stdout() == "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");

  auto req = exec_request({"/bin/true"});
  req.mutable_exec_request()->set_working_directory("/no/such/directory");
  r = run_exec(req);
  REQUIRE(r.has_error());
  CHECK_THAT(r.error().message(),
             Catch::Contains("cannot change to the working directory: No such file or directory"));
}

TEST_CASE("exec as another user runs with that user's uid, groups, HOME and USER",
          "[unit][guest][exec]") {
  auto req = exec_request({"sh", "-c", "id -u; id -G; echo \"$HOME $USER\""});
  req.mutable_exec_request()->set_user("nobody");
  auto r = run_exec(req);
  const auto nobody = qg::lookup_account("nobody");
  REQUIRE(nobody);
  if (::geteuid() == 0) {
    REQUIRE(r.has_exec_result());
    CHECK(r.exec_result().stdout() ==
          fmt::format("{}\n{}\n{} nobody\n", nobody->uid, nobody->gid, nobody->home));
  } else {
    // Only root may switch users: the failure says so.
    REQUIRE(r.has_error());
    CHECK_THAT(r.error().message(), Catch::Contains("cannot switch to the user"));
  }
  req.mutable_exec_request()->set_user("no-such-user-here");
  r = run_exec(req);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_NOT_FOUND);
}

TEST_CASE("exec refuses programs outside the allow-list and reports missing ones",
          "[unit][guest][exec]") {
  qg::agent_options o;
  o.policy.exec_allow = {"/usr/bin/true"};
  auto r = run_exec(exec_request({"sh", "-c", "true"}), o);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_PERMISSION_DENIED);
  CHECK(r.error().rule() == "policy.exec_allow");
  r = run_exec(exec_request({"/usr/bin/true"}), o);
  REQUIRE(r.has_exec_result());
  CHECK(r.exec_result().exit_code() == 0);

  r = run_exec(exec_request({"no-such-program-anywhere"}));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_NOT_FOUND);
}

TEST_CASE("under exec_allow the host's environment cannot turn an allowed program into another",
          "[unit][guest][exec]") {
  qg::agent_options o;
  o.policy.exec_allow = {"/usr/bin/env"};
  o.policy.exec_env_allow = {"BACKUP_TARGET"};
  for (const char* name : {"LD_PRELOAD", "LD_LIBRARY_PATH", "BASH_FUNC_env%%", "PERL5OPT",
                           "PYTHONSTARTUP", "PATH", "HOME", "UNLISTED"}) {
    INFO(name);
    auto req = exec_request({"/usr/bin/env"});
    (*req.mutable_exec_request()->mutable_env())[name] = "/tmp/evil.so";
    auto r = run_exec(req, o);
    REQUIRE(r.has_error());
    CHECK(r.error().code() == pb::ERROR_CODE_PERMISSION_DENIED);
    CHECK_THAT(r.error().message(), Catch::Contains(std::string("'") + name + "'"));
  }
  auto req = exec_request({"/usr/bin/env"});
  (*req.mutable_exec_request()->mutable_env())["BACKUP_TARGET"] = "/srv/backup";
  auto r = run_exec(req, o);
  REQUIRE(r.has_exec_result());
  // The fixed base and the one allowed variable; PATH is the agent's own.
  const auto& env = r.exec_result().stdout();
  CHECK_THAT(env, Catch::Contains("BACKUP_TARGET=/srv/backup\n"));
  CHECK_THAT(env, Catch::Contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"));
  CHECK(env.find("LD_") == std::string::npos);
  // Without exec_allow any program may run anyway, and so may any environment.
  auto free = exec_request({"sh", "-c", "echo \"$LD_BIND_NOW\""});
  (*free.mutable_exec_request()->mutable_env())["LD_BIND_NOW"] = "1";
  r = run_exec(free);
  REQUIRE(r.has_exec_result());
  CHECK(r.exec_result().stdout() == "1\n");
}

TEST_CASE("a command does not inherit the agent's OOM score adjustment, nor take a NUL",
          "[unit][guest][exec]") {
  // The agent's unit protects it from the OOM killer; what it runs is ordinary.
  std::string before;
  std::ifstream("/proc/self/oom_score_adj") >> before;
  std::ofstream("/proc/self/oom_score_adj") << "321";
  auto r = run_exec(exec_request({"cat", "/proc/self/oom_score_adj"}));
  std::ofstream("/proc/self/oom_score_adj") << before;
  REQUIRE(r.has_exec_result());
  CHECK(r.exec_result().stdout() == "0\n");
  auto nul = exec_request({"echo", std::string("cut\0here", 8)});
  r = run_exec(nul);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
}

TEST_CASE("find_program searches PATH and checks that the file is executable",
          "[unit][guest][exec]") {
  CHECK(qg::find_program("sh", "/nonexistent:/bin:/usr/bin").ends_with("/sh"));
  CHECK(qg::find_program("sh", "/nonexistent").empty());
  CHECK(qg::find_program("/etc/passwd", "/bin").empty());  // not executable
  CHECK(qg::find_program("", "/bin").empty());
}

namespace {

// Tears a FUSE mount down after `after` unless told to stand down first: an agent that waits on
// the mount is freed, so that a test of that fails instead of hanging.
class fuse_watchdog {
 public:
  fuse_watchdog(qxa::test::stuck_fuse& fuse, std::chrono::seconds after)
      : thread_([this, &fuse, after] {
          std::unique_lock lock(m_);
          if (!cv_.wait_for(lock, after, [this] { return done_; })) fuse.release();
        }) {}
  ~fuse_watchdog() {
    {
      const std::lock_guard lock(m_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

TEST_CASE(
    "exec --user and --cwd on that user's FUSE mount that never answers times out at its own "
    "deadline, detached or not, and the agent's loop never waits for it",
    "[unit][guest][exec][hostile]") {
  REQUIRE(::geteuid() == 0);  // a FUSE mount, and a user to switch to
  const auto nobody = qg::lookup_account("nobody");
  REQUIRE(nobody);
  temp_dir t;
  REQUIRE(::chmod(t.path().c_str(), 0755) == 0);
  const std::string mnt = t / "mnt";
  REQUIRE(::mkdir(mnt.c_str(), 0755) == 0);
  REQUIRE(::chown(mnt.c_str(), nobody->uid, nobody->gid) == 0);
  // Her mount, without allow_other: the child, as her, may enter it; root may not.
  for (const bool answer_init : {false, true}) {
    for (const bool detach : {false, true}) {
      DYNAMIC_SECTION((answer_init ? "a daemon that reads and never answers" : "nobody reads")
                      << (detach ? ", detached" : "")) {
        qxa::test::stuck_fuse fuse(
            mnt, {.owner_uid = nobody->uid, .owner_gid = nobody->gid, .answer_init = answer_init});
        const fuse_watchdog watchdog(fuse, 10s);
        auto req = exec_request({"/bin/true"}, 1000);
        req.mutable_exec_request()->set_user("nobody");
        req.mutable_exec_request()->set_working_directory(mnt);
        req.mutable_exec_request()->set_detach(detach);
        pb::Envelope reply;
        int ticks = 0;
        const auto started = std::chrono::steady_clock::now();
        run_async(
            [&](asio::io_context& io) -> asio::awaitable<void> {
              handler_bench bench(io.get_executor());
              auto ticker = [&]() -> asio::awaitable<void> {
                for (;;) {
                  co_await qxa::test::sleep_for(20ms);
                  ++ticks;
                }
              };
              auto r = co_await (ops::exec(bench.context(), req) || ticker());
              reply = std::get<0>(std::move(r));
            },
            20s);
        const auto took = std::chrono::steady_clock::now() - started;
        INFO(reply.DebugString());
        REQUIRE(reply.has_error());
        CHECK(reply.error().code() == pb::ERROR_CODE_TIMEOUT);
        CHECK_THAT(reply.error().message(), Catch::Contains("did not start within 1000 ms"));
        CHECK(took < 8s);  // its own deadline, not the watchdog's
        // The loop went on meanwhile: a 20 ms ticker ran through most of the second.
        CHECK(ticks >= 10);
      }
    }
  }
}
