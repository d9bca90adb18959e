// SPDX-License-Identifier: MIT
#include "qxa/common/write_queue.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace qxa::common {

std::deque<write_queue::frame_ptr>::iterator write_queue::first_not_urgent() {
  return std::find_if(queue_.begin(), queue_.end(), [](const frame_ptr& f) { return !f->urgent; });
}

result<write_queue::frame_ptr> write_queue::push(frame_bytes bytes,
                                                 const frame_options& options) {
  if (!open_) return close_reason_;
  auto replaced = queue_.end();
  if (options.replace_key != 0) {
    replaced = std::find_if(queue_.begin(), queue_.end(), [&](const frame_ptr& f) {
      return f->replace_key == options.replace_key;
    });
  }
  const std::size_t freed = replaced != queue_.end() ? (*replaced)->bytes.size() : 0;
  if (bytes_ - freed + bytes.size() > max_bytes_) {
    return {errc::queue_full, fmt::format("{} bytes already queued", bytes_)};
  }
  auto frame = std::make_shared<outgoing_frame>();
  frame->bytes = std::move(bytes);
  frame->deadline = options.deadline;
  frame->replace_key = options.replace_key;
  frame->urgent = options.urgent;
  bytes_ += frame->bytes.size();

  std::ptrdiff_t place = -1;  // the replaced frame's place in line, if any
  if (replaced != queue_.end()) {
    auto old = std::move(*replaced);
    place = replaced - queue_.begin();
    queue_.erase(replaced);
    release(old->bytes.size());
    ++superseded_;
    old->complete(make_error_code(errc::superseded));
  }
  // Urgent frames stay a prefix: an urgent one goes at the end of that prefix or, replacing,
  // at the older frame's place if that is further ahead; any other frame goes after the prefix,
  // at the older frame's place or the end.
  const std::ptrdiff_t prefix_end = first_not_urgent() - queue_.begin();
  const auto size = static_cast<std::ptrdiff_t>(queue_.size());
  std::ptrdiff_t at = 0;
  if (frame->urgent) {
    at = place >= 0 ? std::min(place, prefix_end) : prefix_end;
  } else {
    at = place >= 0 ? std::max(place, prefix_end) : size;
  }
  queue_.insert(queue_.begin() + at, frame);
  return frame;
}

std::span<const write_queue::frame_ptr> write_queue::start_batch() {
  if (!open_ || !batch_.empty()) return {};
  std::size_t batch_bytes = 0;
  while (!queue_.empty() &&
         (batch_.empty() || batch_bytes + queue_.front()->bytes.size() <= gather_limit_)) {
    auto f = std::move(queue_.front());
    queue_.pop_front();
    f->started = true;
    batch_bytes += f->bytes.size();
    batch_.push_back(std::move(f));
  }
  return batch_;
}

void write_queue::finish_batch(std::error_code ec) {
  auto batch = std::move(batch_);
  batch_.clear();
  for (auto& f : batch) {
    release(f->bytes.size());
    f->complete(open_ ? ec : close_reason_);
  }
}

bool write_queue::withdraw(const frame_ptr& frame) {
  auto it = std::find(queue_.begin(), queue_.end(), frame);
  if (it == queue_.end()) return false;
  queue_.erase(it);
  release(frame->bytes.size());
  frame->complete(make_error_code(errc::cancelled));
  return true;
}

void write_queue::close(std::error_code reason) {
  if (!open_) return;
  open_ = false;
  close_reason_ = reason;
  auto queued = std::move(queue_);
  queue_.clear();
  for (auto& f : queued) {
    release(f->bytes.size());
    f->complete(reason);
  }
  // The batch's frames end now (their senders learn at once); their bytes are released by
  // finish_batch(), when the write that holds them returns.
  for (auto& f : batch_) f->complete(reason);
}

outgoing_frame::clock::time_point write_queue::batch_deadline() const noexcept {
  auto deadline = outgoing_frame::clock::time_point::max();
  for (const auto& f : batch_) deadline = std::min(deadline, f->deadline);
  return deadline;
}

void write_queue::release(std::size_t n) {
  if (n > bytes_) {
    // Never clamped: a frame released twice, or never counted, is a bug to surface.
    throw std::logic_error(
        fmt::format("write queue accounting: releasing {} bytes of {} counted", n, bytes_));
  }
  bytes_ -= n;
}

}  // namespace qxa::common
