// SPDX-License-Identifier: MIT
#pragma once

#include <optional>
#include <string>

#include "qxa/common/error.hpp"
#include "qxa/common/log.hpp"
#include "qxa/guest/core/agent.hpp"

namespace qxa::guest {

inline constexpr const char* default_config_path = "/etc/quantix-kvm/agent.toml";

struct agent_config {
  agent_options agent;
  common::log_level log_level = common::log_level::info;
  /// The operations the policy's allow and block lists may name (the agent's table, which
  /// main.cpp sets before loading); empty: the names are not checked.
  operation_table operations = {};
  /// The commands [qemu_ga] block_rpcs and allow_rpcs may name (the qemu-ga port's, which
  /// main.cpp sets); empty: the names are not checked.
  std::vector<std::string> qemu_ga_commands = {};
};

/// Applies the settings of an agent.toml text on top of `config`. Every key must be known and
/// every value valid; the error names the source, the line and the key.
std::optional<common::error_info> apply_agent_config(std::string_view text, std::string source,
                                                     agent_config& config);
/// Same, from a file.
std::optional<common::error_info> load_agent_config(const std::string& path, agent_config& config);

}  // namespace qxa::guest
