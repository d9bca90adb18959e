// SPDX-License-Identifier: MIT
// What qx-agentd says of a VM, read through the real CLI (`qx-agent --json status VM`), and
// waits on it: tests wait on the state the product reports, not on its log lines.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "support/cli.hpp"
#include "support/poll.hpp"

namespace qxa::test {

#ifdef QXA_CLI_PATH
/// The daemon's status object of `vm`, or null when it does not list the VM or cannot answer.
inline nlohmann::json vm_status(const std::string& control_socket, const std::string& vm) {
  auto r = run_cli({"--json", "--control-socket", control_socket, "status", vm},
                   std::chrono::seconds(10));
  if (r.status != 0) return nullptr;
  auto j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j["vms"].is_array() || j["vms"].size() != 1) return nullptr;
  return j["vms"][0];
}

/// The daemon's status object of `vm`; fails the test when it is not listed.
inline nlohmann::json required_vm_status(const std::string& control_socket, const std::string& vm) {
  auto s = vm_status(control_socket, vm);
  REQUIRE(s.is_object());
  return s;
}

/// Waits until the daemon reports `vm` in `state` ("ready", "unresponsive", ...).
inline bool wait_vm_state(const std::string& control_socket, const std::string& vm,
                          const std::string& state, std::chrono::steady_clock::duration timeout) {
  return eventually(
      [&] {
        const auto s = vm_status(control_socket, vm);
        return s.is_object() && s["state"] == state;
      },
      timeout);
}

/// The session id of a ready `vm` ("" when it is not ready).
inline std::string ready_session(const std::string& control_socket, const std::string& vm) {
  const auto s = vm_status(control_socket, vm);
  if (!s.is_object() || s["state"] != "ready") return {};
  return s["session_id"].get<std::string>();
}

/// Waits until `vm` is ready in a session other than `old_session` (its connection or its agent
/// started over); returns that session, or "" at the deadline.
inline std::string wait_new_session(const std::string& control_socket, const std::string& vm,
                                    const std::string& old_session,
                                    std::chrono::steady_clock::duration timeout) {
  std::string now;
  eventually(
      [&] {
        now = ready_session(control_socket, vm);
        return !now.empty() && now != old_session;
      },
      timeout);
  return now != old_session ? now : std::string();
}

/// Waits until every VM the daemon lists (at least `count` of them) is ready.
inline bool wait_all_ready(const std::string& control_socket, std::size_t count,
                           std::chrono::steady_clock::duration timeout) {
  return eventually(
      [&] {
        auto r = run_cli({"--json", "--control-socket", control_socket, "status"},
                         std::chrono::seconds(10));
        if (r.status != 0) return false;
        const auto j = nlohmann::json::parse(r.out, nullptr, false);
        if (!j.is_object() || !j["vms"].is_array() || j["vms"].size() < count) return false;
        const auto& vms = j["vms"];
        for (const auto& v : vms) {
          if (v["state"] != "ready") return false;
        }
        return true;
      },
      timeout);
}
#endif

}  // namespace qxa::test
