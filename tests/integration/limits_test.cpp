// SPDX-License-Identifier: MIT
// qx-agentd and the agent at the limits they are deployed with: descriptors.
#include <fmt/format.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/common/frame.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/guest/core/log_text.hpp"
#include "qxa/host/agent_client.hpp"
#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/fake_guest.hpp"
#include "support/files.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/run.hpp"
#include "support/shipped.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::temp_dir;

namespace {

namespace pb = ::quantix::agent::v1;

// The program and its arguments, started by a shell that first sets the descriptor limit with
// `ulimit_option` ("-Sn 256": the soft limit, as a service manager's default does; "-n 48":
// both, which the program cannot raise).
std::vector<std::string> with_limit(const std::string& ulimit_option,
                                    std::vector<std::string> command) {
  std::vector<std::string> args{"/bin/sh", "-c",
                                fmt::format("ulimit {} && exec \"$0\" \"$@\"", ulimit_option)};
  args.insert(args.end(), command.begin(), command.end());
  return args;
}

// CPU time (user and system) a process has used so far, in seconds.
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i >= 14) ticks += std::stod(field);  // utime, stime
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::size_t lines_in(const std::string& text) {
  return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Whether the request failed (no reply, or an Error reply, which must be RESOURCE_EXHAUSTED);
// if so, why, added to `failures`.
bool refused(const qxa::common::result<pb::Envelope>& r, std::vector<std::string>& failures) {
  if (r && !r->has_error()) return false;
  if (!r) {
    failures.push_back(r.error().describe());
  } else {
    CHECK(r->error().code() == pb::ERROR_CODE_RESOURCE_EXHAUSTED);
    failures.push_back(r->error().message());
  }
  return true;
}

// Pings through `client` until `done` reaches `until`, each answered in time; how many.
asio::awaitable<int> ping_until(qxa::host::agent_client& client, const int& done, int until) {
  int pings = 0;
  while (done < until) {
    pb::Envelope p;
    p.mutable_ping();
    auto r = co_await client.request(p, 5s);
    REQUIRE(r);
    REQUIRE(r->has_pong());
    ++pings;
    co_await qxa::test::sleep_for(10ms);
  }
  co_return pings;
}

// Resident memory of a process, in KiB.
long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  }
  return -1;
}

// A control client written with plain system calls, so that it can stop reading when a test
// says: what it has not read stays in qx-agentd.
class raw_control_client {
 public:
  explicit raw_control_client(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof a.sun_path);
    std::copy(path.begin(), path.end(), a.sun_path);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0);
  }
  ~raw_control_client() { ::close(fd_); }
  raw_control_client(const raw_control_client&) = delete;
  raw_control_client& operator=(const raw_control_client&) = delete;

  void send(const pb::ControlMessage& m) {
    const auto payload = m.SerializeAsString();
    std::vector<std::uint8_t> frame;
    qxa::common::append_frame(
        {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()}, frame);
    REQUIRE(::send(fd_, frame.data(), frame.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(frame.size()));
  }
  /// The next message, or nothing when none came within `timeout` or the connection ended.
  std::optional<pb::ControlMessage> receive(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto r = decoder_.next(); r.status == qxa::common::decode_status::frame) {
        pb::ControlMessage m;
        REQUIRE(m.ParseFromArray(r.payload.data(), static_cast<int>(r.payload.size())));
        return m;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      pollfd p{fd_, POLLIN, 0};
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return {};
      std::uint8_t buf[1 << 16];
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return {};
      decoder_.feed({buf, static_cast<std::size_t>(n)});
    }
  }

 private:
  int fd_ = -1;
  qxa::common::frame_decoder decoder_{64u << 20};
};

rlim_t soft_limit_of(pid_t pid) {
  rlimit l{};
  REQUIRE(::prlimit(pid, RLIMIT_NOFILE, nullptr, &l) == 0);
  return l.rlim_cur;
}

}  // namespace

TEST_CASE("qx-agentd and the agent raise their soft descriptor limit to the hard one, and say so",
          "[integration][limits]") {
  rlimit here{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &here) == 0);
  REQUIRE(here.rlim_max != RLIM_INFINITY);
  REQUIRE(here.rlim_max > 256);
  const auto raised = fmt::format("descriptor limit {} (raised from 256)", here.rlim_max);

  temp_dir vms, run;
  const auto config = run.write("qx-agentd.toml", qxa::test::daemon_config_text("250ms", "400ms"));
  child_process daemon(with_limit("-Sn 256", {QXA_AGENTD_PATH, "--config", config, "--socket-dir",
                                              vms.path(), "--control-socket", run / "ctl.sock"}));
  REQUIRE(daemon.wait_for_log("ready: vm sockets in", 10s));
  CHECK_THAT(daemon.log(), Catch::Contains(raised));
  CHECK(soft_limit_of(daemon.pid()) == here.rlim_max);

  child_process agent(
      with_limit("-Sn 256", {QXA_AGENT_PATH, "--config", qxa::test::shipped_agent_config, "--port",
                             "unix-listen:" + (run / "agent.sock")}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  CHECK_THAT(agent.log(), Catch::Contains(raised));
  CHECK(soft_limit_of(agent.pid()) == here.rlim_max);
}

TEST_CASE(
    "the agent at a descriptor limit it cannot raise: the execs it cannot start fail with a "
    "clear error, none hangs, and pings are answered throughout",
    "[integration][limits]") {
  temp_dir dir;
  const std::string socket = dir / "agent.sock";
  // 48 descriptors, soft and hard: a handful of commands at once (each needs pipes for its
  // input and output), not the 40 asked for below.
  child_process agent(
      with_limit("-n 48", {QXA_AGENT_PATH, "--config", qxa::test::shipped_agent_config, "--port",
                           "unix-listen:" + socket, "--telemetry-interval", "200ms"}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));
  CHECK_THAT(agent.log(), Catch::Contains("descriptor limit 48"));

  constexpr int commands = 40;
  int done = 0, succeeded = 0, pings = 0;
  std::vector<std::string> failures;
  qxa::test::run_async(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto client = qxa::host::agent_client::create(io.get_executor(), socket);
        const auto ec = co_await client->connect();
        REQUIRE_FALSE(ec);
        for (int i = 0; i < commands; ++i) {
          asio::co_spawn(
              io,
              [&, client]() -> asio::awaitable<void> {
                pb::Envelope e;
                e.mutable_exec_request()->set_shell_command("sleep 0.5; echo done");
                auto r = co_await client->request(e, 30s);
                if (refused(r, failures)) {
                  // counted in failures
                } else if (r->has_exec_result() && r->exec_result().exit_code() == 0 &&
                           r->exec_result().stdout() == "done\n") {
                  ++succeeded;
                } else {
                  failures.push_back(r->ShortDebugString());
                }
                ++done;
              },
              asio::detached);
        }
        // The session goes on meanwhile: every ping answered, at once.
        pings = co_await ping_until(*client, done, commands);
        // And after: a command runs again once descriptors are free.
        pb::Envelope again;
        again.mutable_exec_request()->set_shell_command("echo again");
        auto r = co_await client->request(again, 30s);
        REQUIRE(r);
        REQUIRE(r->has_exec_result());
        CHECK(r->exec_result().stdout() == "again\n");
        client->close();
      },
      60s);
  INFO(agent.log());
  CHECK(done == commands);
  CHECK(succeeded > 0);
  CHECK(!failures.empty());
  CHECK(pings > 0);
  for (const auto& f : failures) {
    INFO(f);
    CHECK_THAT(f, Catch::Contains("Too many open files") || Catch::Contains("descriptor"));
  }
  CHECK(agent.running());
  // Each refusal is its request's answer (and its audit line), not a warning in the log.
  CHECK_THAT(agent.log(), !Catch::Contains("warning") && !Catch::Contains("error"));
}

TEST_CASE(
    "qx-agentd at a descriptor limit of 256 with 400 VMs: status answers at once and names the "
    "VMs over capacity, the daemon stays quiet and idle, and a raised limit serves them all",
    "[integration][limits]") {
  temp_dir vms, run;
  const std::string ctl = run / "ctl.sock";
  constexpr int fleet = 400;
  asio::io_context io;
  std::vector<std::unique_ptr<qxa::test::fake_guest>> guests;
  for (int i = 0; i < fleet; ++i) {
    guests.push_back(std::make_unique<qxa::test::fake_guest>(
        io, vms / fmt::format("vm{:03}.agent.sock", i), qxa::test::behaviour::answer));
  }
  std::thread guest_thread([&] { io.run(); });
  struct stop_guests {
    asio::io_context& io;
    std::thread& t;
    ~stop_guests() {
      io.stop();
      t.join();
    }
  } stop{io, guest_thread};
  const auto config = run.write("qx-agentd.toml", qxa::test::daemon_config_text("1s", "1s"));
  const std::vector<std::string> daemon_command{
      QXA_AGENTD_PATH, "--config", config, "--socket-dir", vms.path(), "--control-socket", ctl};

  auto count = [](const nlohmann::json& status, const std::string& state, bool over) {
    int n = 0;
    for (const auto& vm : status["vms"]) {
      n += vm["state"] == state && vm.value("over_capacity", false) == over;
    }
    return n;
  };
  {
    // As deployed without LimitNOFILE: 256 descriptors, soft and hard.
    child_process daemon(with_limit("-n 256", daemon_command));
    REQUIRE(daemon.wait_for_log("ready: vm sockets in", 10s));
    CHECK_THAT(daemon.log(),
               Catch::Contains("descriptor limit 256: at most 192 VM connections, 64 descriptors "
                               "kept for the control socket and metrics"));
    nlohmann::json status;
    const bool settled = qxa::test::eventually(
        [&] {
          status = qxa::test::daemon_status(ctl);
          return count(status, "ready", false) == 192 &&
                 count(status, "connecting", true) == fleet - 192;
        },
        60s, 200ms);
    INFO(status.dump().substr(0, 2000));
    REQUIRE(settled);
    CHECK(status["descriptor_limit"] == 256);
    CHECK(status["max_vm_connections"] == 192);
    for (const auto& vm : status["vms"]) {
      if (vm.value("over_capacity", false)) {
        CHECK(vm["last_error"] == "over capacity: descriptor limit 256");
      }
    }

    // Settled: over a few seconds, the daemon neither spins nor writes a line per retry, and
    // the operator is never locked out: status answers at once, every time.
    const auto log_before = lines_in(daemon.log());
    const double cpu_before = cpu_seconds(daemon.pid());
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 10; ++i) {
      auto table = qxa::test::run_cli({"--control-socket", ctl, "status"}, 10s);
      CHECK(table.status == 0);
      CHECK(table.took < 1s);
      CHECK_THAT(table.out, Catch::Contains("over-capacity") &&
                                Catch::Contains("(208 over capacity: qx-agentd's descriptor "
                                                "limit 256 allows 192 VM connections"));
      std::this_thread::sleep_for(300ms);  // a measuring window, not a wait for an event
    }
    const double window =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double cpu = (cpu_seconds(daemon.pid()) - cpu_before) / window;
    const auto new_lines = lines_in(daemon.log()) - log_before;
    WARN(fmt::format("400 VMs at 256 descriptors: {:.1f} % of a core, {} log lines in {:.1f} s",
                     cpu * 100, new_lines, window));
    CHECK(cpu < 0.25);
    CHECK(new_lines < 10);
    // The limit's warning came once, not once per VM or per retry.
    const auto log = daemon.log();
    std::size_t warnings = 0;
    for (auto at = log.find("descriptor limit 256 reached"); at != std::string::npos;
         at = log.find("descriptor limit 256 reached", at + 1)) {
      ++warnings;
    }
    CHECK(warnings == 1);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait_exit(10s).has_value());
  }

  // The limit raised, as the unit's LimitNOFILE does (here the hard limit the daemon raises its
  // soft one to): every VM served.
  child_process daemon(with_limit("-Sn 256", daemon_command));
  REQUIRE(daemon.wait_for_log("ready: vm sockets in", 10s));
  nlohmann::json status;
  const bool all = qxa::test::eventually(
      [&] {
        status = qxa::test::daemon_status(ctl);
        return count(status, "ready", false) == fleet;
      },
      60s, 200ms);
  INFO(status.dump().substr(0, 2000));
  CHECK(all);
  CHECK_THAT(daemon.log(), !Catch::Contains("reached"));
}

TEST_CASE(
    "the agent at a descriptor limit it cannot raise: file reads and uploads that find no "
    "descriptor fail with a clear error, the others complete, pings go on",
    "[integration][limits]") {
  temp_dir dir;
  const std::string socket = dir / "agent.sock";
  const auto file = dir / "data.bin";
  qxa::test::write_random_file(file, 4u << 20);
  // Uploads capped only by the descriptors (policy.max_open_uploads, 16 by default, would stop
  // them well before).
  const auto config = dir.write("agent.toml", "[policy]\nmax_open_uploads = 1024\n");
  child_process agent(
      with_limit("-n 48", {QXA_AGENT_PATH, "--config", config, "--port", "unix-listen:" + socket}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));

  constexpr int reads = 40, uploads = 60;
  int reads_done = 0, reads_whole = 0, uploads_open = 0, pings = 0;
  std::vector<std::string> failures;
  std::vector<std::uint64_t> handles;
  qxa::test::run_async(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        auto client = qxa::host::agent_client::create(io.get_executor(), socket);
        const auto ec = co_await client->connect();
        REQUIRE_FALSE(ec);
        auto failed = [&](const qxa::common::result<pb::Envelope>& r) {
          return refused(r, failures);
        };
        // Uploads opened and left open: each holds a temporary file until it is closed.
        for (int i = 0; i < uploads; ++i) {
          pb::Envelope open;
          open.mutable_file_write_open()->set_path(dir / fmt::format("upload-{}.bin", i));
          auto r = co_await client->request(open, 10s);
          if (failed(r)) continue;
          REQUIRE(r->has_file_write_reply());
          handles.push_back(r->file_write_reply().handle());
          ++uploads_open;
        }
        // A few given back: reads at once then find some descriptors, not enough for all.
        auto abort_upload = [&](std::uint64_t h) -> asio::awaitable<void> {
          pb::Envelope close;
          close.mutable_file_write_close()->set_handle(h);
          close.mutable_file_write_close()->set_abort(true);
          auto r = co_await client->request(close, 10s);
          CHECK(r);
        };
        for (int i = 0; i < 6 && !handles.empty(); ++i) {
          co_await abort_upload(handles.back());
          handles.pop_back();
        }
        // Reads at once, while the other uploads hold what they hold; then those are aborted.
        for (int i = 0; i < reads; ++i) {
          asio::co_spawn(
              io,
              [&, client]() -> asio::awaitable<void> {
                pb::Envelope e;
                e.mutable_file_read_request()->set_path(file);
                std::uint64_t bytes = 0;
                qxa::host::call_options o;
                o.timeout = 30s;
                o.on_progress = [&](const pb::Envelope& m) {
                  bytes += m.file_chunk().data().size();
                };
                auto r = co_await client->request(std::move(e), std::move(o));
                if (!failed(r) && r->has_file_read_result() && bytes == (4u << 20)) ++reads_whole;
                ++reads_done;
              },
              asio::detached);
        }
        pings = co_await ping_until(*client, reads_done, reads);
        for (const auto h : handles) co_await abort_upload(h);
        // With the uploads' descriptors back, a read goes through.
        pb::Envelope again;
        again.mutable_file_read_request()->set_path(file);
        qxa::host::call_options o;
        o.timeout = 30s;
        o.on_progress = [](const pb::Envelope&) {};
        auto r = co_await client->request(std::move(again), std::move(o));
        REQUIRE(r);
        CHECK(r->has_file_read_result());
        client->close();
      },
      60s);
  INFO(agent.log());
  WARN(fmt::format("48 descriptors: {} of {} uploads opened, {} of {} reads whole, {} pings",
                   uploads_open, uploads, reads_whole, reads, pings));
  CHECK(uploads_open > 0);
  CHECK(uploads_open < uploads);
  CHECK(reads_done == reads);
  CHECK(reads_whole > 0);
  CHECK(reads_whole < reads);
  CHECK(pings > 0);
  CHECK(!failures.empty());
  for (const auto& f : failures) {
    INFO(f);
    CHECK_THAT(f, Catch::Contains("Too many open files"));
  }
  CHECK(agent.running());
}

TEST_CASE(
    "a host that opens uploads and never closes them stops at policy.max_open_uploads as "
    "shipped, and the agent keeps descriptors for everything else",
    "[integration][limits]") {
  temp_dir dir;
  const std::string socket = dir / "agent.sock";
  const auto file = dir.write("small.txt", "read me\n");
  // 64 descriptors: the 16 uploads the shipped policy allows hold 32 of them.
  child_process agent(
      with_limit("-n 64", {QXA_AGENT_PATH, "--config", qxa::test::shipped_agent_config, "--port",
                           "unix-listen:" + socket}));
  REQUIRE(agent.wait_for_log(qxa::guest::log_text::started, 10s));

  constexpr int attempts = 40;
  auto open_uploads = [&](int& opened, std::vector<pb::Error>& refusals) {
    qxa::test::run_async(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          auto client = qxa::host::agent_client::create(io.get_executor(), socket);
          const auto ec = co_await client->connect();
          REQUIRE_FALSE(ec);
          for (int i = 0; i < attempts; ++i) {
            pb::Envelope open;
            open.mutable_file_write_open()->set_path(dir / fmt::format("upload-{}.bin", i));
            auto r = co_await client->request(open, 10s);
            REQUIRE(r);
            if (r->has_error()) {
              refusals.push_back(r->error());
            } else {
              REQUIRE(r->has_file_write_reply());
              ++opened;
            }
          }
          // The rest of the session is not short of descriptors: a command and a read.
          pb::Envelope exec;
          exec.mutable_exec_request()->set_shell_command("echo still");
          auto r = co_await client->request(exec, 30s);
          REQUIRE(r);
          REQUIRE(r->has_exec_result());
          CHECK(r->exec_result().stdout() == "still\n");
          pb::Envelope read;
          read.mutable_file_read_request()->set_path(file);
          qxa::host::call_options o;
          o.timeout = 10s;
          o.on_progress = [](const pb::Envelope&) {};
          r = co_await client->request(std::move(read), std::move(o));
          REQUIRE(r);
          CHECK(r->has_file_read_result());
          client->close();  // leaving the uploads open
        },
        30s);
  };
  int opened = 0;
  std::vector<pb::Error> refusals;
  open_uploads(opened, refusals);
  CHECK(opened == 16);
  REQUIRE(refusals.size() == attempts - 16);
  for (const auto& e : refusals) {
    CHECK(e.code() == pb::ERROR_CODE_RESOURCE_EXHAUSTED);
    CHECK(e.rule() == "policy.max_open_uploads");
  }
  // The session's end gave them back: the next host session has its 16 again.
  REQUIRE(agent.wait_for_log(fmt::format("16 {}", qxa::guest::log_text::uploads_discarded), 10s));
  opened = 0;
  refusals.clear();
  open_uploads(opened, refusals);
  CHECK(opened == 16);
  CHECK(refusals.size() == attempts - 16);
  CHECK(agent.running());
}

TEST_CASE(
    "a control client that stops reading a streamed file read holds the agent back, not "
    "qx-agentd's memory, and read again, the file comes whole, and the VM answers throughout",
    "[integration][limits]") {
  temp_dir vms, run;
  constexpr std::size_t file_size = 96u << 20;  // more than the control queue's 64 MiB
  const auto file = vms / "big.bin";
  qxa::test::write_random_file(file, file_size);
  auto agent = qxa::test::start_vm_agent(vms, "vm1");
  auto daemon = qxa::test::start_quick_daemon(vms, run);
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::eventually(
      [&] { return qxa::test::vm_states(qxa::test::daemon_status(ctl))["vm1"] == "ready"; }, 10s));
  const long rss_before = rss_kib(daemon->pid());

  raw_control_client client(ctl);
  pb::ControlMessage call;
  call.set_request_id(1);
  auto* c = call.mutable_vm_call();
  c->set_vm("vm1");
  c->mutable_request()->mutable_file_read_request()->set_path(file);
  c->set_timeout_ms(60000);
  c->set_stream_progress(true);
  client.send(call);
  // The client reads one chunk and then nothing for 3 s (well within the control connection's
  // write timeout of 10 s), as a consumer stuck behind a slow disk or a paused pipe would.
  auto first = client.receive(10s);
  REQUIRE(first);
  REQUIRE(first->more());
  std::uint64_t bytes = first->vm_call_result().reply().file_chunk().data().size();
  qxa::common::sha256 digest;
  digest.update(first->vm_call_result().reply().file_chunk().data());
  const auto stalled_until = std::chrono::steady_clock::now() + 3s;
  int pings = 0;
  long rss_peak = 0;
  while (std::chrono::steady_clock::now() < stalled_until) {
    // The VM's connection is not held up: a ping through the daemon answers meanwhile.
    auto ping = qxa::test::daemon_cli(ctl, {"ping", "vm1", "--timeout", "2s"}, 10s);
    CHECK(ping.status == 0);
    ++pings;
    rss_peak = std::max(rss_peak, rss_kib(daemon->pid()));
  }
  // All but a few MiB of the 96 MiB wait in the guest (the agent's read waits for credit).
  WARN(
      fmt::format("qx-agentd resident: {} KiB before, at most {} KiB while the client did not "
                  "read; {} pings meanwhile",
                  rss_before, rss_peak, pings));
#ifndef QXA_SANITIZED  // ASan's quarantine keeps freed buffers resident
  CHECK(rss_peak - rss_before < 16 * 1024);
#endif
  CHECK(pings > 0);

  // Reading again, the rest comes, whole and in order.
  std::optional<pb::ControlMessage> last;
  while (auto m = client.receive(30s)) {
    REQUIRE(m->reply_to() == 1);
    REQUIRE(m->has_vm_call_result());
    const auto& reply = m->vm_call_result().reply();
    if (!m->more()) {
      last = std::move(m);
      break;
    }
    REQUIRE(reply.file_chunk().offset() == bytes);
    bytes += reply.file_chunk().data().size();
    digest.update(reply.file_chunk().data());
  }
  REQUIRE(last);
  INFO(last->ShortDebugString().substr(0, 400));
  REQUIRE(last->vm_call_result().reply().has_file_read_result());
  CHECK(bytes == file_size);
  const auto sha = qxa::common::sha256::hex(digest.finish());
  CHECK(sha == qxa::test::file_sha256(file));
  CHECK(qxa::common::sha256::hex(last->vm_call_result().reply().file_read_result().sha256()) ==
        sha);
#ifndef QXA_SANITIZED
  CHECK(rss_kib(daemon->pid()) - rss_before < 16 * 1024);
#endif
}

TEST_CASE("qx-agent cp of a 96 MiB file through qx-agentd, paced end to end, arrives whole",
          "[integration][limits]") {
  // Before the agent's replies were paced, qx-agentd stopped a stream whose client fell 64 MiB
  // behind, and the copy ended with status 130 and no message: on this machine 3 copies of 3
  // by hand, though not when run here. The test above stalls the client for certain; this one
  // checks the paced path through the real command line, twice on one connection to the VM.
  temp_dir vms, run, out;
  const auto file = vms / "big.bin";
  qxa::test::write_random_file(file, 96u << 20);
  auto agent = qxa::test::start_vm_agent(vms, "vm1");
  auto daemon = qxa::test::start_quick_daemon(vms, run);
  const std::string ctl = run / "ctl.sock";
  REQUIRE(qxa::test::eventually(
      [&] { return qxa::test::vm_states(qxa::test::daemon_status(ctl))["vm1"] == "ready"; }, 10s));
  for (int i = 0; i < 2; ++i) {  // twice on one connection to the VM
    const auto copy = out / fmt::format("copy-{}.bin", i);
    auto r = qxa::test::daemon_cli(ctl, {"cp", "vm1:" + file, copy}, 120s);
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(qxa::test::file_sha256(copy) == qxa::test::file_sha256(file));
    std::filesystem::remove(copy);
  }
  CHECK_THAT(daemon->log(), !Catch::Contains("fell behind"));
}
