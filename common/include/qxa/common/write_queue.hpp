// SPDX-License-Identifier: MIT
//
// The send side of a message stream as a plain state machine, with no I/O and no clock of its
// own (the driver passes deadlines in): what is queued, in what order it goes out, which frames
// are gathered into one write, and how each frame ends. message_stream drives it with one
// writer coroutine; the unit tests drive it directly.
//
// Order: urgent frames form a prefix of the queue, in the order they came; the rest follow in
// theirs. A frame with a replace key takes the place of a queued, unstarted frame with the same
// key (which ends `superseded`), keeping that place in line unless it is urgent and may go
// further ahead. Frames being written are never reordered, replaced or cut.
//
// Accounting: queued_bytes() is the size of every frame not yet ended plus those being written;
// it is exact (a frame's bytes are released once, when it ends or its batch does), and every
// change is checked against it.
//
// Threading: not thread-safe; used from one executor.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <system_error>
#include <vector>

#include "qxa/common/error.hpp"
#include "qxa/common/frame.hpp"

namespace qxa::common {

/// One frame on its way out. Shared between the queue and the sender waiting for it.
struct outgoing_frame {
  using clock = std::chrono::steady_clock;

  frame_bytes bytes;
  clock::time_point deadline;
  std::uint32_t replace_key = 0;
  bool urgent = false;
  bool started = false;  ///< taken into a batch: it will be written whole or the stream closes
  bool done = false;
  std::error_code result;  ///< once done: empty when written
  /// Called once when the frame ends (the sender's wake-up); may be empty.
  std::function<void()> on_done;

  void complete(std::error_code ec) {
    if (done) return;
    done = true;
    result = ec;
    if (auto f = std::move(on_done)) f();
  }
};

struct frame_options {
  std::chrono::steady_clock::time_point deadline;
  std::uint32_t replace_key = 0;
  bool urgent = false;
};

class write_queue {
 public:
  using frame_ptr = std::shared_ptr<outgoing_frame>;

  /// `max_bytes`: what queued_bytes() may reach; `gather_limit`: frames are gathered into one
  /// write while the batch stays within it (a larger frame goes alone).
  explicit write_queue(std::size_t max_bytes, std::size_t gather_limit = 256u << 10)
      : max_bytes_(max_bytes), gather_limit_(gather_limit) {}

  /// Queues a frame. Fails with queue_full when it would take queued_bytes() past the limit
  /// (the bytes of a frame it replaces count as freed), or with the close reason once closed.
  result<frame_ptr> push(frame_bytes bytes, const frame_options& options);

  /// Takes the next batch: frames from the front while the batch stays within the gather
  /// limit, at least one. Empty when nothing is queued, while a batch is being written, or
  /// once closed. The frames stay in the batch until finish_batch().
  std::span<const frame_ptr> start_batch();

  /// Ends the batch being written: each frame completes with `ec` (or the close reason when the
  /// queue was closed meanwhile), and its bytes are released.
  void finish_batch(std::error_code ec);

  /// Takes back a frame whose sender stopped waiting (cancelled): one still queued is removed
  /// and ends `cancelled`; one already started is written whole. True when it was removed.
  bool withdraw(const frame_ptr& frame);

  /// Fails every queued frame and every frame being written with `reason`; the batch's bytes
  /// stay counted until finish_batch(). Later pushes fail with `reason`. Idempotent.
  void close(std::error_code reason);

  [[nodiscard]] bool is_open() const noexcept { return open_; }
  [[nodiscard]] bool writing() const noexcept { return !batch_.empty(); }
  [[nodiscard]] bool empty() const noexcept { return queue_.empty() && batch_.empty(); }
  [[nodiscard]] std::size_t queued_bytes() const noexcept { return bytes_; }
  [[nodiscard]] std::size_t queued_frames() const noexcept { return queue_.size(); }
  [[nodiscard]] std::span<const frame_ptr> batch() const noexcept { return batch_; }
  /// The earliest deadline of the batch being written (time_point::max() when none).
  [[nodiscard]] outgoing_frame::clock::time_point batch_deadline() const noexcept;
  [[nodiscard]] std::uint64_t superseded() const noexcept { return superseded_; }

 private:
  void release(std::size_t n);
  [[nodiscard]] std::deque<frame_ptr>::iterator first_not_urgent();

  std::size_t max_bytes_;
  std::size_t gather_limit_;
  std::deque<frame_ptr> queue_;
  std::vector<frame_ptr> batch_;
  std::size_t bytes_ = 0;
  std::uint64_t superseded_ = 0;
  bool open_ = true;
  std::error_code close_reason_ = make_error_code(errc::closed);
};

}  // namespace qxa::common
