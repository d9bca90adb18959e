// SPDX-License-Identifier: MIT
#include "qxa/host/vm_state.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace qxa::host {

const char* to_string(pb::VmState state) noexcept {
  switch (state) {
    case pb::VM_STATE_ABSENT:
      return "absent";
    case pb::VM_STATE_CONNECTING:
      return "connecting";
    case pb::VM_STATE_HANDSHAKING:
      return "handshaking";
    case pb::VM_STATE_READY:
      return "ready";
    case pb::VM_STATE_UNRESPONSIVE:
      return "unresponsive";
    case pb::VM_STATE_STALE_SOCKET:
      return "stale-socket";
    default:
      return "unknown";
  }
}

std::string state_change::text(std::string_view vm) const {
  if (why.empty()) return fmt::format("vm {}: {} -> {}", vm, to_string(from), to_string(to));
  return fmt::format("vm {}: {} -> {} ({})", vm, to_string(from), to_string(to), why);
}

namespace {

// A connection that lasted this long was healthy: the reconnect backoff starts over after it.
constexpr auto stable_connection = std::chrono::seconds(10);

void add_counters(client_stats& into, const client_stats& c) {
  into.timeouts += c.timeouts;
  into.bad_frames += c.bad_frames;
  into.unknown_replies += c.unknown_replies;
  into.sessions += c.sessions;
  into.trimmed += c.trimmed;
}

}  // namespace

vm_state::vm_state(std::string name, std::string socket_path, backoff_options backoff)
    : backoff_opt_(backoff), backoff_(backoff.initial) {
  status_.set_vm(std::move(name));
  status_.set_socket_path(std::move(socket_path));
}

pb::VmStatus vm_state::status(const client_stats& current) const {
  pb::VmStatus s = status_;
  client_stats c = prior_;
  add_counters(c, current);
  s.set_timeouts(c.timeouts);
  s.set_bad_frames(c.bad_frames);
  s.set_unknown_replies(c.unknown_replies);
  s.set_sessions(c.sessions);
  s.set_guest_data_trimmed(c.trimmed);
  return s;
}

vm_metrics vm_state::metrics(const client_stats& current) const {
  vm_metrics m = figures_;
  m.status = status(current);
  return m;
}

vm_state::change vm_state::set(pb::VmState to, std::int64_t now_ms, std::string why, bool quiet) {
  const auto from = status_.state();
  if (from == to) return std::nullopt;  // logged once per change, not per heartbeat
  status_.set_state(to);
  status_.set_state_since_unix_ms(now_ms);
  if (to == pb::VM_STATE_READY) {
    status_.set_not_ready_since_unix_ms(0);
    status_.set_last_seen_unix_ms(now_ms);
  } else if (status_.not_ready_since_unix_ms() == 0) {
    status_.set_not_ready_since_unix_ms(now_ms);
  }
  if (from == pb::VM_STATE_UNSPECIFIED) return std::nullopt;  // discovery is logged as such
  return state_change{from, to, std::move(why), quiet};
}

vm_state::change vm_state::discovered(std::int64_t now_ms) {
  return set(pb::VM_STATE_CONNECTING, now_ms);
}

vm_state::change vm_state::over_capacity(std::uint64_t limit, std::int64_t now_ms) {
  status_.set_over_capacity(true);
  status_.set_last_error(fmt::format("over capacity: descriptor limit {}", limit));
  return set(pb::VM_STATE_CONNECTING, now_ms, status_.last_error(), true);
}

void vm_state::attempt_started() {
  status_.set_over_capacity(false);
  if (attempts_++ > 0) status_.set_reconnects(status_.reconnects() + 1);
}

vm_state::change vm_state::accepted(std::int64_t now_ms) {
  // While attempts keep failing the same way, the state changes they make are logged once.
  return set(pb::VM_STATE_HANDSHAKING, now_ms, {}, !status_.last_error().empty());
}

vm_state::change vm_state::attempt_failed(std::error_code ec, bool refused, std::int64_t now_ms) {
  // A socket file nobody listens on: the QEMU that made it is gone. Reported as such and
  // retried at the backoff (a new QEMU replaces the file, which wakes the loop at once).
  std::string why = refused
                        ? "connection refused: nothing listens on the socket (its QEMU has exited?)"
                        : ec.message();
  const bool same = why == status_.last_error();
  status_.set_last_error(why);
  return set(refused ? pb::VM_STATE_STALE_SOCKET : pb::VM_STATE_CONNECTING, now_ms, std::move(why),
             same);
}

vm_state::change vm_state::connected(const pb::HelloAck& hello, std::uint64_t session_id,
                                     std::int64_t now_ms) {
  status_.set_agent_version(hello.software_version());
  *status_.mutable_os() = hello.os();
  status_.set_hostname(hello.hostname());
  status_.set_session_id(session_id);
  status_.set_agent_pid(hello.agent_pid());
  status_.set_last_error("");
  return set(pb::VM_STATE_READY, now_ms);
}

vm_state::change vm_state::connection_ended(const std::string& reason,
                                            std::chrono::nanoseconds lasted, std::int64_t now_ms,
                                            bool& wait_first) {
  status_.set_last_error(reason);
  status_.set_rtt_ms(0);  // the last round trip is no longer current
  wait_first = lasted < stable_connection;
  if (!wait_first) backoff_ = backoff_opt_.initial;  // healthy: retried now, from the start
  return set(pb::VM_STATE_CONNECTING, now_ms, "connection lost: " + reason);
}

vm_state::change vm_state::internal_error(std::int64_t now_ms) {
  status_.set_last_error("internal error in the daemon (logged); starting over");
  return set(pb::VM_STATE_CONNECTING, now_ms, "internal error (logged)");
}

vm_state::change vm_state::removed(std::int64_t now_ms) { return set(pb::VM_STATE_ABSENT, now_ms); }

std::chrono::nanoseconds vm_state::next_backoff() {
  const auto now = std::min(backoff_, backoff_opt_.max);
  backoff_ = std::min(now * 2, backoff_opt_.max);
  return now;
}

vm_state::change vm_state::heartbeat_answered(std::chrono::nanoseconds rtt, std::int64_t now_ms) {
  const double ms = std::chrono::duration<double, std::milli>(rtt).count();
  status_.set_rtt_ms(ms);
  status_.set_last_seen_unix_ms(now_ms);
  const double seconds = ms / 1000.0;
  const auto bucket = std::lower_bound(rtt_buckets.begin(), rtt_buckets.end(), seconds);
  if (bucket != rtt_buckets.end()) ++figures_.rtt_bucket_counts[bucket - rtt_buckets.begin()];
  ++figures_.rtt_count;
  figures_.rtt_sum_seconds += seconds;
  return set(pb::VM_STATE_READY, now_ms,
             status_.state() == pb::VM_STATE_UNRESPONSIVE ? "heartbeat answered again" : "");
}

vm_state::change vm_state::heartbeat_missed(std::chrono::nanoseconds timeout, std::int64_t now_ms) {
  return set(pb::VM_STATE_UNRESPONSIVE, now_ms,
             fmt::format("no heartbeat reply within {} ms",
                         std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
}

vm_state::change vm_state::agent_restarted(std::int64_t now_ms) {
  return set(pb::VM_STATE_HANDSHAKING, now_ms, "the agent restarted");
}

vm_state::change vm_state::new_session(const pb::HelloAck& hello, std::uint64_t session_id,
                                       std::int64_t now_ms) {
  status_.set_session_id(session_id);
  status_.set_agent_pid(hello.agent_pid());
  status_.set_agent_version(hello.software_version());
  return set(pb::VM_STATE_READY, now_ms, "new session with the restarted agent");
}

void vm_state::telemetry(const pb::Telemetry& t, std::int64_t now_ms) {
  *status_.mutable_last_telemetry() = t;
  status_.set_last_telemetry_unix_ms(now_ms);
  if (!t.hostname().empty()) status_.set_hostname(t.hostname());
  set_ip_addresses(status_, t);
}

void vm_state::clock_set(bool ok) {
  if (ok) {
    status_.set_clock_corrections(status_.clock_corrections() + 1);
  } else {
    status_.set_clock_correction_failures(status_.clock_correction_failures() + 1);
  }
}

void vm_state::request_done(const std::string& operation, const std::string& outcome) {
  ++figures_.requests[{operation, outcome}];
}

void vm_state::retire(const client_stats& finished) { add_counters(prior_, finished); }

void set_ip_addresses(pb::VmStatus& status, const pb::Telemetry& t) {
  status.clear_ip_addresses();
  for (const bool primary : {true, false}) {
    for (const auto& i : t.interfaces()) {
      for (const auto& a : i.addresses()) {
        if ((a.address() == t.primary_address()) != primary) continue;
        status.add_ip_addresses(fmt::format("{}/{}", a.address(), a.prefix_length()));
      }
    }
  }
}

}  // namespace qxa::host
