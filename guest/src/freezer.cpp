// SPDX-License-Identifier: MIT
#include "qxa/guest/freezer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/guest/process.hpp"
#include "qxa/guest/uploads.hpp"

namespace qxa::guest {

using common::errc;
using namespace asio::experimental::awaitable_operators;

namespace {

std::int64_t unix_ms_after(std::chrono::nanoseconds d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             (std::chrono::system_clock::now() + d).time_since_epoch())
      .count();
}

/// 0, or the errno of FIFREEZE / FITHAW on the mount point.
int fs_ioctl(const std::string& mount_point, unsigned long request) {
  const int fd = ::open(mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno;
  const int r = ::ioctl(fd, request, 0);
  const int err = r == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

}  // namespace

common::result<std::vector<std::string>> freeze_order(const std::vector<mount_entry>& mounts,
                                                      const std::vector<std::string>& wanted) {
  using R = common::result<std::vector<std::string>>;
  std::vector<std::string> order;
  for (const auto& m : select_disks(mounts)) {
    if (m.read_only) continue;  // nothing to flush, and FIFREEZE would fail
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), m.mount_point) == wanted.end()) {
      continue;
    }
    order.push_back(m.mount_point);
  }
  for (const auto& w : wanted) {
    if (std::find(order.begin(), order.end(), w) == order.end()) {
      return R{errc::invalid_argument, fmt::format("{} is not a freezable mount point", w)};
    }
  }
  // Later mounts sit on top of earlier ones: freeze them first.
  std::reverse(order.begin(), order.end());
  return R{std::move(order)};
}

freezer::freezer(const asio::any_io_executor& ex, freeze_options options)
    : ex_(ex), opt_(std::move(options)), lease_(ex) {}

pb::FreezeStatus freezer::status() const {
  pb::FreezeStatus s;
  s.set_frozen(frozen());
  for (const auto& m : frozen_) {
    auto* o = s.add_mounts();
    o->set_mount_point(m);
    o->set_ok(true);
  }
  s.set_lease_expires_unix_ms(frozen() ? lease_expires_unix_ms_ : 0);
  s.set_thawed_by(thawed_by_);
  return s;
}

asio::awaitable<std::vector<std::string>> freezer::run_hooks(const char* phase) {
  std::vector<std::string> errors;
  std::vector<std::string> hooks;
  if (DIR* d = ::opendir(opt_.hooks_dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string path = opt_.hooks_dir + "/" + e->d_name;
      struct stat st {};
      if (e->d_name[0] == '.' || ::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode) ||
          (st.st_mode & 0111) == 0) {
        continue;
      }
      hooks.push_back(path);
    }
    ::closedir(d);
  }
  std::sort(hooks.begin(), hooks.end());
  // Freeze hooks run in name order, thaw hooks in reverse: a hook wraps what comes after it.
  if (std::strcmp(phase, "thaw") == 0) std::reverse(hooks.begin(), hooks.end());
  for (const auto& hook : hooks) {
    spawn_options o;
    o.argv = {hook, phase};
    o.env = {"PATH=" + o.path};
    auto child = child_process::spawn(ex_, o);
    if (!child) {
      errors.push_back(fmt::format("{} {}: {}", hook, phase, child.error().message));
      continue;
    }
    auto& c = *child.value();
    asio::steady_timer t(ex_);
    t.expires_after(opt_.hook_timeout);
    auto r = co_await (c.wait() || t.async_wait(asio::use_awaitable));
    if (r.index() == 1) {
      c.kill_group(SIGKILL);
      errors.push_back(fmt::format(
          "{} {}: timed out after {} ms", hook, phase,
          std::chrono::duration_cast<std::chrono::milliseconds>(opt_.hook_timeout).count()));
      continue;
    }
    const auto st = std::get<0>(r);
    if (st.signal != 0 || st.code != 0) {
      errors.push_back(fmt::format("{} {}: {} {}", hook, phase,
                                   st.signal != 0 ? "killed by signal" : "exit status",
                                   st.signal != 0 ? st.signal : st.code));
    }
  }
  co_return errors;
}

void freezer::record(const std::vector<std::string>& mounts) const {
  std::string text;
  for (const auto& m : mounts) text += m + "\n";
  const auto dir = opt_.state_file.substr(0, opt_.state_file.rfind('/'));
  (void)make_directories(dir);
  if (int err = write_file_atomically(opt_.state_file, text, 0600)) {
    common::log_warning("cannot record the freeze in {}: {}", opt_.state_file, std::strerror(err));
  }
}

void freezer::arm_lease(std::chrono::nanoseconds lease) {
  const auto generation = generation_;
  lease_expires_unix_ms_ = unix_ms_after(lease);
  lease_.expires_after(lease);
  lease_.async_wait([this, generation](std::error_code ec) {
    if (ec || generation != generation_ || !frozen()) return;
    asio::co_spawn(
        ex_,
        [this]() -> asio::awaitable<void> {
          common::log_warning("freeze lease expired without renewal: thawing");
          (void)co_await thaw("lease");
        },
        asio::detached);
  });
}

asio::awaitable<common::result<pb::FreezeStatus>> freezer::freeze(
    std::vector<std::string> mount_points, std::chrono::nanoseconds lease) {
  using R = common::result<pb::FreezeStatus>;
  if (lease <= std::chrono::nanoseconds::zero()) lease = opt_.default_lease;
  lease = std::min(lease, opt_.max_lease);
  if (busy_) co_return R{errc::unavailable, "a freeze or thaw is already under way"};
  if (frozen()) {
    ++generation_;
    arm_lease(lease);
    co_return R{status()};  // a renewal
  }
  auto text = read_file(opt_.mountinfo);
  if (!text) co_return R{errc::unavailable, "cannot read " + opt_.mountinfo};
  auto order = freeze_order(parse_mountinfo(*text), mount_points);
  if (!order) co_return R{order.error()};
  busy_ = true;
  pb::FreezeStatus s;
  auto hook_errors = co_await run_hooks("freeze");
  for (auto& e : hook_errors) s.add_hook_errors(e);
  if (!hook_errors.empty()) {
    for (auto& e : co_await run_hooks("thaw")) s.add_hook_errors(e);
    busy_ = false;
    co_return R{errc::unavailable, fmt::format("a freeze hook failed: {}", hook_errors.front())};
  }
  ++generation_;
  record(*order);  // before freezing: a crash half way is still thawed by the next start
  common::logger::instance().hold(true);  // nothing may write to a frozen disk on our behalf
  std::string failure;
  for (const auto& m : *order) {
    auto* o = s.add_mounts();
    o->set_mount_point(m);
    const int err = fs_ioctl(m, FIFREEZE);
    if (err == 0) {
      o->set_ok(true);
      frozen_.push_back(m);
    } else if (err == EOPNOTSUPP || err == ENOTTY) {
      o->set_error("cannot be frozen (skipped)");
    } else {
      o->set_error(std::strerror(err));
      failure = fmt::format("cannot freeze {}: {}", m, std::strerror(err));
      break;
    }
  }
  if (!failure.empty() || frozen_.empty()) {
    thaw_mounts(frozen_);
    frozen_.clear();
    common::logger::instance().hold(false);
    ::unlink(opt_.state_file.c_str());
    for (auto& e : co_await run_hooks("thaw")) s.add_hook_errors(e);
    busy_ = false;
    if (failure.empty()) failure = "no filesystem here can be frozen";
    common::log_warning("freeze failed and was undone: {}", failure);
    co_return R{errc::unavailable, failure};
  }
  record(frozen_);
  thawed_by_.clear();
  arm_lease(lease);
  busy_ = false;
  s.set_frozen(true);
  s.set_lease_expires_unix_ms(lease_expires_unix_ms_);
  common::log_info("froze {} filesystems; lease {} ms", frozen_.size(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(lease).count());
  co_return R{std::move(s)};
}

std::vector<pb::MountOutcome> freezer::thaw_mounts(const std::vector<std::string>& mounts) {
  std::vector<pb::MountOutcome> out;
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
    pb::MountOutcome o;
    o.set_mount_point(*it);
    const int err = fs_ioctl(*it, FITHAW);
    // EINVAL: it was not frozen (any more); the goal is reached either way.
    o.set_ok(err == 0 || err == EINVAL);
    if (err != 0) o.set_error(err == EINVAL ? "was not frozen" : std::strerror(err));
    out.push_back(std::move(o));
  }
  return out;
}

asio::awaitable<common::result<pb::FreezeStatus>> freezer::thaw(std::string by) {
  using R = common::result<pb::FreezeStatus>;
  if (busy_) co_return R{errc::unavailable, "a freeze or thaw is already under way"};
  pb::FreezeStatus s;
  if (!frozen()) {
    s.set_thawed_by(thawed_by_);
    co_return R{std::move(s)};  // nothing to do
  }
  busy_ = true;
  ++generation_;
  lease_.cancel();
  for (auto& o : thaw_mounts(frozen_)) *s.add_mounts() = std::move(o);
  const auto n = frozen_.size();
  frozen_.clear();
  thawed_by_ = by;
  ::unlink(opt_.state_file.c_str());
  common::logger::instance().hold(false);
  common::log_info("thawed {} filesystems (by {})", n, by);
  for (auto& e : co_await run_hooks("thaw")) s.add_hook_errors(e);
  busy_ = false;
  s.set_thawed_by(thawed_by_);
  co_return R{std::move(s)};
}

asio::awaitable<void> freezer::recover() {
  auto text = read_file(opt_.state_file);
  if (!text) co_return;
  std::vector<std::string> mounts;
  std::string_view rest = *text;
  while (!rest.empty()) {
    const auto nl = rest.find('\n');
    if (nl > 0) mounts.emplace_back(rest.substr(0, nl));
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  common::log_warning("an earlier agent left {} filesystems frozen: thawing them first",
                      mounts.size());
  for (const auto& o : thaw_mounts(mounts)) {
    common::log_info("thaw {}: {}", o.mount_point(), o.ok() ? "ok" : o.error());
  }
  ::unlink(opt_.state_file.c_str());
  thawed_by_ = "restart";
  for (const auto& e : co_await run_hooks("thaw")) common::log_warning("{}", e);
}

}  // namespace qxa::guest
