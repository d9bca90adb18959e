// SPDX-License-Identifier: MIT
// Files for tests: a file's whole content; random content of a given size, and its SHA-256.
#pragma once

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "qxa/common/sha256.hpp"

namespace qxa::test {

/// The whole content of the file at `path` ("" when it cannot be read).
inline std::string file_contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// Writes `size` pseudo-random bytes (the same for the same seed).
inline void write_random_file(const std::string& path, std::size_t size, std::uint64_t seed = 42) {
  std::mt19937_64 rng(seed);
  std::ofstream out(path, std::ios::binary);
  std::vector<std::uint64_t> block(1 << 17);
  for (std::size_t done = 0; done < size; done += block.size() * 8) {
    for (auto& w : block) w = rng();
    out.write(reinterpret_cast<const char*>(block.data()),
              static_cast<std::streamsize>(std::min(size - done, block.size() * 8)));
  }
}

/// The file's SHA-256 in hex.
inline std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  common::sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<std::size_t>(in.gcount()));
  }
  return common::sha256::hex(h.finish());
}

}  // namespace qxa::test
