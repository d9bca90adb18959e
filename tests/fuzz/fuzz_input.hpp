// SPDX-License-Identifier: MIT
// Turns a fuzzer's bytes into a sequence of messages for the targets that speak the protocol.
//
// The input is a list of records: one flags byte, a 16-bit little-endian length, then that many
// bytes. Mutating a record's bytes mutates one protobuf message; mutating the flags decides how
// it is sent. A short last record takes what is left.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace qxa::fuzz {

struct record {
  std::uint8_t flags = 0;
  std::span<const std::uint8_t> bytes;
};

/// What a record's flags ask for.
enum record_flag : std::uint8_t {
  fix_request_id = 1,  ///< give it a fresh request id (or, host side: a pending request's id)
  fix_session = 2,     ///< stamp it with the current session
  raw_bytes = 4,       ///< write the bytes as they are, not as a frame: noise on the wire
  split_writes = 8,    ///< write the frame in 1-byte pieces
};

inline std::vector<record> split_records(std::span<const std::uint8_t> data,
                                         std::size_t max_records = 64) {
  std::vector<record> out;
  std::size_t i = 0;
  while (i < data.size() && out.size() < max_records) {
    record r;
    r.flags = data[i++];
    std::size_t len = 0;
    if (i + 2 <= data.size()) {
      len = data[i] | (std::size_t{data[i + 1]} << 8);
      i += 2;
    } else {
      i = data.size();
    }
    len = std::min(len, data.size() - i);
    r.bytes = data.subspan(i, len);
    i += len;
    out.push_back(r);
  }
  return out;
}

/// Appends one record, for writing seeds.
inline void append_record(std::vector<std::uint8_t>& out, std::uint8_t flags,
                          std::span<const std::uint8_t> bytes) {
  out.push_back(flags);
  out.push_back(static_cast<std::uint8_t>(bytes.size() & 0xff));
  out.push_back(static_cast<std::uint8_t>(bytes.size() >> 8));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

}  // namespace qxa::fuzz
