// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/accounts.hpp"

#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "qxa/common/parse.hpp"

namespace qxa::guest {

namespace {

/// Calls `fn` for the lines of a passwd or group file that are not comments.
template <typename Fn>
void for_each_entry(std::string_view text, Fn fn) {
  common::for_each_line(text, [&](std::string_view line) {
    if (!line.empty() && line.front() != '#') fn(line);
  });
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

std::optional<account> find_account(std::string_view name, std::string_view passwd_text,
                                    std::string_view group_text) {
  const auto wanted_uid = common::to_number<uid_t>(name);
  std::optional<account> found;
  for_each_entry(passwd_text, [&](std::string_view line) {
    if (found) return;
    const auto f = common::split(line, ':');  // name:password:uid:gid:gecos:home:shell
    if (f.size() < 7) return;
    const auto uid = common::to_number<uid_t>(f[2]);
    const auto gid = common::to_number<gid_t>(f[3]);
    if (!uid || !gid) return;
    if (f[0] != name && !(wanted_uid && *wanted_uid == *uid)) return;
    found = account{std::string(f[0]), *uid, *gid, std::string(f[5]), std::string(f[6]), {*gid}};
  });
  if (!found) return std::nullopt;
  for_each_entry(group_text, [&](std::string_view line) {
    const auto f = common::split(line, ':');  // name:password:gid:member,member
    if (f.size() < 4) return;
    const auto gid = common::to_number<gid_t>(f[2]);
    if (!gid) return;
    bool in_it = *gid == found->gid;
    for (auto member : common::split(f[3], ',')) {
      if (member != found->name) continue;
      in_it = true;
      if (std::find(found->groups.begin(), found->groups.end(), *gid) == found->groups.end()) {
        found->groups.push_back(*gid);
      }
    }
    if (in_it && (f[0] == "sudo" || f[0] == "wheel" || f[0] == "admin")) {
      found->administrator = true;
    }
  });
  if (found->uid == 0) found->administrator = true;
  return found;
}

std::optional<account> lookup_account(std::string_view name, const std::string& passwd_path,
                                      const std::string& group_path) {
  return find_account(name, slurp(passwd_path), slurp(group_path));
}

std::optional<account> current_account() {
  auto a = lookup_account(std::to_string(::geteuid()));
  if (a) return a;
  // Not in /etc/passwd (a minimal guest, a container): describe it from the process itself.
  account self{
      std::to_string(::geteuid()), ::geteuid(), ::getegid(), "/", "/bin/sh", {::getegid()}};
  return self;
}

}  // namespace qxa::guest
