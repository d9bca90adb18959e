// SPDX-License-Identifier: MIT
// The telemetry sampler: one reading of the whole system as plain values (ops/mapping.hpp makes
// protobuf of it).
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "qxa/guest/platform/network.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

/// One reading of the whole system.
struct system_sample {
  std::int64_t unix_ms = 0;
  std::optional<double> cpu_percent;  ///< since the previous sample
  std::uint32_t cpu_count = 0;
  std::optional<load_average> load;
  std::optional<double> uptime_seconds;
  std::optional<memory_info> memory;
  std::uint32_t processes = 0;
  std::string hostname;
  std::vector<disk_entry> disks;
  std::vector<interface_entry> interfaces;  ///< without the excluded ones
  std::string primary_address;
  std::vector<disk_io_entry> disk_io;  ///< whole disks, at most max_disk_io
  std::vector<cpu_mode_times> cpus;    ///< at most max_reported_cpus
};

/// Disks whose I/O counters telemetry carries at most.
inline constexpr std::size_t max_disk_io = 64;

struct sampler_sources {
  std::string proc_root = "/proc";
  std::string sys_root = "/sys";
  /// Where addresses come from; tests substitute a list.
  std::function<std::vector<address_entry>()> addresses = list_addresses;
  /// statvfs of a mount point; tests substitute one.
  std::function<std::optional<disk_usage>(const std::string&)> usage = statvfs_usage;
  /// The main routing table, for the primary address; tests substitute one.
  std::function<std::vector<route_entry>()> routes = [] { return read_routes(); };
  /// Interfaces the host is not told about (shell patterns), and the one whose address is the
  /// primary one (empty: the default route's).
  std::vector<std::string> exclude_interfaces = default_excluded_interfaces();
  std::string primary_interface;
  /// Set: every sample is this one's result instead of the system's (qx-bench's fleet
  /// simulator, where thousands of agents in one process would otherwise measure themselves).
  std::function<system_sample()> fixed;
};

/// Takes samples. CPU % is the delta since the previous sample (the first sample measures from
/// construction). Not thread-safe.
class telemetry_sampler {
 public:
  explicit telemetry_sampler(sampler_sources sources = {});

  system_sample take();
  /// The interfaces, their addresses and the primary address, as take() has them.
  std::vector<interface_entry> interfaces(std::string& primary) const;
  [[nodiscard]] const sampler_sources& sources() const noexcept { return src_; }

 private:
  std::vector<disk_entry> disks() const;
  std::vector<disk_io_entry> disk_io() const;

  sampler_sources src_;
  std::optional<cpu_times> last_cpu_;
};

}  // namespace qxa::guest
