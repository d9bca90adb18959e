// SPDX-License-Identifier: MIT
// The write queue's order, replacement, gathering and accounting, driven without any I/O.
#include "qxa/common/write_queue.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <vector>

namespace qc = qxa::common;
using qc::errc;
using clock_type = std::chrono::steady_clock;

namespace {

qc::frame_bytes bytes_of(std::size_t n, std::uint8_t tag) {
  return qc::frame_bytes(n, tag);
}

qc::frame_options opts(bool urgent = false, std::uint32_t key = 0) {
  qc::frame_options o;
  o.deadline = clock_type::now() + std::chrono::seconds(5);
  o.urgent = urgent;
  o.replace_key = key;
  return o;
}

// The tags of the frames a writer would take, batch by batch, writing each one successfully.
std::vector<std::uint8_t> drain(qc::write_queue& q) {
  std::vector<std::uint8_t> order;
  for (auto batch = q.start_batch(); !batch.empty(); batch = q.start_batch()) {
    for (const auto& f : batch) order.push_back(f->bytes.front());
    q.finish_batch({});
  }
  return order;
}

}  // namespace

TEST_CASE("urgent frames go ahead of queued bulk data, in the order they came", "[common]") {
  qc::write_queue q(1u << 20, 10);  // a gather limit of 10 bytes: one 8-byte frame per batch
  auto bulk1 = q.push(bytes_of(8, 1), opts());
  auto bulk2 = q.push(bytes_of(8, 2), opts());
  auto urgent1 = q.push(bytes_of(8, 3), opts(true));
  auto urgent2 = q.push(bytes_of(8, 4), opts(true));
  REQUIRE((bulk1 && bulk2 && urgent1 && urgent2));
  CHECK(drain(q) == std::vector<std::uint8_t>{3, 4, 1, 2});
  CHECK(q.queued_bytes() == 0);
  CHECK((*bulk1)->done);
  CHECK(!(*bulk1)->result);
}

TEST_CASE("an urgent frame never goes ahead of the frame being written", "[common]") {
  qc::write_queue q(1u << 20, 10);
  REQUIRE(q.push(bytes_of(8, 1), opts()));
  REQUIRE(q.push(bytes_of(8, 2), opts()));
  auto batch = q.start_batch();
  REQUIRE(batch.size() == 1);
  CHECK(batch.front()->started);
  REQUIRE(q.push(bytes_of(8, 3), opts(true)));
  CHECK(q.batch().front()->bytes.front() == 1);  // the batch being written is untouched
  q.finish_batch({});
  CHECK(drain(q) == std::vector<std::uint8_t>{3, 2});
}

TEST_CASE("a replacing frame takes the older one's place, or goes further ahead when urgent",
          "[common]") {
  qc::write_queue q(1u << 20, 10);
  SECTION("not urgent: the newest sample keeps the place of the one it replaces") {
    auto old = q.push(bytes_of(8, 1), opts(false, 7));
    REQUIRE(q.push(bytes_of(8, 2), opts()));
    auto fresh = q.push(bytes_of(8, 3), opts(false, 7));
    REQUIRE((old && fresh));
    CHECK((*old)->done);
    CHECK((*old)->result == errc::superseded);
    CHECK(q.superseded() == 1);
    CHECK(q.queued_bytes() == 16);
    CHECK(drain(q) == std::vector<std::uint8_t>{3, 2});
  }
  SECTION("urgent: a replacing frame keeps its urgency") {
    REQUIRE(q.push(bytes_of(8, 1), opts()));
    REQUIRE(q.push(bytes_of(8, 2), opts(false, 7)));
    REQUIRE(q.push(bytes_of(8, 3), opts(true, 7)));
    CHECK(drain(q) == std::vector<std::uint8_t>{3, 1});
  }
  SECTION("a non-urgent frame replacing an urgent one goes after the urgent prefix") {
    REQUIRE(q.push(bytes_of(8, 1), opts(true, 7)));
    REQUIRE(q.push(bytes_of(8, 2), opts(true)));
    REQUIRE(q.push(bytes_of(8, 3), opts()));
    REQUIRE(q.push(bytes_of(8, 4), opts(false, 7)));
    CHECK(drain(q) == std::vector<std::uint8_t>{2, 4, 3});
  }
  SECTION("a frame being written is never replaced") {
    REQUIRE(q.push(bytes_of(8, 1), opts(false, 7)));
    auto writing = q.start_batch();
    REQUIRE(writing.size() == 1);
    auto later = q.push(bytes_of(8, 2), opts(false, 7));
    REQUIRE(later);
    CHECK(!q.batch().front()->done);
    CHECK(q.superseded() == 0);
    CHECK(q.queued_bytes() == 16);
    q.finish_batch({});
    CHECK(drain(q) == std::vector<std::uint8_t>{2});
  }
}

TEST_CASE("the byte bound counts queued and in-flight frames, and what a replacement frees",
          "[common]") {
  qc::write_queue q(100, 1000);
  REQUIRE(q.push(bytes_of(60, 1), opts(false, 5)));
  auto over = q.push(bytes_of(50, 2), opts());
  REQUIRE(!over);
  CHECK(over.code() == errc::queue_full);
  // Replacing the 60-byte frame frees its bytes: 90 fits.
  REQUIRE(q.push(bytes_of(90, 3), opts(false, 5)));
  CHECK(q.queued_bytes() == 90);
  auto batch = q.start_batch();
  REQUIRE(batch.size() == 1);
  // In flight still counts until its write returns.
  CHECK(q.queued_bytes() == 90);
  CHECK(!q.push(bytes_of(20, 4), opts()));
  q.finish_batch({});
  CHECK(q.queued_bytes() == 0);
  CHECK(q.push(bytes_of(100, 5), opts()));
}

TEST_CASE("frames are gathered up to the limit, and a large one goes alone", "[common]") {
  qc::write_queue q(1u << 20, 100);
  for (std::uint8_t i = 1; i <= 4; ++i) REQUIRE(q.push(bytes_of(40, i), opts()));
  REQUIRE(q.push(bytes_of(500, 5), opts()));
  REQUIRE(q.push(bytes_of(10, 6), opts()));
  std::vector<std::size_t> sizes;
  for (auto batch = q.start_batch(); !batch.empty(); batch = q.start_batch()) {
    sizes.push_back(batch.size());
    CHECK(q.start_batch().empty());  // one batch at a time
    q.finish_batch({});
  }
  CHECK(sizes == std::vector<std::size_t>{2, 2, 1, 1});
  CHECK(q.empty());
}

TEST_CASE("a failed write or a close ends every frame once, with the right reason", "[common]") {
  qc::write_queue q(1u << 20, 10);
  auto first = q.push(bytes_of(8, 1), opts());
  auto second = q.push(bytes_of(8, 2), opts());
  REQUIRE((first && second));
  int ends = 0;
  (*first)->on_done = [&] { ++ends; };
  (*second)->on_done = [&] { ++ends; };
  SECTION("the write fails") {
    REQUIRE(q.start_batch().size() == 1);
    q.finish_batch(make_error_code(std::errc::broken_pipe));
    CHECK((*first)->result == std::errc::broken_pipe);
    q.close(make_error_code(errc::connection_lost));
    CHECK((*second)->result == errc::connection_lost);
  }
  SECTION("closed while a batch is being written: its senders learn at once") {
    REQUIRE(q.start_batch().size() == 1);
    q.close(make_error_code(errc::write_timeout));
    CHECK((*first)->done);
    CHECK((*first)->result == errc::write_timeout);
    CHECK((*second)->result == errc::write_timeout);
    CHECK(q.queued_bytes() == 8);  // the batch's bytes until its write returns
    q.finish_batch({});            // the write returned anyway: the result stays the close's
    CHECK((*first)->result == errc::write_timeout);
    CHECK(q.queued_bytes() == 0);
    auto late = q.push(bytes_of(8, 3), opts());
    CHECK(late.code() == errc::write_timeout);
  }
  CHECK(ends == 2);
}

TEST_CASE("a withdrawn frame leaves the queue unless it is being written", "[common]") {
  qc::write_queue q(1u << 20, 10);
  auto first = q.push(bytes_of(8, 1), opts());
  auto second = q.push(bytes_of(8, 2), opts());
  REQUIRE((first && second));
  REQUIRE(q.start_batch().size() == 1);
  CHECK(!q.withdraw(*first));  // being written: it is finished whole
  CHECK(q.withdraw(*second));
  CHECK((*second)->result == errc::cancelled);
  CHECK(q.queued_bytes() == 8);
  q.finish_batch({});
  CHECK(!(*first)->result);
  CHECK(q.empty());
  CHECK(q.queued_bytes() == 0);
}
