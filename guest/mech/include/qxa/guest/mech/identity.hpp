// SPDX-License-Identifier: MIT
// The text edits behind the password and ssh-key operations, as pure functions.
#pragma once

#include <cstddef>
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

/// The largest authorized_keys file the helper reads.
inline constexpr std::size_t max_authorized_keys_bytes = 1u << 20;

/// The lines of a text (without their newlines).
std::vector<std::string> split_lines(std::string_view text);

/// The argument that makes quantix-kvm-agent the ssh-key helper (see run_ssh_keys_helper).
inline constexpr std::string_view ssh_keys_helper_argument = "--ssh-keys-helper";

/// The ssh-key work on a user's files, run by the agent as a program of its own that has become
/// that user (setgroups, setresgid, setresuid) before it starts: whatever the user has planted
/// in their home (links, a FIFO, a link to /dev/zero, a FUSE mount), the kernel checks every
/// access as that user, and a helper that blocks is killed at its deadline without the agent.
///
/// Reads from `in` the action ("list", "add" or "remove") on the first line and the keys, one
/// per line, after it. Edits `home`/.ssh/authorized_keys (made 0700 and 0600 when missing, for
/// "add"), never following a link there and reading only a regular file of at most 1 MiB.
/// Writes to `out` "changed N" and then the file's lines, or to `err` why it failed. Returns
/// the exit status: 0, or 1 when it failed.
int run_ssh_keys_helper(const std::string& home, int in, int out, int err);

}  // namespace qxa::guest
