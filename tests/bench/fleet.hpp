// SPDX-License-Identifier: MIT
// qx-bench --fleet N: the real qx-agentd, configured by the shipped qx-agentd.toml, watching N
// simulated guests (qxa-fleet-sim: real agents of the guest core, several to a process), and
// what it costs: time until every VM is ready, memory per VM, CPU while steady, and one
// Prometheus scrape of all N.
#pragma once

#include <netinet/in.h>
#include <sys/resource.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench_io.hpp"
#include "qxa/host/control_client.hpp"

namespace qxa::bench {

/// VMs `ready` in the daemon's status, or -1 when the daemon does not answer.
inline int ready_count(const std::string& control_socket) {
  namespace pb = quantix::agent::v1;
  asio::io_context io;
  int count = -1;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        host::control_client c(io.get_executor());
        if (co_await c.connect(control_socket)) co_return;
        pb::ControlMessage m;
        m.mutable_status_query();
        auto r = co_await c.call(std::move(m), std::chrono::seconds(10));
        if (!r || !r->has_status_report()) co_return;
        count = 0;
        for (const auto& v : r->status_report().vms()) count += v.state() == pb::VM_STATE_READY;
      },
      [&](std::exception_ptr) { io.stop(); });  // the client's reader would keep io running
  io.run_for(std::chrono::seconds(15));
  return count;
}

/// Seconds until `n` VMs are ready, or -1 after `limit`. The daemon is asked every 100 ms, and
/// less often for a large fleet: a status of every VM is not free, and the figure measured is
/// the daemon's.
inline double wait_ready(const std::string& control_socket, int n, clock_type::time_point since,
                         std::chrono::seconds limit) {
  const auto every = std::chrono::milliseconds(std::clamp(n / 20, 100, 500));
  while (clock_type::now() - since < limit) {
    if (ready_count(control_socket) == n) return ms_since(since) / 1000;
    std::this_thread::sleep_for(every);
  }
  return -1;
}

/// A TCP port free at the moment of asking, on the loopback.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    die("cannot find a free port");
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

struct scrape {
  double ms = 0;
  std::size_t bytes = 0;  ///< the body, without the HTTP head
  std::size_t samples = 0;
};

/// One GET /metrics, timed from connect to the last byte.
inline scrape scrape_metrics(int port) {
  scrape s;
  const auto t0 = clock_type::now();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("cannot reach /metrics");
  const std::string get = "GET /metrics HTTP/1.1\r\nHost: qx-bench\r\n\r\n";
  write_all(fd, get.data(), get.size());
  std::string response;
  char buf[1 << 16];
  for (ssize_t r; (r = ::read(fd, buf, sizeof buf)) > 0;) {
    response.append(buf, static_cast<std::size_t>(r));
  }
  s.ms = ms_since(t0);
  ::close(fd);
  const auto body = response.find("\r\n\r\n");
  if (!response.starts_with("HTTP/1.1 200") || body == std::string::npos) {
    die("/metrics did not answer 200");
  }
  s.bytes = response.size() - body - 4;
  for (std::size_t at = body + 4; at < response.size();) {
    const auto nl = response.find('\n', at);
    if (response[at] != '#') ++s.samples;
    if (nl == std::string::npos) break;
    at = nl + 1;
  }
  return s;
}

/// Guests per simulator process: two descriptors each (listener and connection) must fit in
/// the process's limit, with room to spare for what an agent opens while sampling.
inline constexpr int guests_per_simulator = 4000;

/// `smoke`: a second instead of the settling time and the 10 s window (the suite's run).
inline nlohmann::ordered_json measure_fleet(int n, const std::string& dir, bool smoke) {
  const auto settle = smoke ? std::chrono::seconds(1) : std::chrono::seconds(6);
  const auto window = smoke ? std::chrono::seconds(1) : std::chrono::seconds(10);
  // The daemon holds one descriptor per VM: raise the soft limit, which the children inherit.
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < static_cast<rlim_t>(n) + 64) {
    die(fmt::format("{} VMs need {} descriptors in qx-agentd; the hard limit is {}", n, n + 64,
                    lim.rlim_cur));
  }
  const auto vms = dir + "/vms";
  std::filesystem::create_directory(vms);
  const int port = free_port();
  const auto config = dir + "/qx-agentd.toml";
  {
    // The shipped file, as a package installs it, with the metrics endpoint turned on.
    std::ifstream shipped(QXA_SHIPPED_DAEMON_CONFIG);
    if (!shipped) die(std::string("cannot read ") + QXA_SHIPPED_DAEMON_CONFIG);
    std::ofstream(config) << fmt::format("metrics_listen = \"127.0.0.1:{}\"\n", port)
                          << shipped.rdbuf();
  }
  const auto ctl = dir + "/ctl.sock";
  std::vector<std::string> daemon_args = {
      QXA_AGENTD_PATH, "--config", config, "--socket-dir", vms, "--control-socket", ctl};
  // The daemon's own memory with no VM, for the per-VM figure.
  std::size_t empty_rss_kib = 0;
  {
    child d(daemon_args);
    while (ready_count(ctl) < 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    empty_rss_kib = rss_kib(d.pid, "VmRSS:");
  }
  auto start_simulators = [&] {
    std::vector<std::unique_ptr<child>> sims;
    for (int first = 0; first < n; first += guests_per_simulator) {
      const int count = std::min(guests_per_simulator, n - first);
      sims.push_back(std::make_unique<child>(std::vector<std::string>{
          QXA_FLEET_SIM_PATH, vms, std::to_string(count), "5s", std::to_string(first)}));
    }
    const auto until = clock_type::now() + std::chrono::seconds(120);
    for (;;) {
      std::size_t sockets = 0;
      for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(vms)) ++sockets;
      if (sockets == static_cast<std::size_t>(n)) break;
      if (clock_type::now() > until) die("the fleet simulators did not create their sockets");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return sims;
  };
  auto sims = start_simulators();
  const auto t0 = clock_type::now();
  child daemon(daemon_args);
  const double cold = wait_ready(ctl, n, t0, std::chrono::seconds(180));
  if (cold < 0) die("not every VM became ready within 180 s");
  std::this_thread::sleep_for(settle);  // then measure a steady window
  const double cpu0 = cpu_seconds(daemon.pid);
  const auto c0 = clock_type::now();
  std::this_thread::sleep_for(window);
  const double cpu = (cpu_seconds(daemon.pid) - cpu0) / (ms_since(c0) / 1000) * 100;
  const auto rss = rss_kib(daemon.pid, "VmRSS:");
  scrape worst;
  for (int i = 0; i < 5; ++i) {
    const auto s = scrape_metrics(port);
    if (s.ms > worst.ms) worst = s;
  }
  const auto rss_after_scrape = rss_kib(daemon.pid, "VmRSS:");
  // The simulators restart: every guest goes away and comes back, timed from the moment the
  // last socket is back (the simulators' own start is not the daemon's to answer for).
  sims.clear();
  sims = start_simulators();
  const auto t1 = clock_type::now();
  const double again = wait_ready(ctl, n, t1, std::chrono::seconds(180));
  if (again < 0) die("not every VM became ready again within 180 s");
  const double per_vm = static_cast<double>(rss - empty_rss_kib) / n;
  nlohmann::ordered_json j = {{"vms", n},
                              {"config", "packaging/config/qx-agentd.toml (heartbeat every 5 s)"},
                              {"guest_telemetry_interval_s", 5},
                              {"cold_start_to_all_ready_s", cold},
                              {"guests_back_to_all_ready_s", again},
                              {"daemon_rss_mib", rss / 1024.0},
                              {"daemon_rss_empty_mib", empty_rss_kib / 1024.0},
                              {"memory_per_vm_kib", per_vm},
                              {"daemon_cpu_percent_of_one_core", cpu},
                              {"cpu_window_s", window.count()},
                              {"metrics_scrape_slowest_of_5_ms", worst.ms},
                              {"metrics_bytes", worst.bytes},
                              {"metrics_samples", worst.samples},
                              {"daemon_rss_after_scrapes_mib", rss_after_scrape / 1024.0}};
  std::printf(
      "fleet of %d VMs, the shipped qx-agentd.toml (heartbeat every 5 s), telemetry "
      "every 5 s:\n",
      n);
  std::printf("  cold start to all ready     %8.2f s\n", cold);
  std::printf("  all back to all ready again %8.2f s\n", again);
  std::printf("  qx-agentd RSS               %8.1f MiB (%.1f MiB with no VM; %.1f KiB per VM)\n",
              rss / 1024.0, empty_rss_kib / 1024.0, per_vm);
  std::printf("  qx-agentd CPU, %2llds steady   %8.2f %% of one core\n",
              static_cast<long long>(window.count()), cpu);
  std::printf(
      "  /metrics, slowest of 5      %8.1f ms, %.1f MiB, %zu samples (RSS after: %.1f MiB)\n",
      worst.ms, static_cast<double>(worst.bytes) / (1 << 20), worst.samples,
      rss_after_scrape / 1024.0);
  return j;
}

}  // namespace qxa::bench
