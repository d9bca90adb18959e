// SPDX-License-Identifier: MIT
// Every cap on what a guest sends, in one file on purpose: how_taken() places each body of the
// schema and cap_guest_message() cuts it, and the two are read (and kept complete) together.
#include "qxa/host/guest_data.hpp"

#include <fmt/format.h>

#include <unordered_set>

#include "qxa/common/envelope.hpp"
#include "qxa/common/text.hpp"

namespace qxa::host {
namespace {

// Counts what one message lost, for the caller's log line.
struct trim_report {
  explicit trim_report(const guest_data_limits& l) : limits(l) {}
  const guest_data_limits& limits;
  std::size_t names_cut = 0;
  std::string dropped;

  void name(std::string* s) {
    if (s->size() <= limits.max_name_bytes) return;
    s->resize(common::utf8_prefix(*s, limits.max_name_bytes).size());
    ++names_cut;
  }
  // A text that may be longer than a name (a path, a key): cut to `max` bytes, counted as `what`.
  void cut(std::string* s, std::size_t max, const char* what) {
    if (s->size() <= max) return;
    // Bytes on the wire, not UTF-8 (a file name, a key's comment): cut where the limit falls.
    s->resize(max);
    const auto said = fmt::format("{} cut to {} bytes", what, max);
    if (dropped.find(said) == std::string::npos) {
      dropped += fmt::format("{}{}", dropped.empty() ? "" : "; ", said);
    }
  }
  void path(std::string* s) { cut(s, limits.max_path_bytes, "paths"); }
  template <typename Repeated>
  void count(Repeated* items, std::size_t max, const char* what) {
    const auto n = static_cast<std::size_t>(items->size());
    if (n <= max) return;
    items->DeleteSubrange(static_cast<int>(max), static_cast<int>(n - max));
    dropped += fmt::format("{}{} {} over the limit of {}", dropped.empty() ? "" : "; ", n - max,
                           what, max);
  }
  std::string text() const {
    if (names_cut == 0) return dropped;
    return fmt::format("{}{}{} names cut to {} bytes", dropped, dropped.empty() ? "" : "; ",
                       names_cut, limits.max_name_bytes);
  }
};

// Copies of what the host keeps, made of the fields this build knows: protobuf keeps the bytes
// of unknown fields and sends them on, so a guest could otherwise grow a status report (or the
// memory kept per VM) with fields nobody reads. A field added to these messages is added here.
pb::OsInfo known_only(const pb::OsInfo& in) {
  pb::OsInfo out;
  out.set_name(in.name());
  out.set_version(in.version());
  out.set_version_name(in.version_name());
  out.set_id(in.id());
  out.set_pretty_name(in.pretty_name());
  out.set_kernel_release(in.kernel_release());
  out.set_kernel_version(in.kernel_version());
  out.set_architecture(in.architecture());
  out.set_variant(in.variant());
  out.set_variant_id(in.variant_id());
  return out;
}

pb::Telemetry known_only(const pb::Telemetry& in) {
  pb::Telemetry out;
  out.set_sequence(in.sequence());
  out.set_sample_unix_ms(in.sample_unix_ms());
  out.set_cpu_percent(in.cpu_percent());
  out.set_load1(in.load1());
  out.set_load5(in.load5());
  out.set_load15(in.load15());
  out.set_uptime_seconds(in.uptime_seconds());
  if (in.has_memory()) {
    auto* m = out.mutable_memory();
    m->set_total_bytes(in.memory().total_bytes());
    m->set_available_bytes(in.memory().available_bytes());
    m->set_used_bytes(in.memory().used_bytes());
    m->set_free_bytes(in.memory().free_bytes());
    m->set_buffers_bytes(in.memory().buffers_bytes());
    m->set_cached_bytes(in.memory().cached_bytes());
  }
  if (in.has_swap()) {
    auto* w = out.mutable_swap();
    w->set_total_bytes(in.swap().total_bytes());
    w->set_free_bytes(in.swap().free_bytes());
    w->set_used_bytes(in.swap().used_bytes());
  }
  out.set_process_count(in.process_count());
  out.set_hostname(in.hostname());
  for (const auto& d : in.disks()) {
    auto* o = out.add_disks();
    o->set_mount_point(d.mount_point());
    o->set_device(d.device());
    o->set_fs_type(d.fs_type());
    o->set_total_bytes(d.total_bytes());
    o->set_used_bytes(d.used_bytes());
    o->set_available_bytes(d.available_bytes());
    o->set_read_only(d.read_only());
  }
  for (const auto& i : in.interfaces()) {
    auto* o = out.add_interfaces();
    o->set_name(i.name());
    o->set_mac(i.mac());
    for (const auto& a : i.addresses()) {
      auto* oa = o->add_addresses();
      oa->set_family(a.family());
      oa->set_address(a.address());
      oa->set_prefix_length(a.prefix_length());
      oa->set_dynamic(a.dynamic());
    }
    o->set_link_up(i.link_up());
    o->set_oper_state(i.oper_state());
    o->set_mtu(i.mtu());
    o->set_rx_bytes(i.rx_bytes());
    o->set_rx_packets(i.rx_packets());
    o->set_rx_errors(i.rx_errors());
    o->set_tx_bytes(i.tx_bytes());
    o->set_tx_packets(i.tx_packets());
    o->set_tx_errors(i.tx_errors());
    o->set_rx_dropped(i.rx_dropped());
    o->set_tx_dropped(i.tx_dropped());
  }
  out.set_cpu_count(in.cpu_count());
  out.set_primary_address(in.primary_address());
  for (const auto& d : in.disk_io()) {
    auto* o = out.add_disk_io();
    o->set_name(d.name());
    o->set_reads(d.reads());
    o->set_read_bytes(d.read_bytes());
    o->set_writes(d.writes());
    o->set_written_bytes(d.written_bytes());
    o->set_discards(d.discards());
    o->set_discarded_bytes(d.discarded_bytes());
    o->set_io_ms(d.io_ms());
    o->set_in_flight(d.in_flight());
    o->set_read_ms(d.read_ms());
    o->set_write_ms(d.write_ms());
  }
  for (const auto& c : in.cpus()) {
    auto* o = out.add_cpus();
    o->set_cpu(c.cpu());
    o->set_user_ms(c.user_ms());
    o->set_nice_ms(c.nice_ms());
    o->set_system_ms(c.system_ms());
    o->set_idle_ms(c.idle_ms());
    o->set_iowait_ms(c.iowait_ms());
    o->set_irq_ms(c.irq_ms());
    o->set_softirq_ms(c.softirq_ms());
    o->set_steal_ms(c.steal_ms());
  }
  if (in.has_freeze()) {
    auto* f = out.mutable_freeze();
    f->set_frozen(in.freeze().frozen());
    f->set_frozen_ms(in.freeze().frozen_ms());
    f->set_lease_remaining_ms(in.freeze().lease_remaining_ms());
  }
  return out;
}

pb::HelloAck known_only(const pb::HelloAck& in) {
  pb::HelloAck out;
  out.set_session_id(in.session_id());
  out.set_protocol_version(in.protocol_version());
  out.set_software_version(in.software_version());
  if (in.has_limits()) {
    out.mutable_limits()->set_max_frame_bytes(in.limits().max_frame_bytes());
    out.mutable_limits()->set_max_inflight_requests(in.limits().max_inflight_requests());
  }
  *out.mutable_capabilities() = in.capabilities();
  if (in.has_os()) *out.mutable_os() = known_only(in.os());
  out.set_hostname(in.hostname());
  out.set_boot_id(in.boot_id());
  out.set_agent_pid(in.agent_pid());
  out.set_agent_started_unix_ms(in.agent_started_unix_ms());
  return out;
}

pb::FileStat known_only(const pb::FileStat& in) {
  pb::FileStat out;
  out.set_path(in.path());
  out.set_type(in.type());
  out.set_size(in.size());
  out.set_mode(in.mode());
  out.set_uid(in.uid());
  out.set_gid(in.gid());
  out.set_mtime_unix_ms(in.mtime_unix_ms());
  out.set_symlink_target(in.symlink_target());
  return out;
}

pb::PasswordReply known_only(const pb::PasswordReply&) { return {}; }

// Replaces `m` by its known fields, noting what that dropped.
template <typename Message>
void keep_known(Message* m, trim_report& r) {
  const auto before = m->ByteSizeLong();
  *m = known_only(*m);
  if (const auto after = m->ByteSizeLong(); after < before) {
    r.dropped += fmt::format("{}{} bytes of unknown fields dropped", r.dropped.empty() ? "" : "; ",
                             before - after);
  }
}

void cap_os(pb::OsInfo* os, trim_report& r) {
  for (auto* s :
       {os->mutable_name(), os->mutable_version(), os->mutable_version_name(), os->mutable_id(),
        os->mutable_pretty_name(), os->mutable_variant(), os->mutable_variant_id(),
        os->mutable_kernel_release(), os->mutable_kernel_version(), os->mutable_architecture()}) {
    r.name(s);
  }
}

void cap_capabilities(google::protobuf::RepeatedPtrField<std::string>* caps, trim_report& r) {
  r.count(caps, r.limits.max_capabilities, "capabilities");
  for (auto& c : *caps) r.name(&c);
}

// Telemetry's and the network view's interfaces: their count, their addresses (per interface
// and in all), their names.
void cap_interfaces(google::protobuf::RepeatedPtrField<pb::Interface>* interfaces, trim_report& r) {
  r.count(interfaces, r.limits.max_interfaces, "interfaces");
  std::size_t addresses_left = r.limits.max_addresses;
  for (auto& i : *interfaces) {
    r.name(i.mutable_name());
    r.name(i.mutable_mac());
    r.name(i.mutable_oper_state());
    r.count(i.mutable_addresses(), std::min(r.limits.max_addresses_per_interface, addresses_left),
            "addresses");
    addresses_left -= static_cast<std::size_t>(i.addresses_size());
    for (auto& a : *i.mutable_addresses()) r.name(a.mutable_address());
  }
}

void cap_hooks(google::protobuf::RepeatedPtrField<pb::HookOutcome>* hooks, trim_report& r) {
  r.count(hooks, r.limits.max_hooks, "hook outcomes");
  for (auto& h : *hooks) {
    r.name(h.mutable_hook());
    r.name(h.mutable_phase());
    r.name(h.mutable_error());
  }
}

// A job's command line: its entries, and their bytes in all.
void cap_file_stat(pb::FileStat& f, trim_report& r) {
  keep_known(&f, r);
  r.path(f.mutable_path());
  r.path(f.mutable_symlink_target());
}

void cap_job(pb::Job& j, trim_report& r) {
  r.count(j.mutable_argv(), r.limits.max_job_args, "arguments of a job");
  std::size_t left = r.limits.max_command_bytes;
  bool cut = false;
  for (auto& a : *j.mutable_argv()) {
    if (a.size() > left) {
      a.resize(common::utf8_prefix(a, left).size());
      cut = true;
    }
    left -= a.size();
  }
  if (cut) {
    r.dropped += fmt::format("{}job {}'s command cut to {} bytes", r.dropped.empty() ? "" : "; ",
                             j.id(), r.limits.max_command_bytes);
  }
  r.name(j.mutable_user());
}

// Keeps the first of the items with the same key: a guest that repeats a disk or CPU would
// otherwise give /metrics two series with the same labels.
template <typename Repeated, typename Key>
void drop_repeats(Repeated* items, Key key, const char* what, trim_report& r) {
  std::unordered_set<std::string> seen;
  int kept = 0;
  for (int i = 0; i < items->size(); ++i) {
    if (!seen.insert(key(items->Get(i))).second) continue;
    if (kept != i) items->SwapElements(kept, i);
    ++kept;
  }
  if (const int n = items->size() - kept; n > 0) {
    items->DeleteSubrange(kept, n);
    r.dropped += fmt::format("{}{} repeated {}", r.dropped.empty() ? "" : "; ", n, what);
  }
}

void cap_telemetry(pb::Telemetry& t, trim_report& r) {
  r.name(t.mutable_hostname());
  r.name(t.mutable_primary_address());
  r.count(t.mutable_disks(), r.limits.max_disks, "disks");
  for (auto& d : *t.mutable_disks()) {
    r.name(d.mutable_mount_point());
    r.name(d.mutable_device());
    r.name(d.mutable_fs_type());
  }
  drop_repeats(
      t.mutable_disks(), [](const pb::Disk& d) { return d.mount_point() + '\0' + d.device(); },
      "disks", r);
  cap_interfaces(t.mutable_interfaces(), r);
  r.count(t.mutable_disk_io(), r.limits.max_disk_io, "disk I/O counters");
  for (auto& d : *t.mutable_disk_io()) r.name(d.mutable_name());
  drop_repeats(
      t.mutable_disk_io(), [](const pb::DiskIo& d) { return d.name(); }, "disk I/O counters", r);
  r.count(t.mutable_cpus(), r.limits.max_cpus, "CPU times");
  drop_repeats(
      t.mutable_cpus(), [](const pb::CpuTime& c) { return std::to_string(c.cpu()); }, "CPU times",
      r);
}

}  // namespace

std::string cap_telemetry(pb::Telemetry& telemetry, const guest_data_limits& limits) {
  trim_report r(limits);
  keep_known(&telemetry, r);
  cap_telemetry(telemetry, r);
  return r.text();
}

std::string cap_guest_message(pb::Envelope& message, const guest_data_limits& limits) {
  trim_report r(limits);
  switch (message.body_case()) {
    case pb::Envelope::kTelemetry:
      keep_known(message.mutable_telemetry(), r);
      cap_telemetry(*message.mutable_telemetry(), r);
      break;
    case pb::Envelope::kHelloAck: {
      auto* h = message.mutable_hello_ack();
      keep_known(h, r);
      r.name(h->mutable_software_version());
      r.name(h->mutable_hostname());
      r.name(h->mutable_boot_id());
      cap_os(h->mutable_os(), r);
      cap_capabilities(h->mutable_capabilities(), r);
      break;
    }
    case pb::Envelope::kInfo: {
      auto* i = message.mutable_info();
      keep_known(i->mutable_os(), r);
      if (i->has_last_resume()) {
        auto* resume = i->mutable_last_resume();
        r.name(resume->mutable_mode());
        r.name(resume->mutable_error());
        cap_hooks(resume->mutable_hooks(), r);
      }
      r.name(i->mutable_software_version());
      r.name(i->mutable_hostname());
      r.name(i->mutable_boot_id());
      cap_os(i->mutable_os(), r);
      cap_capabilities(i->mutable_capabilities(), r);
      break;
    }
    case pb::Envelope::kAgentReady: {
      auto* a = message.mutable_agent_ready();
      r.name(a->mutable_software_version());
      r.name(a->mutable_boot_id());
      break;
    }
    case pb::Envelope::kFreezeStatus: {
      auto* f = message.mutable_freeze_status();
      r.count(f->mutable_mounts(), r.limits.max_disks, "mounts");
      for (auto& m : *f->mutable_mounts()) {
        r.name(m.mutable_mount_point());
        r.name(m.mutable_error());
      }
      r.count(f->mutable_hook_errors(), r.limits.max_disks, "hook errors");
      for (auto& e : *f->mutable_hook_errors()) r.cut(&e, r.limits.max_error_bytes, "hook errors");
      r.name(f->mutable_thawed_by());
      break;
    }
    case pb::Envelope::kTimeReply: {
      auto* t = message.mutable_time_reply();
      r.name(t->mutable_timezone());
      r.name(t->mutable_timezone_abbreviation());
      r.name(t->mutable_rtc_error());
      break;
    }
    case pb::Envelope::kUsersReply: {
      auto* u = message.mutable_users_reply();
      r.count(u->mutable_sessions(), r.limits.max_sessions, "login sessions");
      for (auto& s : *u->mutable_sessions()) {
        r.name(s.mutable_user());
        r.name(s.mutable_terminal());
        r.name(s.mutable_host());
      }
      break;
    }
    case pb::Envelope::kNetworkReply: {
      auto* n = message.mutable_network_reply();
      cap_interfaces(n->mutable_interfaces(), r);
      r.name(n->mutable_primary_address());
      r.count(n->mutable_routes(), r.limits.max_routes, "routes");
      for (auto& route : *n->mutable_routes()) {
        for (auto* s : {route.mutable_destination(), route.mutable_gateway(),
                        route.mutable_interface(), route.mutable_source()}) {
          r.name(s);
        }
      }
      for (auto* list : {n->mutable_dns_servers(), n->mutable_search_domains(),
                         n->mutable_excluded_patterns()}) {
        r.count(list, r.limits.max_resolver_entries, "resolver entries");
        for (auto& s : *list) r.name(&s);
      }
      break;
    }
    case pb::Envelope::kHotplugReply: {
      auto* h = message.mutable_hotplug_reply();
      r.count(h->mutable_cpus(), r.limits.max_hotplug_units, "vCPUs");
      r.count(h->mutable_memory_blocks(), r.limits.max_hotplug_units, "memory blocks");
      r.count(h->mutable_outcomes(), r.limits.max_hotplug_units, "hotplug outcomes");
      for (auto& o : *h->mutable_outcomes()) r.name(o.mutable_error());
      break;
    }
    case pb::Envelope::kDisksReply: {
      auto* d = message.mutable_disks_reply();
      r.count(d->mutable_filesystems(), r.limits.max_block_devices, "filesystems");
      for (auto& fs : *d->mutable_filesystems()) {
        for (auto* s : {fs.mutable_mount_point(), fs.mutable_fs_type(), fs.mutable_source(),
                        fs.mutable_device()}) {
          r.name(s);
        }
        r.count(fs.mutable_disks(), r.limits.max_chain_devices, "disks of a filesystem");
        for (auto& disk : *fs.mutable_disks()) r.name(&disk);
      }
      r.count(d->mutable_devices(), r.limits.max_block_devices, "block devices");
      for (auto& b : *d->mutable_devices()) {
        for (auto* s : {b.mutable_name(), b.mutable_kind(), b.mutable_alias(), b.mutable_bus(),
                        b.mutable_pci_path(), b.mutable_scsi_address(), b.mutable_serial(),
                        b.mutable_model(), b.mutable_vendor(), b.mutable_wwn()}) {
          r.name(s);
        }
        r.count(b.mutable_parents(), r.limits.max_chain_devices, "parents of a block device");
        for (auto& p : *b.mutable_parents()) r.name(&p);
      }
      break;
    }
    case pb::Envelope::kJob:
      cap_job(*message.mutable_job(), r);
      break;
    case pb::Envelope::kJobsReply: {
      auto* jobs = message.mutable_jobs_reply()->mutable_jobs();
      r.count(jobs, r.limits.max_jobs, "jobs");
      for (auto& j : *jobs) cap_job(j, r);
      break;
    }
    case pb::Envelope::kPowerReply:
      r.name(message.mutable_power_reply()->mutable_method());
      cap_hooks(message.mutable_power_reply()->mutable_hooks(), r);
      break;
    case pb::Envelope::kSuspendReply:
      r.name(message.mutable_suspend_reply()->mutable_method());
      cap_hooks(message.mutable_suspend_reply()->mutable_hooks(), r);
      break;
    case pb::Envelope::kTrimReply: {
      auto* t = message.mutable_trim_reply();
      r.count(t->mutable_mounts(), r.limits.max_disks, "mounts");
      for (auto& m : *t->mutable_mounts()) {
        r.name(m.mutable_mount_point());
        r.name(m.mutable_error());
      }
      break;
    }
    case pb::Envelope::kUpgradeStatus: {
      auto* u = message.mutable_upgrade_status();
      for (auto* s : {u->mutable_token(), u->mutable_from_version(), u->mutable_to_version(),
                      u->mutable_running_version(), u->mutable_running_sha256()}) {
        r.name(s);
      }
      // Paths and what the guard did: as long as an error message may be.
      int long_texts = 0;
      for (auto* s : {u->mutable_binary(), u->mutable_previous(), u->mutable_detail()}) {
        if (s->size() > limits.max_error_bytes) {
          s->resize(common::utf8_prefix(*s, limits.max_error_bytes).size());
          ++long_texts;
        }
      }
      if (long_texts > 0) {
        r.dropped += fmt::format("{}{} upgrade texts cut to {} bytes",
                                 r.dropped.empty() ? "" : "; ", long_texts, limits.max_error_bytes);
      }
      break;
    }
    case pb::Envelope::kError: {
      auto* e = message.mutable_error();
      if (e->message().size() > limits.max_error_bytes) {
        e->mutable_message()->resize(
            common::utf8_prefix(e->message(), limits.max_error_bytes).size());
        r.dropped += fmt::format("error message cut to {} bytes", limits.max_error_bytes);
      }
      r.name(e->mutable_rule());
      break;
    }
    case pb::Envelope::kHostnameReply:
      r.name(message.mutable_hostname_reply()->mutable_hostname());
      break;
    case pb::Envelope::kFileStat:
      cap_file_stat(*message.mutable_file_stat(), r);
      break;
    case pb::Envelope::kDirList: {
      auto* d = message.mutable_dir_list();
      r.count(d->mutable_entries(), r.limits.max_dir_entries, "directory entries");
      for (auto& e : *d->mutable_entries()) cap_file_stat(e, r);
      r.path(d->mutable_next_after());
      break;
    }
    case pb::Envelope::kPasswordReply:
      keep_known(message.mutable_password_reply(), r);
      break;
    case pb::Envelope::kSshKeysReply: {
      auto* k = message.mutable_ssh_keys_reply();
      r.count(k->mutable_keys(), r.limits.max_ssh_keys, "ssh keys");
      for (auto& key : *k->mutable_keys()) r.cut(&key, r.limits.max_ssh_key_bytes, "ssh keys");
      break;
    }
    default:
      if (how_taken(message.body_case()) == guest_body::not_taken) {
        const std::string name = common::body_name(message);
        auto* e = message.mutable_error();
        e->set_code(pb::ERROR_CODE_INTERNAL);
        e->set_message(fmt::format("the agent answered with a request ({})", name));
        r.dropped += fmt::format("{}a request ({}) where a reply belongs",
                                 r.dropped.empty() ? "" : "; ", name);
      }
      break;
  }
  return r.text();
}

guest_body how_taken(pb::Envelope::BodyCase body) noexcept {
  switch (body) {
    // Capped by cap_guest_message().
    case pb::Envelope::kHelloAck:
    case pb::Envelope::kError:
    case pb::Envelope::kAgentReady:
    case pb::Envelope::kInfo:
    case pb::Envelope::kTelemetry:
    case pb::Envelope::kTimeReply:
    case pb::Envelope::kHostnameReply:
    case pb::Envelope::kUsersReply:
    case pb::Envelope::kNetworkReply:
    case pb::Envelope::kJob:
    case pb::Envelope::kJobsReply:
    case pb::Envelope::kFileStat:
    case pb::Envelope::kDirList:
    case pb::Envelope::kPowerReply:
    case pb::Envelope::kSuspendReply:
    case pb::Envelope::kFreezeStatus:
    case pb::Envelope::kTrimReply:
    case pb::Envelope::kDisksReply:
    case pb::Envelope::kPasswordReply:
    case pb::Envelope::kSshKeysReply:
    case pb::Envelope::kHotplugReply:
    case pb::Envelope::kUpgradeStatus:
      return guest_body::capped;
    // Numbers and flags, or data the caller asked for and streams on (a file's bytes, a
    // process's output), each bounded by the frame limit.
    case pb::Envelope::kPong:
    case pb::Envelope::kCancelReply:
    case pb::Envelope::kExecOutput:
    case pb::Envelope::kExecResult:
    case pb::Envelope::kFileChunk:
    case pb::Envelope::kFileReadResult:
    case pb::Envelope::kFileWriteReply:
    case pb::Envelope::kFileChangeReply:
    case pb::Envelope::BODY_NOT_SET:
      return guest_body::bounded;
    // What the host asks.
    case pb::Envelope::kHello:
    case pb::Envelope::kPing:
    case pb::Envelope::kInfoRequest:
    case pb::Envelope::kTelemetryRequest:
    case pb::Envelope::kStreamCredit:
    case pb::Envelope::kTimeRequest:
    case pb::Envelope::kHostnameRequest:
    case pb::Envelope::kCancelRequest:
    case pb::Envelope::kUsersRequest:
    case pb::Envelope::kNetworkRequest:
    case pb::Envelope::kExecRequest:
    case pb::Envelope::kJobsRequest:
    case pb::Envelope::kAttachRequest:
    case pb::Envelope::kKillJobRequest:
    case pb::Envelope::kFileReadRequest:
    case pb::Envelope::kFileWriteOpen:
    case pb::Envelope::kFileWriteChunk:
    case pb::Envelope::kFileWriteClose:
    case pb::Envelope::kFileStatRequest:
    case pb::Envelope::kDirListRequest:
    case pb::Envelope::kMkdirRequest:
    case pb::Envelope::kRemoveRequest:
    case pb::Envelope::kMoveRequest:
    case pb::Envelope::kPowerRequest:
    case pb::Envelope::kSuspendRequest:
    case pb::Envelope::kFreezeRequest:
    case pb::Envelope::kThawRequest:
    case pb::Envelope::kFreezeStatusRequest:
    case pb::Envelope::kTrimRequest:
    case pb::Envelope::kDisksRequest:
    case pb::Envelope::kPasswordRequest:
    case pb::Envelope::kSshKeysRequest:
    case pb::Envelope::kHotplugRequest:
    case pb::Envelope::kUpgradeRequest:
    case pb::Envelope::kUpgradeConfirmRequest:
    case pb::Envelope::kUpgradeStatusRequest:
      return guest_body::not_taken;
  }
  return guest_body::not_taken;  // a value outside the enum: taken as nothing
}

}  // namespace qxa::host
