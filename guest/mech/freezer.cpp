// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/freezer.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/parse.hpp"
#include "qxa/common/text.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/mech/hooks.hpp"
#include "qxa/guest/mech/process.hpp"

namespace qxa::guest {

using common::errc;
using namespace asio::experimental::awaitable_operators;

namespace {

std::int64_t unix_ms_after(std::chrono::nanoseconds d) {
  return common::unix_ms(std::chrono::system_clock::now() + d);
}

/// A directory of the filesystem mounted at `m`, opened without following a link at the end,
/// and only if it is that mount (a user may not slip another directory under the path).
common::result<unique_fd> open_mount(const mount_entry& m) {
  unique_fd fd(::open(m.mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return common::error_info{{errno, std::system_category()}, std::strerror(errno)};
  struct statx sx {};
  if (m.id != 0 &&
      ::statx(fd.get(), "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_MNT_ID, &sx) == 0 &&
      (sx.stx_mask & STATX_MNT_ID) != 0 && sx.stx_mnt_id != m.id) {
    return common::error_info{{EXDEV, std::system_category()}, "not the mount it was"};
  }
  return fd;
}

/// 0 or the errno of FITHAW on the filesystem of `fd`.
int fithaw(int fd) { return ::ioctl(fd, FITHAW, 0) == 0 ? 0 : errno; }

mount_outcome thaw_outcome(const std::string& mount_point, int err) {
  mount_outcome o;
  o.mount_point = mount_point;
  // EINVAL: it was not frozen (any more); the goal is reached either way.
  o.ok = err == 0 || err == EINVAL;
  if (err != 0) o.error = err == EINVAL ? "was not frozen" : std::strerror(err);
  return o;
}

}  // namespace

common::result<std::vector<mount_entry>> freeze_order(const std::vector<mount_entry>& mounts,
                                                      const std::vector<std::string>& wanted) {
  auto order = writable_disks(mounts, wanted, "freezable");
  // Later mounts sit on top of earlier ones: freeze them first.
  if (order) std::reverse(order->begin(), order->end());
  return order;
}

// ---- thaw_guard -----------------------------------------------------------------------------

thaw_guard::thaw_guard(std::function<void(std::vector<mount_outcome>)> on_thawed)
    : on_thawed_(std::move(on_thawed)), thread_([this] { run(); }) {}

thaw_guard::~thaw_guard() {
  {
    std::lock_guard lock(m_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

void thaw_guard::arm(std::vector<frozen_mount> mounts, clock::time_point deadline) {
  {
    std::lock_guard lock(m_);
    mounts_ = std::move(mounts);
    deadline_ = deadline;
    armed_ = true;
  }
  changed_.notify_all();
}

void thaw_guard::extend(clock::time_point deadline) {
  {
    std::lock_guard lock(m_);
    deadline_ = deadline;
  }
  changed_.notify_all();
}

std::vector<thaw_guard::frozen_mount> thaw_guard::disarm() {
  std::lock_guard lock(m_);
  armed_ = false;
  return std::move(mounts_);
}

bool thaw_guard::armed() const {
  std::lock_guard lock(m_);
  return armed_;
}

std::vector<mount_outcome> thaw_guard::thaw_all(std::vector<frozen_mount>& mounts) {
  std::vector<mount_outcome> out;
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
    out.push_back(thaw_outcome(it->mount_point, fithaw(it->fd.get())));
  }
  mounts.clear();
  return out;
}

void thaw_guard::run() {
  std::unique_lock lock(m_);
  while (!stopping_) {
    if (!armed_) {
      changed_.wait(lock);
      continue;
    }
    if (clock::now() < deadline_) {
      changed_.wait_until(lock, deadline_);  // or less: any change wakes it to look again
      continue;
    }
    // The lease ended: thaw here and now, whatever the event loop is doing.
    auto outcomes = thaw_all(mounts_);
    armed_ = false;
    lock.unlock();
    on_thawed_(std::move(outcomes));
    lock.lock();
  }
}

// ---- freezer --------------------------------------------------------------------------------

freezer::freezer(const asio::any_io_executor& ex, freeze_options options)
    : ex_(ex), opt_(std::move(options)) {
  guard_ = std::make_unique<thaw_guard>(
      [ex = ex_, alive = std::weak_ptr<bool>(alive_), this](std::vector<mount_outcome> done) {
        asio::post(ex, [alive, this, done = std::move(done)]() mutable {
          if (alive.expired()) return;
          asio::co_spawn(ex_, after_guard_thawed(std::move(done)),
                         common::contained("recording the thaw guard's thaw"));
        });
      });
}

freezer::~freezer() {
  *alive_ = false;
  alive_.reset();
  guard_.reset();  // joins the guard's thread; it no longer reports
}

freeze_status freezer::status() const {
  freeze_status s;
  s.frozen = frozen();
  for (const auto& m : frozen_) s.mounts.push_back({m, true, {}});
  s.lease_expires_unix_ms = frozen() ? lease_expires_unix_ms_ : 0;
  s.thawed_by = thawed_by_;
  return s;
}

freeze_state freezer::state() const {
  freeze_state s;
  if (!frozen()) return s;
  const auto now = std::chrono::steady_clock::now();
  using std::chrono::duration_cast;
  using std::chrono::milliseconds;
  s.frozen = true;
  s.frozen_ms =
      static_cast<std::uint64_t>(duration_cast<milliseconds>(now - frozen_since_).count());
  s.lease_remaining_ms = duration_cast<milliseconds>(lease_end_ - now).count();
  return s;
}

asio::awaitable<std::vector<std::string>> freezer::run_hooks(const char* phase) {
  // Freeze hooks run in name order, thaw hooks in reverse: a hook wraps what comes after it.
  std::vector<std::string> errors;
  for (const auto& o : co_await guest::run_hooks(ex_, opt_.hooks_dir, phase, opt_.hook_timeout,
                                                 std::strcmp(phase, "thaw") == 0)) {
    if (!o.ok) errors.push_back(describe(o));
  }
  co_return errors;
}

void freezer::record(const std::vector<std::string>& mounts) const {
  std::string text;
  for (const auto& m : mounts) text += m + "\n";
  if (auto e = write_trusted_file(opt_.state_file, text, 0600, std::nullopt, true)) {
    common::log_warning("cannot record the freeze: {}", e->message);
  }
}

void freezer::forget_record() const {
  const auto [dir, name] = split_parent(opt_.state_file);
  if (auto d = open_trusted_directory(dir)) ::unlinkat(d->get(), name.c_str(), 0);
}

std::chrono::steady_clock::time_point freezer::lease_end(std::chrono::nanoseconds lease) {
  const auto now = std::chrono::steady_clock::now();
  const auto cap = frozen_since_ +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(opt_.max_frozen);
  const auto end =
      std::min(now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(lease), cap);
  lease_expires_unix_ms_ = unix_ms_after(end - now);
  lease_end_ = end;
  return end;
}

asio::awaitable<common::result<freeze_status>> freezer::freeze(
    std::vector<std::string> mount_points, std::chrono::nanoseconds lease) {
  using R = common::result<freeze_status>;
  if (lease <= std::chrono::nanoseconds::zero()) lease = opt_.default_lease;
  lease = std::min(lease, opt_.max_lease);
  if (busy_) co_return R{errc::unavailable, "a freeze or thaw is under way"};
  if (frozen() && !guard_->armed()) {
    co_return R{errc::unavailable, "the lease has just ended and the guest is being thawed"};
  }
  if (frozen()) {
    guard_->extend(lease_end(lease));  // a renewal, never past max_frozen
    co_return R{status()};
  }
  auto text = read_file(opt_.mountinfo);
  if (!text) co_return R{errc::unavailable, "cannot read " + opt_.mountinfo};
  auto order = freeze_order(parse_mountinfo(*text), mount_points);
  if (!order) co_return R{order.error()};
  busy_ = true;
  freeze_status s;
  auto hook_errors = co_await run_hooks("freeze");
  s.hook_errors = hook_errors;
  if (!hook_errors.empty()) {
    for (auto& e : co_await run_hooks("thaw")) s.hook_errors.push_back(std::move(e));
    busy_ = false;
    co_return R{errc::unavailable, fmt::format("a freeze hook failed: {}", hook_errors.front())};
  }
  std::vector<std::string> planned;
  for (const auto& m : *order) planned.push_back(m.mount_point);
  record(planned);  // before freezing: a crash half way is still thawed by the next start
  common::logger::instance().hold(true);  // nothing may write to a frozen disk on our behalf
  std::vector<thaw_guard::frozen_mount> held;
  std::string failure;
  for (const auto& m : *order) {
    auto& o = s.mounts.emplace_back(mount_outcome{m.mount_point, false, {}});
    auto fd = open_mount(m);
    const int err = !fd ? fd.code().value() : ::ioctl(fd->get(), FIFREEZE, 0) == 0 ? 0 : errno;
    if (err == 0) {
      o.ok = true;
      held.push_back({m.mount_point, std::move(fd.value())});
    } else if (err == EOPNOTSUPP || err == ENOTTY || err == EACCES || err == EPERM ||
               err == EXDEV) {
      // This one cannot be frozen here; the others still can.
      o.error = fmt::format("cannot be frozen ({}): skipped", std::strerror(err));
    } else {
      o.error = std::strerror(err);
      failure = fmt::format("cannot freeze {}: {}", m.mount_point, std::strerror(err));
      break;
    }
  }
  if (!failure.empty() || held.empty()) {
    (void)thaw_guard::thaw_all(held);
    common::logger::instance().hold(false);
    forget_record();
    for (auto& e : co_await run_hooks("thaw")) s.hook_errors.push_back(std::move(e));
    busy_ = false;
    if (failure.empty()) failure = "no filesystem here can be frozen";
    common::log_warning("freeze failed and was undone: {}", failure);
    co_return R{errc::unavailable, failure};
  }
  frozen_.clear();
  for (const auto& h : held) frozen_.push_back(h.mount_point);
  record(frozen_);
  thawed_by_.clear();
  frozen_since_ = std::chrono::steady_clock::now();
  guard_->arm(std::move(held), lease_end(lease));
  busy_ = false;
  s.frozen = true;
  s.lease_expires_unix_ms = lease_expires_unix_ms_;
  common::log_info("froze {} filesystems; lease {} ms", frozen_.size(),
                   std::chrono::duration_cast<std::chrono::milliseconds>(lease).count());
  co_return R{std::move(s)};
}

asio::awaitable<common::result<freeze_status>> freezer::thaw(std::string by) {
  using R = common::result<freeze_status>;
  if (busy_) co_return R{errc::unavailable, "a freeze or thaw is under way"};
  freeze_status s;
  if (!frozen()) {
    s.thawed_by = thawed_by_;
    co_return R{std::move(s)};  // nothing to do
  }
  auto held = guard_->disarm();
  if (held.empty()) {
    // The guard thawed them at the lease's end a moment ago; its report is on its way.
    s.thawed_by = "lease";
    co_return R{std::move(s)};
  }
  busy_ = true;
  s.mounts = thaw_guard::thaw_all(held);
  const auto n = frozen_.size();
  frozen_.clear();
  thawed_by_ = by;
  forget_record();
  common::logger::instance().hold(false);
  common::log_info("thawed {} filesystems (by {})", n, by);
  for (auto& e : co_await run_hooks("thaw")) s.hook_errors.push_back(std::move(e));
  busy_ = false;
  s.thawed_by = thawed_by_;
  co_return R{std::move(s)};
}

asio::awaitable<void> freezer::after_guard_thawed(std::vector<mount_outcome> outcomes) {
  if (!frozen() || guard_->armed()) co_return;  // a thaw by the host got there first
  const auto n = frozen_.size();
  frozen_.clear();
  thawed_by_ = "lease";
  forget_record();
  common::logger::instance().hold(false);
  common::log_warning("freeze lease expired without renewal: thawed {} filesystems", n);
  for (const auto& o : outcomes) {
    if (!o.ok) common::log_warning("thaw {}: {}", o.mount_point, o.error);
  }
  busy_ = true;
  for (const auto& e : co_await run_hooks("thaw")) common::log_warning("{}", e);
  busy_ = false;
}

asio::awaitable<void> freezer::recover() {
  auto text = read_trusted_file(opt_.state_file, 1u << 20);
  if (!text) {
    if (text.code() != std::errc::no_such_file_or_directory) {
      common::log_warning("cannot read the freeze record: {}", text.error().message);
    }
    co_return;
  }
  std::vector<std::string> mounts;
  common::for_each_line(*text, [&](std::string_view line) {
    if (!line.empty()) mounts.emplace_back(line);
  });
  common::log_warning("an earlier agent left {} filesystems frozen: thawing them first",
                      mounts.size());
  for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) {
    unique_fd fd(::open(it->c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    const auto o = thaw_outcome(*it, fd ? fithaw(fd.get()) : errno);
    common::log_info("thaw {}: {}", o.mount_point, o.ok ? "ok" : o.error);
  }
  forget_record();
  thawed_by_ = "restart";
  for (const auto& e : co_await run_hooks("thaw")) common::log_warning("{}", e);
}

}  // namespace qxa::guest
