// SPDX-License-Identifier: MIT
// qx-agent: the operator's command line, through qx-agentd or straight to one VM socket.
//
// Exit status: 0 success; 1 the agent answered with an error; 2 usage; 69 agent or daemon
// unavailable; 75 timeout or connection lost; 130 interrupted (the command is cancelled in the
// guest through Asio cancellation; see main).
//
// Over 1,300 lines because each verb still lives in three places (its request, its text output,
// its JSON). Issue 14 turns it into a table of verbs, with protobuf's JSON printer and the
// "daemon or socket" backend moved into qxa::host.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/this_coro.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>

#include "qxa/common/async.hpp"
#include "qxa/common/duration.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/common/text.hpp"
#include "qxa/host/agent_client.hpp"
#include "qxa/host/agent_manager.hpp"
#include "qxa/host/control_client.hpp"

namespace qc = qxa::common;
namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using json = nlohmann::ordered_json;
// A string that is not UTF-8 (a local path given on the command line, say) is written with
// U+FFFD in its place rather than ending the program with an exception.
constexpr auto bad_utf8 = json::error_handler_t::replace;
using asio::awaitable;
using qc::result;
using namespace std::chrono_literals;

namespace {

constexpr int exit_ok = 0;
constexpr int exit_remote = 1;
constexpr int exit_usage = 2;
constexpr int exit_unavailable = 69;
constexpr int exit_tempfail = 75;
constexpr int exit_interrupted = 130;  ///< 128 + SIGINT, as a shell reports it

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
      {"not_ready_since_unix_ms", s.not_ready_since_unix_ms()},
      // What follows (version, OS, hostname, addresses, rtt) is current only while ready;
      // otherwise it is what was seen last_seen_age_ms ago.
      {"current", s.state() == pb::VM_STATE_READY},
      {"last_seen_unix_ms", s.last_seen_unix_ms()},
      {"last_seen_age_ms",
       s.last_seen_unix_ms() > 0 ? json(now_ms() - s.last_seen_unix_ms()) : json(nullptr)},
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
      {"guest_data_trimmed", s.guest_data_trimmed()},
      {"clock_offset_ms", s.clock_offset_ms()},
      {"clock_corrections", s.clock_corrections()},
      {"clock_correction_failures", s.clock_correction_failures()},
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

// Everything a guest sends is shown through this: a hostname or a file name cannot retitle
// the terminal, clear it or move the cursor (control characters come out escaped).
std::string shown(std::string_view text) { return qc::printable(text); }

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
    rows.push_back({shown(s.vm()), qh::to_string(s.state()), human_age(since),
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
  for (const auto& i : t.interfaces()) {
    std::string addrs;
    for (const auto& a : i.addresses()) {
      addrs += fmt::format("{}{}/{}", addrs.empty() ? "" : " ", a.address(), a.prefix_length());
    }
    std::printf("  net     %-10s %s %-4s mtu %u  rx %s tx %s  %s\n", shown(i.name()).c_str(),
                shown(i.mac()).c_str(), i.link_up() ? "up" : "down", i.mtu(),
                human_bytes(i.rx_bytes()).c_str(), human_bytes(i.tx_bytes()).c_str(),
                shown(addrs).c_str());
  }
  std::fflush(stdout);
}

// ---- Talking to the daemon or to one agent ---------------------------------------------------

struct failure {
  int status;
  std::string message;
};

/// An agent's Error for people: the message, and the policy rule when one refused it.
std::string describe(const pb::Error& e) {
  return e.rule().empty() ? e.message() : fmt::format("{} (rule {})", e.message(), e.rule());
}

int report(const failure& f) {
  std::fprintf(stderr, "qx-agent: %s\n", shown(f.message).c_str());
  return f.status;
}

int status_for(std::error_code ec) {
  if (ec == qc::errc::cancelled) return exit_interrupted;
  if (ec == qc::errc::request_timeout || ec == qc::errc::connection_lost ||
      ec == qc::errc::handshake_timeout || ec == qc::errc::write_timeout ||
      ec == qc::errc::not_connected) {
    return exit_tempfail;
  }
  // The agent answered, with something that does not parse or break the protocol.
  if (ec == qc::errc::bad_frame || ec == qc::errc::protocol_error) return exit_remote;
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
                                               qh::call_options options) = 0;
  awaitable<result<pb::Envelope>> call(const std::string& vm, pb::Envelope request,
                                       std::chrono::nanoseconds timeout) {
    qh::call_options o;
    o.timeout = timeout;
    co_return co_await call(vm, std::move(request), std::move(o));
  }
  /// Waits (up to `timeout`) until everything queued for the daemon or agent is written.
  virtual awaitable<void> flush(std::chrono::nanoseconds timeout) = 0;
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
                                       qh::call_options options) override {
    const auto timeout = options.timeout.value_or(std::chrono::seconds(10));
    pb::ControlMessage m;
    auto* c = m.mutable_vm_call();
    c->set_vm(vm);
    *c->mutable_request() = std::move(request);
    c->set_timeout_ms(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
    if (!options.on_progress) {
      auto r = co_await client_.call(std::move(m), timeout + std::chrono::seconds(5));
      if (!r) co_return r.error();
      if (r->has_error()) co_return remote(r->error());
      co_return r->vm_call_result().reply();
    }
    c->set_stream_progress(true);
    std::optional<result<pb::Envelope>> final;
    auto ec = co_await client_.stream(
        std::move(m),
        [&](const pb::ControlMessage& msg) {
          if (msg.more() && msg.has_vm_call_result()) {
            options.on_progress(msg.vm_call_result().reply());
            return true;
          }
          if (msg.has_error()) {
            final.emplace(remote(msg.error()));
          } else {
            final.emplace(msg.vm_call_result().reply());
          }
          return false;
        },
        options.on_sent);
    if (final) co_return std::move(*final);
    co_return qc::error_info{ec ? ec : make_error_code(qc::errc::connection_lost),
                             "qx-agentd closed the connection"};
  }

  awaitable<void> flush(std::chrono::nanoseconds timeout) override {
    co_await client_.flush(timeout);
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
    return {make_error_code(qc::errc::remote_error), describe(e)};
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
    s->set_last_seen_unix_ms(now_ms());  // the handshake just now
    if (r) {
      s->set_rtt_ms(
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    } else {
      s->set_not_ready_since_unix_ms(now_ms());
    }
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
                                       qh::call_options options) override {
    co_return co_await client_->request(std::move(request), std::move(options));
  }

  awaitable<void> flush(std::chrono::nanoseconds timeout) override {
    co_await client_->flush(timeout);
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
  bool timeout_given = false;
  // exec
  std::vector<std::string> argv;
  bool shell = false;
  bool send_stdin = false;
  std::string user;
  std::string cwd;
  std::vector<std::string> env;
  // cp
  std::string source, destination;
  bool create_parents = false;
  // power
  std::uint32_t delay_seconds = 0;
  bool halt = false;
  // freeze
  std::chrono::nanoseconds lease{0};
  std::vector<std::string> mounts;
  bool freeze_status = false;
  // identity
  bool crypted = false;
  std::string key_action, key;
};

// Interruption: the first SIGINT or SIGTERM cancels the command's coroutine (Asio cancellation,
// see main): a request running in the guest is cancelled there too, and the verb ends with
// exit_interrupted. A second signal ends the program at once.

// After an interruption, what the cancellation queued (the cancel for the guest) is written
// before the program ends: the coroutine's cancellation state is reset first, since awaiting
// anything while it is set only throws, then the backend is flushed.
constexpr auto settle_time = std::chrono::seconds(2);

bool is_interruption(const qc::error_info& e) { return e.code == qc::errc::cancelled; }

// ---- exec ------------------------------------------------------------------------------------

/// Writes all of `data`; false (errno set) on a write error.
bool write_out(int fd, const std::string& data) {
  const char* p = data.data();
  std::size_t n = data.size();
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
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

awaitable<int> run_exec(backend& b, const cli_options& o) {
  pb::Envelope request;
  auto* e = request.mutable_exec_request();
  if (o.shell) {
    std::string line;
    for (const auto& a : o.argv) line += (line.empty() ? "" : " ") + a;
    e->set_shell_command(line);
  } else {
    for (const auto& a : o.argv) e->add_argv(a);
  }
  for (const auto& kv : o.env) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      co_return report({exit_usage, fmt::format("--env {}: expected NAME=VALUE", kv)});
    }
    (*e->mutable_env())[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  e->set_working_directory(o.cwd);
  e->set_user(o.user);
  if (o.send_stdin) e->set_stdin(read_all_stdin());
  const auto command_timeout = o.timeout_given ? o.timeout : std::chrono::seconds(60);
  e->set_timeout_ms(static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(command_timeout).count()));
  e->set_stream_output(true);

  qh::call_options options;
  options.timeout = command_timeout + std::chrono::seconds(15);  // from the last output
  options.on_progress = [&](const pb::Envelope& partial) {
    if (!partial.has_exec_output()) return;
    const auto& out = partial.exec_output();
    write_out(out.stream() == pb::ExecOutput::STREAM_STDERR ? STDERR_FILENO : STDOUT_FILENO,
              out.data());
  };
  auto r = co_await b.call(o.vm, std::move(request), std::move(options));
  if (!r && is_interruption(r.error())) {
    std::fprintf(stderr, "qx-agent: interrupted: the command is stopped in the guest\n");
    co_await asio::this_coro::reset_cancellation_state();
    co_await b.flush(settle_time);
    co_return exit_interrupted;
  }
  if (!r) co_return report({b.status_of(r.error()), r.error().describe()});
  if (r->has_error()) {
    co_return report({status_for(r->error().code()),
                      fmt::format("the agent refused: {}", describe(r->error()))});
  }
  const auto& x = r->exec_result();
  if (o.json) {
    json j = {{"pid", x.pid()},
              {"duration_ms", x.duration_ms()},
              {"timed_out", x.timed_out()},
              {"stdout_bytes", x.stdout_bytes()},
              {"stderr_bytes", x.stderr_bytes()},
              {"stdout_truncated", x.stdout_truncated()},
              {"stderr_truncated", x.stderr_truncated()}};
    if (x.has_signal()) {
      j["signal"] = x.signal();
    } else {
      j["exit_code"] = x.exit_code();
    }
    std::cerr << j.dump(-1, ' ', false, bad_utf8) << "\n";
  }
  if (x.stdout_truncated() || x.stderr_truncated()) {
    std::fprintf(stderr,
                 "qx-agent: output truncated by the guest's limit (stdout %llu bytes, stderr "
                 "%llu bytes produced)\n",
                 static_cast<unsigned long long>(x.stdout_bytes()),
                 static_cast<unsigned long long>(x.stderr_bytes()));
  }
  if (x.timed_out()) {
    co_return report(
        {exit_tempfail,
         fmt::format(
             "the command timed out after {} ms and was killed",
             std::chrono::duration_cast<std::chrono::milliseconds>(command_timeout).count())});
  }
  if (x.has_signal()) {
    std::fprintf(stderr, "qx-agent: the command was killed by signal %d (%s)\n", x.signal(),
                 ::strsignal(x.signal()));
    co_return 128 + x.signal();
  }
  co_return x.exit_code();
}

// ---- cp --------------------------------------------------------------------------------------

/// "VM:PATH" -> {VM, PATH}; nothing for a local path.
std::optional<std::pair<std::string, std::string>> remote_path(const std::string& arg) {
  const auto colon = arg.find(':');
  if (colon == std::string::npos || colon == 0 || arg.find('/') < colon) return std::nullopt;
  std::string vm = arg.substr(0, colon);
  if (vm == ".-") vm = "-";  // see main()
  return std::pair{vm, arg.substr(colon + 1)};
}

/// Progress on a terminal, at most five times a second.
class progress_meter {
 public:
  progress_meter(std::string what, std::uint64_t total)
      : what_(std::move(what)), total_(total), on_(::isatty(STDERR_FILENO) == 1) {}
  void set_total(std::uint64_t total) { total_ = total; }
  void update(std::uint64_t done, bool last = false) {
    if (!on_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!last && now - shown_ < std::chrono::milliseconds(200)) return;
    shown_ = now;
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double rate = secs > 0 ? static_cast<double>(done) / secs : 0;
    std::fprintf(stderr, "\r%s  %s / %s  %s/s   ", shown(what_).c_str(), human_bytes(done).c_str(),
                 total_ ? human_bytes(total_).c_str() : "?",
                 human_bytes(static_cast<std::uint64_t>(rate)).c_str());
    if (last) std::fprintf(stderr, "\n");
  }

 private:
  std::string what_;
  std::uint64_t total_;
  bool on_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), shown_{};
};

struct local_file {
  int fd = -1;
  std::string temp;  // removed unless committed
  ~local_file() {
    if (fd >= 0) ::close(fd);
    if (!temp.empty()) ::unlink(temp.c_str());
  }
};

awaitable<int> run_download(backend& b, const cli_options& o, const std::string& vm,
                            const std::string& path, std::string local) {
  struct stat st {};
  if (::stat(local.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    local += "/" + path.substr(path.rfind('/') + 1);
  }
  const auto slash = local.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : (slash == 0 ? "/" : local.substr(0, slash));
  const std::string name = slash == std::string::npos ? local : local.substr(slash + 1);
  // Into a temporary file next to the destination, renamed over it once complete and checked.
  local_file out;
  out.temp = dir + "/." + name + ".qxa-XXXXXX";
  out.fd = ::mkostemp(out.temp.data(), O_CLOEXEC);
  if (out.fd < 0) {
    out.temp.clear();
    co_return report(
        {exit_remote, fmt::format("cannot create a file in {}: {}", dir, std::strerror(errno))});
  }
  pb::Envelope request;
  request.mutable_file_read_request()->set_path(path);
  qc::sha256 digest;
  std::uint64_t received = 0;
  std::optional<std::string> write_error;
  progress_meter meter(path, 0);
  qh::call_options options;
  options.timeout = o.timeout;
  options.on_progress = [&](const pb::Envelope& partial) {
    if (!partial.has_file_chunk() || write_error) return;
    const auto& c = partial.file_chunk();
    if (c.offset() != received) {
      write_error = fmt::format("chunk at offset {} after {} bytes", c.offset(), received);
      return;
    }
    if (!write_out(out.fd, c.data())) {
      write_error = fmt::format("cannot write {}: {}", out.temp, std::strerror(errno));
      return;
    }
    digest.update(c.data());
    if (received == 0) meter.set_total(c.file_size());
    received += c.data().size();
    meter.update(received);
  };
  auto r = co_await b.call(vm, std::move(request), std::move(options));
  if (!r && is_interruption(r.error())) {
    co_await asio::this_coro::reset_cancellation_state();
    co_await b.flush(settle_time);
    co_return exit_interrupted;  // the temporary file goes with `out`
  }
  if (!r) co_return report({b.status_of(r.error()), r.error().describe()});
  if (r->has_error()) {
    co_return report({status_for(r->error().code()),
                      fmt::format("the agent refused: {}", describe(r->error()))});
  }
  if (write_error) co_return report({exit_remote, *write_error});
  const auto& result = r->file_read_result();
  const auto d = digest.finish();
  if (result.size() != received || result.sha256() != qc::sha256::bytes(d)) {
    co_return report(
        {exit_tempfail, fmt::format("{} bytes arrived with SHA-256 {}, the guest sent {} bytes "
                                    "with {}",
                                    received, qc::sha256::hex(d), result.size(),
                                    qc::sha256::hex(result.sha256()))});
  }
  ::fchmod(out.fd, result.mode() & 0777);
  if (::fsync(out.fd) != 0 || ::rename(out.temp.c_str(), local.c_str()) != 0) {
    co_return report(
        {exit_remote, fmt::format("cannot write {}: {}", local, std::strerror(errno))});
  }
  out.temp.clear();
  meter.update(received, true);
  if (o.json) {
    std::cout << json{{"path", local}, {"bytes", received}, {"sha256", qc::sha256::hex(d)}}.dump(
                     -1, ' ', false, bad_utf8)
              << "\n";
  }
  co_return exit_ok;
}

struct upload_window {
  explicit upload_window(const asio::any_io_executor& ex) : changed(ex) {}
  int in_flight = 0;
  std::optional<failure> error;
  qc::async_event changed;
};

awaitable<void> send_chunk(backend& b, std::string vm, pb::Envelope chunk,
                           std::chrono::nanoseconds timeout, std::shared_ptr<upload_window> w) {
  auto r = co_await b.call(vm, std::move(chunk), timeout);
  if (!w->error) {
    if (!r) {
      w->error = failure{b.status_of(r.error()), r.error().describe()};
    } else if (r->has_error()) {
      w->error = failure{status_for(r->error().code()),
                         fmt::format("the agent refused: {}", describe(r->error()))};
    }
  }
  --w->in_flight;
  w->changed.notify_all();
}

awaitable<int> run_upload(backend& b, const cli_options& o, const std::string& local,
                          const std::string& vm, std::string path) {
  const int fd = ::open(local.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) co_return report({exit_usage, fmt::format("{}: {}", local, std::strerror(errno))});
  local_file in;
  in.fd = fd;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    co_return report({exit_usage, local + " is not a regular file"});
  }
  if (path.empty() || path.back() == '/') path += local.substr(local.rfind('/') + 1);
  auto ex = co_await asio::this_coro::executor;
  pb::Envelope open;
  auto* op = open.mutable_file_write_open();
  op->set_path(path);
  op->set_mode(st.st_mode & 0777);
  op->set_create_parents(o.create_parents);
  op->set_expected_size(static_cast<std::uint64_t>(st.st_size));
  auto opened = co_await b.call(vm, open, o.timeout);
  if (!opened) co_return report({b.status_of(opened.error()), opened.error().describe()});
  if (opened->has_error()) {
    co_return report({status_for(opened->error().code()),
                      fmt::format("the agent refused: {}", describe(opened->error()))});
  }
  const auto handle = opened->file_write_reply().handle();
  // Several chunks in flight keep the channel busy; the agent writes them in order.
  constexpr std::size_t chunk_bytes = 512u << 10;
  constexpr int window = 8;
  auto w = std::make_shared<upload_window>(ex);
  asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
  auto interrupted = [&] { return cs.cancelled() != asio::cancellation_type::none; };
  qc::sha256 digest;
  progress_meter meter(path, static_cast<std::uint64_t>(st.st_size));
  std::uint64_t offset = 0;
  std::string buf(chunk_bytes, '\0');
  for (;;) {
    while (w->in_flight >= window && !w->error && !interrupted()) co_await w->changed.wait();
    if (w->error || interrupted()) break;
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      w->error =
          failure{exit_remote, fmt::format("cannot read {}: {}", local, std::strerror(errno))};
      break;
    }
    if (n == 0) break;
    pb::Envelope chunk;
    auto* c = chunk.mutable_file_write_chunk();
    c->set_handle(handle);
    c->set_offset(offset);
    c->set_data(buf.data(), static_cast<std::size_t>(n));
    digest.update(buf.data(), static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
    ++w->in_flight;
    asio::co_spawn(ex, send_chunk(b, vm, std::move(chunk), o.timeout, w),
                   qc::contained("an upload chunk"));
    meter.update(offset);
  }
  // Interrupted, the chunks in flight still end (they run on their own) and the upload is
  // aborted in the guest; only then does the program end.
  const bool stopped = interrupted();
  if (stopped) co_await asio::this_coro::reset_cancellation_state();
  while (w->in_flight > 0) co_await w->changed.wait();
  pb::Envelope close;
  auto* cl = close.mutable_file_write_close();
  cl->set_handle(handle);
  const auto d = digest.finish();
  if (w->error || stopped) {
    cl->set_abort(true);
    (void)co_await b.call(vm, close, o.timeout);
    if (stopped) co_return exit_interrupted;
    co_return report(*w->error);
  }
  cl->set_sha256(qc::sha256::bytes(d));
  auto done = co_await b.call(vm, close, std::max(o.timeout, std::chrono::nanoseconds(60s)));
  if (!done) co_return report({b.status_of(done.error()), done.error().describe()});
  if (done->has_error()) {
    co_return report({status_for(done->error().code()),
                      fmt::format("the agent refused: {}", describe(done->error()))});
  }
  meter.update(offset, true);
  if (o.json) {
    std::cout << json{{"path", path}, {"bytes", offset}, {"sha256", qc::sha256::hex(d)}}.dump(
                     -1, ' ', false, bad_utf8)
              << "\n";
  }
  co_return exit_ok;
}

awaitable<int> run_cp(backend& b, const cli_options& o) {
  const auto from = remote_path(o.source);
  const auto to = remote_path(o.destination);
  if (from.has_value() == to.has_value()) {
    co_return report({exit_usage, "cp: exactly one of SOURCE and DESTINATION is VM:PATH"});
  }
  if (from) co_return co_await run_download(b, o, from->first, from->second, o.destination);
  co_return co_await run_upload(b, o, o.source, to->first, to->second);
}

// ---- the rest of the operations: one request, one answer ---------------------------------

json to_json(const pb::FreezeStatus& f) {
  json mounts = json::array();
  for (const auto& m : f.mounts()) {
    mounts.push_back({{"mount_point", m.mount_point()}, {"ok", m.ok()}, {"error", m.error()}});
  }
  return {{"frozen", f.frozen()},
          {"mounts", mounts},
          {"lease_expires_unix_ms", f.lease_expires_unix_ms()},
          {"hook_errors", std::vector<std::string>(f.hook_errors().begin(), f.hook_errors().end())},
          {"thawed_by", f.thawed_by()}};
}

void print_freeze(const pb::FreezeStatus& f) {
  if (f.frozen()) {
    std::printf("frozen; the lease ends in %.1f s unless renewed\n",
                static_cast<double>(f.lease_expires_unix_ms() - now_ms()) / 1000.0);
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

/// The request for a one-shot verb, or a usage failure.
result<pb::Envelope> simple_request(const cli_options& o) {
  pb::Envelope request;
  const auto& v = o.verb;
  if (v == "ping") {
    request.mutable_ping()->set_nonce(static_cast<std::uint64_t>(now_ms()));
  } else if (v == "info") {
    request.mutable_info_request();
  } else if (v == "telemetry") {
    request.mutable_telemetry_request();
  } else if (v == "hostname") {
    request.mutable_hostname_request()->set_name(o.new_hostname);
  } else if (v == "time") {
    request.mutable_time_request()->set_set(o.set_time);
    if (o.set_time) {
      request.mutable_time_request()->set_set_unix_ns(
          std::chrono::duration_cast<std::chrono::nanoseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count());
    }
  } else if (v == "shutdown" || v == "reboot") {
    auto* p = request.mutable_power_request();
    p->set_action(v == "reboot" ? pb::PowerRequest::ACTION_REBOOT
                  : o.halt      ? pb::PowerRequest::ACTION_HALT
                                : pb::PowerRequest::ACTION_POWEROFF);
    p->set_delay_seconds(o.delay_seconds);
  } else if (v == "freeze" && o.freeze_status) {
    request.mutable_freeze_status_request();
  } else if (v == "freeze") {
    auto* f = request.mutable_freeze_request();
    for (const auto& m : o.mounts) f->add_mount_points(m);
    f->set_lease_ms(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(o.lease).count()));
  } else if (v == "thaw") {
    request.mutable_thaw_request();
  } else if (v == "passwd") {
    std::string password = read_all_stdin();
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
      password.pop_back();
    }
    if (password.empty())
      return qc::error_info{make_error_code(qc::errc::invalid_argument),
                            "passwd: give the password on standard input"};
    auto* p = request.mutable_password_request();
    p->set_user(o.user);
    p->set_password(password);
    p->set_crypted(o.crypted);
    ::explicit_bzero(password.data(), password.size());
  } else if (v == "ssh-key") {
    auto* k = request.mutable_ssh_keys_request();
    k->set_user(o.user);
    if (o.key_action == "list") {
      k->set_action(pb::SshKeysRequest::ACTION_LIST);
    } else {
      k->set_action(o.key_action == "add" ? pb::SshKeysRequest::ACTION_ADD
                                          : pb::SshKeysRequest::ACTION_REMOVE);
      std::string keys = o.key == "-" || o.key.empty() ? read_all_stdin() : o.key;
      std::string_view rest = keys;
      while (!rest.empty()) {
        const auto nl = rest.find('\n');
        auto line = rest.substr(0, nl);
        if (!line.empty()) k->add_keys(std::string(line));
        if (nl == std::string_view::npos) break;
        rest.remove_prefix(nl + 1);
      }
      if (k->keys_size() == 0) {
        return qc::error_info{make_error_code(qc::errc::invalid_argument),
                              "ssh-key: give a KEY, or keys on standard input"};
      }
    }
  }
  return request;
}

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
      std::cout << json{{"daemon_version", r->daemon_version()}, {"vms", vms}}.dump(2, ' ', false,
                                                                                    bad_utf8)
                << "\n";
    } else {
      print_status_table(*r);
    }
    co_return exit_ok;
  }

  if (o.verb == "telemetry" && o.watch) {
    auto f = co_await b->watch(o.vm, [&](const pb::Telemetry& t) {
      if (o.json) {
        std::cout << to_json(t).dump(-1, ' ', false, bad_utf8) << std::endl;
      } else {
        print_telemetry(t);
      }
    });
    co_return f ? report(*f) : exit_ok;
  }

  if (o.verb == "exec") co_return co_await run_exec(*b, o);
  if (o.verb == "cp") co_return co_await run_cp(*b, o);

  auto request = simple_request(o);
  if (!request) co_return report({exit_usage, request.error().message});
  const auto sent_at = std::chrono::system_clock::now();
  const auto t0 = std::chrono::steady_clock::now();
  auto r = co_await b->call(o.vm, std::move(request.value()), o.timeout);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!r) co_return report({b->status_of(r.error()), r.error().describe()});
  if (r->has_error()) {
    co_return report({status_for(r->error().code()),
                      fmt::format("the agent refused: {}", describe(r->error()))});
  }
  if (o.verb == "ping") {
    if (o.json) {
      std::cout << json{{"vm", o.vm}, {"rtt_ms", ms}}.dump(-1, ' ', false, bad_utf8) << "\n";
    } else {
      std::printf("pong from %s in %.2f ms\n", shown(o.vm).c_str(), ms);
    }
  } else if (o.verb == "info") {
    if (o.json) {
      std::cout << to_json(r->info()).dump(2, ' ', false, bad_utf8) << "\n";
    } else {
      print_info(r->info());
    }
  } else if (o.verb == "hostname") {
    const auto& h = r->hostname_reply();
    if (o.json) {
      std::cout << json{{"hostname", h.hostname()}, {"persisted", h.persisted()}}.dump(
                       -1, ' ', false, bad_utf8)
                << "\n";
    } else {
      std::printf("hostname of %s is now %s%s\n", shown(o.vm).c_str(), shown(h.hostname()).c_str(),
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
                       .dump(-1, ' ', false, bad_utf8)
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
  } else if (o.verb == "shutdown" || o.verb == "reboot") {
    const auto& p = r->power_reply();
    if (o.json) {
      std::cout << json{{"method", p.method()}, {"at_unix_ms", p.at_unix_ms()}}.dump(-1, ' ', false,
                                                                                     bad_utf8)
                << "\n";
    } else {
      std::printf("%s: '%s' runs in %u s\n", shown(o.vm).c_str(), shown(p.method()).c_str(),
                  o.delay_seconds);
    }
  } else if (o.verb == "freeze" || o.verb == "thaw") {
    if (o.json) {
      std::cout << to_json(r->freeze_status()).dump(-1, ' ', false, bad_utf8) << "\n";
    } else {
      print_freeze(r->freeze_status());
    }
  } else if (o.verb == "passwd") {
    if (!o.json) std::printf("password of %s set\n", shown(o.user).c_str());
  } else if (o.verb == "ssh-key") {
    const auto& k = r->ssh_keys_reply();
    if (o.json) {
      std::cout << json{{"keys", std::vector<std::string>(k.keys().begin(), k.keys().end())},
                        {"changed", k.changed()}}
                       .dump(-1, ' ', false, bad_utf8)
                << "\n";
    } else {
      if (o.key_action != "list") std::fprintf(stderr, "%u keys changed\n", k.changed());
      for (const auto& key : k.keys()) std::printf("%s\n", shown(key).c_str());
    }
  } else {
    if (o.json) {
      std::cout << to_json(r->telemetry()).dump(2, ' ', false, bad_utf8) << "\n";
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
      "daemon unavailable, 75 timeout or connection lost, 130 interrupted.",
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
  auto* exec = app.add_subcommand(
      "exec", "run a command in the guest, its output live; exits with the command's status");
  vm_arg(exec);
  exec->add_option("ARGV", o.argv, "the program and its arguments (after --)")->required();
  exec->add_flag("--shell", o.shell, "run ARGV joined by spaces as a /bin/sh -c line");
  exec->add_option("--user", o.user, "run as this user, with their groups, HOME and USER");
  exec->add_option("--cwd", o.cwd, "working directory (default: the user's home)");
  // One value per --env (and per --mount): a vector option would otherwise take every word
  // that follows, the VM's name included.
  exec->add_option("--env", o.env, "NAME=VALUE added to the environment (repeatable)")
      ->allow_extra_args(false);
  exec->add_flag("--stdin", o.send_stdin, "send this program's standard input to the command");
  auto* cp = app.add_subcommand(
      "cp", "copy a file to or from a guest: cp VM:PATH LOCAL or cp LOCAL VM:PATH");
  cp->add_option("SOURCE", o.source, "VM:PATH or a local file")->required();
  cp->add_option("DESTINATION", o.destination, "LOCAL or VM:PATH")->required();
  cp->add_flag("--parents", o.create_parents, "create missing directories in the guest");
  auto* shutdown = app.add_subcommand("shutdown", "power the guest off (the reply comes first)");
  vm_arg(shutdown);
  shutdown->add_flag("--halt", o.halt, "halt instead of powering off");
  auto* reboot = app.add_subcommand("reboot", "reboot the guest (the reply comes first)");
  vm_arg(reboot);
  for (auto* sub : {shutdown, reboot}) {
    sub->add_option("--delay", o.delay_seconds, "seconds to wait first")->capture_default_str();
  }
  std::string lease_text = "60s";
  auto* freeze = app.add_subcommand(
      "freeze",
      "freeze the guest's filesystems for a snapshot, as a lease that must be renewed "
      "(run freeze again) or it thaws by itself");
  vm_arg(freeze);
  freeze->add_option("--lease", lease_text, "thaw by itself after this long")
      ->capture_default_str();
  freeze->add_option("--mount", o.mounts, "only this mount point (repeatable)")
      ->allow_extra_args(false);
  freeze->add_flag("--status", o.freeze_status, "only report whether the guest is frozen");
  auto* thaw = app.add_subcommand("thaw", "thaw the guest's filesystems");
  vm_arg(thaw);
  auto* passwd = app.add_subcommand("passwd", "set a user's password, read from standard input");
  vm_arg(passwd);
  passwd->add_option("USER", o.user, "the user")->required();
  passwd->add_flag("--crypted", o.crypted, "the input is already a crypt(3) hash");
  auto* ssh_key = app.add_subcommand("ssh-key", "add, remove or list a user's SSH authorized keys");
  vm_arg(ssh_key);
  ssh_key->add_option("ACTION", o.key_action, "add, remove or list")
      ->required()
      ->check(CLI::IsMember({"add", "remove", "list"}));
  ssh_key->add_option("USER", o.user, "the user")->required();
  ssh_key->add_option("KEY", o.key, "the public key line (- or none: read from standard input)");
  for (auto* sub : {ping, info, telemetry, time, hostname, exec, cp, shutdown, reboot, freeze, thaw,
                    passwd, ssh_key}) {
    if (sub == exec) {
      // Its own default: a command may run longer than an answer takes.
      sub->add_option("--timeout", timeout_text, "kill the command after this long [60s]");
    } else {
      sub->add_option("--timeout", timeout_text, "how long to wait for the answer")
          ->capture_default_str();
    }
  }
  // "-:PATH" (the VM called "-" with --connect) would read as an option: give it a name.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (auto& a : args) {
    if (a.starts_with("-:")) a = "." + a;
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app.parse(args);
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
  if (const auto* given = app.get_subcommands().front()->get_option_no_throw("--timeout")) {
    o.timeout_given = given->count() > 0;
  }
  auto lease = qc::parse_duration(lease_text);
  if (!lease || lease->count() <= 0) {
    std::fprintf(stderr, "qx-agent: --lease: %s\n",
                 lease ? "must be more than 0" : lease.error().message.c_str());
    return exit_usage;
  }
  o.lease = *lease;
  qc::logger::instance().set_level(qc::log_level::warning);

  asio::io_context io(1);
  int status_code = exit_ok;
  // One cancellation mechanism, Asio's: the first signal cancels the command's coroutine, a
  // second one ends the program at once.
  bool interrupted = false;
  asio::cancellation_signal interrupt;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code ec, int) {
    if (ec) return;
    interrupted = true;
    interrupt.emit(asio::cancellation_type::terminal);
    signals.async_wait([&](std::error_code e, int) {
      if (e) return;
      status_code = exit_interrupted;
      io.stop();
    });
  });
  asio::co_spawn(io, run(o),
                 asio::bind_cancellation_slot(interrupt.slot(), [&](std::exception_ptr e, int r) {
                   if (e && !interrupted) std::rethrow_exception(e);  // a bug: main's to report
                   // A verb with no use for an interruption ends where it was waiting (by
                   // operation_aborted); Ctrl-C is how a --watch ends.
                   status_code = e ? (o.watch ? exit_ok : exit_interrupted) : r;
                   io.stop();
                 }));
  io.run();
  return status_code;
}
