// SPDX-License-Identifier: MIT
// Hook scripts: the executables of a directory, run one after the other with a phase as their
// argument ("freeze", "thaw"; "poweroff", "reboot", "halt", "suspend", "resume"), each with a
// deadline. Shared by the freezer (freeze.hooks_dir) and the power operations
// (power.hooks_dir), like open-vm-tools' power scripts.
//
// A hook runs as root, so the directory must be root's and writable by nobody else, and so
// must each hook; links, directories and files that are not executable are not hooks.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <string>
#include <vector>

namespace qxa::guest {

struct hook_outcome {
  std::string hook = {};  ///< its path (the directory's, when the directory itself is refused)
  std::string phase = {};
  bool ran = false;  ///< started at all
  bool ok = false;
  int exit_status = 0;
  int signal = 0;
  bool timed_out = false;
  std::string error = {};  ///< why not ok, in words
  std::chrono::milliseconds duration{0};
};

/// Runs the hooks of `dir` with `phase`, in name order (`reverse`: the opposite, for the phase
/// that undoes another), each killed (its process group) after `timeout`. A missing directory
/// has no hooks; a directory or hook that others could write gives an outcome that did not
/// run, saying why.
asio::awaitable<std::vector<hook_outcome>> run_hooks(asio::any_io_executor ex, std::string dir,
                                                     std::string phase,
                                                     std::chrono::nanoseconds timeout,
                                                     bool reverse = false);

/// "HOOK PHASE: why" (or "HOOK: why" for one that did not run): a failed outcome in a line.
std::string describe(const hook_outcome& o);

}  // namespace qxa::guest
