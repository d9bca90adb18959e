// SPDX-License-Identifier: MIT
#include "qxa/guest/policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

namespace qxa::guest {
namespace {

bool contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

// Is `path` (resolved) inside `root` (resolved)? "/a/bc" is not inside "/a/b".
bool within(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || (path.starts_with(root) && path[root.size()] == '/');
}

std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

}  // namespace

std::string resolve_path(const std::string& path) {
  if (path.empty() || path.front() != '/') return {};
  if (auto r = real(path); !r.empty()) return r;
  // Walk up to the nearest existing ancestor; the missing tail may not contain "..".
  std::string head = path;
  std::string tail;
  while (head.size() > 1) {
    const auto slash = head.find_last_of('/');
    const std::string name = head.substr(slash + 1);
    if (name == ".." || name == ".") return {};
    tail = tail.empty() ? name : name + "/" + tail;
    head = slash == 0 ? "/" : head.substr(0, slash);
    if (auto r = real(head); !r.empty()) return (r == "/" ? "" : r) + "/" + tail;
  }
  return {};
}

std::optional<refusal> local_policy::check_operation(std::string_view operation) const {
  if (operation == "ping") return std::nullopt;
  if (!allow.empty() && !contains(allow, operation)) {
    return refusal{"policy.allow", fmt::format("'{}' is not in the guest's allow-list", operation)};
  }
  if (contains(block, operation)) {
    return refusal{"policy.block", fmt::format("'{}' is blocked by the guest's policy", operation)};
  }
  if (operation == "exec" && !exec) {
    return refusal{"policy.exec", "exec is turned off in the guest's policy"};
  }
  return std::nullopt;
}

std::optional<refusal> local_policy::check_program(const std::string& program) const {
  if (!exec) return refusal{"policy.exec", "exec is turned off in the guest's policy"};
  if (exec_allow.empty()) return std::nullopt;
  if (contains(exec_allow, program)) {
    if (program.front() != '/') return std::nullopt;  // a bare name listed as such
    const std::string r = real(program);
    // The listed path itself, not a symlink that was swapped to point elsewhere.
    for (const auto& allowed : exec_allow) {
      if (!r.empty() && real(allowed) == r) return std::nullopt;
    }
  }
  return refusal{"policy.exec_allow",
                 fmt::format("'{}' is not in the guest's list of allowed programs", program)};
}

std::optional<refusal> local_policy::check_path(const std::string& path, access mode) const {
  const auto& roots = mode == access::read ? read_roots : write_roots;
  const char* rule = mode == access::read ? "policy.read_roots" : "policy.write_roots";
  if (path.empty() || path.front() != '/') {
    return refusal{rule, fmt::format("'{}' is not an absolute path", path)};
  }
  const std::string resolved = mode == access::read ? real(path) : resolve_path(path);
  if (resolved.empty()) {
    if (mode == access::read) return std::nullopt;  // does not exist: the operation says so
    return refusal{rule, fmt::format("'{}' cannot be resolved", path)};
  }
  for (const auto& root : roots) {
    const std::string r = real(root);
    if (!r.empty() && within(resolved, r)) return std::nullopt;
  }
  return refusal{rule, fmt::format("'{}' (really '{}') is outside the allowed {} roots", path,
                                   resolved, mode == access::read ? "read" : "write")};
}

}  // namespace qxa::guest
