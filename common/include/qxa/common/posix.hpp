// SPDX-License-Identifier: MIT
// Small POSIX helpers every part of the project needs the same way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace qxa::common {

/// Writes all of `data` to `fd`, through short writes and EINTR; false (errno set) on an error.
/// Only write(2): safe in a forked child and in a logger.
bool write_all(int fd, std::string_view data) noexcept;

/// errno as an error_code.
[[nodiscard]] std::error_code last_error() noexcept;

/// The process's descriptor limit (RLIMIT_NOFILE): the soft limit found, the one in force, and
/// the hard limit.
struct descriptor_limit {
  std::uint64_t before = 0;
  std::uint64_t now = 0;
  std::uint64_t hard = 0;
};

/// Raises the soft descriptor limit to the hard one (at most the kernel's fs.nr_open). Service
/// managers keep the soft limit low (1024 under systemd) for programs that still use select();
/// these programs use epoll and poll only, and the hard limit is what the administrator allows.
descriptor_limit raise_descriptor_limit() noexcept;

/// "descriptor limit N", with "(raised from M)" when it was.
[[nodiscard]] std::string describe(const descriptor_limit& l);

}  // namespace qxa::common
