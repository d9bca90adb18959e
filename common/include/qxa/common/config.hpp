// SPDX-License-Identifier: MIT
// Strict TOML configuration reading shared by the agent and the daemon: every key must be
// known, every value must have the right type and range, and every error names the file, the
// line and the key.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "qxa/common/error.hpp"
#include "qxa/common/log.hpp"

namespace toml::inline v3 {
class table;
}

namespace qxa::common {

class config_reader {
 public:
  /// Parses a file. Syntax errors come back as "PATH:LINE:COLUMN: what".
  static result<config_reader> from_file(const std::string& path);
  /// Parses text; `source` names it in messages.
  static result<config_reader> from_string(std::string_view text, std::string source);

  config_reader(config_reader&&) noexcept;
  config_reader& operator=(config_reader&&) noexcept;
  ~config_reader();

  // Each get() reads a dotted key ("telemetry.interval") when present and leaves `out` alone
  // when absent. A value of the wrong type or out of range is recorded as an error.
  void get(std::string_view key, std::string& out);
  void get(std::string_view key, bool& out);
  /// Set only when the key is present: a setting whose default depends on others.
  void get(std::string_view key, std::optional<bool>& out);
  void get(std::string_view key, std::int64_t& out, std::int64_t min, std::int64_t max);
  void get(std::string_view key, std::uint32_t& out, std::uint32_t min, std::uint32_t max);
  /// A duration string ("5s", "250ms"), at least `min`.
  void get_duration(std::string_view key, std::chrono::nanoseconds& out,
                    std::chrono::nanoseconds min = std::chrono::nanoseconds{1});
  /// A log level name ("info", "debug", ...).
  void get(std::string_view key, log_level& out);
  /// An array of strings.
  void get(std::string_view key, std::vector<std::string>& out);

  /// Whether the file sets `key` (a default that depends on whether it was chosen at all).
  [[nodiscard]] bool has(std::string_view key) const;

  /// Records an error about `key` found by the caller (a value valid in type but not in meaning).
  void fail(std::string_view key, std::string_view why);

  /// Call after every get(): reports the first problem, including any key never asked for
  /// ("unknown key"), as "PATH:LINE: ...". Empty when the file is valid.
  [[nodiscard]] std::optional<error_info> finish();

  [[nodiscard]] const std::string& source() const noexcept { return source_; }

 private:
  config_reader(std::unique_ptr<toml::table> table, std::string source);
  std::string where(std::string_view key) const;
  void add_error(std::string message);

  std::unique_ptr<toml::table> table_;
  std::string source_;
  std::set<std::string, std::less<>> known_;
  std::vector<std::string> errors_;
};

}  // namespace qxa::common
