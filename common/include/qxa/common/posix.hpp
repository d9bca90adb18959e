// SPDX-License-Identifier: MIT
// Small POSIX helpers every part of the project needs the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "qxa/common/error.hpp"

namespace qxa::common {

/// An owned file descriptor.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

/// Reads `fd` to its end; more than `cap` bytes is an error (EFBIG). For a regular file or a
/// pipe whose writer ends: it blocks as the descriptor does.
result<std::string> read_all(int fd, std::size_t cap);

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
