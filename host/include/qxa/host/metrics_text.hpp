// SPDX-License-Identifier: MIT
// qx-agentd's metrics in Prometheus' text exposition format, rendered from the manager's figures.
// Every label value that came from a guest is escaped and made printable.
#pragma once

#include <string>
#include <vector>

#include "qxa/host/agent_manager.hpp"

namespace qxa::host {

/// The text exposition format (version 0.0.4) of every VM's figures and the daemon's
/// descriptor budget.
std::string render_metrics(const std::vector<vm_metrics>& vms, const capacity_figures& capacity);

}  // namespace qxa::host
