// SPDX-License-Identifier: MIT
#include "qxa/common/text.hpp"

#include <fmt/format.h>

#include <cstdint>

namespace qxa::common {
namespace {

constexpr char hex_digits[] = "0123456789abcdef";

/// The length of the well-formed UTF-8 sequence at the start of `s` and its code point, or a
/// length of 0 when the first byte does not start one.
struct decoded {
  std::size_t length;
  char32_t code_point;
};

decoded decode_one(std::string_view s) noexcept {
  const auto b = [&](std::size_t i) { return static_cast<std::uint8_t>(s[i]); };
  const auto cont = [&](std::size_t i) { return i < s.size() && (b(i) & 0xC0) == 0x80; };
  const std::uint8_t b0 = b(0);
  if (b0 < 0x80) return {1, b0};
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (!cont(1)) return {0, 0};
    return {2, static_cast<char32_t>((b0 & 0x1F) << 6 | (b(1) & 0x3F))};
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) return {0, 0};
    const char32_t cp = (b0 & 0x0F) << 12 | (b(1) & 0x3F) << 6 | (b(2) & 0x3F);
    if (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)) return {0, 0};  // overlong, surrogate
    return {3, cp};
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return {0, 0};
    const char32_t cp =
        (b0 & 0x07) << 18 | (b(1) & 0x3F) << 12 | (b(2) & 0x3F) << 6 | (b(3) & 0x3F);
    if (cp < 0x10000 || cp > 0x10FFFF) return {0, 0};
    return {4, cp};
  }
  return {0, 0};
}

void append_hex_byte(std::string& out, unsigned char c) {
  out += "\\x";
  out += hex_digits[c >> 4];
  out += hex_digits[c & 0xF];
}

/// What printable() writes for a code point, or nothing when it stays as it is.
bool escape_code_point(std::string& out, char32_t cp) {
  switch (cp) {
    case '\n':
      out += "\\n";
      return true;
    case '\t':
      out += "\\t";
      return true;
    case '\r':
      out += "\\r";
      return true;
    case 0x1B:
      out += "\\e";
      return true;
    default:
      break;
  }
  if (cp < 0x20 || cp == 0x7F) {
    append_hex_byte(out, static_cast<unsigned char>(cp));
    return true;
  }
  // C1 controls (a terminal takes U+009B as CSI), line and paragraph separators, and the
  // bidirectional embeddings, overrides and isolates that reorder what is displayed.
  if ((cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 ||
      (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200E ||
      cp == 0x200F || cp == 0x061C) {
    fmt::format_to(std::back_inserter(out), "\\u{{{:04X}}}", static_cast<std::uint32_t>(cp));
    return true;
  }
  return false;
}

}  // namespace

bool is_utf8(std::string_view text) noexcept {
  while (!text.empty()) {
    const auto d = decode_one(text);
    if (d.length == 0) return false;
    text.remove_prefix(d.length);
  }
  return true;
}

std::string to_utf8(std::string_view text) {
  if (is_utf8(text)) return std::string(text);
  std::string out;
  out.reserve(text.size() + 16);
  while (!text.empty()) {
    const auto d = decode_one(text);
    if (d.length == 0) {
      append_hex_byte(out, static_cast<unsigned char>(text.front()));
      text.remove_prefix(1);
    } else {
      out.append(text.substr(0, d.length));
      text.remove_prefix(d.length);
    }
  }
  return out;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const auto d = decode_one(text);
    if (d.length == 0) {
      append_hex_byte(out, static_cast<unsigned char>(text.front()));
      text.remove_prefix(1);
      continue;
    }
    if (!escape_code_point(out, d.code_point)) out.append(text.substr(0, d.length));
    text.remove_prefix(d.length);
  }
  return out;
}

std::string log_value(std::string_view text) {
  std::string quoted = "\"";
  bool plain = !text.empty();
  while (!text.empty()) {
    const auto d = decode_one(text);
    if (d.length == 0) {
      append_hex_byte(quoted, static_cast<unsigned char>(text.front()));
      plain = false;
      text.remove_prefix(1);
      continue;
    }
    const char32_t cp = d.code_point;
    if (cp == '"' || cp == '\\') {
      quoted += '\\';
      quoted += static_cast<char>(cp);
      plain = false;
    } else if (escape_code_point(quoted, cp)) {
      plain = false;
    } else {
      if (cp == ' ' || cp == '=') plain = false;
      quoted.append(text.substr(0, d.length));
    }
    text.remove_prefix(d.length);
  }
  if (plain) return quoted.substr(1);
  quoted += '"';
  return quoted;
}

std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) noexcept {
  if (text.size() <= max_bytes) return text;
  std::size_t end = max_bytes;
  // Back off continuation bytes, then the lead byte of a sequence that would be cut.
  while (end > 0 && (static_cast<std::uint8_t>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

}  // namespace qxa::common
