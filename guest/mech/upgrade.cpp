// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/upgrade.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>
#include <vector>

#include "qxa/common/log.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/common/text.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

extern char** environ;

namespace qxa::guest {

namespace {

using common::error_info;

constexpr std::string_view record_name = "upgrade";
constexpr std::size_t max_record_bytes = 16u << 10;

error_info system_failure(const std::string& what, int err = errno) {
  return error_info{std::error_code(err, std::generic_category()),
                    fmt::format("{}: {}", what, std::strerror(err))};
}

error_info not_trusted(std::string message) {
  return error_info{std::make_error_code(std::errc::operation_not_permitted), std::move(message)};
}

std::string_view state_name(upgrade_state s) {
  switch (s) {
    case upgrade_state::pending:
      return "pending";
    case upgrade_state::confirmed:
      return "confirmed";
    case upgrade_state::rolled_back:
      return "rolled-back";
    case upgrade_state::none:
      break;
  }
  return "none";
}

std::string directory_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

bool sync_directory(const std::string& dir) {
  unique_fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  return d && ::fsync(d.get()) == 0;
}

// Runs a program and waits for it (the guard is a plain program: no event loop).
int run_and_wait(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0) return -1;
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

std::string format_upgrade_record(const upgrade_record& r) {
  // Values are one line each: versions and paths with a newline are refused before this.
  return fmt::format(
      "state={}\ntoken={}\nfrom_version={}\nto_version={}\nbinary={}\nprevious={}\nunit={}\n"
      "deadline_unix_ms={}\ndevice={}\ninode={}\nsha256={}\ndetail={}\n",
      state_name(r.state), r.token, r.from_version, r.to_version, r.binary, r.previous, r.unit,
      r.deadline_unix_ms, r.device, r.inode, r.sha256, r.detail);
}

common::result<upgrade_record> parse_upgrade_record(std::string_view text) {
  upgrade_record r;
  bool has_state = false;
  auto number = [](std::string_view v, auto& out) {
    out = 0;
    for (char c : v) {
      if (c < '0' || c > '9') return false;
      out = out * 10 + (c - '0');
    }
    return !v.empty();
  };
  bool ok = true;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const auto line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    const auto key = line.substr(0, eq);
    const std::string value(line.substr(eq + 1));
    if (key == "state") {
      for (auto s : {upgrade_state::pending, upgrade_state::confirmed, upgrade_state::rolled_back,
                     upgrade_state::none}) {
        if (value == state_name(s)) {
          r.state = s;
          has_state = true;
        }
      }
    } else if (key == "token") {
      r.token = value;
    } else if (key == "from_version") {
      r.from_version = value;
    } else if (key == "to_version") {
      r.to_version = value;
    } else if (key == "binary") {
      r.binary = value;
    } else if (key == "previous") {
      r.previous = value;
    } else if (key == "unit") {
      r.unit = value;
    } else if (key == "detail") {
      r.detail = value;
    } else if (key == "sha256") {
      r.sha256 = value;
    } else if (key == "deadline_unix_ms") {
      ok = ok && number(value, r.deadline_unix_ms);
    } else if (key == "device") {
      ok = ok && number(value, r.device);
    } else if (key == "inode") {
      ok = ok && number(value, r.inode);
    }
  }
  if (!has_state || !ok) {
    return error_info{std::make_error_code(std::errc::invalid_argument),
                      "the upgrade record is damaged"};
  }
  return r;
}

common::result<upgrade_record> read_upgrade_record(const std::string& state_dir) {
  const std::string path = state_dir + "/" + std::string(record_name);
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return upgrade_record{};
    return system_failure("cannot read " + path);
  }
  std::string text(max_record_bytes, '\0');
  const auto n = ::read(fd.get(), text.data(), text.size());
  if (n < 0) return system_failure("cannot read " + path);
  text.resize(static_cast<std::size_t>(n));
  return parse_upgrade_record(text);
}

std::optional<error_info> write_upgrade_record(const std::string& state_dir,
                                               const upgrade_record& r) {
  for (const auto* v :
       {&r.token, &r.from_version, &r.to_version, &r.binary, &r.previous, &r.unit, &r.detail}) {
    if (v->find('\n') != std::string::npos) {
      return error_info{std::make_error_code(std::errc::invalid_argument),
                        "an upgrade record value holds a newline"};
    }
  }
  if (::mkdir(state_dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return system_failure("cannot create " + state_dir);
  }
  if (auto bad = check_trusted_directory(state_dir)) return bad;
  const std::string path = state_dir + "/" + std::string(record_name);
  const std::string temp = path + ".new";
  ::unlink(temp.c_str());
  unique_fd fd(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) return system_failure("cannot write " + temp);
  if (!common::write_all(fd.get(), format_upgrade_record(r)) || ::fsync(fd.get()) != 0 ||
      ::rename(temp.c_str(), path.c_str()) != 0) {
    auto e = system_failure("cannot write " + path);
    ::unlink(temp.c_str());
    return e;
  }
  sync_directory(state_dir);
  return std::nullopt;
}

common::result<std::string> agent_binary(const std::string& configured) {
  if (!configured.empty()) return configured;
  std::string target(4096, '\0');
  const auto n = ::readlink("/proc/self/exe", target.data(), target.size() - 1);
  if (n <= 0) return system_failure("cannot read /proc/self/exe");
  target.resize(static_cast<std::size_t>(n));
  if (target.ends_with(" (deleted)")) {
    return error_info{std::make_error_code(std::errc::operation_not_permitted),
                      fmt::format("the agent's binary {} was removed or replaced since the agent "
                                  "started: restart the agent first",
                                  target.substr(0, target.size() - 10))};
  }
  return target;
}

std::string staged_binary(const std::string& binary) {
  const auto dir = directory_of(binary);
  const auto name = binary.substr(binary.rfind('/') + 1);
  return (dir == "/" ? "" : dir) + "/." + name + ".upgrade";
}

std::optional<error_info> check_trusted_directory(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) return system_failure("cannot stat " + dir);
  if (!S_ISDIR(st.st_mode)) return not_trusted(dir + " is not a directory");
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return not_trusted(
        fmt::format("{} belongs to uid {}, not to the agent's user", dir, st.st_uid));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return not_trusted(
        fmt::format("{} is writable by others (mode {:o}): whoever can write there "
                    "could swap the agent's binaries",
                    dir, st.st_mode & 07777));
  }
  return std::nullopt;
}

std::optional<error_info> check_staged(const std::string& staged, std::string_view sha256) {
  unique_fd fd(::open(staged.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) {
      return error_info{std::make_error_code(std::errc::no_such_file_or_directory),
                        fmt::format("no new agent binary is staged at {}: upload one first "
                                    "(FileWriteOpen.agent_upgrade)",
                                    staged)};
    }
    return system_failure("cannot open " + staged);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return system_failure("cannot stat " + staged);
  if (!S_ISREG(st.st_mode) || st.st_nlink != 1 || st.st_uid != ::geteuid() ||
      (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return not_trusted(
        fmt::format("{} is not the agent's own staged file (a regular file with one "
                    "link, writable by the agent only)",
                    staged));
  }
  auto digest = file_sha256(fd.get(), staged);
  if (!digest) return digest.error();
  const auto d = *digest;
  if (common::sha256::bytes(d) != sha256) {
    return error_info{std::make_error_code(std::errc::invalid_argument),
                      fmt::format("the staged binary's SHA-256 is {}, not the {} asked for",
                                  common::sha256::hex(d), common::sha256::hex(sha256))};
  }
  return std::nullopt;
}

common::result<common::sha256::digest> file_sha256(int fd, const std::string& what) {
  common::sha256 digest;
  std::string buf(1u << 16, '\0');
  for (;;) {
    const auto n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return system_failure("cannot read " + what);
    if (n == 0) break;
    digest.update(buf.data(), static_cast<std::size_t>(n));
  }
  return digest.finish();
}

common::result<common::sha256::digest> file_sha256(const std::string& path) {
  unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return system_failure("cannot open " + path);
  return file_sha256(fd.get(), path);
}

common::result<std::string> parse_version_output(std::string_view out) {
  constexpr std::string_view prefix = "quantix-kvm-agent ";
  if (!out.ends_with('\n') || !out.starts_with(prefix)) {
    return error_info{std::make_error_code(std::errc::invalid_argument),
                      "its --version does not say \"quantix-kvm-agent VERSION\": it is not a "
                      "Quantix KVM agent"};
  }
  auto version = out.substr(prefix.size(), out.size() - prefix.size() - 1);
  const bool printable =
      std::all_of(version.begin(), version.end(), [](char c) { return c > ' ' && c < 0x7f; });
  if (version.empty() || version.size() > 64 || !printable) {
    return error_info{std::make_error_code(std::errc::invalid_argument),
                      "its --version names no version it could be known by"};
  }
  return std::string(version);
}

common::result<std::pair<std::uint64_t, std::uint64_t>> install_staged(
    const std::string& binary, const std::string& staged, const std::string& previous) {
  // The running binary is kept under a second name first: NAME is never missing.
  const std::string link_temp = previous + ".new";
  ::unlink(link_temp.c_str());
  if (::link(binary.c_str(), link_temp.c_str()) != 0) {
    return system_failure("cannot keep " + binary + " as " + previous);
  }
  if (::rename(link_temp.c_str(), previous.c_str()) != 0) {
    auto e = system_failure("cannot keep " + binary + " as " + previous);
    ::unlink(link_temp.c_str());
    return e;
  }
  struct stat st {};
  if (::stat(staged.c_str(), &st) != 0) return system_failure("cannot stat " + staged);
  if (::chmod(staged.c_str(), 0755) != 0 || ::rename(staged.c_str(), binary.c_str()) != 0) {
    return system_failure("cannot rename " + staged + " over " + binary);
  }
  sync_directory(directory_of(binary));
  return std::pair<std::uint64_t, std::uint64_t>{st.st_dev, st.st_ino};
}

bool restore_previous(const upgrade_record& r, std::string& detail) {
  struct stat now {};
  bool ours =
      ::stat(r.binary.c_str(), &now) == 0 && now.st_dev == r.device && now.st_ino == r.inode;
  if (ours && !r.sha256.empty()) {
    const auto digest = file_sha256(r.binary);
    ours = digest && common::sha256::hex(*digest) == r.sha256;
  }
  if (!ours) {
    detail = fmt::format(
        "not rolled back: {} is no longer the binary the upgrade installed "
        "(something else replaced it)",
        r.binary);
    return false;
  }
  const std::string temp = r.binary + ".rollback";
  ::unlink(temp.c_str());
  if (::link(r.previous.c_str(), temp.c_str()) != 0 ||
      ::rename(temp.c_str(), r.binary.c_str()) != 0) {
    detail = fmt::format("rollback failed: cannot put {} back over {}: {}", r.previous, r.binary,
                         std::strerror(errno));
    ::unlink(temp.c_str());
    return false;
  }
  sync_directory(directory_of(r.binary));
  return true;
}

std::string own_systemd_unit() {
  std::string text(4096, '\0');
  unique_fd fd(::open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  const auto n = ::read(fd.get(), text.data(), text.size());
  if (n <= 0) return {};
  text.resize(static_cast<std::size_t>(n));
  // "0::/system.slice/quantix-kvm-agent.service" (the unified hierarchy's line).
  for (std::string_view rest = text; !rest.empty();) {
    const auto nl = rest.find('\n');
    const auto line = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
    if (!line.starts_with("0::")) continue;
    const auto name = line.substr(line.rfind('/') + 1);
    if (name.ends_with(".service")) return std::string(name);
  }
  return {};
}

bool runs_inode(pid_t pid, std::uint64_t device, std::uint64_t inode) {
  struct stat st {};
  const auto exe = fmt::format("/proc/{}/exe", pid);
  return ::stat(exe.c_str(), &st) == 0 && st.st_dev == device && st.st_ino == inode;
}

std::optional<error_info> start_detached(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t files;
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_init(&files);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &all);
  // Its own session: no signal to the agent's process group reaches it.
  ::posix_spawnattr_setflags(&attr,
                             POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  ::posix_spawn_file_actions_addopen(&files, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_addopen(&files, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t pid = 0;
  const int err = ::posix_spawn(&pid, args[0], &files, &attr, args.data(), environ);
  ::posix_spawn_file_actions_destroy(&files);
  ::posix_spawnattr_destroy(&attr);
  if (err != 0) return system_failure("cannot start " + argv[0], err);
  return std::nullopt;
}

int run_upgrade_guard(const std::string& state_dir) {
  auto first = read_upgrade_record(state_dir);
  if (!first || first->state != upgrade_state::pending) return 0;
  const std::string token = first->token;
  common::log_info("upgrade guard: waiting for the host to confirm {} (to {}) by {} ms", token,
                   first->to_version, first->deadline_unix_ms);
  // Counted on the monotonic clock from here: the host may set the guest's clock meanwhile.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(std::max<std::int64_t>(
                                             0, first->deadline_unix_ms - common::unix_ms()));
  for (;;) {
    auto r = read_upgrade_record(state_dir);
    if (!r) {
      common::log_error("upgrade guard: {}", r.error().message);
      return 1;
    }
    if (r->token != token || r->state != upgrade_state::pending) {
      common::log_info("upgrade guard: the upgrade to {} is {}", first->to_version,
                       state_name(r->state));
      return 0;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  auto current = read_upgrade_record(state_dir);
  if (!current || current->token != token || current->state != upgrade_state::pending) return 0;
  auto r = *current;
  std::string detail;
  if (!restore_previous(r, detail)) {
    // Left pending, past its deadline: a new upgrade may replace it.
    common::log_error("upgrade guard: {}", detail);
    r.detail = detail;
    (void)write_upgrade_record(state_dir, r);
    return 1;
  }
  r.state = upgrade_state::rolled_back;
  r.detail = fmt::format("no confirmation within the deadline: {} {} was put back", r.binary,
                         r.from_version);
  if (auto e = write_upgrade_record(state_dir, r)) {
    common::log_error("upgrade guard: {}", e->message);
  }
  common::log_warning("upgrade guard: {}", r.detail);
  if (!r.unit.empty()) {
    // Restarts a running new agent, and starts a unit the new binary left failed.
    const int status = run_and_wait({"systemctl", "restart", r.unit});
    if (status != 0) common::log_error("upgrade guard: systemctl restart {} failed", r.unit);
    return status == 0 ? 0 : 1;
  }
  // No systemd: a supervisor restarts the agent once the new binary's processes end.
  std::vector<pid_t> running;
  if (DIR* d = ::opendir("/proc")) {
    while (const dirent* e = ::readdir(d)) {
      char* end = nullptr;
      const long pid = std::strtol(e->d_name, &end, 10);
      if (pid > 1 && *end == '\0' && pid != ::getpid() &&
          runs_inode(static_cast<pid_t>(pid), r.device, r.inode)) {
        running.push_back(static_cast<pid_t>(pid));
      }
    }
    ::closedir(d);
  }
  for (pid_t pid : running) ::kill(pid, SIGTERM);
  for (int i = 0; i < 40 && !running.empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    std::erase_if(running, [&](pid_t pid) { return !runs_inode(pid, r.device, r.inode); });
  }
  for (pid_t pid : running) ::kill(pid, SIGKILL);
  return 0;
}

}  // namespace qxa::guest
