// SPDX-License-Identifier: MIT
#include "qxa/common/posix.hpp"

#include <unistd.h>

#include <cerrno>

namespace qxa::common {

bool write_all(int fd, std::string_view data) noexcept {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::error_code last_error() noexcept { return {errno, std::system_category()}; }

}  // namespace qxa::common
