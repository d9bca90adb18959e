// SPDX-License-Identifier: MIT
#pragma once

#include <optional>
#include <string>

#include "qxa/common/error.hpp"
#include "qxa/common/log.hpp"
#include "qxa/host/agent_manager.hpp"
#include "qxa/host/control.hpp"

namespace qxa::host {

inline constexpr const char* default_daemon_config = "/etc/quantix-kvm/qx-agentd.toml";

struct daemon_config {
  manager_options manager;
  std::string control_socket = default_control_socket;
  std::string metrics_listen;  // "ADDR:PORT"; empty: no metrics
  common::log_level log_level = common::log_level::info;
};

/// Applies a qx-agentd.toml text on top of `config`, as strictly as the agent's: unknown keys
/// and bad values are errors naming the source, line and key.
std::optional<common::error_info> apply_daemon_config(std::string_view text, std::string source,
                                                      daemon_config& config);
std::optional<common::error_info> load_daemon_config(const std::string& path,
                                                     daemon_config& config);

}  // namespace qxa::host
