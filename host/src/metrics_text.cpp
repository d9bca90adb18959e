// SPDX-License-Identifier: MIT
#include "qxa/host/metrics_text.hpp"

#include <fmt/format.h>

#include <cstdint>
#include <iterator>
#include <utility>

#include "qxa/common/text.hpp"
#include "qxa/common/wall_clock.hpp"

namespace qxa::host {

namespace {

// Label values escape backslash, double quote and newline (the exposition format's rules);
// what came from a guest is made printable first, so no control character reaches a scraper's
// terminal or UI.
std::string label(std::string_view v) {
  std::string out;
  for (char c : common::printable(v)) {
    if (c == '\\' || c == '"') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

struct writer {
  std::string text;
  void family(const char* name, const char* type, const char* help) {
    fmt::format_to(std::back_inserter(text), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                   type);
  }
  /// `name{labels} value`: the labels formatted straight into the text (10,000 VMs make
  /// 600,000 samples: no temporary string each).
  template <typename V, typename... A>
  void sample(std::string_view name, V value, fmt::format_string<A...> labels, A&&... args) {
    text.append(name);
    text.push_back('{');
    fmt::format_to(std::back_inserter(text), labels, std::forward<A>(args)...);
    fmt::format_to(std::back_inserter(text), "}} {}\n", value);
  }
};

// About what one VM with a few CPUs and disks takes, so that the text grows once or twice.
constexpr std::size_t bytes_per_vm = 4096;

}  // namespace

std::string render_metrics(const std::vector<vm_metrics>& vms, const capacity_figures& capacity) {
  writer w;
  w.text.reserve(bytes_per_vm * (vms.size() + 1));
  // Each VM's name as a label value, escaped once.
  std::vector<std::string> names;
  names.reserve(vms.size());
  for (const auto& v : vms) names.push_back(label(v.status.vm()));
  auto name_of = [&](const vm_metrics& v) -> const std::string& {
    return names[static_cast<std::size_t>(&v - vms.data())];
  };
  w.family("qxa_vms", "gauge", "VMs whose agent socket is in the socket directory.");
  fmt::format_to(std::back_inserter(w.text), "qxa_vms {}\n", vms.size());

  w.family("qxa_descriptor_limit", "gauge", "The descriptors qx-agentd may hold (RLIMIT_NOFILE).");
  fmt::format_to(std::back_inserter(w.text), "qxa_descriptor_limit {}\n",
                 capacity.descriptor_limit);
  w.family("qxa_vm_connections_max", "gauge",
           "The VM connections the descriptor limit allows, the rest kept for the control socket "
           "and metrics.");
  fmt::format_to(std::back_inserter(w.text), "qxa_vm_connections_max {}\n",
                 capacity.max_vm_connections);
  w.family("qxa_vm_connections", "gauge", "VM connections held or being opened.");
  fmt::format_to(std::back_inserter(w.text), "qxa_vm_connections {}\n", capacity.vm_connections);
  w.family("qxa_vms_over_capacity", "gauge",
           "VMs waiting for a descriptor: the VM connections are all taken.");
  fmt::format_to(std::back_inserter(w.text), "qxa_vms_over_capacity {}\n",
                 capacity.vms_over_capacity);

  w.family("qxa_vm_over_capacity", "gauge",
           "1 while the VM waits for a descriptor (it is not served: over capacity).");
  for (const auto& v : vms) {
    w.sample("qxa_vm_over_capacity", v.status.over_capacity() ? 1 : 0, "vm=\"{}\"", name_of(v));
  }

  w.family("qxa_vm_state", "gauge", "1 for the VM's current connection state, 0 for the others.");
  for (const auto& v : vms) {
    for (auto s : {pb::VM_STATE_CONNECTING, pb::VM_STATE_HANDSHAKING, pb::VM_STATE_READY,
                   pb::VM_STATE_UNRESPONSIVE, pb::VM_STATE_STALE_SOCKET}) {
      w.sample("qxa_vm_state", v.status.state() == s ? 1 : 0, "vm=\"{}\",state=\"{}\"", name_of(v),
               to_string(s));
    }
  }

  w.family("qxa_heartbeat_rtt_seconds", "histogram", "Round trip of answered heartbeat pings.");
  for (const auto& v : vms) {
    const auto& vm = name_of(v);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < rtt_buckets.size(); ++i) {
      cumulative += v.rtt_bucket_counts[i];
      w.sample("qxa_heartbeat_rtt_seconds_bucket", cumulative, "vm=\"{}\",le=\"{}\"", vm,
               rtt_buckets[i]);
    }
    w.sample("qxa_heartbeat_rtt_seconds_bucket", v.rtt_count, "vm=\"{}\",le=\"+Inf\"", vm);
    w.sample("qxa_heartbeat_rtt_seconds_sum", v.rtt_sum_seconds, "vm=\"{}\"", vm);
    w.sample("qxa_heartbeat_rtt_seconds_count", v.rtt_count, "vm=\"{}\"", vm);
  }

  w.family("qxa_requests_total", "counter",
           "Requests forwarded to the VM's agent, by operation and outcome.");
  for (const auto& v : vms) {
    for (const auto& [key, n] : v.requests) {
      w.sample("qxa_requests_total", n, "vm=\"{}\",operation=\"{}\",outcome=\"{}\"", name_of(v),
               label(key.first), label(key.second));
    }
  }

  struct counter {
    const char* name;
    const char* help;
    std::uint64_t (pb::VmStatus::*get)() const;
  };
  for (const auto& c : {
           counter{"qxa_reconnects_total", "Connections to the VM's socket after the first.",
                   &pb::VmStatus::reconnects},
           counter{"qxa_timeouts_total", "Heartbeats and requests that missed their deadline.",
                   &pb::VmStatus::timeouts},
           counter{"qxa_bad_frames_total",
                   "Damaged, oversized or unparsable frames from the guest.",
                   &pb::VmStatus::bad_frames},
           counter{"qxa_unknown_replies_total", "Replies whose request id was not pending.",
                   &pb::VmStatus::unknown_replies},
           counter{"qxa_sessions_total", "Handshakes completed with the VM's agent.",
                   &pb::VmStatus::sessions},
           counter{"qxa_guest_clock_corrections_total",
                   "Times qx-agentd set the guest's clock, found off after a pause or migration.",
                   &pb::VmStatus::clock_corrections},
           counter{"qxa_guest_clock_correction_failures_total",
                   "Clock corrections the guest refused or failed.",
                   &pb::VmStatus::clock_correction_failures},
           counter{"qxa_guest_data_trimmed_total",
                   "Messages from the guest cut to the host's limits (counts, name lengths).",
                   &pb::VmStatus::guest_data_trimmed},
       }) {
    w.family(c.name, "counter", c.help);
    for (const auto& v : vms) {
      w.sample(c.name, (v.status.*c.get)(), "vm=\"{}\"", name_of(v));
    }
  }

  w.family("qxa_guest_clock_offset_seconds", "gauge",
           "The guest's clock minus this host's, at the last answered heartbeat.");
  for (const auto& v : vms) {
    w.sample("qxa_guest_clock_offset_seconds", v.status.clock_offset_ms() / 1000.0, "vm=\"{}\"",
             name_of(v));
  }

  // Guest telemetry: only for VMs that have sent some.
  const auto now_ms = common::unix_ms();
  auto per_vm = [&](const char* name, const char* help, auto value) {
    w.family(name, "gauge", help);
    for (const auto& v : vms) {
      if (v.status.last_telemetry_unix_ms() == 0) continue;
      w.sample(name, value(v), "vm=\"{}\"", name_of(v));
    }
  };
  per_vm("qxa_guest_memory_total_bytes", "Guest memory, as the guest sees it.",
         [](const vm_metrics& v) { return v.status.last_telemetry().memory().total_bytes(); });
  per_vm("qxa_guest_memory_available_bytes", "Guest memory available for new work.",
         [](const vm_metrics& v) { return v.status.last_telemetry().memory().available_bytes(); });
  per_vm("qxa_guest_cpu_percent", "Guest CPU use over the last telemetry interval.",
         [](const vm_metrics& v) { return v.status.last_telemetry().cpu_percent(); });
  per_vm("qxa_guest_telemetry_age_seconds", "Time since the VM's last telemetry arrived.",
         [&](const vm_metrics& v) {
           return static_cast<double>(now_ms - v.status.last_telemetry_unix_ms()) / 1000.0;
         });
  // The guest's freeze, as of its last sample and aged since by the host's own clock.
  const auto age_s = [&](const vm_metrics& v) {
    return static_cast<double>(now_ms - v.status.last_telemetry_unix_ms()) / 1000.0;
  };
  const auto frozen = [](const vm_metrics& v) {
    return v.status.last_telemetry().freeze().frozen();
  };
  per_vm("qxa_guest_frozen", "1 while the agent holds the guest's filesystems frozen.",
         [&](const vm_metrics& v) { return frozen(v) ? 1 : 0; });
  per_vm(
      "qxa_guest_frozen_seconds", "How long the guest's filesystems have been frozen (0: thawed).",
      [&](const vm_metrics& v) {
        return frozen(v)
                   ? static_cast<double>(v.status.last_telemetry().freeze().frozen_ms()) / 1000.0 +
                         age_s(v)
                   : 0.0;
      });
  w.family("qxa_guest_freeze_lease_remaining_seconds", "gauge",
           "While frozen: time until the agent thaws by itself; negative past the lease's end.");
  for (const auto& v : vms) {
    if (v.status.last_telemetry_unix_ms() == 0 || !frozen(v)) continue;
    w.sample("qxa_guest_freeze_lease_remaining_seconds",
             static_cast<double>(v.status.last_telemetry().freeze().lease_remaining_ms()) / 1000.0 -
                 age_s(v),
             "vm=\"{}\"", name_of(v));
  }
  auto per_disk = [&](const char* name, const char* help, auto value) {
    w.family(name, "gauge", help);
    for (const auto& v : vms) {
      for (const auto& d : v.status.last_telemetry().disks()) {
        w.sample(name, value(d), "vm=\"{}\",mount_point=\"{}\",device=\"{}\"", name_of(v),
                 label(d.mount_point()), label(d.device()));
      }
    }
  };
  per_disk("qxa_guest_disk_total_bytes", "Size of a guest filesystem.",
           [](const pb::Disk& d) { return d.total_bytes(); });
  per_disk("qxa_guest_disk_used_bytes", "Used bytes of a guest filesystem.",
           [](const pb::Disk& d) { return d.used_bytes(); });
  // Counters since the guest booted: a guest's reboot resets them, as Prometheus expects.
  auto per_disk_io = [&](const char* name, const char* help, auto value) {
    w.family(name, "counter", help);
    for (const auto& v : vms) {
      for (const auto& d : v.status.last_telemetry().disk_io()) {
        w.sample(name, value(d), "vm=\"{}\",disk=\"{}\"", name_of(v), label(d.name()));
      }
    }
  };
  per_disk_io("qxa_guest_disk_reads_total", "Reads a guest disk completed.",
              [](const pb::DiskIo& d) { return d.reads(); });
  per_disk_io("qxa_guest_disk_read_bytes_total", "Bytes read from a guest disk.",
              [](const pb::DiskIo& d) { return d.read_bytes(); });
  per_disk_io("qxa_guest_disk_writes_total", "Writes a guest disk completed.",
              [](const pb::DiskIo& d) { return d.writes(); });
  per_disk_io("qxa_guest_disk_written_bytes_total", "Bytes written to a guest disk.",
              [](const pb::DiskIo& d) { return d.written_bytes(); });
  per_disk_io("qxa_guest_disk_io_seconds_total", "Time a guest disk spent doing I/O.",
              [](const pb::DiskIo& d) { return d.io_ms() / 1000.0; });
  w.family("qxa_guest_cpu_seconds_total", "counter", "Time each guest CPU spent in each mode.");
  for (const auto& v : vms) {
    for (const auto& c : v.status.last_telemetry().cpus()) {
      const std::pair<const char*, std::uint64_t> modes[] = {
          {"user", c.user_ms()},       {"nice", c.nice_ms()},     {"system", c.system_ms()},
          {"idle", c.idle_ms()},       {"iowait", c.iowait_ms()}, {"irq", c.irq_ms()},
          {"softirq", c.softirq_ms()}, {"steal", c.steal_ms()}};
      for (const auto& [mode, ms] : modes) {
        w.sample("qxa_guest_cpu_seconds_total", static_cast<double>(ms) / 1000.0,
                 "vm=\"{}\",cpu=\"{}\",mode=\"{}\"", name_of(v), c.cpu(), mode);
      }
    }
  }
  return std::move(w.text);
}

}  // namespace qxa::host
