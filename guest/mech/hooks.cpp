// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/hooks.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "qxa/common/text.hpp"
#include "qxa/guest/mech/process.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest {

using namespace asio::experimental::awaitable_operators;

namespace {

// The hooks of a trusted directory by path, in name order, and the refusals of those that
// others could write.
std::vector<hook_outcome> find_hooks(const std::string& dir, const std::string& phase,
                                     std::vector<std::string>& hooks) {
  std::vector<hook_outcome> refused;
  auto d = open_trusted_directory(dir);
  if (!d) {
    // No hooks directory is the usual case; one that others may write to is never used.
    if (d.code() != std::errc::no_such_file_or_directory) {
      refused.push_back(
          {.hook = dir, .phase = phase, .error = fmt::format("not used: {}", d.error().message)});
    }
    return refused;
  }
  auto listing = open_directory(d->get());
  if (!listing) return refused;
  DIR* entries = ::fdopendir(listing->release());
  if (entries == nullptr) return refused;
  while (const dirent* e = ::readdir(entries)) {
    const std::string name = e->d_name;
    if (name.front() == '.') continue;
    struct stat st {};
    if (::fstatat(::dirfd(entries), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISREG(st.st_mode) || (st.st_mode & 0111) == 0) {
      continue;  // not a hook: a link, a directory, a file that is not executable
    }
    if ((st.st_uid != 0 && st.st_uid != ::geteuid()) || (st.st_mode & 022) != 0) {
      refused.push_back({.hook = dir + "/" + name,
                         .phase = phase,
                         .error = fmt::format("not run: it must be root's and writable by "
                                              "nobody else (uid {}, mode {:o})",
                                              st.st_uid, st.st_mode & 07777)});
      continue;
    }
    hooks.push_back(dir + "/" + name);
  }
  ::closedir(entries);
  std::sort(hooks.begin(), hooks.end());
  return refused;
}

}  // namespace

asio::awaitable<std::vector<hook_outcome>> run_hooks(asio::any_io_executor ex, std::string dir,
                                                     std::string phase,
                                                     std::chrono::nanoseconds timeout,
                                                     bool reverse) {
  std::vector<std::string> hooks;
  auto out = find_hooks(dir, phase, hooks);
  if (reverse) std::reverse(hooks.begin(), hooks.end());
  for (const auto& hook : hooks) {
    hook_outcome o{.hook = hook, .phase = phase};
    const auto started = std::chrono::steady_clock::now();
    spawn_options so;
    so.argv = {hook, phase};
    so.env = {"PATH=" + so.path};
    auto child = co_await child_process::start(ex, so, timeout);
    if (!child) {
      o.error = child.error().message;
      out.push_back(std::move(o));
      continue;
    }
    o.ran = true;
    auto& c = *child.value();
    asio::steady_timer t(ex);
    t.expires_after(timeout);
    auto r = co_await (c.wait() || t.async_wait(asio::use_awaitable));
    if (r.index() == 1) {
      c.kill_group(SIGKILL);  // reaped when `child` goes
      o.timed_out = true;
      o.error = fmt::format("timed out after {} ms",
                            std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count());
    } else {
      const auto st = std::get<0>(r);
      o.exit_status = st.code;
      o.signal = st.signal;
      o.ok = st.signal == 0 && st.code == 0;
      if (!o.ok) {
        o.error = st.signal != 0 ? fmt::format("killed by signal {}", st.signal)
                                 : fmt::format("exit status {}", st.code);
      }
    }
    o.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started);
    out.push_back(std::move(o));
  }
  co_return out;
}

std::string describe(const hook_outcome& o) {
  if (!o.ran) return fmt::format("{}: {}", common::to_utf8(o.hook), o.error);
  return fmt::format("{} {}: {}", common::to_utf8(o.hook), o.phase, o.error);
}

}  // namespace qxa::guest
