// SPDX-License-Identifier: MIT
// clock_sync without sockets: when a guest's clock is set, and when it is left alone.
#include "qxa/host/clock_sync.hpp"

#include <catch2/catch.hpp>
#include <limits>

namespace qh = qxa::host;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t host_ns = 1'800'000'000'000'000'000;  // some moment in 2027
constexpr auto rtt = 2ms;

std::int64_t behind(std::chrono::nanoseconds d) { return host_ns - d.count(); }

}  // namespace

TEST_CASE("clock_sync sets a clock past max_offset either way, and reports the offset",
          "[host][clock]") {
  qh::clock_sync c;  // max_offset 2 s
  const auto t0 = qh::clock_sync::steady::time_point{} + 1h;
  CHECK(c.offset() == 0ns);
  CHECK_FALSE(c.observe(behind(1900ms), host_ns, rtt, t0));  // within 2 s: left alone
  CHECK(c.offset() == -1900ms);
  const auto lead = c.observe(behind(30s), host_ns, rtt, t0 + 5s);  // a pause of 30 s
  REQUIRE(lead);
  CHECK(*lead == rtt / 2);  // the request takes about half a round trip to arrive
  CHECK(c.offset() == -30s);

  qh::clock_sync ahead;
  CHECK(ahead.observe(host_ns + std::chrono::nanoseconds(3s).count(), host_ns, rtt, t0));
}

TEST_CASE("clock_sync tries once per min_interval, whatever came of it", "[host][clock]") {
  qh::clock_sync c({.enabled = true, .max_offset = 2s, .min_interval = 60s});
  const auto t0 = qh::clock_sync::steady::time_point{} + 1h;
  REQUIRE(c.observe(behind(30s), host_ns, rtt, t0));
  // The guest refused, or its NTP put it back: not again until a minute has passed.
  CHECK_FALSE(c.observe(behind(30s), host_ns, rtt, t0 + 5s));
  CHECK_FALSE(c.observe(behind(30s), host_ns, rtt, t0 + 59s));
  CHECK(c.offset() == -30s);  // still measured
  CHECK(c.observe(behind(30s), host_ns, rtt, t0 + 60s));
}

TEST_CASE(
    "clock_sync leaves alone an agent that does not say, a slow round trip and a "
    "disabled daemon",
    "[host][clock]") {
  const auto t0 = qh::clock_sync::steady::time_point{} + 1h;
  qh::clock_sync c;
  CHECK_FALSE(c.observe(0, host_ns, rtt, t0));  // an agent that sends no time
  CHECK(c.offset() == 0ns);
  // A 3 s round trip leaves the guest's moment uncertain by more than max_offset.
  CHECK_FALSE(c.observe(behind(30s), host_ns, 3s, t0));
  CHECK(c.observe(behind(30s), host_ns, rtt, t0));  // the next good one acts

  qh::clock_sync off({.enabled = false});
  CHECK_FALSE(off.observe(behind(1h), host_ns, rtt, t0));
  CHECK(off.offset() == -1h);  // measured and shown even so
}

TEST_CASE(
    "a hostile guest's extreme clock saturates the offset instead of wrapping to the other sign",
    "[host][clock][hostile]") {
  const auto t0 = qh::clock_sync::steady::time_point{} + 1h;
  constexpr auto min = std::numeric_limits<std::int64_t>::min();
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  qh::clock_sync c;
  CHECK(c.observe(min, host_ns, rtt, t0));  // far behind: set
  CHECK(c.offset().count() == min);         // not +7.4e12 ms
  CHECK(qh::clock_offset_ms(
            min, std::chrono::system_clock::time_point{} + std::chrono::nanoseconds(host_ns), rtt) <
        0);
  qh::clock_sync ahead;
  CHECK(ahead.observe(max, -host_ns, rtt, t0));
  CHECK(ahead.offset().count() == max);
  CHECK(qh::clock_offset_ms(max, std::chrono::system_clock::time_point{}, rtt) > 0);
}
