// SPDX-License-Identifier: MIT
#include <time.h>

#include <cerrno>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/guest/handlers.hpp"

namespace qxa::guest::handlers {

namespace {

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

// Reads the guest clock, or sets it from the host's UTC time (after a pause or a migration the
// guest's clock is behind, and it has no network to correct it).
asio::awaitable<pb::Envelope> time(request_context ctx, pb::Envelope request) {
  const auto& r = request.time_request();
  pb::Envelope reply;
  if (r.set()) {
    if (r.set_unix_ns() <= 0) {
      co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "set_unix_ns must be a positive time");
    }
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(r.set_unix_ns() / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(r.set_unix_ns() % 1'000'000'000);
    const std::int64_t before = realtime_ns();
    if (::clock_settime(CLOCK_REALTIME, &ts) != 0) {
      const int err = errno;
      common::log_warning("audit: op=time-set session={:016x} outcome=failed error={}",
                          ctx.session_id, std::strerror(err));
      co_return error_reply(
          err == EPERM ? pb::ERROR_CODE_PERMISSION_DENIED : pb::ERROR_CODE_INTERNAL,
          std::string("cannot set the clock: ") + std::strerror(err));
    }
    common::log_info("audit: op=time-set session={:016x} outcome=ok step_ms={:+.3f}",
                     ctx.session_id, static_cast<double>(r.set_unix_ns() - before) / 1e6);
    reply.mutable_time_reply()->set_was_set(true);
  }
  reply.mutable_time_reply()->set_unix_ns(realtime_ns());
  co_return reply;
}

}  // namespace qxa::guest::handlers
