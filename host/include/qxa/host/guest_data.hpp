// SPDX-License-Identifier: MIT
// What a guest sends is capped when it arrives, before the host keeps it, shows it or exports
// it. Every guest is untrusted: one that reports 150,000 addresses or megabyte-long names must
// not push qx-agentd's status report past its frame limit, blow up the label sets of /metrics,
// or make the host hold much memory. The caps are far above what a real guest reports.
#pragma once

#include <cstddef>
#include <string>

#include "quantix/agent/v1/agent.pb.h"

namespace qxa::host {

namespace pb = ::quantix::agent::v1;

struct guest_data_limits {
  std::size_t max_disks = 32;
  std::size_t max_interfaces = 32;
  std::size_t max_addresses_per_interface = 16;
  std::size_t max_addresses = 64;    ///< over all interfaces
  std::size_t max_name_bytes = 128;  ///< hostnames, mount points, devices, OS fields, versions
  std::size_t max_capabilities = 64;
  std::size_t max_sessions = 256;  ///< logged-in users
  std::size_t max_routes = 64;
  std::size_t max_resolver_entries = 8;   ///< DNS servers, search domains
  std::size_t max_hotplug_units = 65536;  ///< vCPUs, memory blocks (1 TiB in 16 MiB blocks)
  std::size_t max_disk_io = 64;           ///< disks with I/O counters in telemetry
  std::size_t max_cpus = 256;             ///< CPUs with their times in telemetry
  std::size_t max_block_devices = 256;    ///< filesystems and block devices in a disks reply
  std::size_t max_chain_devices = 64;     ///< a device's parents, a filesystem's disks
  std::size_t max_hooks = 64;             ///< power hook outcomes in one reply
  std::size_t max_jobs = 1024;            ///< jobs in a jobs reply (the agent allows 1024)
  std::size_t max_job_args = 256;         ///< a job's argv entries
  std::size_t max_command_bytes = 4096;   ///< a job's argv, all entries together
  std::size_t max_error_bytes = 4096;     ///< the message of an Error reply
};

/// Caps a message from a guest in place: its telemetry, HelloAck, Info or Error body (other
/// bodies are left alone). What the host keeps (telemetry, the HelloAck, OS info) is also
/// reduced to the fields this build knows: protobuf would keep and forward unknown ones. Returns
/// what was cut, for a log line ("12 disks over the limit of 32; 3 names cut to 128 bytes"), or an
/// empty string when the message was within the limits.
std::string cap_guest_message(pb::Envelope& message, const guest_data_limits& limits = {});

/// The same for a telemetry sample alone.
std::string cap_telemetry(pb::Telemetry& telemetry, const guest_data_limits& limits = {});

}  // namespace qxa::host
