// SPDX-License-Identifier: MIT
// Process-level tests of qx-agentd against hostile fake guests: what they send cannot make it
// grow, stall the other VMs or forge what the operator sees.
#include <fmt/format.h>
#include <netinet/in.h>
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
#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/hostile.hpp"
#include "support/http.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/shipped.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::daemon_status;
using qxa::test::http;
using qxa::test::run_cli;
using qxa::test::start_quick_daemon;
using qxa::test::start_vm_agent;
using qxa::test::temp_dir;
using qxa::test::vm_states;
using json = nlohmann::json;
namespace qc = qxa::common;
namespace pb = quantix::agent::v1;
using asio::awaitable;

using qxa::test::process_peak_rss_bytes;

namespace {

using unix_socket = asio::local::stream_protocol::socket;

std::vector<std::uint8_t> frame_of(const pb::Envelope& e) {
  const auto f = qc::encode_envelope(e).value();
  return {f.begin(), f.end()};
}

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

  // Answers every Hello, and then at once announces itself again (AgentReady, as a restarted
  // agent does): a new session after another, as fast as the daemon opens them.
  static awaitable<void> restarter(unix_socket s) {
    auto stream = qc::message_stream<unix_socket>::create(std::move(s));
    stream->start();
    for (std::uint32_t pid = 1000;; ++pid) {
      auto r = co_await stream->receive();
      if (!r) co_return;
      if (!r->has_hello()) continue;  // a heartbeat of the session before: never answered
      pb::Envelope ack;
      ack.set_reply_to(r->request_id());
      ack.set_session_id(r->session_id());
      ack.mutable_hello_ack()->set_session_id(r->session_id());
      ack.mutable_hello_ack()->set_agent_pid(pid);
      ack.mutable_hello_ack()->set_hostname("restarter");
      pb::Envelope ready;
      ready.mutable_agent_ready()->set_agent_pid(pid + 1);
      if (co_await stream->send(ack) || co_await stream->send(ready)) co_return;
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
  auto good = start_vm_agent(vms, "good");
  hostile_guests hostile(vms);
  auto daemon = start_quick_daemon(vms, run);
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
  const auto status = daemon_status(run / "ctl.sock");
  const auto s = vm_states(status);
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

TEST_CASE(
    "a guest's lying headers, oversized telemetry and escape codes: the other VMs and "
    "the operator's view stay intact",
    "[integration][host]") {
  temp_dir vms, run;
  auto good = start_vm_agent(vms, "good");
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
  // Its freeze as it reports it, whatever the numbers: the series the freeze alerts read.
  CHECK_THAT(body, Catch::Contains("qxa_guest_frozen{vm=\"wide\"} 1\n"));
  CHECK_THAT(body, Catch::Contains("qxa_guest_frozen_seconds{vm=\"wide\"} "));
  CHECK_THAT(body, Catch::Contains("qxa_guest_freeze_lease_remaining_seconds{vm=\"wide\"} -"));
  CHECK(body.find('\x1b') == std::string::npos);
  const auto file = run.write("metrics.txt", body);
  auto lint = qxa::test::run_command({"/bin/sh", "-c", "promtool check metrics < " + file}, 30s);
  INFO(lint.out << lint.err);
  CHECK(lint.status == 0);

  CHECK(daemon.log().find('\x1b') == std::string::npos);  // the journal gets escapes, too
  CHECK(daemon.running());
}

namespace {

std::size_t lines_with(const std::string& log, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

}  // namespace

TEST_CASE(
    "a guest that restarts its agent thousands of times a second gets a bounded share of "
    "qx-agentd's log, and the other VMs are logged as before",
    "[integration][host][hostile]") {
  temp_dir vms, run;
  auto good = start_vm_agent(vms, "good");
  hostile_guests hostile(vms, {{"restarter", &hostile_guests::restarter}});
  auto daemon = start_quick_daemon(vms, run);
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::wait_vm_state(ctl, "good", "ready", 5s));
  // Four seconds of it, while the daemon serves the good VM.
  int pings = 0, ok = 0;
  const auto until = std::chrono::steady_clock::now() + 4s;
  while (std::chrono::steady_clock::now() < until) {
    ++pings;
    ok += run_cli({"--control-socket", ctl, "ping", "good", "--timeout", "2s"}).status == 0;
  }
  const auto status = daemon_status(ctl);
  // It did restart, thousands of times: the daemon followed every one.
  std::uint64_t sessions = 0;
  for (const auto& vm : status["vms"]) {
    if (vm["vm"] == "restarter") sessions = vm.value("sessions", std::uint64_t{0});
  }
  const auto log = daemon->log();
  const auto lines = lines_with(log, "restarter");
  WARN(fmt::format("{} sessions of the restarting guest in 4 s; {} log lines name it", sessions,
                   lines));
  CHECK(sessions > 1000);
  // Ten of each kind a minute (connections, restarts, state changes), and its discovery.
  CHECK(lines <= 40);
  CHECK(ok == pings);
  // The good VM's own changes still reach the log.
  good.reset();
  CHECK(daemon->wait_for_log("vm good: ready -> ", 10s));
}

TEST_CASE(
    "idle connections to /metrics never take the descriptors of the control socket and the "
    "VMs, and are closed",
    "[integration][host][hostile]") {
  temp_dir vms, run;
  auto good = start_vm_agent(vms, "good");
  const auto config = run.write("qx-agentd.toml",
                                "metrics_listen = \"127.0.0.1:0\"\n[heartbeat]\ninterval = "
                                "\"250ms\"\ntimeout = \"1s\"\n");
  // A low descriptor limit, as a small host's unit might set.
  child_process daemon({"/bin/sh", "-c",
                        fmt::format("ulimit -n 128 && exec {} --config {} --socket-dir {} "
                                    "--control-socket {}",
                                    QXA_AGENTD_PATH, config, vms.path(), run / "ctl.sock")});
  REQUIRE(daemon.wait_for_log("metrics on http://127.0.0.1:", 10s));
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::wait_vm_state(ctl, "good", "ready", 10s));
  const auto log = daemon.log();
  const auto at =
      log.find("metrics on http://127.0.0.1:") + std::strlen("metrics on http://127.0.0.1:");
  const auto port = static_cast<std::uint16_t>(std::stoi(log.substr(at)));
  // 300 connections that never send a request: more than the daemon has descriptors.
  std::vector<int> idle;
  for (int i = 0; i < 300; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    (void)::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a);  // in progress, or not
    idle.push_back(fd);
  }
  // While they are held: the operator and the VM are served.
  for (int i = 0; i < 3; ++i) {
    auto st = run_cli({"--control-socket", ctl, "status"}, 10s);
    INFO(st.err);
    CHECK(st.status == 0);
    CHECK(run_cli({"--control-socket", ctl, "ping", "good", "--timeout", "2s"}, 10s).status == 0);
  }
  CHECK(daemon.log().find("Too many open files") == std::string::npos);
  for (const int fd : idle) ::close(fd);
  // Once they are gone, a scrape is answered.
  CHECK(qxa::test::eventually(
      [&] {
        return http(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").first == "HTTP/1.1 200 OK";
      },
      15s, 100ms));
  CHECK(daemon.running());
}

TEST_CASE(
    "qx-agentd refuses a socket directory others may write to, and the sockets of users who "
    "are not QEMU's, with one warning each",
    "[integration][host][hostile]") {
  temp_dir vms, run;
  REQUIRE(::geteuid() == 0);  // sockets of another user's
  // A directory anyone may write to: not used at all.
  REQUIRE(::chmod(vms.path().c_str(), 01777) == 0);
  child_process open_dir({QXA_AGENTD_PATH, "--config", "/dev/null", "--socket-dir", vms.path(),
                          "--control-socket", run / "ctl.sock"});
  CHECK(open_dir.wait_exit(10s) == 1);
  open_dir.drain();
  CHECK_THAT(open_dir.log(), Catch::Contains("others may write to it"));
  REQUIRE(::chmod(vms.path().c_str(), 0755) == 0);

  auto good = start_vm_agent(vms, "good");
  // A user's socket named like a VM's, and a link to the good VM's socket.
  auto planted = start_vm_agent(vms, "planted");
  REQUIRE(::lchown((vms / "planted.agent.sock").c_str(), 1000, 1000) == 0);
  REQUIRE(::symlink((vms / "good.agent.sock").c_str(), (vms / "linked.agent.sock").c_str()) == 0);
  auto daemon = start_quick_daemon(vms, run);
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::wait_vm_state(ctl, "good", "ready", 10s));
  // A rescan or two later (each would warn again if it were not said once).
  CHECK(daemon->wait_for_log("linked.agent.sock: refused as VM linked's socket", 5s));
  CHECK(
      daemon->wait_for_log("planted.agent.sock: refused as VM planted's socket: it belongs to "
                           "uid 1000",
                           5s));
  const auto states = vm_states(daemon_status(ctl));
  CHECK(states.size() == 1);
  CHECK(states.contains("good"));
  CHECK(run_cli({"--control-socket", ctl, "ping", "planted"}).status == 69);
  // Root's again: taken as a VM.
  REQUIRE(::lchown((vms / "planted.agent.sock").c_str(), 0, 0) == 0);
  CHECK(qxa::test::wait_vm_state(ctl, "planted", "ready", 15s));
  CHECK(lines_with(daemon->log(), "refused as VM planted's socket") == 1);
  CHECK(lines_with(daemon->log(), "refused as VM linked's socket") == 1);
}
