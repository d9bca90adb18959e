// SPDX-License-Identifier: MIT
// Paths as text: their components and their parent, with no look at the filesystem.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qxa::guest {

/// The components of `path` ('/'-separated; empty ones from doubled slashes are skipped), or
/// nothing when one is "." or "..".
[[nodiscard]] std::optional<std::vector<std::string>> path_components(std::string_view path);

/// "DIR" and "NAME" of "DIR/NAME" ("/" and "NAME" for "/NAME"); the path must be absolute.
std::pair<std::string, std::string> split_parent(const std::string& path);

}  // namespace qxa::guest
