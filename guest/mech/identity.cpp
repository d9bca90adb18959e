// SPDX-License-Identifier: MIT
// The text edits behind the password and ssh-key operations, and the ssh-key helper: the agent's
// own program run as a user (see identity.hpp).
#include "qxa/guest/mech/identity.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "qxa/common/parse.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest {

bool replace_password_field(std::string& text, const std::string& user, const std::string& hash) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto end = text.find('\n', pos);
    const auto line_end = end == std::string::npos ? text.size() : end;
    if (text.compare(pos, user.size() + 1, user + ":") == 0) {
      const auto field = pos + user.size() + 1;
      const auto field_end = text.find(':', field);
      if (field_end == std::string::npos || field_end > line_end) return false;
      text.replace(field, field_end - field, hash);
      return true;
    }
    pos = line_end + 1;
  }
  return false;
}

std::string key_identity(std::string_view line) {
  // "[options] type base64 [comment]": the type and the base64 body identify a key.
  static constexpr std::string_view types[] = {"ssh-", "ecdsa-", "sk-"};
  std::vector<std::string_view> words;
  while (!line.empty()) {
    const auto start = line.find_first_not_of(" \t");
    if (start == std::string_view::npos) break;
    line.remove_prefix(start);
    const auto end = line.find_first_of(" \t");
    words.push_back(line.substr(0, end));
    if (end == std::string_view::npos) break;
    line.remove_prefix(end);
  }
  for (std::size_t i = 0; i + 1 < words.size(); ++i) {
    for (auto t : types) {
      if (words[i].starts_with(t)) return std::string(words[i]) + " " + std::string(words[i + 1]);
    }
  }
  return {};
}

unsigned edit_authorized_keys(std::vector<std::string>& lines, bool add,
                              const std::vector<std::string>& keys) {
  unsigned changed = 0;
  for (const auto& k : keys) {
    const auto id = key_identity(k);
    if (add) {
      bool present = false;
      for (const auto& l : lines) present = present || key_identity(l) == id;
      if (!present) {
        lines.push_back(k);
        ++changed;
      }
    } else {
      const auto before = lines.size();
      std::erase_if(lines, [&](const std::string& l) { return key_identity(l) == id; });
      changed += static_cast<unsigned>(before - lines.size());
    }
  }
  return changed;
}

std::vector<std::string> split_lines(std::string_view text) {
  std::vector<std::string> lines;
  common::for_each_line(text, [&](std::string_view line) { lines.emplace_back(line); });
  return lines;
}

using common::write_all;

int run_ssh_keys_helper(const std::string& home, int in, int out, int err) {
  auto fail = [&](const std::string& why) {
    (void)write_all(err, why);
    return 1;
  };
  ::umask(077);
  auto input = read_all(in, 4u << 20);
  if (!input) return fail("cannot read the request: " + input.error().message);
  auto request = split_lines(*input);
  if (request.empty()) return fail("no action given");
  const std::string action = request.front();
  request.erase(request.begin());
  if (action != "list" && action != "add" && action != "remove") {
    return fail("unknown action '" + action + "'");
  }
  // The home as passwd names it, entered as the user; below it nothing is followed.
  unique_fd home_fd(::open(home.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!home_fd) return fail(fmt::format("cannot open {}: {}", home, std::strerror(errno)));
  const std::string ssh_path = home + "/.ssh";
  auto ssh = open_node(home_fd.get(), ".ssh");
  if (!ssh && ssh.code() == std::errc::no_such_file_or_directory && action == "add") {
    if (::mkdirat(home_fd.get(), ".ssh", 0700) != 0 && errno != EEXIST) {
      return fail(fmt::format("cannot create {}: {}", ssh_path, std::strerror(errno)));
    }
    ssh = open_node(home_fd.get(), ".ssh");
  }
  std::vector<std::string> lines;
  mode_t mode = 0600;
  if (ssh) {
    if (!S_ISDIR(ssh->second.mode)) {
      return fail(fmt::format("{} is not a directory{}", ssh_path,
                              S_ISLNK(ssh->second.mode) ? " (a symbolic link, not followed)" : ""));
    }
    auto node = open_node(ssh->first.get(), "authorized_keys");
    if (node) {
      if (!S_ISREG(node->second.mode)) {
        return fail(
            fmt::format("{}/authorized_keys is not a regular file{}", ssh_path,
                        S_ISLNK(node->second.mode) ? " (a symbolic link, not followed)" : ""));
      }
      mode = node->second.mode & 0777;
      auto text = read_regular_file(ssh->first.get(), "authorized_keys", max_authorized_keys_bytes);
      if (!text) {
        return fail(
            fmt::format("cannot read {}/authorized_keys: {}", ssh_path, text.error().message));
      }
      lines = split_lines(*text);
    } else if (node.code() != std::errc::no_such_file_or_directory) {
      return fail(
          fmt::format("cannot open {}/authorized_keys: {}", ssh_path, node.error().message));
    }
  } else if (ssh.code() != std::errc::no_such_file_or_directory) {
    return fail(fmt::format("cannot open {}: {}", ssh_path, ssh.error().message));
  }
  unsigned changed = 0;
  if (action != "list") {
    changed = edit_authorized_keys(lines, action == "add", request);
  }
  if (changed > 0) {
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    if (auto ec = replace_file_at(ssh->first.get(), "authorized_keys", text, mode)) {
      return fail(fmt::format("cannot write {}/authorized_keys: {}", ssh_path, ec.message()));
    }
  }
  std::string answer = fmt::format("changed {}\n", changed);
  for (const auto& l : lines) answer += l + "\n";
  return write_all(out, answer) ? 0 : 1;
}

}  // namespace qxa::guest
