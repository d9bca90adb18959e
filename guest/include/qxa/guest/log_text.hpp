// SPDX-License-Identifier: MIT
// Log texts that are a contract: operators grep the journal for them and the tests wait on them.
// The agent writes them from here, and the tests read them from here.
#pragma once

#include <string>
#include <string_view>

namespace qxa::guest::log_text {

/// A request that came before any Hello (refused with NO_SESSION).
inline constexpr std::string_view before_hello = "received before any Hello";
/// A request stamped with an earlier session (refused with STALE_SESSION).
inline constexpr std::string_view stale_request = "refused stale request";
/// An audit line's outcome for an operation the local policy refused.
inline constexpr std::string_view audit_refused = "outcome=refused";
/// The start of the warning for a failed telemetry write: "telemetry write failed (N/LIMIT)".
inline std::string telemetry_write_failed(unsigned n, unsigned limit) {
  return "telemetry write failed (" + std::to_string(n) + "/" + std::to_string(limit) + ")";
}

}  // namespace qxa::guest::log_text
