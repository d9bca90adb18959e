// SPDX-License-Identifier: MIT
// The qemu-guest-agent commands: each one checked against its QAPI parameters, turned into the
// native request of its capability, run through the native handler after the native checks,
// and answered with the QAPI schema's field names (see qga.hpp). One file on purpose: the table
// at its end and the thirty short translations above it are read together, each translation
// beside the native request it makes (the file commands, which keep state, are in files.cpp).
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <map>
#include <set>

#include "file_commands.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/version.hpp"
#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/core/log_text.hpp"
#include "qxa/guest/core/operation.hpp"
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

// Whether the native operation behind a command may run now, as the native session decides it:
// the policy's lists, then the frozen state. The reason when not.
std::optional<std::string> refusal_of(const agent_state& state, const operation& e) {
  if (auto no = state.options.policy.check_operation(e.name)) return no->message;
  if (state.frozen() && !e.while_frozen) return std::string("the guest's filesystems are frozen");
  return std::nullopt;
}

}  // namespace

std::optional<answer> native_refusal(const context& ctx, const command_call& call,
                                     const operation& entry) {
  auto why = refusal_of(ctx.state, entry);
  if (!why) return std::nullopt;
  common::log_warning("audit: op={} port=qemu-ga command={} {} ({})", entry.name, call.name,
                      log_text::audit_refused, *why);
  return answer::not_found("Command " + call.name + " has been disabled: " + *why);
}

namespace {

// Runs the native handler for `request` after the native checks, bounded like a native request.
// `on_progress` receives its partial replies.
asio::awaitable<native_result> native(context& ctx, const command_call& call, pb::Envelope request,
                                      std::function<void(const pb::Envelope&)> on_progress = {}) {
  const auto* entry = ops::find(request.body_case());
  if (entry == nullptr) co_return answer::generic("no native handler for " + call.name);
  if (auto refused = native_refusal(ctx, call, *entry)) co_return *refused;
  request_context rc{ctx.state, 0, ++ctx.commands, nullptr, std::move(on_progress)};
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer deadline(ex);
  deadline.expires_after(entry->own_deadline ? std::chrono::nanoseconds::max() / 2
                                             : ctx.state.options.request_timeout);
  // A handler's exception is this command's failure, as it is a native request's.
  struct handled {
    std::optional<pb::Envelope> reply;
    std::string failure;
  };
  auto guarded = [&]() -> asio::awaitable<handled> {
    try {
      // Not inside the braces: GCC 12 destroys a co_await's result twice in an initializer.
      auto reply = co_await entry->handle(rc, std::move(request));
      co_return handled{std::move(reply), {}};
    } catch (const std::exception& e) {
      co_return handled{std::nullopt, e.what()};
    }
  };
  auto outcome = co_await (guarded() || deadline.async_wait(asio::use_awaitable));
  if (outcome.index() == 1) {
    common::log_warning("qemu-ga command {} timed out", call.name);
    co_return answer::generic(call.name + " timed out");
  }
  auto& done = std::get<0>(outcome);
  if (!done.reply) {
    common::log_error("qemu-ga command {} failed inside the agent: {}", call.name, done.failure);
    co_return answer::generic(call.name + " failed inside the agent: " + done.failure);
  }
  if (done.reply->has_error()) co_return answer::generic(done.reply->error().message());
  co_return std::move(*done.reply);
}

// ---- the commands ------------------------------------------------------------------------

using command_fn = asio::awaitable<answer> (*)(context&, const command_call&);

struct command {
  const char* name;
  std::span<const parameter> params;
  command_fn run;
  /// The native request whose checks gate it (guest-info's "enabled"); none: always allowed.
  pb::Envelope::BodyCase native = pb::Envelope::BODY_NOT_SET;
  bool success_response = true;
};

// Each command body: `r` is the native call's result; `a` the arguments.
#define QGA_NATIVE(request)                                                     \
  auto native_outcome = co_await native(ctx, call, (request));                  \
  if (auto* refusal = std::get_if<answer>(&native_outcome)) co_return *refusal; \
  const pb::Envelope& r = std::get<pb::Envelope>(native_outcome)

asio::awaitable<answer> sync(context&, const command_call& call) {
  co_return answer::ok(call.arguments["id"]);
}

asio::awaitable<answer> ping(context&, const command_call&) {
  co_return answer::ok(json::object());
}

std::span<const struct command> table();

asio::awaitable<answer> info(context& ctx, const command_call&) {
  json commands = json::array();
  for (const auto& c : table()) {
    const auto* e = ops::find(c.native);
    commands.push_back({{"enabled", e == nullptr || !refusal_of(ctx.state, *e)},
                        {"name", c.name},
                        {"success-response", c.success_response}});
  }
  co_return answer::ok({{"version", common::software_version}, {"supported_commands", commands}});
}

pb::Envelope info_request() {
  pb::Envelope e;
  e.mutable_info_request();
  return e;
}

asio::awaitable<answer> osinfo(context& ctx, const command_call& call) {
  QGA_NATIVE(info_request());
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
  co_return answer::ok(o);
}

asio::awaitable<answer> host_name(context& ctx, const command_call& call) {
  QGA_NATIVE(info_request());
  co_return answer::ok({{"host-name", r.info().hostname()}});
}

pb::Envelope time_request(std::optional<std::int64_t> set_ns = std::nullopt) {
  pb::Envelope e;
  auto* t = e.mutable_time_request();
  if (set_ns) {
    t->set_set(true);
    t->set_set_unix_ns(*set_ns);
  }
  return e;
}

asio::awaitable<answer> get_time(context& ctx, const command_call& call) {
  QGA_NATIVE(time_request());
  co_return answer::ok(r.time_reply().unix_ns());
}

asio::awaitable<answer> set_time(context& ctx, const command_call& call) {
  std::int64_t target = 0;
  if (call.arguments.contains("time")) {
    target = call.arguments["time"].get<std::int64_t>();
    if (target <= 0) co_return answer::generic("Invalid parameter 'time'");
  } else {
    // No time given: the hardware clock's, which the hypervisor keeps right (what `virsh
    // domtime --sync` asks for after a pause or a migration).
    const bool local = hardware_clock_is_local(read_file("/etc/adjtime").value_or(""));
    auto rtc = read_hardware_clock(ctx.state.options.rtc_device, local);
    if (!rtc) co_return answer::generic("cannot read the hardware clock: " + rtc.error().message);
    target = rtc.value() * 1'000'000'000;
  }
  QGA_NATIVE(time_request(target));
  (void)r;
  co_return answer::ok(json::object());
}

asio::awaitable<answer> timezone(context& ctx, const command_call& call) {
  QGA_NATIVE(time_request());
  const auto& t = r.time_reply();
  json o = json::object();
  if (!t.timezone_abbreviation().empty()) o["zone"] = t.timezone_abbreviation();
  o["offset"] = t.utc_offset_seconds();
  co_return answer::ok(o);
}

asio::awaitable<answer> users(context& ctx, const command_call& call) {
  pb::Envelope e;
  e.mutable_users_request();
  QGA_NATIVE(std::move(e));
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
  co_return answer::ok(list);
}

asio::awaitable<answer> interfaces(context& ctx, const command_call& call) {
  pb::Envelope e;
  e.mutable_network_request();
  QGA_NATIVE(std::move(e));
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
  co_return answer::ok(list);
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

pb::Envelope disks_request() {
  pb::Envelope e;
  e.mutable_disks_request();
  return e;
}

asio::awaitable<answer> fsinfo(context& ctx, const command_call& call) {
  QGA_NATIVE(disks_request());
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
              {"disk", std::move(disks)}};
    list.push_back(std::move(o));
  }
  co_return answer::ok(list);
}

asio::awaitable<answer> disks(context& ctx, const command_call& call) {
  QGA_NATIVE(disks_request());
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
  co_return answer::ok(list);
}

// ---- freeze, trim, power -----------------------------------------------------------------

pb::Envelope freeze_status_request() {
  pb::Envelope e;
  e.mutable_freeze_status_request();
  return e;
}

asio::awaitable<answer> freeze_status(context& ctx, const command_call& call) {
  QGA_NATIVE(freeze_status_request());
  co_return answer::ok(r.freeze_status().frozen() ? "frozen" : "thawed");
}

// How many mounts the request froze or thawed.
int mounts_done(const pb::FreezeStatus& s) {
  int n = 0;
  for (const auto& m : s.mounts()) n += m.ok() ? 1 : 0;
  return n;
}

// A freeze through this port is the native freeze, with its lease: unless thawed, the agent
// thaws by itself after [freeze] default_lease (qemu-ga stays frozen until told).
asio::awaitable<answer> freeze(context& ctx, const command_call& call) {
  pb::Envelope e;
  auto* f = e.mutable_freeze_request();
  if (const auto it = call.arguments.find("mountpoints"); it != call.arguments.end()) {
    for (const auto& m : *it) f->add_mount_points(m.get<std::string>());
  }
  QGA_NATIVE(std::move(e));
  co_return answer::ok(mounts_done(r.freeze_status()));
}

asio::awaitable<answer> thaw(context& ctx, const command_call& call) {
  pb::Envelope e;
  e.mutable_thaw_request();
  QGA_NATIVE(std::move(e));
  co_return answer::ok(mounts_done(r.freeze_status()));
}

asio::awaitable<answer> fstrim(context& ctx, const command_call& call) {
  pb::Envelope e;
  auto* t = e.mutable_trim_request();
  std::int64_t minimum = 0;
  if (call.arguments.contains("minimum")) {
    minimum = call.arguments["minimum"].get<std::int64_t>();
    if (minimum < 0) co_return answer::generic("Invalid parameter 'minimum'");
    t->set_minimum_bytes(static_cast<std::uint64_t>(minimum));
  }
  QGA_NATIVE(std::move(e));
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
  co_return answer::ok({{"paths", paths}});
}

asio::awaitable<answer> shutdown(context& ctx, const command_call& call) {
  const std::string mode = call.arguments.value("mode", std::string("powerdown"));
  pb::Envelope e;
  auto* p = e.mutable_power_request();
  if (mode == "powerdown") {
    p->set_action(pb::PowerRequest::ACTION_POWEROFF);
  } else if (mode == "reboot") {
    p->set_action(pb::PowerRequest::ACTION_REBOOT);
  } else if (mode == "halt") {
    p->set_action(pb::PowerRequest::ACTION_HALT);
  } else {
    // qemu-ga's words, its missing parenthesis included.
    co_return answer::generic("mode is invalid (valid values are: halt|powerdown|reboot");
  }
  QGA_NATIVE(std::move(e));
  (void)r;  // the native reply comes before the action
  answer a;
  a.silent = true;  // qemu-ga answers a shutdown only when it fails
  co_return a;
}

// ---- accounts ----------------------------------------------------------------------------

asio::awaitable<answer> set_password(context& ctx, const command_call& call) {
  auto password = from_base64(call.arguments["password"].get<std::string>());
  if (!password) co_return answer::generic("Invalid parameter 'password': not base64");
  pb::Envelope e;
  auto* p = e.mutable_password_request();
  p->set_user(call.arguments["username"].get<std::string>());
  p->set_password(std::move(*password));
  p->set_crypted(call.arguments["crypted"].get<bool>());
  QGA_NATIVE(std::move(e));
  (void)r;
  co_return answer::ok(json::object());
}

pb::Envelope ssh_request(const command_call& call, pb::SshKeysRequest::Action action,
                         const json* keys) {
  pb::Envelope e;
  auto* k = e.mutable_ssh_keys_request();
  k->set_user(call.arguments["username"].get<std::string>());
  k->set_action(action);
  if (keys != nullptr) {
    for (const auto& key : *keys) k->add_keys(key.get<std::string>());
  }
  return e;
}

asio::awaitable<answer> ssh_get(context& ctx, const command_call& call) {
  QGA_NATIVE(ssh_request(call, pb::SshKeysRequest::ACTION_LIST, nullptr));
  json keys = json::array();
  for (const auto& k : r.ssh_keys_reply().keys()) keys.push_back(k);
  co_return answer::ok({{"keys", keys}});
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
  QGA_NATIVE(ssh_request(call, pb::SshKeysRequest::ACTION_ADD, &keys));
  (void)r;
  co_return answer::ok(json::object());
}

asio::awaitable<answer> ssh_remove(context& ctx, const command_call& call) {
  QGA_NATIVE(ssh_request(call, pb::SshKeysRequest::ACTION_REMOVE, &call.arguments["keys"]));
  (void)r;
  co_return answer::ok(json::object());
}

// ---- CPUs and memory ---------------------------------------------------------------------

pb::Envelope hotplug_request() {
  pb::Envelope e;
  e.mutable_hotplug_request();
  return e;
}

asio::awaitable<answer> get_vcpus(context& ctx, const command_call& call) {
  QGA_NATIVE(hotplug_request());
  json list = json::array();
  for (const auto& c : r.hotplug_reply().cpus()) {
    list.push_back(
        {{"online", c.online()}, {"can-offline", c.can_offline()}, {"logical-id", c.id()}});
  }
  co_return answer::ok(list);
}

asio::awaitable<answer> set_vcpus(context& ctx, const command_call& call) {
  pb::Envelope e;
  auto* h = e.mutable_hotplug_request();
  for (const auto& v : call.arguments["vcpus"]) {
    if (!v.contains("logical-id") || !v["logical-id"].is_number_integer() ||
        !v.contains("online") || !v["online"].is_boolean() ||
        v["logical-id"].get<std::int64_t>() < 0) {
      co_return answer::generic("Invalid parameter 'vcpus': each needs logical-id and online");
    }
    auto* c = h->add_changes();
    c->set_kind(pb::HotplugChange::KIND_CPU);
    c->set_id(v["logical-id"].get<std::uint64_t>());
    c->set_online(v["online"].get<bool>());
  }
  QGA_NATIVE(std::move(e));
  // qemu-ga's count: the changes done before the first that failed.
  int done = 0;
  for (const auto& o : r.hotplug_reply().outcomes()) {
    if (!o.ok()) {
      if (done == 0) co_return answer::generic(o.error());
      break;
    }
    ++done;
  }
  co_return answer::ok(done);
}

asio::awaitable<answer> memory_blocks(context& ctx, const command_call& call) {
  QGA_NATIVE(hotplug_request());
  json list = json::array();
  for (const auto& m : r.hotplug_reply().memory_blocks()) {
    list.push_back(
        {{"online", m.online()}, {"can-offline", m.can_offline()}, {"phys-index", m.id()}});
  }
  co_return answer::ok(list);
}

asio::awaitable<answer> memory_block_info(context& ctx, const command_call& call) {
  QGA_NATIVE(hotplug_request());
  if (r.hotplug_reply().memory_block_bytes() == 0) {
    co_return answer::generic("this guest has no memory hotplug");
  }
  co_return answer::ok({{"size", r.hotplug_reply().memory_block_bytes()}});
}

// ---- commands ----------------------------------------------------------------------------

// guest-exec starts a native detached job; guest-exec-status reads it back by pid.
asio::awaitable<answer> exec(context& ctx, const command_call& call) {
  const auto& a = call.arguments;
  pb::Envelope e;
  auto* x = e.mutable_exec_request();
  x->add_argv(a["path"].get<std::string>());
  if (a.contains("arg")) {
    for (const auto& arg : a["arg"]) x->add_argv(arg.get<std::string>());
  }
  if (a.contains("env")) {
    for (const auto& kv : a["env"]) {
      const auto text = kv.get<std::string>();
      const auto eq = text.find('=');
      if (eq == std::string::npos || eq == 0) {
        co_return answer::generic("Invalid parameter 'env': '" + text + "' is not NAME=VALUE");
      }
      (*x->mutable_env())[text.substr(0, eq)] = text.substr(eq + 1);
    }
  }
  if (a.contains("input-data")) {
    auto input = from_base64(a["input-data"].get<std::string>());
    if (!input) co_return answer::generic("Invalid parameter 'input-data': not base64");
    x->set_stdin(std::move(*input));
  }
  x->set_detach(true);
  QGA_NATIVE(std::move(e));
  const auto& job = r.job();
  // A client that never asks for a status leaves no record beyond its job's own (kept for
  // jobs.keep_finished): the records of jobs gone go now.
  std::erase_if(ctx.execs, [&](const auto& entry) {
    return ctx.state.jobs->find(entry.second.job) == nullptr;
  });
  ctx.execs[job.pid()] = exec_record{job.id(), a.value("capture-output", false)};
  co_return answer::ok({{"pid", job.pid()}});
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
  if (record.capture_output) {
    if (!out.empty()) o["out-data"] = to_base64(out);
    if (!err.empty()) o["err-data"] = to_base64(err);
    if (job.stdout_kept_from() > 0) o["out-truncated"] = true;
    if (job.stderr_kept_from() > 0) o["err-truncated"] = true;
  }
  ctx.execs.erase(pid);  // reported once, as qemu-ga does
  co_return answer::ok(o);
}

#undef QGA_NATIVE

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
constexpr parameter exec_params[] = {{"path", param::string, true},
                                     {"arg", param::string_list, false},
                                     {"env", param::string_list, false},
                                     {"input-data", param::string, false},
                                     {"capture-output", param::boolean, false}};
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

using B = pb::Envelope;
const struct command commands[] = {
    {"guest-sync-delimited", sync_params, &sync},
    {"guest-sync", sync_params, &sync},
    {"guest-ping", {}, &ping},
    {"guest-info", {}, &info},
    {"guest-get-osinfo", {}, &osinfo, B::kInfoRequest},
    {"guest-get-host-name", {}, &host_name, B::kInfoRequest},
    {"guest-get-time", {}, &get_time, B::kTimeRequest},
    {"guest-set-time", set_time_params, &set_time, B::kTimeRequest},
    {"guest-get-timezone", {}, &timezone, B::kTimeRequest},
    {"guest-get-users", {}, &users, B::kUsersRequest},
    {"guest-network-get-interfaces", {}, &interfaces, B::kNetworkRequest},
    {"guest-get-fsinfo", {}, &fsinfo, B::kDisksRequest},
    {"guest-get-disks", {}, &disks, B::kDisksRequest},
    {"guest-fsfreeze-status", {}, &freeze_status, B::kFreezeStatusRequest},
    {"guest-fsfreeze-freeze", {}, &freeze, B::kFreezeRequest},
    {"guest-fsfreeze-freeze-list", freeze_list_params, &freeze, B::kFreezeRequest},
    {"guest-fsfreeze-thaw", {}, &thaw, B::kThawRequest},
    {"guest-fstrim", fstrim_params, &fstrim, B::kTrimRequest},
    {"guest-shutdown", shutdown_params, &shutdown, B::kPowerRequest, false},
    {"guest-exec", exec_params, &exec, B::kExecRequest},
    {"guest-exec-status", exec_status_params, &exec_status, B::kAttachRequest},
    {"guest-file-open", file_open_params, &file_open, B::kFileReadRequest},
    {"guest-file-close", handle_params, &file_close},
    {"guest-file-read", file_read_params, &file_read, B::kFileReadRequest},
    {"guest-file-write", file_write_params, &file_write, B::kFileWriteOpen},
    {"guest-file-seek", file_seek_params, &file_seek},
    {"guest-file-flush", handle_params, &file_flush},
    {"guest-set-user-password", password_params, &set_password, B::kPasswordRequest},
    {"guest-ssh-get-authorized-keys", ssh_get_params, &ssh_get, B::kSshKeysRequest},
    {"guest-ssh-add-authorized-keys", ssh_add_params, &ssh_add, B::kSshKeysRequest},
    {"guest-ssh-remove-authorized-keys", ssh_remove_params, &ssh_remove, B::kSshKeysRequest},
    {"guest-get-vcpus", {}, &get_vcpus, B::kHotplugRequest},
    {"guest-set-vcpus", set_vcpus_params, &set_vcpus, B::kHotplugRequest},
    {"guest-get-memory-blocks", {}, &memory_blocks, B::kHotplugRequest},
    {"guest-get-memory-block-info", {}, &memory_block_info, B::kHotplugRequest},
};

std::span<const struct command> table() { return commands; }

}  // namespace

std::vector<std::string> command_names() {
  std::vector<std::string> names;
  for (const auto& c : table()) names.emplace_back(c.name);
  return names;
}

asio::awaitable<answer> run_command(context& ctx, const command_call& call) {
  const auto* c = std::find_if(std::begin(commands), std::end(commands),
                               [&](const struct command& x) { return call.name == x.name; });
  if (c == std::end(commands)) {
    co_return answer::not_found("The command " + call.name + " has not been found");
  }
  if (auto bad = check_arguments(call.arguments, c->params)) co_return *bad;
  co_return co_await c->run(ctx, call);
}

}  // namespace qxa::guest::qga
