// SPDX-License-Identifier: MIT
// qx-bench: our agent against the machine's floors (floors.hpp) and against qemu-guest-agent,
// measured side by side in one run on unix sockets, so that the ratios hold on any machine.
//
// Usage: qx-bench [--smoke] [--json FILE] [--agent PATH] [--qemu-ga PATH]
//        qx-bench --vm [--smoke] [--json FILE] [--plot FILE]   over a real virtio-serial port
//        qx-bench --fleet N [--smoke] [--json FILE] [--plot FILE]   qx-agentd, N simulated guests
//   --smoke  tiny sizes, for the test suite: checks that every measurement runs, not its speed.
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_io.hpp"
#include "calls.hpp"
#include "fleet.hpp"
#include "floors.hpp"
#include "qga_peer.hpp"
#include "report.hpp"
#ifdef QXA_VM_IMAGE_DIR
#include "vm_bench.hpp"
#endif
#include "qxa/common/log.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/host/agent_client.hpp"

namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using namespace std::chrono_literals;
using namespace qxa::bench;  // qx-bench's own helpers (bench_io.hpp, qga_peer.hpp)

namespace {

// ---- our agent --------------------------------------------------------------------------

struct our_figures {
  latency rtt, exec, exec_inside;
  double rate = 0, read_mib_s = 0, write_mib_s = 0, idle_cpu_percent = 0;
  std::size_t idle_rss_kib = 0, peak_rss_kib = 0;
};

asio::awaitable<void> in_flight_ping(qh::agent_access& a, int& left, int& done) {
  while (left > 0) {
    --left;
    pb::Envelope p;
    p.mutable_ping();
    auto r = co_await a.call("", std::move(p), 10s);
    if (!r) die("ping failed: " + r.error().describe());
    ++done;
  }
}

asio::awaitable<void> measure_ours(const settings& s, const std::string& dir,
                                   const std::string& file, our_figures& f, pid_t agent_pid) {
  auto ex = co_await asio::this_coro::executor;
  auto a = qh::straight_to(ex, dir + "/ours.sock");
  if (auto e = co_await a->open()) die("cannot reach our agent: " + e->describe());
  f.rtt = co_await ping_series(*a, "", s.pings);
  f.idle_rss_kib = rss_kib(agent_pid, "VmRSS:");
  {
    int left = s.rate_requests, done = 0;
    const auto t0 = clock_type::now();
    // 64 requests in flight: 64 workers, each sending its next ping when the last returns.
    int finished = 0;
    for (int w = 0; w < 64; ++w) {
      asio::co_spawn(ex, in_flight_ping(*a, left, done), [&](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
        ++finished;
      });
    }
    asio::steady_timer t(ex);
    while (finished < 64) {
      t.expires_after(1ms);
      co_await t.async_wait(asio::use_awaitable);
    }
    f.rate = done / (ms_since(t0) / 1000);
  }
  f.read_mib_s = co_await read_verified(*a, "", file, s.file_bytes);
  f.peak_rss_kib = rss_kib(agent_pid, "VmHWM:");
  {
    std::ifstream in(file, std::ios::binary);
    const std::string data((std::istreambuf_iterator<char>(in)), {});
    f.write_mib_s = co_await write_verified(*a, "", dir + "/ours-written.bin", data);
  }
  for (int i = 0; i < s.execs; ++i) {
    pb::Envelope e;
    e.mutable_exec_request()->add_argv("/bin/true");
    const auto t0 = clock_type::now();
    auto r = co_await a->call("", std::move(e), 10s);
    if (!r || !r->has_exec_result()) die("exec failed");
    f.exec.ms.push_back(ms_since(t0));
    f.exec_inside.ms.push_back(r->exec_result().duration_ms());
  }
  // Idle with a host attached, telemetry at the default interval.
  const double cpu0 = cpu_seconds(agent_pid);
  const auto i0 = clock_type::now();
  asio::steady_timer idle(ex);
  idle.expires_after(s.idle);
  co_await idle.async_wait(asio::use_awaitable);
  f.idle_cpu_percent = (cpu_seconds(agent_pid) - cpu0) / (ms_since(i0) / 1000) * 100;
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  int fleet = 0;
  bool vm = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--smoke") {
      s.smoke = true;
      s.pings = 50;
      s.rate_requests = 500;
      s.file_bytes = 1u << 20;
      s.execs = 3;
      s.idle = std::chrono::seconds(1);
    } else if (a == "--json") {
      s.json_path = value();
    } else if (a == "--agent") {
      s.agent = value();
    } else if (a == "--qemu-ga") {
      s.qemu_ga = value();
    } else if (a == "--plot") {
      s.plot_path = value();
    } else if (a == "--fleet") {
      fleet = std::stoi(value());
    } else if (a == "--vm") {
      vm = true;
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: qx-bench [--smoke] [--json FILE] [--plot FILE.png] [--agent PATH] [--qemu-ga "
          "PATH]\n"
          "       qx-bench --vm [--smoke] [--json FILE] [--plot FILE.png]\n"
          "       qx-bench --fleet N [--smoke] [--json FILE] [--plot FILE.png]\n"
          "  --smoke   tiny sizes and short windows: checks that every figure is measured\n"
          "  --vm      over a real virtio-serial port: the test guest under QEMU, ours (straight\n"
          "            to the socket and through qx-agentd) against a raw echo in the guest\n"
          "  --fleet N qx-agentd (the shipped qx-agentd.toml) with N simulated guests\n");
      return 0;
    } else {
      die("unknown argument '" + a + "' (see --help)");
    }
  }
  if (fleet > 0) {
    ::signal(SIGPIPE, SIG_IGN);
    qxa::common::logger::instance().set_level(qxa::common::log_level::error);
    char fleet_dir[] = "/tmp/qx-fleet-XXXXXX";
    if (::mkdtemp(fleet_dir) == nullptr) die("mkdtemp failed");
    auto j = measure_fleet(fleet, fleet_dir, s.smoke);
    std::filesystem::remove_all(fleet_dir);
    // Each figure against the target for 10,000 VMs (there is no floor for these).
    report t{.columns = {"target", "ours"}, .ratios = {{1, 0}}, .rows = {}};
    auto add = [&](std::string figure, std::optional<double> target, double ours) {
      t.rows.push_back({std::move(figure), {target, ours}, true});
    };
    add("cold start to all ready (s)", 10, j["cold_start_to_all_ready_s"].get<double>());
    add("all guests back to ready (s)", std::nullopt,
        j["guests_back_to_all_ready_s"].get<double>());
    add("qx-agentd RSS (MB)", 200, j["daemon_rss_mib"].get<double>() * 1.048576);
    add("memory per VM (KiB)", 16, j["memory_per_vm_kib"].get<double>());
    add("qx-agentd CPU, steady (% of a core)", 10,
        j["daemon_cpu_percent_of_one_core"].get<double>());
    add("/metrics scrape, slowest of 5 (ms)", 1000,
        j["metrics_scrape_slowest_of_5_ms"].get<double>());
    t.publish(j, s.json_path, s.plot_path,
              fmt::format("qx-agentd with {} VMs against the targets for 10,000 (above 1: the "
                          "target is met)",
                          fleet));
    return 0;
  }
  if (vm) {
#ifdef QXA_VM_IMAGE_DIR
    ::signal(SIGPIPE, SIG_IGN);
    qxa::common::logger::instance().set_level(qxa::common::log_level::error);
    char vm_dir[] = "/tmp/qx-bench-vm-XXXXXX";
    if (::mkdtemp(vm_dir) == nullptr) die("mkdtemp failed");
    const auto t = measure_vm(s, vm_dir);
    std::filesystem::remove_all(vm_dir);
    t.publish(json{{"smoke", s.smoke},
                   {"channel", "virtio-serial, QEMU TCG, the test guest"},
                   {"file_bytes", s.file_bytes},
                   {"pings", s.pings}},
              s.json_path, s.plot_path,
              "over virtio-serial (QEMU TCG): ours against a raw echo on the same port (above 1: "
              "ours is better)");
    return 0;
#else
    die("built without the VM image (configured with -DQXA_VM_TESTS=OFF)");
#endif
  }
  if (::access(s.qemu_ga.c_str(), X_OK) != 0) {
    die(s.qemu_ga + " is missing: install qemu-guest-agent (./tests/run.sh installs it)");
  }
  ::signal(SIGPIPE, SIG_IGN);
  qxa::common::logger::instance().set_level(qxa::common::log_level::warning);
  char tmpl[] = "/tmp/qx-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) die("mkdtemp failed");
  const std::string dir = tmpl;
  const std::string file = dir + "/data.bin";
  std::ofstream(file, std::ios::binary) << random_bytes(s.file_bytes, 1);

  auto floor = measure_floors(s, dir, file);
  our_figures ours;
  {
    child agent({s.agent, "--config", "/dev/null", "--port", "unix-listen:" + dir + "/ours.sock"});
    ::close(connect_unix(dir + "/ours.sock"));  // waits until the agent listens
    asio::io_context io;
    // Stopped when done: the client's reader would keep it running while the agent lives.
    asio::co_spawn(io, measure_ours(s, dir, file, ours, agent.pid), [&io](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
      io.stop();
    });
    io.run();
  }
  qga_figures qga;
  {
    std::filesystem::create_directory(dir + "/qga-state");
    child agent(
        {s.qemu_ga, "-m", "unix-listen", "-p", dir + "/qga.sock", "-t", dir + "/qga-state"});
    qga = measure_qga(s, dir, file, agent.pid);
  }
  std::filesystem::remove_all(dir);

  report t{.columns = {"floor", "ours", "qemu-ga"}, .ratios = {{1, 0}, {1, 2}}, .rows = {}};
  auto add = [&](std::string figure, std::optional<double> f, std::optional<double> o,
                 std::optional<double> q, bool lower_is_better) {
    t.rows.push_back({std::move(figure), {f, o, q}, lower_is_better});
  };
  add("ping round trip p50 (ms)", floor.rtt.pct(0.5), ours.rtt.pct(0.5), qga.rtt.pct(0.5), true);
  add("ping round trip p99 (ms)", floor.rtt.pct(0.99), ours.rtt.pct(0.99), qga.rtt.pct(0.99), true);
  add("requests/s with 64 in flight", std::nullopt, ours.rate, std::nullopt, false);
  add(fmt::format("raw socket stream {} MiB, no digest (MiB/s)", s.file_bytes >> 20),
      floor.stream_mib_s, std::nullopt, std::nullopt, false);
  add(fmt::format("file read {} MiB, SHA-256 on (MiB/s)", s.file_bytes >> 20), floor.read_mib_s,
      ours.read_mib_s, qga.read_mib_s, false);
  add(fmt::format("file write {} MiB, SHA-256 on (MiB/s)", s.file_bytes >> 20), floor.write_mib_s,
      ours.write_mib_s, std::nullopt, false);
  add("exec /bin/true p50 (ms)", floor.spawn.pct(0.5), ours.exec.pct(0.5), qga.exec.pct(0.5), true);
  add("exec /bin/true p50, timed in the agent (ms)", floor.spawn.pct(0.5),
      ours.exec_inside.pct(0.5), std::nullopt, true);
  add("exec /bin/true p99 (ms)", floor.spawn.pct(0.99), ours.exec.pct(0.99), qga.exec.pct(0.99),
      true);
  add("agent RSS after pings (MiB)", std::nullopt, ours.idle_rss_kib / 1024.0,
      qga.idle_rss_kib / 1024.0, true);
  add("agent peak RSS after the file read (MiB)", std::nullopt, ours.peak_rss_kib / 1024.0,
      qga.peak_rss_kib / 1024.0, true);
  add(fmt::format("agent CPU idle, host attached, {} s (%)", s.idle.count()), std::nullopt,
      ours.idle_cpu_percent, qga.idle_cpu_percent, true);
  add("agent binary size (MiB)", std::nullopt,
      static_cast<double>(std::filesystem::file_size(s.agent)) / (1 << 20),
      static_cast<double>(std::filesystem::file_size(s.qemu_ga)) / (1 << 20), true);
  t.publish(json{{"smoke", s.smoke}, {"file_bytes", s.file_bytes}, {"pings", s.pings}}, s.json_path,
            s.plot_path,
            "quantix-kvm-agent against the raw floor and qemu-guest-agent (above 1: ours is "
            "better)");
  return 0;
}
