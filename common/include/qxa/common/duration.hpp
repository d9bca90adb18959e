// SPDX-License-Identifier: MIT
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "qxa/common/error.hpp"

namespace qxa::common {

/// Parses a duration written as one or more number+unit pairs: "5s", "250ms", "2m", "1h30m",
/// "1.5s". Units: ns, us, ms, s, m, h. A bare "0" is accepted; any other number needs a unit.
/// Errors name what is wrong ("missing unit", "unknown unit 'x'", "out of range").
result<std::chrono::nanoseconds> parse_duration(std::string_view text);

/// Formats a duration in the largest unit that keeps it exact, in the syntax parse_duration
/// reads back: 5s, 250ms, 90s -> "1m30s".
std::string format_duration(std::chrono::nanoseconds d);

}  // namespace qxa::common
