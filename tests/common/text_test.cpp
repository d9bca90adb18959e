// SPDX-License-Identifier: MIT
#include "qxa/common/text.hpp"

#include <catch2/catch.hpp>
#include <string>

namespace qc = qxa::common;
using namespace std::string_literals;

TEST_CASE("UTF-8 is told from what only looks like it", "[common]") {
  CHECK(qc::is_utf8(""));
  CHECK(qc::is_utf8("plain ASCII"));
  CHECK(qc::is_utf8("caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80"));
  CHECK_FALSE(qc::is_utf8("\xFF"));
  CHECK_FALSE(qc::is_utf8("\xC3"));              // cut short
  CHECK_FALSE(qc::is_utf8("\xC0\xAF"));          // overlong '/'
  CHECK_FALSE(qc::is_utf8("\xE0\x80\xAF"));      // overlong
  CHECK_FALSE(qc::is_utf8("\xED\xA0\x80"));      // a surrogate
  CHECK_FALSE(qc::is_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  CHECK(qc::is_utf8("nul \0 inside"s));
}

TEST_CASE("to_utf8 keeps valid text and writes each stray byte as a hex escape", "[common]") {
  CHECK(qc::to_utf8("caf\xC3\xA9") == "caf\xC3\xA9");
  CHECK(qc::to_utf8("a\xFF"
                    "b") == "a\\xffb");
  CHECK(qc::to_utf8("\xC3(") == "\\xc3(");
  CHECK(qc::is_utf8(qc::to_utf8("\xED\xA0\x80\xF4\x90\x80\x80\xC0\xAF")));
}

TEST_CASE("printable escapes what would act on a terminal or a log", "[common]") {
  CHECK(qc::printable("web-01") == "web-01");
  CHECK(qc::printable("caf\xC3\xA9") == "caf\xC3\xA9");
  CHECK(qc::printable("a\nb\tc\rd") == "a\\nb\\tc\\rd");
  CHECK(qc::printable("\x1b]0;title\x07") == "\\e]0;title\\x07");
  CHECK(qc::printable("\x7f\x01") == "\\x7f\\x01");
  CHECK(qc::printable("\xC2\x9B"
                      "31m") == "\\u{009B}31m");  // C1 CSI
  CHECK(qc::printable("abc\xE2\x80\xAE"
                      "fdp.exe") == "abc\\u{202E}fdp.exe");  // RTL override
  CHECK(qc::printable("line\xE2\x80\xA8sep") == "line\\u{2028}sep");
  CHECK(qc::printable("\xFF\xFE") == "\\xff\\xfe");
  CHECK(qc::printable("back\\slash") == "back\\slash");
  CHECK(qc::printable("nul\0"s) == "nul\\x00");
}

TEST_CASE("log_value quotes what could forge a key=value word", "[common]") {
  CHECK(qc::log_value("/srv/data/file") == "/srv/data/file");
  CHECK(qc::log_value("") == "\"\"");
  CHECK(qc::log_value("a b") == "\"a b\"");
  CHECK(qc::log_value("x outcome=ok") == "\"x outcome=ok\"");
  CHECK(qc::log_value("say \"hi\"") == "\"say \\\"hi\\\"\"");
  CHECK(qc::log_value("C:\\dir") == "\"C:\\\\dir\"");
  CHECK(qc::log_value("a\nb") == "\"a\\nb\"");
  CHECK(qc::log_value("\xFF") == "\"\\xff\"");
}

TEST_CASE("utf8_prefix never cuts a character in two", "[common]") {
  const std::string s =
      "ab\xE2\x9C\x93"
      "cd";  // a, b, a 3-byte check mark, c, d
  CHECK(qc::utf8_prefix(s, 100) == s);
  CHECK(qc::utf8_prefix(s, 2) == "ab");
  CHECK(qc::utf8_prefix(s, 3) == "ab");
  CHECK(qc::utf8_prefix(s, 4) == "ab");
  CHECK(qc::utf8_prefix(s, 5) == "ab\xE2\x9C\x93");
  CHECK(qc::utf8_prefix(s, 0).empty());
}
