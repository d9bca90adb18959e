// SPDX-License-Identifier: MIT
#include "qxa/guest/core/config.hpp"

#include <catch2/catch.hpp>

namespace qg = qxa::guest;
using namespace std::chrono_literals;

namespace {

std::string error_of(const std::string& text) {
  qg::agent_config c;
  auto err = qg::apply_agent_config(text, "agent.toml", c);
  REQUIRE(err.has_value());
  return err->message;
}

}  // namespace

TEST_CASE("a valid agent.toml sets every documented setting", "[guest]") {
  qg::agent_config c;
  const auto err = qg::apply_agent_config(R"(
port = "unix-listen:/run/agent.sock"
log_level = "debug"

[telemetry]
interval = "2s"
write_timeout = "750ms"
failure_limit = 10

[limits]
max_inflight_requests = 16
max_frame_size = 1048576
request_timeout = "1m"

[port_tuning]
host_poll_interval = "50ms"
)",
                                          "agent.toml", c);
  REQUIRE_FALSE(err.has_value());
  CHECK(c.agent.port.type == qg::port_spec::kind::unix_listen);
  CHECK(c.agent.port.path == "/run/agent.sock");
  CHECK(c.log_level == qxa::common::log_level::debug);
  CHECK(c.agent.telemetry_interval == 2s);
  CHECK(c.agent.write_timeout == 750ms);
  CHECK(c.agent.failure_limit == 10);
  CHECK(c.agent.max_inflight_requests == 16);
  CHECK(c.agent.max_frame_size == 1048576);
  CHECK(c.agent.request_timeout == 60s);
  CHECK(c.agent.port_tuning.host_poll_interval == 50ms);
}

TEST_CASE("an empty agent.toml keeps the defaults", "[guest]") {
  qg::agent_config c;
  REQUIRE_FALSE(qg::apply_agent_config("", "agent.toml", c).has_value());
  CHECK(c.agent.port.path == "/dev/virtio-ports/org.quantix.agent.0");
  CHECK(c.agent.telemetry_interval == 5s);
  CHECK(c.agent.write_timeout == 5s);
  CHECK(c.agent.failure_limit == 50);
}

TEST_CASE("an unknown key is refused with its name and line", "[guest]") {
  CHECK(error_of("log_level = \"info\"\n[telemetry]\nintervall = \"5s\"\n") ==
        "agent.toml:3: unknown key 'telemetry.intervall'");
  CHECK(error_of("colour = \"blue\"\n") == "agent.toml:1: unknown key 'colour'");
}

TEST_CASE("empty tables are valid: a file with every key commented out is the defaults",
          "[guest]") {
  qg::agent_config c;
  CHECK_FALSE(
      qg::apply_agent_config("[telemetry]\n# interval = \"5s\"\n[limits]\n[policy]\n"
                             "[freeze]\n[port_tuning]\n",
                             "agent.toml", c));
  CHECK(c.agent.telemetry_interval == 5s);
  // An empty table that is no section of the file is still a mistake worth naming.
  CHECK(error_of("[telemetry]\n[telemetri]\n") == "agent.toml:2: unknown table 'telemetri'");
  CHECK(error_of("[policy.nonsense]\n") == "agent.toml:1: unknown table 'policy.nonsense'");
  CHECK(error_of("[policy.exec]\n") ==
        "agent.toml:1: 'policy.exec' must be true or false, not a table");
}

TEST_CASE("the agent.toml the packages install loads as shipped", "[guest]") {
  qg::agent_config shipped;
  const auto err =
      qg::load_agent_config(std::string(QXA_SOURCE_DIR) + "/packaging/config/agent.toml", shipped);
  INFO((err ? err->message : std::string()));
  REQUIRE_FALSE(err);
  // Every key in it is commented out and documents the default.
  const qg::agent_config defaults;
  CHECK(shipped.agent.port.path == defaults.agent.port.path);
  CHECK(shipped.agent.telemetry_interval == defaults.agent.telemetry_interval);
  CHECK(shipped.agent.policy.write_roots == defaults.agent.policy.write_roots);
}

TEST_CASE("a bad duration is refused with the key, the line and why", "[guest]") {
  CHECK(error_of("[telemetry]\ninterval = \"5x\"\n") ==
        "agent.toml:2: 'telemetry.interval' is not a valid duration: invalid duration '5x': "
        "unknown unit 'x' (use ns, us, ms, s, m or h)");
  CHECK_THAT(error_of("[telemetry]\nwrite_timeout = \"0s\"\n"),
             Catch::Contains("'telemetry.write_timeout' must be at least 1ms"));
}

TEST_CASE("a value of the wrong type is refused with the key, the line and the types", "[guest]") {
  CHECK(error_of("\n[limits]\nmax_inflight_requests = \"many\"\n") ==
        "agent.toml:3: 'limits.max_inflight_requests' must be an integer, not a string");
  CHECK(error_of("[telemetry]\ninterval = 5\n") ==
        "agent.toml:2: 'telemetry.interval' must be a duration string such as \"5s\", not an "
        "integer");
  CHECK(error_of("port = 7\n") == "agent.toml:1: 'port' must be a string, not an integer");
  CHECK_THAT(error_of("[limits]\nmax_inflight_requests = 0\n"),
             Catch::Contains("must be between 1 and 65536, not 0"));
  CHECK_THAT(error_of("log_level = \"loud\"\n"), Catch::Contains("'log_level' must be one of"));
  CHECK_THAT(error_of("port = \"tcp:1.2.3.4\"\n"), Catch::Contains("unknown port 'tcp:1.2.3.4'"));
}

TEST_CASE("a TOML syntax error names the line and column", "[guest]") {
  CHECK_THAT(error_of("[telemetry\ninterval = \"5s\"\n"), Catch::StartsWith("agent.toml:1:"));
  // Control characters are refused wherever they are (found by fuzz_agent_config: a NUL in a
  // table header).
  const std::string nul("log_level = \"info\"\n[a\0b]\n", 25);
  CHECK(error_of(nul) == "agent.toml:2:3: control character U+0000 is not allowed in TOML");
  CHECK(error_of("# bell \x07\n") ==
        "agent.toml:1:8: control character U+0007 is not allowed in TOML");
  // Characters toml++ 3.x mishandles are refused anywhere (fuzz_agent_config), others welcome.
  CHECK(error_of("a = 1\n\xEF\xBB\xB7 = 2\n") ==
        "agent.toml:2:1: character U+FEF7 cannot be used in a config file (the TOML parser "
        "mishandles U+00A1..U+0499, U+2C5E..U+3057 and U+FB26..U+FEFE)");
  CHECK_THAT(error_of("a = 1 \xE2\xB4\xB4\n"),
             Catch::StartsWith("agent.toml:1:7: character U+2D34"));
  CHECK_THAT(error_of("# caf\xC3\xA9\n"), Catch::StartsWith("agent.toml:1:6: character U+00E9"));
  CHECK_THAT(error_of("# \xE2\x9C\x93\nlog_level = \"\xE2\x9C\x93\"\n"),
             Catch::Contains("'log_level' must be one of"));
  // A table name that starts with a character keys cannot start with (fuzz_agent_config).
  CHECK_THAT(error_of("[|elemetry]\n"), Catch::StartsWith("agent.toml:1:2: "));
  qg::agent_config c;
  CHECK_FALSE(qg::apply_agent_config("[telemetry]\t# tab\r\ninterval = \"1s\"\r\n", "a.toml", c));
}

TEST_CASE("write_roots set in the file is told from the default", "[guest][policy]") {
  qg::agent_config c;
  REQUIRE_FALSE(qg::apply_agent_config("", "agent.toml", c).has_value());
  CHECK_FALSE(c.agent.policy.write_roots_listed);
  CHECK(c.agent.policy.write_roots == std::vector<std::string>{"/"});
  REQUIRE_FALSE(
      qg::apply_agent_config("[policy]\nwrite_roots = [\"/\"]\n", "agent.toml", c).has_value());
  CHECK(c.agent.policy.write_roots_listed);
}

TEST_CASE("the upgrade settings: the switch, the record's directory and the confirmation window",
          "[guest][upgrade]") {
  qg::agent_config c;
  REQUIRE_FALSE(qg::apply_agent_config("[policy]\nupgrade = false\n[upgrade]\nstate_dir = "
                                       "\"/var/lib/qx\"\nconfirm_within = \"5m\"\n",
                                       "agent.toml", c)
                    .has_value());
  CHECK(c.agent.policy.upgrade == false);
  CHECK(c.agent.upgrade.state_dir == "/var/lib/qx");
  CHECK(c.agent.upgrade.confirm_within == 5min);
  // Unset, upgrades follow exec: allowed while exec is on and unrestricted.
  CHECK(qg::agent_config{}.agent.policy.upgrades_allowed());
  qg::agent_config limited;
  REQUIRE_FALSE(
      qg::apply_agent_config("[policy]\nexec_allow = [\"/bin/true\"]\n", "agent.toml", limited)
          .has_value());
  CHECK_FALSE(limited.agent.policy.upgrade.has_value());
  CHECK_FALSE(limited.agent.policy.upgrades_allowed());
  CHECK_THAT(limited.agent.policy.check_operation("upgrade")->message,
             Catch::Contains("policy.upgrade = true allows it"));
  qg::agent_config blocked;
  REQUIRE_FALSE(
      qg::apply_agent_config("[policy]\nblock = [\"exec\"]\n", "agent.toml", blocked).has_value());
  CHECK_FALSE(blocked.agent.policy.upgrades_allowed());
  REQUIRE_FALSE(
      qg::apply_agent_config("[policy]\nexec = false\nupgrade = true\n", "agent.toml", limited)
          .has_value());
  CHECK(limited.agent.policy.upgrades_allowed());
  CHECK_THAT(error_of("[upgrade]\nconfirm_within = \"5s\"\n"),
             Catch::Contains("'upgrade.confirm_within' must be at least"));
  CHECK_THAT(error_of("[upgrade]\nconfirm_within = \"2h\"\n"), Catch::Contains("at most 1h"));
  CHECK_THAT(error_of("[upgrade]\nstate_dir = \"var/lib\"\n"),
             Catch::Contains("must be an absolute path"));
}
