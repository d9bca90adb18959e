// SPDX-License-Identifier: MIT
// libcrypto's SHA256_* functions, not EVP: in the static guest agent EVP pulls in the whole
// provider machinery (about 4 MB of binary and a few hundred KiB of memory) for one digest.
// They are deprecated in OpenSSL 3 in favour of EVP, but stay supported throughout 3.x.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "qxa/common/sha256.hpp"

#include <openssl/sha.h>

namespace qxa::common {

struct sha256::state {
  SHA256_CTX ctx;
};

sha256::sha256() : state_(std::make_unique<state>()) { SHA256_Init(&state_->ctx); }
sha256::~sha256() = default;
sha256::sha256(sha256&&) noexcept = default;
sha256& sha256::operator=(sha256&&) noexcept = default;

void sha256::update(const void* data, std::size_t size) { SHA256_Update(&state_->ctx, data, size); }

sha256::digest sha256::finish() {
  digest d{};
  SHA256_Final(d.data(), &state_->ctx);
  SHA256_Init(&state_->ctx);
  return d;
}

std::string sha256::hex(const digest& d) {
  return hex(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
}

std::string sha256::hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

}  // namespace qxa::common
