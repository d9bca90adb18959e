// SPDX-License-Identifier: MIT
// The system's own programs: where one is, which service manager runs, and the commands that
// power the guest off, reboot or halt it.
#pragma once

#include <string>
#include <vector>

namespace qxa::guest {

/// The directories the system's programs are looked up in.
inline constexpr const char* system_search_path =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The absolute path `program` runs as (looked up in `search_path` when it has no '/'), or
/// empty when there is no such executable. It looks at the files as the agent: only for
/// programs of the system's own directories, never for a path a host or a user chose.
std::string find_program(const std::string& program, const std::string& search_path);

/// Whether systemd is the guest's service manager (`dir`: /run/systemd/system).
bool systemd_running(const std::string& dir);

/// The command that powers the guest off, reboots or halts it (`action` "poweroff", "reboot",
/// "halt"): systemctl when systemd runs, else the guest's own command; empty when neither is
/// there.
std::vector<std::string> power_command(const std::string& action, bool systemd_running,
                                       const std::string& search_path);

}  // namespace qxa::guest
