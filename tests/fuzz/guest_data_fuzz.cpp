// SPDX-License-Identifier: MIT
// Fuzz target: the host's caps on what a guest sends (guest_data.hpp). The input is a message
// from a guest (any Envelope that parses). Properties: after cap_guest_message every count and
// every name is within its limit and still UTF-8, a telemetry sample is small whatever came in,
// capping twice changes nothing the second time, and printable() leaves no control character
// in any name.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/host/guest_data.hpp"

namespace pb = quantix::agent::v1;
namespace qh = qxa::host;
namespace qc = qxa::common;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

const qh::guest_data_limits limits;

void check_name(const std::string& s) {
  check(s.size() <= limits.max_name_bytes, "a name longer than the limit");
  check(qc::is_utf8(s), "a name cut inside a character");
  for (unsigned char c : qc::printable(s)) {
    check(c >= 0x20 && c != 0x7f, "printable() left a control character");
  }
}

void check_os(const pb::OsInfo& os) {
  for (const auto* s : {&os.name(), &os.version(), &os.id(), &os.pretty_name(),
                        &os.kernel_release(), &os.kernel_version(), &os.architecture()}) {
    check_name(*s);
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // protobuf's complaints about the input (a string that is not UTF-8) go to our log, silenced.
  qc::logger::instance().set_level(qc::log_level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  pb::Envelope e;
  if (!e.ParseFromArray(data, static_cast<int>(size))) return 0;
  (void)qh::cap_guest_message(e, limits);
  if (e.has_telemetry()) {
    const auto& t = e.telemetry();
    check(static_cast<std::size_t>(t.disks_size()) <= limits.max_disks, "too many disks");
    check(static_cast<std::size_t>(t.interfaces_size()) <= limits.max_interfaces,
          "too many interfaces");
    std::size_t addresses = 0;
    check_name(t.hostname());
    for (const auto& d : t.disks()) {
      check_name(d.mount_point());
      check_name(d.device());
      check_name(d.fs_type());
    }
    for (const auto& i : t.interfaces()) {
      check(static_cast<std::size_t>(i.addresses_size()) <= limits.max_addresses_per_interface,
            "too many addresses on one interface");
      addresses += static_cast<std::size_t>(i.addresses_size());
      check_name(i.name());
      check_name(i.mac());
      check_name(i.oper_state());
      for (const auto& a : i.addresses()) check_name(a.address());
    }
    check(addresses <= limits.max_addresses, "too many addresses");
    check(static_cast<std::size_t>(t.disk_io_size()) <= limits.max_disk_io,
          "too many disk counters");
    check(static_cast<std::size_t>(t.cpus_size()) <= limits.max_cpus, "too many CPU times");
    std::set<std::string> disk_names;
    for (const auto& d : t.disk_io()) {
      check_name(d.name());
      check(disk_names.insert(d.name()).second, "a disk's counters twice");
    }
    std::set<std::uint32_t> cpus;
    for (const auto& c : t.cpus()) check(cpus.insert(c.cpu()).second, "a CPU's times twice");
    // What one guest's telemetry can add to a status report, whatever it sent (unknown fields
    // included: they are dropped): at most about 40 kB of disks and interfaces, 25 kB of CPU
    // times and 16 kB of disk counters.
    check(t.ByteSizeLong() < 85'000, "a capped telemetry sample is large");
  }
  if (e.has_hello_ack()) {
    const auto& h = e.hello_ack();
    check_name(h.hostname());
    check_name(h.software_version());
    check_os(h.os());
    check(static_cast<std::size_t>(h.capabilities_size()) <= limits.max_capabilities,
          "too many capabilities");
  }
  if (e.has_info()) check_os(e.info().os());
  if (e.has_users_reply()) {
    check(static_cast<std::size_t>(e.users_reply().sessions_size()) <= limits.max_sessions,
          "too many login sessions");
    for (const auto& s : e.users_reply().sessions()) {
      check_name(s.user());
      check_name(s.terminal());
      check_name(s.host());
    }
  }
  if (e.has_network_reply()) {
    const auto& n = e.network_reply();
    check(static_cast<std::size_t>(n.routes_size()) <= limits.max_routes, "too many routes");
    check(static_cast<std::size_t>(n.dns_servers_size()) <= limits.max_resolver_entries,
          "too many DNS servers");
    check_name(n.primary_address());
    for (const auto& r : n.routes()) check_name(r.interface());
  }
  if (e.has_telemetry()) check_name(e.telemetry().primary_address());
  if (e.has_hotplug_reply()) {
    for (const auto& o : e.hotplug_reply().outcomes()) check_name(o.error());
  }
  if (e.has_disks_reply()) {
    const auto& d = e.disks_reply();
    check(static_cast<std::size_t>(d.filesystems_size()) <= limits.max_block_devices,
          "too many filesystems");
    check(static_cast<std::size_t>(d.devices_size()) <= limits.max_block_devices,
          "too many block devices");
    for (const auto& fs : d.filesystems()) {
      check_name(fs.mount_point());
      check_name(fs.source());
      check(static_cast<std::size_t>(fs.disks_size()) <= limits.max_chain_devices,
            "too many disks under a filesystem");
      for (const auto& n : fs.disks()) check_name(n);
    }
    for (const auto& b : d.devices()) {
      check_name(b.name());
      check_name(b.serial());
      check_name(b.pci_path());
      check(static_cast<std::size_t>(b.parents_size()) <= limits.max_chain_devices,
            "too many parents");
    }
  }
  for (const auto* hooks :
       {&e.power_reply().hooks(), &e.suspend_reply().hooks(), &e.info().last_resume().hooks()}) {
    check(static_cast<std::size_t>(hooks->size()) <= limits.max_hooks, "too many hook outcomes");
    for (const auto& h : *hooks) {
      check_name(h.hook());
      check_name(h.error());
    }
  }
  for (const auto* job : [&] {
         std::vector<const pb::Job*> all;
         if (e.has_job()) all.push_back(&e.job());
         for (const auto& j : e.jobs_reply().jobs()) all.push_back(&j);
         return all;
       }()) {
    check(static_cast<std::size_t>(job->argv_size()) <= limits.max_job_args, "too many arguments");
    std::size_t command = 0;
    for (const auto& a : job->argv()) command += a.size();
    check(command <= limits.max_command_bytes, "a long command line");
    check_name(job->user());
  }
  check(static_cast<std::size_t>(e.jobs_reply().jobs_size()) <= limits.max_jobs, "too many jobs");
  if (e.has_upgrade_status()) {
    const auto& u = e.upgrade_status();
    for (const auto* s : {&u.token(), &u.from_version(), &u.to_version(), &u.running_version(),
                          &u.running_sha256()}) {
      check_name(*s);
    }
    for (const auto* s : {&u.binary(), &u.previous(), &u.detail()}) {
      check(s->size() <= limits.max_error_bytes, "a long upgrade text");
    }
  }
  if (e.has_time_reply()) {
    check_name(e.time_reply().timezone());
    check_name(e.time_reply().rtc_error());
  }
  if (e.has_error()) check(e.error().message().size() <= limits.max_error_bytes, "a long error");
  const std::string once = e.SerializeAsString();
  check(qh::cap_guest_message(e, limits).empty(), "a capped message was capped again");
  check(e.SerializeAsString() == once, "capping twice changed the message");
  return 0;
}
