// SPDX-License-Identifier: MIT
#include "qxa/common/error.hpp"

#include <catch2/catch.hpp>
#include <string>

using qxa::common::errc;
using qxa::common::result;

TEST_CASE("project error codes have their own category and readable messages", "[common]") {
  const std::error_code ec = errc::connection_lost;
  CHECK(std::string(ec.category().name()) == "qxa");
  CHECK(ec.message() == "connection lost");
  CHECK(ec == errc::connection_lost);
  CHECK(ec != errc::write_timeout);
  CHECK(std::error_code(errc::write_timeout).message() !=
        std::error_code(errc::request_timeout).message());
}

TEST_CASE("a result holds either a value or an explained error", "[common]") {
  result<int> ok = 42;
  REQUIRE(ok);
  CHECK(*ok == 42);
  CHECK_FALSE(ok.code());

  result<int> bad{errc::request_timeout, "no reply to ping within 2s"};
  REQUIRE_FALSE(bad);
  CHECK(bad.code() == errc::request_timeout);
  CHECK(bad.error().describe() == "no reply to ping within 2s (request timed out)");
}
