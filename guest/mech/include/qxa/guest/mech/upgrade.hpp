// SPDX-License-Identifier: MIT
// Updating the agent from the host, with rollback.
//
// The host uploads a new binary, which is staged beside the running one (".NAME.upgrade", the
// agent's own, mode 0700: the same filesystem, so that renames are atomic). An upgrade checks
// the staged file (the agent's, no other writer, the SHA-256 the host sent, and it runs and
// names itself with --version), keeps the running binary as NAME.previous (a hard link), renames
// the new one over NAME, records the upgrade (state_dir/upgrade), and starts a guard: the
// previous binary run with --upgrade-guard, outside the agent's service (systemd-run under
// systemd, its own session elsewhere) so that it outlives the agent's exit. The agent then
// exits (75) and its service manager starts the new binary. When the host has seen the new
// agent answer it confirms, and the new agent (only the process running the new binary's inode)
// marks the record confirmed; the guard sees that and ends. Without a confirmation by the
// deadline the guard renames the previous binary back over NAME (unless something else replaced
// NAME meanwhile), marks the record rolled back and restarts the agent: `systemctl restart` of
// its unit, or SIGTERM to the processes running the new binary for a supervisor to restart.
//
// The guard is the previous binary's code: a new binary that does not start at all cannot
// prevent its own rollback. Limit: a reboot during the confirmation window ends the guard, and
// the new binary stays (the record stays pending, and `upgrade-status` says so).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qxa/common/error.hpp"
#include "qxa/common/sha256.hpp"

namespace qxa::guest {

struct upgrade_options {
  /// Where the record of the last upgrade is kept (root's, not writable by others).
  std::string state_dir = "/var/lib/quantix-kvm-agent";
  /// How long the new agent has to be confirmed when the host does not say.
  std::chrono::nanoseconds confirm_within = std::chrono::minutes(2);
  /// The agent's binary; empty: the running one (/proc/self/exe). Tests point elsewhere.
  std::string binary;
};

/// The bounds of a confirmation window the host may ask for.
inline constexpr std::chrono::seconds min_confirm_within{10};
inline constexpr std::chrono::hours max_confirm_within{1};
/// Checking that the new binary runs (--version) may take this long.
inline constexpr std::chrono::seconds version_check_timeout{15};
/// The hidden argument the guard runs with (argv[1]); argv[2] is the state directory.
inline constexpr std::string_view upgrade_guard_argument = "--upgrade-guard";

enum class upgrade_state { none, pending, confirmed, rolled_back };

/// The record of the last upgrade: key=value lines, readable by an administrator.
struct upgrade_record {
  upgrade_state state = upgrade_state::none;
  std::string token;
  std::string from_version, to_version;
  std::string binary, previous;
  std::string unit;  ///< the agent's systemd unit; empty: no systemd
  std::int64_t deadline_unix_ms = 0;
  std::uint64_t device = 0, inode = 0;  ///< the new binary's, once installed
  /// The new binary's SHA-256 in hex: with the inode, what tells it from a file that took its
  /// place (an inode number freed by its removal can be reused). Empty in older records.
  std::string sha256;
  std::string detail;
};

[[nodiscard]] std::string format_upgrade_record(const upgrade_record& r);
/// Unknown keys are skipped; a record without a known state is an error.
common::result<upgrade_record> parse_upgrade_record(std::string_view text);
/// The record in `state_dir`; state none when there is none.
common::result<upgrade_record> read_upgrade_record(const std::string& state_dir);
/// Writes the record whole (a temporary file, synced, renamed over it). The directory must be
/// the agent's and writable by nobody else.
std::optional<common::error_info> write_upgrade_record(const std::string& state_dir,
                                                       const upgrade_record& r);

/// The agent's binary: `configured`, or /proc/self/exe's target. Fails when the running
/// binary was removed or replaced since the agent started (restart the agent first).
common::result<std::string> agent_binary(const std::string& configured);
/// ".NAME.upgrade" in the binary's directory.
[[nodiscard]] std::string staged_binary(const std::string& binary);
/// Refused unless `dir` is owned by the agent's user (or root) and writable by no one else:
/// whoever can write there could swap the binaries under the agent.
std::optional<common::error_info> check_trusted_directory(const std::string& dir);
/// The staged file as an upgrade takes it: a regular file of the agent's user, one link, not
/// writable by group or others, with this SHA-256 (32 bytes).
std::optional<common::error_info> check_staged(const std::string& staged, std::string_view sha256);
/// The SHA-256 of a file's content (the running binary's, for upgrade-status).
common::result<common::sha256::digest> file_sha256(int fd, const std::string& what);
common::result<common::sha256::digest> file_sha256(const std::string& path);
/// The version `--version` printed ("quantix-kvm-agent VERSION"), or why it is not an agent.
common::result<std::string> parse_version_output(std::string_view out);

/// Keeps `binary` as `previous` (a hard link, replacing an older one) and renames `staged` over
/// `binary`. Returns the new binary's device and inode.
common::result<std::pair<std::uint64_t, std::uint64_t>> install_staged(const std::string& binary,
                                                                       const std::string& staged,
                                                                       const std::string& previous);
/// Renames `previous` (a hard link of it) back over `binary` when `binary` is still the
/// record's new inode. False, with why in `detail`, when it was not.
bool restore_previous(const upgrade_record& r, std::string& detail);

/// The systemd unit this process runs in ("quantix-kvm-agent.service"), from /proc/self/cgroup;
/// empty when none.
[[nodiscard]] std::string own_systemd_unit();

/// Whether the process runs the binary with this device and inode.
[[nodiscard]] bool runs_inode(pid_t pid, std::uint64_t device, std::uint64_t inode);

/// Starts a program in a session of its own, its output to /dev/null but for standard error:
/// the guard where no systemd runs.
std::optional<common::error_info> start_detached(const std::vector<std::string>& argv);

/// The guard's main: waits for the record's confirmation; past the deadline, rolls back and
/// restarts the agent. 0 when there was nothing to do or the rollback went through.
int run_upgrade_guard(const std::string& state_dir);

}  // namespace qxa::guest
