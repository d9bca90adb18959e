// SPDX-License-Identifier: MIT
// Filesystem freeze as a lease. freeze() runs the hook scripts ("freeze"), then FIFREEZEs the
// chosen mounts in reverse mount order (children before their parents), one per filesystem,
// skipping what cannot be frozen. Every freeze carries a lease: unless renewed, the agent
// thaws by itself when it expires, so a host that vanishes mid-snapshot cannot leave the guest
// frozen. While frozen the agent's log output is held in memory. thaw() FITHAWs in the
// opposite order and then runs the hooks ("thaw"). What was frozen is recorded in a file under
// /run (a tmpfs, never frozen), so that a restarted agent thaws a freeze it made first.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/common/error.hpp"
#include "qxa/guest/system_info.hpp"

namespace qxa::guest {

namespace pb = ::quantix::agent::v1;
using namespace std::chrono_literals;

struct freeze_options {
  std::string hooks_dir = "/etc/quantix-kvm/freeze-hook.d";
  std::chrono::nanoseconds hook_timeout = 30s;
  std::chrono::nanoseconds default_lease = 60s;
  std::chrono::nanoseconds max_lease = 10min;
  std::string state_file = "/run/quantix-kvm/agent-frozen";
  std::string mountinfo = "/proc/self/mountinfo";
};

/// The mount points to freeze, in freezing order: real, writable filesystems (one mount each),
/// restricted to `wanted` when it is not empty, deepest first. An entry of `wanted` that is not
/// a freezable mount is an error.
common::result<std::vector<std::string>> freeze_order(const std::vector<mount_entry>& mounts,
                                                      const std::vector<std::string>& wanted);

class freezer {
 public:
  freezer(const asio::any_io_executor& ex, freeze_options options);

  [[nodiscard]] bool frozen() const noexcept { return !frozen_.empty(); }
  [[nodiscard]] const freeze_options& options() const noexcept { return opt_; }

  /// Freezes (or, when already frozen, renews the lease). A mount that fails to freeze for a
  /// reason other than "not supported" thaws everything again and fails the request.
  asio::awaitable<common::result<pb::FreezeStatus>> freeze(std::vector<std::string> mount_points,
                                                           std::chrono::nanoseconds lease);
  /// Thaws everything this agent froze; `by` is "host", "lease" or "restart".
  asio::awaitable<common::result<pb::FreezeStatus>> thaw(std::string by);
  [[nodiscard]] pb::FreezeStatus status() const;
  /// At start-up: thaws the mounts a previous agent recorded as frozen by it.
  asio::awaitable<void> recover();

 private:
  asio::awaitable<std::vector<std::string>> run_hooks(const char* phase);
  void arm_lease(std::chrono::nanoseconds lease);
  void record(const std::vector<std::string>& mounts) const;
  std::vector<pb::MountOutcome> thaw_mounts(const std::vector<std::string>& mounts);

  asio::any_io_executor ex_;
  freeze_options opt_;
  std::vector<std::string> frozen_;  ///< in freezing order
  asio::steady_timer lease_;
  std::int64_t lease_expires_unix_ms_ = 0;
  std::uint64_t generation_ = 0;  ///< bumps on every freeze and thaw; stale lease timers see it
  std::string thawed_by_;
  bool busy_ = false;  ///< a freeze or thaw is under way
};

}  // namespace qxa::guest
