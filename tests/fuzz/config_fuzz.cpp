// SPDX-License-Identifier: MIT
// Fuzz target: the two config parsers, agent.toml and qx-agentd.toml (QXA_FUZZ_DAEMON_CONFIG
// picks the daemon's). Any text gives a config or an error naming where it went wrong; never a
// crash, a hang or a leak. An accepted config applied twice gives the same result (the parser
// reads the text only, never the state it applies to).
#include <cstdint>
#include <cstdlib>
#include <string_view>

#ifdef QXA_FUZZ_DAEMON_CONFIG
#include "qxa/host/daemon_config.hpp"
#else
#include "qxa/guest/core/config.hpp"
#endif

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
#ifdef QXA_FUZZ_DAEMON_CONFIG
  qxa::host::daemon_config first, second;
  auto e1 = qxa::host::apply_daemon_config(text, "fuzz.toml", first);
  auto e2 = qxa::host::apply_daemon_config(text, "fuzz.toml", second);
  check(e1.has_value() == e2.has_value(), "the same text accepted once and refused once");
  if (!e1) {
    check(first.control_socket == second.control_socket && first.log_level == second.log_level &&
              first.metrics_listen == second.metrics_listen,
          "the same text gave two configs");
  } else {
    check(!e1->describe().empty(), "a refusal without a message");
  }
#else
  qxa::guest::agent_config first, second;
  auto e1 = qxa::guest::apply_agent_config(text, "fuzz.toml", first);
  auto e2 = qxa::guest::apply_agent_config(text, "fuzz.toml", second);
  check(e1.has_value() == e2.has_value(), "the same text accepted once and refused once");
  if (!e1) {
    const auto& a = first.agent;
    const auto& b = second.agent;
    check(a.telemetry_interval == b.telemetry_interval && a.request_timeout == b.request_timeout &&
              a.policy.allow == b.policy.allow && a.policy.block == b.policy.block &&
              a.policy.read_roots == b.policy.read_roots && first.log_level == second.log_level,
          "the same text gave two configs");
  } else {
    check(!e1->describe().empty(), "a refusal without a message");
  }
#endif
  return 0;
}
