// SPDX-License-Identifier: MIT
// Process-level tests of qx-agentd and qx-agent with real agents and hostile fake guests.
#include "support/daemon.hpp"

#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <asio/write.hpp>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "qxa/common/message_stream.hpp"
#include "support/hostile.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/shipped.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::temp_dir;
using json = nlohmann::json;
namespace qc = qxa::common;
namespace pb = quantix::agent::v1;
using asio::awaitable;

namespace {

const std::string daemon_bin = QXA_AGENTD_PATH;
const std::string cli_bin = QXA_CLI_PATH;

qxa::test::command_result run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), cli_bin);
  return qxa::test::run_command(std::move(args), 30s);
}

std::unique_ptr<child_process> start_agent(const temp_dir& dir, const std::string& vm) {
  return qxa::test::start_agent(dir / (vm + ".agent.sock"));
}

// A daemon with quick heartbeats, so that the tests see state changes in well under a second.
std::unique_ptr<child_process> start_daemon(const temp_dir& vms, const temp_dir& run) {
  return qxa::test::start_daemon(vms, run, "250ms", "400ms");
}

json status_json(const temp_dir& run) {
  auto r = run_cli({"--json", "--control-socket", run / "ctl.sock", "status"});
  REQUIRE(r.status == 0);
  return json::parse(r.out);
}

std::map<std::string, std::string> states(const json& status) {
  std::map<std::string, std::string> out;
  for (const auto& vm : status["vms"]) out[vm["vm"]] = vm["state"];
  return out;
}

using qxa::test::process_peak_rss_bytes;

}  // namespace

TEST_CASE("qx-agentd with 20 agents: kill, restart, stop and continue one of them",
          "[integration][host]") {
  temp_dir vms, run;
  std::vector<std::unique_ptr<child_process>> agents;
  for (int i = 0; i < 20; ++i) agents.push_back(start_agent(vms, fmt::format("vm{:02}", i)));
  auto daemon = start_daemon(vms, run);
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::wait_all_ready(ctl, 20, 10s));
  {
    const auto s = states(status_json(run));
    REQUIRE(s.size() == 20);
    for (const auto& [vm, state] : s) CHECK(state == "ready");
  }
  CHECK((std::filesystem::status(run / "ctl.sock").permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write |
         std::filesystem::perms::group_read | std::filesystem::perms::group_write));

  // SIGKILL: the socket closes, the reader ends, the VM leaves ready at once.
  const auto vm07_session = qxa::test::ready_session(ctl, "vm07");
  REQUIRE_FALSE(vm07_session.empty());
  const auto t0 = std::chrono::steady_clock::now();
  agents[7]->signal(SIGKILL);
  REQUIRE(qxa::test::wait_vm_state(ctl, "vm07", "connecting", 1s));
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  auto ping = run_cli({"--control-socket", run / "ctl.sock", "ping", "vm07"});
  CHECK(ping.status == 69);  // unavailable, as the README says; 75 is for a call cut short
  CHECK(ping.took < 1s);
  CHECK_THAT(ping.err, Catch::Contains("vm vm07 is connecting"));
  {
    const auto s = states(status_json(run));
    for (const auto& [vm, state] : s) {
      if (vm != "vm07") CHECK(state == "ready");
    }
  }
  auto other = run_cli({"--control-socket", run / "ctl.sock", "ping", "vm08"});
  CHECK(other.status == 0);

  // Restarted, it is ready again within 2 s.
  const auto t1 = std::chrono::steady_clock::now();
  agents[7] = start_agent(vms, "vm07");
  REQUIRE_FALSE(qxa::test::wait_new_session(ctl, "vm07", vm07_session, 2s).empty());
  CHECK(std::chrono::steady_clock::now() - t1 < 2s);
  CHECK(run_cli({"--control-socket", run / "ctl.sock", "ping", "vm07"}).status == 0);

  // SIGSTOP: the socket stays open, only the heartbeat notices.
  agents[3]->signal(SIGSTOP);
  REQUIRE(qxa::test::wait_vm_state(ctl, "vm03", "unresponsive", 3s));
  CHECK(states(status_json(run))["vm03"] == "unresponsive");
  agents[3]->signal(SIGCONT);
  REQUIRE(qxa::test::wait_vm_state(ctl, "vm03", "ready", 3s));
  CHECK(daemon->count_in_log("vm vm03: ready -> unresponsive") == 1);  // logged once

  // A VM whose socket disappears is dropped.
  agents[5]->signal(SIGTERM);
  REQUIRE(daemon->wait_for_log("vm vm05: socket removed; dropping the VM", 3s));
  CHECK(states(status_json(run)).count("vm05") == 0);
  auto gone = run_cli({"--control-socket", run / "ctl.sock", "ping", "vm05"});
  CHECK(gone.status == 69);

  daemon->signal(SIGTERM);
  CHECK(daemon->wait_exit(5s) == 0);
  CHECK_FALSE(std::filesystem::exists(run / "ctl.sock"));
}

TEST_CASE(
    "what status says of a VM is true: a stale socket, how long it has been down, what was "
    "last seen, counters that move",
    "[integration][host]") {
  using qxa::test::eventually;
  temp_dir vms;
  temp_dir run;
  // A socket file nobody listens on, as a QEMU that exited leaves it.
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    REQUIRE(fd >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    const std::string stale = vms / "dead.agent.sock";
    std::strncpy(a.sun_path, stale.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::close(fd);
  }
  auto agent = start_agent(vms, "live");
  auto daemon = start_daemon(vms, run);
  auto vm = [&](const std::string& name) {
    const auto status = status_json(run);
    for (const auto& v : status["vms"]) {
      if (v["vm"] == name) return v;
    }
    return json{};
  };
  REQUIRE(eventually([&] { return vm("live")["state"] == "ready"; }, 10s));
  REQUIRE(eventually([&] { return vm("dead")["state"] == "stale-socket"; }, 10s));
  CHECK_THAT(vm("dead")["last_error"].get<std::string>(), Catch::Contains("refused"));
  CHECK(vm("dead")["last_seen_unix_ms"] == 0);

  // Retries go on at the backoff (50 ms doubling to 500 ms), each counted, logged once.
  const auto dead_since = vm("dead")["not_ready_since_unix_ms"].get<std::int64_t>();
  CHECK(dead_since > 0);
  REQUIRE(eventually([&] { return vm("dead")["reconnects"].get<int>() >= 4; }, 10s));
  CHECK(vm("dead")["not_ready_since_unix_ms"] == dead_since);
  CHECK(daemon->count_in_log("vm dead: connecting -> stale-socket") == 1);
  CHECK(daemon->count_in_log("vm dead: stale-socket ->") == 0);

  // A fresh connection has answered no stranger's reply, and is one session.
  const auto live = vm("live");
  CHECK(live["unknown_replies"] == 0);
  CHECK(live["reconnects"] == 0);
  CHECK(live["current"] == true);
  CHECK(live["not_ready_since_unix_ms"] == 0);
  auto info = run_cli({"--json", "--control-socket", run / "ctl.sock", "info", "live"});
  REQUIRE(info.status == 0);
  const auto i = json::parse(info.out);
  CHECK(i["sessions"] == 1);
  std::set<std::string> unique;
  for (const auto& c : i["capabilities"]) CHECK(unique.insert(c.get<std::string>()).second);

  // Killed, its socket stays behind: stale, with what was seen of it marked as such.
  const auto version = live["agent_version"].get<std::string>();
  agent->signal(SIGKILL);
  (void)agent->wait_exit(5s);
  REQUIRE(eventually([&] { return vm("live")["state"] == "stale-socket"; }, 10s));
  auto down = vm("live");
  CHECK(down["current"] == false);
  CHECK(down["agent_version"] == version);  // last seen, not current
  CHECK(down["last_seen_unix_ms"].get<std::int64_t>() > 0);
  CHECK(down["rtt_ms"] == 0);
  const auto down_since = down["not_ready_since_unix_ms"].get<std::int64_t>();
  CHECK(down_since > 0);
  const auto attempts = down["reconnects"].get<int>();
  REQUIRE(eventually([&] { return vm("live")["reconnects"].get<int>() >= attempts + 2; }, 10s));
  CHECK(vm("live")["not_ready_since_unix_ms"] == down_since);
  auto table = run_cli({"--control-socket", run / "ctl.sock", "status"});
  CHECK_THAT(table.out, Catch::Contains("SEEN") && Catch::Contains(" ago"));

  // Back: ready, current, the time down cleared.
  agent = start_agent(vms, "live");
  REQUIRE(eventually([&] { return vm("live")["state"] == "ready"; }, 10s));
  CHECK(vm("live")["not_ready_since_unix_ms"] == 0);
  CHECK(vm("live")["current"] == true);
}

TEST_CASE("qx-agent talks to one agent with --connect and no daemon", "[integration][host]") {
  temp_dir vms;
  auto agent = start_agent(vms, "solo");
  const auto sock = vms / "solo.agent.sock";
  auto ping = run_cli({"--connect", sock, "ping", "-"});
  CHECK(ping.status == 0);
  CHECK_THAT(ping.out, Catch::StartsWith("pong from - in"));
  auto info = run_cli({"--json", "--connect", sock, "info", "-"});
  REQUIRE(info.status == 0);
  const auto j = json::parse(info.out);
  CHECK(j["agent_pid"] == agent->pid());
  CHECK_FALSE(j["os"]["kernel_release"].get<std::string>().empty());
  auto telemetry = run_cli({"--json", "--connect", sock, "telemetry", "-"});
  REQUIRE(telemetry.status == 0);
  CHECK(json::parse(telemetry.out)["memory"]["total_bytes"].get<std::uint64_t>() > 0);
  auto status = run_cli({"--connect", sock, "status"});
  CHECK(status.status == 0);
  CHECK_THAT(status.out, Catch::Contains("ready"));
  // The guest clock is this machine's clock here: the offset is within the round trip.
  auto time = run_cli({"--json", "--connect", sock, "time", "-"});
  REQUIRE(time.status == 0);
  const auto t = json::parse(time.out);
  CHECK(std::abs(t["offset_ms"].get<double>()) < 1000);
  CHECK(t["was_set"] == false);
  auto human = run_cli({"--connect", sock, "time", "-"});
  CHECK_THAT(human.out, Catch::StartsWith("guest clock ") && Catch::Contains("ms from this host"));
}

TEST_CASE("qx-agent says clearly when the daemon or agent is not there, and checks its usage",
          "[integration][host]") {
  temp_dir run;
  auto no_daemon = run_cli({"--control-socket", run / "missing.sock", "status"});
  CHECK(no_daemon.status == 69);
  CHECK_THAT(no_daemon.err, Catch::Contains("cannot reach qx-agentd") &&
                                Catch::Contains("is the daemon running?"));
  auto no_agent = run_cli({"--connect", run / "missing.agent.sock", "ping", "-"});
  CHECK(no_agent.status == 69);
  CHECK_THAT(no_agent.err, Catch::Contains("cannot reach the agent"));
  CHECK(run_cli({"ping"}).status == 2);        // missing VM
  CHECK(run_cli({"frobnicate"}).status == 2);  // unknown verb
  CHECK(run_cli({"ping", "vm", "--timeout", "soon"}).status == 2);
  // 5,000 digits: a usage error with a message, not an uncaught exception.
  auto huge = run_cli({"ping", "vm", "--timeout", std::string(5000, '9') + "s"});
  CHECK(huge.status == 2);
  CHECK_THAT(huge.err, Catch::Contains("out of range"));
  auto help = run_cli({"telemetry", "--help"});
  CHECK(help.status == 0);
  CHECK_THAT(help.out, Catch::Contains("--watch"));
  // exec's --timeout has its own default, and its help says which.
  auto exec_help = run_cli({"exec", "--help"});
  CHECK(exec_help.status == 0);
  CHECK_THAT(exec_help.out, Catch::Contains("kill the command after this long [60s]"));
  CHECK_THAT(exec_help.out, !Catch::Contains("=10s"));
}

TEST_CASE("qx-agentd refuses unusable directories and configs with a clear error",
          "[integration][host]") {
  temp_dir run;
  child_process no_dir({daemon_bin, "--config", "/dev/null", "--socket-dir", run / "nope",
                        "--control-socket", run / "ctl.sock"});
  CHECK(no_dir.wait_exit(10s) == 1);
  no_dir.drain();
  CHECK_THAT(no_dir.log(), Catch::Contains("socket directory") && Catch::Contains("nope"));
  const auto bad = run.write("d.toml", "[heartbeat]\ninterval = \"fast\"\n");
  child_process bad_config({daemon_bin, "--config", bad});
  CHECK(bad_config.wait_exit(10s) == 2);
  bad_config.drain();
  CHECK_THAT(bad_config.log(),
             Catch::Contains("d.toml:2: 'heartbeat.interval' is not a valid duration"));
  const auto huge =
      run.write("h.toml", "[limits]\nrequest_timeout = \"" + std::string(5000, '9') + "s\"\n");
  child_process huge_config({daemon_bin, "--config", huge});
  CHECK(huge_config.wait_exit(10s) == 2);
  huge_config.drain();
  CHECK_THAT(huge_config.log(), Catch::Contains("out of range"));
  // The file the package installs starts the daemon (every key in it commented out).
  child_process shipped({daemon_bin, "--config", qxa::test::shipped_daemon_config, "--socket-dir",
                         run.path(), "--control-socket", run / "shipped.sock"});
  CHECK(shipped.wait_for_log("ready: vm sockets in", 10s));
  child_process no_run_dir({daemon_bin, "--config", "/dev/null", "--socket-dir", run.path(),
                            "--control-socket", run / "missing/dir/ctl.sock"});
  CHECK(no_run_dir.wait_exit(10s) == 1);
  no_run_dir.drain();
  CHECK_THAT(no_run_dir.log(), Catch::Contains("cannot listen on control socket"));
}

namespace {

using unix_socket = asio::local::stream_protocol::socket;

std::vector<std::uint8_t> frame_of(const pb::Envelope& e) { return qc::encode_envelope(e).value(); }

// Hostile guests, each serving every connection the daemon makes to its socket.
struct hostile_guests {
  using behaviour = awaitable<void> (*)(unix_socket);

  /// The four of the first round: noise, an oversized header, a telemetry flood, a trickle.
  explicit hostile_guests(const temp_dir& dir)
      : hostile_guests(dir, {{"flood", &hostile_guests::flood},
                             {"huge", &hostile_guests::huge},
                             {"fast", &hostile_guests::fast},
                             {"trickle", &hostile_guests::trickle}}) {}
  hostile_guests(const temp_dir& dir, std::vector<std::pair<std::string, behaviour>> guests) {
    for (const auto& [vm, b] : guests) add(dir / (vm + ".agent.sock"), b);
    thread = std::thread([this] { io.run(); });
  }
  ~hostile_guests() {
    io.stop();
    thread.join();
  }

  void add(const std::string& path, behaviour b) {
    acceptors.push_back(std::make_unique<asio::local::stream_protocol::acceptor>(
        io, asio::local::stream_protocol::endpoint(path)));
    auto* a = acceptors.back().get();
    asio::co_spawn(
        io,
        [a, b]() -> awaitable<void> {
          for (;;) {
            auto [ec, s] =
                co_await a->async_accept(asio::experimental::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            asio::co_spawn(a->get_executor(), b(std::move(s)), asio::detached);
          }
        },
        asio::detached);
  }

  // Random bytes, as fast as the daemon takes them.
  static awaitable<void> flood(unix_socket s) {
    std::mt19937 rng(1);
    std::vector<std::uint8_t> noise(64u << 10);
    for (auto& b : noise) b = static_cast<std::uint8_t>(rng());
    for (;;) {
      auto [ec, n] = co_await asio::async_write(s, asio::buffer(noise),
                                                asio::experimental::as_tuple(asio::use_awaitable));
      if (ec) co_return;
    }
  }

  // A valid header that announces a 4 GiB frame, then silence.
  static awaitable<void> huge(unix_socket s) {
    std::vector<std::uint8_t> header(qc::frame_header_size);
    qc::encode_frame_header({}, std::span<std::uint8_t, qc::frame_header_size>(header));
    header[8] = header[9] = header[10] = header[11] = 0xFF;
    const std::uint32_t crc = qc::crc32({header.data(), 16});
    std::memcpy(header.data() + 16, &crc, 4);
    auto [ec, n] = co_await asio::async_write(s, asio::buffer(header),
                                              asio::experimental::as_tuple(asio::use_awaitable));
    std::vector<std::uint8_t> sink(4096);
    while (!ec)
      std::tie(ec, n) = co_await s.async_read_some(
          asio::buffer(sink), asio::experimental::as_tuple(asio::use_awaitable));
  }

  // Answers Hello, then sends valid telemetry frames as fast as it can.
  static awaitable<void> fast(unix_socket s) {
    auto stream = qc::message_stream<unix_socket>::create(std::move(s));
    stream->start();
    auto hello = co_await stream->receive();
    if (!hello) co_return;
    pb::Envelope ack;
    ack.set_reply_to(hello->request_id());
    ack.mutable_hello_ack()->set_session_id(hello->session_id());
    (void)co_await stream->send(ack);
    pb::Envelope t;
    t.mutable_telemetry()->set_hostname(std::string(2000, 'h'));
    for (std::uint64_t seq = 1; stream->is_open(); ++seq) {
      t.mutable_telemetry()->set_sequence(seq);
      if (co_await stream->send(t)) co_return;
    }
  }

  // Answers Hello as a real agent would; the stream then belongs to the caller.
  static awaitable<std::shared_ptr<qc::message_stream<unix_socket>>> handshake(
      unix_socket s, const std::string& hostname = "guest") {
    auto stream = qc::message_stream<unix_socket>::create(std::move(s));
    stream->start();
    auto hello = co_await stream->receive();
    if (!hello) co_return nullptr;
    pb::Envelope ack;
    ack.set_reply_to(hello->request_id());
    ack.set_session_id(hello->session_id());
    auto* a = ack.mutable_hello_ack();
    a->set_session_id(hello->session_id());
    a->set_hostname(hostname);
    a->mutable_os()->set_pretty_name(hostname);
    a->set_software_version(hostname);
    if (co_await stream->send(ack)) co_return nullptr;
    co_return stream;
  }

  // Handshakes, then sends 3,000 overlapping headers that each announce an 8 MB payload with a
  // wrong checksum, and the 8 MB they point into: every connection the daemon makes.
  static awaitable<void> liar(unix_socket s) {
    auto stream = co_await handshake(std::move(s));
    if (!stream) co_return;
    static const auto lies = qxa::test::lying_headers(3000, 8'000'000);
    auto [ec, n] = co_await asio::async_write(stream->next_layer(), asio::buffer(lies),
                                              asio::experimental::as_tuple(asio::use_awaitable));
    while (!ec && stream->is_open()) (void)co_await stream->receive();  // until closed
  }

  // Escape codes in every name, and 150,000 addresses and 1,000 disks in its telemetry, pushed
  // after the handshake and sent as the answer to every telemetry request.
  static awaitable<void> wide(unix_socket s) {
    auto stream =
        co_await handshake(std::move(s), std::string("evil") + qxa::test::terminal_attack);
    if (!stream) co_return;
    pb::Envelope event;
    *event.mutable_telemetry() = qxa::test::oversized_telemetry();
    (void)stream->post(event);
    for (;;) {
      auto r = co_await stream->receive();
      if (!r) co_return;
      pb::Envelope reply;
      reply.set_reply_to(r->request_id());
      reply.set_session_id(r->session_id());
      if (r->has_ping()) {
        reply.mutable_pong();
      } else if (r->has_telemetry_request()) {
        *reply.mutable_telemetry() = event.telemetry();
      } else {
        reply.mutable_error()->set_message(std::string("no") + qxa::test::terminal_attack);
      }
      (void)stream->post(reply);
    }
  }

  // One byte a second of a HelloAck.
  static awaitable<void> trickle(unix_socket s) {
    pb::Envelope ack;
    ack.set_reply_to(1);
    ack.mutable_hello_ack()->set_hostname("slow");
    const auto bytes = frame_of(ack);
    asio::steady_timer t(s.get_executor());
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      auto [ec, n] = co_await asio::async_write(s, asio::buffer(&bytes[i], 1),
                                                asio::experimental::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      t.expires_after(1s);
      co_await t.async_wait(asio::use_awaitable);
    }
  }

  asio::io_context io;
  std::vector<std::unique_ptr<asio::local::stream_protocol::acceptor>> acceptors;
  std::thread thread;
};

}  // namespace

TEST_CASE("hostile guests cannot make qx-agentd grow or stop serving the other VMs",
          "[integration][host]") {
  temp_dir vms, run;
  auto good = start_agent(vms, "good");
  hostile_guests hostile(vms);
  auto daemon = start_daemon(vms, run);
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "good", "ready", 5s));
  // For five seconds, the good VM keeps answering while the others misbehave.
  int pings = 0, ok = 0;
  double worst_ms = 0;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    auto r = run_cli({"--control-socket", run / "ctl.sock", "ping", "good", "--timeout", "2s"});
    ++pings;
    if (r.status == 0) ++ok;
    worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(r.took).count());
  }
  const auto peak = process_peak_rss_bytes(daemon->pid());
  const auto status = status_json(run);
  const auto s = states(status);
  WARN(
      fmt::format("under four hostile guests: {}/{} pings to the good VM answered, slowest "
                  "{:.1f} ms; qx-agentd peak RSS {:.1f} MiB",
                  ok, pings, worst_ms, static_cast<double>(peak) / (1 << 20)));
  CHECK(ok == pings);
  CHECK(pings >= 5);
#ifndef QXA_SANITIZED  // ASan's shadow memory and quarantine
  CHECK(peak < (64u << 20));
#endif
  CHECK(s.at("good") == "ready");
  CHECK(s.at("flood") != "ready");
  CHECK(s.at("huge") != "ready");
  CHECK(s.at("trickle") != "ready");
  CHECK(daemon->wait_for_log("huge.agent.sock: reader ended after 0 frames: oversized frame", 5s));
  CHECK(daemon->wait_for_log("flood.agent.sock: reader ended after 0 frames: damaged stream", 5s));
  CHECK(daemon->running());
}

namespace {

// Receives systemd notifications the way the service manager does: datagrams on a socket.
struct notify_listener {
  explicit notify_listener(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~notify_listener() { ::close(fd_); }

  // Waits for a datagram containing `needle`; false when `timeout` passes first.
  bool wait_for(const std::string& needle, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      char buf[512];
      const auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0 && std::string(buf, static_cast<std::size_t>(n)).find(needle) != std::string::npos)
        return true;
    }
  }

  std::string path_;
  int fd_ = -1;
};

}  // namespace

TEST_CASE("qx-agentd tells systemd it is ready, alive and stopping, and reloads on SIGHUP",
          "[integration][host]") {
  temp_dir vms, run;
  notify_listener notify(run / "notify.sock");
  const auto config = run.write("qx-agentd.toml", "[heartbeat]\ninterval = \"1s\"\n");
  child_process daemon({daemon_bin, "--config", config, "--socket-dir", vms.path(),
                        "--control-socket", run / "ctl.sock"},
                       {"NOTIFY_SOCKET=" + (run / "notify.sock"), "WATCHDOG_USEC=200000"});
  REQUIRE(notify.wait_for("READY=1", 5000ms));
  REQUIRE(notify.wait_for("WATCHDOG=1", 1000ms));  // every 100 ms: half of WATCHDOG_USEC
  REQUIRE(notify.wait_for("WATCHDOG=1", 1000ms));

  run.write("qx-agentd.toml", "log_level = \"debug\"\n[heartbeat]\ninterval = \"2s\"\n");
  daemon.signal(SIGHUP);
  REQUIRE(daemon.wait_for_log("configuration reloaded", 5s));
  run.write("qx-agentd.toml", "[heartbeat]\nintervall = \"2s\"\n");
  daemon.signal(SIGHUP);
  REQUIRE(daemon.wait_for_log("reload refused, keeping the running configuration", 5s));
  CHECK(daemon.count_in_log("unknown key 'heartbeat.intervall'") == 1);
  CHECK(daemon.running());

  daemon.signal(SIGTERM);
  CHECK(notify.wait_for("STOPPING=1", 5000ms));
  CHECK(daemon.wait_exit(5s) == 0);
}

namespace {

// One HTTP/1.1 exchange with the daemon's metrics endpoint: the status line and the body.
std::pair<std::string, std::string> http(std::uint16_t port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::write(s, asio::buffer(request));
  std::string response;
  std::error_code ec;
  char buf[65536];
  for (;;) {
    const auto n = s.read_some(asio::buffer(buf), ec);
    if (ec) break;
    response.append(buf, n);
  }
  const auto head_end = response.find("\r\n\r\n");
  return {response.substr(0, response.find("\r\n")),
          head_end == std::string::npos ? "" : response.substr(head_end + 4)};
}

}  // namespace

TEST_CASE("qx-agentd serves Prometheus metrics that promtool accepts, with each VM's state",
          "[integration][host]") {
  temp_dir vms, run;
  auto a = start_agent(vms, "alpha");
  auto b = start_agent(vms, "beta");
  const auto config = run.write("qx-agentd.toml",
                                "metrics_listen = \"127.0.0.1:0\"\n[heartbeat]\ninterval = "
                                "\"100ms\"\ntimeout = \"400ms\"\n");
  child_process daemon({QXA_AGENTD_PATH, "--config", config, "--socket-dir", vms.path(),
                        "--control-socket", run / "ctl.sock"});
  REQUIRE(daemon.wait_for_log("metrics on http://127.0.0.1:", 10s));
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "alpha", "ready", 10s));
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "beta", "ready", 10s));
  const auto log = daemon.log();
  const auto at =
      log.find("metrics on http://127.0.0.1:") + std::strlen("metrics on http://127.0.0.1:");
  const auto port = static_cast<std::uint16_t>(std::stoi(log.substr(at)));
  REQUIRE(run_cli({"--control-socket", run / "ctl.sock", "ping", "alpha"}).status == 0);
  // Scrape until the first heartbeats and telemetry are in (polling, with a deadline).
  auto [status, body] = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  const auto settled = [&] {
    return body.find("qxa_heartbeat_rtt_seconds_count{vm=\"beta\"} 0") == std::string::npos &&
           body.find("qxa_guest_memory_total_bytes{vm=\"alpha\"}") != std::string::npos &&
           body.find("qxa_guest_memory_total_bytes{vm=\"beta\"}") != std::string::npos;
  };
  qxa::test::eventually(
      [&] {
        std::tie(status, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        return settled();
      },
      5s, 50ms);
  CHECK(status == "HTTP/1.1 200 OK");
  CHECK_THAT(body, Catch::Contains("qxa_vm_state{vm=\"alpha\",state=\"ready\"} 1"));
  CHECK_THAT(body, Catch::Contains("qxa_vm_state{vm=\"beta\",state=\"ready\"} 1"));
  CHECK_THAT(body, Catch::Contains("qxa_vm_state{vm=\"beta\",state=\"unresponsive\"} 0"));
  CHECK_THAT(body, Catch::Contains(
                       "qxa_requests_total{vm=\"alpha\",operation=\"ping\",outcome=\"ok\"} 1"));
  CHECK_THAT(body, Catch::Contains("qxa_heartbeat_rtt_seconds_bucket{vm=\"beta\",le=\"+Inf\"}"));
  CHECK_THAT(body, Catch::Contains("qxa_guest_memory_total_bytes{vm=\"alpha\"}"));
  CHECK(body.find("qxa_heartbeat_rtt_seconds_count{vm=\"beta\"} 0") == std::string::npos);
  const auto file = run.write("metrics.txt", body);
  auto lint = qxa::test::run_command({"/bin/sh", "-c", "promtool check metrics < " + file}, 30s);
  INFO(lint.out << lint.err);
  CHECK(lint.status == 0);
  CHECK(lint.out.empty());  // no lint findings either

  CHECK(http(port, "GET /other HTTP/1.1\r\n\r\n").first == "HTTP/1.1 404 Not Found");
  CHECK(http(port, "POST /metrics HTTP/1.1\r\n\r\n").first == "HTTP/1.1 405 Method Not Allowed");
  CHECK(http(port, "GET /metrics HTTP/1.1\r\nX: " + std::string(10000, 'a') + "\r\n\r\n").first ==
        "HTTP/1.1 431 Request Header Fields Too Large");
  CHECK(http(port, "nonsense\r\n\r\n").first == "HTTP/1.1 400 Bad Request");
  // A client that connects and sends nothing does not hold the server up: scrapes beside it
  // are answered, and the server closes it at its 5 s request deadline.
  asio::io_context io;
  asio::ip::tcp::socket idle(io);
  idle.connect({asio::ip::make_address("127.0.0.1"), port});
  for (int i = 0; i < 3; ++i) {
    CHECK(http(port, "GET /metrics HTTP/1.1\r\n\r\n").first == "HTTP/1.1 200 OK");
  }
  pollfd p{idle.native_handle(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 15000) == 1);  // closed by the server: readable, end of file
  char byte = 0;
  std::error_code ec;
  CHECK(idle.read_some(asio::buffer(&byte, 1), ec) == 0);
  CHECK(ec == asio::error::eof);
}

TEST_CASE("a real Prometheus server scrapes qx-agentd and sees each VM's state",
          "[integration][host]") {
  temp_dir vms, run;
  auto a = start_agent(vms, "alpha");
  auto b = start_agent(vms, "beta");
  const auto config = run.write("qx-agentd.toml", "metrics_listen = \"127.0.0.1:0\"\n");
  child_process daemon({QXA_AGENTD_PATH, "--config", config, "--socket-dir", vms.path(),
                        "--control-socket", run / "ctl.sock"});
  REQUIRE(daemon.wait_for_log("metrics on http://127.0.0.1:", 10s));
  const auto log = daemon.log();
  const auto at =
      log.find("metrics on http://127.0.0.1:") + std::strlen("metrics on http://127.0.0.1:");
  const int metrics_port = std::stoi(log.substr(at));
  // A free port for Prometheus's own web interface.
  asio::io_context io;
  asio::ip::tcp::acceptor probe(io, {asio::ip::make_address("127.0.0.1"), 0});
  const auto web_port = probe.local_endpoint().port();
  probe.close();
  const auto yml =
      run.write("prometheus.yml",
                fmt::format("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: qxa\n"
                            "    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                            metrics_port));
  child_process prometheus({"/usr/bin/prometheus", "--config.file=" + yml,
                            "--storage.tsdb.path=" + (run / "tsdb"),
                            fmt::format("--web.listen-address=127.0.0.1:{}", web_port)});
  REQUIRE(prometheus.wait_for_log("Server is ready to receive web requests", 60s));
  // Ask Prometheus until its scrapes show both VMs ready (with a deadline).
  std::set<std::string> ready;
  qxa::test::eventually(
      [&] {
        auto [status, body] = http(web_port,
                                   "GET /api/v1/query?query=qxa_vm_state%3D%3D1 HTTP/1.1\r\nHost: "
                                   "x\r\nConnection: close\r\n\r\n");
        if (status == "HTTP/1.1 200 OK") {
          const auto j = json::parse(body, nullptr, false);
          if (!j.is_discarded() && j["status"] == "success") {
            const auto& results = j["data"]["result"];
            for (const auto& r : results) {
              if (r["metric"]["state"] == "ready") {
                ready.insert(r["metric"]["vm"].get<std::string>());
              }
            }
          }
        }
        return ready.size() >= 2;
      },
      30s, 100ms);
  CHECK(ready == std::set<std::string>{"alpha", "beta"});
  prometheus.signal(SIGTERM);
  prometheus.wait_exit(20s);
}

TEST_CASE(
    "a guest's lying headers, oversized telemetry and escape codes: the other VMs and "
    "the operator's view stay intact",
    "[integration][host]") {
  temp_dir vms, run;
  auto good = start_agent(vms, "good");
  hostile_guests hostile(vms, {{"liar", &hostile_guests::liar}, {"wide", &hostile_guests::wide}});
  const auto config = run.write("qx-agentd.toml",
                                "metrics_listen = \"127.0.0.1:0\"\n[heartbeat]\ninterval = "
                                "\"250ms\"\ntimeout = \"400ms\"\n[reconnect]\ninitial = "
                                "\"50ms\"\nmax = \"500ms\"\n");
  child_process daemon({QXA_AGENTD_PATH, "--config", config, "--socket-dir", vms.path(),
                        "--control-socket", run / "ctl.sock"});
  REQUIRE(daemon.wait_for_log("metrics on http://127.0.0.1:", 10s));
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "good", "ready", 10s));
  REQUIRE(qxa::test::wait_vm_state(run / "ctl.sock", "wide", "ready", 10s));
  const std::string ctl = run / "ctl.sock";

  // For five seconds the liar keeps reconnecting and lying: every ping to the good VM is
  // answered, each well within its 2 s.
  int pings = 0, ok = 0;
  double worst_ms = 0;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < until) {
    auto r = run_cli({"--control-socket", ctl, "ping", "good", "--timeout", "2s"});
    ++pings;
    if (r.status == 0) ++ok;
    worst_ms = std::max(worst_ms, std::chrono::duration<double, std::milli>(r.took).count());
  }
  WARN(fmt::format("beside a lying guest: {}/{} pings to the good VM answered, slowest {:.1f} ms",
                   ok, pings, worst_ms));
  CHECK(ok == pings);
  CHECK(worst_ms < 2000);  // within the call's own deadline: the daemon never stalled that long
  CHECK(daemon.wait_for_log("liar.agent.sock: reader ended after 1 frames: damaged stream", 10s));

  // The status report still comes, with the wide guest's share cut to the limits, and nothing
  // a guest sent reaches the terminal raw.
  auto table = run_cli({"--control-socket", ctl, "status"});
  CHECK(table.status == 0);
  CHECK(table.out.find('\x1b') == std::string::npos);
  CHECK_THAT(table.out, Catch::Contains("evil\\e]0;owned\\x07"));
  auto j = run_cli({"--json", "--control-socket", ctl, "status"});
  REQUIRE(j.status == 0);
  const auto report = json::parse(j.out);
  bool saw_wide = false;
  for (const auto& vm : report["vms"]) {
    if (vm["vm"] != "wide") continue;
    saw_wide = true;
    CHECK(vm["ip_addresses"].size() <= 64);
    CHECK(vm["last_telemetry"]["disks"].size() <= 32);
    CHECK(vm["guest_data_trimmed"].get<int>() >= 1);
  }
  CHECK(saw_wide);
  CHECK(j.out.size() < 200'000);
  auto t = run_cli({"--control-socket", ctl, "telemetry", "wide"});
  CHECK(t.status == 0);
  CHECK(t.out.find('\x1b') == std::string::npos);
  CHECK_THAT(t.out, Catch::Contains("host evil\\e]0;owned"));
  auto refused = run_cli({"--control-socket", ctl, "time", "wide"});
  CHECK(refused.status == 1);
  CHECK(refused.err.find('\x1b') == std::string::npos);

  // /metrics: a bounded label set for the wide guest, and still valid for Prometheus.
  const auto log = daemon.log();
  const auto at =
      log.find("metrics on http://127.0.0.1:") + std::strlen("metrics on http://127.0.0.1:");
  const auto port = static_cast<std::uint16_t>(std::stoi(log.substr(at)));
  auto [status, body] = http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  REQUIRE(status == "HTTP/1.1 200 OK");
  std::size_t wide_series = 0;
  for (std::size_t p = body.find("vm=\"wide\""); p != std::string::npos;
       p = body.find("vm=\"wide\"", p + 1)) {
    ++wide_series;
  }
  CHECK(wide_series <= 120);
  CHECK(body.find('\x1b') == std::string::npos);
  const auto file = run.write("metrics.txt", body);
  auto lint = qxa::test::run_command({"/bin/sh", "-c", "promtool check metrics < " + file}, 30s);
  INFO(lint.out << lint.err);
  CHECK(lint.status == 0);

  CHECK(daemon.log().find('\x1b') == std::string::npos);  // the journal gets escapes, too
  CHECK(daemon.running());
}
