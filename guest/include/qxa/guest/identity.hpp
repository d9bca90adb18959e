// SPDX-License-Identifier: MIT
// The text edits behind the password and ssh-key operations, as pure functions.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace qxa::guest {

/// Replaces the second field (the password) of `user`'s line in a shadow or passwd text;
/// false when the user has no line.
bool replace_password_field(std::string& text, const std::string& user, const std::string& hash);

/// What identifies an authorized_keys line: "TYPE KEY" (options and comment aside); empty when
/// the line holds no public key.
std::string key_identity(std::string_view line);

/// Adds (when absent) or removes (every line with the same identity) `keys` in the lines of an
/// authorized_keys file; returns how many lines were added or removed.
unsigned edit_authorized_keys(std::vector<std::string>& lines, bool add,
                              const std::vector<std::string>& keys);

/// The command that powers the guest off, reboots or halts it (`action` "poweroff", "reboot",
/// "halt"): systemctl when systemd runs, else the guest's own command; empty when neither is
/// there.
std::vector<std::string> power_command(const std::string& action, bool systemd_running,
                                       const std::string& search_path);

}  // namespace qxa::guest
