// SPDX-License-Identifier: MIT
#include "qxa/common/duration.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <limits>

namespace qxa::common {

result<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  const std::string original(text);
  auto fail = [&](std::string why) -> result<std::chrono::nanoseconds> {
    return {errc::invalid_argument, fmt::format("invalid duration '{}': {}", original, why)};
  };
  if (text.empty()) return fail("empty");
  if (text == "0") return std::chrono::nanoseconds{0};

  long double total_ns = 0;
  while (!text.empty()) {
    std::size_t i = 0;
    bool seen_digit = false;
    bool seen_dot = false;
    while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) {
      if (text[i] == '.') {
        if (seen_dot) return fail("more than one '.' in a number");
        seen_dot = true;
      } else {
        seen_digit = true;
      }
      ++i;
    }
    if (i == 0) {
      if (text[0] == '-') return fail("negative durations are not allowed");
      return fail(fmt::format("expected a number at '{}'", text));
    }
    if (!seen_digit) return fail("a number needs digits");
    // from_chars, not stold: a number too large for any duration (5,000 digits, say) is an
    // error to report, not an exception that ends the program.
    long double number = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + i, number);
    if (ec == std::errc::result_out_of_range) return fail("out of range");
    if (ec != std::errc{} || end != text.data() + i) return fail("a number needs digits");
    text.remove_prefix(i);

    std::size_t u = 0;
    while (u < text.size() && text[u] >= 'a' && text[u] <= 'z') ++u;
    const std::string_view unit = text.substr(0, u);
    text.remove_prefix(u);
    long double scale = 0;
    if (unit.empty()) return fail("missing unit (use ns, us, ms, s, m or h)");
    if (unit == "ns")
      scale = 1;
    else if (unit == "us")
      scale = 1e3L;
    else if (unit == "ms")
      scale = 1e6L;
    else if (unit == "s")
      scale = 1e9L;
    else if (unit == "m")
      scale = 60e9L;
    else if (unit == "h")
      scale = 3600e9L;
    else
      return fail(fmt::format("unknown unit '{}' (use ns, us, ms, s, m or h)", unit));
    total_ns += number * scale;
    if (total_ns > static_cast<long double>(std::numeric_limits<std::int64_t>::max())) {
      return fail("out of range");
    }
  }
  return std::chrono::nanoseconds{static_cast<std::int64_t>(std::llround(total_ns))};
}

std::string format_duration(std::chrono::nanoseconds d) {
  using namespace std::chrono;
  auto ns = d.count();
  if (ns == 0) return "0s";
  std::string out;
  if (ns < 0) {
    out = "-";
    ns = -ns;
  }
  if (ns % 1'000'000'000 != 0) {
    if (ns % 1'000'000 == 0) return out + fmt::format("{}ms", ns / 1'000'000);
    if (ns % 1'000 == 0) return out + fmt::format("{}us", ns / 1'000);
    return out + fmt::format("{}ns", ns);
  }
  auto secs = ns / 1'000'000'000;
  const auto h = secs / 3600;
  const auto m = (secs % 3600) / 60;
  const auto s = secs % 60;
  if (h) out += fmt::format("{}h", h);
  if (m) out += fmt::format("{}m", m);
  if (s) out += fmt::format("{}s", s);
  return out;
}

}  // namespace qxa::common
