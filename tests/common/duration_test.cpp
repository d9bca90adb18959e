// SPDX-License-Identifier: MIT
#include "qxa/common/duration.hpp"

#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using qxa::common::format_duration;
using qxa::common::parse_duration;

TEST_CASE("durations parse in every supported unit and combination", "[common]") {
  CHECK(*parse_duration("5s") == 5s);
  CHECK(*parse_duration("250ms") == 250ms);
  CHECK(*parse_duration("2m") == 2min);
  CHECK(*parse_duration("1h") == 1h);
  CHECK(*parse_duration("1h30m") == 90min);
  CHECK(*parse_duration("1m30s500ms") == 90500ms);
  CHECK(*parse_duration("1.5s") == 1500ms);
  CHECK(*parse_duration("20us") == 20us);
  CHECK(*parse_duration("7ns") == 7ns);
  CHECK(*parse_duration("0") == 0s);
  CHECK(*parse_duration("0s") == 0s);
}

TEST_CASE("bad durations are refused with a message that says why", "[common]") {
  auto message_of = [](const char* text) {
    auto r = parse_duration(text);
    REQUIRE_FALSE(r);
    CHECK(r.code() == qxa::common::errc::invalid_argument);
    return r.error().message;
  };
  CHECK_THAT(message_of(""), Catch::Contains("empty"));
  CHECK_THAT(message_of("5"), Catch::Contains("missing unit"));
  CHECK_THAT(message_of("5 s"), Catch::Contains("missing unit"));
  CHECK_THAT(message_of("s5"), Catch::Contains("expected a number at 's5'"));
  CHECK_THAT(message_of("5x"), Catch::Contains("unknown unit 'x'"));
  CHECK_THAT(message_of("5sec"), Catch::Contains("unknown unit 'sec'"));
  CHECK_THAT(message_of("-5s"), Catch::Contains("negative"));
  CHECK_THAT(message_of("1.2.3s"), Catch::Contains("'.'"));
  CHECK_THAT(message_of("99999999999h"), Catch::Contains("out of range"));
  CHECK_THAT(message_of("abc"), Catch::Contains("'abc'"));
  // Far beyond any number a long double holds: an error, not an exception.
  CHECK_THAT(message_of((std::string(5000, '9') + "s").c_str()), Catch::Contains("out of range"));
  CHECK_THAT(message_of((std::string(5000, '9') + ".5ms").c_str()),
             Catch::Contains("out of range"));
  CHECK(*parse_duration(std::string(5000, '0') + "1s") == 1s);
}

TEST_CASE("durations format in a form that parses back", "[common]") {
  CHECK(format_duration(5s) == "5s");
  CHECK(format_duration(250ms) == "250ms");
  CHECK(format_duration(90s) == "1m30s");
  CHECK(format_duration(2h) == "2h");
  CHECK(format_duration(0s) == "0s");
  for (std::chrono::nanoseconds d :
       {std::chrono::nanoseconds(1ns), std::chrono::nanoseconds(20us),
        std::chrono::nanoseconds(1500ms), std::chrono::nanoseconds(3661s)}) {
    CHECK(*parse_duration(format_duration(d)) == d);
  }
}
