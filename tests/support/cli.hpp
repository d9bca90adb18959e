// SPDX-License-Identifier: MIT
// The real qx-agent, run by tests as an operator would.
#pragma once

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/process.hpp"

namespace qxa::test {

#ifdef QXA_CLI_PATH
/// The qx-agent under test.
inline const std::string cli_bin = QXA_CLI_PATH;

/// Runs qx-agent with `args`: its exit status, output and time.
inline command_result run_cli(
    std::vector<std::string> args,
    std::chrono::steady_clock::duration timeout = std::chrono::seconds(60)) {
  args.insert(args.begin(), cli_bin);
  return run_command(std::move(args), timeout);
}

/// Runs qx-agent with `args` through the daemon whose control socket is `control_socket`.
inline command_result daemon_cli(
    const std::string& control_socket, std::vector<std::string> args,
    std::chrono::steady_clock::duration timeout = std::chrono::seconds(60)) {
  args.insert(args.begin(), {"--control-socket", control_socket});
  return run_cli(std::move(args), timeout);
}

/// `qx-agent --json status` through the daemon at `control_socket`; fails the test when it
/// does not answer.
inline nlohmann::json daemon_status(const std::string& control_socket) {
  auto r = run_cli({"--json", "--control-socket", control_socket, "status"});
  REQUIRE(r.status == 0);
  return nlohmann::json::parse(r.out);
}

/// VM name -> state, from a status.
inline std::map<std::string, std::string> vm_states(const nlohmann::json& status) {
  std::map<std::string, std::string> out;
  const auto& vms = status["vms"];
  for (const auto& vm : vms) out[vm["vm"]] = vm["state"];
  return out;
}
#endif

}  // namespace qxa::test
