// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/sampler.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>

#include "qxa/common/text.hpp"
#include "qxa/common/wall_clock.hpp"

namespace qxa::guest {

using common::to_utf8;

telemetry_sampler::telemetry_sampler(sampler_sources sources) : src_(std::move(sources)) {
  if (!src_.usage) src_.usage = statvfs_usage;
  if (!src_.addresses) src_.addresses = [] { return std::vector<address_entry>{}; };
  if (!src_.routes) src_.routes = [] { return std::vector<route_entry>{}; };
  if (auto text = read_file(src_.proc_root + "/stat")) last_cpu_ = parse_proc_stat(*text);
}

std::vector<disk_entry> telemetry_sampler::disks() const {
  std::vector<disk_entry> out;
  auto text = read_file(src_.proc_root + "/self/mountinfo");
  if (!text) return out;
  for (auto& m : select_disks(parse_mountinfo(*text))) {
    auto usage = src_.usage(m.mount_point);
    if (!usage || usage->total == 0) continue;
    out.push_back({std::move(m), *usage});
  }
  return out;
}

std::vector<disk_io_entry> telemetry_sampler::disk_io() const {
  std::vector<disk_io_entry> out;
  auto text = read_file(src_.proc_root + "/diskstats");
  if (!text) return out;
  for (auto& e : parse_diskstats(*text)) {
    if (out.size() >= max_disk_io) break;
    // Whole disks only (partitions and mappings add up to theirs), and no idle loop or ram
    // device: a guest has dozens of those.
    const bool idle = e.reads == 0 && e.writes == 0;
    if (idle &&
        (e.name.starts_with("loop") || e.name.starts_with("ram") || e.name.starts_with("zram"))) {
      continue;
    }
    if (e.name.find('/') != std::string::npos ||
        !read_file(src_.sys_root + "/block/" + e.name + "/dev")) {
      continue;
    }
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<interface_entry> telemetry_sampler::interfaces(std::string& primary) const {
  auto all = read_interfaces(src_.sys_root, src_.addresses());
  std::erase_if(all, [&](const interface_entry& i) {
    return excluded_interface(i.name, src_.exclude_interfaces);
  });
  primary = primary_address(all, src_.routes(), src_.primary_interface);
  return all;
}

system_sample telemetry_sampler::take() {
  if (src_.fixed) return src_.fixed();
  system_sample s;
  s.unix_ms = common::unix_ms();
  if (auto text = read_file(src_.proc_root + "/stat")) {
    if (auto now = parse_proc_stat(*text)) {
      if (last_cpu_) s.cpu_percent = cpu_percent(*last_cpu_, *now);
      s.cpu_count = now->cpu_count;
      s.cpus = now->cpus;
      last_cpu_ = std::move(now);
    }
  }
  if (auto text = read_file(src_.proc_root + "/loadavg")) s.load = parse_loadavg(*text);
  if (auto text = read_file(src_.proc_root + "/uptime")) s.uptime_seconds = parse_uptime(*text);
  if (auto text = read_file(src_.proc_root + "/meminfo")) s.memory = parse_meminfo(*text);
  s.processes = count_processes(src_.proc_root);
  s.hostname = read_hostname(src_.proc_root);
  s.disks = disks();
  s.interfaces = interfaces(s.primary_address);
  s.disk_io = disk_io();
  return s;
}

// ---- To the wire: the one place. Names of the system go into protobuf strings, which must
// be UTF-8 (a peer cannot parse a message that holds anything else).

}  // namespace qxa::guest
