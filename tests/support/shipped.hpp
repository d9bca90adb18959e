// SPDX-License-Identifier: MIT
// The configuration files the packages install, as they ship. Tests start the programs with
// them and put what only a test needs (a socket path, a quick interval) in flags beside them.
#pragma once

#include <string>

namespace qxa::test {

inline const std::string shipped_agent_config =
    std::string(QXA_SOURCE_DIR) + "/packaging/config/agent.toml";
inline const std::string shipped_daemon_config =
    std::string(QXA_SOURCE_DIR) + "/packaging/config/qx-agentd.toml";

}  // namespace qxa::test
