// SPDX-License-Identifier: MIT
// vm_state: the life of one VM as qx-agentd tells it, without I/O. The manager's coroutines
// (connect, handshake, heartbeat, events) report what happened; this class decides the VM's
// state and what status says of it (since when it is not ready, when it was last seen, its
// counters, its heartbeat figures), which changes are worth a log line, and how long to wait
// before the next attempt. Unit-tested without sockets or timers: every moment is an argument.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <system_error>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/host/agent_client.hpp"

namespace qxa::host {

const char* to_string(pb::VmState state) noexcept;

/// Bucket upper bounds of the heartbeat round-trip histogram, in seconds.
inline constexpr std::array<double, 12> rtt_buckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0};

/// What the metrics endpoint shows of one VM.
struct vm_metrics {
  pb::VmStatus status;  ///< state, counters, last telemetry
  std::array<std::uint64_t, rtt_buckets.size()> rtt_bucket_counts{};  ///< not cumulative
  std::uint64_t rtt_count = 0;
  double rtt_sum_seconds = 0;
  /// Requests forwarded to the VM by operation (body name) and outcome.
  std::map<std::pair<std::string, std::string>, std::uint64_t> requests;
};

/// The daemon's descriptor budget for VM connections, for status and the metrics endpoint.
struct capacity_figures {
  std::uint64_t descriptor_limit = 0;
  std::uint64_t max_vm_connections = 0;
  std::uint64_t vm_connections = 0;
  std::uint64_t vms_over_capacity = 0;
};

/// A change of state, for the log: "vm NAME: FROM -> TO (WHY)". A quiet one (the same failure
/// again, while retrying) is logged at debug level.
struct state_change {
  pb::VmState from = pb::VM_STATE_UNSPECIFIED;
  pb::VmState to = pb::VM_STATE_UNSPECIFIED;
  std::string why;
  bool quiet = false;
  [[nodiscard]] std::string text(std::string_view vm) const;
};

struct backoff_options {
  std::chrono::nanoseconds initial = std::chrono::milliseconds(100);
  std::chrono::nanoseconds max = std::chrono::seconds(30);
};

class vm_state {
 public:
  using change = std::optional<state_change>;

  vm_state(std::string name, std::string socket_path, backoff_options backoff = {});
  void set_backoff(const backoff_options& b) { backoff_opt_ = b; }

  /// The status as it stands, with the counters of the current connection's client added.
  [[nodiscard]] pb::VmStatus status(const client_stats& current = {}) const;
  /// The figures for the metrics endpoint, status included.
  [[nodiscard]] vm_metrics metrics(const client_stats& current = {}) const;
  [[nodiscard]] pb::VmState state() const noexcept { return status_.state(); }
  [[nodiscard]] const std::string& last_error() const noexcept { return status_.last_error(); }

  // ---- the connection loop ----
  /// The socket appeared: connecting.
  change discovered(std::int64_t now_ms);
  /// No descriptor is free for another VM connection (`limit`: the daemon's descriptor limit):
  /// connecting, over capacity, until attempt_started(). Quiet: the manager says it once for
  /// all the VMs that wait.
  change over_capacity(std::uint64_t limit, std::int64_t now_ms);
  /// An attempt starts; every one after the VM's first counts as a reconnect.
  void attempt_started();
  /// The socket accepted the connection: handshaking (quietly while the same failure repeats).
  change accepted(std::int64_t now_ms);
  /// A connect or handshake failed: stale-socket when it was `refused` (nobody listens),
  /// connecting otherwise; logged once while it keeps failing the same way. Wait
  /// next_backoff() before the next try.
  change attempt_failed(std::error_code ec, bool refused, std::int64_t now_ms);
  /// The handshake completed: ready, with what the agent said of itself.
  change connected(const pb::HelloAck& hello, std::uint64_t session_id, std::int64_t now_ms);
  /// The connection ended after lasting `lasted`: connecting, its RTT no longer current. Returns
  /// whether to wait next_backoff() first: a connection that ended soon after it began (a guest
  /// that breaks the protocol, say, and gets closed for it) is not retried at once.
  change connection_ended(const std::string& reason, std::chrono::nanoseconds lasted,
                          std::int64_t now_ms, bool& wait_first);
  /// The loop failed on a bug of the daemon (logged where it happened): connecting again.
  change internal_error(std::int64_t now_ms);
  /// The socket file is gone: absent.
  change removed(std::int64_t now_ms);
  /// How long to wait before the next attempt (before jitter); each call doubles the next, up
  /// to the maximum.
  std::chrono::nanoseconds next_backoff();

  // ---- a connection that is up ----
  change heartbeat_answered(std::chrono::nanoseconds rtt, std::int64_t now_ms);
  change heartbeat_missed(std::chrono::nanoseconds timeout, std::int64_t now_ms);
  /// The agent announced a restart (AgentReady): handshaking again.
  change agent_restarted(std::int64_t now_ms);
  /// The client's new handshake with the restarted agent completed.
  change new_session(const pb::HelloAck& hello, std::uint64_t session_id, std::int64_t now_ms);
  void telemetry(const pb::Telemetry& t, std::int64_t now_ms);
  void clock_observed(double offset_ms) { status_.set_clock_offset_ms(offset_ms); }
  void clock_set(bool ok);
  /// A request forwarded to the VM ended with `outcome` (for the metrics).
  void request_done(const std::string& operation, const std::string& outcome);
  /// Folds a finished connection's counters into the VM's totals.
  void retire(const client_stats& finished);

 private:
  change set(pb::VmState to, std::int64_t now_ms, std::string why = {}, bool quiet = false);

  pb::VmStatus status_;
  vm_metrics figures_;  ///< histogram and request counters; its status is filled on demand
  client_stats prior_;  ///< counters of earlier connections
  std::uint64_t attempts_ = 0;
  backoff_options backoff_opt_;
  std::chrono::nanoseconds backoff_;
};

/// The addresses a VM's status shows, from its telemetry: "address/prefix", the guest's primary
/// address first (what a status table shows when it has room for one).
void set_ip_addresses(pb::VmStatus& status, const pb::Telemetry& t);

}  // namespace qxa::host
