// SPDX-License-Identifier: MIT
//
// The frame codec: bytes in, frames out, no I/O.
//
// A frame is a 20-byte header followed by one payload (a serialized Envelope):
//
//   offset  size  field
//   0       4     magic F5 51 58 41 ("\xF5QXA")
//   4       1     protocol version (1)
//   5       1     flags (none defined; a frame with unknown flags is damaged)
//   6       2     reserved, zero
//   8       4     payload length, little endian
//   12      4     CRC-32 of the payload
//   16      4     CRC-32 of bytes 0..15
//
// The header checksum is what lets the decoder trust a length before waiting for the payload,
// and what keeps a copy of the magic inside a payload from being taken for a frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

namespace qxa::common {

inline constexpr std::uint8_t frame_magic[4] = {0xF5, 0x51, 0x58, 0x41};
inline constexpr std::uint8_t frame_version = 1;
inline constexpr std::size_t frame_header_size = 20;
inline constexpr std::size_t default_max_frame_size = 16u << 20;  // payload bytes

/// An allocator whose default construction leaves the bytes as they are: a vector of it grows
/// without zeroing what is about to be written anyway (a frame is serialized into its bytes).
template <class T>
struct uninitialized_allocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = uninitialized_allocator<U>;
  };
  uninitialized_allocator() = default;
  template <class U>
  uninitialized_allocator(const uninitialized_allocator<U>&) noexcept {}  // NOLINT: rebinding
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

/// The bytes of one encoded frame, header and payload.
using frame_bytes = std::vector<std::uint8_t, uninitialized_allocator<std::uint8_t>>;

/// CRC-32 (zlib's polynomial) of a byte range.
std::uint32_t crc32(std::span<const std::uint8_t> bytes) noexcept;

/// Writes the header for `payload` into `out` (frame_header_size bytes).
void encode_frame_header(std::span<const std::uint8_t> payload,
                         std::span<std::uint8_t, frame_header_size> out) noexcept;

/// Appends a whole frame (header and payload) to `out`.
void append_frame(std::span<const std::uint8_t> payload, std::vector<std::uint8_t>& out);

/// Counters of what the decoder has seen; all grow monotonically.
struct decoder_stats {
  std::uint64_t frames = 0;            ///< good frames returned
  std::uint64_t garbage_bytes = 0;     ///< bytes skipped while looking for a header
  std::uint64_t damaged_frames = 0;    ///< valid header, payload checksum wrong or cut short
  std::uint64_t oversized_frames = 0;  ///< valid header announcing more than the maximum
  /// Bytes run through CRC-32 (headers, payloads, checkpoints): the decoder's work. However
  /// the input is made, it stays within a small constant times the bytes fed.
  std::uint64_t checksummed_bytes = 0;
};

enum class decode_status {
  frame,      ///< `payload` holds one frame's payload
  need_more,  ///< every buffered byte is consumed or is the start of an incomplete frame
  oversized,  ///< a valid header announced a payload over the maximum; it was skipped
};

struct decode_result {
  decode_status status;
  /// For `frame`: the payload, valid until the next call to feed(), next() or reset().
  std::span<const std::uint8_t> payload;
  /// For `oversized`: the announced length.
  std::uint64_t announced_size = 0;
};

/// Incremental frame decoder. Accepts input in pieces of any size. Enforces the maximum frame
/// size from the header alone, before buffering the payload. After garbage or a damaged frame it
/// resynchronises on the next valid header (the byte after the damaged one's start).
///
/// Work per byte is bounded whatever the peer sends. Headers that overlap, each announcing a
/// large payload with a wrong checksum, would cost one whole payload checksum per 20 bytes
/// received if every candidate were checksummed from scratch. Instead the checksum of a large
/// payload is derived from running CRCs kept at checkpoints through the buffer (CRC-32 is
/// linear: crc(B) follows from crc(A) and crc(A||B)), so checking one candidate costs at most
/// two checkpoint strides, and each buffered byte is checkpointed about once.
/// Not thread-safe; one per stream.
class frame_decoder {
 public:
  explicit frame_decoder(std::size_t max_payload = default_max_frame_size)
      : max_payload_(max_payload) {}

  /// Appends input. Bytes of frames already returned are released here.
  void feed(std::span<const std::uint8_t> bytes);

  /// Returns the next event. Call until it returns need_more, then feed() more input.
  decode_result next();

  /// Gives up on a frame whose header arrived but whose payload has not: counts it damaged and
  /// resynchronises after its first byte. For a reader that saw no progress for too long, or at
  /// the end of input, so that a truncated frame cannot hold back the good frames behind it.
  /// Returns true when there was such a frame.
  bool abandon_partial();

  /// Drops all buffered input (a new connection starts clean).
  void reset() noexcept;

  /// Frees the buffer's memory when every byte in it has been consumed, so that an idle
  /// connection holds none.
  void release_if_empty() noexcept;

  /// True when a valid header is buffered and its payload is incomplete.
  [[nodiscard]] bool has_partial_frame() const noexcept;
  [[nodiscard]] std::size_t buffered_bytes() const noexcept { return buf_.size() - pos_; }
  [[nodiscard]] std::size_t buffer_capacity() const noexcept { return buf_.capacity(); }
  [[nodiscard]] std::size_t max_payload() const noexcept { return max_payload_; }
  [[nodiscard]] const decoder_stats& stats() const noexcept { return stats_; }

 private:
  void skip_garbage(std::size_t n) noexcept;
  void compact();
  /// zlib's crc32 continued from `start` (0 starts afresh), counted in the stats.
  std::uint32_t crc(std::uint32_t start, const std::uint8_t* p, std::size_t n) noexcept;
  /// CRC-32 of buf_[at, at + len).
  std::uint32_t payload_crc(std::size_t at, std::size_t len);
  /// CRC-32 of buf_[chain_origin_, at): the running CRC at buffer index `at`.
  std::uint32_t chain_crc(std::size_t at);

  std::size_t max_payload_;
  std::vector<std::uint8_t> buf_;
  std::size_t pos_ = 0;           // first unconsumed byte
  std::size_t release_ = 0;       // bytes of the last returned frame, released on the next call
  std::size_t verified_len_ = 0;  // payload length of the validated header at pos_, if any
  bool header_ok_ = false;        // the header at pos_ has been validated
  // Checkpoints of the running CRC for large payloads: chain_[i] is the CRC-32 of
  // buf_[chain_origin_, chain_origin_ + i * chain_stride). Empty until a large payload is
  // checked; cleared when compaction drops the bytes they start from.
  std::size_t chain_origin_ = 0;
  std::vector<std::uint32_t> chain_;
  decoder_stats stats_;
};

}  // namespace qxa::common
