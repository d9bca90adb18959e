// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <cstdint>

namespace qxa::common {

/// Milliseconds since the Unix epoch of a wall-clock time, now by default: the unit of every
/// `*_unix_ms` field on the wire and in the state files.
inline std::int64_t unix_ms(
    std::chrono::system_clock::time_point t = std::chrono::system_clock::now()) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

/// The same in nanoseconds (`*_unix_ns` fields).
inline std::int64_t unix_ns(
    std::chrono::system_clock::time_point t = std::chrono::system_clock::now()) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace qxa::common
