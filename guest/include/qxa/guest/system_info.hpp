// SPDX-License-Identifier: MIT
// Reusable readers of the guest's own state: pure parsers over the text of /proc and /sys files,
// and small wrappers that read them. Handlers and the telemetry sampler build on these.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "quantix/agent/v1/agent.pb.h"
#include "quantix/agent/v1/telemetry.pb.h"

namespace qxa::guest {

namespace pb = ::quantix::agent::v1;

/// Reads a small (pseudo-)file whole. Empty optional when it cannot be opened or read.
std::optional<std::string> read_file(const std::string& path);

// ---- /proc parsers: text in, values out --------------------------------------------------

/// Aggregate CPU jiffies from the first line of /proc/stat.
struct cpu_times {
  std::uint64_t busy = 0;   // user + nice + system + irq + softirq + steal
  std::uint64_t total = 0;  // busy + idle + iowait
  std::uint32_t cpu_count = 0;
};
std::optional<cpu_times> parse_proc_stat(std::string_view text);

/// Share of busy time between two readings, 0..100; 0 when no time passed.
double cpu_percent(const cpu_times& before, const cpu_times& after) noexcept;

/// /proc/meminfo into Memory and SwapSpace (bytes). False when MemTotal is missing.
bool parse_meminfo(std::string_view text, pb::Memory& memory, pb::SwapSpace& swap);

struct load_average {
  double load1 = 0, load5 = 0, load15 = 0;
};
std::optional<load_average> parse_loadavg(std::string_view text);

/// Seconds since boot from /proc/uptime.
std::optional<double> parse_uptime(std::string_view text);

/// Decodes the octal escapes the kernel uses in mount paths ("\040" for a space).
std::string decode_mount_path(std::string_view escaped);

struct mount_entry {
  std::uint64_t id = 0;  ///< the mount's id (statx's stx_mnt_id)
  std::string mount_point;
  std::string root;  // the path within the filesystem that is mounted ("/" unless a bind mount)
  std::string device;
  std::string fs_type;
  std::uint32_t major = 0, minor = 0;
  bool read_only = false;
};
/// Parses /proc/self/mountinfo; malformed lines are skipped.
std::vector<mount_entry> parse_mountinfo(std::string_view text);

/// Keeps the mounts that are real storage: drops pseudo and memory filesystems (proc, sysfs,
/// cgroup, tmpfs, overlay, ...) and those a process or server answers for (FUSE, network:
/// their statfs can hang), and keeps one
/// entry per filesystem (bind mounts of the same device collapse to the first whole mount).
/// Linear in the number of mounts.
std::vector<mount_entry> select_disks(const std::vector<mount_entry>& mounts);

/// os-release (NAME, VERSION_ID, ID, PRETTY_NAME) into OsInfo; quotes and escapes removed.
void parse_os_release(std::string_view text, pb::OsInfo& os);

// ---- Interfaces --------------------------------------------------------------------------

struct address_entry {
  std::string interface;
  pb::IpAddress::Family family = pb::IpAddress::FAMILY_UNSPECIFIED;
  std::string address;
  std::uint32_t prefix_length = 0;
};
/// Every IPv4 and IPv6 address of every interface (getifaddrs).
std::vector<address_entry> list_addresses();

// ---- The sampler -------------------------------------------------------------------------

struct disk_usage {
  std::uint64_t total = 0, used = 0, available = 0;
};

struct sampler_sources {
  std::string proc_root = "/proc";
  std::string sys_root = "/sys";
  /// Where addresses come from; tests substitute a list.
  std::function<std::vector<address_entry>()> addresses = list_addresses;
  /// statvfs of a mount point; tests substitute one.
  std::function<std::optional<disk_usage>(const std::string&)> usage;
};

/// Takes telemetry samples. CPU % is the delta since the previous sample (the first sample
/// measures from construction). Not thread-safe.
class telemetry_sampler {
 public:
  explicit telemetry_sampler(sampler_sources sources = {});

  /// A full sample; the caller sets the sequence number.
  pb::Telemetry sample();

  void sample_memory(pb::Telemetry& t) const;
  void sample_disks(pb::Telemetry& t) const;
  void sample_interfaces(pb::Telemetry& t) const;

 private:
  sampler_sources src_;
  std::optional<cpu_times> last_cpu_;
};

/// OS identity of the running system: os-release plus uname.
pb::OsInfo read_os_info(const std::string& etc_root = "/etc");
std::string read_hostname(const std::string& proc_root = "/proc");
std::string read_boot_id(const std::string& proc_root = "/proc");

/// A valid DNS hostname (RFC 1123): dot-separated labels of letters, digits and hyphens, 1 to
/// 63 characters each, not starting or ending with a hyphen, 253 characters at most.
bool valid_hostname(std::string_view name) noexcept;

/// The calling process's user+system CPU seconds and resident set size in bytes.
struct process_usage {
  double cpu_seconds = 0;
  std::uint64_t rss_bytes = 0;
};
process_usage read_self_usage();

}  // namespace qxa::guest
