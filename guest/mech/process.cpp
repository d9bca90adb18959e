// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <memory>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"

namespace qxa::guest {

using common::errc;

namespace {

int pidfd_open(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  errno = ENOSYS;
  return -1;
#endif
}

struct pipe_pair {
  int read = -1, write = -1;
  bool open() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return false;
    read = fds[0];
    write = fds[1];
    return true;
  }
  void close() {
    if (read >= 0) ::close(read);
    if (write >= 0) ::close(write);
    read = write = -1;
  }
};

// What the child needs, prepared by the parent before the clone: the child is a copy of the
// agent, which may have other threads (a lock held by one of them stays held in the copy), so it
// allocates nothing, takes no lock and makes only direct system calls.
struct child_plan {
  const spawn_options* o;
  char* const* candidates;  // the paths to try, in order (PATH looked up by the child)
  char* const* argv;
  char* const* envp;
  const gid_t* groups;
  std::size_t ngroups;
  int stdin_fd, stdout_fd, stderr_fd;
  int report_fd;  // close-on-exec: end of file at the execve, or {stage, errno} on failure
};

// The handlers the agent installs (asio's signal_set, SIGPIPE ignored): the child has a copy of
// the table and puts each back to its default before unblocking anything.
constexpr std::size_t kernel_sigset_bytes = _NSIG / 8;

constexpr int reset_signals[] = {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2};

enum stage : int {
  stage_session = 1,
  stage_stdio = 2,
  stage_user = 3,
  stage_directory = 4,
  stage_exec = 5,
  stage_not_found = 6,
};

// Runs in the child until execve, on its own small stack: only direct system calls. setgroups
// and setres[ug]id go through syscall(): glibc's wrappers would try to reach threads that exist
// only in the agent. (Not instrumented by AddressSanitizer: it runs on a stack of its own.)
[[noreturn]] __attribute__((no_sanitize_address)) void child_failed(const child_plan& c, int stage,
                                                                    int err) {
  const int report[2] = {stage, err};
  (void)!::write(c.report_fd, report, sizeof report);
  ::_exit(127);
}

__attribute__((no_sanitize_address)) int exec_child(void* arg) {
  const auto& c = *static_cast<const child_plan*>(arg);
  const auto& o = *c.o;
  for (int s : reset_signals) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigaction(s, &dfl, nullptr);
  }
  sigset_t none;
  ::sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::setsid() < 0) child_failed(c, stage_session, errno);  // a session and group of its own
  if (::dup2(c.stdin_fd, 0) < 0 || ::dup2(c.stdout_fd, 1) < 0 ||
      ::dup2(o.merge_stderr ? c.stdout_fd : c.stderr_fd, 2) < 0) {
    child_failed(c, stage_stdio, errno);
  }
  // Everything else stays with the agent but the report pipe (close-on-exec itself): one call
  // each side of it where the kernel has close_range (5.9), else each descriptor a default
  // limit allows (the agent opens all of its own close-on-exec).
  const unsigned report = static_cast<unsigned>(c.report_fd);
#ifdef SYS_close_range
  if ((report <= 3 || ::syscall(SYS_close_range, 3u, report - 1, 0u) == 0) &&
      ::syscall(SYS_close_range, std::max(report + 1, 3u), ~0u, 0u) == 0) {
  } else
#endif
  {
    for (int fd = 3; fd < 1024; ++fd) {
      if (fd != c.report_fd) ::close(fd);
    }
  }
  // The agent runs with an OOM score adjustment that protects it; what it starts does not.
  if (const int oom = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); oom >= 0) {
    (void)!::write(oom, "0", 1);
    ::close(oom);
  }
  if (o.user && (o.user->uid != ::geteuid() || o.user->gid != ::getegid())) {
    // Groups first (it needs root), then the group and user ids, all three of each: nothing
    // of root is left to get back.
    if (::syscall(SYS_setgroups, c.ngroups, c.groups) != 0) child_failed(c, stage_user, errno);
    if (::syscall(SYS_setresgid, o.user->gid, o.user->gid, o.user->gid) != 0) {
      child_failed(c, stage_user, errno);
    }
    if (::syscall(SYS_setresuid, o.user->uid, o.user->uid, o.user->uid) != 0) {
      child_failed(c, stage_user, errno);
    }
  }
  // After the switch: the directory is entered, and the program looked up, as the user, with
  // the user's permissions; whatever blocks here blocks only this child.
  if (::chdir(o.working_directory.c_str()) != 0 &&
      (!o.working_directory_optional || ::chdir("/") != 0)) {
    child_failed(c, stage_directory, errno);
  }
  // As execvp does: the first candidate that runs; a permission error is worth more than
  // "not there" when none does.
  int err = ENOENT;
  for (char* const* path = c.candidates; *path != nullptr; ++path) {
    ::execve(*path, c.argv, c.envp);
    if (errno == EACCES) {
      err = EACCES;
    } else if (errno != ENOENT && errno != ENOTDIR) {
      child_failed(c, stage_exec, errno);
    }
  }
  child_failed(c, err == ENOENT ? stage_not_found : stage_exec, err);
}

// Starts the child as a copy of the agent (clone without CLONE_VM or CLONE_VFORK: the agent
// never waits for it), asking the kernel for a pidfd with it. Returns the pid, or -1 with
// errno; `pidfd` is -1 where the kernel has no pidfds (before 5.2; the caller then polls).
pid_t clone_child(child_plan& plan, int& pidfd) {
  // The child's stack: exec_child's frame and the few calls it makes (the child's copy of it).
  constexpr std::size_t stack_size = 64u << 10;
  auto stack = std::make_unique<std::max_align_t[]>(stack_size / sizeof(std::max_align_t));
  void* top = reinterpret_cast<char*>(stack.get()) + stack_size;
  // No signal handler of the agent may run in the child before it has reset them: everything
  // is blocked across the clone, and the child unblocks after resetting handlers. (The system
  // call itself: pthread_sigmask leaves the C library's own signals unblocked.)
  sigset_t all, old;
  ::sigfillset(&all);
  ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &all, &old, kernel_sigset_bytes);
  pidfd = -1;
  pid_t pid = ::clone(exec_child, top, SIGCHLD | CLONE_PIDFD, &plan, &pidfd);
  if (pid < 0 && errno == EINVAL) {  // a kernel that refuses the flag
    pidfd = -1;
    pid = ::clone(exec_child, top, SIGCHLD, &plan);
  }
  // (Kernels before 5.2 may also ignore it: then pidfd_open, where there is one.)
  if (pid > 0 && pidfd < 0) pidfd = pidfd_open(pid);
  const int e = errno;
  ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &old, nullptr, kernel_sigset_bytes);
  errno = e;
  return pid;
}

const char* stage_name(int stage) {
  switch (stage) {
    case stage_session:
      return "cannot start a new session";
    case stage_stdio:
      return "cannot set up stdin, stdout and stderr";
    case stage_user:
      return "cannot switch to the user";
    case stage_directory:
      return "cannot change to the working directory";
    default:
      return "cannot execute";
  }
}

}  // namespace

common::result<std::unique_ptr<child_process>> child_process::spawn(const asio::any_io_executor& ex,
                                                                    const spawn_options& o) {
  using R = common::result<std::unique_ptr<child_process>>;
  if (o.argv.empty() || o.argv[0].empty()) return R{errc::invalid_argument, "no program given"};

  // Everything the child needs is prepared before the clone, the candidates included: the
  // child looks them up, the agent does not.
  std::vector<std::string> paths;
  const std::string& program = o.argv[0];
  if (!o.executable.empty()) {
    paths.push_back(o.executable);
  } else if (program.find('/') != std::string::npos) {
    paths.push_back(program);
  } else {
    std::string_view rest = o.path;
    while (!rest.empty()) {
      const auto colon = rest.find(':');
      const auto dir = rest.substr(0, colon);
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
      if (!dir.empty()) paths.push_back(fmt::format("{}/{}", dir, program));
    }
  }
  std::vector<char*> candidates, argv, envp;
  for (auto& p : paths) candidates.push_back(p.data());
  candidates.push_back(nullptr);
  for (const auto& a : o.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : o.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  std::vector<gid_t> groups;
  if (o.user) groups = o.user->groups;

  pipe_pair in, out, err, report;
  if (!in.open() || !out.open() || !err.open() || !report.open()) {
    const int e = errno;
    in.close();
    out.close();
    err.close();
    report.close();
    return R{std::error_code(e, std::system_category()),
             fmt::format("cannot create pipes: {}", std::strerror(e))};
  }
  // Above the standard descriptors (an agent started with one of them closed gets it for a
  // pipe): the child's dup2 onto 0, 1 and 2 must not take the report's place.
  if (report.write < 3) {
    const int moved = ::fcntl(report.write, F_DUPFD_CLOEXEC, 3);
    if (moved >= 0) {
      ::close(report.write);
      report.write = moved;
    }
  }
  child_plan plan{
      &o,      candidates.data(), argv.data(), envp.data(), groups.data(), groups.size(),
      in.read, out.write,         err.write,   report.write};
  int pidfd = -1;
  const pid_t pid = clone_child(plan, pidfd);
  const int clone_errno = errno;
  ::close(in.read);
  ::close(out.write);
  ::close(err.write);
  ::close(report.write);  // the child's copy alone is left: end of file when it execs or ends
  if (pid < 0) {
    ::close(in.write);
    ::close(out.read);
    ::close(err.read);
    ::close(report.read);
    return R{std::error_code(clone_errno, std::system_category()),
             fmt::format("cannot start a process: {}", std::strerror(clone_errno))};
  }
  return R{std::unique_ptr<child_process>(
      new child_process(ex, pid, pidfd, in.write, out.read, err.read, report.read))};
}

asio::awaitable<std::optional<common::error_info>> child_process::started(
    const spawn_options& o, std::chrono::nanoseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  using asio::experimental::as_tuple;
  std::array<int, 2> report{};
  asio::steady_timer deadline(ex_);
  deadline.expires_after(timeout);
  auto r =
      co_await (asio::async_read(report_, asio::buffer(report), as_tuple(asio::use_awaitable)) ||
                deadline.async_wait(as_tuple(asio::use_awaitable)));
  std::error_code ignored;
  report_.close(ignored);
  if (r.index() == 1) {
    kill_group(SIGKILL);
    co_return common::error_info{
        std::make_error_code(std::errc::timed_out),
        fmt::format("{}: did not start within {} ms (its working directory or program is on a "
                    "filesystem that does not answer?); killed",
                    o.argv[0],
                    std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count())};
  }
  const auto [ec, n] = std::get<0>(r);
  if (n < sizeof report) co_return std::nullopt;  // end of file: it runs the program now
  // It failed and exits with 127 at once: reaped here if it has, else when this object goes.
  (void)co_await wait_for(std::chrono::milliseconds(100));
  const auto [stage, err] = report;
  if (stage == stage_not_found) {
    co_return common::error_info{errc::invalid_argument, o.argv[0] + ": no such program"};
  }
  co_return common::error_info{
      std::error_code(err, std::system_category()),
      fmt::format("{}: {}: {}", o.argv[0], stage_name(stage), std::strerror(err))};
}

asio::awaitable<common::result<std::unique_ptr<child_process>>> child_process::start(
    const asio::any_io_executor& ex, const spawn_options& options,
    std::chrono::nanoseconds start_timeout) {
  auto child = spawn(ex, options);
  if (!child) co_return child;
  if (auto failed = co_await child.value()->started(options, start_timeout)) co_return *failed;
  co_return child;
}

child_process::child_process(const asio::any_io_executor& ex, pid_t pid, int pidfd, int in, int out,
                             int err, int report)
    : ex_(ex),
      pid_(pid),
      pidfd_(pidfd),
      in_(ex, in),
      out_(ex, out),
      err_(ex, err),
      report_(ex, report) {}

child_process::~child_process() {
  std::error_code ignored;
  in_.close(ignored);
  out_.close(ignored);
  err_.close(ignored);
  report_.close(ignored);
  if (!status_) {
    kill_group(SIGKILL);
    if (!try_reap()) {
      // Dying, not dead yet, or held in the kernel by a filesystem that does not answer: reaped
      // in the background whenever it ends, so that it does not stay a zombie.
      asio::co_spawn(
          ex_,
          [](pid_t pid, int pidfd, asio::any_io_executor ex) -> asio::awaitable<void> {
            const auto reaped = [pid] {
              int status = 0;
              const pid_t r = ::waitpid(pid, &status, WNOHANG);
              return r == pid || (r < 0 && errno == ECHILD);
            };
            if (const int dup = pidfd >= 0 ? ::dup(pidfd) : -1; dup >= 0) {
              asio::posix::stream_descriptor d(ex, dup);
              while (!reaped()) {
                auto [ec] =
                    co_await d.async_wait(asio::posix::stream_descriptor::wait_read,
                                          asio::experimental::as_tuple(asio::use_awaitable));
                if (ec) break;
              }
            } else {
              asio::steady_timer t(ex);
              for (auto wait = std::chrono::milliseconds(10); !reaped();
                   wait = std::min(wait * 2, std::chrono::milliseconds(1000))) {
                t.expires_after(wait);
                co_await t.async_wait(asio::use_awaitable);
              }
            }
            if (pidfd >= 0) ::close(pidfd);
          }(pid_, pidfd_, ex_),
          common::contained("reaping a killed command"));
      return;
    }
  }
  if (pidfd_ >= 0) ::close(pidfd_);
}

void child_process::kill_group(int signal) const noexcept {
  // The child leads its own process group (setsid): -pid reaches it and its descendants.
  if (!status_) ::kill(-pid_, signal);
}

std::optional<exit_status> child_process::try_reap() {
  if (status_) return status_;
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return std::nullopt;
  exit_status s;
  if (r < 0) {
    s.code = -1;  // reaped elsewhere; should not happen
  } else if (WIFEXITED(status)) {
    s.code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    s.signal = WTERMSIG(status);
  }
  status_ = s;
  return status_;
}

asio::awaitable<exit_status> child_process::wait() {
  // A pidfd becomes readable when the process exits. Watched through a duplicate (asio owns
  // what it watches); with no descriptor to spare for it, the exit is polled as below.
  if (const int dup = pidfd_ >= 0 ? ::dup(pidfd_) : -1; dup >= 0) {
    asio::posix::stream_descriptor d(ex_, dup);
    while (!try_reap()) {
      co_await d.async_wait(asio::posix::stream_descriptor::wait_read, asio::use_awaitable);
    }
    co_return *status_;
  }
  asio::steady_timer t(ex_);  // kernels before 5.3, or no descriptor to spare: poll
  while (!try_reap()) {
    t.expires_after(std::chrono::milliseconds(20));
    co_await t.async_wait(asio::use_awaitable);
  }
  co_return *status_;
}

asio::awaitable<std::optional<exit_status>> child_process::wait_for(
    std::chrono::nanoseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  if (auto s = try_reap()) co_return s;
  asio::steady_timer t(ex_);
  t.expires_after(timeout);
  auto r = co_await (wait() || t.async_wait(asio::use_awaitable));
  if (r.index() == 0) co_return std::get<0>(r);
  co_return std::nullopt;
}

namespace {

asio::awaitable<void> drain(asio::posix::stream_descriptor& pipe, captured_output& into,
                            std::size_t cap) {
  std::vector<char> buf(16u << 10);
  for (;;) {
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(buf),
                                                 asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return;  // end of file, or closed
    into.total += n;
    const std::size_t room = cap > into.data.size() ? cap - into.data.size() : 0;
    into.data.append(buf.data(), std::min(room, n));
  }
}

}  // namespace

asio::awaitable<void> feed_stdin(asio::posix::stream_descriptor& pipe, std::string input) {
  if (!input.empty()) {
    // A child that does not read its stdin is not an error.
    (void)co_await asio::async_write(pipe, asio::buffer(input),
                                     asio::experimental::as_tuple(asio::use_awaitable));
  }
  std::error_code ignored;
  pipe.close(ignored);  // end of input
}

asio::awaitable<finished_child> run_to_end(child_process& child, std::string input, std::size_t cap,
                                           std::chrono::nanoseconds timeout) {
  using namespace asio::experimental::awaitable_operators;
  finished_child done;
  asio::steady_timer deadline(co_await asio::this_coro::executor);
  deadline.expires_after(timeout);
  auto r = co_await ((drain(child.stdout_pipe(), done.out, cap) &&
                      drain(child.stderr_pipe(), done.err, cap) &&
                      feed_stdin(child.stdin_pipe(), std::move(input))) ||
                     deadline.async_wait(asio::use_awaitable));
  if (r.index() == 1) {
    done.timed_out = true;
    child.kill_group(SIGKILL);
    if (auto s = co_await child.wait_for(kill_grace)) {
      done.status = *s;
    } else {
      done.unkillable = true;
      done.status.signal = SIGKILL;
      common::log_warning(
          "pid {} did not end when killed (held in the kernel by a filesystem that does not "
          "answer?): it is reaped whenever it ends",
          child.pid());
    }
    co_return done;
  }
  done.status = co_await child.wait();
  co_return done;
}

}  // namespace qxa::guest
