// SPDX-License-Identifier: MIT
// Text that came from elsewhere (a guest, a file, a user): checking it is UTF-8, making it so,
// and making it safe to show on a terminal or to write into a log line.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qxa::common {

/// True when `text` is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
/// above U+10FFFF).
[[nodiscard]] bool is_utf8(std::string_view text) noexcept;

/// `text` with every byte that is not part of well-formed UTF-8 written as "\xNN"; valid UTF-8
/// comes back unchanged. For names from the system (files, mounts, key comments) that go into a
/// protobuf `string`, which must hold UTF-8 or the peer cannot parse the message at all.
[[nodiscard]] std::string to_utf8(std::string_view text);

/// `text` safe for a terminal or a log line: control characters (C0, DEL, C1), the Unicode line
/// and paragraph separators and the bidirectional controls become escapes (`\n`, `\t`, `\r`,
/// `\e`, `\xNN`, `\u{202E}`), and so do bytes that are not UTF-8. Nothing in the result can
/// move the cursor, change the terminal's state, reorder what is shown or start a new line.
/// A backslash stays as it is.
[[nodiscard]] std::string printable(std::string_view text);

/// `text` as the value of one `key=value` word of a log line: as it is when it is not empty and
/// holds no space, quote, backslash, '=' or anything printable() escapes; otherwise in double
/// quotes, with `\"`, `\\` and the escapes of printable(). So a value cannot forge another key.
[[nodiscard]] std::string log_value(std::string_view text);

/// The longest prefix of `text` of at most `max_bytes` that does not end inside a UTF-8
/// sequence.
[[nodiscard]] std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes) noexcept;

}  // namespace qxa::common
