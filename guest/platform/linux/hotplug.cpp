// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/hotplug.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "qxa/common/parse.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

using common::unique_fd;

namespace {

struct kind_paths {
  std::string dir;     // devices/system/cpu
  std::string prefix;  // cpu
};

kind_paths paths_of(const std::string& sys_root, hotplug_kind kind) {
  return kind == hotplug_kind::cpu ? kind_paths{sys_root + "/devices/system/cpu", "cpu"}
                                   : kind_paths{sys_root + "/devices/system/memory", "memory"};
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string unit_name(hotplug_kind kind, std::uint64_t id) {
  return fmt::format("{}{}", kind == hotplug_kind::cpu ? "cpu" : "memory", id);
}

bool unit_online(const std::string& unit_dir, hotplug_kind kind) {
  if (kind == hotplug_kind::cpu) {
    auto text = read_file(unit_dir + "/online");
    return !text || trimmed(*text) != "0";  // no file: the boot CPU, always online
  }
  return trimmed(read_file(unit_dir + "/state").value_or("")) == "online";
}

}  // namespace

std::vector<hotplug_unit> list_hotplug(const std::string& sys_root, hotplug_kind kind) {
  const auto p = paths_of(sys_root, kind);
  std::vector<hotplug_unit> out;
  DIR* d = ::opendir(p.dir.c_str());
  if (d == nullptr) return out;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name = e->d_name;
    if (!name.starts_with(p.prefix)) continue;
    const auto id = common::to_number<std::uint64_t>(name.substr(p.prefix.size()));
    if (!id) continue;  // cpufreq, cpuidle, ...
    const std::string unit_dir = p.dir + "/" + std::string(name);
    hotplug_unit u;
    u.id = *id;
    u.online = unit_online(unit_dir, kind);
    if (kind == hotplug_kind::cpu) {
      struct stat st {};
      u.can_offline = ::stat((unit_dir + "/online").c_str(), &st) == 0 && (st.st_mode & S_IWUSR);
    } else {
      u.can_offline = trimmed(read_file(unit_dir + "/removable").value_or("0")) == "1";
    }
    out.push_back(u);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end(),
            [](const hotplug_unit& a, const hotplug_unit& b) { return a.id < b.id; });
  return out;
}

std::uint64_t memory_block_bytes(const std::string& sys_root) {
  const auto text = read_file(sys_root + "/devices/system/memory/block_size_bytes");
  if (!text) return 0;
  return common::to_number<std::uint64_t>(trimmed(*text), 16).value_or(0);
}

std::optional<std::string> set_online(const std::string& sys_root, hotplug_kind kind,
                                      std::uint64_t id, bool online) {
  const auto p = paths_of(sys_root, kind);
  const std::string name = unit_name(kind, id);
  const std::string unit_dir = p.dir + "/" + name;
  struct stat st {};
  if (::stat(unit_dir.c_str(), &st) != 0) return fmt::format("the guest has no {}", name);
  if (unit_online(unit_dir, kind) == online) return std::nullopt;  // so already
  const std::string file = unit_dir + (kind == hotplug_kind::cpu ? "/online" : "/state");
  // O_TRUNC as a shell's "echo 1 > online" does (sysfs ignores it).
  unique_fd fd(::open(file.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return fmt::format("{} cannot be taken offline", name);
    return fmt::format("{}: {}", file, std::strerror(errno));
  }
  const std::string value =
      kind == hotplug_kind::cpu ? (online ? "1" : "0") : (online ? "online" : "offline");
  if (!common::write_all(fd.get(), value)) {
    const int err = errno;
    return fmt::format(
        "{} stays {}: {}", name, online ? "offline" : "online",
        err == EBUSY ? "in use: the kernel cannot move what it holds" : std::strerror(err));
  }
  return std::nullopt;
}

}  // namespace qxa::guest
