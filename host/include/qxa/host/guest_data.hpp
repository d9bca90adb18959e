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
  std::size_t max_path_bytes = 4096;      ///< a path or link target in a file's status (PATH_MAX)
  std::size_t max_dir_entries = 10'000;   ///< entries in one page of a listing (the agent's most)
  std::size_t max_ssh_keys = 1024;        ///< keys in an ssh-key reply
  std::size_t max_ssh_key_bytes = 16384;  ///< one authorized_keys line (OpenSSH's own limit)
};

/// How the host takes each body a guest may send. Every body of the schema has one: how_taken()
/// is a switch without default over the generated cases, so a body added to the schema fails
/// the build until it is placed, and a unit test fills each capped body past every limit from
/// the schema's descriptors and checks what is left.
enum class guest_body {
  capped,     ///< cut to guest_data_limits by cap_guest_message()
  bounded,    ///< numbers only, or bulk data its caller streams on, bounded by the frame limit
  not_taken,  ///< a request, which an agent never sends: its caller gets an Error instead
};
guest_body how_taken(pb::Envelope::BodyCase body) noexcept;

/// Caps a message from a guest in place, by how_taken(): a capped body is cut to `limits`, a
/// request is replaced by an Error, a bounded body is left alone. What the host keeps (telemetry, the HelloAck, OS info) is also
/// reduced to the fields this build knows: protobuf would keep and forward unknown ones. Returns
/// what was cut, for a log line ("12 disks over the limit of 32; 3 names cut to 128 bytes"), or an
/// empty string when the message was within the limits.
std::string cap_guest_message(pb::Envelope& message, const guest_data_limits& limits = {});

/// The same for a telemetry sample alone.
std::string cap_telemetry(pb::Telemetry& telemetry, const guest_data_limits& limits = {});

}  // namespace qxa::host
