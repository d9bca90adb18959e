// SPDX-License-Identifier: MIT
// Filesystem freeze as a lease. freeze() runs the hook scripts ("freeze"), then FIFREEZEs the
// chosen mounts in reverse mount order (children before their parents), one per filesystem,
// skipping what cannot be frozen (no support, or no permission). Every freeze carries a lease:
// unless renewed, the filesystems are thawed when it expires, so a host that vanishes
// mid-snapshot cannot leave the guest frozen; renewals never extend a freeze past
// freeze_options::max_frozen. While frozen the agent's log output is held in memory. thaw()
// FITHAWs in the opposite order and then runs the hooks ("thaw"). What was frozen is recorded in
// a file under /run (a tmpfs, never frozen), so that a restarted agent thaws a freeze it made
// first.
//
// The lease is kept by a thread of its own (thaw_guard), which holds a descriptor of each
// frozen filesystem and thaws them itself at the deadline: nothing that stalls the agent's event
// loop (a system call stuck on a dead server, a hung hook) can keep the guest frozen past it.
// Mounts of FUSE and network filesystems are never frozen: a process or a server answers for
// them, and one that is frozen itself (its writes blocked) might never answer.
//
// The hooks directory must be root's and writable by nobody else, and so must each hook, or it
// is not run (its error says why).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "qxa/common/error.hpp"
#include "qxa/guest/platform/system_info.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest {

struct freeze_options {
  std::string hooks_dir = "/etc/quantix-kvm/freeze-hook.d";
  std::chrono::nanoseconds hook_timeout = std::chrono::seconds(30);
  std::chrono::nanoseconds default_lease = std::chrono::seconds(60);
  std::chrono::nanoseconds max_lease = std::chrono::minutes(10);
  /// The longest a guest stays frozen however often the host renews.
  std::chrono::nanoseconds max_frozen = std::chrono::minutes(15);
  std::string state_file = "/run/quantix-kvm/agent-frozen";
  std::string mountinfo = "/proc/self/mountinfo";
};

/// What a freeze or a thaw did to one mount point.
struct mount_outcome {
  std::string mount_point = {};
  bool ok = false;
  std::string error = {};
};

/// What a freeze or a thaw request did, and where the freeze stands.
struct freeze_status {
  bool frozen = false;
  std::vector<mount_outcome> mounts = {};  ///< what this request did, per mount point
  std::int64_t lease_expires_unix_ms = 0;  ///< 0 when thawed
  std::vector<std::string> hook_errors = {};
  std::string thawed_by = {};  ///< "host", "lease", "restart" for the last thaw
};

/// The freeze as telemetry carries it (on the guest's monotonic clock).
struct freeze_state {
  bool frozen = false;
  std::uint64_t frozen_ms = 0;
  std::int64_t lease_remaining_ms = 0;  ///< negative past the lease's end
};

/// The mount points to freeze, in freezing order: real, writable filesystems (one mount each,
/// no FUSE or network filesystem), restricted to `wanted` when it is not empty, deepest first.
/// An entry of `wanted` that is not a freezable mount is an error.
common::result<std::vector<mount_entry>> freeze_order(const std::vector<mount_entry>& mounts,
                                                      const std::vector<std::string>& wanted);

/// Thaws a set of frozen filesystems at a deadline, from a thread of its own. Thread-safe.
class thaw_guard {
 public:
  using clock = std::chrono::steady_clock;
  struct frozen_mount {
    std::string mount_point;
    unique_fd fd;  ///< a directory of the filesystem: FITHAW needs no path lookup
  };
  /// `on_thawed` runs on the guard's thread after it thawed at the deadline, with what it did.
  explicit thaw_guard(std::function<void(std::vector<mount_outcome>)> on_thawed);
  ~thaw_guard();
  thaw_guard(const thaw_guard&) = delete;
  thaw_guard& operator=(const thaw_guard&) = delete;

  /// Starts guarding `mounts` (in freezing order) until `deadline`.
  void arm(std::vector<frozen_mount> mounts, clock::time_point deadline);
  /// Moves the deadline (a renewal).
  void extend(clock::time_point deadline);
  /// Takes the mounts back for a thaw by the caller; empty when the guard has thawed them.
  std::vector<frozen_mount> disarm();
  [[nodiscard]] bool armed() const;

  /// FITHAW on each, in the reverse of freezing order.
  static std::vector<mount_outcome> thaw_all(std::vector<frozen_mount>& mounts);

 private:
  void run();

  std::function<void(std::vector<mount_outcome>)> on_thawed_;
  mutable std::mutex m_;
  std::condition_variable changed_;
  std::vector<frozen_mount> mounts_;
  clock::time_point deadline_{};
  bool armed_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

class freezer {
 public:
  freezer(const asio::any_io_executor& ex, freeze_options options);
  ~freezer();
  freezer(const freezer&) = delete;
  freezer& operator=(const freezer&) = delete;

  [[nodiscard]] bool frozen() const noexcept { return !frozen_.empty(); }
  [[nodiscard]] const freeze_options& options() const noexcept { return opt_; }

  /// Freezes (or, when already frozen, renews the lease). A mount that fails to freeze for a
  /// reason other than "not supported" or "not permitted" thaws everything again and fails the
  /// request.
  asio::awaitable<common::result<freeze_status>> freeze(std::vector<std::string> mount_points,
                                                        std::chrono::nanoseconds lease);
  /// Thaws everything this agent froze; `by` is "host", "lease" or "restart".
  asio::awaitable<common::result<freeze_status>> thaw(std::string by);
  [[nodiscard]] freeze_status status() const;
  /// For telemetry: frozen for how long, and how long until the lease ends (empty when thawed).
  [[nodiscard]] freeze_state state() const;
  /// At start-up: thaws the mounts a previous agent recorded as frozen by it.
  asio::awaitable<void> recover();

 private:
  asio::awaitable<std::vector<std::string>> run_hooks(const char* phase);
  void record(const std::vector<std::string>& mounts) const;
  void forget_record() const;
  /// On the event loop, after the guard thawed at the lease's end.
  asio::awaitable<void> after_guard_thawed(std::vector<mount_outcome> outcomes);
  std::chrono::steady_clock::time_point lease_end(std::chrono::nanoseconds lease);

  asio::any_io_executor ex_;
  freeze_options opt_;
  std::vector<std::string> frozen_;  ///< in freezing order
  std::chrono::steady_clock::time_point frozen_since_{};
  std::chrono::steady_clock::time_point lease_end_{};
  std::int64_t lease_expires_unix_ms_ = 0;
  std::string thawed_by_;
  bool busy_ = false;  ///< a freeze or thaw is under way
  /// What the guard's reports check before they touch this freezer (posted, they may run late).
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  std::unique_ptr<thaw_guard> guard_;
};

}  // namespace qxa::guest
