// SPDX-License-Identifier: MIT
// log_limiter without a clock: a flood of one kind of line is written up to its burst, counted
// beyond it, and the count said once.
#include "qxa/common/log_limiter.hpp"

#include <catch2/catch.hpp>

namespace qc = qxa::common;
using namespace std::chrono_literals;

TEST_CASE("a flood of one kind of log line is written up to its burst, then counted and said once",
          "[unit][common][hostile]") {
  qc::log_limiter l(3, 60s);
  const auto t0 = qc::log_limiter::clock::time_point{} + 1h;
  int written = 0;
  for (int i = 0; i < 2400; ++i) {  // a second of a hostile guest's restarts
    const auto v = l.admit("agent restarts", t0 + i * 400us);
    written += v.write ? 1 : 0;
    CHECK(v.held_before == 0);
  }
  CHECK(written == 3);
  // Another kind has its own budget.
  CHECK(l.admit("state changes", t0 + 1s).write);
  CHECK(l.overdue(t0 + 59s).empty());  // the window is not over yet
  // The next line after the window says how many were held back.
  const auto next = l.admit("agent restarts", t0 + 61s);
  CHECK(next.write);
  CHECK(next.held_before == 2397);
  // A flood that stops is summed up by overdue(), once.
  for (int i = 0; i < 10; ++i) (void)l.admit("agent restarts", t0 + 62s);
  const auto due = l.overdue(t0 + 130s);
  REQUIRE(due.size() == 1);
  CHECK(due[0] == std::pair<std::string, std::uint64_t>{"agent restarts", 8});
  CHECK(l.overdue(t0 + 200s).empty());
  CHECK(l.admit("agent restarts", t0 + 201s).held_before == 0);
}
