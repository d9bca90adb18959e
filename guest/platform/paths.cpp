// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/paths.hpp"

namespace qxa::guest {

std::optional<std::vector<std::string>> path_components(std::string_view path) {
  std::vector<std::string> out;
  while (!path.empty()) {
    const auto slash = path.find('/');
    const auto c = path.substr(0, slash);
    if (c == "." || c == "..") return std::nullopt;
    if (!c.empty()) out.emplace_back(c);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

std::pair<std::string, std::string> split_parent(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

}  // namespace qxa::guest
