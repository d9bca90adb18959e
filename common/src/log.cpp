// SPDX-License-Identifier: MIT
#include "qxa/common/log.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <mutex>

#include "qxa/common/posix.hpp"
#include "qxa/common/text.hpp"

namespace qxa::common {
namespace {

std::mutex& output_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

std::optional<log_level> parse_log_level(std::string_view text) noexcept {
  if (text == "trace") return log_level::trace;
  if (text == "debug") return log_level::debug;
  if (text == "info") return log_level::info;
  if (text == "warning" || text == "warn") return log_level::warning;
  if (text == "error") return log_level::error;
  if (text == "critical") return log_level::critical;
  if (text == "off") return log_level::off;
  return std::nullopt;
}

std::string_view to_string(log_level level) noexcept {
  switch (level) {
    case log_level::trace:
      return "trace";
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warning:
      return "warning";
    case log_level::error:
      return "error";
    case log_level::critical:
      return "critical";
    case log_level::off:
      return "off";
  }
  return "?";
}

int syslog_priority(log_level level) noexcept {
  switch (level) {
    case log_level::critical:
      return 2;
    case log_level::error:
      return 3;
    case log_level::warning:
      return 4;
    case log_level::info:
      return 6;
    default:
      return 7;
  }
}

logger::logger() {
  const char* js = std::getenv("JOURNAL_STREAM");
  journal_ = js != nullptr && *js != '\0';
}

logger& logger::instance() {
  static logger l;
  return l;
}

void logger::set_sink(sink_fn sink) {
  std::lock_guard lock(output_mutex());
  sink_ = std::move(sink);
}

void logger::write(log_level level, std::string_view message) {
  fmt::memory_buffer line;
  if (journal_) {
    fmt::format_to(std::back_inserter(line), "<{}>", syslog_priority(level));
  } else {
    const auto now = std::chrono::system_clock::now();
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    ::gmtime_r(&secs, &tm);
    fmt::format_to(std::back_inserter(line), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {:<7} ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ms % 1000, to_string(level));
  }
  // One event, one line: a newline or a terminal escape in a logged value (a path, a name from
  // a guest) is shown escaped, so that it can neither forge a line nor reach a terminal raw.
  const std::string shown = printable(message);
  line.append(shown);
  line.push_back('\n');
  std::lock_guard lock(output_mutex());
  if (held_) {
    if (held_lines_.size() < max_held_lines) {
      held_lines_.emplace_back(line.data(), line.size());
      held_levels_.push_back(level);
    } else {
      ++dropped_while_held_;
    }
    return;
  }
  emit(level, std::string_view(line.data(), line.size()));
}

void logger::emit(log_level level, std::string_view line) {
  if (sink_) {
    sink_(level, line);
  } else {
    (void)write_all(STDERR_FILENO, line);  // nowhere left to report a logging failure
  }
}

void logger::hold(bool on) {
  std::lock_guard lock(output_mutex());
  if (on == held_) return;
  held_ = on;
  if (on) return;
  for (std::size_t i = 0; i < held_lines_.size(); ++i) emit(held_levels_[i], held_lines_[i]);
  if (dropped_while_held_ > 0) {
    const auto note = fmt::format("{}{} log lines dropped while output was held\n",
                                  journal_ ? "<4>" : "", dropped_while_held_);
    emit(log_level::warning, note);
  }
  held_lines_.clear();
  held_levels_.clear();
  dropped_while_held_ = 0;
}

}  // namespace qxa::common
