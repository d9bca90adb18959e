// SPDX-License-Identifier: MIT
// Reading text files of the system (/proc, /sys, /etc/passwd, os-release, a helper's answer):
// lines, fields, trimmed words and numbers, with no allocation and no exception. One set, used
// by every reader in the project.
#pragma once

#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace qxa::common {

/// `s` without the spaces, tabs and newlines around it.
[[nodiscard]] constexpr std::string_view trim(std::string_view s) noexcept {
  constexpr std::string_view space = " \t\n\r";
  const auto first = s.find_first_not_of(space);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(space) - first + 1);
}

/// Splits off the next field separated by spaces or tabs (ending at a newline); empty at the end.
constexpr std::string_view next_field(std::string_view& s) noexcept {
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  std::size_t j = i;
  while (j < s.size() && s[j] != ' ' && s[j] != '\t' && s[j] != '\n') ++j;
  const auto field = s.substr(i, j - i);
  s.remove_prefix(j);
  return field;
}

/// The whole of `s` as a number (an integer type or double), or nothing: no sign, space or
/// trailing text is skipped, and a value out of range is nothing.
template <typename T>
[[nodiscard]] std::optional<T> to_number(std::string_view s, int base = 10) noexcept {
  T v{};
  const char* end = s.data() + s.size();
  std::from_chars_result r;
  if constexpr (std::is_floating_point_v<T>) {
    r = std::from_chars(s.data(), end, v);
  } else {
    r = std::from_chars(s.data(), end, v, base);
  }
  if (s.empty() || r.ec != std::errc{} || r.ptr != end) return std::nullopt;
  return v;
}

/// Calls `fn(line)` for each line of `text` (without its newline; a last line without one
/// counts, an empty text has none).
template <typename Fn>
void for_each_line(std::string_view text, Fn&& fn) {
  while (!text.empty()) {
    const auto nl = text.find('\n');
    fn(text.substr(0, nl));
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
}

/// `text` cut at every `sep` (n separators give n + 1 parts).
[[nodiscard]] inline std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  for (;;) {
    const auto at = text.find(sep);
    out.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return out;
    text.remove_prefix(at + 1);
  }
}

}  // namespace qxa::common
