// SPDX-License-Identifier: MIT
// CPU and memory hotplug in the guest, through sysfs: the vCPUs (devices/system/cpu/cpuN) and
// memory blocks (devices/system/memory/memoryN) with their online state and whether each can go
// offline, and bringing one online or offline.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace qxa::guest {

struct hotplug_unit {
  std::uint64_t id = 0;
  bool online = false;
  bool can_offline = false;
};

enum class hotplug_kind { cpu, memory_block };

/// The vCPUs or memory blocks under `sys_root`, by id. A CPU without an `online` file (the
/// boot CPU on x86) is online and cannot go offline; a memory block can go offline when its
/// `removable` says so (kernels since 5.13 always say 1: the offlining itself then decides).
std::vector<hotplug_unit> list_hotplug(const std::string& sys_root, hotplug_kind kind);

/// The size of one memory block (devices/system/memory/block_size_bytes); 0 without memory
/// hotplug.
std::uint64_t memory_block_bytes(const std::string& sys_root);

/// Brings a vCPU or memory block online or offline; nothing when it is so afterwards (already
/// so included), else why not. Offlining memory migrates its pages: it may take long.
std::optional<std::string> set_online(const std::string& sys_root, hotplug_kind kind,
                                      std::uint64_t id, bool online);

}  // namespace qxa::guest
