// SPDX-License-Identifier: MIT
#include <catch2/catch.hpp>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qxa/common/frame.hpp"
#include "support/hostile.hpp"

using qxa::common::append_frame;
using qxa::common::decode_status;
using qxa::common::frame_decoder;
using qxa::common::frame_header_size;
using qxa::common::frame_magic;
using qxa::test::lying_header;
using bytes = std::vector<std::uint8_t>;

namespace {

bytes to_bytes(const std::string& s) { return bytes(s.begin(), s.end()); }

bytes frame_of(const bytes& payload) {
  bytes out;
  append_frame(payload, out);
  return out;
}

// Feeds `input` in the given piece sizes (cycled) and collects every payload decoded.
std::vector<bytes> decode_in_pieces(frame_decoder& d, const bytes& input,
                                    const std::vector<std::size_t>& pieces) {
  std::vector<bytes> out;
  std::size_t at = 0;
  std::size_t k = 0;
  while (at < input.size()) {
    const std::size_t n = std::min(pieces[k++ % pieces.size()], input.size() - at);
    d.feed({input.data() + at, n});
    at += n;
    for (;;) {
      auto r = d.next();
      if (r.status == decode_status::need_more) break;
      if (r.status == decode_status::frame) out.emplace_back(r.payload.begin(), r.payload.end());
    }
  }
  return out;
}

std::vector<bytes> decode_all(frame_decoder& d, const bytes& input) {
  return decode_in_pieces(d, input, {input.size() ? input.size() : 1});
}

std::vector<bytes> sample_payloads() {
  std::vector<bytes> p;
  p.push_back({});  // empty payload
  p.push_back(to_bytes("ping"));
  p.push_back(bytes(frame_magic, frame_magic + 4));  // the magic itself as payload
  bytes big(3000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>(i * 7);
  p.push_back(big);
  return p;
}

}  // namespace

TEST_CASE("a frame round-trips through the encoder and decoder", "[common]") {
  frame_decoder d;
  const bytes payload = to_bytes("hello, guest");
  const auto out = decode_all(d, frame_of(payload));
  REQUIRE(out.size() == 1);
  CHECK(out[0] == payload);
  CHECK(d.stats().frames == 1);
  CHECK(d.stats().garbage_bytes == 0);
  CHECK(d.buffered_bytes() == 0);
}

TEST_CASE("every split of a multi-frame buffer decodes identically", "[common]") {
  const auto payloads = sample_payloads();
  bytes stream;
  for (const auto& p : payloads) append_frame(p, stream);

  SECTION("in 1-byte pieces") {
    frame_decoder d;
    CHECK(decode_in_pieces(d, stream, {1}) == payloads);
    CHECK(d.stats().garbage_bytes == 0);
  }
  SECTION("split once at every offset") {
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
      frame_decoder d;
      std::vector<bytes> out;
      for (auto piece : {bytes(stream.begin(), stream.begin() + static_cast<long>(cut)),
                         bytes(stream.begin() + static_cast<long>(cut), stream.end())}) {
        d.feed(piece);
        for (auto r = d.next(); r.status != decode_status::need_more; r = d.next()) {
          if (r.status == decode_status::frame)
            out.emplace_back(r.payload.begin(), r.payload.end());
        }
      }
      INFO("cut at " << cut);
      REQUIRE(out == payloads);
    }
  }
  SECTION("in random pieces") {
    std::mt19937 rng(42);
    for (int round = 0; round < 200; ++round) {
      std::vector<std::size_t> pieces;
      for (int i = 0; i < 16; ++i) pieces.push_back(1 + rng() % 97);
      frame_decoder d;
      REQUIRE(decode_in_pieces(d, stream, pieces) == payloads);
    }
  }
}

TEST_CASE("a length over the maximum is rejected from the header, before any allocation",
          "[common]") {
  SECTION("the default maximum is 16 MiB") {
    frame_decoder d;
    CHECK(d.max_payload() == 16u << 20);
  }
  SECTION("an announced 4 GiB frame") {
    frame_decoder d;
    // A header that announces 0xFFFFFFFF bytes, with valid checksums.
    bytes header(frame_header_size);
    const bytes empty;
    qxa::common::encode_frame_header(empty, std::span<std::uint8_t, frame_header_size>(header));
    header[8] = header[9] = header[10] = header[11] = 0xFF;
    const std::uint32_t hcrc = qxa::common::crc32({header.data(), 16});
    std::memcpy(header.data() + 16, &hcrc, 4);  // little-endian host
    d.feed(header);
    const auto r = d.next();
    REQUIRE(r.status == decode_status::oversized);
    CHECK(r.announced_size == 0xFFFFFFFFu);
    CHECK(d.buffer_capacity() < 4096);
    CHECK(d.stats().oversized_frames == 1);
    // Decoding goes on with the next valid frame.
    d.feed(frame_of(to_bytes("after")));
    const auto r2 = d.next();
    REQUIRE(r2.status == decode_status::frame);
    CHECK(bytes(r2.payload.begin(), r2.payload.end()) == to_bytes("after"));
  }
  SECTION("the maximum is configurable and inclusive") {
    frame_decoder d(100);
    d.feed(frame_of(bytes(100, 1)));
    CHECK(d.next().status == decode_status::frame);
    d.feed(frame_of(bytes(101, 1)));
    CHECK(d.next().status == decode_status::oversized);
    CHECK(d.buffer_capacity() < 4096);
  }
}

TEST_CASE("garbage before, between and inside frames is skipped and counted", "[common]") {
  const bytes junk = to_bytes("#!garbage\xF5QX..\xF5");
  bytes stream = junk;  // before
  append_frame(to_bytes("one"), stream);
  stream.insert(stream.end(), junk.begin(), junk.end());  // between
  bytes inside = frame_of(to_bytes("damaged-by-insertion"));
  inside.insert(inside.begin() + 24, junk.begin(), junk.end());  // inside a frame's payload
  stream.insert(stream.end(), inside.begin(), inside.end());
  append_frame(to_bytes("two"), stream);

  for (std::size_t piece : {std::size_t{1}, std::size_t{5}, stream.size()}) {
    frame_decoder d;
    auto out = decode_in_pieces(d, stream, {piece});
    INFO("piece size " << piece);
    REQUIRE(out == std::vector<bytes>{to_bytes("one"), to_bytes("two")});
    CHECK(d.stats().damaged_frames == 1);
    // Everything but the two good frames was skipped as garbage.
    CHECK(d.stats().garbage_bytes == stream.size() - 2 * (frame_header_size + 3));
  }
}

TEST_CASE("a copy of the magic inside a payload never yields a false frame", "[common]") {
  // Payloads made of magics and plausible header bytes at every alignment.
  std::vector<bytes> payloads;
  for (std::size_t shift = 0; shift < 8; ++shift) {
    bytes p(shift, 0x00);
    for (int i = 0; i < 6; ++i) {
      p.insert(p.end(), frame_magic, frame_magic + 4);
      p.push_back(1);  // version
      p.insert(p.end(), 15, 0x00);
    }
    payloads.push_back(p);
  }
  bytes stream;
  for (const auto& p : payloads) append_frame(p, stream);

  SECTION("aligned decoding returns exactly the frames") {
    frame_decoder d;
    CHECK(decode_in_pieces(d, stream, {3}) == payloads);
    CHECK(d.stats().garbage_bytes == 0);
  }
  SECTION("resynchronising inside such payloads finds no false frame") {
    // Start decoding in the middle of the first frame: the decoder scans through payload bytes
    // full of magics and must find nothing until the next real header.
    frame_decoder d;
    const bytes tail(stream.begin() + 7, stream.end());
    const auto out = decode_in_pieces(d, tail, {1});
    REQUIRE(out == std::vector<bytes>(payloads.begin() + 1, payloads.end()));
  }
}

TEST_CASE("a truncated frame followed by a good one loses only the truncated one", "[common]") {
  const bytes cut = frame_of(bytes(500, 0xAB));
  bytes stream(cut.begin(), cut.begin() + 120);  // header and part of the payload
  append_frame(to_bytes("good-1"), stream);

  SECTION("later traffic exposes the truncation") {
    for (int i = 2; i <= 40; ++i) append_frame(to_bytes("good-" + std::to_string(i)), stream);
    frame_decoder d;
    const auto out = decode_in_pieces(d, stream, {7});
    REQUIRE(out.size() == 40);
    CHECK(out.front() == to_bytes("good-1"));
    CHECK(out.back() == to_bytes("good-40"));
    CHECK(d.stats().damaged_frames == 1);
  }
  SECTION("with nothing after it, abandoning the partial frame releases the good one") {
    frame_decoder d;
    CHECK(decode_all(d, stream).empty());
    CHECK(d.has_partial_frame());
    REQUIRE(d.abandon_partial());
    const auto r = d.next();
    REQUIRE(r.status == decode_status::frame);
    CHECK(bytes(r.payload.begin(), r.payload.end()) == to_bytes("good-1"));
    CHECK(d.stats().damaged_frames == 1);
    CHECK_FALSE(d.abandon_partial());
  }
}

TEST_CASE("a frame with a flipped bit is counted damaged and the next one decodes", "[common]") {
  for (std::size_t flip_at : {std::size_t{0}, std::size_t{4}, std::size_t{9}, std::size_t{13},
                              std::size_t{17}, frame_header_size + 2}) {
    bytes first = frame_of(to_bytes("payload-with-a-bit-flipped"));
    first[flip_at] ^= 0x10;
    bytes stream = first;
    append_frame(to_bytes("next"), stream);
    frame_decoder d;
    INFO("flip at " << flip_at);
    CHECK(decode_in_pieces(d, stream, {1}) == std::vector<bytes>{to_bytes("next")});
  }
}

TEST_CASE("a header with flags or reserved bytes set is not a frame, even with a valid checksum",
          "[common]") {
  // Found by fuzz_frame_decoder: the decoder checked the flags but not the reserved bytes.
  for (std::size_t at : {std::size_t{5}, std::size_t{6}, std::size_t{7}}) {
    bytes odd = frame_of(to_bytes("odd"));
    odd[at] = 1;
    const std::uint32_t crc = qxa::common::crc32({odd.data(), 16});
    for (int i = 0; i < 4; ++i) odd[16 + i] = static_cast<std::uint8_t>(crc >> (8 * i));
    bytes stream = odd;
    append_frame(to_bytes("next"), stream);
    frame_decoder d;
    INFO("byte " << at);
    CHECK(decode_in_pieces(d, stream, {1}) == std::vector<bytes>{to_bytes("next")});
    CHECK(d.stats().garbage_bytes == odd.size());
  }
}

TEST_CASE("random garbage interleaved with frames never loses a good frame", "[common]") {
  std::mt19937 rng(7);
  std::vector<bytes> payloads;
  bytes stream;
  for (int i = 0; i < 300; ++i) {
    bytes noise(rng() % 40);
    for (auto& b : noise) b = static_cast<std::uint8_t>(rng());
    if (rng() % 3 == 0) noise.insert(noise.end(), frame_magic, frame_magic + 2 + rng() % 3);
    stream.insert(stream.end(), noise.begin(), noise.end());
    bytes p(rng() % 200);
    for (auto& b : p) b = static_cast<std::uint8_t>(rng());
    payloads.push_back(p);
    append_frame(p, stream);
  }
  frame_decoder d;
  CHECK(decode_in_pieces(d, stream, {1, 13, 64, 2}) == payloads);
  CHECK(d.stats().frames == 300);
}

TEST_CASE("the decoder releases a large buffer once its frame is consumed", "[common]") {
  frame_decoder d;
  d.feed(frame_of(bytes(4u << 20, 3)));
  REQUIRE(d.next().status == decode_status::frame);
  CHECK(d.next().status == decode_status::need_more);
  d.feed(frame_of(to_bytes("small")));
  CHECK(d.buffer_capacity() < (1u << 20));
  CHECK(d.next().status == decode_status::frame);
}

TEST_CASE("reset drops buffered input", "[common]") {
  frame_decoder d;
  const bytes f = frame_of(to_bytes("abc"));
  d.feed({f.data(), 10});
  CHECK(d.next().status == decode_status::need_more);
  d.reset();
  CHECK(d.buffered_bytes() == 0);
  d.feed(f);
  CHECK(d.next().status == decode_status::frame);
}

TEST_CASE("headers that each announce a large payload with a wrong checksum cost bounded work",
          "[common]") {
  // 3,000 overlapping candidates (60 kB), each claiming a 4 MiB payload: checksumming each
  // payload from scratch would be 12 GB of CRC for 4 MB of input.
  constexpr std::uint32_t announced = 4u << 20;
  bytes stream;
  for (int i = 0; i < 3000; ++i) {
    const auto h = lying_header(announced);
    stream.insert(stream.end(), h.begin(), h.end());
  }
  stream.resize(stream.size() + announced, 0x11);  // what the payloads would be made of
  append_frame(to_bytes("still heard"), stream);
  frame_decoder d(8u << 20);
  const auto out = decode_in_pieces(d, stream, {64u << 10});
  REQUIRE(out.size() == 1);
  CHECK(out[0] == to_bytes("still heard"));
  CHECK(d.stats().damaged_frames == 3000);
  INFO("checksummed " << d.stats().checksummed_bytes << " bytes for " << stream.size() << " fed");
  CHECK(d.stats().checksummed_bytes <= 3 * stream.size());
}

TEST_CASE("small lying headers cost bounded work too", "[common]") {
  // The same attack with payloads just over and under the direct-checksum limit.
  for (std::uint32_t announced : {200u, 255u, 256u, 257u, 4000u, 70'000u}) {
    bytes stream;
    for (int i = 0; i < 20'000; ++i) {
      const auto h = lying_header(announced);
      stream.insert(stream.end(), h.begin(), h.end());
    }
    stream.resize(stream.size() + announced, 0x22);
    append_frame(to_bytes("after"), stream);
    frame_decoder d;
    INFO("announced " << announced);
    CHECK(decode_in_pieces(d, stream, {4096, 1, 333}) == std::vector<bytes>{to_bytes("after")});
    // At most 2 * 256 + 16 bytes of CRC per 20-byte candidate (half that on average), plus the
    // chain once.
    CHECK(d.stats().checksummed_bytes <= 30 * stream.size());
  }
}

TEST_CASE("honest traffic is checksummed about once", "[common]") {
  std::mt19937 rng(11);
  std::vector<bytes> payloads;
  bytes stream;
  for (int i = 0; i < 200; ++i) {
    bytes p(rng() % 3 == 0 ? rng() % 300'000 : rng() % 600);
    for (auto& b : p) b = static_cast<std::uint8_t>(rng());
    payloads.push_back(p);
    append_frame(p, stream);
  }
  frame_decoder d;
  CHECK(decode_in_pieces(d, stream, {65536, 4096, 17}) == payloads);
  // Payloads once, headers once, and up to two checkpoint strides for each large payload.
  CHECK(d.stats().checksummed_bytes <= stream.size() + 200 * 600);
}

TEST_CASE("payload checksums through checkpoints agree with direct ones at every size",
          "[common]") {
  std::mt19937 rng(5);
  for (std::size_t size :
       {0u, 1u, 255u, 256u, 257u, 511u, 512u, 513u, 768u, 1024u, 1025u, 65'536u, 100'003u}) {
    bytes p(size);
    for (auto& b : p) b = static_cast<std::uint8_t>(rng());
    // Noise before it puts the payload at every offset relative to a checkpoint.
    for (std::size_t noise : {0u, 3u, 255u, 256u, 300u}) {
      bytes stream(noise, 0x00);
      append_frame(p, stream);
      bytes damaged = stream;
      if (size > 0) damaged[damaged.size() - 1 - size / 2] ^= 0x01;  // one bit in the payload
      append_frame(to_bytes("tail"), damaged);
      frame_decoder d;
      INFO("size " << size << ", noise " << noise);
      CHECK(decode_in_pieces(d, stream, {stream.size()}) == std::vector<bytes>{p});
      frame_decoder e;
      const auto out = decode_in_pieces(e, damaged, {97});
      CHECK(out.back() == to_bytes("tail"));
      CHECK(out.size() == (size == 0 ? 2u : 1u));
    }
  }
}
