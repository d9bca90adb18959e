// SPDX-License-Identifier: MIT
#include "qxa/common/systemd.hpp"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "qxa/common/log.hpp"
#include "qxa/common/posix.hpp"

namespace qxa::common {

void sd_notify(std::string_view state) noexcept {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
           static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
  ::close(fd);
}

std::optional<std::chrono::microseconds> sd_watchdog_interval() noexcept {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (usec == nullptr) return std::nullopt;
  // WATCHDOG_PID names the process the watchdog is for; unset means us.
  if (const char* pid = std::getenv("WATCHDOG_PID"); pid && std::atoi(pid) != ::getpid()) {
    return std::nullopt;
  }
  const long long v = std::atoll(usec);
  if (v <= 0) return std::nullopt;
  return std::chrono::microseconds(v);
}

void print_startup_error(std::string_view program, std::string_view message) noexcept {
  std::string line = logger::instance().journal_prefix() ? "<3>" : "";
  line.append(program).append(": ").append(message).append("\n");
  (void)write_all(STDERR_FILENO, line);
}

}  // namespace qxa::common
