// SPDX-License-Identifier: MIT
// Where what the platform readers return becomes protobuf: telemetry and the OS identity.
#include "qxa/guest/ops/mapping.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "qxa/common/text.hpp"

namespace qxa::guest::ops {

using common::to_utf8;

pb::Telemetry to_proto(const system_sample& s) {
  pb::Telemetry t;
  t.set_sample_unix_ms(s.unix_ms);
  if (s.cpu_percent) t.set_cpu_percent(*s.cpu_percent);
  t.set_cpu_count(s.cpu_count);
  if (s.load) {
    t.set_load1(s.load->load1);
    t.set_load5(s.load->load5);
    t.set_load15(s.load->load15);
  }
  if (s.uptime_seconds) t.set_uptime_seconds(*s.uptime_seconds);
  if (const auto& m = s.memory) {
    auto* mem = t.mutable_memory();
    mem->set_total_bytes(m->total);
    mem->set_available_bytes(m->available);
    mem->set_used_bytes(m->used);
    mem->set_free_bytes(m->free);
    mem->set_buffers_bytes(m->buffers);
    mem->set_cached_bytes(m->cached);
    auto* swap = t.mutable_swap();
    swap->set_total_bytes(m->swap_total);
    swap->set_free_bytes(m->swap_free);
    swap->set_used_bytes(m->swap_used);
  }
  t.set_process_count(s.processes);
  t.set_hostname(to_utf8(s.hostname));
  for (const auto& d : s.disks) {
    auto* disk = t.add_disks();
    disk->set_mount_point(to_utf8(d.mount.mount_point));
    disk->set_device(to_utf8(d.mount.device));
    disk->set_fs_type(to_utf8(d.mount.fs_type));
    disk->set_total_bytes(d.usage.total);
    disk->set_used_bytes(d.usage.used);
    disk->set_available_bytes(d.usage.available);
    disk->set_read_only(d.mount.read_only);
  }
  for (const auto& i : s.interfaces) {
    auto* nic = t.add_interfaces();
    nic->set_name(to_utf8(i.name));
    nic->set_mac(to_utf8(i.mac));
    nic->set_oper_state(to_utf8(i.oper_state));
    nic->set_link_up(i.link_up);
    nic->set_mtu(i.mtu);
    nic->set_rx_bytes(i.rx_bytes);
    nic->set_rx_packets(i.rx_packets);
    nic->set_rx_errors(i.rx_errors);
    nic->set_tx_bytes(i.tx_bytes);
    nic->set_tx_packets(i.tx_packets);
    nic->set_tx_errors(i.tx_errors);
    nic->set_rx_dropped(i.rx_dropped);
    nic->set_tx_dropped(i.tx_dropped);
    for (const auto& a : i.addresses) {
      auto* ip = nic->add_addresses();
      ip->set_family(a.family == ip_family::ipv6 ? pb::IpAddress::FAMILY_IPV6
                                                 : pb::IpAddress::FAMILY_IPV4);
      ip->set_address(to_utf8(a.address));
      ip->set_prefix_length(a.prefix_length);
      ip->set_dynamic(a.dynamic);
    }
  }
  t.set_primary_address(to_utf8(s.primary_address));
  for (const auto& d : s.disk_io) {
    auto* io = t.add_disk_io();
    io->set_name(to_utf8(d.name));
    io->set_reads(d.reads);
    io->set_read_bytes(d.read_sectors * 512);
    io->set_read_ms(d.read_ms);
    io->set_writes(d.writes);
    io->set_written_bytes(d.write_sectors * 512);
    io->set_write_ms(d.write_ms);
    io->set_discards(d.discards);
    io->set_discarded_bytes(d.discard_sectors * 512);
    io->set_io_ms(d.io_ms);
    io->set_in_flight(static_cast<std::uint32_t>(std::min<std::uint64_t>(d.in_flight, UINT32_MAX)));
  }
  // /proc/stat counts in USER_HZ ticks (100 a second on every Linux architecture we run on).
  static const long ticks = ::sysconf(_SC_CLK_TCK);
  const auto ms = [](std::uint64_t jiffies) {
    return ticks > 0 ? jiffies * 1000 / static_cast<std::uint64_t>(ticks) : jiffies * 10;
  };
  for (const auto& c : s.cpus) {
    auto* cpu = t.add_cpus();
    cpu->set_cpu(c.cpu);
    cpu->set_user_ms(ms(c.user));
    cpu->set_nice_ms(ms(c.nice));
    cpu->set_system_ms(ms(c.system));
    cpu->set_idle_ms(ms(c.idle));
    cpu->set_iowait_ms(ms(c.iowait));
    cpu->set_irq_ms(ms(c.irq));
    cpu->set_softirq_ms(ms(c.softirq));
    cpu->set_steal_ms(ms(c.steal));
  }
  return t;
}

pb::OsInfo to_proto(const os_identity& os) {
  pb::OsInfo o;
  o.set_name(to_utf8(os.name));
  o.set_version(to_utf8(os.version));
  o.set_version_name(to_utf8(os.version_name));
  o.set_id(to_utf8(os.id));
  o.set_pretty_name(to_utf8(os.pretty_name));
  o.set_kernel_release(to_utf8(os.kernel_release));
  o.set_kernel_version(to_utf8(os.kernel_version));
  o.set_architecture(to_utf8(os.architecture));
  o.set_variant(to_utf8(os.variant));
  o.set_variant_id(to_utf8(os.variant_id));
  return o;
}

}  // namespace qxa::guest::ops
