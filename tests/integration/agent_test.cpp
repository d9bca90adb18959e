// SPDX-License-Identifier: MIT
// Process-level tests of the real quantix-kvm-agent binary.
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <asio/posix/stream_descriptor.hpp>
#include <catch2/catch.hpp>

#include "qxa/guest/core/log_text.hpp"
#include "support/fake_host.hpp"
#include "support/notify.hpp"
#include "support/process.hpp"
#include "support/shipped.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::connect_now;
using qxa::test::fake_host;
using qxa::test::run_on;
using qxa::test::temp_dir;
using qxa::test::unix_socket;
namespace pb = quantix::agent::v1;
using asio::awaitable;

namespace {

const std::string agent_path = QXA_AGENT_PATH;

std::vector<std::string> agent_args(const std::string& port, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {agent_path, "--config", qxa::test::shipped_agent_config,
                                   "--port", port};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// A pseudo-terminal pair in raw mode: the agent opens the slave as its "device", the test holds
// the master as the host side. Closing the master makes the slave report POLLHUP and read() == 0,
// as a virtio-serial port does when the host disconnects.
struct pty_pair {
  int master = -1;
  std::string slave_path;

  static pty_pair open_new() {
    pty_pair p;
    p.master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    REQUIRE(p.master >= 0);
    REQUIRE(::grantpt(p.master) == 0);
    REQUIRE(::unlockpt(p.master) == 0);
    termios t{};
    REQUIRE(::tcgetattr(p.master, &t) == 0);
    ::cfmakeraw(&t);
    REQUIRE(::tcsetattr(p.master, TCSANOW, &t) == 0);  // applies to the slave side
    unsigned n = 0;
    REQUIRE(::ioctl(p.master, TIOCGPTN, &n) == 0);
    p.slave_path = fmt::format("/dev/pts/{}", n);
    return p;
  }
};

}  // namespace

TEST_CASE(
    "a host that handshakes and stops reading makes the agent exit 75 after exactly 50 "
    "failed telemetry writes",
    "[integration][guest]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  child_process agent(agent_args("unix-listen:" + sock,
                                 {"--telemetry-interval", "10ms", "--write-timeout", "20ms"}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  asio::io_context io;
  fake_host<unix_socket> host(connect_now(io, sock));
  run_on(io, [&]() -> awaitable<void> { co_await host.handshake(); });
  // From here on nobody reads: the socket buffer fills and telemetry writes stall.
  const auto status = agent.wait_exit(90s);
  agent.drain();  // every line it wrote, before counting
  INFO(agent.log());
  REQUIRE(status.has_value());
  REQUIRE(*status == 75);
  CHECK(agent.count_in_log("telemetry write failed (") == 50);
  CHECK(agent.count_in_log("telemetry write failed (50/50): write timed out") == 1);
  CHECK(agent.count_in_log("50 consecutive failed writes (last error: write timed out); exiting "
                           "with status 75") == 1);
  CHECK(agent.count_in_log("delivered again") == 0);
}

TEST_CASE("a host that reads slowly but keeps up never counts a failure", "[integration][guest]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  child_process agent(agent_args("unix-listen:" + sock,
                                 {"--telemetry-interval", "20ms", "--write-timeout", "500ms"}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  asio::io_context io;
  qxa::common::stream_options small_reads;
  small_reads.read_buffer_size = 256;  // many small reads
  fake_host<unix_socket> host(connect_now(io, sock), small_reads);
  int telemetry = 0;
  std::uint64_t last_seq = 0;
  run_on(io, [&]() -> awaitable<void> {
    co_await host.handshake();
    const auto until = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < until) {
      auto e = co_await host.next(2s);
      if (e.has_telemetry()) {
        CHECK(e.telemetry().sequence() > last_seq);
        last_seq = e.telemetry().sequence();
        ++telemetry;
      }
      // The slow part: a pause after every message (about two thirds of the agent's pace).
      co_await qxa::test::sleep_for(12ms);
    }
  });
  INFO(agent.log());
  CHECK(agent.running());
  CHECK(telemetry >= 60);
  CHECK(agent.count_in_log("telemetry write failed") == 0);
}

// [timing]: the host must drain about 460 KB of queued pongs within one telemetry period
// (300 ms), a margin for optimised code; sanitizer builds leave it out.
TEST_CASE("49 failed writes, then the host drains: the count resets and the agent keeps running",
          "[integration][guest][timing]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  child_process agent(agent_args("unix-listen:" + sock,
                                 {"--telemetry-interval", "300ms", "--write-timeout", "150ms"}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  asio::io_context io;
  fake_host<unix_socket> host(connect_now(io, sock));
  run_on(io, [&]() -> awaitable<void> {
    co_await host.handshake();
    // Pings answered into a socket nobody reads fill it quickly; telemetry stalls behind them.
    for (int i = 0; i < 20000; ++i) (void)co_await host.request(host.ping());
  });
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::telemetry_write_failed(49, 50), 60s));
  // The 50th write fails one telemetry period (300 ms) after the 49th failure is logged, unless
  // the host has drained the 20,000 pongs ahead of it by then. Read them straight off the stream,
  // without a timer per message (about 15 ms on an idle machine, ten times that with a timer
  // each); the step's own deadline bounds the wait.
  int telemetry_after = 0;
  run_on(
      io,
      [&]() -> awaitable<void> {
        while (telemetry_after < 3) {
          auto e = co_await host.stream().receive();
          if (!e) throw std::runtime_error("agent stream ended: " + e.error().describe());
          if (e.value().has_telemetry()) ++telemetry_after;
        }
      },
      10s);
  INFO(agent.log());
  CHECK(agent.wait_for_log(qxa::guest::log_text::telemetry_recovered(49), 5s));
  CHECK(agent.count_in_log("(50/50)") == 0);
  CHECK(agent.running());
}

TEST_CASE("a host that disconnects and reconnects 20 times gets a handshake every time",
          "[integration][guest]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  child_process agent(agent_args("unix-listen:" + sock, {"--telemetry-interval", "50ms"}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  asio::io_context io;
  std::set<std::uint64_t> sessions;
  for (int round = 0; round < 20; ++round) {
    fake_host<unix_socket> host(connect_now(io, sock));
    run_on(io, [&]() -> awaitable<void> {
      auto first = co_await host.next();
      CHECK(first.has_agent_ready());
      auto ack = co_await host.handshake();
      CHECK(ack.agent_pid() == static_cast<std::uint32_t>(agent.pid()));
      sessions.insert(ack.session_id());
      const auto id = co_await host.request(host.ping());
      auto pong = co_await host.reply_to(id);
      CHECK(pong.has_pong());
    });
    host.stream().close();
  }
  CHECK(sessions.size() == 20);
  CHECK(agent.wait_for_log(qxa::guest::log_text::session_started, 5s, 20));
  CHECK(agent.running());
}

TEST_CASE("a request stamped with an earlier session is refused with a structured error",
          "[integration][guest]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  child_process agent(agent_args("unix-listen:" + sock, {"--telemetry-interval", "1h"}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  asio::io_context io;
  fake_host<unix_socket> host(connect_now(io, sock));
  run_on(io, [&]() -> awaitable<void> {
    const auto before_hello = co_await host.request(host.ping(), 0x1234);
    auto refused = co_await host.reply_to(before_hello);
    REQUIRE(refused.has_error());
    CHECK(refused.error().code() == pb::ERROR_CODE_NO_SESSION);

    co_await host.handshake();
    const std::uint64_t old_session = host.session();
    const auto ok = co_await host.request(host.ping());
    auto reply1 = co_await host.reply_to(ok);
    CHECK(reply1.has_pong());

    co_await host.handshake();  // a new session replaces the old one
    REQUIRE(host.session() != old_session);
    const auto stale = co_await host.request(host.ping(), old_session);
    auto reply = co_await host.reply_to(stale);
    REQUIRE(reply.has_error());
    CHECK(reply.error().code() == pb::ERROR_CODE_STALE_SESSION);
    CHECK(reply.session_id() == host.session());
    const auto fresh = co_await host.request(host.ping());
    auto reply2 = co_await host.reply_to(fresh);
    CHECK(reply2.has_pong());
  });
  // The log lines are written before the replies; wait for the pipe to deliver them.
  const std::string stale(qxa::guest::log_text::stale_request);
  const std::string early(qxa::guest::log_text::before_hello);
  CHECK(agent.wait_for_log(stale, 5s));
  CHECK(agent.wait_for_log(early, 5s));
  CHECK(agent.count_in_log(stale) == 1);
  CHECK(agent.count_in_log(early) == 1);
}

TEST_CASE("with no host on a device-like port the agent waits without spinning and resumes",
          "[integration][guest]") {
  // The agent opens a symlink, as it opens the udev link /dev/virtio-ports/NAME. When the host
  // comes back the link is pointed at a fresh pty: pty numbers are shared with tests running in
  // parallel, so getting the same one back cannot be relied on.
  temp_dir dir;
  const auto port = dir / "port";
  auto pty = pty_pair::open_new();
  REQUIRE(::symlink(pty.slave_path.c_str(), port.c_str()) == 0);
  child_process agent({agent_path, "--config", qxa::test::shipped_agent_config, "--port", port,
                       "--telemetry-interval", "100ms"});
  {
    asio::io_context io;
    fake_host<asio::posix::stream_descriptor> host(asio::posix::stream_descriptor(io, pty.master));
    run_on(io, [&]() -> awaitable<void> {
      auto first = co_await host.next();
      CHECK(first.has_agent_ready());
      co_await host.handshake();
      auto t = co_await host.next();
      CHECK(t.has_telemetry());
    });
    host.stream().close();  // closes the master: the host is gone
  }
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::host_gone, 5s));
  const double cpu_before = qxa::test::process_cpu_seconds(agent.pid());
  // The measurement window itself: the agent must neither exit nor burn CPU for 10 s.
  REQUIRE_FALSE(agent.wait_exit(10s).has_value());
  const double cpu_used = qxa::test::process_cpu_seconds(agent.pid()) - cpu_before;
  WARN(fmt::format("agent CPU while the host was absent: {:.3f} s over 10 s ({:.2f}% of a core)",
                   cpu_used, cpu_used * 10));
  CHECK(cpu_used < 0.2);  // under 2% of one core

  auto back = pty_pair::open_new();
  const auto next_link = dir / "port.next";
  REQUIRE(::symlink(back.slave_path.c_str(), next_link.c_str()) == 0);
  REQUIRE(::rename(next_link.c_str(), port.c_str()) == 0);
  asio::io_context io;
  fake_host<asio::posix::stream_descriptor> host(asio::posix::stream_descriptor(io, back.master));
  run_on(io, [&]() -> awaitable<void> {
    auto first = co_await host.next(10s);
    CHECK(first.has_agent_ready());
    co_await host.handshake();
    const auto id = co_await host.request(host.ping());
    auto reply3 = co_await host.reply_to(id);
    CHECK(reply3.has_pong());
  });
  CHECK(agent.running());
}

TEST_CASE("a port another process holds (EBUSY) is retried until it is free",
          "[integration][guest]") {
  auto pty = pty_pair::open_new();
  // Another opener with the exclusive flag set makes further opens fail with EBUSY, as a second
  // open of a virtio-serial port does. Root bypasses that flag, so run the agent unprivileged.
  const int holder = ::open(pty.slave_path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
  REQUIRE(holder >= 0);
  REQUIRE(::ioctl(holder, TIOCEXCL) == 0);
  std::vector<std::string> args = {agent_path, "--config", qxa::test::shipped_agent_config,
                                   "--port", pty.slave_path};
  if (::geteuid() == 0) {
    REQUIRE(::chown(pty.slave_path.c_str(), 65534, 65534) == 0);
    args.insert(args.begin(),
                {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"});
  }
  child_process agent(args);
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::port_busy, 10s));
  REQUIRE(::ioctl(holder, TIOCNXCL) == 0);  // the other process lets go
  asio::io_context io;
  fake_host<asio::posix::stream_descriptor> host(asio::posix::stream_descriptor(io, pty.master));
  run_on(io, [&]() -> awaitable<void> {
    auto first = co_await host.next(10s);
    CHECK(first.has_agent_ready());
    co_await host.handshake();
  });
  ::close(holder);
  CHECK(agent.count_in_log("busy (another process has it open)") == 1);  // logged once
  CHECK(agent.running());
}

TEST_CASE("SIGTERM and SIGINT end the agent with status 0 within a second",
          "[integration][guest]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  for (int signo : {SIGTERM, SIGINT}) {
    SECTION(signo == SIGTERM ? "SIGTERM while a host is connected" : "SIGINT with no host") {
      child_process agent(agent_args("unix-listen:" + sock, {"--telemetry-interval", "10ms"}));
      REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
      asio::io_context io;
      std::optional<fake_host<unix_socket>> host;
      if (signo == SIGTERM) {
        host.emplace(connect_now(io, sock));
        run_on(io, [&]() -> awaitable<void> { co_await host->handshake(); });
      }
      const auto t0 = std::chrono::steady_clock::now();
      agent.signal(signo);
      const auto status = agent.wait_exit(1s);
      CHECK(std::chrono::steady_clock::now() - t0 < 1s);
      REQUIRE(status == 0);
      CHECK_FALSE(std::filesystem::exists(sock));  // the socket file is removed
    }
  }
}

TEST_CASE("bad command lines and config files stop the agent with status 2 and a clear message",
          "[integration][guest]") {
  temp_dir dir;
  auto run = [](std::vector<std::string> args) {
    child_process p(args);
    const auto status = p.wait_exit(10s);
    p.drain();
    return std::make_pair(status, p.log());
  };
  auto [s1, log1] = run({agent_path, "--telemetry-interval", "5 parsecs"});
  CHECK(s1 == 2);
  CHECK_THAT(log1, Catch::Contains("--telemetry-interval: invalid duration '5 parsecs'"));
  const auto bad =
      dir.write("agent.toml", "[telemetry]\ninterval = \"5s\"\nwrite_timout = \"1s\"\n");
  auto [s2, log2] = run({agent_path, "--config", bad});
  CHECK(s2 == 2);
  CHECK_THAT(log2, Catch::Contains(bad + ":3: unknown key 'telemetry.write_timout'"));
  auto [s3, log3] = run({agent_path, "--config", dir / "missing.toml"});
  CHECK(s3 == 2);
  CHECK_THAT(log3, Catch::Contains("missing.toml"));
  auto [s4, log4] = run({agent_path, "--no-such-flag"});
  CHECK(s4 == 2);
  auto [s5, log5] = run({agent_path, "--port", "tcp:10.0.0.1:1"});
  CHECK(s5 == 2);
  CHECK_THAT(log5, Catch::Contains("unknown port"));
  // A number no duration can hold: a message, not an uncaught exception (status 134).
  const std::string huge = std::string(5000, '9') + "s";
  auto [s6, log6] = run({agent_path, "--write-timeout", huge});
  CHECK(s6 == 2);
  CHECK_THAT(log6, Catch::Contains("--write-timeout: invalid duration") &&
                       Catch::Contains("out of range"));
  const auto huge_file = dir.write("huge.toml", "[limits]\nrequest_timeout = \"" + huge + "\"\n");
  auto [s7, log7] = run({agent_path, "--config", huge_file});
  CHECK(s7 == 2);
  CHECK_THAT(log7, Catch::Contains("'limits.request_timeout' is not a valid duration"));
}

TEST_CASE("the unix-listen socket is 0600 whatever the umask", "[integration][guest]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  auto args = agent_args("unix-listen:" + sock);
  std::string line = "umask 000; exec";
  for (const auto& a : args) line += " '" + a + "'";
  child_process agent({"/bin/sh", "-c", line});
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  struct stat st {};
  REQUIRE(::stat(sock.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 07777) == 0600);
}

// [release]: properties of the optimised, static release build, not checked in sanitizer builds.
TEST_CASE("the agent binary is static and prints its version", "[integration][guest][release]") {
  child_process p({agent_path, "--version"}, {}, true);
  REQUIRE(p.wait_exit(10s) == 0);
  p.drain();
  CHECK_THAT(p.output(), Catch::StartsWith("quantix-kvm-agent "));
  child_process f({"/usr/bin/file", "-L", agent_path}, {}, true);
  REQUIRE(f.wait_exit(10s) == 0);
  f.drain();
  CHECK_THAT(f.output(), Catch::Contains("statically linked") && Catch::Contains("stripped"));
  CHECK_THAT(f.output(), !Catch::Contains("not stripped"));
}

TEST_CASE("the agent's idle memory with a host attached stays small",
          "[integration][guest][release]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  child_process agent(agent_args("unix-listen:" + sock, {"--telemetry-interval", "100ms"}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  asio::io_context io;
  fake_host<unix_socket> host(connect_now(io, sock));
  run_on(io, [&]() -> awaitable<void> {
    co_await host.handshake();
    // Let it settle into its steady state: a few telemetry rounds and an info request.
    for (int seen = 0; seen < 5;) {
      auto e = co_await host.next();
      if (e.has_telemetry()) ++seen;
    }
    pb::Envelope info;
    info.mutable_info_request();
    const auto id = co_await host.request(info);
    auto reply = co_await host.reply_to(id);
    CHECK(reply.info().agent_rss_bytes() > 0);
  });
  const std::size_t rss = qxa::test::process_rss_bytes(agent.pid());
  WARN(fmt::format("agent idle RSS with a host attached: {:.2f} MiB",
                   static_cast<double>(rss) / (1 << 20)));
  CHECK(rss > 0);
  CHECK(rss <= 4u << 20);  // the goal: at most 4 MB
}

TEST_CASE("a request the guest's policy refuses gets an error naming the rule, and an audit line",
          "[integration][guest]") {
  temp_dir dir;
  const auto sock = dir / "agent.sock";
  const auto config = dir.write("agent.toml", "[policy]\nblock = [\"telemetry\"]\n");
  child_process agent({agent_path, "--config", config, "--port", "unix-listen:" + sock});
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  asio::io_context io;
  fake_host<unix_socket> host(connect_now(io, sock));
  run_on(io, [&]() -> awaitable<void> {
    co_await host.handshake();
    pb::Envelope t;
    t.mutable_telemetry_request();
    const auto id = co_await host.request(t);
    auto reply = co_await host.reply_to(id);
    REQUIRE(reply.has_error());
    CHECK(reply.error().code() == pb::ERROR_CODE_PERMISSION_DENIED);
    CHECK(reply.error().rule() == "policy.block");
    pb::Envelope i;
    i.mutable_info_request();
    const auto ok = co_await host.request(i);
    auto info = co_await host.reply_to(ok);
    CHECK(info.has_info());  // everything else still works
  });
  CHECK(agent.wait_for_log("audit: op=telemetry session=", 5s));
  CHECK(agent.wait_for_log("outcome=refused rule=policy.block", 5s));
}

TEST_CASE(
    "under systemd the agent is ready once its port is open, says when it stops, and a start-up "
    "error reaches the journal as an error without a readiness",
    "[integration][guest]") {
  temp_dir dir;
  qxa::test::notify_listener notify(dir / "notify.sock");
  const std::string notify_env = "NOTIFY_SOCKET=" + (dir / "notify.sock");
  {
    child_process agent(agent_args("unix-listen:" + (dir / "agent.sock")), {notify_env});
    REQUIRE(notify.wait_for("READY=1", 10000ms));
    CHECK(std::filesystem::exists(dir / "agent.sock"));  // open before it said so
    agent.signal(SIGTERM);
    CHECK(notify.wait_for("STOPPING=1", 5000ms));
    CHECK(agent.wait_exit(5s) == 0);
  }
  // With standard error on the journal, fatal start-up errors carry the error priority.
  const std::string journal_env = "JOURNAL_STREAM=8:12345";
  const auto bad = dir.write("bad.toml", "bogus_key = 1\n");
  child_process bad_config({agent_path, "--config", bad, "--port", "unix-listen:" + (dir / "a")},
                           {notify_env, journal_env});
  CHECK(bad_config.wait_exit(10s) == 2);
  bad_config.drain();
  CHECK_THAT(bad_config.log(),
             Catch::StartsWith("<3>quantix-kvm-agent: ") && Catch::Contains("bogus_key"));
  child_process bad_port(agent_args("unix-listen:" + (dir / "missing/dir/agent.sock")),
                         {notify_env, journal_env});
  CHECK(bad_port.wait_exit(10s) == 1);
  bad_port.drain();
  CHECK_THAT(bad_port.log(), Catch::StartsWith("<3>"));
  // Both exited: a readiness they had sent would be waiting on the socket already.
  CHECK_FALSE(notify.wait_for("READY=1", 1ms));
  // Without the journal, the same message is plain.
  child_process plain({agent_path, "--config", bad, "--port", "unix-listen:" + (dir / "a")});
  CHECK(plain.wait_exit(10s) == 2);
  plain.drain();
  CHECK_THAT(plain.log(), Catch::StartsWith("quantix-kvm-agent: "));
}
