// SPDX-License-Identifier: MIT
#include "qxa/common/log.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

namespace qc = qxa::common;

namespace {

// Captures log output for the lifetime of the object and restores the logger afterwards.
struct captured_log {
  std::vector<std::string> lines;
  qc::log_level saved = qc::logger::instance().level();
  captured_log() {
    qc::logger::instance().set_sink(
        [this](qc::log_level, std::string_view l) { lines.emplace_back(l); });
  }
  ~captured_log() {
    auto& l = qc::logger::instance();
    l.set_sink({});
    l.set_level(saved);
    l.set_journal_prefix(false);
  }
};

}  // namespace

TEST_CASE("log levels parse from their names", "[common]") {
  CHECK(qc::parse_log_level("debug") == qc::log_level::debug);
  CHECK(qc::parse_log_level("warn") == qc::log_level::warning);
  CHECK(qc::parse_log_level("warning") == qc::log_level::warning);
  CHECK(qc::parse_log_level("off") == qc::log_level::off);
  CHECK_FALSE(qc::parse_log_level("loud").has_value());
}

TEST_CASE("lines under the configured level are not written", "[common]") {
  captured_log cap;
  qc::logger::instance().set_level(qc::log_level::warning);
  qc::log_info("hidden {}", 1);
  qc::log_warning("shown {}", 2);
  qc::log_error("shown {}", 3);
  REQUIRE(cap.lines.size() == 2);
  CHECK_THAT(cap.lines[0], Catch::Contains("warning") && Catch::EndsWith("shown 2\n"));
}

TEST_CASE("under the journal each line starts with its syslog priority", "[common]") {
  captured_log cap;
  auto& l = qc::logger::instance();
  l.set_level(qc::log_level::debug);
  l.set_journal_prefix(true);
  qc::log_error("disk on fire");
  qc::log_warning("w");
  qc::log_info("i");
  qc::log_debug("d");
  REQUIRE(cap.lines.size() == 4);
  CHECK(cap.lines[0] == "<3>disk on fire\n");
  CHECK(cap.lines[1] == "<4>w\n");
  CHECK(cap.lines[2] == "<6>i\n");
  CHECK(cap.lines[3] == "<7>d\n");
}

TEST_CASE("a logged value cannot start a line of its own or reach a terminal raw", "[common]") {
  captured_log cap;
  qc::logger::instance().set_level(qc::log_level::info);
  // An upload path chosen to forge an audit line, and a hostname that retitles a terminal.
  qc::log_info("audit: op=file-write path={} outcome=failed",
               "/tmp/x\n2026-01-01T00:00:00.000Z info    audit: op=file-write outcome=ok");
  qc::log_info("hostname {}", "\x1b]0;owned\x07\x1b[2J");
  REQUIRE(cap.lines.size() == 2);
  CHECK_THAT(cap.lines[0], Catch::EndsWith("path=/tmp/x\\n2026-01-01T00:00:00.000Z info    audit: "
                                           "op=file-write outcome=ok outcome=failed\n"));
  CHECK_THAT(cap.lines[1], Catch::EndsWith("hostname \\e]0;owned\\x07\\e[2J\n"));
}
