// SPDX-License-Identifier: MIT
// SHA-256 of a stream of bytes (OpenSSL's libcrypto), for file transfers.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace qxa::common {

class sha256 {
 public:
  using digest = std::array<std::uint8_t, 32>;
  sha256();
  ~sha256();
  sha256(sha256&&) noexcept;
  sha256& operator=(sha256&&) noexcept;

  void update(const void* data, std::size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  /// The digest of everything so far; the object then starts over.
  digest finish();

  static std::string hex(const digest& d);
  static std::string hex(std::string_view bytes);
  /// The digest as the bytes carried on the wire.
  static std::string bytes(const digest& d) {
    return std::string(reinterpret_cast<const char*>(d.data()), d.size());
  }

 private:
  struct state;
  std::unique_ptr<state> state_;
};

}  // namespace qxa::common
