// SPDX-License-Identifier: MIT
#include "qxa/common/config.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

// toml++ 3.x asserts, in builds without NDEBUG, that a key starts with a key character before it
// checks and reports exactly that as a parse error ("[|table]" aborts a debug build; found by
// fuzz_agent_config). Config files are input: they get the error, as in release builds.
#ifndef NDEBUG
#define TOML_ASSERT(expr) static_assert(true)
#endif
#include <toml++/toml.h>

#include "qxa/common/duration.hpp"

namespace qxa::common {
namespace {

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date";
    case toml::node_type::none:
      return "nothing";
  }
  return "something else";
}

struct key_use {
  std::string path;
  std::uint32_t line;
  bool empty_table;  ///< "[section]" with nothing in it (every key commented out, say)
};

// Every leaf key path of the table, and every empty table, with the line of its key.
void collect_leaves(const toml::table& t, const std::string& prefix, std::vector<key_use>& out) {
  for (const auto& [key, node] : t) {
    const std::string path =
        prefix.empty() ? std::string(key.str()) : prefix + "." + std::string(key.str());
    const auto* sub = node.as_table();
    if (sub && !sub->empty()) {
      collect_leaves(*sub, path, out);
    } else {
      out.push_back({path, key.source().begin.line, sub != nullptr});
    }
  }
}

// toml++ 3.x, asking whether a character is whitespace, reaches a point it marks unreachable
// (undefined behaviour in release builds) for these characters, and its error paths ask that of
// characters inside strings and comments too (found by fuzz_agent_config). Until a fixed toml++
// is in Debian, they are refused anywhere in a config file.
struct codepoint_range {
  unsigned first, last;
};
constexpr codepoint_range toml_unsafe[] = {{0xA1, 0x499}, {0x2C5E, 0x3057}, {0xFB26, 0xFEFE}};
constexpr const char* toml_unsafe_text = "U+00A1..U+0499, U+2C5E..U+3057 and U+FB26..U+FEFE";

struct unsafe_character {
  std::size_t line, column;
  unsigned codepoint;
};

// The first character of `toml_unsafe` in UTF-8 text.
std::optional<unsafe_character> unsafe_for_toml(std::string_view t) {
  std::size_t line = 1, column = 1;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const auto b0 = static_cast<unsigned char>(t[i]);
    auto next = [&](std::size_t k) {
      return i + k < t.size() ? static_cast<unsigned char>(t[i + k]) & 0x3Fu : 0u;
    };
    unsigned cp = 0;
    if ((b0 & 0xE0u) == 0xC0u) cp = ((b0 & 0x1Fu) << 6) | next(1);
    if ((b0 & 0xF0u) == 0xE0u) cp = ((b0 & 0x0Fu) << 12) | (next(1) << 6) | next(2);
    for (const auto& r : toml_unsafe) {
      if (cp >= r.first && cp <= r.last) return unsafe_character{line, column, cp};
    }
    if (b0 == '\n') {
      ++line;
      column = 1;
    } else if ((b0 & 0xC0u) != 0x80u) {
      ++column;  // one per character, not per byte
    }
  }
  return std::nullopt;
}

}  // namespace

config_reader::config_reader(std::unique_ptr<toml::table> table, std::string source)
    : table_(std::move(table)), source_(std::move(source)) {}
config_reader::config_reader(config_reader&&) noexcept = default;
config_reader& config_reader::operator=(config_reader&&) noexcept = default;
config_reader::~config_reader() = default;

result<config_reader> config_reader::from_string(std::string_view text, std::string source) {
  // TOML allows no control character but tab outside line ends, in strings and comments alike.
  // Refusing them here gives one clear message (toml++ has debug assertions that a NUL in a
  // table header trips before it reports the error).
  std::size_t line = 1, column = 1;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t' && c != '\n' && c != '\r') || u == 0x7f) {
      return {errc::invalid_argument,
              fmt::format("{}:{}:{}: control character U+{:04X} is not allowed in TOML", source,
                          line, column, static_cast<unsigned>(u))};
    }
    if (c == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  if (auto at = unsafe_for_toml(text)) {
    return {errc::invalid_argument,
            fmt::format("{}:{}:{}: character U+{:04X} cannot be used in a config file (the TOML "
                        "parser mishandles {})",
                        source, at->line, at->column, at->codepoint, toml_unsafe_text)};
  }
  try {
    auto table = std::make_unique<toml::table>(toml::parse(text, source));
    return config_reader(std::move(table), std::move(source));
  } catch (const toml::parse_error& e) {
    return {errc::invalid_argument, fmt::format("{}:{}:{}: {}", source, e.source().begin.line,
                                                e.source().begin.column, e.description())};
  }
}

result<config_reader> config_reader::from_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return {errc::invalid_argument, fmt::format("{}: is a directory, not a config file", path)};
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return {errc::invalid_argument, fmt::format("{}: cannot read: {}", path, std::strerror(errno))};
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return {errc::invalid_argument, fmt::format("{}: cannot read: {}", path, std::strerror(errno))};
  }
  return from_string(text.str(), path);
}

std::string config_reader::where(std::string_view key) const {
  const auto node = table_->at_path(key);
  if (node && node.node()->source().begin.line > 0) {
    return fmt::format("{}:{}", source_, node.node()->source().begin.line);
  }
  return source_;
}

void config_reader::add_error(std::string message) { errors_.push_back(std::move(message)); }

void config_reader::fail(std::string_view key, std::string_view why) {
  add_error(fmt::format("{}: '{}' {}", where(key), key, why));
}

void config_reader::get(std::string_view key, std::string& out) {
  known_.emplace(key);
  const auto node = table_->at_path(key);
  if (!node) return;
  if (const auto* v = node.as_string()) {
    out = v->get();
  } else {
    fail(key, fmt::format("must be a string, not {}", type_name(node.type())));
  }
}

void config_reader::get(std::string_view key, bool& out) {
  known_.emplace(key);
  const auto node = table_->at_path(key);
  if (!node) return;
  if (const auto* v = node.as_boolean()) {
    out = v->get();
  } else {
    fail(key, fmt::format("must be true or false, not {}", type_name(node.type())));
  }
}

void config_reader::get(std::string_view key, std::optional<bool>& out) {
  if (!table_->at_path(key)) {
    known_.emplace(key);
    return;
  }
  bool value = false;
  get(key, value);
  out = value;
}

void config_reader::get(std::string_view key, std::int64_t& out, std::int64_t min,
                        std::int64_t max) {
  known_.emplace(key);
  const auto node = table_->at_path(key);
  if (!node) return;
  const auto* v = node.as_integer();
  if (v == nullptr) {
    fail(key, fmt::format("must be an integer, not {}", type_name(node.type())));
  } else if (v->get() < min || v->get() > max) {
    fail(key, fmt::format("must be between {} and {}, not {}", min, max, v->get()));
  } else {
    out = v->get();
  }
}

void config_reader::get(std::string_view key, std::uint32_t& out, std::uint32_t min,
                        std::uint32_t max) {
  std::int64_t v = out;
  get(key, v, min, max);
  out = static_cast<std::uint32_t>(v);
}

void config_reader::get_duration(std::string_view key, std::chrono::nanoseconds& out,
                                 std::chrono::nanoseconds min) {
  known_.emplace(key);
  const auto node = table_->at_path(key);
  if (!node) return;
  const auto* v = node.as_string();
  if (v == nullptr) {
    fail(key,
         fmt::format("must be a duration string such as \"5s\", not {}", type_name(node.type())));
    return;
  }
  auto d = parse_duration(v->get());
  if (!d) {
    fail(key, fmt::format("is not a valid duration: {}", d.error().message));
  } else if (*d < min) {
    fail(key, fmt::format("must be at least {}", format_duration(min)));
  } else {
    out = *d;
  }
}

void config_reader::get(std::string_view key, log_level& out) {
  std::string name(to_string(out));
  get(key, name);
  if (auto l = parse_log_level(name)) {
    out = *l;
  } else {
    fail(key, fmt::format("must be one of trace, debug, info, warning, error, critical, off; "
                          "not '{}'",
                          name));
  }
}

void config_reader::get(std::string_view key, std::vector<std::string>& out) {
  known_.emplace(key);
  const auto node = table_->at_path(key);
  if (!node) return;
  const auto* arr = node.as_array();
  if (arr == nullptr) {
    fail(key, fmt::format("must be an array of strings, not {}", type_name(node.type())));
    return;
  }
  std::vector<std::string> values;
  for (const auto& item : *arr) {
    if (const auto* s = item.as_string()) {
      values.push_back(s->get());
    } else {
      fail(key, fmt::format("must hold only strings, not {}", type_name(item.type())));
      return;
    }
  }
  out = std::move(values);
}

bool config_reader::has(std::string_view key) const {
  return static_cast<bool>(table_->at_path(key));
}

std::optional<error_info> config_reader::finish() {
  std::vector<key_use> leaves;
  collect_leaves(*table_, "", leaves);
  for (const auto& [path, line, empty_table] : leaves) {
    if (known_.contains(path)) continue;
    // An empty table is valid TOML, and what a file with every key commented out holds: it is
    // fine when it is a section that has keys ("[telemetry]"), unknown otherwise.
    if (empty_table) {
      const std::string section = path + ".";
      const auto next = known_.lower_bound(section);
      if (next != known_.end() && next->starts_with(section)) continue;
      errors_.push_back(fmt::format("{}:{}: unknown table '{}'", source_, line, path));
      continue;
    }
    errors_.push_back(fmt::format("{}:{}: unknown key '{}'", source_, line, path));
  }
  if (errors_.empty()) return std::nullopt;
  std::string all = errors_.front();
  for (std::size_t i = 1; i < errors_.size(); ++i) all += "\n" + errors_[i];
  return error_info{make_error_code(errc::invalid_argument), all};
}

}  // namespace qxa::common
