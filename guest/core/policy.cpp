// SPDX-License-Identifier: MIT
#include "qxa/guest/core/policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include "qxa/guest/platform/paths.hpp"

namespace qxa::guest {
namespace {

bool contains(const std::vector<std::string>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

// "/a/b/" -> "/a/b"; "/" stays.
std::string without_trailing_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// The rest of `path` below `root` when the root's components are its first ones.
std::optional<std::string> below(const std::string& path, const std::string& root) {
  if (root == "/") return path.substr(1);
  if (!path.starts_with(root)) return std::nullopt;
  if (path.size() == root.size()) return std::string();
  if (path[root.size()] != '/') return std::nullopt;  // "/a/bc" is not under "/a/b"
  return path.substr(root.size() + 1);
}

}  // namespace

bool dangerous_env_name(std::string_view name) noexcept {
  // What the dynamic loader and libc read (glibc's list of variables it ignores for setuid
  // programs), what shells run or import, what interpreters load before the program's first
  // line, and what programs consult to find other programs or their configuration.
  static constexpr std::string_view exact[] = {"PATH",
                                               "HOME",
                                               "SHELL",
                                               "ENV",
                                               "BASH_ENV",
                                               "SHELLOPTS",
                                               "BASHOPTS",
                                               "PS4",
                                               "IFS",
                                               "CDPATH",
                                               "GLOBIGNORE",
                                               "PROMPT_COMMAND",
                                               "GCONV_PATH",
                                               "GETCONF_DIR",
                                               "GLIBC_TUNABLES",
                                               "HOSTALIASES",
                                               "LOCALDOMAIN",
                                               "LOCPATH",
                                               "NIS_PATH",
                                               "NLSPATH",
                                               "RESOLV_HOST_CONF",
                                               "RES_OPTIONS",
                                               "TMPDIR",
                                               "TZDIR",
                                               "CLASSPATH",
                                               "TCLLIBPATH",
                                               "PHPRC",
                                               "PHP_INI_SCAN_DIR",
                                               "EDITOR",
                                               "VISUAL",
                                               "PAGER",
                                               "MANPAGER",
                                               "LESSOPEN",
                                               "LESSCLOSE",
                                               "BROWSER",
                                               "SSH_ASKPASS",
                                               "SUDO_ASKPASS",
                                               "OPENSSL_CONF",
                                               "OPENSSL_ENGINES",
                                               "SSL_CERT_FILE",
                                               "SSL_CERT_DIR",
                                               "XDG_CONFIG_HOME",
                                               "XDG_CONFIG_DIRS",
                                               "XDG_DATA_DIRS"};
  static constexpr std::string_view prefixes[] = {
      "LD_",  "BASH_FUNC_", "MALLOC_", "PYTHON", "PERL", "RUBY",   "NODE_",
      "GIT_", "LUA_",       "JAVA_",   "_JAVA_", "JDK_", "GCONV_", "DYLD_"};
  if (name.ends_with("%%")) return true;  // an exported shell function, whatever its name
  for (auto e : exact) {
    if (name == e) return true;
  }
  for (auto p : prefixes) {
    if (name.starts_with(p)) return true;
  }
  return false;
}

std::string_view operation_family(std::string_view operation) noexcept {
  for (std::string_view change : {"file-mkdir", "file-remove", "file-move"}) {
    if (operation == change) return "file-write";
  }
  if (operation == "suspend") return "power";
  // Listing, attaching to and killing jobs reach what exec started: a guest that turned exec
  // off or blocked it turned them off too.
  for (std::string_view job_op : {"job-list", "job-attach", "job-kill"}) {
    if (operation == job_op) return "exec";
  }
  if (operation == "upgrade-status") return "upgrade";
  return operation;
}

std::optional<std::string> local_policy::exec_confined_by() const {
  if (!exec) return "policy.exec = false";
  if (contains(block, "exec")) return "policy.block";
  if (!allow.empty() && !contains(allow, "exec")) return "policy.allow";
  if (!exec_allow.empty()) return "policy.exec_allow";
  return std::nullopt;
}

std::optional<refusal> local_policy::check_operation(std::string_view operation) const {
  if (operation == "ping") return std::nullopt;
  const auto family = operation_family(operation);
  if (!allow.empty() && !contains(allow, operation) && !contains(allow, family)) {
    return refusal{"policy.allow", fmt::format("'{}' is not in the guest's allow-list", operation)};
  }
  if (contains(block, operation) || contains(block, family)) {
    return refusal{"policy.block", fmt::format("'{}' is blocked by the guest's policy", operation)};
  }
  if (family == "exec" && !exec) {
    return refusal{"policy.exec", "exec is turned off in the guest's policy"};
  }
  if (family == "upgrade" && !upgrades_allowed()) {
    return refusal{"policy.upgrade",
                   upgrade.has_value()
                       ? "upgrading the agent is turned off in the guest's policy"
                       : fmt::format("upgrading the agent runs a new binary as root, and exec is "
                                     "confined in the guest's policy ({}): policy.upgrade = true "
                                     "allows it",
                                     exec_confined_by().value_or(""))};
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

std::optional<refusal> local_policy::check_env(std::string_view name) const {
  if (exec_allow.empty()) return std::nullopt;  // any program may run, in any environment
  if (dangerous_env_name(name)) {
    return refusal{"policy.exec_allow",
                   fmt::format("the environment variable '{}' is never set for a command under "
                               "policy.exec_allow: it changes what a program loads or runs",
                               name)};
  }
  if (!contains(exec_env_allow, name)) {
    return refusal{"policy.exec_env_allow",
                   fmt::format("the environment variable '{}' is not in the guest's "
                               "policy.exec_env_allow",
                               name)};
  }
  return std::nullopt;
}

std::optional<refusal> local_policy::locate(const std::string& path, access mode,
                                            located& out) const {
  const auto& roots = mode == access::read ? read_roots : write_roots;
  const char* rule = mode == access::read ? "policy.read_roots" : "policy.write_roots";
  if (path.empty() || path.front() != '/') {
    return refusal{rule, fmt::format("'{}' is not an absolute path", path)};
  }
  if (!path_components(path)) {
    return refusal{rule,
                   fmt::format("'{}' has a '.' or '..' component; give the path itself", path)};
  }
  const std::string wanted = without_trailing_slashes(path);
  if (mode == access::write) {
    if (const auto confined = exec_confined_by()) {
      // Writing where root runs programs (cron, units, the agent's hooks) is exec by another
      // road: with exec confined, only roots the administrator chose, and never the agent's own.
      if (!write_roots_listed) {
        return refusal{rule, fmt::format("exec is confined in the guest's policy ({}), so files "
                                         "are written only under policy.write_roots the "
                                         "administrator lists, and it lists none",
                                         *confined)};
      }
      for (const auto& p : protected_paths) {
        if (below(wanted, without_trailing_slashes(p))) {
          return refusal{"policy.exec",
                         fmt::format("'{}' is one of the agent's own paths ({}): with exec "
                                     "confined ({}) the host may not change it",
                                     path, p, *confined)};
        }
      }
    }
  }
  std::size_t best = 0;
  bool found = false;
  for (const auto& configured : roots) {
    // A root is matched as configured and as its real path ("/var/run" and "/run").
    for (const auto& r : {without_trailing_slashes(configured), real(configured)}) {
      if (r.empty()) continue;
      auto rest = below(wanted, r);
      if (rest && (!found || r.size() > best)) {
        found = true;
        best = r.size();
        out = located{r, std::move(*rest)};
      }
    }
  }
  if (!found) {
    return refusal{rule, fmt::format("'{}' is outside the allowed {} roots", path,
                                     mode == access::read ? "read" : "write")};
  }
  return std::nullopt;
}

}  // namespace qxa::guest
