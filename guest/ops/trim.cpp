// SPDX-License-Identifier: MIT
// fstrim: FITRIM on the guest's writable disk filesystems, so that a thin-provisioned disk gives
// their free blocks back to the host.
//
// A trim can take minutes and the kernel cannot stop one half way, so it runs on a thread of its
// own (own_thread.hpp), one filesystem after the other. A cancelled request (or one past its
// deadline) lets the filesystem being trimmed finish and starts no other. One trim at a time:
// a second one is refused while the first, or its thread, still runs.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <memory>

#include "qxa/common/log.hpp"
#include "qxa/guest/mech/own_thread.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/system_info.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest::ops {

namespace {

using clock = std::chrono::steady_clock;
constexpr auto default_trim_timeout = std::chrono::minutes(10);

std::atomic<bool> trim_running{false};

// What the trimming thread and the request share.
struct trim_work final : thread_work {
  std::vector<mount_entry> mounts;
  std::uint64_t minimum_bytes = 0;
  clock::time_point deadline;
  std::vector<pb::TrimOutcome> outcomes;  // the thread's until it is done

  ~trim_work() override { trim_running = false; }
  void run() override;
};

pb::TrimOutcome trim_one(const mount_entry& m, std::uint64_t minimum_bytes) {
  pb::TrimOutcome o;
  o.set_mount_point(m.mount_point);
  const auto t0 = clock::now();
  unique_fd fd(::open(m.mount_point.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  int err = 0;
  fstrim_range range{0, ULLONG_MAX, minimum_bytes};
  if (!fd) {
    err = errno;
  } else if (::ioctl(fd.get(), FITRIM, &range) != 0) {
    err = errno;
  }
  o.set_duration_ms(static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t0).count()));
  if (err == 0) {
    o.set_ok(true);
    o.set_trimmed_bytes(range.len);  // the kernel writes back how much it discarded
  } else if (err == EOPNOTSUPP || err == ENOTTY) {
    o.set_skipped(true);
    o.set_error("not supported: the filesystem or its disk cannot discard");
  } else {
    o.set_error(std::strerror(err));
  }
  return o;
}

void trim_work::run() {
  for (const auto& m : mounts) {
    if (stop || clock::now() >= deadline) {
      pb::TrimOutcome o;
      o.set_mount_point(m.mount_point);
      o.set_error(stop ? "not trimmed: the request was cancelled"
                       : "not trimmed: the request's deadline passed");
      outcomes.push_back(std::move(o));
      continue;
    }
    outcomes.push_back(trim_one(m, minimum_bytes));
  }
}

}  // namespace

asio::awaitable<pb::Envelope> fstrim(request_context ctx, pb::Envelope request) {
  const auto& req = request.trim_request();
  auto text = read_file(ctx.state.options.freeze.mountinfo);
  if (!text) co_return error_reply(pb::ERROR_CODE_UNAVAILABLE, "cannot read the mount table");
  auto mounts = writable_disks(parse_mountinfo(*text),
                               {req.mount_points().begin(), req.mount_points().end()}, "trimmable");
  if (!mounts) co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, mounts.error().message);
  if (trim_running.exchange(true)) {
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, "a trim is already running");
  }
  auto work = std::make_shared<trim_work>();
  work->mounts = std::move(mounts.value());
  work->minimum_bytes = req.minimum_bytes();
  work->deadline =
      clock::now() +
      (req.timeout_ms() > 0
           ? std::chrono::milliseconds(req.timeout_ms())
           : std::chrono::duration_cast<std::chrono::milliseconds>(default_trim_timeout));
  if (auto ec = co_await run_on_own_thread(work)) {
    co_return system_error(ec.value(), "cannot start the trim");
  }

  pb::Envelope reply;
  std::uint64_t total = 0;
  std::size_t failed = 0;
  for (auto& o : work->outcomes) {
    total += o.trimmed_bytes();
    failed += o.ok() || o.skipped() ? 0 : 1;
    *reply.mutable_trim_reply()->add_mounts() = std::move(o);
  }
  common::log_info(
      "audit: op=fstrim session={:016x} request={} outcome={} filesystems={} "
      "trimmed_bytes={}",
      ctx.session_id, ctx.request_id, failed == 0 ? "ok" : "partial", work->mounts.size(), total);
  co_return reply;
}

}  // namespace qxa::guest::ops
