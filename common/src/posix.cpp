// SPDX-License-Identifier: MIT
#include "qxa/common/posix.hpp"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

namespace qxa::common {

void unique_fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

result<std::string> read_all(int fd, std::size_t cap) {
  std::string out;
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return error_info{std::error_code(errno, std::system_category()), std::strerror(errno)};
    }
    if (n == 0) return out;
    if (out.size() + static_cast<std::size_t>(n) > cap) {
      return error_info{std::error_code(EFBIG, std::system_category()),
                        fmt::format("longer than {} bytes", cap)};
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
}

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

descriptor_limit raise_descriptor_limit() noexcept {
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0) return {};
  descriptor_limit out{.before = l.rlim_cur, .now = l.rlim_cur, .hard = l.rlim_max};
  rlim_t want = l.rlim_max;
  if (want == RLIM_INFINITY) {
    // Unlimited in name only: the kernel refuses more than fs.nr_open.
    std::uint64_t nr_open = 1u << 20;
    std::ifstream("/proc/sys/fs/nr_open") >> nr_open;
    want = static_cast<rlim_t>(nr_open);
  }
  if (l.rlim_cur == RLIM_INFINITY || l.rlim_cur >= want) return out;
  l.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &l) == 0) out.now = want;
  return out;
}

std::string describe(const descriptor_limit& l) {
  if (l.now == l.before) return fmt::format("descriptor limit {}", l.now);
  return fmt::format("descriptor limit {} (raised from {})", l.now, l.before);
}

}  // namespace qxa::common
