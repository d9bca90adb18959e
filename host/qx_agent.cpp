// SPDX-License-Identifier: MIT
// qx-agent: the operator's command line, through qx-agentd or straight to one VM socket.
//
// Exit status: 0 success; 1 the agent answered with an error; 2 usage; 69 agent or daemon
// unavailable; 75 timeout or connection lost.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "qxa/common/duration.hpp"
#include "qxa/common/log.hpp"
#include "qxa/host/agent_client.hpp"
#include "qxa/host/agent_manager.hpp"
#include "qxa/host/control.hpp"

namespace qc = qxa::common;
namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using json = nlohmann::ordered_json;
using asio::awaitable;
using qc::result;

namespace {

constexpr int exit_ok = 0;
constexpr int exit_remote = 1;
constexpr int exit_usage = 2;
constexpr int exit_unavailable = 69;
constexpr int exit_tempfail = 75;

// ---- JSON views of the protocol messages ---------------------------------------------------

json to_json(const pb::OsInfo& os) {
  return {{"name", os.name()},
          {"version", os.version()},
          {"id", os.id()},
          {"pretty_name", os.pretty_name()},
          {"kernel_release", os.kernel_release()},
          {"kernel_version", os.kernel_version()},
          {"architecture", os.architecture()}};
}

json to_json(const pb::Telemetry& t) {
  json disks = json::array();
  for (const auto& d : t.disks()) {
    disks.push_back({{"mount_point", d.mount_point()},
                     {"device", d.device()},
                     {"fs_type", d.fs_type()},
                     {"total_bytes", d.total_bytes()},
                     {"used_bytes", d.used_bytes()},
                     {"available_bytes", d.available_bytes()},
                     {"read_only", d.read_only()}});
  }
  json interfaces = json::array();
  for (const auto& i : t.interfaces()) {
    json addrs = json::array();
    for (const auto& a : i.addresses()) {
      addrs.push_back({{"family", a.family() == pb::IpAddress::FAMILY_IPV6 ? "ipv6" : "ipv4"},
                       {"address", a.address()},
                       {"prefix_length", a.prefix_length()}});
    }
    interfaces.push_back({{"name", i.name()},
                          {"mac", i.mac()},
                          {"addresses", addrs},
                          {"link_up", i.link_up()},
                          {"oper_state", i.oper_state()},
                          {"mtu", i.mtu()},
                          {"rx_bytes", i.rx_bytes()},
                          {"rx_packets", i.rx_packets()},
                          {"rx_errors", i.rx_errors()},
                          {"tx_bytes", i.tx_bytes()},
                          {"tx_packets", i.tx_packets()},
                          {"tx_errors", i.tx_errors()}});
  }
  return {{"sequence", t.sequence()},
          {"sample_unix_ms", t.sample_unix_ms()},
          {"cpu_percent", t.cpu_percent()},
          {"cpu_count", t.cpu_count()},
          {"load", {t.load1(), t.load5(), t.load15()}},
          {"uptime_seconds", t.uptime_seconds()},
          {"memory",
           {{"total_bytes", t.memory().total_bytes()},
            {"available_bytes", t.memory().available_bytes()},
            {"used_bytes", t.memory().used_bytes()},
            {"free_bytes", t.memory().free_bytes()},
            {"buffers_bytes", t.memory().buffers_bytes()},
            {"cached_bytes", t.memory().cached_bytes()}}},
          {"swap",
           {{"total_bytes", t.swap().total_bytes()},
            {"free_bytes", t.swap().free_bytes()},
            {"used_bytes", t.swap().used_bytes()}}},
          {"process_count", t.process_count()},
          {"hostname", t.hostname()},
          {"disks", disks},
          {"interfaces", interfaces}};
}

json to_json(const pb::Info& i) {
  return {
      {"software_version", i.software_version()},
      {"os", to_json(i.os())},
      {"hostname", i.hostname()},
      {"boot_id", i.boot_id()},
      {"uptime_seconds", i.uptime_seconds()},
      {"agent_pid", i.agent_pid()},
      {"agent_started_unix_ms", i.agent_started_unix_ms()},
      {"agent_cpu_seconds", i.agent_cpu_seconds()},
      {"agent_rss_bytes", i.agent_rss_bytes()},
      {"capabilities", std::vector<std::string>(i.capabilities().begin(), i.capabilities().end())},
      {"telemetry_sent", i.telemetry_sent()},
      {"sessions", i.sessions()}};
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

json to_json(const pb::VmStatus& s) {
  json j = {
      {"vm", s.vm()},
      {"state", qh::to_string(s.state())},
      {"since_unix_ms", s.state_since_unix_ms()},
      {"rtt_ms", s.rtt_ms()},
      {"agent_version", s.agent_version()},
      {"os", to_json(s.os())},
      {"hostname", s.hostname()},
      {"ip_addresses", std::vector<std::string>(s.ip_addresses().begin(), s.ip_addresses().end())},
      {"session_id", fmt::format("{:016x}", s.session_id())},
      {"agent_pid", s.agent_pid()},
      {"reconnects", s.reconnects()},
      {"timeouts", s.timeouts()},
      {"bad_frames", s.bad_frames()},
      {"unknown_replies", s.unknown_replies()},
      {"last_error", s.last_error()},
      {"socket_path", s.socket_path()}};
  if (s.last_telemetry_unix_ms() > 0) {
    j["last_telemetry_age_ms"] = now_ms() - s.last_telemetry_unix_ms();
    j["last_telemetry"] = to_json(s.last_telemetry());
  } else {
    j["last_telemetry_age_ms"] = nullptr;
  }
  return j;
}

// ---- Human output --------------------------------------------------------------------------

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
  const auto s = (now_ms() - since_ms) / 1000;
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{}h", s / 86400, (s % 86400) / 3600);
}

void print_status_table(const pb::StatusReport& report) {
  std::vector<std::array<std::string, 7>> rows;
  rows.push_back({"VM", "STATE", "SINCE", "RTT", "AGENT", "OS", "IPS"});
  for (const auto& s : report.vms()) {
    std::string ips;
    for (const auto& a : s.ip_addresses()) {
      if (a.starts_with("fe80:")) continue;  // link-local: noise in a summary
      ips += (ips.empty() ? "" : ",") + a;
    }
    rows.push_back({s.vm(), qh::to_string(s.state()), human_age(s.state_since_unix_ms()),
                    s.rtt_ms() > 0 ? fmt::format("{:.2f}ms", s.rtt_ms()) : "-",
                    s.agent_version().empty() ? "-" : s.agent_version(),
                    s.os().pretty_name().empty() ? (s.os().name().empty() ? "-" : s.os().name())
                                                 : s.os().pretty_name(),
                    ips.empty() ? "-" : ips});
  }
  std::array<std::size_t, 7> width{};
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
  if (report.vms_size() == 0) std::printf("(no VM sockets in %s)\n", report.socket_dir().c_str());
}

void print_info(const pb::Info& i) {
  std::printf("agent:     quantix-kvm-agent %s (pid %u, up %s)\n", i.software_version().c_str(),
              i.agent_pid(), human_age(i.agent_started_unix_ms()).c_str());
  std::printf("os:        %s\n",
              i.os().pretty_name().empty() ? i.os().name().c_str() : i.os().pretty_name().c_str());
  std::printf("kernel:    %s %s (%s)\n", i.os().kernel_release().c_str(),
              i.os().kernel_version().c_str(), i.os().architecture().c_str());
  std::printf("hostname:  %s\n", i.hostname().c_str());
  std::printf("boot id:   %s\n", i.boot_id().c_str());
  std::printf("uptime:    %.0f s\n", i.uptime_seconds());
  std::printf("agent use: %.2f s CPU, %s resident\n", i.agent_cpu_seconds(),
              human_bytes(i.agent_rss_bytes()).c_str());
  std::string caps;
  for (const auto& c : i.capabilities()) caps += (caps.empty() ? "" : ", ") + c;
  std::printf("handles:   %s\n", caps.c_str());
}

void print_telemetry(const pb::Telemetry& t) {
  const auto& m = t.memory();
  std::printf(
      "telemetry #%llu  cpu %.1f%% of %u  load %.2f %.2f %.2f  up %.0f s  %u processes  host %s\n",
      static_cast<unsigned long long>(t.sequence()), t.cpu_percent(), t.cpu_count(), t.load1(),
      t.load5(), t.load15(), t.uptime_seconds(), t.process_count(), t.hostname().c_str());
  std::printf("  memory  %s total, %s available, %s used; swap %s of %s used\n",
              human_bytes(m.total_bytes()).c_str(), human_bytes(m.available_bytes()).c_str(),
              human_bytes(m.used_bytes()).c_str(), human_bytes(t.swap().used_bytes()).c_str(),
              human_bytes(t.swap().total_bytes()).c_str());
  for (const auto& d : t.disks()) {
    std::printf("  disk    %-20s %-10s %-6s %s of %s used\n", d.mount_point().c_str(),
                d.device().c_str(), d.fs_type().c_str(), human_bytes(d.used_bytes()).c_str(),
                human_bytes(d.total_bytes()).c_str());
  }
  for (const auto& i : t.interfaces()) {
    std::string addrs;
    for (const auto& a : i.addresses()) {
      addrs += fmt::format("{}{}/{}", addrs.empty() ? "" : " ", a.address(), a.prefix_length());
    }
    std::printf("  net     %-10s %s %-4s mtu %u  rx %s tx %s  %s\n", i.name().c_str(),
                i.mac().c_str(), i.link_up() ? "up" : "down", i.mtu(),
                human_bytes(i.rx_bytes()).c_str(), human_bytes(i.tx_bytes()).c_str(),
                addrs.c_str());
  }
  std::fflush(stdout);
}

// ---- Talking to the daemon or to one agent ---------------------------------------------------

struct failure {
  int status;
  std::string message;
};

int report(const failure& f) {
  std::fprintf(stderr, "qx-agent: %s\n", f.message.c_str());
  return f.status;
}

int status_for(std::error_code ec) {
  if (ec == qc::errc::request_timeout || ec == qc::errc::connection_lost ||
      ec == qc::errc::handshake_timeout || ec == qc::errc::write_timeout ||
      ec == qc::errc::not_connected) {
    return exit_tempfail;
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

// One backend per way of reaching an agent.
class backend {
 public:
  virtual ~backend() = default;
  virtual awaitable<std::optional<failure>> open() = 0;
  virtual awaitable<result<pb::StatusReport>> status(const std::string& vm) = 0;
  virtual awaitable<result<pb::Envelope>> call(const std::string& vm, pb::Envelope request,
                                               std::chrono::nanoseconds timeout) = 0;
  virtual awaitable<std::optional<failure>> watch(const std::string& vm,
                                                  std::function<void(const pb::Telemetry&)> f) = 0;
  virtual int status_of(const qc::error_info& e) = 0;
};

class daemon_backend final : public backend {
 public:
  daemon_backend(asio::any_io_executor ex, std::string path)
      : client_(ex), path_(std::move(path)) {}

  awaitable<std::optional<failure>> open() override {
    if (auto ec = co_await client_.connect(path_)) {
      co_return failure{exit_unavailable,
                        fmt::format("cannot reach qx-agentd at {}: {} (is the daemon running?)",
                                    path_, ec.message())};
    }
    co_return std::nullopt;
  }

  awaitable<result<pb::StatusReport>> status(const std::string& vm) override {
    pb::ControlMessage m;
    m.mutable_status_query()->set_vm(vm);
    auto r = co_await client_.call(std::move(m), std::chrono::seconds(10));
    if (!r) co_return r.error();
    if (r->has_error()) co_return remote(r->error());
    co_return r->status_report();
  }

  awaitable<result<pb::Envelope>> call(const std::string& vm, pb::Envelope request,
                                       std::chrono::nanoseconds timeout) override {
    pb::ControlMessage m;
    auto* c = m.mutable_vm_call();
    c->set_vm(vm);
    *c->mutable_request() = std::move(request);
    c->set_timeout_ms(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
    auto r = co_await client_.call(std::move(m), timeout + std::chrono::seconds(5));
    if (!r) co_return r.error();
    if (r->has_error()) co_return remote(r->error());
    co_return r->vm_call_result().reply();
  }

  awaitable<std::optional<failure>> watch(const std::string& vm,
                                          std::function<void(const pb::Telemetry&)> f) override {
    pb::ControlMessage m;
    m.mutable_telemetry_watch()->set_vm(vm);
    std::optional<failure> fail;
    auto ec = co_await client_.stream(std::move(m), [&](const pb::ControlMessage& msg) {
      if (msg.has_telemetry()) {
        f(msg.telemetry());
        return true;
      }
      if (msg.has_error()) fail = failure{status_for(msg.error().code()), msg.error().message()};
      return false;
    });
    if (!fail && ec) fail = failure{exit_tempfail, "qx-agentd closed the connection"};
    co_return fail;
  }

  int status_of(const qc::error_info& e) override {
    if (e.code == qc::errc::remote_error) return remote_status_;
    return status_for(e.code);
  }

 private:
  qc::error_info remote(const pb::Error& e) {
    remote_status_ = status_for(e.code());
    return {make_error_code(qc::errc::remote_error), e.message()};
  }

  qh::control_client client_;
  std::string path_;
  int remote_status_ = exit_remote;
};

class direct_backend final : public backend {
 public:
  direct_backend(asio::any_io_executor ex, std::string path)
      : client_(qh::agent_client::create(ex, path, options())), path_(std::move(path)) {}

  static qh::client_options options() {
    qh::client_options o;
    o.software_version = "qx-agent";
    return o;
  }

  awaitable<std::optional<failure>> open() override {
    if (auto ec = co_await client_->connect()) {
      co_return failure{exit_unavailable,
                        fmt::format("cannot reach the agent at {}: {}", path_, ec.message())};
    }
    co_return std::nullopt;
  }

  awaitable<result<pb::StatusReport>> status(const std::string&) override {
    pb::StatusReport report;
    auto* s = report.add_vms();
    s->set_vm(path_);
    s->set_socket_path(path_);
    const auto& h = client_->hello();
    s->set_agent_version(h.software_version());
    *s->mutable_os() = h.os();
    s->set_hostname(h.hostname());
    s->set_session_id(client_->session_id());
    s->set_agent_pid(h.agent_pid());
    pb::Envelope ping;
    ping.mutable_ping();
    const auto t0 = std::chrono::steady_clock::now();
    auto r = co_await client_->request(ping, std::chrono::seconds(3));
    s->set_state(r ? pb::VM_STATE_READY : pb::VM_STATE_UNRESPONSIVE);
    s->set_state_since_unix_ms(now_ms());
    if (r)
      s->set_rtt_ms(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    pb::Envelope tr;
    tr.mutable_telemetry_request();
    if (auto t = co_await client_->request(tr, std::chrono::seconds(3)); t && t->has_telemetry()) {
      *s->mutable_last_telemetry() = t->telemetry();
      s->set_last_telemetry_unix_ms(now_ms());
      for (const auto& i : t->telemetry().interfaces()) {
        for (const auto& a : i.addresses())
          s->add_ip_addresses(fmt::format("{}/{}", a.address(), a.prefix_length()));
      }
    }
    co_return report;
  }

  awaitable<result<pb::Envelope>> call(const std::string&, pb::Envelope request,
                                       std::chrono::nanoseconds timeout) override {
    co_return co_await client_->request(std::move(request), timeout);
  }

  awaitable<std::optional<failure>> watch(const std::string&,
                                          std::function<void(const pb::Telemetry&)> f) override {
    for (;;) {
      auto e = co_await client_->next_event();
      if (!e)
        co_return failure{exit_tempfail, "connection to the agent lost: " + client_->end_reason()};
      if (e->has_telemetry()) f(e->telemetry());
    }
  }

  int status_of(const qc::error_info& e) override { return status_for(e.code); }

 private:
  std::shared_ptr<qh::agent_client> client_;
  std::string path_;
};

struct cli_options {
  bool json = false;
  std::string control_socket = qh::default_control_socket;
  std::string connect;
  std::string verb;
  std::string vm;
  bool watch = false;
  bool set_time = false;
  std::string new_hostname;
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
};

awaitable<int> run(const cli_options& o) {
  auto ex = co_await asio::this_coro::executor;
  std::unique_ptr<backend> b;
  if (!o.connect.empty()) {
    b = std::make_unique<direct_backend>(ex, o.connect);
  } else {
    b = std::make_unique<daemon_backend>(ex, o.control_socket);
  }
  if (auto f = co_await b->open()) co_return report(*f);

  if (o.verb == "status") {
    auto r = co_await b->status(o.vm);
    if (!r) co_return report({b->status_of(r.error()), r.error().describe()});
    if (o.json) {
      json vms = json::array();
      for (const auto& s : r->vms()) vms.push_back(to_json(s));
      std::cout << json{{"daemon_version", r->daemon_version()}, {"vms", vms}}.dump(2) << "\n";
    } else {
      print_status_table(*r);
    }
    co_return exit_ok;
  }

  if (o.verb == "telemetry" && o.watch) {
    auto f = co_await b->watch(o.vm, [&](const pb::Telemetry& t) {
      if (o.json) {
        std::cout << to_json(t).dump() << std::endl;
      } else {
        print_telemetry(t);
      }
    });
    co_return f ? report(*f) : exit_ok;
  }

  pb::Envelope request;
  if (o.verb == "ping") {
    request.mutable_ping()->set_nonce(static_cast<std::uint64_t>(now_ms()));
  } else if (o.verb == "info") {
    request.mutable_info_request();
  } else if (o.verb == "telemetry") {
    request.mutable_telemetry_request();
  } else if (o.verb == "hostname") {
    request.mutable_hostname_request()->set_name(o.new_hostname);
  } else if (o.verb == "time") {
    request.mutable_time_request()->set_set(o.set_time);
    if (o.set_time) {
      request.mutable_time_request()->set_set_unix_ns(
          std::chrono::duration_cast<std::chrono::nanoseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count());
    }
  }
  const auto sent_at = std::chrono::system_clock::now();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = co_await b->call(o.vm, std::move(request), o.timeout);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!r) co_return report({b->status_of(r.error()), r.error().describe()});
  if (r->has_error()) {
    co_return report({status_for(r->error().code()),
                      fmt::format("the agent refused: {}", r->error().message())});
  }
  if (o.verb == "ping") {
    if (o.json) {
      std::cout << json{{"vm", o.vm}, {"rtt_ms", ms}}.dump() << "\n";
    } else {
      std::printf("pong from %s in %.2f ms\n", o.vm.c_str(), ms);
    }
  } else if (o.verb == "info") {
    if (o.json) {
      std::cout << to_json(r->info()).dump(2) << "\n";
    } else {
      print_info(r->info());
    }
  } else if (o.verb == "hostname") {
    const auto& h = r->hostname_reply();
    if (o.json) {
      std::cout << json{{"hostname", h.hostname()}, {"persisted", h.persisted()}}.dump() << "\n";
    } else {
      std::printf("hostname of %s is now %s%s\n", o.vm.c_str(), h.hostname().c_str(),
                  h.persisted() ? "" : " (not written to /etc/hostname)");
    }
  } else if (o.verb == "time") {
    // The guest read its clock about half way through the round trip.
    const auto host_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(
            (sent_at + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           std::chrono::duration<double, std::milli>(ms / 2)))
                .time_since_epoch())
            .count();
    const auto& t = r->time_reply();
    const double offset_ms = static_cast<double>(t.unix_ns() - host_ns) / 1e6;
    if (o.json) {
      std::cout << json{{"unix_ns", t.unix_ns()},
                        {"offset_ms", offset_ms},
                        {"was_set", t.was_set()}}
                       .dump()
                << "\n";
    } else {
      const std::time_t secs = static_cast<std::time_t>(t.unix_ns() / 1'000'000'000);
      std::tm tm{};
      ::gmtime_r(&secs, &tm);
      std::printf("guest clock %04d-%02d-%02dT%02d:%02d:%02d.%03lldZ, %+.3f ms from this host%s\n",
                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<long long>((t.unix_ns() / 1'000'000) % 1000), offset_ms,
                  t.was_set() ? " (just set)" : "");
    }
  } else {
    if (o.json) {
      std::cout << to_json(r->telemetry()).dump(2) << "\n";
    } else {
      print_telemetry(r->telemetry());
    }
  }
  co_return exit_ok;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Quantix KVM agent command line: talks to guest agents through qx-agentd, or "
      "straight to one VM socket with --connect.\n"
      "Exit status: 0 success, 1 the agent answered with an error, 2 usage, 69 agent or "
      "daemon unavailable, 75 timeout or connection lost.",
      "qx-agent"};
  app.require_subcommand(1);
  cli_options o;
  app.add_flag("--json", o.json, "machine-readable output");
  auto* control = app.add_option("--control-socket", o.control_socket, "qx-agentd control socket")
                      ->capture_default_str();
  auto* connect = app.add_option(
      "--connect", o.connect, "talk straight to one VM socket (or a unix-listen agent), no daemon");
  control->excludes(connect);
  std::string timeout_text = "10s";

  auto vm_arg = [&](CLI::App* sub) {
    sub->add_option("VM", o.vm, "the VM's name (with --connect, any name or -)")->required();
  };
  auto* status = app.add_subcommand("status", "state of every VM (or one), as a table or JSON");
  status->add_option("VM", o.vm, "only this VM");
  auto* ping = app.add_subcommand("ping", "round trip to a VM's agent");
  vm_arg(ping);
  auto* info =
      app.add_subcommand("info", "the agent's view of its guest: OS, kernel, hostname, agent");
  vm_arg(info);
  auto* telemetry =
      app.add_subcommand("telemetry", "a telemetry sample, or follow the pushed ones");
  vm_arg(telemetry);
  telemetry->add_flag("--watch", o.watch, "follow pushed telemetry until interrupted");
  auto* time = app.add_subcommand("time", "the guest's clock and its offset from this host");
  vm_arg(time);
  time->add_flag("--set", o.set_time, "set the guest's clock to this host's UTC time");
  auto* hostname =
      app.add_subcommand("hostname", "set the guest's hostname (now and in /etc/hostname)");
  vm_arg(hostname);
  hostname->add_option("NAME", o.new_hostname, "the new hostname")->required();
  for (auto* sub : {ping, info, telemetry, time, hostname}) {
    sub->add_option("--timeout", timeout_text, "how long to wait for the answer")
        ->capture_default_str();
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : exit_usage;
  }
  o.verb = app.get_subcommands().front()->get_name();
  auto t = qc::parse_duration(timeout_text);
  if (!t || t->count() <= 0) {
    std::fprintf(stderr, "qx-agent: --timeout: %s\n",
                 t ? "must be more than 0" : t.error().message.c_str());
    return exit_usage;
  }
  o.timeout = *t;
  qc::logger::instance().set_level(qc::log_level::warning);

  asio::io_context io(1);
  int status_code = exit_ok;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code ec, int) {
    if (!ec) io.stop();  // ends a --watch
  });
  asio::co_spawn(io, run(o), [&](std::exception_ptr e, int r) {
    if (e) std::rethrow_exception(e);
    status_code = r;
    io.stop();
  });
  io.run();
  return status_code;
}
