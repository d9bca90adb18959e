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

/// The body of a response sent with "Transfer-Encoding: chunked", its chunks joined.
inline std::string unchunked(const std::string& body) {
  std::string out;
  for (std::size_t at = 0; at < body.size();) {
    const auto line_end = body.find("\r\n", at);
    if (line_end == std::string::npos) break;
    const auto size = std::stoul(body.substr(at, line_end - at), nullptr, 16);
    if (size == 0) break;
    out.append(body, line_end + 2, size);
    at = line_end + 2 + size + 2;
  }
  return out;
}

/// Sends `request` to 127.0.0.1:`port` and reads until the server closes: the status line and
/// the body (its chunks joined if it came in chunks).
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
  if (head_end == std::string::npos) return {response.substr(0, response.find("\r\n")), ""};
  const auto head = response.substr(0, head_end);
  auto body = response.substr(head_end + 4);
  if (head.find("Transfer-Encoding: chunked") != std::string::npos) body = unchunked(body);
  return {response.substr(0, response.find("\r\n")), body};
}

}  // namespace qxa::test
