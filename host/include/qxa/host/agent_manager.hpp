// SPDX-License-Identifier: MIT
// agent_manager: every VM whose agent socket sits in one directory.
//
// It watches the directory (inotify, plus a periodic rescan in case events were lost) for
// `<vm>.agent.sock`, keeps one agent_client per VM, reconnects with capped exponential backoff
// and jitter, and sends a heartbeat ping on an interval to tell `ready` from `unresponsive`
// (the socket staying open proves nothing: QEMU owns it). A VM whose socket disappears is
// dropped.
//
// Threading: single-threaded; all members run on the manager's executor, so no lock exists and
// none can be held across I/O.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/common/async.hpp"
#include "qxa/host/agent_client.hpp"
#include "qxa/host/clock_sync.hpp"
#include "qxa/host/descriptor_budget.hpp"
#include "qxa/host/vm_state.hpp"

namespace qxa::host {

struct manager_options {
  std::string socket_dir = "/run/quantix-kvm/vms";
  std::chrono::nanoseconds heartbeat_interval = std::chrono::seconds(5);
  std::chrono::nanoseconds heartbeat_timeout = std::chrono::seconds(3);
  std::chrono::nanoseconds reconnect_initial = std::chrono::milliseconds(100);
  std::chrono::nanoseconds reconnect_max = std::chrono::seconds(30);
  std::chrono::nanoseconds rescan_interval = std::chrono::seconds(10);
  clock_sync_options clock;
  client_options client;
  /// The descriptors the daemon may hold (0: its soft RLIMIT_NOFILE when created); the VM
  /// connections take all but descriptor_reserve() of them.
  std::uint64_t descriptor_limit = 0;
  /// Besides root and the daemon's own user, the users whose sockets are VMs' (QEMU's user
  /// under libvirt). A socket of anyone else is refused: it could pose as a VM.
  std::vector<std::string> socket_owners = {"libvirt-qemu"};
};

/// Why a socket file must not be taken for a VM's (not a socket, a link, made by a user who is
/// neither root, `self` nor one of `owners`), or nothing. Looked at with lstat: never followed.
std::optional<std::string> untrusted_socket(const std::string& path, uid_t self,
                                            const std::vector<uid_t>& owners);

/// Why qx-agentd must not use `dir` as its socket directory (others may write to it, so anyone
/// could put a socket there), or nothing.
std::optional<std::string> unsafe_socket_dir(const struct stat& dir);

/// Name of the VM whose socket file this is ("web1.agent.sock" -> "web1"), or empty.
std::string vm_name_of(std::string_view file_name);

/// A bounded feed of one VM's telemetry for one watcher; the oldest sample is dropped when the
/// watcher falls behind.
/// pop() gives the next sample, or nothing once the VM is gone.
using telemetry_feed = common::event_queue<pb::Telemetry>;
/// Samples a watcher may fall behind by.
inline constexpr std::size_t telemetry_feed_depth = 8;

class agent_manager : public std::enable_shared_from_this<agent_manager> {
 public:
  static std::shared_ptr<agent_manager> create(asio::any_io_executor ex, manager_options options);
  ~agent_manager();

  /// Starts watching. Fails when the socket directory cannot be watched.
  std::optional<common::error_info> start();
  /// Closes every connection and stops watching.
  void stop();
  /// Replaces the timing and clock options (SIGHUP); applies from each VM's next heartbeat or
  /// reconnect.
  void update_timing(const manager_options& options);

  /// A snapshot of one VM (`vm` non-empty) or of all.
  [[nodiscard]] pb::StatusReport status(const std::string& vm = {}) const;

  /// Forwards a request to a VM's agent. Fails with unavailable (no such VM, or its agent is not
  /// connected and ready), or as agent_client::request (connection_lost: lost while it ran).
  asio::awaitable<common::result<pb::Envelope>> call(const std::string& vm, pb::Envelope request,
                                                     call_options options = {});

  /// Every VM's figures for the metrics endpoint.
  [[nodiscard]] std::vector<vm_metrics> metrics() const;
  /// The descriptor budget of the VM connections: the limit, the connections allowed, held,
  /// and the VMs waiting for one.
  [[nodiscard]] capacity_figures capacity() const;

  /// Subscribes to a VM's pushed telemetry; nullptr for an unknown VM.
  std::shared_ptr<telemetry_feed> watch(const std::string& vm);

  [[nodiscard]] const manager_options& options() const noexcept { return opt_; }

 private:
  struct vm_record;

  agent_manager(asio::any_io_executor ex, manager_options options);
  asio::awaitable<void> watch_directory();
  asio::awaitable<void> rescan_loop();
  void rescan();
  void handle_events(const char* buf, std::size_t n);
  void socket_appeared(const std::string& file_name);
  void socket_vanished(const std::string& file_name);
  void drop_vm(const std::string& vm, const std::string& why);
  /// Logs a VM's change of state (at debug level when it is the same failure again), within
  /// the VM's log budget.
  static void log_change(vm_record& vm, const std::optional<state_change>& c);
  /// What each VM's log budget held back in a minute now over, a line per kind.
  void log_overdue_summaries();
  /// Starts a VM's connection loop. An exception that ends it is logged and contained: the VM
  /// starts over after the initial backoff, and no other VM notices.
  void spawn_vm_loop(const std::shared_ptr<vm_record>& vm);
  asio::awaitable<void> vm_loop(std::shared_ptr<vm_record> vm);
  asio::awaitable<void> heartbeat(std::shared_ptr<vm_record> vm, std::shared_ptr<agent_client> c);
  /// Feeds an answered heartbeat to the VM's clock_sync and sets the guest's clock when it
  /// says so.
  asio::awaitable<void> check_clock(std::shared_ptr<vm_record> vm, std::shared_ptr<agent_client> c,
                                    std::int64_t guest_unix_ns,
                                    std::chrono::system_clock::time_point sent_at,
                                    std::chrono::nanoseconds rtt);
  asio::awaitable<void> pump_events(std::shared_ptr<vm_record> vm, std::shared_ptr<agent_client> c);
  /// Folds a finished connection's counters into the VM's totals and drops the client.
  static void retire_client(vm_record& vm);
  /// Counts a VM waiting for a descriptor while it lives: the first VM to wait and the last to
  /// stop say so in the log, once for all of them.
  class waiting_for_descriptor {
   public:
    explicit waiting_for_descriptor(agent_manager& m);
    ~waiting_for_descriptor();
    waiting_for_descriptor(const waiting_for_descriptor&) = delete;
    waiting_for_descriptor& operator=(const waiting_for_descriptor&) = delete;

   private:
    agent_manager& m_;
  };

  asio::any_io_executor ex_;
  manager_options opt_;
  int inotify_fd_ = -1;
  std::unique_ptr<asio::posix::stream_descriptor> inotify_;
  asio::steady_timer rescan_timer_;
  std::map<std::string, std::shared_ptr<vm_record>> vms_;
  bool running_ = false;
  descriptor_budget budget_;
  std::uint64_t over_capacity_ = 0;  // VMs waiting for a descriptor
  std::vector<uid_t> socket_owner_uids_;
  /// Socket files refused (with the reason, logged once each), until they go.
  std::map<std::string, std::string> refused_sockets_;
};

}  // namespace qxa::host
