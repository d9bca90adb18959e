// SPDX-License-Identifier: MIT
//
// A stream of Envelopes over any Asio byte stream: a unix socket on the host, the virtio-serial
// char device on the guest, a socketpair in tests.
//
// One writer coroutine owns all writes, fed by a queue, so frames never interleave however many
// coroutines send. Each frame has a deadline. When a frame misses it the stream either closes
// (host: a peer that does not drain is dead to us) or keeps the frame in flight (guest: the
// host may drain later, and a frame is never abandoned half-written, so the framing on the wire
// stays intact). One reader at a time calls receive().
//
// Threading: not thread-safe. Every member is called from the stream's executor, which must be
// single-threaded (an io_context run by one thread, or a strand).
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/buffer.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <tuple>
#include <vector>

#include "qxa/common/async.hpp"
#include "qxa/common/envelope.hpp"
#include "qxa/common/error.hpp"
#include "qxa/common/frame.hpp"
#include "qxa/common/write_queue.hpp"

namespace qxa::common {

struct stream_options {
  /// Largest payload accepted from the peer and sent to it.
  std::size_t max_frame_size = default_max_frame_size;
  /// Bytes the write queue may hold; send() beyond it fails with queue_full.
  std::size_t max_queued_bytes = 64u << 20;
  /// Default deadline of a frame, from the moment it is queued.
  std::chrono::steady_clock::duration write_timeout = std::chrono::seconds(5);
  /// true: a missed write deadline closes the stream. false: the frame stays in flight.
  bool close_on_write_timeout = true;
  /// A frame whose header arrived but whose payload has not progressed for this long is given up
  /// (so that bytes cut short by an old connection cannot hold back the next one). 0 = never.
  std::chrono::steady_clock::duration partial_frame_timeout = std::chrono::seconds(2);
  std::size_t read_buffer_size = 64u << 10;
  /// true: the stream owns no read buffer. It reads only once its descriptor is readable, into
  /// a buffer its thread shares with every such stream, so that an idle connection holds no
  /// buffer at all (qx-agentd with thousands of VMs). false: a buffer of its own, for a stream
  /// that carries bulk data and should not wait for readiness first (the guest's port).
  bool read_on_demand = false;
  /// More bytes than this skipped since the last valid frame end the stream with bad_frame: a
  /// peer that sends only noise is not worth the CPU. 0 = no limit.
  std::size_t max_garbage_bytes = 0;
  /// Told the payload of each frame that passed its checksums but did not parse (counted in
  /// bad_messages, then dropped), so that the host can fail the call such a frame answered
  /// instead of letting it time out. Called on the stream's executor, from receive().
  std::function<void(std::span<const std::uint8_t>)> on_undecodable;
};

struct send_options {
  /// Overrides stream_options::write_timeout for this frame.
  std::optional<std::chrono::steady_clock::duration> timeout;
  /// Non-zero: this frame replaces a queued, not yet started frame with the same key, which
  /// then completes with `superseded` (the newest telemetry sample replaces an unsent one).
  std::uint32_t replace_key = 0;
  /// Goes ahead of every queued frame that is not urgent (never ahead of one being written):
  /// a small reply does not wait behind bulk data such as file chunks or command output.
  bool urgent = false;
};

struct stream_stats {
  std::uint64_t frames_sent = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t frames_received = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t bad_messages = 0;  ///< frames that passed their checksums but did not parse
  std::uint64_t write_timeouts = 0;
  std::uint64_t superseded = 0;
  std::uint64_t stalled_partials = 0;  ///< partial frames given up by partial_frame_timeout
};

/// A stream that can say when it is readable and be read without blocking (asio's sockets and
/// descriptors): what stream_options::read_on_demand needs.
template <typename Stream>
concept waitable_stream = requires(Stream& s, std::error_code& ec) {
  s.non_blocking(true, ec);
  s.read_some(asio::mutable_buffer(), ec);
  s.async_wait(Stream::wait_read, asio::detached);
};

/// The read buffer shared by the streams of this thread that read on demand.
inline std::span<std::uint8_t> thread_read_buffer(std::size_t size) {
  thread_local std::vector<std::uint8_t> buffer;
  if (buffer.size() < size) buffer.resize(size);
  return {buffer.data(), size};
}

/// `Message` is the protobuf type carried in both directions: pb::Envelope between host and
/// guest, pb::ControlMessage on the daemon's control socket.
template <typename Stream, typename Message = pb::Envelope>
class message_stream : public std::enable_shared_from_this<message_stream<Stream, Message>> {
 public:
  using clock = std::chrono::steady_clock;
  using message_type = Message;

  static std::shared_ptr<message_stream> create(Stream stream, stream_options options = {}) {
    return std::shared_ptr<message_stream>(new message_stream(std::move(stream), options));
  }

  ~message_stream() = default;
  message_stream(const message_stream&) = delete;
  message_stream& operator=(const message_stream&) = delete;

  /// Starts the writer. Call once, before the first send.
  void start() {
    if (started_) return;
    started_ = true;
    // The writer is detached; if it ever ends by an exception (a bug), the stream closes at once
    // and every sender learns it, instead of waiting for a writer that is gone.
    std::weak_ptr<message_stream> weak = this->shared_from_this();
    asio::co_spawn(executor_, writer_loop(this->shared_from_this()),
                   contained("the stream's writer", [weak] {
                     if (auto self = weak.lock()) self->close(make_error_code(errc::internal));
                   }));
  }

  /// Queues an envelope and completes when its frame has been written completely, or with:
  /// write_timeout (the deadline passed first; the frame stays queued or in flight unless the
  /// stream closes on timeouts), superseded, queue_full, frame_too_large, closed, or the write's
  /// error. Cancelling the awaiting coroutine completes it with `cancelled`; a frame not yet
  /// started is then withdrawn, one being written is finished (the framing stays intact).
  asio::awaitable<std::error_code> send(const Message& envelope, send_options opts = {}) {
    // Not a coroutine itself: the envelope is serialized before this returns, so a temporary
    // argument never has to outlive the call.
    return await_written(enqueue(envelope, opts));
  }

  /// Queues an envelope without waiting for it to be written. Fails at once only for a closed
  /// stream, a full queue or an oversized message.
  std::error_code post(const Message& envelope, send_options opts = {}) {
    return enqueue(envelope, opts).code();
  }

  /// Completes with the next valid envelope, or with the error that ended the stream: end of
  /// file, the read error, frame_too_large (the peer announced a frame over the limit), closed.
  /// Frames that fail their checksums are skipped and counted; so are frames that do not parse.
  /// Cancelling the awaiting coroutine ends it with operation_aborted and loses no input. One
  /// caller at a time.
  asio::awaitable<result<Message>> receive() {
    for (;;) {
      const decode_result r = decoder_.next();
      if (r.status == decode_status::frame) {
        Message envelope;
        if (!decode_message(r.payload, envelope)) {
          ++stats_.bad_messages;
          if (options_.on_undecodable) options_.on_undecodable(r.payload);
          continue;
        }
        ++stats_.frames_received;
        garbage_at_last_frame_ = decoder_.stats().garbage_bytes;
        co_return envelope;
      }
      if (r.status == decode_status::oversized) {
        co_return result<Message>{errc::frame_too_large,
                                  fmt::format("peer announced a {} byte frame, the limit is {}",
                                              r.announced_size, decoder_.max_payload())};
      }
      if (!open_) co_return result<Message>{close_reason_};
      const auto garbage = decoder_.stats().garbage_bytes - garbage_at_last_frame_;
      if (options_.max_garbage_bytes != 0 && garbage > options_.max_garbage_bytes) {
        co_return result<Message>{
            errc::bad_frame,
            fmt::format("{} bytes of garbage since the last valid frame", garbage)};
      }

      const bool watch = options_.partial_frame_timeout.count() > 0 && decoder_.has_partial_frame();
      if (watch) arm_partial_timer();
      // The read listens to our own signal (for the partial-frame timer); cancellation of the
      // awaiting coroutine (a deadline race, say) is forwarded to it.
      asio::cancellation_state state = co_await asio::this_coro::cancellation_state;
      asio::cancellation_slot parent = state.slot();
      if (parent.is_connected()) {
        parent.assign([signal = &read_cancel_](asio::cancellation_type t) { signal->emit(t); });
      }
      auto [ec, input] = co_await read_once();
      if (parent.is_connected()) parent.clear();
      if (watch) partial_timer_.cancel();
      if (ec == asio::error::operation_aborted && open_ && partial_timed_out_) {
        partial_timed_out_ = false;
        if (decoder_.abandon_partial()) ++stats_.stalled_partials;
        continue;
      }
      if (ec) {
        if (!open_) co_return result<Message>{close_reason_};
        co_return result<Message>{ec, ec.message()};
      }
      stats_.bytes_received += input.size();
      decoder_.feed(input);
    }
  }

  /// Waits until every queued frame is written, or the deadline passes, or the stream closes.
  /// Returns true when the queue drained.
  asio::awaitable<bool> flush(clock::duration timeout) {
    const auto deadline = clock::now() + timeout;
    asio::steady_timer guard(executor_);
    guard.expires_at(deadline);
    guard.async_wait([this, self = this->shared_from_this()](std::error_code ec) {
      if (!ec) idle_.notify_all();
    });
    while (open_ && !writes_.empty() && clock::now() < deadline) co_await idle_.wait();
    guard.cancel();
    co_return writes_.empty();
  }

  /// Closes the byte stream at once and fails every queued frame with `reason` (default
  /// `closed`). A frame cut by the close is never followed by another frame. Idempotent.
  void close(std::error_code reason = make_error_code(errc::closed)) {
    if (!open_) return;
    open_ = false;
    close_reason_ = reason;
    std::error_code ignored;
    stream_.close(ignored);
    partial_timer_.cancel();
    write_deadline_.cancel();
    writes_.close(reason);
    wake_writer_.notify_all();
    idle_.notify_all();
    space_.notify_all();
  }

  /// Waits while the write queue holds more than `bytes` (back-pressure for a producer).
  asio::awaitable<void> wait_queue_below(std::size_t bytes) {
    while (open_ && writes_.queued_bytes() > bytes) co_await space_.wait();
  }

  [[nodiscard]] bool is_open() const noexcept { return open_; }
  [[nodiscard]] std::error_code close_reason() const noexcept { return close_reason_; }
  [[nodiscard]] std::size_t queued_bytes() const noexcept { return writes_.queued_bytes(); }
  [[nodiscard]] std::size_t queued_frames() const noexcept { return writes_.queued_frames(); }
  [[nodiscard]] const stream_stats& stats() const noexcept { return stats_; }
  [[nodiscard]] const decoder_stats& decoding() const noexcept { return decoder_.stats(); }
  /// Bytes of memory the stream holds for its input (its read buffer and partial frames).
  [[nodiscard]] std::size_t input_capacity() const noexcept {
    return read_buf_.capacity() + decoder_.buffer_capacity();
  }
  [[nodiscard]] const stream_options& options() const noexcept { return options_; }
  [[nodiscard]] asio::any_io_executor get_executor() const { return executor_; }
  Stream& next_layer() noexcept { return stream_; }

 private:
  message_stream(Stream stream, stream_options options)
      : executor_(stream.get_executor()),
        stream_(std::move(stream)),
        options_(options),
        decoder_(options.max_frame_size),
        read_buf_(reads_on_demand() ? 0 : options.read_buffer_size),
        writes_(options.max_queued_bytes, gather_limit),
        wake_writer_(executor_),
        idle_(executor_),
        space_(executor_),
        write_deadline_(executor_),
        partial_timer_(executor_) {
    // Reads on demand are tried before waiting: they must never block.
    if constexpr (waitable_stream<Stream>) {
      std::error_code ignored;
      if (options_.read_on_demand) stream_.non_blocking(true, ignored);
    }
  }

  [[nodiscard]] bool reads_on_demand() const noexcept {
    return waitable_stream<Stream> && options_.read_on_demand;
  }

  // One read: into the stream's own buffer, or, on demand, into the thread's once the stream is
  // readable. The span is valid until the next read.
  asio::awaitable<std::pair<std::error_code, std::span<const std::uint8_t>>> read_once() {
    auto slot = asio::bind_cancellation_slot(read_cancel_.slot(),
                                             asio::experimental::as_tuple(asio::use_awaitable));
    if constexpr (waitable_stream<Stream>) {
      if (options_.read_on_demand) {
        const auto into = thread_read_buffer(options_.read_buffer_size);
        for (;;) {
          std::error_code ec;
          const auto n = stream_.read_some(asio::buffer(into.data(), into.size()), ec);
          if (ec != asio::error::would_block && ec != asio::error::try_again) {
            co_return std::pair{ec, into.first(n)};
          }
          decoder_.release_if_empty();  // idle until the peer sends more
          std::tie(ec) = co_await stream_.async_wait(Stream::wait_read, slot);
          if (ec) co_return std::pair{ec, into.first(0)};
        }
      }
    }
    auto [ec, n] = co_await stream_.async_read_some(asio::buffer(read_buf_), slot);
    co_return std::pair{ec, std::span<const std::uint8_t>(read_buf_).first(n)};
  }

  result<write_queue::frame_ptr> enqueue(const Message& envelope, const send_options& opts) {
    if (!open_) return close_reason_;
    auto bytes = encode_message(envelope, options_.max_frame_size);
    if (!bytes) return bytes.error();
    frame_options f;
    f.deadline = clock::now() + opts.timeout.value_or(options_.write_timeout);
    f.replace_key = opts.replace_key;
    f.urgent = opts.urgent;
    auto queued = writes_.push(std::move(bytes.value()), f);
    stats_.superseded = writes_.superseded();
    if (queued) wake_writer_.notify_all();
    return queued;
  }

  asio::awaitable<std::error_code> await_written(result<write_queue::frame_ptr> queued) {
    if (!queued) co_return queued.code();
    auto frame = std::move(queued.value());
    if (frame->done) co_return frame->result;
    auto waiter = std::make_shared<asio::steady_timer>(executor_);
    waiter->expires_at(frame->deadline);
    frame->on_done = [waiter] { waiter->cancel(); };
    std::error_code ec;
    co_await waiter->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    frame->on_done = nullptr;
    if (frame->done) co_return frame->result;
    asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) {
      writes_.withdraw(frame);
      co_return make_error_code(errc::cancelled);
    }
    on_write_deadline();
    co_return make_error_code(errc::write_timeout);
  }

  // A frame missed its deadline: on a stream that closes on timeouts, this is the end of it.
  void on_write_deadline() {
    if (!open_) return;
    ++stats_.write_timeouts;
    if (options_.close_on_write_timeout) close(make_error_code(errc::write_timeout));
  }

  // Frames are gathered into one write while they fit in this many bytes.
  static constexpr std::size_t gather_limit = 256u << 10;

  static asio::awaitable<void> writer_loop(std::shared_ptr<message_stream> self) {
    co_await self->run_writer();
  }

  // Drives the write queue: one batch at a time, each a single gathered write.
  asio::awaitable<void> run_writer() {
    std::vector<asio::const_buffer> buffers;
    while (writes_.is_open()) {
      const auto batch = writes_.start_batch();
      if (batch.empty()) {
        idle_.notify_all();
        co_await wake_writer_.wait();
        continue;
      }
      buffers.clear();
      for (const auto& f : batch) buffers.emplace_back(asio::buffer(f->bytes));
      const auto frames = batch.size();
      arm_write_deadline(writes_.batch_deadline());
      auto [ec, n] = co_await asio::async_write(stream_, buffers,
                                                asio::experimental::as_tuple(asio::use_awaitable));
      ++write_generation_;
      write_deadline_.cancel();
      if (!ec) {
        stats_.bytes_sent += n;
        stats_.frames_sent += frames;
      }
      writes_.finish_batch(ec);
      space_.notify_all();
      if (ec) {
        // A failed write may have left part of a frame on the wire: nothing may follow it.
        close(open_ ? ec : close_reason_);
        break;
      }
    }
    idle_.notify_all();
  }

  void arm_write_deadline(clock::time_point deadline) {
    write_deadline_.expires_at(deadline);
    write_deadline_.async_wait(
        [self = this->shared_from_this(), generation = write_generation_](std::error_code ec) {
          if (ec || !self->writes_.writing() || generation != self->write_generation_) return;
          // Otherwise the frame stays in flight; its sender's own deadline reports the timeout.
          self->on_write_deadline();
        });
  }

  void arm_partial_timer() {
    partial_timed_out_ = false;
    partial_timer_.expires_after(options_.partial_frame_timeout);
    partial_timer_.async_wait([self = this->shared_from_this()](std::error_code ec) {
      if (ec || !self->open_) return;
      self->partial_timed_out_ = true;
      self->read_cancel_.emit(asio::cancellation_type::terminal);
    });
  }

  asio::any_io_executor executor_;
  Stream stream_;
  stream_options options_;
  frame_decoder decoder_;
  std::vector<std::uint8_t> read_buf_;
  write_queue writes_;
  bool open_ = true;
  bool started_ = false;
  bool partial_timed_out_ = false;
  std::uint64_t write_generation_ = 0;
  std::uint64_t garbage_at_last_frame_ = 0;
  std::error_code close_reason_ = make_error_code(errc::closed);
  async_event wake_writer_;
  async_event idle_;
  async_event space_;
  asio::steady_timer write_deadline_;
  asio::steady_timer partial_timer_;
  asio::cancellation_signal read_cancel_;
  stream_stats stats_;
};

}  // namespace qxa::common
