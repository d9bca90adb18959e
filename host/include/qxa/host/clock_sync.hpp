// SPDX-License-Identifier: MIT
// clock_sync: when qx-agentd sets a guest's clock. Without I/O: the VM's heartbeat feeds it each
// answered ping and does what it decides.
//
// A guest that was paused (a suspend and resume, a snapshot, the stop-and-copy of a migration)
// comes back with its wall clock behind by the time it did not run: its clocks stood still with
// it. Its own NTP, if it runs one, corrects that slowly or not at all. qx-agentd sees it as the
// difference between the time in the guest's Pong and its own, taken at the middle of the round
// trip; past `max_offset` it sets the guest's clock to its own. That covers a VM resumed under
// the same connection and one that arrives by migration on a new connection alike.
//
// It never fights a guest: one correction per `min_interval` at most, whatever its outcome (a
// policy that refuses `time`, an NTP daemon that keeps another time), and an observation whose
// round trip is longer than `max_offset` says too little to act on.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

namespace qxa::host {

struct clock_sync_options {
  bool enabled = true;
  std::chrono::nanoseconds max_offset = std::chrono::seconds(2);
  std::chrono::nanoseconds min_interval = std::chrono::seconds(60);
};

/// The host's clock, in ns since the epoch, half way through a round trip of `rtt` sent at
/// `sent_at`: about when the guest read its clock to answer.
std::int64_t midpoint_unix_ns(std::chrono::system_clock::time_point sent_at,
                              std::chrono::nanoseconds rtt) noexcept;

/// The guest's clock (`guest_unix_ns`, read to answer that round trip) minus the host's, in ms.
double clock_offset_ms(std::int64_t guest_unix_ns, std::chrono::system_clock::time_point sent_at,
                       std::chrono::nanoseconds rtt) noexcept;

class clock_sync {
 public:
  using steady = std::chrono::steady_clock;

  explicit clock_sync(clock_sync_options options = {}) : opt_(options) {}
  void set_options(const clock_sync_options& options) { opt_ = options; }

  /// An answered heartbeat: the guest's clock read `guest_unix_ns` while the daemon's read
  /// `host_unix_ns` (the middle of a round trip of `rtt`), at `now`. Returns the time to set
  /// the guest's clock to, as an offset to add to the daemon's clock when the request is sent
  /// (half the round trip: the time it takes to arrive), or nothing.
  std::optional<std::chrono::nanoseconds> observe(std::int64_t guest_unix_ns,
                                                  std::int64_t host_unix_ns,
                                                  std::chrono::nanoseconds rtt,
                                                  steady::time_point now);

  /// The guest's clock minus the daemon's at the last observation (0 before one, or when the
  /// guest does not say).
  [[nodiscard]] std::chrono::nanoseconds offset() const noexcept { return offset_; }

 private:
  clock_sync_options opt_;
  std::chrono::nanoseconds offset_{0};
  std::optional<steady::time_point> last_attempt_;
};

}  // namespace qxa::host
