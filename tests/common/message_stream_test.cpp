// SPDX-License-Identifier: MIT
#include "qxa/common/message_stream.hpp"

#include <array>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <catch2/catch.hpp>
#include <map>
#include <optional>
#include <string>

#include "support/run.hpp"

namespace qc = qxa::common;
namespace pb = quantix::agent::v1;
using namespace std::chrono_literals;
using asio::awaitable;
using qxa::test::run_async;
using qxa::test::socket_pair;
using qxa::test::unix_socket;

namespace {

/// A byte stream that accepts at most 32 KiB per write, as the virtio-serial driver does.
class capped_stream {
 public:
  using executor_type = unix_socket::executor_type;
  static constexpr std::size_t cap = 32u << 10;

  explicit capped_stream(unix_socket s) : s_(std::move(s)) {}
  executor_type get_executor() { return s_.get_executor(); }

  template <typename Buffers, typename Token>
  auto async_write_some(const Buffers& buffers, Token&& token) {
    std::array<asio::const_buffer, 8> prefix;
    std::size_t count = 0;
    std::size_t total = 0;
    for (auto it = asio::buffer_sequence_begin(buffers);
         it != asio::buffer_sequence_end(buffers) && count < prefix.size() && total < cap; ++it) {
      asio::const_buffer b = *it;
      const std::size_t take = std::min(b.size(), cap - total);
      prefix[count++] = asio::buffer(b.data(), take);
      total += take;
    }
    ++writes;
    max_write = std::max(max_write, total);
    // The array travels by value: a queued operation keeps its own copy of the buffer list.
    return s_.async_write_some(prefix, std::forward<Token>(token));
  }

  template <typename Buffers, typename Token>
  auto async_read_some(const Buffers& buffers, Token&& token) {
    return s_.async_read_some(buffers, std::forward<Token>(token));
  }

  void close(std::error_code& ec) { s_.close(ec); }

  std::size_t writes = 0;
  std::size_t max_write = 0;

 private:
  unix_socket s_;
};

pb::Envelope ping(std::uint64_t id, std::uint64_t nonce = 0) {
  pb::Envelope e;
  e.set_request_id(id);
  e.mutable_ping()->set_nonce(nonce);
  return e;
}

pb::Envelope blob(std::uint64_t id, std::size_t size, char fill = 'q') {
  pb::Envelope e;
  e.set_request_id(id);
  e.mutable_error()->set_message(std::string(size, fill));
  return e;
}

template <typename S>
auto make_stream(S s, qc::stream_options o = {}) {
  auto m = qc::message_stream<S>::create(std::move(s), o);
  m->start();
  return m;
}

// Reads raw bytes from a socket until `n` are in or the peer closes.
awaitable<std::vector<std::uint8_t>> read_raw(unix_socket& s, std::size_t n) {
  std::vector<std::uint8_t> out(n);
  auto [ec, got] = co_await asio::async_read(s, asio::buffer(out),
                                             asio::experimental::as_tuple(asio::use_awaitable));
  out.resize(got);
  co_return out;
}

}  // namespace

TEST_CASE("messages flow both ways over a socketpair", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    auto left = make_stream(std::move(a));
    auto right = make_stream(std::move(b));
    for (std::uint64_t i = 1; i <= 100; ++i) {
      auto r1 = co_await left->send(ping(i, i * 3));
      REQUIRE_FALSE(r1);
      auto got = co_await right->receive();
      REQUIRE(got);
      CHECK(got->request_id() == i);
      CHECK(got->ping().nonce() == i * 3);
      REQUIRE_FALSE(right->post(ping(1000 + i)));
      auto back = co_await left->receive();
      REQUIRE(back);
      CHECK(back->request_id() == 1000 + i);
    }
    CHECK(left->stats().frames_sent == 100);
    CHECK(right->stats().frames_received == 100);
  });
}

TEST_CASE(
    "streams that read on demand share their thread's buffer, lose nothing and hold no "
    "input memory while idle",
    "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    qc::stream_options on_demand;
    on_demand.read_on_demand = true;
    on_demand.read_buffer_size = 4096;  // frames larger than one read, several frames in one
    auto [a1, b1] = socket_pair(io);
    auto [a2, b2] = socket_pair(io);
    auto send1 = make_stream(std::move(a1)), send2 = make_stream(std::move(a2));
    auto recv1 = make_stream(std::move(b1), on_demand),
         recv2 = make_stream(std::move(b2), on_demand);
    CHECK(recv1->input_capacity() == 0);
    for (std::uint64_t round = 1; round <= 20; ++round) {
      // A burst of small frames and one of 300 KiB on each, read in turns: each read of one
      // stream lands in the buffer the other just used.
      for (std::uint64_t i = 0; i < 10; ++i) {
        REQUIRE_FALSE(send1->post(ping(round * 100 + i, 1)));
        REQUIRE_FALSE(send2->post(ping(round * 100 + i, 2)));
      }
      REQUIRE_FALSE(send1->post(blob(round, 300u << 10, 'x')));
      REQUIRE_FALSE(send2->post(blob(round, 300u << 10, 'y')));
      for (std::uint64_t i = 0; i < 10; ++i) {
        auto g1 = co_await recv1->receive();
        auto g2 = co_await recv2->receive();
        REQUIRE(g1);
        REQUIRE(g2);
        CHECK(g1->request_id() == round * 100 + i);
        CHECK(g1->ping().nonce() == 1);
        CHECK(g2->request_id() == round * 100 + i);
        CHECK(g2->ping().nonce() == 2);
      }
      auto big1 = co_await recv1->receive();
      auto big2 = co_await recv2->receive();
      REQUIRE(big1);
      REQUIRE(big2);
      CHECK(big1->error().message() == std::string(300u << 10, 'x'));
      CHECK(big2->error().message() == std::string(300u << 10, 'y'));
    }
    // Idle: a receive waits for more, and meanwhile the stream holds no input memory.
    REQUIRE_FALSE(send1->post(ping(7, 7)));
    auto g = co_await recv1->receive();
    REQUIRE(g);
    asio::cancellation_signal stop;
    asio::co_spawn(
        io, [r = recv1]() -> awaitable<void> { (void)co_await r->receive(); },
        asio::bind_cancellation_slot(stop.slot(), asio::detached));
    // The receive runs up to its wait before these turns of the loop are taken.
    for (int i = 0; i < 3; ++i) co_await asio::post(io, asio::use_awaitable);
    CHECK(recv1->input_capacity() == 0);
    stop.emit(asio::cancellation_type::terminal);
    CHECK(recv1->decoding().garbage_bytes == 0);
    CHECK(recv2->decoding().damaged_frames == 0);
  });
}

TEST_CASE("a stream whose writes are capped at 32 KiB carries large messages intact", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    auto sender = make_stream(capped_stream(std::move(a)));
    auto receiver = make_stream(std::move(b));
    // Sent concurrently with the reads: the socket buffer is smaller than the messages.
    for (std::uint64_t i = 1; i <= 4; ++i)
      REQUIRE_FALSE(sender->post(blob(i, 1u << 20, char('a' + i))));
    for (std::uint64_t i = 1; i <= 4; ++i) {
      auto got = co_await receiver->receive();
      REQUIRE(got);
      CHECK(got->request_id() == i);
      CHECK(got->error().message() == std::string(1u << 20, char('a' + i)));
    }
    CHECK(sender->next_layer().max_write <= capped_stream::cap);
    CHECK(sender->next_layer().writes >= 4 * 32);
    CHECK(receiver->decoding().garbage_bytes == 0);
  });
}

TEST_CASE("concurrent senders from many coroutines never interleave bytes", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    auto sender = make_stream(capped_stream(std::move(a)));
    auto receiver = make_stream(std::move(b));
    constexpr int senders = 50;
    constexpr int per_sender = 40;
    int finished = 0;
    for (int s = 0; s < senders; ++s) {
      asio::co_spawn(
          io,
          [&, s]() -> awaitable<void> {
            for (int i = 0; i < per_sender; ++i) {
              // Sizes vary so that frames straddle the 32 KiB write cap.
              auto e = blob(static_cast<std::uint64_t>(s) * 1000 + i,
                            100 + (s * 977 + i * 131) % 40000, char('A' + s % 26));
              auto r2 = co_await sender->send(e);
              REQUIRE_FALSE(r2);
            }
            ++finished;
          },
          asio::detached);
    }
    std::map<int, int> next_of_sender;
    for (int n = 0; n < senders * per_sender; ++n) {
      auto got = co_await receiver->receive();
      REQUIRE(got);
      const int s = static_cast<int>(got->request_id() / 1000);
      const int i = static_cast<int>(got->request_id() % 1000);
      CHECK(i == next_of_sender[s]++);  // each sender's messages arrive in its order
      const auto& m = got->error().message();
      REQUIRE(m.size() == static_cast<std::size_t>(100 + (s * 977 + i * 131) % 40000));
      CHECK(m.find_first_not_of(char('A' + s % 26)) == std::string::npos);
    }
    while (finished < senders) co_await asio::post(asio::use_awaitable);  // last completions
    CHECK(receiver->decoding().garbage_bytes == 0);
    CHECK(receiver->decoding().damaged_frames == 0);
  });
}

TEST_CASE(
    "a stalled write hits its deadline, closes the stream and leaves no frame after a cut one",
    "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, peer] = socket_pair(io);
    qc::stream_options o;
    o.write_timeout = 200ms;
    o.close_on_write_timeout = true;
    auto s = make_stream(std::move(a), o);
    // The peer reads nothing, so the socket buffer fills and the write stalls.
    std::error_code first_error;
    int sent = 0;
    for (; sent < 1000 && !first_error; ++sent)
      first_error = co_await s->send(blob(sent + 1, 64u << 10));
    CHECK(first_error == qc::errc::write_timeout);
    CHECK_FALSE(s->is_open());
    CHECK(s->close_reason() == qc::errc::write_timeout);
    CHECK(s->stats().write_timeouts == 1);
    auto r3 = co_await s->send(ping(99999));
    CHECK(r3 == qc::errc::write_timeout);  // the reason it closed

    // Everything the peer can read: whole frames, then at most one cut frame, then EOF.
    auto raw = co_await read_raw(peer, 1u << 30);
    qc::frame_decoder d;
    d.feed(raw);
    std::uint64_t expect = 1;
    for (auto r = d.next(); r.status == qc::decode_status::frame; r = d.next()) {
      pb::Envelope e;
      REQUIRE(qc::decode_envelope(r.payload, e));
      CHECK(e.request_id() == expect++);
    }
    CHECK(expect >= 2);
    CHECK(d.stats().garbage_bytes == 0);
    CHECK(d.stats().damaged_frames == 0);
    CHECK(d.buffered_bytes() < qc::frame_header_size + (64u << 10) + 100);
  });
}

TEST_CASE("a stalled write that keeps its frame reports the timeout and resumes intact",
          "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    qc::stream_options o;
    o.write_timeout = 100ms;
    o.close_on_write_timeout = false;
    auto s = make_stream(capped_stream(std::move(a)), o);
    int sent = 0;
    std::error_code ec;
    while (!ec) {
      ++sent;
      ec = co_await s->send(blob(sent, 48u << 10));
    }
    CHECK(ec == qc::errc::write_timeout);
    CHECK(s->is_open());
    // More frames queue behind the stuck one.
    for (int i = 0; i < 3; ++i) REQUIRE_FALSE(s->post(blob(++sent, 1000)));

    // The peer drains now: every frame arrives whole and in order.
    auto r = make_stream(std::move(b));
    for (int i = 1; i <= sent; ++i) {
      auto got = co_await r->receive();
      INFO("frame " << i << " of " << sent << ": "
                    << (got ? std::string("ok") : got.error().describe()));
      REQUIRE(got);
      CHECK(got->request_id() == static_cast<std::uint64_t>(i));
    }
    CHECK(r->decoding().garbage_bytes == 0);
    CHECK(r->decoding().damaged_frames == 0);
    CHECK(s->stats().write_timeouts >= 1);
  });
}

TEST_CASE("a newer message with the same key replaces an unsent one", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    qc::stream_options o;
    o.close_on_write_timeout = false;
    o.write_timeout = 50ms;
    auto s = make_stream(std::move(a), o);
    // Stall the writer with a frame the peer does not read yet.
    REQUIRE_FALSE(s->post(blob(1, 8u << 20)));
    auto r4 = co_await s->send(ping(2), {.timeout = {}, .replace_key = 5});
    CHECK(r4 == qc::errc::write_timeout);
    auto r5 = co_await s->send(ping(3), {.timeout = {}, .replace_key = 5});
    CHECK(r5 == qc::errc::write_timeout);
    REQUIRE_FALSE(s->post(ping(4), {.timeout = {}, .replace_key = 5}));
    CHECK(s->stats().superseded == 2);
    auto r = make_stream(std::move(b));
    auto first = co_await r->receive();
    REQUIRE(first);
    CHECK(first->request_id() == 1);
    auto second = co_await r->receive();
    REQUIRE(second);
    CHECK(second->request_id() == 4);  // 2 and 3 were replaced while waiting
  });
}

TEST_CASE("closing fails every queued send at once", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    qc::stream_options o;
    o.write_timeout = 30s;
    auto s = make_stream(std::move(a), o);
    REQUIRE_FALSE(s->post(blob(1, 8u << 20)));  // stalls: nobody reads
    int failed = 0;
    for (int i = 0; i < 20; ++i) {
      asio::co_spawn(
          io,
          [&, i]() -> awaitable<void> {
            if (co_await s->send(ping(10 + i)) == qc::errc::closed) ++failed;
          },
          asio::detached);
    }
    co_await qxa::test::sleep_for(20ms);
    s->close();
    while (failed < 20) co_await qxa::test::sleep_for(1ms);
    auto r6 = co_await s->send(ping(1));
    CHECK(r6 == qc::errc::closed);
    (void)b;
  });
}

TEST_CASE("the reader reports end of file, and an oversized frame before reading it", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    SECTION("end of file") {
      auto [a, b] = socket_pair(io);
      auto s = make_stream(std::move(a));
      b.close();
      auto r = co_await s->receive();
      REQUIRE_FALSE(r);
      CHECK(r.code() == asio::error::eof);
    }
    SECTION("oversized") {
      auto [a, b] = socket_pair(io);
      qc::stream_options o;
      o.max_frame_size = 1024;
      auto s = make_stream(std::move(a), o);
      auto peer = make_stream(std::move(b));
      auto r7 = co_await peer->send(blob(1, 4096));
      REQUIRE_FALSE(r7);
      auto r = co_await s->receive();
      REQUIRE_FALSE(r);
      CHECK(r.code() == qc::errc::frame_too_large);
      CHECK_THAT(r.error().message, Catch::Contains("limit is 1024"));
    }
  });
}

TEST_CASE("bytes cut short by an old connection do not hold back the next frame", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    qc::stream_options o;
    o.partial_frame_timeout = 100ms;
    auto s = make_stream(std::move(a), o);
    auto whole = qc::encode_envelope(blob(1, 5000));
    REQUIRE(whole);
    std::vector<std::uint8_t> wire(whole->begin(), whole->begin() + 100);  // cut short
    auto good = qc::encode_envelope(ping(2));
    wire.insert(wire.end(), good->begin(), good->end());
    co_await asio::async_write(b, asio::buffer(wire), asio::use_awaitable);
    const auto t0 = std::chrono::steady_clock::now();
    auto r = co_await s->receive();
    REQUIRE(r);
    CHECK(r->request_id() == 2);
    CHECK(std::chrono::steady_clock::now() - t0 >= 90ms);
    CHECK(s->stats().stalled_partials == 1);
  });
}

TEST_CASE("frames that do not parse are skipped and counted", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    auto s = make_stream(std::move(a));
    std::vector<std::uint8_t> wire;
    const std::uint8_t junk[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    qc::append_frame(junk, wire);
    auto good = qc::encode_envelope(ping(5));
    wire.insert(wire.end(), good->begin(), good->end());
    co_await asio::async_write(b, asio::buffer(wire), asio::use_awaitable);
    auto r = co_await s->receive();
    REQUIRE(r);
    CHECK(r->request_id() == 5);
    CHECK(s->stats().bad_messages == 1);
  });
}

TEST_CASE("the write queue is bounded and flush waits for it to drain", "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    qc::stream_options o;
    o.max_queued_bytes = 1u << 20;
    o.close_on_write_timeout = false;
    auto s = make_stream(std::move(a), o);
    std::error_code ec;
    int posted = 0;
    while (!ec) {
      ec = s->post(blob(++posted, 100u << 10));
    }
    CHECK(ec == qc::errc::queue_full);
    CHECK(s->queued_bytes() <= o.max_queued_bytes);
    auto r8 = co_await s->flush(100ms);
    CHECK_FALSE(r8);  // nobody reads yet
    auto r = make_stream(std::move(b));
    asio::co_spawn(
        io,
        [r, n = posted - 1]() -> awaitable<void> {
          for (int i = 0; i < n; ++i) (void)co_await r->receive();
        },
        asio::detached);
    auto r9 = co_await s->flush(10s);
    CHECK(r9);
    CHECK(s->queued_bytes() == 0);
  });
}

TEST_CASE("an urgent frame overtakes queued bulk frames but not the one being written",
          "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    auto sender = make_stream(capped_stream(std::move(a)));
    auto receiver = make_stream(std::move(b));
    for (std::uint64_t i = 1; i <= 4; ++i) REQUIRE_FALSE(sender->post(blob(i, 256u << 10)));
    // Let the writer start on the first bulk frame, then queue a small urgent one.
    co_await qxa::test::sleep_for(1ms);
    qc::send_options urgent;
    urgent.urgent = true;
    REQUIRE_FALSE(sender->post(ping(99), urgent));
    REQUIRE_FALSE(sender->post(ping(100)));  // not urgent: stays behind the bulk
    std::vector<std::uint64_t> order;
    for (int i = 0; i < 6; ++i) {
      auto got = co_await receiver->receive();
      REQUIRE(got);
      order.push_back(got->request_id());
    }
    // Frame 1 was already being written; 99 goes before the rest of the queue.
    CHECK(order == std::vector<std::uint64_t>{1, 99, 2, 3, 4, 100});
  });
}

TEST_CASE("a cancelled send ends with cancelled at once, and its unsent frame is withdrawn",
          "[common]") {
  run_async([](asio::io_context& io) -> awaitable<void> {
    auto [a, b] = socket_pair(io);
    qc::stream_options o;
    o.write_timeout = 30s;
    auto sender = make_stream(std::move(a), o);
    // Nobody reads yet: the first frames fill the socket and the rest wait in the queue.
    for (std::uint64_t i = 1; i <= 8; ++i) REQUIRE_FALSE(sender->post(blob(i, 1u << 20)));
    co_await asio::post(asio::use_awaitable);
    asio::cancellation_signal cancel;
    std::optional<std::error_code> outcome;
    asio::co_spawn(
        io, [&]() -> awaitable<void> { outcome = co_await sender->send(ping(77)); },
        asio::bind_cancellation_slot(cancel.slot(), asio::detached));
    co_await asio::post(asio::use_awaitable);
    const auto queued = sender->queued_bytes();
    cancel.emit(asio::cancellation_type::terminal);
    while (!outcome) co_await asio::post(asio::use_awaitable);
    CHECK(*outcome == qc::errc::cancelled);
    CHECK(sender->queued_bytes() < queued);
    CHECK(sender->is_open());
    // The peer reads everything: the withdrawn ping never arrives, what follows it does.
    auto receiver = make_stream(std::move(b));
    REQUIRE_FALSE(sender->post(ping(78)));
    for (std::uint64_t i = 1; i <= 8; ++i) {
      auto got = co_await receiver->receive();
      REQUIRE(got);
      CHECK(got->request_id() == i);
    }
    auto next = co_await receiver->receive();
    REQUIRE(next);
    CHECK(next->request_id() == 78);
  });
}
