// SPDX-License-Identifier: MIT
// Suspending the guest: to RAM (S3), to disk (hibernate) or both (hybrid). Whether the guest
// can, from the kernel's own interface (/sys/power) and the active swaps; and how: through
// systemd when it runs (so that its inhibitors and sleep hooks take part), else by writing
// /sys/power itself.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qxa::guest {

enum class suspend_mode { ram, disk, hybrid };
std::string_view mode_name(suspend_mode m) noexcept;

/// Why the guest cannot suspend in `mode`, or nothing when it can: `sys_root`/power/state must
/// offer `mem` (RAM, hybrid) and `disk` (disk, hybrid), power/disk `suspend` for hybrid, and a
/// hibernation needs an active swap (`swaps`: the text of /proc/swaps) for the memory image.
std::optional<std::string> suspend_refusal(const std::string& sys_root, std::string_view swaps,
                                           suspend_mode mode);

/// systemctl's command for `mode` when systemd runs, else nothing (the agent then writes
/// /sys/power itself).
std::vector<std::string> suspend_command(suspend_mode mode, bool systemd_running,
                                         const std::string& search_path);

/// Suspends through `sys_root`/power: for hybrid, `suspend` into power/disk first; then `mem`
/// or `disk` into power/state. The write returns once the guest is awake again. Nothing when
/// the kernel took it, else why not.
std::optional<std::string> suspend_through_sysfs(const std::string& sys_root, suspend_mode mode);

/// How far CLOCK_BOOTTIME has run ahead of CLOCK_MONOTONIC, in seconds: it grows by the time
/// the guest spends suspended.
double seconds_asleep_so_far() noexcept;

}  // namespace qxa::guest
