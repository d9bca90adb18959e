// SPDX-License-Identifier: MIT
// The table of qx-agent's verbs: each one's arguments, request and output in one entry. Long
// because it is the one table --help and host/README.md follow; verbs that do more than a request
// and its reply (exec, cp, the file verbs) live in files of their own.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <ctime>

#include "cli.hpp"
#include "qxa/common/duration.hpp"
#include "qxa/common/envelope.hpp"
#include "qxa/common/parse.hpp"
#include "qxa/host/clock_sync.hpp"
#include "qxa/host/json.hpp"

namespace qxa::cli {

using common::errc;
using common::result;

namespace {

// ---- status and telemetry --watch: more than one request and its reply ----------------------

asio::awaitable<int> run_status(host::agent_access& access, const options& o) {
  auto r = co_await access.status(o.vm);
  if (!r) co_return report({status_for(r.code()), r.error().describe()});
  if (o.json) {
    json vms = json::array();
    for (const auto& s : r->vms()) vms.push_back(status_json(s));
    print_json({{"daemon_version", r->daemon_version()},
                {"descriptor_limit", r->descriptor_limit()},
                {"max_vm_connections", r->max_vm_connections()},
                {"vm_connections", r->vm_connections()},
                {"vms", vms}},
               2);
  } else {
    print_status_table(*r);
  }
  co_return exit_ok;
}

// A CLI11 check: a duration of more than zero ("60s", "2m"), refused when the line is parsed.
const CLI::Validator positive_duration(
    [](std::string& text) -> std::string {
      auto d = common::parse_duration(text);
      if (!d) return d.error().message;
      if (d->count() <= 0) return "must be more than 0";
      return {};
    },
    "");

struct telemetry_flags {
  bool watch = false;
};
asio::awaitable<int> run_telemetry(host::agent_access& access, const options& o,
                                   const telemetry_flags& own);

/// The table's entry for `name` (the verbs that run one request in a way of their own).
const verb& verb_named(std::string_view name) {
  return *std::find_if(verbs().begin(), verbs().end(),
                       [&](const verb& v) { return name == v.name; });
}

// ---- the guest's clock ------------------------------------------------------------------

/// The guest's clock minus this host's, as of the time request's round trip.
double clock_offset_ms(const pb::TimeReply& t, const round_trip& rt) {
  return host::clock_offset_ms(t.unix_ns(), rt.sent_at,
                               std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::duration<double, std::milli>(rt.ms)));
}

/// "UTC+01:00"
std::string utc_offset_text(std::int32_t seconds) {
  const char sign = seconds < 0 ? '-' : '+';
  const auto a = seconds < 0 ? -static_cast<std::int64_t>(seconds) : seconds;
  return fmt::format("UTC{}{:02}:{:02}", sign, a / 3600, a / 60 % 60);
}

void print_time(const options&, const pb::Envelope& reply, const round_trip& rt) {
  const auto& t = reply.time_reply();
  const std::time_t secs = static_cast<std::time_t>(t.unix_ns() / 1'000'000'000);
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  std::printf("guest clock %04d-%02d-%02dT%02d:%02d:%02d.%03lldZ, %+.3f ms from this host%s\n",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
              static_cast<long long>((t.unix_ns() / 1'000'000) % 1000), clock_offset_ms(t, rt),
              !t.was_set() ? ""
              : t.slewed() ? " (being slewed)"
                           : " (just set)");
  std::printf(
      "time zone  %s (%s, %s)\n", t.timezone().empty() ? "unknown" : shown(t.timezone()).c_str(),
      shown(t.timezone_abbreviation()).c_str(), utc_offset_text(t.utc_offset_seconds()).c_str());
  if (t.was_set()) {
    std::printf("%s %+.3f ms; hardware clock %s\n", t.slewed() ? "slewing" : "stepped",
                static_cast<double>(-t.offset_ns()) / 1e6,
                t.rtc_written() ? "written" : ("not written: " + shown(t.rtc_error())).c_str());
  }
}

void print_users(const options&, const pb::Envelope& reply, const round_trip&) {
  const auto& u = reply.users_reply();
  if (u.sessions_size() == 0) {
    std::printf("nobody is logged in\n");
    return;
  }
  std::printf("%-16s %-12s %-17s %-24s %s\n", "USER", "TERMINAL", "LOGIN (UTC)", "FROM", "PID");
  for (const auto& s : u.sessions()) {
    const std::time_t at = static_cast<std::time_t>(s.login_unix_ms() / 1000);
    std::tm tm{};
    ::gmtime_r(&at, &tm);
    char when[32];
    std::strftime(when, sizeof when, "%Y-%m-%d %H:%M", &tm);
    std::printf("%-16s %-12s %-17s %-24s %u\n", shown(s.user()).c_str(),
                shown(s.terminal()).c_str(), when, s.host().empty() ? "-" : shown(s.host()).c_str(),
                s.pid());
  }
}

// ---- fstrim: a request with a deadline of its own -------------------------------------------

struct trim_flags {
  std::vector<std::string> mounts;
  std::string minimum_text = "0";
};

/// How long the guest may go on starting filesystems: the verb's 10 minutes unless --timeout.
std::chrono::nanoseconds trim_deadline(const options& o) { return o.timeout; }

/// "0", "4096", "64K", "1M", "1G" (binary units).
std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t unit = 1;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K':
        unit = 1ull << 10;
        break;
      case 'M':
        unit = 1ull << 20;
        break;
      case 'G':
        unit = 1ull << 30;
        break;
      default:
        break;
    }
    if (unit != 1) text.remove_suffix(1);
  }
  auto n = common::to_number<std::uint64_t>(text);
  if (!n || *n > UINT64_MAX / unit) return std::nullopt;
  return *n * unit;
}

result<pb::Envelope> trim_request(const options& o, const trim_flags& own) {
  const auto minimum = parse_size(own.minimum_text);
  if (!minimum) {
    return usage("fstrim: --minimum: not a size: '" + own.minimum_text + "' (say 0, 64K, 1M)");
  }
  pb::Envelope e;
  auto* t = e.mutable_trim_request();
  for (const auto& m : own.mounts) t->add_mount_points(m);
  t->set_minimum_bytes(*minimum);
  t->set_timeout_ms(static_cast<std::uint32_t>(std::min<std::int64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(trim_deadline(o)).count(),
      UINT32_MAX)));
  return e;
}

asio::awaitable<int> run_fstrim(host::agent_access& access, const options& o, const trim_flags&) {
  // The filesystem being trimmed at the deadline finishes first: wait a while longer for it.
  co_return co_await one_shot(verb_named("fstrim"), access, o,
                              trim_deadline(o) + std::chrono::minutes(2));
}

// ---- hotplug ---------------------------------------------------------------------------------

/// "cpu3" or "memory40" into a change.
std::optional<pb::HotplugChange> hotplug_change(std::string_view name, bool online) {
  pb::HotplugChange c;
  c.set_online(online);
  for (const auto& [prefix, kind] :
       {std::pair{std::string_view("cpu"), pb::HotplugChange::KIND_CPU},
        std::pair{std::string_view("memory"), pb::HotplugChange::KIND_MEMORY_BLOCK}}) {
    if (!name.starts_with(prefix)) continue;
    auto id = common::to_number<std::uint64_t>(name.substr(prefix.size()));
    if (!id) return std::nullopt;
    c.set_kind(kind);
    c.set_id(*id);
    return c;
  }
  return std::nullopt;
}

struct hotplug_flags {
  std::vector<std::string> online, offline;
};

result<pb::Envelope> hotplug_request(const options&, const hotplug_flags& own) {
  pb::Envelope e;
  auto* r = e.mutable_hotplug_request();
  for (const auto& [names, online] :
       {std::pair{&own.online, true}, std::pair{&own.offline, false}}) {
    for (const auto& n : *names) {
      auto c = hotplug_change(n, online);
      if (!c)
        return usage("hotplug: '" + n + "' is not a CPU or memory block (say cpu3, memory40)");
      *r->add_changes() = *c;
    }
  }
  return e;
}

/// "0-3,6,8-9" for ids.
std::string id_ranges(const std::vector<std::uint64_t>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += j == i ? fmt::format("{}", ids[i]) : fmt::format("{}-{}", ids[i], ids[j]);
    i = j + 1;
  }
  return out.empty() ? "none" : out;
}

void print_units(const char* what, const google::protobuf::RepeatedPtrField<pb::HotplugUnit>& units,
                 const std::string& size) {
  std::vector<std::uint64_t> online, offline, fixed;
  for (const auto& u : units) {
    (u.online() ? online : offline).push_back(u.id());
    if (u.online() && !u.can_offline()) fixed.push_back(u.id());
  }
  std::printf("%-7s %zu%s: online %s; offline %s; cannot go offline %s\n", what,
              static_cast<std::size_t>(units.size()), size.c_str(), id_ranges(online).c_str(),
              id_ranges(offline).c_str(), id_ranges(fixed).c_str());
}

void print_hotplug(const options&, const hotplug_flags&, const pb::Envelope& reply,
                   const round_trip&) {
  const auto& r = reply.hotplug_reply();
  for (const auto& o : r.outcomes()) {
    const auto name =
        fmt::format("{}{}", o.change().kind() == pb::HotplugChange::KIND_CPU ? "cpu" : "memory",
                    o.change().id());
    if (o.ok()) {
      std::printf("%s: %s\n", name.c_str(), o.change().online() ? "online" : "offline");
    } else {
      std::printf("%s: %s\n", name.c_str(), shown(o.error()).c_str());
    }
  }
  print_units("cpus", r.cpus(), "");
  print_units("memory", r.memory_blocks(),
              r.memory_block_bytes() > 0
                  ? fmt::format(" blocks of {}", human_bytes(r.memory_block_bytes()))
                  : std::string(" blocks"));
}

// ---- requests built from the command line -------------------------------------------------

struct power_flags {
  std::uint32_t delay_seconds = 0;
  bool halt = false;
};

result<pb::Envelope> power_request(const options& o, const power_flags& own) {
  pb::Envelope e;
  auto* p = e.mutable_power_request();
  p->set_action(o.verb == "reboot" ? pb::PowerRequest::ACTION_REBOOT
                : own.halt         ? pb::PowerRequest::ACTION_HALT
                                   : pb::PowerRequest::ACTION_POWEROFF);
  p->set_delay_seconds(own.delay_seconds);
  return e;
}

struct suspend_flags {
  std::string mode = "ram";
};

struct freeze_flags {
  std::string lease_text = "60s";
  std::vector<std::string> mounts, disk_serials;
  bool status = false;
};

struct time_flags {
  bool set = false, slew = false;
};

struct hostname_flags {
  std::string name;
};

struct passwd_flags {
  std::string user;
  bool crypted = false;
};

result<pb::Envelope> passwd_request(const options&, const passwd_flags& own) {
  std::string password = read_all_stdin();
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
    password.pop_back();
  }
  if (password.empty()) return usage("passwd: give the password on standard input");
  pb::Envelope e;
  auto* p = e.mutable_password_request();
  p->set_user(own.user);
  p->set_password(password);
  p->set_crypted(own.crypted);
  ::explicit_bzero(password.data(), password.size());
  return e;
}

struct ssh_key_flags {
  std::string action, user, key;
};

result<pb::Envelope> ssh_key_request(const options&, const ssh_key_flags& own) {
  pb::Envelope e;
  auto* k = e.mutable_ssh_keys_request();
  k->set_user(own.user);
  if (own.action == "list") {
    k->set_action(pb::SshKeysRequest::ACTION_LIST);
    return e;
  }
  k->set_action(own.action == "add" ? pb::SshKeysRequest::ACTION_ADD
                                    : pb::SshKeysRequest::ACTION_REMOVE);
  const std::string keys = own.key == "-" || own.key.empty() ? read_all_stdin() : own.key;
  common::for_each_line(keys, [&](std::string_view line) {
    if (!line.empty()) k->add_keys(std::string(line));
  });
  if (k->keys_size() == 0) return usage("ssh-key: give a KEY, or keys on standard input");
  return e;
}

// The power verbs' answer comes after the guest's power hooks ran, each bounded there by
// power.hook_timeout (30 s unless configured): their wait is longer than other verbs'.
constexpr auto power_wait = std::chrono::minutes(5);
constexpr const char* power_timeout_help =
    "how long to wait for the answer [5m: the guest's power hooks run first]";

std::vector<verb> make_table() {
  std::vector<verb> t;
  t.push_back({.name = "status",
               .help = "state of every VM (or one), as a table or JSON",
               .takes_vm = false,
               .optional_vm = "only this VM",
               .run = run_status,
               .timeout_help = nullptr});
  t.push_back({.name = "ping",
               .help = "round trip to a VM's agent",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_ping()->set_nonce(static_cast<std::uint64_t>(common::unix_ms()));
                 return e;
               },
               .text =
                   [](const options& o, const pb::Envelope&, const round_trip& rt) {
                     std::printf("pong from %s in %.2f ms\n", shown(o.vm).c_str(), rt.ms);
                   },
               .to_json =
                   [](const options& o, const pb::Envelope&, const round_trip& rt) {
                     return json{{"vm", o.vm}, {"rtt_ms", rt.ms}};
                   }});
  t.push_back({.name = "info",
               .help = "the agent's view of its guest: OS, kernel, hostname, agent",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_info_request();
                 return e;
               },
               .text = [](const options&, const pb::Envelope& r,
                          const round_trip&) { print_info(r.info()); }});
  t.push_back(make_verb<telemetry_flags>(
      {.name = "telemetry",
       .help = "a telemetry sample, or follow the pushed ones",
       .arguments =
           [](CLI::App& s, telemetry_flags& f) {
             s.add_flag("--watch", f.watch, "follow pushed telemetry until interrupted");
           },
       .request = [](const options&, const telemetry_flags&) -> result<pb::Envelope> {
         pb::Envelope e;
         e.mutable_telemetry_request();
         return e;
       },
       .text = [](const options&, const telemetry_flags&, const pb::Envelope& r,
                  const round_trip&) { print_telemetry(r.telemetry()); },
       .run = run_telemetry,
       .interrupt_ends_well = [](const telemetry_flags& f) { return f.watch; }}));
  t.push_back(make_verb<time_flags>(
      {.name = "time",
       .help = "the guest's clock, its offset from this host, and its time zone",
       .arguments =
           [](CLI::App& s, time_flags& f) {
             s.add_flag("--set", f.set,
                        "set the guest's clock (and its hardware clock) to this host's UTC time");
             s.add_flag("--slew", f.slew,
                        "with --set: slew an offset of at most 500 ms instead of stepping");
           },
       .request = [](const options&, const time_flags& f) -> result<pb::Envelope> {
         pb::Envelope e;
         if (f.slew && !f.set) return usage("time: --slew goes with --set");
         e.mutable_time_request()->set_set(f.set);
         e.mutable_time_request()->set_slew(f.slew);
         if (f.set) e.mutable_time_request()->set_set_unix_ns(common::unix_ns());
         return e;
       },
       .text = [](const options& o, const time_flags&, const pb::Envelope& r,
                  const round_trip& rt) { print_time(o, r, rt); },
       .to_json =
           [](const options&, const time_flags&, const pb::Envelope& r, const round_trip& rt) {
             auto j = host::to_json(r.time_reply());
             j["offset_ms"] = clock_offset_ms(r.time_reply(), rt);
             return j;
           }}));
  t.push_back({.name = "network",
               .help = "the guest's interfaces (DHCP or static), primary address, routes and DNS",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_network_request();
                 return e;
               },
               .text = [](const options&, const pb::Envelope& r,
                          const round_trip&) { print_network(r.network_reply()); }});
  t.push_back({.name = "users",
               .help = "who is logged in to the guest (utmp): user, terminal, login time, from "
                       "where",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_users_request();
                 return e;
               },
               .text = print_users});
  t.push_back(make_verb<hostname_flags>(
      {.name = "hostname",
       .help = "set the guest's hostname (now and in /etc/hostname)",
       .arguments =
           [](CLI::App& s, hostname_flags& f) {
             s.add_option("NAME", f.name, "the new hostname")->required();
           },
       .request = [](const options&, const hostname_flags& f) -> result<pb::Envelope> {
         pb::Envelope e;
         e.mutable_hostname_request()->set_name(f.name);
         return e;
       },
       .text =
           [](const options& o, const hostname_flags&, const pb::Envelope& r, const round_trip&) {
             const auto& h = r.hostname_reply();
             std::printf("hostname of %s is now %s%s\n", shown(o.vm).c_str(),
                         shown(h.hostname()).c_str(),
                         h.persisted() ? "" : " (not written to /etc/hostname)");
           }}));
  t.push_back(exec_verb());
  t.push_back({.name = "jobs",
               .help = "the guest's detached jobs: running, and ended ones still kept",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_jobs_request();
                 return e;
               },
               .text = [](const options&, const pb::Envelope& r,
                          const round_trip&) { print_jobs(r.jobs_reply()); }});
  t.push_back(attach_verb());
  t.push_back(kill_verb());
  t.push_back(cp_verb());
  for (auto& v : file_verbs()) t.push_back(std::move(v));
  for (const char* power : {"shutdown", "reboot"}) {
    const bool off = std::string_view(power) == "shutdown";
    t.push_back(make_verb<power_flags>(
        {.name = power,
         .help = off ? "power the guest off (the reply comes first)"
                     : "reboot the guest (the reply comes first)",
         .arguments = off ? +[](CLI::App& s, power_flags& f) {
           s.add_flag("--halt", f.halt, "halt instead of powering off");
           s.add_option("--delay", f.delay_seconds, "seconds to wait first")->capture_default_str();
         }
                          : +[](CLI::App& s, power_flags& f) {
                              s.add_option("--delay", f.delay_seconds, "seconds to wait first")
                                  ->capture_default_str();
                            },
         .request = power_request,
         .text =
             [](const options& o, const power_flags& f, const pb::Envelope& r, const round_trip&) {
               std::printf("%s: '%s' runs in %u s\n", shown(o.vm).c_str(),
                           shown(r.power_reply().method()).c_str(), f.delay_seconds);
               print_hooks(r.power_reply().hooks());
             },
         .timeout_help = power_timeout_help,
         .timeout = power_wait}));
  }
  t.push_back(make_verb<suspend_flags>(
      {.name = "suspend",
       .help = "suspend the guest to RAM, to disk or both (it wakes when the hypervisor wakes "
               "it: QMP system_wakeup, virsh dompmwakeup)",
       .arguments =
           [](CLI::App& s, suspend_flags& f) {
             s.add_option("--mode", f.mode, "ram, disk (hibernate) or hybrid")
                 ->check(CLI::IsMember({"ram", "disk", "hybrid"}))
                 ->capture_default_str();
           },
       .request = [](const options&, const suspend_flags& f) -> result<pb::Envelope> {
         pb::Envelope e;
         e.mutable_suspend_request()->set_mode(f.mode == "disk" ? pb::SuspendRequest::MODE_DISK
                                               : f.mode == "hybrid"
                                                   ? pb::SuspendRequest::MODE_HYBRID
                                                   : pb::SuspendRequest::MODE_RAM);
         return e;
       },
       .text =
           [](const options& o, const suspend_flags&, const pb::Envelope& r, const round_trip&) {
             std::printf("%s: suspending (%s)\n", shown(o.vm).c_str(),
                         shown(r.suspend_reply().method()).c_str());
             print_hooks(r.suspend_reply().hooks());
           },
       .timeout_help = power_timeout_help,
       .timeout = power_wait}));
  t.push_back(make_verb<freeze_flags>(
      {.name = "freeze",
       .help = "freeze the guest's filesystems for a snapshot, as a lease that must be renewed "
               "(run freeze again) or it thaws by itself",
       .arguments =
           [](CLI::App& s, freeze_flags& f) {
             s.add_option("--lease", f.lease_text, "thaw by itself after this long")
                 ->check(positive_duration)
                 ->capture_default_str();
             s.add_option("--mount", f.mounts, "only this mount point (repeatable)")
                 ->allow_extra_args(false);
             s.add_option("--disk", f.disk_serials,
                          "only the filesystems on the disk with this serial (repeatable)")
                 ->allow_extra_args(false);
             s.add_flag("--status", f.status, "only report whether the guest is frozen");
           },
       .request = [](const options&, const freeze_flags& f) -> result<pb::Envelope> {
         pb::Envelope e;
         if (f.status) {
           e.mutable_freeze_status_request();
           return e;
         }
         auto* r = e.mutable_freeze_request();
         for (const auto& m : f.mounts) r->add_mount_points(m);
         for (const auto& d : f.disk_serials) r->add_disk_serials(d);
         const auto lease = common::parse_duration(f.lease_text);  // checked when parsed
         r->set_lease_ms(static_cast<std::uint32_t>(std::min<std::int64_t>(
             std::chrono::duration_cast<std::chrono::milliseconds>(lease.value()).count(),
             UINT32_MAX)));
         return e;
       },
       .text = [](const options&, const freeze_flags&, const pb::Envelope& r,
                  const round_trip&) { print_freeze(r.freeze_status()); }}));
  t.push_back({.name = "thaw",
               .help = "thaw the guest's filesystems",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_thaw_request();
                 return e;
               },
               .text = [](const options&, const pb::Envelope& r,
                          const round_trip&) { print_freeze(r.freeze_status()); }});
  t.push_back({.name = "disks",
               .help = "the guest's filesystems and the block devices beneath each, down to the "
                       "virtual disks with their bus address and serial",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_disks_request();
                 return e;
               },
               .text = [](const options&, const pb::Envelope& r,
                          const round_trip&) { print_disks(r.disks_reply()); }});
  t.push_back(make_verb<trim_flags>(
      {.name = "fstrim",
       .help = "discard the unused blocks of the guest's filesystems (FITRIM), so that a "
               "thin-provisioned disk gives them back",
       .arguments =
           [](CLI::App& s, trim_flags& f) {
             s.add_option("--mount", f.mounts, "only this mount point (repeatable)")
                 ->allow_extra_args(false);
             s.add_option("--minimum", f.minimum_text,
                          "leave free extents smaller than this (bytes, or with K, M, G)")
                 ->capture_default_str();
           },
       .request = trim_request,
       .text = [](const options&, const trim_flags&, const pb::Envelope& r,
                  const round_trip&) { print_trim(r.trim_reply()); },
       .run = run_fstrim,
       .status =
           [](const pb::Envelope& r) {
             for (const auto& m : r.trim_reply().mounts()) {
               if (!m.ok() && !m.skipped()) return exit_remote;
             }
             return exit_ok;
           },
       .timeout_help = "start no further filesystem after this long [10m]",
       .timeout = std::chrono::minutes(10)}));
  t.push_back(make_verb<hotplug_flags>(
      {.name = "hotplug",
       .help = "the guest's vCPUs and memory blocks, online or offline; bring them online or "
               "offline",
       .arguments =
           [](CLI::App& s, hotplug_flags& f) {
             s.add_option("--online", f.online, "bring cpuN or memoryN online (repeatable)")
                 ->allow_extra_args(false);
             s.add_option("--offline", f.offline, "take cpuN or memoryN offline (repeatable)")
                 ->allow_extra_args(false);
           },
       .request = hotplug_request,
       .text = print_hotplug,
       .status =
           [](const pb::Envelope& r) {
             for (const auto& o : r.hotplug_reply().outcomes()) {
               if (!o.ok()) return exit_remote;
             }
             return exit_ok;
           }}));
  t.push_back(make_verb<passwd_flags>(
      {.name = "passwd",
       .help = "set a user's password, read from standard input",
       .arguments =
           [](CLI::App& s, passwd_flags& f) {
             s.add_option("USER", f.user, "the user")->required();
             s.add_flag("--crypted", f.crypted, "the input is already a crypt(3) hash");
           },
       .request = passwd_request,
       .text =
           [](const options&, const passwd_flags& f, const pb::Envelope&, const round_trip&) {
             std::printf("password of %s set\n", shown(f.user).c_str());
           }}));
  t.push_back(make_verb<ssh_key_flags>(
      {.name = "ssh-key",
       .help = "add, remove or list a user's SSH authorized keys",
       .arguments =
           [](CLI::App& s, ssh_key_flags& f) {
             s.add_option("ACTION", f.action, "add, remove or list")
                 ->required()
                 ->check(CLI::IsMember({"add", "remove", "list"}));
             s.add_option("USER", f.user, "the user")->required();
             s.add_option("KEY", f.key,
                          "the public key line (- or none: read from standard input)");
           },
       .request = ssh_key_request,
       .text =
           [](const options&, const ssh_key_flags& f, const pb::Envelope& r, const round_trip&) {
             const auto& k = r.ssh_keys_reply();
             if (f.action != "list") std::fprintf(stderr, "%u keys changed\n", k.changed());
             for (const auto& key : k.keys()) std::printf("%s\n", shown(key).c_str());
           },
       // Keys are bytes on the wire (a comment need not be UTF-8) and text here, where
       // protobuf's printer would give base64.
       .to_json =
           [](const options&, const ssh_key_flags&, const pb::Envelope& r, const round_trip&) {
             const auto& k = r.ssh_keys_reply();
             return json{{"keys", std::vector<std::string>(k.keys().begin(), k.keys().end())},
                         {"changed", k.changed()}};
           }}));
  t.push_back(upgrade_verb());
  t.push_back({.name = "upgrade-status",
               .help = "the agent's last upgrade: pending, confirmed or rolled back, and what "
                       "runs now",
               .request = [](const options&) -> result<pb::Envelope> {
                 pb::Envelope e;
                 e.mutable_upgrade_status_request();
                 return e;
               },
               .text = [](const options& o, const pb::Envelope& r,
                          const round_trip&) { print_upgrade_status(o, r.upgrade_status()); }});
  return t;
}

asio::awaitable<int> run_telemetry(host::agent_access& access, const options& o,
                                   const telemetry_flags& own) {
  if (!own.watch) co_return co_await one_shot(verb_named("telemetry"), access, o);
  auto ended = co_await access.watch(o.vm, [&](const pb::Telemetry& t) {
    if (o.json) {
      print_json(host::to_json(t));
    } else {
      print_telemetry(t);
    }
  });
  if (ended.code == errc::cancelled) co_return exit_ok;  // Ctrl-C is how a watch ends
  co_return report({status_for(ended.code), ended.describe()});
}

}  // namespace

const std::vector<verb>& verbs() {
  static const std::vector<verb> table = make_table();
  return table;
}

asio::awaitable<int> one_shot(const verb& v, host::agent_access& access, const options& o,
                              std::optional<std::chrono::nanoseconds> wait) {
  auto request = v.request(o);
  if (!request) co_return report({exit_usage, request.error().message});
  round_trip rt{.sent_at = std::chrono::system_clock::now()};
  const auto t0 = std::chrono::steady_clock::now();
  auto reply = co_await access.call(o.vm, std::move(request.value()), wait.value_or(o.timeout));
  rt.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (auto f = failed(reply)) co_return report(*f);
  if (!o.json) {
    v.text(o, *reply, rt);
  } else if (v.to_json) {
    print_json(v.to_json(o, *reply, rt));
  } else {
    // The reply's body, as protobuf prints it.
    print_json(host::to_json(*reply)[common::body_name(*reply)], 2);
  }
  co_return v.status ? v.status(*reply) : exit_ok;
}

}  // namespace qxa::cli
