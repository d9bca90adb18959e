// SPDX-License-Identifier: MIT
#include "qxa/common/frame.hpp"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace qxa::common {
namespace {

constexpr std::uint32_t load_le32(const std::uint8_t* p) noexcept {
  return std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 |
         std::uint32_t{p[3]} << 24;
}

// Payloads up to this size are checksummed directly; larger ones through the checkpoint chain,
// every this many bytes (see frame_decoder). The two bound the work of checking one candidate
// header to about 2 * chain_stride bytes of CRC and one crc32_combine.
constexpr std::size_t direct_crc_limit = 256;
constexpr std::size_t chain_stride = 256;

constexpr void store_le32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v);
  p[1] = static_cast<std::uint8_t>(v >> 8);
  p[2] = static_cast<std::uint8_t>(v >> 16);
  p[3] = static_cast<std::uint8_t>(v >> 24);
}

}  // namespace

std::uint32_t crc32(std::span<const std::uint8_t> bytes) noexcept {
  // zlib takes uInt lengths; feed very large inputs in pieces.
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const std::uint8_t* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const auto n = static_cast<uInt>(std::min<std::size_t>(left, 1u << 30));
    crc = ::crc32(crc, p, n);
    p += n;
    left -= n;
  }
  return static_cast<std::uint32_t>(crc);
}

void encode_frame_header(std::span<const std::uint8_t> payload,
                         std::span<std::uint8_t, frame_header_size> out) noexcept {
  std::memcpy(out.data(), frame_magic, 4);
  out[4] = frame_version;
  out[5] = 0;  // flags
  out[6] = 0;
  out[7] = 0;
  store_le32(out.data() + 8, static_cast<std::uint32_t>(payload.size()));
  store_le32(out.data() + 12, crc32(payload));
  store_le32(out.data() + 16, crc32(out.first(16)));
}

void append_frame(std::span<const std::uint8_t> payload, std::vector<std::uint8_t>& out) {
  const std::size_t at = out.size();
  out.resize(at + frame_header_size + payload.size());
  encode_frame_header(
      payload, std::span<std::uint8_t, frame_header_size>(out.data() + at, frame_header_size));
  if (!payload.empty())
    std::memcpy(out.data() + at + frame_header_size, payload.data(), payload.size());
}

void frame_decoder::feed(std::span<const std::uint8_t> bytes) {
  pos_ += std::exchange(release_, 0);
  compact();
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
}

std::uint32_t frame_decoder::crc(std::uint32_t start, const std::uint8_t* p,
                                 std::size_t n) noexcept {
  stats_.checksummed_bytes += n;
  // n is at most a frame (max_payload_ fits in uInt): one zlib call.
  return static_cast<std::uint32_t>(::crc32(start, p, static_cast<uInt>(n)));
}

std::uint32_t frame_decoder::chain_crc(std::size_t at) {
  if (chain_.empty() || at < chain_origin_) {
    // Start a chain here: every later candidate lies at or after pos_.
    chain_.assign(1, 0);  // the CRC of nothing
    chain_origin_ = pos_;
  }
  const std::size_t i = (at - chain_origin_) / chain_stride;
  while (chain_.size() <= i) {
    const std::size_t from = chain_origin_ + (chain_.size() - 1) * chain_stride;
    chain_.push_back(crc(chain_.back(), buf_.data() + from, chain_stride));
  }
  const std::size_t from = chain_origin_ + i * chain_stride;
  return crc(chain_[i], buf_.data() + from, at - from);
}

std::uint32_t frame_decoder::payload_crc(std::size_t at, std::size_t len) {
  if (len <= direct_crc_limit) return crc(0, buf_.data() + at, len);
  // crc(B) = combine(crc(A), crc(A||B), len(B)): combine(c1, c2, n) is M(n)*c1 ^ c2, linear.
  const auto before = chain_crc(at);
  const auto through = chain_crc(at + len);
  return static_cast<std::uint32_t>(
      ::crc32_combine64(before, through, static_cast<z_off64_t>(len)));
}

void frame_decoder::compact() {
  if (pos_ == 0) return;
  if (pos_ == buf_.size()) {
    chain_.clear();
    buf_.clear();
    pos_ = 0;
    // Do not keep a 16 MiB buffer alive for a connection that sends small frames.
    if (buf_.capacity() > (1u << 20)) std::vector<std::uint8_t>().swap(buf_);
    return;
  }
  // Move the tail down only when the consumed prefix dominates, so that a large partial frame
  // is not copied once per small read.
  if (pos_ >= buf_.size() - pos_) {
    // The chain starts at or before pos_, in bytes about to go: a new one starts when needed
    // (rebuilding it costs no more than this move does).
    chain_.clear();
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<std::ptrdiff_t>(pos_));
    pos_ = 0;
  }
}

void frame_decoder::release_if_empty() noexcept {
  if (release_ != 0 || pos_ != buf_.size()) return;
  std::vector<std::uint8_t>().swap(buf_);
  std::vector<std::uint32_t>().swap(chain_);
  pos_ = 0;
}

void frame_decoder::skip_garbage(std::size_t n) noexcept {
  pos_ += n;
  stats_.garbage_bytes += n;
  header_ok_ = false;
}

decode_result frame_decoder::next() {
  pos_ += std::exchange(release_, 0);
  for (;;) {
    const std::uint8_t* data = buf_.data() + pos_;
    const std::size_t avail = buf_.size() - pos_;

    if (!header_ok_) {
      // Find the magic's first byte, then check the rest of the header.
      const void* hit = avail ? std::memchr(data, frame_magic[0], avail) : nullptr;
      if (hit == nullptr) {
        skip_garbage(avail);
        return {decode_status::need_more, {}};
      }
      const auto off = static_cast<std::size_t>(static_cast<const std::uint8_t*>(hit) - data);
      if (off > 0) {
        skip_garbage(off);
        continue;
      }
      // A prefix of the magic at the end of the buffer may still become a header.
      const std::size_t cmp = std::min<std::size_t>(avail, 4);
      if (std::memcmp(data, frame_magic, cmp) != 0) {
        skip_garbage(1);
        continue;
      }
      if (avail < frame_header_size) return {decode_status::need_more, {}};
      const std::uint32_t header_crc = load_le32(data + 16);
      // Flags and reserved bytes must be zero: a header with them set is not one we wrote,
      // whatever its checksum says (found by fuzz_frame_decoder).
      if (header_crc != crc(0, data, 16) || data[4] != frame_version || data[5] != 0 ||
          data[6] != 0 || data[7] != 0) {
        skip_garbage(1);
        continue;
      }
      const std::uint32_t len = load_le32(data + 8);
      if (len > max_payload_) {
        // Rejected on the header alone: nothing is reserved for it.
        pos_ += frame_header_size;
        ++stats_.oversized_frames;
        return {decode_status::oversized, {}, len};
      }
      header_ok_ = true;
      verified_len_ = len;
      if (buf_.capacity() - pos_ < frame_header_size + len) {
        // Room for the whole frame once its header is trusted; avoids repeated regrowth.
        compact();
        buf_.reserve(pos_ + frame_header_size + len);
        data = buf_.data() + pos_;
      }
    }

    if (avail < frame_header_size + verified_len_) return {decode_status::need_more, {}};
    const std::span<const std::uint8_t> payload{data + frame_header_size, verified_len_};
    if (payload_crc(pos_ + frame_header_size, verified_len_) != load_le32(data + 12)) {
      // Damaged or cut short and overrun by the next frame: resynchronise inside it.
      ++stats_.damaged_frames;
      skip_garbage(1);
      continue;
    }
    header_ok_ = false;
    release_ = frame_header_size + verified_len_;
    ++stats_.frames;
    return {decode_status::frame, payload};
  }
}

bool frame_decoder::abandon_partial() {
  pos_ += std::exchange(release_, 0);
  if (!header_ok_) return false;
  ++stats_.damaged_frames;
  skip_garbage(1);
  return true;
}

void frame_decoder::reset() noexcept {
  buf_.clear();
  chain_.clear();
  pos_ = 0;
  release_ = 0;
  header_ok_ = false;
  verified_len_ = 0;
}

bool frame_decoder::has_partial_frame() const noexcept { return header_ok_; }

}  // namespace qxa::common
