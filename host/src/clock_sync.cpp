// SPDX-License-Identifier: MIT
#include "qxa/host/clock_sync.hpp"

#include <limits>

namespace qxa::host {

namespace {

// a - b without overflow: a guest's clock is whatever the guest says (INT64_MIN included), and
// the difference saturates instead of wrapping round to the other sign.
std::int64_t difference(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t d = 0;
  if (!__builtin_sub_overflow(a, b, &d)) return d;
  return b < 0 ? std::numeric_limits<std::int64_t>::max()
               : std::numeric_limits<std::int64_t>::min();
}

}  // namespace

std::int64_t midpoint_unix_ns(std::chrono::system_clock::time_point sent_at,
                              std::chrono::nanoseconds rtt) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             (sent_at + std::chrono::duration_cast<std::chrono::system_clock::duration>(rtt / 2))
                 .time_since_epoch())
      .count();
}

double clock_offset_ms(std::int64_t guest_unix_ns, std::chrono::system_clock::time_point sent_at,
                       std::chrono::nanoseconds rtt) noexcept {
  return static_cast<double>(difference(guest_unix_ns, midpoint_unix_ns(sent_at, rtt))) / 1e6;
}

std::optional<std::chrono::nanoseconds> clock_sync::observe(std::int64_t guest_unix_ns,
                                                            std::int64_t host_unix_ns,
                                                            std::chrono::nanoseconds rtt,
                                                            steady::time_point now) {
  if (guest_unix_ns == 0) return std::nullopt;     // an agent that does not send its time
  if (rtt > opt_.max_offset) return std::nullopt;  // the offset is not known well enough
  offset_ = std::chrono::nanoseconds(difference(guest_unix_ns, host_unix_ns));
  if (!opt_.enabled) return std::nullopt;
  if (offset_ <= opt_.max_offset && offset_ >= -opt_.max_offset) return std::nullopt;
  if (last_attempt_ && now - *last_attempt_ < opt_.min_interval) return std::nullopt;
  last_attempt_ = now;
  return rtt / 2;
}

}  // namespace qxa::host
