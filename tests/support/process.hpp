// SPDX-License-Identifier: MIT
// Runs a real binary for process-level tests: its standard error is captured line by line, and
// every wait has a deadline and blocks on an event (a condition variable, a pidfd), never a sleep.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

extern char** environ;

namespace qxa::test {

// A child that died must not take the test runner with it when we write to its stdin.
inline const bool sigpipe_ignored = (std::signal(SIGPIPE, SIG_IGN), true);

class child_process {
 public:
  using clock = std::chrono::steady_clock;

  /// Starts argv[0] with the given arguments; standard output is discarded unless
  /// `capture_stdout`, standard error is captured.
  explicit child_process(std::vector<std::string> argv, std::vector<std::string> env_extra = {},
                         bool capture_stdout = false, bool stdin_pipe = false) {
    int err_pipe[2];
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    int out_pipe[2] = {-1, -1};
    if (capture_stdout && ::pipe2(out_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
    if (capture_stdout) {
      posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
    } else {
      posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    }
    int in_pipe[2] = {-1, -1};
    if (stdin_pipe) {
      if (::pipe2(in_pipe, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
      posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
    } else {
      posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    }
    // Nothing else of the test process leaks into the child: a socket the test holds (a relay's,
    // say) must close when the test closes it, not when some child it started exits.
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e; ++e) {
      // The journal prefix would change the log format the tests read.
      if (std::strncmp(*e, "JOURNAL_STREAM=", 15) != 0) env_strings.emplace_back(*e);
    }
    for (auto& e : env_extra) env_strings.push_back(e);
    std::vector<char*> envp;
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(err_pipe[1]);
    if (capture_stdout) ::close(out_pipe[1]);
    if (stdin_pipe) {
      ::close(in_pipe[0]);
      stdin_fd_ = in_pipe[1];
    }
    if (rc != 0) {
      ::close(err_pipe[0]);
      throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
    }
    pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    err_reader_ = std::thread([this, fd = err_pipe[0]] { pump(fd, err_); });
    if (capture_stdout) out_reader_ = std::thread([this, fd = out_pipe[0]] { pump(fd, out_); });
  }

  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  ~child_process() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      wait_exit(std::chrono::seconds(10));
    }
    if (err_reader_.joinable()) err_reader_.join();
    if (out_reader_.joinable()) out_reader_.join();
    if (pidfd_ >= 0) ::close(pidfd_);
    if (stdin_fd_ >= 0) ::close(stdin_fd_);
  }

  /// Writes to the child's standard input (when started with stdin_pipe).
  void write_stdin(const std::string& text) {
    std::size_t at = 0;
    while (at < text.size() && stdin_fd_ >= 0) {
      const ssize_t n = ::write(stdin_fd_, text.data() + at, text.size() - at);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      at += static_cast<std::size_t>(n);
    }
  }

  /// Waits until standard output holds `needle` at least `times` times.
  bool wait_for_output_count(const std::string& needle, clock::duration timeout,
                             std::size_t times) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, timeout, [&] { return count_locked(out_, needle) >= times; });
  }

  std::size_t count_in_output(const std::string& needle) {
    std::lock_guard lock(m_);
    return count_locked(out_, needle);
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  void signal(int signo) const { ::kill(pid_, signo); }

  /// Waits for the process to exit; its exit status, 128+signal when killed, or nothing on
  /// timeout. Once it has exited, what it wrote to standard error is all in log() (a process
  /// of its own that kept the descriptor is waited for at most 2 s).
  std::optional<int> wait_exit(clock::duration timeout) {
    if (status_) return status_;
    const auto deadline = clock::now() + timeout;
    for (;;) {
      int ws = 0;
      const pid_t r = ::waitpid(pid_, &ws, WNOHANG);
      if (r == pid_) {
        status_ = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
        std::unique_lock lock(m_);
        cv_.wait_for(lock, std::chrono::seconds(2), [&] { return err_eof_; });
        return status_;
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() <= 0) return std::nullopt;
      pollfd p{pidfd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(left.count()));  // readable when the process exits
    }
  }

  [[nodiscard]] bool running() { return !wait_exit(std::chrono::milliseconds(0)).has_value(); }

  /// Waits until standard error holds `needle` at least `times` times.
  bool wait_for_log(std::string_view needle, clock::duration timeout, std::size_t times = 1) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, timeout, [&] {
      return count_locked(err_, needle) >= times || err_eof_;
    }) && count_locked(err_, needle) >= times;
  }

  /// Waits until standard output holds `needle`.
  bool wait_for_output(const std::string& needle, clock::duration timeout) {
    std::unique_lock lock(m_);
    return cv_.wait_for(lock, timeout, [&] { return out_.find(needle) != std::string::npos; });
  }

  std::size_t count_in_log(std::string_view needle) {
    std::lock_guard lock(m_);
    return count_locked(err_, needle);
  }

  std::string log() {
    std::lock_guard lock(m_);
    return err_;
  }

  std::string output() {
    std::lock_guard lock(m_);
    return out_;
  }

  /// Waits for both output pipes to close (the process and its children are gone).
  void drain() {
    if (err_reader_.joinable()) err_reader_.join();
    if (out_reader_.joinable()) out_reader_.join();
  }

 private:
  static std::size_t count_locked(const std::string& text, std::string_view needle) {
    std::size_t n = 0;
    for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
  }

  void pump(int fd, std::string& into) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      std::lock_guard lock(m_);
      into.append(buf, static_cast<std::size_t>(n));
      cv_.notify_all();
    }
    ::close(fd);
    std::lock_guard lock(m_);
    if (&into == &err_) err_eof_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  int pidfd_ = -1;
  int stdin_fd_ = -1;
  std::optional<int> status_;
  std::thread err_reader_, out_reader_;
  std::mutex m_;
  std::condition_variable cv_;
  std::string err_, out_;
  bool err_eof_ = false;
};

/// What a finished command printed, and how it ended.
struct command_result {
  int status = -1;  // exit status, 128+signal, or -1 when it did not end in time
  std::string out, err;
  std::chrono::steady_clock::duration took{};
};

/// Runs a command to its end (at most `timeout`) and collects its output.
inline command_result run_command(
    std::vector<std::string> args,
    std::chrono::steady_clock::duration timeout = std::chrono::seconds(60),
    std::vector<std::string> env = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  child_process p(std::move(args), std::move(env), true);
  command_result r;
  r.status = p.wait_exit(timeout).value_or(-1);
  r.took = std::chrono::steady_clock::now() - t0;
  p.drain();
  r.out = p.output();
  r.err = p.log();
  return r;
}

/// The contents of a file under /proc/PID, or "" once the process has gone: reading the file of a
/// process that exits meanwhile fails with ESRCH, which a stream would report by throwing.
inline std::string read_proc_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) text.clear();
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return text;
}

/// CPU seconds (user + system) a process has used so far, from /proc/PID/stat; -1 if gone.
inline double process_cpu_seconds(pid_t pid) {
  const std::string s = read_proc_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = s.rfind(')');
  if (close == std::string::npos) return -1;
  unsigned long utime = 0, stime = 0;
  // After ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
  std::sscanf(s.c_str() + close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime,
              &stime);
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// A "Vm...: N kB" line of /proc/PID/status in bytes (VmRSS now, VmHWM the peak); 0 if gone.
inline std::size_t process_status_bytes(pid_t pid, const char* field) {
  const std::string s = read_proc_file("/proc/" + std::to_string(pid) + "/status");
  const std::string format = std::string(field) + ": %zu kB";
  std::size_t kb = 0;
  for (std::size_t at = 0; at < s.size();) {  // line by line
    if (std::sscanf(s.c_str() + at, format.c_str(), &kb) == 1) break;
    const auto end = s.find('\n', at);
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return kb * 1024;
}

inline std::size_t process_rss_bytes(pid_t pid) { return process_status_bytes(pid, "VmRSS"); }
inline std::size_t process_peak_rss_bytes(pid_t pid) { return process_status_bytes(pid, "VmHWM"); }

}  // namespace qxa::test
