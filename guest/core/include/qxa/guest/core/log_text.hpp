// SPDX-License-Identifier: MIT
// Log texts that are a contract: operators grep the journal for them and the tests wait on them.
// The agent writes them from here, and the tests read them from here.
#pragma once

#include <string>
#include <string_view>

namespace qxa::guest::log_text {

/// The agent is up and serving its port: "agent started on port ...".
inline constexpr std::string_view started = "agent started";
/// A host connection ended: "host connection ended: WHY; N frames in, ...".
inline constexpr std::string_view host_gone = "host connection ended";
/// A host opened a session: "session ID started by host VERSION (protocol N)".
inline constexpr std::string_view session_started = "started by host";
/// Why a request the host cancelled ended: "request ID (NAME) cancelled: the host cancelled it".
inline constexpr std::string_view host_cancelled = "the host cancelled it";
/// Uploads of an ended session thrown away: "N unfinished file uploads discarded".
inline constexpr std::string_view uploads_discarded = "unfinished file uploads discarded";
/// Another process holds the port: "port PATH: busy (another process has it open); retrying".
inline constexpr std::string_view port_busy = "busy (another process has it open); retrying";
/// A request that came before any Hello (refused with NO_SESSION).
inline constexpr std::string_view before_hello = "received before any Hello";
/// A request stamped with an earlier session (refused with STALE_SESSION).
inline constexpr std::string_view stale_request = "refused stale request";
/// An audit line's outcome for an operation the local policy refused.
inline constexpr std::string_view audit_refused = "outcome=refused";
/// Telemetry got through after failures: "telemetry delivered again after N consecutive failures".
inline std::string telemetry_recovered(unsigned failures) {
  return "telemetry delivered again after " + std::to_string(failures) + " consecutive failures";
}
/// The start of the warning for a failed telemetry write: "telemetry write failed (N/LIMIT)".
inline std::string telemetry_write_failed(unsigned n, unsigned limit) {
  return "telemetry write failed (" + std::to_string(n) + "/" + std::to_string(limit) + ")";
}

}  // namespace qxa::guest::log_text
