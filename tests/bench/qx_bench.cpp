// SPDX-License-Identifier: MIT
// qx-bench: our agent against the machine's floors (floors.hpp) and against qemu-guest-agent,
// measured side by side in one run on unix sockets, so that the ratios hold on any machine.
//
// Usage: qx-bench [--smoke] [--json FILE] [--agent PATH] [--qemu-ga PATH]
//        qx-bench --fleet N [--smoke] [--json FILE]   qx-agentd with N simulated guests
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
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_io.hpp"
#include "fleet.hpp"
#include "floors.hpp"
#include "qga_peer.hpp"
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

asio::awaitable<void> in_flight_ping(std::shared_ptr<qh::agent_client> c, int& left, int& done) {
  while (left > 0) {
    --left;
    pb::Envelope p;
    p.mutable_ping();
    auto r = co_await c->request(std::move(p), 10s);
    if (!r) die("ping failed: " + r.error().describe());
    ++done;
  }
}

asio::awaitable<void> upload_chunk(std::shared_ptr<qh::agent_client> c, pb::Envelope chunk,
                                   int& in_flight) {
  auto r = co_await c->request(std::move(chunk), 30s);
  if (!r || r->has_error()) die("upload chunk failed");
  --in_flight;
}

asio::awaitable<void> measure_ours(const settings& s, const std::string& dir,
                                   const std::string& file, our_figures& f, pid_t agent_pid) {
  auto ex = co_await asio::this_coro::executor;
  auto c = qh::agent_client::create(ex, dir + "/ours.sock");
  if (auto ec = co_await c->connect()) die("cannot reach our agent: " + ec.message());
  for (int i = 0; i < s.pings; ++i) {
    pb::Envelope p;
    p.mutable_ping();
    const auto t0 = clock_type::now();
    auto r = co_await c->request(std::move(p), 10s);
    if (!r) die("ping failed");
    f.rtt.ms.push_back(ms_since(t0));
  }
  f.idle_rss_kib = rss_kib(agent_pid, "VmRSS:");
  {
    int left = s.rate_requests, done = 0;
    const auto t0 = clock_type::now();
    // 64 requests in flight: 64 workers, each sending its next ping when the last returns.
    int finished = 0;
    for (int w = 0; w < 64; ++w) {
      asio::co_spawn(ex, in_flight_ping(c, left, done), [&](std::exception_ptr e) {
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
  {
    pb::Envelope read;
    read.mutable_file_read_request()->set_path(file);
    qh::call_options o;
    o.timeout = 30s;
    std::size_t got = 0;
    // Verified as `qx-agent cp` verifies it: the host hashes what arrives.
    qxa::common::sha256 d;
    o.on_progress = [&](const pb::Envelope& m) {
      got += m.file_chunk().data().size();
      d.update(m.file_chunk().data());
    };
    const auto t0 = clock_type::now();
    auto r = co_await c->request(std::move(read), std::move(o));
    if (!r || !r->has_file_read_result() || got != s.file_bytes ||
        r->file_read_result().sha256() != qxa::common::sha256::bytes(d.finish())) {
      die("file read failed");
    }
    f.read_mib_s = static_cast<double>(got) / (1 << 20) / (ms_since(t0) / 1000);
    f.peak_rss_kib = rss_kib(agent_pid, "VmHWM:");
  }
  {
    std::ifstream in(file, std::ios::binary);
    std::string data((std::istreambuf_iterator<char>(in)), {});
    const auto t0 = clock_type::now();
    pb::Envelope open;
    open.mutable_file_write_open()->set_path(dir + "/ours-written.bin");
    auto h = co_await c->request(std::move(open), 10s);
    if (!h || !h->has_file_write_reply()) die("file write open failed");
    const auto handle = h->file_write_reply().handle();
    int in_flight = 0;
    asio::steady_timer t(ex);
    constexpr std::size_t chunk = 512u << 10;
    for (std::size_t off = 0; off < data.size(); off += chunk) {
      while (in_flight >= 8) {
        t.expires_after(100us);
        co_await t.async_wait(asio::use_awaitable);
      }
      pb::Envelope e;
      auto* ch = e.mutable_file_write_chunk();
      ch->set_handle(handle);
      ch->set_offset(off);
      ch->set_data(data.substr(off, chunk));
      ++in_flight;
      asio::co_spawn(ex, upload_chunk(c, std::move(e), in_flight), asio::detached);
    }
    while (in_flight > 0) {
      t.expires_after(100us);
      co_await t.async_wait(asio::use_awaitable);
    }
    qxa::common::sha256 d;
    d.update(data);
    pb::Envelope close;
    close.mutable_file_write_close()->set_handle(handle);
    close.mutable_file_write_close()->set_sha256(qxa::common::sha256::bytes(d.finish()));
    auto done = co_await c->request(std::move(close), 30s);
    if (!done || !done->has_file_write_reply()) die("file write commit failed");
    f.write_mib_s = static_cast<double>(data.size()) / (1 << 20) / (ms_since(t0) / 1000);
  }
  for (int i = 0; i < s.execs; ++i) {
    pb::Envelope e;
    e.mutable_exec_request()->add_argv("/bin/true");
    const auto t0 = clock_type::now();
    auto r = co_await c->request(std::move(e), 10s);
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
  c->close();
}

}  // namespace

int main(int argc, char** argv) {
  settings s;
  int fleet = 0;
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
    } else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: qx-bench [--smoke] [--json FILE] [--plot FILE.png] [--agent PATH] [--qemu-ga "
          "PATH]\n"
          "       qx-bench --fleet N [--smoke] [--json FILE]\n"
          "  --smoke   tiny sizes and short windows: checks that every figure is measured\n"
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
    if (!s.json_path.empty()) std::ofstream(s.json_path) << j.dump(2) << "\n";
    return 0;
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
  {
    std::mt19937_64 rng(1);
    std::ofstream out(file, std::ios::binary);
    std::vector<std::uint64_t> block(1 << 15);
    for (std::size_t done = 0; done < s.file_bytes; done += block.size() * 8) {
      for (auto& w : block) w = rng();
      out.write(reinterpret_cast<const char*>(block.data()),
                static_cast<std::streamsize>(std::min(s.file_bytes - done, block.size() * 8)));
    }
  }

  auto floor = measure_floors(s, dir, file);
  our_figures ours;
  {
    child agent({s.agent, "--config", "/dev/null", "--port", "unix-listen:" + dir + "/ours.sock"});
    ::close(connect_unix(dir + "/ours.sock"));  // waits until the agent listens
    asio::io_context io;
    asio::co_spawn(io, measure_ours(s, dir, file, ours, agent.pid), [](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
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

  const double floor_p50 = floor.rtt.pct(0.5), ours_p50 = ours.rtt.pct(0.5),
               qga_p50 = qga.rtt.pct(0.5);
  struct row {
    std::string figure;
    std::optional<double> floor, ours, qga;
    bool lower_is_better;
  };
  std::vector<row> rows = {
      {"ping round trip p50 (ms)", floor_p50, ours_p50, qga_p50, true},
      {"ping round trip p99 (ms)", floor.rtt.pct(0.99), ours.rtt.pct(0.99), qga.rtt.pct(0.99),
       true},
      {"requests/s with 64 in flight", std::nullopt, ours.rate, std::nullopt, false},
      {fmt::format("raw socket stream {} MiB, no digest (MiB/s)", s.file_bytes >> 20),
       floor.stream_mib_s, std::nullopt, std::nullopt, false},
      {fmt::format("file read {} MiB, SHA-256 on (MiB/s)", s.file_bytes >> 20), floor.read_mib_s,
       ours.read_mib_s, qga.read_mib_s, false},
      {fmt::format("file write {} MiB, SHA-256 on (MiB/s)", s.file_bytes >> 20), floor.write_mib_s,
       ours.write_mib_s, std::nullopt, false},
      {"exec /bin/true p50 (ms)", floor.spawn.pct(0.5), ours.exec.pct(0.5), qga.exec.pct(0.5),
       true},
      {"exec /bin/true p50, timed in the agent (ms)", floor.spawn.pct(0.5),
       ours.exec_inside.pct(0.5), std::nullopt, true},
      {"exec /bin/true p99 (ms)", floor.spawn.pct(0.99), ours.exec.pct(0.99), qga.exec.pct(0.99),
       true},
      {"agent RSS after pings (MiB)", std::nullopt, ours.idle_rss_kib / 1024.0,
       qga.idle_rss_kib / 1024.0, true},
      {"agent peak RSS after the file read (MiB)", std::nullopt, ours.peak_rss_kib / 1024.0,
       qga.peak_rss_kib / 1024.0, true},
      {fmt::format("agent CPU idle, host attached, {} s (%)", s.idle.count()), std::nullopt,
       ours.idle_cpu_percent, qga.idle_cpu_percent, true},
      {"agent binary size (MiB)", std::nullopt,
       static_cast<double>(std::filesystem::file_size(s.agent)) / (1 << 20),
       static_cast<double>(std::filesystem::file_size(s.qemu_ga)) / (1 << 20), true},
  };
  auto cell = [](std::optional<double> v) {
    return v ? fmt::format("{:.3f}", *v) : std::string("-");
  };
  // "x better": how many times ours beats the other (above 1 is better, whichever way is good).
  auto better = [](const row& r, std::optional<double> other) -> std::optional<double> {
    if (!other || !r.ours || *r.ours <= 0 || *other <= 0) return std::nullopt;
    return r.lower_is_better ? *other / *r.ours : *r.ours / *other;
  };
  std::printf("%-42s %12s %12s %12s %14s %14s\n", "figure", "floor", "ours", "qemu-ga",
              "ours vs floor", "ours vs qga");
  json out = {{"smoke", s.smoke},
              {"file_bytes", s.file_bytes},
              {"pings", s.pings},
              {"rows", json::array()}};
  for (const auto& r : rows) {
    const auto vf = better(r, r.floor), vq = better(r, r.qga);
    std::printf("%-42s %12s %12s %12s %14s %14s\n", r.figure.c_str(), cell(r.floor).c_str(),
                cell(r.ours).c_str(), cell(r.qga).c_str(),
                vf ? fmt::format("{:.2f}x", *vf).c_str() : "-",
                vq ? fmt::format("{:.2f}x", *vq).c_str() : "-");
    out["rows"].push_back({{"figure", r.figure},
                           {"floor", r.floor ? json(*r.floor) : json(nullptr)},
                           {"ours", r.ours ? json(*r.ours) : json(nullptr)},
                           {"qemu_ga", r.qga ? json(*r.qga) : json(nullptr)},
                           {"ours_vs_floor", vf ? json(*vf) : json(nullptr)},
                           {"ours_vs_qemu_ga", vq ? json(*vq) : json(nullptr)}});
  }
  std::printf("(\"ours vs\": how many times ours is better; below 1 is worse)\n");
  if (!s.json_path.empty()) std::ofstream(s.json_path) << out.dump(2) << "\n";
  if (!s.plot_path.empty()) {
    // How many times ours beats each peer, per figure, as a bar chart (log scale; 1 = even).
    const auto data = s.plot_path + ".dat";
    {
      std::ofstream d(data);
      int i = 0;
      for (const auto& r : rows) {
        const auto vf = better(r, r.floor), vq = better(r, r.qga);
        if (!vf && !vq) continue;
        std::string name = r.figure.substr(0, r.figure.find(" ("));
        d << i++ << " \"" << name << "\" " << (vf ? *vf : 0) << " " << (vq ? *vq : 0) << "\n";
      }
    }
    const auto script = fmt::format(
        "set terminal pngcairo size 1100,560 noenhanced; set output '{}';"
        "set title 'quantix-kvm-agent against the raw floor and qemu-guest-agent (above 1: ours "
        "is better)';"
        "set logscale y; set yrange [0.01:100]; set grid y; set style data histograms;"
        "set style histogram cluster gap 1; set style fill solid 0.8; set boxwidth 0.9;"
        "set xtics rotate by -25 scale 0; set key top left;"
        "plot '{}' using 3:xtic(2) title 'ours vs floor', '' using 4 title 'ours vs qemu-ga', 1 "
        "notitle lc rgb 'black'",
        s.plot_path, data);
    child plot({"/usr/bin/gnuplot", "-e", script});
    const int status = plot.wait();
    std::filesystem::remove(data);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !std::filesystem::exists(s.plot_path)) {
      die("gnuplot could not draw " + s.plot_path + " (install gnuplot-nox)");
    }
    std::printf("plot: %s\n", s.plot_path.c_str());
  }
  return 0;
}
