// SPDX-License-Identifier: MIT
// qx-bench's settings and its plumbing: unix sockets, child processes and what /proc says of
// them, latency figures.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace qxa::bench {

using clock_type = std::chrono::steady_clock;

struct settings {
  bool smoke = false;
  std::string json_path;
  std::string agent = QXA_AGENT_PATH;
  std::string qemu_ga = "/usr/sbin/qemu-ga";
  int pings = 2000;
  int rate_requests = 20000;
  std::size_t file_bytes = 64u << 20;
  int execs = 50;
  std::chrono::seconds idle{30};  ///< window for the idle CPU figure
  std::string plot_path;
};

/// The processes qx-bench has started and not yet stopped.
inline std::vector<pid_t>& live_children() {
  static std::vector<pid_t> pids;
  return pids;
}

/// Counts a process started by other means among live_children() while it lives.
struct watched_child {
  pid_t pid;
  explicit watched_child(pid_t p) : pid(p) { live_children().push_back(p); }
  ~watched_child() { std::erase(live_children(), pid); }
  watched_child(const watched_child&) = delete;
  watched_child& operator=(const watched_child&) = delete;
};

/// Ends qx-bench, and every process it started with it.
[[noreturn]] inline void die(const std::string& why) {
  std::fprintf(stderr, "qx-bench: %s\n", why.c_str());
  for (const pid_t pid : live_children()) ::kill(pid, SIGKILL);
  std::exit(1);
}

inline double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

struct latency {
  std::vector<double> ms;
  double pct(double p) {
    std::sort(ms.begin(), ms.end());
    return ms.empty() ? 0 : ms[std::min(ms.size() - 1, static_cast<std::size_t>(p * ms.size()))];
  }
};

// ---- sockets and processes ----------------------------------------------------------------

inline int connect_unix(const std::string& path,
                        std::chrono::seconds wait = std::chrono::seconds(10)) {
  const auto until = clock_type::now() + wait;
  for (;;) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
    ::close(fd);
    if (clock_type::now() > until) die("cannot connect to " + path);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // the server is starting
  }
}

inline int listen_unix(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0) {
    die("cannot listen on " + path);
  }
  return fd;
}

inline bool write_all(int fd, const void* p, std::size_t n) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = ::write(fd, c, n);
    if (w <= 0) return false;
    c += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

inline bool read_all(int fd, void* p, std::size_t n) {
  auto* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = ::read(fd, c, n);
    if (r <= 0) return false;
    c += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

struct child {
  pid_t pid = -1;
  explicit child(std::vector<std::string> argv) {
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    if (::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) != 0) {
      die("cannot start " + argv[0]);
    }
    posix_spawn_file_actions_destroy(&fa);
    live_children().push_back(pid);
  }
  /// Waits for it to end by itself; its wait status.
  int wait() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::erase(live_children(), pid);
    pid = -1;
    return status;
  }
  ~child() {
    if (pid <= 0) return;
    std::erase(live_children(), pid);
    ::kill(pid, SIGTERM);
    // qemu-ga 7.2 sometimes hangs on SIGTERM after guest-exec (a futex wait in its exit path):
    // give it 5 s, then SIGKILL.
    for (int i = 0; i < 500; ++i) {
      if (::waitpid(pid, nullptr, WNOHANG) == pid) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
};

/// Runs a program to its end and returns what it wrote to stdout; dies when it fails.
inline std::string run_capture(std::vector<std::string> argv) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) die("pipe failed");
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  pid_t pid = -1;
  const int err = ::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (err != 0) die("cannot start " + argv[0]);
  std::string out;
  char buf[4096];
  for (ssize_t r; (r = ::read(fds[0], buf, sizeof buf)) > 0;)
    out.append(buf, static_cast<std::size_t>(r));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die(argv[0] + " failed");
  return out;
}

inline std::size_t rss_kib(pid_t pid, const char* field) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(field)) return std::stoul(line.substr(std::strlen(field)));
  }
  return 0;
}

inline double cpu_seconds(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), {});
  std::istringstream rest(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoul(field);
    if (i == 15) stime = std::stoul(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

/// `n` bytes that no compressor shrinks, the same for the same `seed`.
inline std::string random_bytes(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string data(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    const auto w = rng();
    std::memcpy(data.data() + i, &w, std::min<std::size_t>(8, n - i));
  }
  return data;
}

}  // namespace qxa::bench
