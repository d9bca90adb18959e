// SPDX-License-Identifier: MIT
// Users and groups from /etc/passwd and /etc/group. The agent is a static binary, where glibc's
// NSS lookups (getpwnam and friends) are unreliable, so it reads the files itself; accounts
// that live only in a directory service cannot be used for exec or SSH keys.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qxa::guest {

struct account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;  ///< primary group
  std::string home;
  std::string shell;
  std::vector<gid_t> groups;  ///< primary and supplementary, no duplicates
  /// Root, or a member of a group that sudo traditionally makes root (sudo, wheel, admin):
  /// a way in for this account is a way to root. (One that /etc/sudoers names by itself is
  /// not recognised.)
  bool administrator = false;
};

/// The account `name` (or a numeric uid) in the passwd text, with its groups from the group
/// text; nothing when it is not there.
std::optional<account> find_account(std::string_view name, std::string_view passwd_text,
                                    std::string_view group_text);
/// Same, from /etc/passwd and /etc/group (or other files, for tests).
std::optional<account> lookup_account(std::string_view name,
                                      const std::string& passwd_path = "/etc/passwd",
                                      const std::string& group_path = "/etc/group");
/// The account the agent runs as.
std::optional<account> current_account();

}  // namespace qxa::guest
