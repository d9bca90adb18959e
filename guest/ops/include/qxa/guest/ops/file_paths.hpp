// SPDX-License-Identifier: MIT
// How the file handlers (files.cpp, file_changes.cpp) place a path from the host: under a policy
// root, walked from the root's descriptor by fs.hpp's rules, and the refusal or error a walk
// ends with.
#pragma once

#include <string>
#include <utility>
#include <variant>

#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest::ops {

/// A path placed under its root and walked to its directory.
struct placed {
  unique_fd dir;     ///< O_PATH descriptor of the directory holding `name`
  std::string name;  ///< empty when the path is the root itself
};

/// Places `path` under the roots for `mode` and walks to the directory that holds it (making
/// missing directories on the way with `create_parents`); a refusal or error reply otherwise.
std::variant<placed, pb::Envelope> place(const request_context& ctx, const char* op,
                                         const std::string& path, local_policy::access mode,
                                         bool create_parents = false);

/// The node a placed path names (the root itself when it has no name), opened as itself.
common::result<std::pair<unique_fd, node_info>> node_of(const placed& p);

/// The refusal or error a walk ended with, for the host: a link on the path is a refusal under
/// the roots' rule (with the real path, which the host may ask for instead); a step onto a
/// filesystem the agent does not enter fails its precondition.
pb::Envelope walk_failure(const request_context& ctx, const char* op, const std::string& path,
                          local_policy::access mode, const common::error_info& e);

/// A node's type as the wire has it.
pb::FileStat::Type type_of(mode_t mode);
/// Describes a node as the wire has it; `link_name` (in `dir`) reads a symbolic link's target.
void fill_stat(pb::FileStat& out, const std::string& name, const node_info& st, int dir,
               const char* link_name);

/// An error from fs.hpp as a reply.
pb::Envelope from_error(const common::error_info& e);

}  // namespace qxa::guest::ops
