// SPDX-License-Identifier: MIT
// Starts the real qx-agentd for a test, with heartbeats fast enough to see state changes soon.
#pragma once

#include <catch2/catch.hpp>
#include <memory>
#include <string>

#include "support/process.hpp"
#include "support/shipped.hpp"
#include "support/temp_dir.hpp"
#ifdef QXA_AGENT_PATH  // tests that run the agent wait on its log texts
#include "qxa/guest/core/log_text.hpp"
#endif

namespace qxa::test {

#ifdef QXA_AGENT_PATH
/// The real agent listening on the unix socket `socket` (as a VM's agent would be reached),
/// once it has logged that it started.
inline std::unique_ptr<child_process> start_agent(const std::string& socket,
                                                  const std::string& telemetry_interval = "1s") {
  auto a = std::make_unique<child_process>(std::vector<std::string>{
      QXA_AGENT_PATH, "--config", qxa::test::shipped_agent_config, "--port",
      "unix-listen:" + socket, "--telemetry-interval", telemetry_interval});
  const bool started = a->wait_for_log(qxa::guest::log_text::started, std::chrono::seconds(10));
  INFO(a->log());
  REQUIRE(started);
  return a;
}

/// The real agent of VM `vm`, on the socket qx-agentd looks for in `vms`.
inline std::unique_ptr<child_process> start_vm_agent(const temp_dir& vms, const std::string& vm) {
  return start_agent(vms / (vm + ".agent.sock"));
}
#endif

/// qx-agentd watching the directory `vms`, with its config and control socket (`ctl.sock`) in
/// `run`. Returns once it has logged that it is ready.
/// The config it runs with: these heartbeats, a quick reconnect, and `more` (TOML tables).
inline std::string daemon_config_text(const std::string& heartbeat_interval,
                                      const std::string& heartbeat_timeout,
                                      const std::string& more = {}) {
  return "[heartbeat]\ninterval = \"" + heartbeat_interval + "\"\ntimeout = \"" +
         heartbeat_timeout + "\"\n[reconnect]\ninitial = \"50ms\"\nmax = \"500ms\"\n" + more;
}

inline std::unique_ptr<child_process> start_daemon(const std::string& vms, const temp_dir& run,
                                                   const std::string& heartbeat_interval,
                                                   const std::string& heartbeat_timeout,
                                                   const std::string& more_config = {}) {
  const auto config = run.write(
      "qx-agentd.toml", daemon_config_text(heartbeat_interval, heartbeat_timeout, more_config));
  auto d = std::make_unique<child_process>(
      std::vector<std::string>{QXA_AGENTD_PATH, "--config", config, "--socket-dir", vms,
                               "--control-socket", run / "ctl.sock"});
  REQUIRE(d->wait_for_log("ready: vm sockets in", std::chrono::seconds(10)));
  return d;
}

inline std::unique_ptr<child_process> start_daemon(const temp_dir& vms, const temp_dir& run,
                                                   const std::string& heartbeat_interval,
                                                   const std::string& heartbeat_timeout,
                                                   const std::string& more_config = {}) {
  return start_daemon(vms.path(), run, heartbeat_interval, heartbeat_timeout, more_config);
}

/// qx-agentd with quick heartbeats (250 ms, 400 ms to answer): state changes show in well
/// under a second.
inline std::unique_ptr<child_process> start_quick_daemon(const temp_dir& vms, const temp_dir& run) {
  return start_daemon(vms, run, "250ms", "400ms");
}

/// qx-agentd for VMs under TCG: heartbeats a little slower than on the host alone.
inline std::unique_ptr<child_process> start_daemon_for_vms(const temp_dir& vms,
                                                           const temp_dir& run) {
  return start_daemon(vms, run, "300ms", "1s");
}

}  // namespace qxa::test
