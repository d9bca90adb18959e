// SPDX-License-Identifier: MIT
// The guest's local policy: what the host may ask of this guest. The host channel is trusted
// to speak for the hypervisor, but bounded by what the guest's administrator allows here.
//
// Operations: an allow-list alone means only those; a block-list alone removes those; both
// apply the allow-list, then the block-list (as qemu-guest-agent does). "ping" is always
// allowed: it is the heartbeat. "file-write" stands for every change to the guest's files: a list
// that names it names file-mkdir, file-remove and file-move too, so a guest that blocked
// uploads before these existed does not let the host remove or rename its files now.
//
// Paths: a path is under a root when the root's components are its first components ("/a/bc"
// is not under "/a/b"); "." and ".." are refused. The file operations then walk from the root's
// descriptor without following any symbolic link (see fs.hpp), so no link, whoever planted it,
// leads out of a root or makes a file land elsewhere.
//
// Exec: with exec_allow set, the environment of a command is a fixed base (PATH, HOME, USER,
// LOGNAME, SHELL of the account) plus the variables the administrator lists in exec_env_allow;
// names that change what a program loads or runs (LD_*, BASH_FUNC_*, PATH, PERL5OPT, ...) are
// never allowed, so an allowed program cannot be turned into another.
//
// Exec confined: a policy confines roads, not names. Unless exec is open (on, neither blocked
// nor left out of an allow-list, no exec_allow), no other road may run code of the host's choice
// as root either: upgrade is off unless policy.upgrade = true says otherwise; files are written
// only under write_roots the administrator lists (the default "/" holds cron, units, profiles),
// and never into the agent's own paths (its configuration and hook directories, its binary, its
// upgrade records, the programs exec_allow lists) whatever the roots say; ssh-key and password
// refuse root and the accounts of the sudo, wheel and admin groups (identity.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qxa::guest {

/// Why a request was refused: the rule (a config key) and a sentence for the host.
struct refusal {
  std::string rule;
  std::string message;
};

struct local_policy {
  std::vector<std::string> allow;  ///< operations; empty: all
  std::vector<std::string> block;  ///< operations
  bool exec = true;                ///< the exec operation at all
  /// The host may replace the agent's binary. Unset: as long as exec is open (a new binary runs
  /// as root: with exec confined, upgrades must be allowed by name).
  std::optional<bool> upgrade;
  [[nodiscard]] bool upgrades_allowed() const noexcept {
    return upgrade.value_or(!exec_confined_by());
  }
  /// What confines exec ("policy.exec = false", "policy.block", "policy.allow",
  /// "policy.exec_allow"), or nothing when the host may run any program as root.
  [[nodiscard]] std::optional<std::string> exec_confined_by() const;
  std::vector<std::string> exec_allow;  ///< programs (absolute paths); empty: any
  /// Under exec_allow: variables the host may set besides the fixed base.
  std::vector<std::string> exec_env_allow;
  std::vector<std::string> read_roots = {"/"};
  std::vector<std::string> write_roots = {"/"};
  /// write_roots was set by the administrator: with exec confined only such roots hold.
  bool write_roots_listed = false;
  /// The agent's own paths (configuration and hook directories, binary, upgrade records, the
  /// exec_allow programs), as configured and as real paths: with exec confined no file change
  /// reaches them. Filled when the agent starts (agent_paths()).
  std::vector<std::string> protected_paths;
  bool write_setid = false;                    ///< uploads may carry the setuid and setgid bits
  bool write_owner = false;                    ///< uploads may be given to another owner than root
  std::uint64_t max_output_bytes = 16u << 20;  ///< per stream of one exec
  std::uint64_t max_file_bytes = 1ull << 32;   ///< one file read or written
  std::uint32_t max_chunk_bytes = 1u << 20;    ///< one chunk of a file transfer
  std::uint32_t max_jobs = 16;                 ///< detached jobs running (and records kept)
  std::uint32_t max_open_uploads = 16;         ///< uploads open at once in one session
  std::uint64_t max_job_output_bytes = 256u << 10;  ///< a job's output ring, per stream

  [[nodiscard]] std::optional<refusal> check_operation(std::string_view operation) const;
  /// `program` as given; a relative name is checked against the allow-list by its base name
  /// only when the list holds that bare name.
  [[nodiscard]] std::optional<refusal> check_program(const std::string& program) const;
  /// The environment variable `name` set by the host, for a command under exec_allow.
  [[nodiscard]] std::optional<refusal> check_env(std::string_view name) const;
  enum class access { read, write };
  /// Where `path` lies: the longest root that holds it, and the rest of it. Refused when no
  /// root does, or the path is not absolute or has "." or ".." in it.
  struct located {
    std::string root;      ///< the root as it matched: as configured, or its real path
    std::string relative;  ///< below the root; empty for the root itself
  };
  [[nodiscard]] std::optional<refusal> locate(const std::string& path, access mode,
                                              located& out) const;
  [[nodiscard]] std::optional<refusal> check_path(const std::string& path, access mode) const {
    located ignored;
    return locate(path, mode, ignored);
  }
};

/// The operation a list entry covers `operation` by as well: "file-write" for the file changes,
/// "power" for suspend, "exec" for the job operations, the operation itself otherwise.
[[nodiscard]] std::string_view operation_family(std::string_view operation) noexcept;

/// Environment variables that change what a program loads, runs or trusts (the dynamic
/// loader's, shells' and interpreters'): never set by the host under exec_allow.
[[nodiscard]] bool dangerous_env_name(std::string_view name) noexcept;

}  // namespace qxa::guest
