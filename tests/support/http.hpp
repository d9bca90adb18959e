// SPDX-License-Identifier: MIT
// One HTTP/1.1 exchange over TCP on 127.0.0.1, for the metrics endpoint's tests.
#pragma once

#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/write.hpp>
#include <string>
#include <utility>

namespace qxa::test {

/// Sends `request` to 127.0.0.1:`port` and reads until the server closes: the status line and
/// the body.
inline std::pair<std::string, std::string> http(std::uint16_t port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(s, asio::buffer(request));
  std::string response;
  std::error_code ec;
  char buf[65536];
  for (;;) {
    const auto n = s.read_some(asio::buffer(buf), ec);
    if (ec) break;
    response.append(buf, n);
  }
  const auto head_end = response.find("\r\n\r\n");
  return {response.substr(0, response.find("\r\n")),
          head_end == std::string::npos ? "" : response.substr(head_end + 4)};
}

}  // namespace qxa::test
