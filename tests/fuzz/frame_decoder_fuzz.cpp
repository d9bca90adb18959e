// SPDX-License-Identifier: MIT
// Fuzz target: the frame decoder.
//
// The input is a byte stream as it may arrive on the channel. Properties checked:
// - fed whole or in pieces of any sizes, the decoder returns the same payloads and counts;
// - it never buffers more than one frame's worth (header + maximum payload) beyond the input
//   it was given in one piece, and never returns a payload over the maximum;
// - every payload it returns was in the input under a valid header (it re-encodes to bytes that
//   occur in the input);
// - the input itself, framed, decodes back to exactly itself.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string_view>
#include <vector>

#include "qxa/common/frame.hpp"

namespace qc = qxa::common;

namespace {

struct outcome {
  std::vector<std::vector<std::uint8_t>> payloads;
  std::vector<std::uint64_t> oversized;
  qc::decoder_stats stats;
};

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

void drain(qc::frame_decoder& d, outcome& out) {
  for (;;) {
    auto r = d.next();
    if (r.status == qc::decode_status::need_more) break;
    if (r.status == qc::decode_status::oversized) {
      check(r.announced_size > d.max_payload(), "oversized below the maximum");
      out.oversized.push_back(r.announced_size);
      continue;
    }
    check(r.payload.size() <= d.max_payload(), "payload over the maximum");
    out.payloads.emplace_back(r.payload.begin(), r.payload.end());
  }
  // What is left is one incomplete frame under a valid header, or less than a header.
  check(d.has_partial_frame() ? d.buffered_bytes() < qc::frame_header_size + d.max_payload()
                              : d.buffered_bytes() < qc::frame_header_size,
        "more than one incomplete frame buffered");
}

// Ends the input: abandons partial frames until none is left, as a reader does at EOF.
void finish(qc::frame_decoder& d, outcome& out) {
  while (d.abandon_partial()) drain(d, out);
  drain(d, out);
  out.stats = d.stats();
}

bool same_stats(const qc::decoder_stats& a, const qc::decoder_stats& b) {
  return a.frames == b.frames && a.garbage_bytes == b.garbage_bytes &&
         a.damaged_frames == b.damaged_frames && a.oversized_frames == b.oversized_frames;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  // The first byte picks a small maximum (so that "oversized" is reachable), the second the
  // piece sizes; the rest is the stream.
  const std::size_t max_payload = 16 + std::size_t{data[0]} * 16;
  const std::uint8_t piece_seed = data[1];
  const std::span<const std::uint8_t> stream(data + 2, size - 2);

  outcome whole;
  {
    qc::frame_decoder d(max_payload);
    d.feed(stream);
    drain(d, whole);
    finish(d, whole);
  }
  outcome pieces;
  {
    qc::frame_decoder d(max_payload);
    std::uint32_t x = piece_seed * 2654435761u + 1;
    std::size_t at = 0;
    while (at < stream.size()) {
      x = x * 1103515245u + 12345u;
      const std::size_t n = std::min<std::size_t>(1 + (x >> 16) % 64, stream.size() - at);
      d.feed(stream.subspan(at, n));
      at += n;
      drain(d, pieces);
      check(d.buffer_capacity() <= 4 * (qc::frame_header_size + max_payload) + 4096,
            "decoder buffer grew beyond a few frames");
    }
    finish(d, pieces);
  }
  check(whole.payloads == pieces.payloads, "whole and pieces give different frames");
  check(whole.oversized == pieces.oversized, "whole and pieces disagree on oversized frames");
  check(same_stats(whole.stats, pieces.stats), "whole and pieces count differently");
  check(whole.stats.frames == whole.payloads.size(), "frames counted != frames returned");

  const std::string_view haystack(reinterpret_cast<const char*>(stream.data()), stream.size());
  for (const auto& p : whole.payloads) {
    std::vector<std::uint8_t> framed;
    qc::append_frame(p, framed);
    const std::string_view needle(reinterpret_cast<const char*>(framed.data()), framed.size());
    check(haystack.find(needle) != std::string_view::npos, "a frame that was not in the input");
  }

  // The stream as one payload round-trips (when it fits).
  if (stream.size() <= max_payload) {
    std::vector<std::uint8_t> framed;
    qc::append_frame(stream, framed);
    qc::frame_decoder d(max_payload);
    d.feed(framed);
    auto r = d.next();
    check(r.status == qc::decode_status::frame, "a framed payload did not decode");
    check(std::equal(r.payload.begin(), r.payload.end(), stream.begin(), stream.end()),
          "a framed payload decoded differently");
  }
  return 0;
}
