// SPDX-License-Identifier: MIT
// The VM connections' share of qx-agentd's descriptors.
#include "qxa/host/descriptor_budget.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <vector>

namespace qh = qxa::host;

TEST_CASE(
    "the descriptor budget keeps a reserve, counts slots and wakes a waiter when one is "
    "given back",
    "[host][limits]") {
  CHECK(qh::descriptor_reserve(256) == 64);
  CHECK(qh::descriptor_reserve(1024) == 64);
  CHECK(qh::descriptor_reserve(65536) == 4096);
  CHECK(qh::descriptor_reserve(100) == 50);  // never more than half
  CHECK(qh::descriptor_reserve(0) == 0);

  asio::io_context io;
  qh::descriptor_budget budget(io.get_executor(), 256);
  CHECK(budget.limit() == 256);
  CHECK(budget.capacity() == 192);
  std::vector<qh::descriptor_budget::slot> held;
  for (int i = 0; i < 192; ++i) {
    auto s = budget.try_take();
    REQUIRE(s);
    held.push_back(std::move(*s));
  }
  CHECK(budget.in_use() == 192);
  CHECK_FALSE(budget.try_take());

  // A waiter takes the slot given back, and only then.
  bool took = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto s = budget.try_take();
        while (!s) {
          co_await budget.freed();
          s = budget.try_take();
        }
        took = true;
      },
      asio::detached);
  io.run_for(std::chrono::milliseconds(20));
  CHECK_FALSE(took);
  held.pop_back();
  io.restart();
  io.run_for(std::chrono::milliseconds(200));
  CHECK(took);
  CHECK(budget.in_use() == 191);  // the waiter's slot went with it
  held.clear();
  CHECK(budget.in_use() == 0);
}
