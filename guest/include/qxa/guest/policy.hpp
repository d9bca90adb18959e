// SPDX-License-Identifier: MIT
// The guest's local policy: what the host may ask of this guest. The host channel is trusted
// to speak for the hypervisor, but bounded by what the guest's administrator allows here.
//
// Operations: an allow-list alone means only those; a block-list alone removes those; both
// apply the allow-list, then the block-list (as qemu-guest-agent does). "ping" is always
// allowed: it is the heartbeat. Paths are checked after resolving the real path, so neither
// ".." nor a symlink escapes a root.
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
  std::vector<std::string> allow;       ///< operations; empty: all
  std::vector<std::string> block;       ///< operations
  bool exec = true;                     ///< the exec operation at all
  std::vector<std::string> exec_allow;  ///< programs (absolute paths); empty: any
  std::vector<std::string> read_roots = {"/"};
  std::vector<std::string> write_roots = {"/"};
  std::uint64_t max_output_bytes = 16u << 20;  ///< per stream of one exec
  std::uint64_t max_file_bytes = 1ull << 32;   ///< one file read or written
  std::uint32_t max_chunk_bytes = 1u << 20;    ///< one chunk of a file transfer

  [[nodiscard]] std::optional<refusal> check_operation(std::string_view operation) const;
  /// `program` as given; a relative name is checked against the allow-list by its base name
  /// only when the list holds that bare name.
  [[nodiscard]] std::optional<refusal> check_program(const std::string& program) const;
  enum class access { read, write };
  /// For a write, a path that does not exist yet is judged by its nearest existing parent.
  [[nodiscard]] std::optional<refusal> check_path(const std::string& path, access mode) const;
};

/// The real path of `path`, or of its nearest existing ancestor with the rest appended; empty
/// when nothing of it exists. Pure path logic aside from realpath(3).
std::string resolve_path(const std::string& path);

}  // namespace qxa::guest
