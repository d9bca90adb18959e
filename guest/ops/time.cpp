// SPDX-License-Identifier: MIT
// The guest's clock and time zone, and who is logged in.
#include <time.h>

#include <cerrno>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/clock.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest::ops {

namespace {

std::int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

// Reads the guest clock, or sets it from the host's UTC time (after a pause or a migration the
// guest's clock is behind, and it has no network to correct it), and the hardware clock with
// it, so that the next boot starts from the right time.
asio::awaitable<pb::Envelope> time(request_context ctx, pb::Envelope request) {
  const auto& r = request.time_request();
  pb::Envelope reply;
  auto* t = reply.mutable_time_reply();
  if (r.set()) {
    if (r.set_unix_ns() <= 0) {
      co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "set_unix_ns must be a positive time");
    }
    int err = 0;
    const auto change = set_clock(r.set_unix_ns(), r.slew(), err);
    if (!change) {
      common::log_warning("audit: op=time-set session={:016x} outcome=failed error={}",
                          ctx.session_id, std::strerror(err));
      co_return error_reply(
          err == EPERM ? pb::ERROR_CODE_PERMISSION_DENIED : pb::ERROR_CODE_INTERNAL,
          std::string("cannot set the clock: ") + std::strerror(err));
    }
    t->set_was_set(true);
    t->set_offset_ns(change->offset_ns);
    t->set_slewed(change->slewed);
    // The hardware clock gets the host's time, which a slewed clock reaches only later.
    const auto host_now_ns = realtime_ns() + (change->slewed ? -change->offset_ns : 0);
    const bool local = hardware_clock_is_local(read_file("/etc/adjtime").value_or(""));
    if (auto why = write_hardware_clock(ctx.state.options.rtc_device, host_now_ns / 1'000'000'000,
                                        local)) {
      t->set_rtc_error(*why);
    } else {
      t->set_rtc_written(true);
    }
    common::log_info("audit: op=time-set session={:016x} outcome=ok {}_ms={:+.3f} rtc={}",
                     ctx.session_id, change->slewed ? "slew" : "step",
                     static_cast<double>(-change->offset_ns) / 1e6,
                     t->rtc_written() ? "written" : common::log_value(t->rtc_error()));
  }
  const auto tz = read_timezone();
  t->set_timezone(tz.name);
  t->set_timezone_abbreviation(tz.abbreviation);
  t->set_utc_offset_seconds(tz.utc_offset_seconds);
  t->set_unix_ns(realtime_ns());
  co_return reply;
}

asio::awaitable<pb::Envelope> users(request_context ctx, pb::Envelope) {
  pb::Envelope reply;
  auto* u = reply.mutable_users_reply();
  for (auto& s : read_logins(ctx.state.options.utmp_path)) {
    auto* out = u->add_sessions();
    // utmp's fields are bytes a user's login program wrote: made UTF-8 for the reply.
    out->set_user(common::to_utf8(s.user));
    out->set_terminal(common::to_utf8(s.terminal));
    out->set_host(common::to_utf8(s.host));
    out->set_login_unix_ms(s.login_unix_ms);
    out->set_pid(s.pid);
  }
  co_return reply;
}

}  // namespace qxa::guest::ops
