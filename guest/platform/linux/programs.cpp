// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/programs.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <string_view>

namespace qxa::guest {

std::string find_program(const std::string& program, const std::string& search_path) {
  if (program.empty()) return {};
  if (program.find('/') != std::string::npos) {
    return ::access(program.c_str(), X_OK) == 0 ? program : std::string{};
  }
  std::string_view rest = search_path;
  while (!rest.empty()) {
    const auto colon = rest.find(':');
    std::string dir(rest.substr(0, colon));
    rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    if (dir.empty()) continue;
    auto candidate = dir + "/" + program;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

bool systemd_running(const std::string& dir) {
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::vector<std::string> power_command(const std::string& action, bool systemd_running,
                                       const std::string& search_path) {
  if (systemd_running) {
    const auto systemctl = find_program("systemctl", search_path);
    if (!systemctl.empty()) return {systemctl, action};
  }
  const auto program = find_program(action, search_path);
  if (!program.empty()) return {program};
  return {};
}

}  // namespace qxa::guest
