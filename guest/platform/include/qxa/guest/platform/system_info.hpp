// SPDX-License-Identifier: MIT
// Readers of the guest's own state, as plain structs: pure parsers over the text of /proc,
// /sys and /etc files, and small readers around them. Nothing here knows the wire: names keep
// the bytes the system gave (they need not be UTF-8); telemetry_sampler.hpp maps them to
// protobuf, in one place (the split osquery makes between getting and generating).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qxa/common/error.hpp"

namespace qxa::guest {

/// Reads a small (pseudo-)file whole. Empty optional when it cannot be opened or read.
std::optional<std::string> read_file(const std::string& path);

// ---- /proc parsers: text in, values out --------------------------------------------------

/// One CPU's jiffies by mode, from its cpuN line of /proc/stat.
struct cpu_mode_times {
  std::uint32_t cpu = 0;
  std::uint64_t user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                steal = 0;
};
/// CPUs whose times are reported one by one at most.
inline constexpr std::size_t max_reported_cpus = 256;

/// Aggregate CPU jiffies from the first line of /proc/stat, and each CPU's.
struct cpu_times {
  std::uint64_t busy = 0;   // user + nice + system + irq + softirq + steal
  std::uint64_t total = 0;  // busy + idle + iowait
  std::uint32_t cpu_count = 0;
  std::vector<cpu_mode_times> cpus;  ///< the first max_reported_cpus, in the file's order
};
std::optional<cpu_times> parse_proc_stat(std::string_view text);

/// One line of /proc/diskstats: counts and sectors (of 512 bytes) since boot.
struct disk_io_entry {
  std::uint32_t major = 0, minor = 0;
  std::string name;
  std::uint64_t reads = 0, read_sectors = 0, read_ms = 0;
  std::uint64_t writes = 0, write_sectors = 0, write_ms = 0;
  std::uint64_t in_flight = 0, io_ms = 0;
  std::uint64_t discards = 0, discard_sectors = 0;  // kernels since 4.18
};
/// /proc/diskstats; malformed lines are skipped.
std::vector<disk_io_entry> parse_diskstats(std::string_view text);

/// Share of busy time between two readings, 0..100; 0 when no time passed.
double cpu_percent(const cpu_times& before, const cpu_times& after) noexcept;

/// Memory and swap, in bytes.
struct memory_info {
  std::uint64_t total = 0, available = 0, used = 0, free = 0, buffers = 0, cached = 0;
  std::uint64_t swap_total = 0, swap_free = 0, swap_used = 0;
};
/// /proc/meminfo; nothing when MemTotal is missing. A kernel before 3.14 has no MemAvailable:
/// it is estimated as free + buffers + cache.
std::optional<memory_info> parse_meminfo(std::string_view text);

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

/// Filesystems whose lookups a process or a server answers (FUSE, network filesystems, autofs):
/// the agent does not step into them, and does not statfs or freeze them.
[[nodiscard]] bool answered_elsewhere(std::string_view fs_type) noexcept;

/// Keeps the mounts that are real storage: drops pseudo and memory filesystems (proc, sysfs,
/// cgroup, tmpfs, overlay, ...) and those a process or server answers for (FUSE, network:
/// their statfs can hang), and keeps one entry per filesystem (bind mounts of the same device
/// collapse to the first whole mount). Linear in the number of mounts.
std::vector<mount_entry> select_disks(const std::vector<mount_entry>& mounts);

/// The writable disk filesystems of `mounts` (select_disks without the read-only ones), in
/// mount order, only those of `wanted` when it is not empty: what freeze and trim act on. An
/// entry of `wanted` that is not one of them is an error saying it is "not a `what` mount
/// point".
common::result<std::vector<mount_entry>> writable_disks(const std::vector<mount_entry>& mounts,
                                                        const std::vector<std::string>& wanted,
                                                        std::string_view what);

/// What the system says it is: os-release and uname.
struct os_identity {
  std::string name, version, id, pretty_name;                // os-release
  std::string version_name;                                  // os-release VERSION: "12 (bookworm)"
  std::string variant, variant_id;                           // os-release VARIANT, VARIANT_ID
  std::string kernel_release, kernel_version, architecture;  // uname
};
/// os-release (NAME, VERSION_ID, VERSION, ID, PRETTY_NAME, VARIANT, VARIANT_ID); quotes and
/// escapes removed.
os_identity parse_os_release(std::string_view text);

// ---- Disks and interfaces ------------------------------------------------------------------

struct disk_usage {
  std::uint64_t total = 0, used = 0, available = 0;
};
/// statvfs of a mount point.
std::optional<disk_usage> statvfs_usage(const std::string& path);

struct disk_entry {
  mount_entry mount;
  disk_usage usage;
};

enum class ip_family { ipv4, ipv6 };

struct address_entry {
  std::string interface;
  ip_family family = ip_family::ipv4;
  std::string address;
  std::uint32_t prefix_length = 0;
  bool dynamic = false;  ///< configured with a lifetime (DHCP, SLAAC): see network.hpp
};
/// Every IPv4 and IPv6 address of every interface: from rtnetlink (network.hpp), which says
/// which are dynamic, or getifaddrs where rtnetlink cannot be used.
std::vector<address_entry> list_addresses();

struct interface_entry {
  std::string name, mac, oper_state;
  bool link_up = false;
  std::uint32_t mtu = 0;
  std::uint64_t rx_bytes = 0, rx_packets = 0, rx_errors = 0;
  std::uint64_t tx_bytes = 0, tx_packets = 0, tx_errors = 0;
  std::uint64_t rx_dropped = 0, tx_dropped = 0;
  std::vector<address_entry> addresses;
};
/// The interfaces under `sys_root`/class/net but the loopback, by name, each with its addresses
/// among `addresses`.
std::vector<interface_entry> read_interfaces(const std::string& sys_root,
                                             const std::vector<address_entry>& addresses);

// ---- The system and this process -----------------------------------------------------------

/// OS identity of the running system: os-release (from `etc_root`, else /usr/lib) plus uname.
os_identity read_os_info(const std::string& etc_root = "/etc");
std::string read_hostname(const std::string& proc_root = "/proc");
std::string read_boot_id(const std::string& proc_root = "/proc");
/// Entries of `proc_root` that are processes.
std::uint32_t count_processes(const std::string& proc_root = "/proc");

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
