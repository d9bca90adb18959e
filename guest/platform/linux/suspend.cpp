// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/suspend.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "qxa/common/parse.hpp"
#include "qxa/guest/platform/programs.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

namespace {

// The words of a sysfs list ("freeze mem disk"; power/disk marks the current one "[platform]").
std::vector<std::string> words(const std::string& path) {
  std::vector<std::string> out;
  auto text = read_file(path);
  if (!text) return out;
  std::string_view rest = *text;
  for (auto w = common::next_field(rest); !w.empty(); w = common::next_field(rest)) {
    if (w.size() > 2 && w.front() == '[' && w.back() == ']') w = w.substr(1, w.size() - 2);
    out.emplace_back(common::trim(w));
  }
  return out;
}

bool has(const std::vector<std::string>& list, std::string_view w) {
  return std::find(list.begin(), list.end(), w) != list.end();
}

std::string joined(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& w : list) out += (out.empty() ? "" : " ") + w;
  return out.empty() ? "nothing" : "'" + out + "'";
}

bool active_swap(std::string_view swaps) {
  bool header = true;
  bool found = false;
  common::for_each_line(swaps, [&](std::string_view line) {
    if (header) {
      header = false;  // "Filename Type Size Used Priority"
      return;
    }
    found |= !common::trim(line).empty();
  });
  return found;
}

std::optional<std::string> write_word(const std::string& path, std::string_view word) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);  // as `echo mem >` does
  if (fd < 0) return fmt::format("cannot open {}: {}", path, std::strerror(errno));
  ssize_t n;
  do {
    n = ::write(fd, word.data(), word.size());
  } while (n < 0 && errno == EINTR);
  const int err = errno;
  ::close(fd);
  if (n != static_cast<ssize_t>(word.size())) {
    return fmt::format("writing '{}' to {} failed: {}", word, path, std::strerror(err));
  }
  return std::nullopt;
}

}  // namespace

std::string_view mode_name(suspend_mode m) noexcept {
  switch (m) {
    case suspend_mode::ram:
      return "ram";
    case suspend_mode::disk:
      return "disk";
    case suspend_mode::hybrid:
      return "hybrid";
  }
  return "ram";
}

std::optional<std::string> suspend_refusal(const std::string& sys_root, std::string_view swaps,
                                           suspend_mode mode) {
  const auto state = words(sys_root + "/power/state");
  const bool ram = mode != suspend_mode::disk;
  const bool disk = mode != suspend_mode::ram;
  if (ram && !has(state, "mem")) {
    return fmt::format(
        "the guest cannot suspend to RAM: its kernel offers {} in /sys/power/state, "
        "no 'mem'",
        joined(state));
  }
  if (disk && !has(state, "disk")) {
    return fmt::format(
        "the guest cannot hibernate: its kernel offers {} in /sys/power/state, no "
        "'disk'",
        joined(state));
  }
  if (disk && !active_swap(swaps)) {
    return std::string("the guest cannot hibernate: no swap is active to hold the memory image");
  }
  if (mode == suspend_mode::hybrid && !has(words(sys_root + "/power/disk"), "suspend")) {
    return std::string("the guest cannot suspend hybrid: /sys/power/disk offers no 'suspend'");
  }
  return std::nullopt;
}

std::vector<std::string> suspend_command(suspend_mode mode, bool systemd_running,
                                         const std::string& search_path) {
  if (!systemd_running) return {};
  const auto systemctl = find_program("systemctl", search_path);
  if (systemctl.empty()) return {};
  const char* verb = mode == suspend_mode::ram    ? "suspend"
                     : mode == suspend_mode::disk ? "hibernate"
                                                  : "hybrid-sleep";
  return {systemctl, verb};
}

std::optional<std::string> suspend_through_sysfs(const std::string& sys_root, suspend_mode mode) {
  if (mode == suspend_mode::hybrid) {
    if (auto e = write_word(sys_root + "/power/disk", "suspend")) return e;
  }
  return write_word(sys_root + "/power/state", mode == suspend_mode::ram ? "mem" : "disk");
}

double seconds_asleep_so_far() noexcept {
  timespec boot{}, mono{};
  ::clock_gettime(CLOCK_BOOTTIME, &boot);
  ::clock_gettime(CLOCK_MONOTONIC, &mono);
  return static_cast<double>(boot.tv_sec - mono.tv_sec) +
         static_cast<double>(boot.tv_nsec - mono.tv_nsec) / 1e9;
}

}  // namespace qxa::guest
