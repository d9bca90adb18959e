// SPDX-License-Identifier: MIT
// The qemu-guest-agent commands: each one checked against its QAPI parameters, turned into the
// native request of its capability, run through the pipeline every native request takes
// (run_operation.hpp), and answered with the QAPI schema's field names (see qga.hpp). A row of
// the table is {name, arguments, the native request it builds, how its reply is mapped}; the
// request's operation also says whether the command is enabled. One file on purpose: the table
// at its end and the short translations above it are read together, each beside the native
// request it makes (the file commands, which keep state, are in files.cpp).
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <algorithm>
#include <cerrno>
#include <map>
#include <set>
#include <type_traits>

#include "file_commands.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/parse.hpp"
#include "qxa/common/version.hpp"
#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/core/log_text.hpp"
#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/core/run_operation.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/clock.hpp"
#include "qxa/guest/platform/system_info.hpp"
#include "qxa/guest/qga/qga.hpp"

namespace qxa::guest::qga {

using namespace asio::experimental::awaitable_operators;
using param = parameter::type;

namespace {

// What a native call gave: its reply, or the answer that ends the command (a refusal, an error).
using native_result = std::variant<pb::Envelope, answer>;

// A refusal as qemu-ga words it, after its audit line.
// [qemu_ga] block_rpcs and allow_rpcs: this port's own lists, as qemu-ga's -b and -a.
bool port_disabled(const context& ctx, std::string_view name) {
  const auto& q = ctx.state.options.qemu_ga;
  const auto listed = [&](const std::vector<std::string>& l) {
    return std::find(l.begin(), l.end(), name) != l.end();
  };
  return (!q.allow_rpcs.empty() && !listed(q.allow_rpcs)) || listed(q.block_rpcs);
}

answer disabled(const command_call& call, const refusal_reply& no) {
  common::log_warning("audit: op={} port=qemu-ga command={} {} ({})", no.operation, call.name,
                      log_text::audit_refused, no.message);
  return answer::not_found("Command " + call.name + " has been disabled: " + no.message);
}

}  // namespace

std::optional<answer> native_refusal(const context& ctx, const command_call& call,
                                     pb::Envelope::BodyCase body) {
  const auto* op = find_operation(ctx.state.parts.operations, body);
  if (op == nullptr) return answer::generic("no native operation for " + call.name);
  if (auto no = check_operation(*op, ctx.state.options.policy, ctx.state.frozen())) {
    return disabled(call, *no);
  }
  return std::nullopt;
}

namespace {

// Runs `request` through the pipeline every native request takes (run_operation.hpp): the same
// admission (policy, frozen, the in-flight places both ports share), deadline and containment.
// `on_progress` receives its partial replies.
asio::awaitable<native_result> native(context& ctx, const command_call& call, pb::Envelope request,
                                      std::function<void(const pb::Envelope&)> on_progress = {}) {
  auto& state = ctx.state;
  auto admitted_or =
      admit(state.parts.operations, state.options.policy, request, state.frozen(), *state.inflight);
  if (auto* no = std::get_if<refusal_reply>(&admitted_or)) {
    switch (no->why) {
      case refusal_reply::reason::unknown:
        co_return answer::generic("no native operation for " + call.name);
      case refusal_reply::reason::busy:
        co_return answer::generic(no->message);
      default:
        co_return disabled(call, *no);
    }
  }
  auto& a = std::get<admitted>(admitted_or);
  // Named, not a temporary of the co_await's full expression (see session::execute).
  request_context run_ctx{state, 0, ++ctx.commands, nullptr, std::move(on_progress)};
  auto outcome = co_await run_operation(*a.op, std::move(run_ctx), std::move(request),
                                        state.options.request_timeout);
  if (outcome.how == operation_outcome::end::timed_out) {
    co_return answer::generic(call.name + " timed out");
  }
  if (outcome.reply.has_error()) co_return answer::generic(outcome.reply.error().message());
  co_return std::move(outcome.reply);
}

// ---- the rows ------------------------------------------------------------------------------

// What fills a command's native request from its arguments: nothing, or the answer that ends
// the command (bad arguments).
using build_fn = std::optional<answer> (*)(context&, const command_call&, pb::Envelope&);
// The command's answer from the native reply.
using map_fn = answer (*)(context&, const command_call&, const pb::Envelope&);
// A command that is not one native call: it runs it all (native() for its calls).
using run_fn = asio::awaitable<answer> (*)(context&, const command_call&);

struct command {
  const char* name;
  std::span<const parameter> params;
  /// The operation of the native request the command makes, which decides whether the command
  /// is enabled (guest-info) and runs; null for the protocol's own commands.
  pb::Envelope::BodyCase (*native)() = nullptr;
  build_fn build = nullptr;
  map_fn map = nullptr;
  run_fn run = nullptr;
  bool success_response = true;
};

// The request a field of the Envelope holds (&pb::Envelope::mutable_info_request: InfoRequest).
template <auto Field>
using request_of = std::remove_pointer_t<std::invoke_result_t<decltype(Field), pb::Envelope&>>;

// The body case of the field: from the accessor itself, so a row's request and the operation
// that gates it cannot differ.
template <auto Field>
pb::Envelope::BodyCase body_of() {
  pb::Envelope e;
  (void)(e.*Field)();
  return e.body_case();
}

// A command that is one native request: `Build` fills it, `Map` answers from the reply.
template <auto Field, auto Build, auto Map>
constexpr command native_command(const char* name, std::span<const parameter> params = {},
                                 bool success_response = true) {
  return command{name,
                 params,
                 &body_of<Field>,
                 [](context& ctx, const command_call& call, pb::Envelope& e) {
                   return Build(ctx, call, *(e.*Field)());
                 },
                 Map,
                 nullptr,
                 success_response};
}

// A command of several native requests (or none), gated by the operation of `Field`.
template <auto Field, auto Run>
constexpr command composite_command(const char* name, std::span<const parameter> params = {}) {
  return command{name, params, &body_of<Field>, nullptr, nullptr, Run, true};
}

// A native request with nothing to fill in.
template <typename Request>
std::optional<answer> empty(context&, const command_call&, Request&) {
  return std::nullopt;
}

answer ok_empty(context&, const command_call&, const pb::Envelope&) {
  return answer::ok(json::object());
}

// ---- the protocol's own ----------------------------------------------------------------------

asio::awaitable<answer> sync(context&, const command_call& call) {
  co_return answer::ok(call.arguments["id"]);
}

std::span<const command> table();

asio::awaitable<answer> info(context& ctx, const command_call&) {
  json commands = json::array();
  const auto& state = ctx.state;
  for (const auto& c : table()) {
    bool enabled = !port_disabled(ctx, c.name);
    if (enabled && c.native != nullptr) {
      const auto* op = find_operation(state.parts.operations, c.native());
      enabled = op != nullptr && !check_operation(*op, state.options.policy, state.frozen());
    }
    commands.push_back(
        {{"enabled", enabled}, {"name", c.name}, {"success-response", c.success_response}});
  }
  co_return answer::ok({{"version", common::software_version}, {"supported_commands", commands}});
}

// ---- identity, time, users, network ----------------------------------------------------------

answer osinfo(context&, const command_call&, const pb::Envelope& r) {
  const auto& os = r.info().os();
  json o = json::object();
  const auto put = [&](const char* key, const std::string& v) {
    if (!v.empty()) o[key] = v;
  };
  put("name", os.name());
  put("kernel-release", os.kernel_release());
  put("version", os.version_name());
  put("pretty-name", os.pretty_name());
  put("version-id", os.version());
  put("kernel-version", os.kernel_version());
  put("machine", os.architecture());
  put("id", os.id());
  put("variant", os.variant());
  put("variant-id", os.variant_id());
  return answer::ok(o);
}

// guest-get-load (QEMU 10.0): the load averages of the sample the telemetry operation takes.
answer load(context&, const command_call&, const pb::Envelope& r) {
  const auto& t = r.telemetry();
  return answer::ok({{"load1m", t.load1()}, {"load5m", t.load5()}, {"load15m", t.load15()}});
}

// guest-get-cpustats (QEMU 7.1): each CPU's times of the telemetry sample, in milliseconds as
// qemu-ga converts /proc/stat's clock ticks. The sample does not keep the time spent running
// guests (guest, guestnice): left out, as the schema allows.
answer cpustats(context&, const command_call&, const pb::Envelope& r) {
  json list = json::array();
  for (const auto& c : r.telemetry().cpus()) {
    list.push_back({{"type", "linux"},
                    {"cpu", c.cpu()},
                    {"user", c.user_ms()},
                    {"nice", c.nice_ms()},
                    {"system", c.system_ms()},
                    {"idle", c.idle_ms()},
                    {"iowait", c.iowait_ms()},
                    {"irq", c.irq_ms()},
                    {"softirq", c.softirq_ms()},
                    {"steal", c.steal_ms()}});
  }
  return answer::ok(list);
}

// guest-get-diskstats (QEMU 7.1): the whole disks of the telemetry sample (partitions, loop and
// RAM devices left out, as the sample leaves them), with the counters it keeps; sectors are
// 512 bytes, as /proc/diskstats counts them.
answer diskstats(context&, const command_call&, const pb::Envelope& r) {
  json list = json::array();
  for (const auto& d : r.telemetry().disk_io()) {
    // Its device number, from the kernel's own listing of it.
    std::uint64_t major = 0, minor = 0;
    if (d.name().find('/') == std::string::npos) {
      const auto dev = read_file("/sys/class/block/" + d.name() + "/dev").value_or("");
      if (const auto colon = dev.find(':'); colon != std::string::npos) {
        major = common::to_number<std::uint64_t>(std::string_view(dev).substr(0, colon)).value_or(0);
        minor = common::to_number<std::uint64_t>(
                    common::trim(std::string_view(dev).substr(colon + 1)))
                    .value_or(0);
      }
    }
    list.push_back({{"name", d.name()},
                    {"major", major},
                    {"minor", minor},
                    {"stats",
                     {{"read-sectors", d.read_bytes() / 512},
                      {"read-ios", d.reads()},
                      {"read-ticks", d.read_ms()},
                      {"write-sectors", d.written_bytes() / 512},
                      {"write-ios", d.writes()},
                      {"write-ticks", d.write_ms()},
                      {"discard-sectors", d.discarded_bytes() / 512},
                      {"discard-ios", d.discards()},
                      {"ios-pgr", d.in_flight()},
                      {"total-ticks", d.io_ms()}}}});
  }
  return answer::ok(list);
}

// guest-network-get-route (QEMU 9.1): the routes of the native network view. IPv4 routes as
// qemu-ga gives them (destination and mask apart, dotted); IPv6 with their prefix lengths.
std::string ipv4_mask(int prefix) {
  const std::uint32_t m = prefix <= 0 ? 0 : ~std::uint32_t{0} << (32 - std::min(prefix, 32));
  return fmt::format("{}.{}.{}.{}", m >> 24, (m >> 16) & 0xFF, (m >> 8) & 0xFF, m & 0xFF);
}

answer routes(context&, const command_call&, const pb::Envelope& r) {
  json list = json::array();
  for (const auto& route : r.network_reply().routes()) {
    const auto slash = route.destination().rfind('/');
    const std::string address = route.destination().substr(0, slash);
    int prefix = route.family() == pb::IpAddress::FAMILY_IPV6 ? 128 : 32;
    if (slash != std::string::npos) {
      prefix = common::to_number<int>(std::string_view(route.destination()).substr(slash + 1))
                   .value_or(prefix);
    }
    json o = {{"iface", route.interface()},
              {"destination", address},
              {"metric", route.metric()}};
    if (route.family() == pb::IpAddress::FAMILY_IPV6) {
      o["desprefixlen"] = std::to_string(prefix);
      if (!route.source().empty()) o["source"] = route.source();
      o["nexthop"] = route.gateway().empty() ? "::" : route.gateway();
      o["version"] = 6;
    } else {
      o["gateway"] = route.gateway().empty() ? "0.0.0.0" : route.gateway();
      o["mask"] = ipv4_mask(prefix);
      o["version"] = 4;
    }
    list.push_back(std::move(o));
  }
  return answer::ok(list);
}

answer host_name(context&, const command_call&, const pb::Envelope& r) {
  return answer::ok({{"host-name", r.info().hostname()}});
}

answer get_time(context&, const command_call&, const pb::Envelope& r) {
  return answer::ok(r.time_reply().unix_ns());
}

std::optional<answer> build_set_time(context& ctx, const command_call& call, pb::TimeRequest& t) {
  std::int64_t target = 0;
  if (call.arguments.contains("time")) {
    target = call.arguments["time"].get<std::int64_t>();
    if (target <= 0) return answer::generic("Invalid parameter 'time'");
  } else {
    // No time given: the hardware clock's, which the hypervisor keeps right (what `virsh
    // domtime --sync` asks for after a pause or a migration).
    const bool local = hardware_clock_is_local(read_file("/etc/adjtime").value_or(""));
    auto rtc = read_hardware_clock(ctx.state.options.rtc_device, local);
    if (!rtc) return answer::generic("cannot read the hardware clock: " + rtc.error().message);
    target = rtc.value() * 1'000'000'000;
  }
  t.set_set(true);
  t.set_set_unix_ns(target);
  return std::nullopt;
}

answer timezone(context&, const command_call&, const pb::Envelope& r) {
  const auto& t = r.time_reply();
  json o = json::object();
  if (!t.timezone_abbreviation().empty()) o["zone"] = t.timezone_abbreviation();
  o["offset"] = t.utc_offset_seconds();
  return answer::ok(o);
}

answer users(context&, const command_call&, const pb::Envelope& r) {
  // One entry per user, with their earliest login, as qemu-ga lists them.
  std::map<std::string, std::int64_t> first;
  std::vector<std::string> order;
  for (const auto& s : r.users_reply().sessions()) {
    auto [it, added] = first.emplace(s.user(), s.login_unix_ms());
    if (added) {
      order.push_back(s.user());
    } else {
      it->second = std::min(it->second, s.login_unix_ms());
    }
  }
  json list = json::array();
  for (const auto& u : order) {
    list.push_back({{"user", u}, {"login-time", static_cast<double>(first[u]) / 1000.0}});
  }
  return answer::ok(list);
}

answer interfaces(context&, const command_call&, const pb::Envelope& r) {
  json list = json::array();
  for (const auto& i : r.network_reply().interfaces()) {
    json o = {{"name", i.name()}};
    if (!i.mac().empty()) o["hardware-address"] = i.mac();
    if (i.addresses_size() > 0) {
      json addresses = json::array();
      for (const auto& a : i.addresses()) {
        addresses.push_back(
            {{"ip-address-type", a.family() == pb::IpAddress::FAMILY_IPV6 ? "ipv6" : "ipv4"},
             {"ip-address", a.address()},
             {"prefix", a.prefix_length()}});
      }
      o["ip-addresses"] = std::move(addresses);
    }
    o["statistics"] = {{"rx-bytes", i.rx_bytes()}, {"rx-packets", i.rx_packets()},
                       {"rx-errs", i.rx_errors()}, {"rx-dropped", i.rx_dropped()},
                       {"tx-bytes", i.tx_bytes()}, {"tx-packets", i.tx_packets()},
                       {"tx-errs", i.tx_errors()}, {"tx-dropped", i.tx_dropped()}};
    list.push_back(std::move(o));
  }
  return answer::ok(list);
}

// ---- disks and filesystems ---------------------------------------------------------------

// "0000:00:02.0" as GuestPCIAddress; nothing when it is not one.
std::optional<json> pci_address(std::string_view text) {
  unsigned domain = 0, bus = 0, slot = 0, function = 0;
  char tail = 0;
  const std::string s(text);
  if (std::sscanf(s.c_str(), "%x:%x:%x.%x%c", &domain, &bus, &slot, &function, &tail) != 4) {
    return std::nullopt;
  }
  return json{{"domain", domain}, {"bus", bus}, {"slot", slot}, {"function", function}};
}

// A disk's GuestDiskAddress: its controller's PCI function (the last of its PCI path), its bus
// type, and for SCSI its channel, target and LUN.
json disk_address(const pb::BlockDevice& d) {
  json pci = {{"domain", -1}, {"bus", -1}, {"slot", -1}, {"function", -1}};
  if (const auto slash = d.pci_path().rfind('/'); !d.pci_path().empty()) {
    const auto last = slash == std::string::npos ? std::string_view(d.pci_path())
                                                 : std::string_view(d.pci_path()).substr(slash + 1);
    if (auto a = pci_address(last)) pci = std::move(*a);
  }
  static const std::set<std::string> known = {"ide", "scsi", "virtio", "xen",
                                              "usb", "sata", "mmc",    "nvme"};
  const std::string bus_type = known.contains(d.bus()) ? d.bus() : "unknown";
  unsigned host = 0, channel = 0, target = 0, lun = 0;
  if (!d.scsi_address().empty()) {
    std::sscanf(d.scsi_address().c_str(), "%u:%u:%u:%u", &host, &channel, &target, &lun);
  }
  json o = {{"pci-controller", pci},
            {"bus-type", bus_type},
            {"bus", channel},
            {"target", target},
            {"unit", lun}};
  if (!d.serial().empty()) o["serial"] = d.serial();
  o["dev"] = "/dev/" + d.name();
  return o;
}

answer fsinfo(context&, const command_call&, const pb::Envelope& r) {
  const auto& reply = r.disks_reply();
  std::map<std::string, const pb::BlockDevice*> by_name;
  for (const auto& d : reply.devices()) by_name[d.name()] = &d;
  json list = json::array();
  for (const auto& f : reply.filesystems()) {
    json disks = json::array();
    for (const auto& name : f.disks()) {
      if (auto it = by_name.find(name); it != by_name.end()) {
        disks.push_back(disk_address(*it->second));
      }
    }
    json o = {{"name", f.device().empty() ? f.source() : f.device()},
              {"mountpoint", f.mount_point()},
              {"type", f.fs_type()},
              {"used-bytes", f.used_bytes()},
              // As qemu-ga counts it: what is used plus what users may still use.
              {"total-bytes", f.used_bytes() + f.available_bytes()},
              // QEMU 9.1: the whole size, the blocks kept for root included.
              {"total-bytes-privileged", f.total_bytes()},
              {"disk", std::move(disks)}};
    list.push_back(std::move(o));
  }
  return answer::ok(list);
}

answer disks(context&, const command_call&, const pb::Envelope& r) {
  json list = json::array();
  for (const auto& d : r.disks_reply().devices()) {
    json o = {{"name", "/dev/" + d.name()}, {"partition", d.kind() == "partition"}};
    json dependencies = json::array();
    for (const auto& p : d.parents()) dependencies.push_back("/dev/" + p);
    o["dependencies"] = std::move(dependencies);
    if (d.kind() == "disk") o["address"] = disk_address(d);
    if (!d.alias().empty()) o["alias"] = d.alias();
    list.push_back(std::move(o));
  }
  return answer::ok(list);
}

// ---- freeze, trim, power -----------------------------------------------------------------

answer freeze_status(context&, const command_call&, const pb::Envelope& r) {
  return answer::ok(r.freeze_status().frozen() ? "frozen" : "thawed");
}

// How many mounts the request froze or thawed.
answer mounts_done(context&, const command_call&, const pb::Envelope& r) {
  int n = 0;
  for (const auto& m : r.freeze_status().mounts()) n += m.ok() ? 1 : 0;
  return answer::ok(n);
}

// A freeze through this port is the native freeze, with its lease: unless thawed, the agent
// thaws by itself after [freeze] default_lease (qemu-ga stays frozen until told).
std::optional<answer> build_freeze(context&, const command_call& call, pb::FreezeRequest& f) {
  if (const auto it = call.arguments.find("mountpoints"); it != call.arguments.end()) {
    for (const auto& m : *it) f.add_mount_points(m.get<std::string>());
  }
  return std::nullopt;
}

std::optional<answer> build_fstrim(context&, const command_call& call, pb::TrimRequest& t) {
  if (call.arguments.contains("minimum")) {
    const auto minimum = call.arguments["minimum"].get<std::int64_t>();
    if (minimum < 0) return answer::generic("Invalid parameter 'minimum'");
    t.set_minimum_bytes(static_cast<std::uint64_t>(minimum));
  }
  return std::nullopt;
}

answer fstrim(context&, const command_call& call, const pb::Envelope& r) {
  const auto minimum = call.arguments.value("minimum", std::int64_t{0});
  json paths = json::array();
  for (const auto& m : r.trim_reply().mounts()) {
    json o = {{"path", m.mount_point()}};
    if (m.ok()) {
      o["trimmed"] = m.trimmed_bytes();
      o["minimum"] = minimum;
    } else {
      o["error"] = m.error();
    }
    paths.push_back(std::move(o));
  }
  return answer::ok({{"paths", paths}});
}

std::optional<answer> build_shutdown(context&, const command_call& call, pb::PowerRequest& p) {
  const std::string mode = call.arguments.value("mode", std::string("powerdown"));
  if (mode == "powerdown") {
    p.set_action(pb::PowerRequest::ACTION_POWEROFF);
  } else if (mode == "reboot") {
    p.set_action(pb::PowerRequest::ACTION_REBOOT);
  } else if (mode == "halt") {
    p.set_action(pb::PowerRequest::ACTION_HALT);
  } else {
    // qemu-ga's words, its missing parenthesis included.
    return answer::generic("mode is invalid (valid values are: halt|powerdown|reboot");
  }
  return std::nullopt;
}

// guest-suspend-disk, -ram, -hybrid: the native suspend in that mode, its hooks included.
template <pb::SuspendRequest::Mode Mode>
std::optional<answer> build_suspend(context&, const command_call&, pb::SuspendRequest& s) {
  s.set_mode(Mode);
  return std::nullopt;
}

answer shutdown(context&, const command_call&, const pb::Envelope&) {
  answer a;
  a.silent = true;  // qemu-ga answers a shutdown only when it fails
  return a;
}

// ---- accounts ----------------------------------------------------------------------------

std::optional<answer> build_password(context&, const command_call& call, pb::PasswordRequest& p) {
  auto password = from_base64(call.arguments["password"].get<std::string>());
  if (!password) return answer::generic("Invalid parameter 'password': not base64");
  p.set_user(call.arguments["username"].get<std::string>());
  p.set_password(std::move(*password));
  p.set_crypted(call.arguments["crypted"].get<bool>());
  return std::nullopt;
}

void ssh_keys_of(const command_call& call, pb::SshKeysRequest::Action action, const json* keys,
                 pb::SshKeysRequest& k) {
  k.set_user(call.arguments["username"].get<std::string>());
  k.set_action(action);
  if (keys != nullptr) {
    // A blank entry is no key, and is passed over as qemu-ga does: virsh set-user-sshkeys
    // --file sends the file's lines, its trailing empty one too.
    for (const auto& key : *keys) {
      const auto& text = key.get_ref<const std::string&>();
      if (text.find_first_not_of(" \t\r") != std::string::npos) k.add_keys(text);
    }
  }
}

pb::Envelope ssh_request(const command_call& call, pb::SshKeysRequest::Action action,
                         const json* keys) {
  pb::Envelope e;
  ssh_keys_of(call, action, keys, *e.mutable_ssh_keys_request());
  return e;
}

std::optional<answer> build_ssh_get(context&, const command_call& call, pb::SshKeysRequest& k) {
  ssh_keys_of(call, pb::SshKeysRequest::ACTION_LIST, nullptr, k);
  return std::nullopt;
}

answer ssh_get(context&, const command_call&, const pb::Envelope& r) {
  json keys = json::array();
  for (const auto& k : r.ssh_keys_reply().keys()) keys.push_back(k);
  return answer::ok({{"keys", keys}});
}

asio::awaitable<answer> ssh_add(context& ctx, const command_call& call) {
  const json& keys = call.arguments["keys"];
  if (call.arguments.value("reset", false)) {
    // The file is to hold exactly these keys: the others go first.
    auto listed =
        co_await native(ctx, call, ssh_request(call, pb::SshKeysRequest::ACTION_LIST, nullptr));
    if (auto* refusal = std::get_if<answer>(&listed)) co_return *refusal;
    json others = json::array();
    for (const auto& k : std::get<pb::Envelope>(listed).ssh_keys_reply().keys()) {
      others.push_back(k);
    }
    if (!others.empty()) {
      auto removed =
          co_await native(ctx, call, ssh_request(call, pb::SshKeysRequest::ACTION_REMOVE, &others));
      if (auto* refusal = std::get_if<answer>(&removed)) co_return *refusal;
    }
  }
  auto added = co_await native(ctx, call, ssh_request(call, pb::SshKeysRequest::ACTION_ADD, &keys));
  if (auto* refusal = std::get_if<answer>(&added)) co_return *refusal;
  co_return answer::ok(json::object());
}

std::optional<answer> build_ssh_remove(context&, const command_call& call, pb::SshKeysRequest& k) {
  ssh_keys_of(call, pb::SshKeysRequest::ACTION_REMOVE, &call.arguments["keys"], k);
  return std::nullopt;
}

// ---- CPUs and memory ---------------------------------------------------------------------

answer get_vcpus(context&, const command_call&, const pb::Envelope& r) {
  json list = json::array();
  for (const auto& c : r.hotplug_reply().cpus()) {
    list.push_back(
        {{"online", c.online()}, {"can-offline", c.can_offline()}, {"logical-id", c.id()}});
  }
  return answer::ok(list);
}

std::optional<answer> build_set_vcpus(context&, const command_call& call, pb::HotplugRequest& h) {
  for (const auto& v : call.arguments["vcpus"]) {
    if (!v.contains("logical-id") || !v["logical-id"].is_number_integer() ||
        !v.contains("online") || !v["online"].is_boolean() ||
        v["logical-id"].get<std::int64_t>() < 0) {
      return answer::generic("Invalid parameter 'vcpus': each needs logical-id and online");
    }
    auto* c = h.add_changes();
    c->set_kind(pb::HotplugChange::KIND_CPU);
    c->set_id(v["logical-id"].get<std::uint64_t>());
    c->set_online(v["online"].get<bool>());
  }
  return std::nullopt;
}

answer set_vcpus(context&, const command_call&, const pb::Envelope& r) {
  // qemu-ga's count: the changes done before the first that failed.
  int done = 0;
  for (const auto& o : r.hotplug_reply().outcomes()) {
    if (!o.ok()) {
      if (done == 0) return answer::generic(o.error());
      break;
    }
    ++done;
  }
  return answer::ok(done);
}

answer memory_blocks(context&, const command_call&, const pb::Envelope& r) {
  json list = json::array();
  for (const auto& m : r.hotplug_reply().memory_blocks()) {
    list.push_back(
        {{"online", m.online()}, {"can-offline", m.can_offline()}, {"phys-index", m.id()}});
  }
  return answer::ok(list);
}

std::optional<answer> build_set_memory_blocks(context&, const command_call& call,
                                              pb::HotplugRequest& h) {
  for (const auto& b : call.arguments["mem-blks"]) {
    if (!b.is_object() || !b.contains("phys-index") || !b["phys-index"].is_number_integer() ||
        !b.contains("online") || !b["online"].is_boolean() ||
        b["phys-index"].get<std::int64_t>() < 0) {
      return answer::generic("Invalid parameter 'mem-blks': each needs phys-index and online");
    }
    auto* c = h.add_changes();
    c->set_kind(pb::HotplugChange::KIND_MEMORY_BLOCK);
    c->set_id(b["phys-index"].get<std::uint64_t>());
    c->set_online(b["online"].get<bool>());
  }
  return std::nullopt;
}

// One response per block asked, in order, as qemu-ga words them: a block the guest does not
// have is not-found; one the kernel cannot take offline, operation-not-supported; any other
// failure, operation-failed.
answer set_memory_blocks(context&, const command_call&, const pb::Envelope& r) {
  const auto& reply = r.hotplug_reply();
  std::map<std::uint64_t, const pb::HotplugUnit*> blocks;
  for (const auto& m : reply.memory_blocks()) blocks[m.id()] = &m;
  json list = json::array();
  for (const auto& o : reply.outcomes()) {
    const auto id = o.change().id();
    const auto it = blocks.find(id);
    const char* response = o.ok()                               ? "success"
                           : it == blocks.end()                 ? "not-found"
                           : !o.change().online() && !it->second->can_offline()
                               ? "operation-not-supported"
                               : "operation-failed";
    json entry = {{"phys-index", id}, {"response", response}};
    if (it == blocks.end()) entry["error-code"] = ENOENT;  // qemu-ga's errno for it
    list.push_back(std::move(entry));
  }
  return answer::ok(list);
}

answer memory_block_info(context&, const command_call&, const pb::Envelope& r) {
  if (r.hotplug_reply().memory_block_bytes() == 0) {
    return answer::generic("this guest has no memory hotplug");
  }
  return answer::ok({{"size", r.hotplug_reply().memory_block_bytes()}});
}

// ---- commands ----------------------------------------------------------------------------

// guest-exec starts a native detached job; guest-exec-status reads it back by pid.
// guest-exec's capture-output: a boolean (true: separated), or since QEMU 8.0 one of none,
// stdout, stderr, separated, merged (both in one stream, as written: the native merge_stderr).
struct capture {
  bool out = false, err = false, merged = false;
};
std::optional<capture> capture_of(const json& arguments) {
  if (!arguments.contains("capture-output")) return capture{};
  const auto& v = arguments["capture-output"];
  if (v.is_boolean()) return capture{v.get<bool>(), v.get<bool>(), false};
  if (!v.is_string()) return std::nullopt;
  const auto mode = v.get<std::string>();
  if (mode == "none") return capture{};
  if (mode == "stdout") return capture{true, false, false};
  if (mode == "stderr") return capture{false, true, false};
  if (mode == "separated") return capture{true, true, false};
  if (mode == "merged") return capture{true, false, true};
  return std::nullopt;
}

std::optional<answer> build_exec(context&, const command_call& call, pb::ExecRequest& x) {
  const auto& a = call.arguments;
  const auto output = capture_of(a);
  if (!output) {
    return answer::generic(
        "Invalid parameter 'capture-output': true, false, or one of none, stdout, stderr, "
        "separated, merged");
  }
  x.set_merge_stderr(output->merged);
  x.add_argv(a["path"].get<std::string>());
  if (a.contains("arg")) {
    for (const auto& arg : a["arg"]) x.add_argv(arg.get<std::string>());
  }
  if (a.contains("env")) {
    for (const auto& kv : a["env"]) {
      const auto text = kv.get<std::string>();
      const auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0) {
        return answer::generic("Invalid parameter 'env': '" + text + "' is not NAME=VALUE");
      }
      (*x.mutable_env())[text.substr(0, eq)] = text.substr(eq + 1);
    }
  }
  if (a.contains("input-data")) {
    auto input = from_base64(a["input-data"].get<std::string>());
    if (!input) return answer::generic("Invalid parameter 'input-data': not base64");
    x.set_stdin(std::move(*input));
  }
  x.set_detach(true);
  return std::nullopt;
}

answer exec(context& ctx, const command_call& call, const pb::Envelope& r) {
  const auto& job = r.job();
  // A client that never asks for a status leaves no record beyond its job's own (kept for
  // jobs.keep_finished): the records of jobs gone go now.
  std::erase_if(ctx.execs, [&](const auto& entry) {
    return ctx.state.jobs->find(entry.second.job) == nullptr;
  });
  const auto output = capture_of(call.arguments).value_or(capture{});
  ctx.execs[job.pid()] = exec_record{job.id(), output.out, output.err};
  return answer::ok({{"pid", job.pid()}});
}

asio::awaitable<answer> exec_status(context& ctx, const command_call& call) {
  const auto pid = call.arguments["pid"].get<std::int64_t>();
  const auto it = ctx.execs.find(pid);
  if (it == ctx.execs.end()) co_return answer::generic("Invalid parameter 'pid'");
  const exec_record record = it->second;
  if (ctx.state.jobs->find(record.job) == nullptr) {
    // Its record expired (jobs.keep_finished) before anyone asked.
    ctx.execs.erase(it);
    co_return answer::generic("Invalid parameter 'pid'");
  }
  pb::Envelope e;
  e.mutable_attach_request()->set_job(record.job);
  std::string out, err;
  auto collect = [&](const pb::Envelope& partial) {
    if (!partial.has_exec_output()) return;
    const auto& o = partial.exec_output();
    (o.stream() == pb::ExecOutput::STREAM_STDERR ? err : out) += o.data();
  };
  auto outcome = co_await native(ctx, call, std::move(e), collect);
  if (auto* refusal = std::get_if<answer>(&outcome)) co_return *refusal;
  const auto& job = std::get<pb::Envelope>(outcome).job();
  if (!job.finished()) co_return answer::ok({{"exited", false}});
  json o = {{"exited", true}};
  if (job.status_case() == pb::Job::kSignal) {
    o["signal"] = job.signal();
  } else {
    o["exitcode"] = job.exit_code();
  }
  if (record.out) {
    if (!out.empty()) o["out-data"] = to_base64(out);
    if (job.stdout_kept_from() > 0) o["out-truncated"] = true;
  }
  if (record.err) {
    if (!err.empty()) o["err-data"] = to_base64(err);
    if (job.stderr_kept_from() > 0) o["err-truncated"] = true;
  }
  ctx.execs.erase(pid);  // reported once, as qemu-ga does
  co_return answer::ok(o);
}

// ---- the table -----------------------------------------------------------------------------

constexpr parameter sync_params[] = {{"id", param::integer, true}};
constexpr parameter set_time_params[] = {{"time", param::integer, false}};
constexpr parameter freeze_list_params[] = {{"mountpoints", param::string_list, false}};
constexpr parameter fstrim_params[] = {{"minimum", param::integer, false}};
constexpr parameter shutdown_params[] = {{"mode", param::string, false}};
constexpr parameter password_params[] = {{"username", param::string, true},
                                         {"password", param::string, true},
                                         {"crypted", param::boolean, true}};
constexpr parameter ssh_get_params[] = {{"username", param::string, true}};
constexpr parameter ssh_add_params[] = {{"username", param::string, true},
                                        {"keys", param::string_list, true},
                                        {"reset", param::boolean, false}};
constexpr parameter ssh_remove_params[] = {{"username", param::string, true},
                                           {"keys", param::string_list, true}};
constexpr parameter set_vcpus_params[] = {{"vcpus", param::object_list, true}};
constexpr parameter set_memory_blocks_params[] = {{"mem-blks", param::object_list, true}};
constexpr parameter exec_params[] = {{"path", param::string, true},
                                     {"arg", param::string_list, false},
                                     {"env", param::string_list, false},
                                     {"input-data", param::string, false},
                                     {"capture-output", parameter::type::any, false}};
constexpr parameter exec_status_params[] = {{"pid", param::integer, true}};
constexpr parameter file_open_params[] = {{"path", param::string, true},
                                          {"mode", param::string, false}};
constexpr parameter handle_params[] = {{"handle", param::integer, true}};
constexpr parameter file_read_params[] = {{"handle", param::integer, true},
                                          {"count", param::integer, false}};
constexpr parameter file_write_params[] = {{"handle", param::integer, true},
                                           {"buf-b64", param::string, true},
                                           {"count", param::integer, false}};
// whence: an integer (0, 1, 2) or "set", "cur", "end" (QAPI's GuestFileWhence).
constexpr parameter file_seek_params[] = {{"handle", param::integer, true},
                                          {"offset", param::integer, true},
                                          {"whence", parameter::type::any, true}};

using E = pb::Envelope;
constexpr auto info_request = &E::mutable_info_request;
constexpr auto time_request = &E::mutable_time_request;
constexpr auto disks_request = &E::mutable_disks_request;
constexpr auto hotplug_request = &E::mutable_hotplug_request;
constexpr auto ssh_keys_request = &E::mutable_ssh_keys_request;
constexpr auto freeze_request = &E::mutable_freeze_request;

const command commands[] = {
    {"guest-sync-delimited", sync_params, nullptr, nullptr, nullptr, &sync},
    {"guest-sync", sync_params, nullptr, nullptr, nullptr, &sync},
    // The native ping: what the policy blocks for one port it blocks for both.
    native_command<&E::mutable_ping, &empty<pb::Ping>, &ok_empty>("guest-ping"),
    {"guest-info", {}, nullptr, nullptr, nullptr, &info},
    native_command<info_request, &empty<pb::InfoRequest>, &osinfo>("guest-get-osinfo"),
    native_command<info_request, &empty<pb::InfoRequest>, &host_name>("guest-get-host-name"),
    native_command<&E::mutable_telemetry_request, &empty<pb::TelemetryRequest>, &load>(
        "guest-get-load"),
    native_command<&E::mutable_telemetry_request, &empty<pb::TelemetryRequest>, &cpustats>(
        "guest-get-cpustats"),
    native_command<&E::mutable_telemetry_request, &empty<pb::TelemetryRequest>, &diskstats>(
        "guest-get-diskstats"),
    native_command<time_request, &empty<pb::TimeRequest>, &get_time>("guest-get-time"),
    native_command<time_request, &build_set_time, &ok_empty>("guest-set-time", set_time_params),
    native_command<time_request, &empty<pb::TimeRequest>, &timezone>("guest-get-timezone"),
    native_command<&E::mutable_users_request, &empty<pb::UsersRequest>, &users>("guest-get-users"),
    native_command<&E::mutable_network_request, &empty<pb::NetworkRequest>, &interfaces>(
        "guest-network-get-interfaces"),
    native_command<&E::mutable_network_request, &empty<pb::NetworkRequest>, &routes>(
        "guest-network-get-route"),
    native_command<disks_request, &empty<pb::DisksRequest>, &fsinfo>("guest-get-fsinfo"),
    native_command<disks_request, &empty<pb::DisksRequest>, &disks>("guest-get-disks"),
    native_command<&E::mutable_freeze_status_request, &empty<pb::FreezeStatusRequest>,
                   &freeze_status>("guest-fsfreeze-status"),
    native_command<freeze_request, &build_freeze, &mounts_done>("guest-fsfreeze-freeze"),
    native_command<freeze_request, &build_freeze, &mounts_done>("guest-fsfreeze-freeze-list",
                                                                freeze_list_params),
    native_command<&E::mutable_thaw_request, &empty<pb::ThawRequest>, &mounts_done>(
        "guest-fsfreeze-thaw"),
    native_command<&E::mutable_trim_request, &build_fstrim, &fstrim>("guest-fstrim", fstrim_params),
    native_command<&E::mutable_power_request, &build_shutdown, &shutdown>("guest-shutdown",
                                                                          shutdown_params, false),
    // No answer on success, as qemu-ga: the guest is asleep.
    native_command<&E::mutable_suspend_request, &build_suspend<pb::SuspendRequest::MODE_DISK>,
                   &shutdown>("guest-suspend-disk", {}, false),
    native_command<&E::mutable_suspend_request, &build_suspend<pb::SuspendRequest::MODE_RAM>,
                   &shutdown>("guest-suspend-ram", {}, false),
    native_command<&E::mutable_suspend_request, &build_suspend<pb::SuspendRequest::MODE_HYBRID>,
                   &shutdown>("guest-suspend-hybrid", {}, false),
    native_command<&E::mutable_exec_request, &build_exec, &exec>("guest-exec", exec_params),
    composite_command<&E::mutable_attach_request, &exec_status>("guest-exec-status",
                                                                exec_status_params),
    composite_command<&E::mutable_file_read_request, &file_open>("guest-file-open",
                                                                 file_open_params),
    {"guest-file-close", handle_params, nullptr, nullptr, nullptr, &file_close},
    composite_command<&E::mutable_file_read_request, &file_read>("guest-file-read",
                                                                 file_read_params),
    composite_command<&E::mutable_file_write_open, &file_write>("guest-file-write",
                                                                file_write_params),
    {"guest-file-seek", file_seek_params, nullptr, nullptr, nullptr, &file_seek},
    {"guest-file-flush", handle_params, nullptr, nullptr, nullptr, &file_flush},
    native_command<&E::mutable_password_request, &build_password, &ok_empty>(
        "guest-set-user-password", password_params),
    native_command<ssh_keys_request, &build_ssh_get, &ssh_get>("guest-ssh-get-authorized-keys",
                                                               ssh_get_params),
    composite_command<ssh_keys_request, &ssh_add>("guest-ssh-add-authorized-keys", ssh_add_params),
    native_command<ssh_keys_request, &build_ssh_remove, &ok_empty>(
        "guest-ssh-remove-authorized-keys", ssh_remove_params),
    native_command<hotplug_request, &empty<pb::HotplugRequest>, &get_vcpus>("guest-get-vcpus"),
    native_command<hotplug_request, &build_set_vcpus, &set_vcpus>("guest-set-vcpus",
                                                                  set_vcpus_params),
    native_command<hotplug_request, &empty<pb::HotplugRequest>, &memory_blocks>(
        "guest-get-memory-blocks"),
    native_command<hotplug_request, &empty<pb::HotplugRequest>, &memory_block_info>(
        "guest-get-memory-block-info"),
    native_command<hotplug_request, &build_set_memory_blocks, &set_memory_blocks>(
        "guest-set-memory-blocks", set_memory_blocks_params),
};

std::span<const command> table() { return commands; }

}  // namespace

std::vector<std::string> command_names() {
  std::vector<std::string> names;
  for (const auto& c : table()) names.emplace_back(c.name);
  return names;
}

asio::awaitable<answer> run_command(context& ctx, const command_call& call) {
  const auto* c = std::find_if(std::begin(commands), std::end(commands),
                               [&](const command& x) { return call.name == x.name; });
  if (c == std::end(commands)) {
    co_return answer::not_found("The command " + call.name + " has not been found");
  }
  if (port_disabled(ctx, c->name)) {
    co_return answer::not_found("The command " + call.name +
                                " has been disabled for this instance");
  }
  if (auto bad = check_arguments(call.arguments, c->params)) co_return *bad;
  if (c->run != nullptr) co_return co_await c->run(ctx, call);
  pb::Envelope request;
  if (auto bad = c->build(ctx, call, request)) co_return *bad;
  auto reply = co_await native(ctx, call, std::move(request));
  if (auto* refusal = std::get_if<answer>(&reply)) co_return *refusal;
  co_return c->map(ctx, call, std::get<pb::Envelope>(reply));
}

}  // namespace qxa::guest::qga
