// SPDX-License-Identifier: MIT
// A qemu-guest-agent client for tests: raw bytes out, one answer line back, every read under a
// deadline (a missing answer is an empty string, never a hang).
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

namespace qxa::test {

class qga_client {
 public:
  using json = nlohmann::json;  // compared as values: member order does not matter

  /// Connects to the unix socket `path`, retrying until `within` has passed.
  explicit qga_client(const std::string& path,
                      std::chrono::milliseconds within = std::chrono::seconds(10)) {
    const auto until = std::chrono::steady_clock::now() + within;
    do {
      fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
      if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return;
      ::close(fd_);
      fd_ = -1;
      ::poll(nullptr, 0, 20);  // the socket is not there yet: a short pause between tries
    } while (std::chrono::steady_clock::now() < until);
  }
  ~qga_client() {
    if (fd_ >= 0) ::close(fd_);
  }
  qga_client(const qga_client&) = delete;
  qga_client& operator=(const qga_client&) = delete;

  [[nodiscard]] bool connected() const { return fd_ >= 0; }

  bool send_raw(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const auto n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }

  /// The next answer line (without its newline), or "" when none came in time.
  std::string line(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    const auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (const auto nl = pending_.find('\n'); nl != std::string::npos) {
        auto l = pending_.substr(0, nl);
        pending_.erase(0, nl + 1);
        return l;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return {};
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return {};
      char buf[65536];
      const auto n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return {};
      pending_.append(buf, static_cast<std::size_t>(n));
    }
  }

  /// Sends a command and parses its answer (null when none came, or it was not JSON).
  json call(const std::string& name, const json& arguments = nullptr,
            std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    json request = {{"execute", name}};
    if (!arguments.is_null()) request["arguments"] = arguments;
    if (!send_raw(request.dump() + "\n")) return nullptr;
    return parse(line(timeout));
  }

  static json parse(const std::string& text) {
    auto start = text.find('{');
    if (start == std::string::npos) return nullptr;
    return json::parse(text.substr(start), nullptr, /*allow_exceptions=*/false);
  }

 private:
  int fd_ = -1;
  std::string pending_;
};

}  // namespace qxa::test
