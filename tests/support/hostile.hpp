// SPDX-License-Identifier: MIT
// What a hostile guest sends, for the tests of the host's defences: frames whose headers lie,
// and telemetry far beyond anything a real guest reports, full of terminal escapes.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/common/frame.hpp"

namespace qxa::test {

/// A header that checks out, announcing `length` bytes of payload whose checksum will not
/// match. Back to back, each is a candidate frame the decoder has to reject.
inline std::vector<std::uint8_t> lying_header(std::uint32_t length) {
  std::vector<std::uint8_t> h(common::frame_header_size, 0);
  std::memcpy(h.data(), common::frame_magic, 4);
  h[4] = common::frame_version;
  for (int i = 0; i < 4; ++i) {
    h[8 + i] = static_cast<std::uint8_t>(length >> (8 * i));
    h[12 + i] = 0x5A;  // the payload's CRC: wrong
  }
  const std::uint32_t crc = common::crc32({h.data(), 16});
  for (int i = 0; i < 4; ++i) h[16 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
  return h;
}

/// `count` lying headers, each announcing `length`, followed by `length` bytes of filler.
inline std::vector<std::uint8_t> lying_headers(std::size_t count, std::uint32_t length) {
  std::vector<std::uint8_t> out;
  out.reserve(count * common::frame_header_size + length);
  const auto h = lying_header(length);
  for (std::size_t i = 0; i < count; ++i) out.insert(out.end(), h.begin(), h.end());
  out.resize(out.size() + length, 0x11);
  return out;
}

/// What a terminal would obey: retitle the window, clear the screen.
inline constexpr const char* terminal_attack = "\x1b]0;owned\x07\x1b[2J\x1b[H";

/// Telemetry with 150,000 addresses, 1,000 disks and long names laced with escapes.
inline quantix::agent::v1::Telemetry oversized_telemetry() {
  quantix::agent::v1::Telemetry t;
  t.set_hostname(std::string("evil") + terminal_attack);
  // Frozen since forever, its lease long over.
  t.mutable_freeze()->set_frozen(true);
  t.mutable_freeze()->set_frozen_ms(std::numeric_limits<std::uint64_t>::max());
  t.mutable_freeze()->set_lease_remaining_ms(std::numeric_limits<std::int64_t>::min());
  auto* eth = t.add_interfaces();
  eth->set_name(std::string("eth0") + terminal_attack);
  for (int i = 0; i < 150'000; ++i) {
    auto* a = eth->add_addresses();
    a->set_family(quantix::agent::v1::IpAddress::FAMILY_IPV4);
    a->set_address(fmt::format("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255));
    a->set_prefix_length(32);
  }
  for (int i = 0; i < 1000; ++i) {
    auto* d = t.add_disks();
    d->set_mount_point(fmt::format("/mnt/{}{}{}", i, terminal_attack, std::string(500, 'm')));
    d->set_device("/dev/evil");
    d->set_fs_type("ext4");
    d->set_total_bytes(1u << 30);
  }
  t.mutable_memory()->set_total_bytes(1u << 30);
  return t;
}

}  // namespace qxa::test
