// SPDX-License-Identifier: MIT
#include "qxa/common/parse.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace qc = qxa::common;

TEST_CASE("trim, fields and numbers of system text", "[common]") {
  CHECK(qc::trim("  a b \t\n") == "a b");
  CHECK(qc::trim(" \n\t").empty());
  std::string_view rest = "  cpu\t100  200\nnext";
  CHECK(qc::next_field(rest) == "cpu");
  CHECK(qc::next_field(rest) == "100");
  CHECK(qc::next_field(rest) == "200");
  CHECK(qc::next_field(rest).empty());  // a field ends at the newline

  CHECK(qc::to_number<std::uint32_t>("4294967295") == 4294967295u);
  CHECK_FALSE(qc::to_number<std::uint32_t>("4294967296"));  // out of range
  CHECK_FALSE(qc::to_number<std::uint32_t>(""));
  CHECK_FALSE(qc::to_number<std::uint32_t>("12 "));  // trailing text
  CHECK_FALSE(qc::to_number<std::uint32_t>("-1"));
  CHECK(qc::to_number<std::uint64_t>("1003", 16) == 0x1003u);
  CHECK(qc::to_number<double>("12345.67") == Approx(12345.67));
  CHECK_FALSE(qc::to_number<double>("1.5x"));
}

TEST_CASE("lines and separators", "[common]") {
  std::vector<std::string> lines;
  qc::for_each_line("a\n\nb\nlast", [&](std::string_view l) { lines.emplace_back(l); });
  CHECK(lines == std::vector<std::string>{"a", "", "b", "last"});
  lines.clear();
  qc::for_each_line("", [&](std::string_view l) { lines.emplace_back(l); });
  CHECK(lines.empty());
  qc::for_each_line("one\n", [&](std::string_view l) { lines.emplace_back(l); });
  CHECK(lines == std::vector<std::string>{"one"});

  const auto f = qc::split("root:x:0:0::/root:", ':');
  REQUIRE(f.size() == 7);
  CHECK(f[0] == "root");
  CHECK(f[4].empty());
  CHECK(f[6].empty());
}
