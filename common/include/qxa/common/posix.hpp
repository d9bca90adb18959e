// SPDX-License-Identifier: MIT
// Small POSIX helpers every part of the project needs the same way.
#pragma once

#include <string_view>
#include <system_error>

namespace qxa::common {

/// Writes all of `data` to `fd`, through short writes and EINTR; false (errno set) on an error.
/// Only write(2): safe in a forked child and in a logger.
bool write_all(int fd, std::string_view data) noexcept;

/// errno as an error_code.
[[nodiscard]] std::error_code last_error() noexcept;

}  // namespace qxa::common
