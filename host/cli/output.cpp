// SPDX-License-Identifier: MIT
// What qx-agent shows: exit statuses and failures, text for people, JSON for programs.
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <iostream>

#include "cli.hpp"
#include "qxa/common/text.hpp"
#include "qxa/host/agent_manager.hpp"
#include "qxa/host/json.hpp"

namespace qxa::cli {

using common::errc;

int status_for(std::error_code ec) {
  if (ec == errc::cancelled) return exit_interrupted;
  if (ec == errc::request_timeout || ec == errc::connection_lost || ec == errc::handshake_timeout ||
      ec == errc::write_timeout || ec == errc::not_connected) {
    return exit_tempfail;
  }
  // The agent or the daemon answered, with something that does not parse, breaks the protocol
  // or refuses the request.
  if (ec == errc::bad_frame || ec == errc::protocol_error || ec == errc::remote_error ||
      ec == errc::invalid_argument || ec == errc::too_many_requests) {
    return exit_remote;
  }
  return exit_unavailable;
}

int status_for(pb::ErrorCode code) {
  switch (code) {
    case pb::ERROR_CODE_UNAVAILABLE:
      return exit_unavailable;
    case pb::ERROR_CODE_TIMEOUT:
    case pb::ERROR_CODE_CONNECTION_LOST:
      return exit_tempfail;
    default:
      return exit_remote;
  }
}

int report(const failure& f) {
  std::fprintf(stderr, "qx-agent: %s\n", shown(f.message).c_str());
  return f.status;
}

std::optional<failure> failed(const common::result<pb::Envelope>& reply) {
  if (!reply) return failure{status_for(reply.code()), reply.error().describe()};
  if (reply->has_error()) {
    const auto& e = reply->error();
    return failure{status_for(e.code()),
                   e.rule().empty()
                       ? fmt::format("the agent refused: {}", e.message())
                       : fmt::format("the agent refused: {} (rule {})", e.message(), e.rule())};
  }
  return std::nullopt;
}

std::string shown(std::string_view text) { return common::printable(text); }

std::string human_bytes(std::uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
}

std::string human_age(std::int64_t since_ms) {
  if (since_ms <= 0) return "-";
  const auto s = (common::unix_ms() - since_ms) / 1000;
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{}h", s / 86400, (s % 86400) / 3600);
}

void print_json(const json& j, int indent) {
  std::cout << j.dump(indent, ' ', false, json::error_handler_t::replace) << std::endl;
}

json status_json(const pb::VmStatus& s) {
  auto j = host::to_json(s);
  j["session_id"] = fmt::format("{:016x}", s.session_id());
  // Version, OS, hostname, addresses and rtt are current only while the VM is ready; otherwise
  // they are what was seen last_seen_age_ms ago.
  j["current"] = s.state() == pb::VM_STATE_READY;
  j["last_seen_age_ms"] =
      s.last_seen_unix_ms() > 0 ? json(common::unix_ms() - s.last_seen_unix_ms()) : json(nullptr);
  j["last_telemetry_age_ms"] = s.last_telemetry_unix_ms() > 0
                                   ? json(common::unix_ms() - s.last_telemetry_unix_ms())
                                   : json(nullptr);
  return j;
}

// SINCE: how long the VM has been ready, or not ready (across retries, however its state
// changes meanwhile). SEEN: when its agent last answered; AGENT, OS and IPS date from then.
void print_status_table(const pb::StatusReport& report) {
  std::vector<std::array<std::string, 8>> rows;
  rows.push_back({"VM", "STATE", "SINCE", "RTT", "SEEN", "AGENT", "OS", "IPS"});
  for (const auto& s : report.vms()) {
    std::string ips;
    for (const auto& a : s.ip_addresses()) {
      if (a.starts_with("fe80:")) continue;  // link-local: noise in a summary
      ips += (ips.empty() ? "" : ",") + a;
    }
    const auto& os = s.os().pretty_name().empty() ? s.os().name() : s.os().pretty_name();
    const bool ready = s.state() == pb::VM_STATE_READY;
    const auto since = ready || s.not_ready_since_unix_ms() == 0 ? s.state_since_unix_ms()
                                                                 : s.not_ready_since_unix_ms();
    std::string seen = "never";
    if (ready) {
      seen = "now";
    } else if (s.last_seen_unix_ms() > 0) {
      seen = human_age(s.last_seen_unix_ms()) + " ago";
    }
    rows.push_back({shown(s.vm()), s.over_capacity() ? "over-capacity" : host::to_string(s.state()),
                    human_age(since),
                    ready && s.rtt_ms() > 0 ? fmt::format("{:.2f}ms", s.rtt_ms()) : "-", seen,
                    s.agent_version().empty() ? "-" : shown(s.agent_version()),
                    os.empty() ? "-" : shown(os), ips.empty() ? "-" : shown(ips)});
  }
  std::array<std::size_t, 8> width{};
  for (const auto& r : rows) {
    for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += i + 1 < r.size() ? fmt::format("{:<{}}  ", r[i], width[i]) : r[i];
    }
    std::printf("%s\n", line.c_str());
  }
  if (report.vms_size() == 0) {
    std::printf("(no VM sockets in %s)\n", shown(report.socket_dir()).c_str());
  }
  const auto waiting = std::count_if(report.vms().begin(), report.vms().end(),
                                     [](const pb::VmStatus& s) { return s.over_capacity(); });
  if (waiting > 0) {
    std::printf(
        "(%ld over capacity: qx-agentd's descriptor limit %llu allows %llu VM connections; raise "
        "its LimitNOFILE to serve them)\n",
        static_cast<long>(waiting), static_cast<unsigned long long>(report.descriptor_limit()),
        static_cast<unsigned long long>(report.max_vm_connections()));
  }
}

void print_info(const pb::Info& i) {
  std::printf("agent:     quantix-kvm-agent %s (pid %u, up %s)\n",
              shown(i.software_version()).c_str(), i.agent_pid(),
              human_age(i.agent_started_unix_ms()).c_str());
  std::printf("os:        %s\n",
              shown(i.os().pretty_name().empty() ? i.os().name() : i.os().pretty_name()).c_str());
  std::printf("kernel:    %s %s (%s)\n", shown(i.os().kernel_release()).c_str(),
              shown(i.os().kernel_version()).c_str(), shown(i.os().architecture()).c_str());
  std::printf("hostname:  %s\n", shown(i.hostname()).c_str());
  std::printf("boot id:   %s\n", shown(i.boot_id()).c_str());
  std::printf("uptime:    %.0f s\n", i.uptime_seconds());
  std::printf("agent use: %.2f s CPU, %s resident\n", i.agent_cpu_seconds(),
              human_bytes(i.agent_rss_bytes()).c_str());
  std::string caps;
  for (const auto& c : i.capabilities()) caps += (caps.empty() ? "" : ", ") + c;
  std::printf("handles:   %s\n", shown(caps).c_str());
  if (i.has_last_resume()) {
    const auto& r = i.last_resume();
    std::printf("resume:    %s, %s after %.1f s asleep (suspended to %s)\n",
                human_age(r.resumed_unix_ms()).c_str(),
                r.error().empty() ? "woke" : ("failed: " + shown(r.error())).c_str(),
                r.slept_seconds(), shown(r.mode()).c_str());
    print_hooks(r.hooks());
  }
}

void print_hooks(const google::protobuf::RepeatedPtrField<pb::HookOutcome>& hooks) {
  for (const auto& h : hooks) {
    std::printf("  hook %s %s: %s (%.1f s)\n", shown(h.hook()).c_str(), shown(h.phase()).c_str(),
                h.ok() ? "ok" : shown(h.error()).c_str(), h.duration_ms() / 1000.0);
  }
}

void print_telemetry(const pb::Telemetry& t) {
  const auto& m = t.memory();
  std::printf(
      "telemetry #%llu  cpu %.1f%% of %u  load %.2f %.2f %.2f  up %.0f s  %u processes  host %s\n",
      static_cast<unsigned long long>(t.sequence()), t.cpu_percent(), t.cpu_count(), t.load1(),
      t.load5(), t.load15(), t.uptime_seconds(), t.process_count(), shown(t.hostname()).c_str());
  std::printf("  memory  %s total, %s available, %s used; swap %s of %s used\n",
              human_bytes(m.total_bytes()).c_str(), human_bytes(m.available_bytes()).c_str(),
              human_bytes(m.used_bytes()).c_str(), human_bytes(t.swap().used_bytes()).c_str(),
              human_bytes(t.swap().total_bytes()).c_str());
  for (const auto& d : t.disks()) {
    std::printf("  disk    %-20s %-10s %-6s %s of %s used\n", shown(d.mount_point()).c_str(),
                shown(d.device()).c_str(), shown(d.fs_type()).c_str(),
                human_bytes(d.used_bytes()).c_str(), human_bytes(d.total_bytes()).c_str());
  }
  for (const auto& d : t.disk_io()) {
    std::printf("  io      %-10s read %s in %llu, written %s in %llu, busy %.1f s since boot\n",
                shown(d.name()).c_str(), human_bytes(d.read_bytes()).c_str(),
                static_cast<unsigned long long>(d.reads()), human_bytes(d.written_bytes()).c_str(),
                static_cast<unsigned long long>(d.writes()), d.io_ms() / 1000.0);
  }
  print_interfaces(t.interfaces());
  if (!t.primary_address().empty()) {
    std::printf("  primary address %s\n", shown(t.primary_address()).c_str());
  }
  std::fflush(stdout);
}

void print_interfaces(const google::protobuf::RepeatedPtrField<pb::Interface>& interfaces) {
  for (const auto& i : interfaces) {
    std::string addrs;
    for (const auto& a : i.addresses()) {
      addrs += fmt::format("{}{}/{}{}", addrs.empty() ? "" : " ", a.address(), a.prefix_length(),
                           a.dynamic() ? " (dynamic)" : "");
    }
    std::printf("  net     %-10s %s %-4s mtu %u  rx %s tx %s  %s\n", shown(i.name()).c_str(),
                shown(i.mac()).c_str(), i.link_up() ? "up" : "down", i.mtu(),
                human_bytes(i.rx_bytes()).c_str(), human_bytes(i.tx_bytes()).c_str(),
                shown(addrs).c_str());
  }
}

void print_network(const pb::NetworkReply& n) {
  print_interfaces(n.interfaces());
  std::printf("  primary address %s\n",
              n.primary_address().empty() ? "none" : shown(n.primary_address()).c_str());
  for (const auto& r : n.routes()) {
    std::printf("  route   %-20s %s%s dev %s%s metric %u\n", shown(r.destination()).c_str(),
                r.gateway().empty() ? "" : "via ", shown(r.gateway()).c_str(),
                shown(r.interface()).c_str(),
                r.source().empty() ? "" : (" src " + shown(r.source())).c_str(), r.metric());
  }
  std::string dns, search, excluded;
  for (const auto& s : n.dns_servers()) dns += (dns.empty() ? "" : " ") + shown(s);
  for (const auto& s : n.search_domains()) search += (search.empty() ? "" : " ") + shown(s);
  for (const auto& s : n.excluded_patterns()) excluded += (excluded.empty() ? "" : " ") + shown(s);
  std::printf("  dns     %s%s%s\n", dns.empty() ? "none" : dns.c_str(),
              search.empty() ? "" : "  search ", search.c_str());
  if (!excluded.empty()) std::printf("  not shown: interfaces %s\n", excluded.c_str());
}

void print_freeze(const pb::FreezeStatus& f) {
  if (f.frozen()) {
    std::printf("frozen; the lease ends in %.1f s unless renewed\n",
                static_cast<double>(f.lease_expires_unix_ms() - common::unix_ms()) / 1000.0);
  } else {
    std::printf("thawed%s\n",
                f.thawed_by().empty() ? "" : (" (by " + shown(f.thawed_by()) + ")").c_str());
  }
  for (const auto& m : f.mounts()) {
    std::printf("  %-24s %s\n", shown(m.mount_point()).c_str(),
                m.ok() ? "ok" : shown(m.error()).c_str());
  }
  for (const auto& e : f.hook_errors()) std::printf("  hook: %s\n", shown(e).c_str());
}

void print_trim(const pb::TrimReply& t) {
  for (const auto& m : t.mounts()) {
    if (m.ok()) {
      std::printf("%-24s trimmed %s in %.1f s\n", shown(m.mount_point()).c_str(),
                  human_bytes(m.trimmed_bytes()).c_str(), m.duration_ms() / 1000.0);
    } else {
      std::printf("%-24s %s%s\n", shown(m.mount_point()).c_str(), m.skipped() ? "skipped: " : "",
                  shown(m.error()).c_str());
    }
  }
  if (t.mounts_size() == 0) std::printf("no writable disk filesystem to trim\n");
}

void print_disks(const pb::DisksReply& d) {
  for (const auto& fs : d.filesystems()) {
    const double used = fs.total_bytes() > 0 ? 100.0 * static_cast<double>(fs.used_bytes()) /
                                                   static_cast<double>(fs.total_bytes())
                                             : 0.0;
    std::string disks;
    for (const auto& name : fs.disks()) disks += (disks.empty() ? "" : ",") + shown(name);
    std::printf(
        "%-24s %-6s %10s %3.0f%% used%s  on %s%s%s\n", shown(fs.mount_point()).c_str(),
        shown(fs.fs_type()).c_str(), human_bytes(fs.total_bytes()).c_str(), used,
        fs.read_only() ? " ro" : "",
        fs.device().empty() ? shown(fs.source()).c_str() : shown(fs.device()).c_str(),
        disks.empty() || (fs.disks_size() == 1 && fs.disks(0) == fs.device()) ? "" : " < ",
        disks.empty() || (fs.disks_size() == 1 && fs.disks(0) == fs.device()) ? "" : disks.c_str());
  }
  if (d.filesystems_size() > 0) std::printf("\n");
  std::printf("%-10s %-9s %10s  %-12s %-7s %-14s %-9s %s\n", "DEVICE", "KIND", "SIZE", "ON", "BUS",
              "PCI", "SCSI", "SERIAL/NAME");
  for (const auto& b : d.devices()) {
    std::string parents;
    for (const auto& p : b.parents()) parents += (parents.empty() ? "" : ",") + shown(p);
    const bool disk = b.kind() == "disk";
    std::printf("%-10s %-9s %10s  %-12s %-7s %-14s %-9s %s%s\n", shown(b.name()).c_str(),
                shown(b.kind()).c_str(), human_bytes(b.size_bytes()).c_str(),
                parents.empty() ? "-" : parents.c_str(),
                disk && !b.bus().empty() ? shown(b.bus()).c_str() : "-",
                disk && !b.pci_path().empty() ? shown(b.pci_path()).c_str() : "-",
                disk && !b.scsi_address().empty() ? shown(b.scsi_address()).c_str() : "-",
                shown(disk ? b.serial() : b.alias()).c_str(), b.read_only() ? " (read-only)" : "");
  }
}

std::string read_all_stdin() {
  std::string data;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

}  // namespace qxa::cli
