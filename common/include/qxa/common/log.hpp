// SPDX-License-Identifier: MIT
#pragma once

#include <fmt/format.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qxa::common {

enum class log_level { trace = 0, debug, info, warning, error, critical, off };

/// "trace", "debug", "info", "warning" (or "warn"), "error", "critical", "off".
std::optional<log_level> parse_log_level(std::string_view text) noexcept;
std::string_view to_string(log_level level) noexcept;

/// The process-wide logger. Lines go to standard error, one write() per line. When
/// JOURNAL_STREAM is set (the process runs under systemd with its stderr connected to the
/// journal) each line starts with its syslog priority, "<3>", and carries no timestamp of its
/// own since the journal adds one. Thread-safe.
class logger {
 public:
  using sink_fn = std::function<void(log_level, std::string_view)>;

  static logger& instance();

  void set_level(log_level level) noexcept { level_ = level; }
  [[nodiscard]] log_level level() const noexcept { return level_; }
  [[nodiscard]] bool enabled(log_level level) const noexcept {
    return level >= level_ && level_ != log_level::off;
  }
  /// Replaces the output (tests); an empty function restores standard error.
  void set_sink(sink_fn sink);
  /// Forces or disables the journal prefix; by default it follows JOURNAL_STREAM.
  void set_journal_prefix(bool on) noexcept { journal_ = on; }
  /// Whether lines carry the journal's priority prefix (standard error is the journal).
  [[nodiscard]] bool journal_prefix() const noexcept { return journal_; }

  void write(log_level level, std::string_view message);

  /// While held, lines are kept in memory (up to a bound, then counted) instead of written:
  /// with the guest's filesystems frozen, a write to a journal or a log file could block the
  /// agent. Releasing writes them out in order.
  void hold(bool on);

 private:
  static constexpr std::size_t max_held_lines = 2000;
  logger();
  void emit(log_level level, std::string_view line);
  bool held_ = false;
  std::vector<std::string> held_lines_;
  std::vector<log_level> held_levels_;
  std::size_t dropped_while_held_ = 0;
  log_level level_ = log_level::info;
  bool journal_ = false;
  sink_fn sink_;
};

/// "<N>" syslog priority for a level: error 3, warning 4, info 6, debug/trace 7, critical 2.
int syslog_priority(log_level level) noexcept;

template <typename... Args>
void log(log_level level, fmt::format_string<Args...> format, Args&&... args) {
  auto& l = logger::instance();
  if (!l.enabled(level)) return;
  l.write(level, fmt::vformat(format, fmt::make_format_args(args...)));
}

template <typename... Args>
void log_trace(fmt::format_string<Args...> f, Args&&... a) {
  log(log_level::trace, f, std::forward<Args>(a)...);
}
template <typename... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... a) {
  log(log_level::debug, f, std::forward<Args>(a)...);
}
template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... a) {
  log(log_level::info, f, std::forward<Args>(a)...);
}
template <typename... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... a) {
  log(log_level::warning, f, std::forward<Args>(a)...);
}
template <typename... Args>
void log_error(fmt::format_string<Args...> f, Args&&... a) {
  log(log_level::error, f, std::forward<Args>(a)...);
}

}  // namespace qxa::common
