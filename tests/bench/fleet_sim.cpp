// SPDX-License-Identifier: MIT
// qxa-fleet-sim: N simulated guests in one process, each a real agent (the guest core) serving
// DIR/vmNNNNN.agent.sock as a unix-listen port, for measuring qx-agentd with a large fleet.
// Usage: qxa-fleet-sim DIR N [TELEMETRY-INTERVAL [FIRST]]
//   interval default 5s (the agent's own default); the guests are numbered from FIRST
//   (default 0), so that several simulators can share a directory.
#include <signal.h>
#include <sys/resource.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "qxa/common/duration.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qg = qxa::guest;
namespace qc = qxa::common;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: qxa-fleet-sim DIR N [TELEMETRY-INTERVAL [FIRST]]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int n = std::atoi(argv[2]);
  auto interval = qc::parse_duration(argc > 3 ? argv[3] : "5s");
  const int first = argc > 4 ? std::atoi(argv[4]) : 0;
  if (n <= 0 || !interval || first < 0) {
    std::fprintf(stderr, "qxa-fleet-sim: bad N or interval\n");
    return 2;
  }
  // Two descriptors per guest (the listener and the host's connection), plus a few.
  rlimit lim{};
  ::getrlimit(RLIMIT_NOFILE, &lim);
  lim.rlim_cur = lim.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &lim);
  ::signal(SIGPIPE, SIG_IGN);
  qc::logger::instance().set_level(qc::log_level::error);

  // One sample of the system for all, taken here, stamped afresh each time: thousands of
  // agents reading /proc, /sys and netlink every few seconds would measure the simulator, not
  // qx-agentd. The samples keep their real content and size.
  qg::sampler_sources sources;
  {
    qg::telemetry_sampler system;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // for a CPU figure
    sources.fixed = [sample = system.take()] {
      auto s = sample;
      s.unix_ms = qc::unix_ms();
      return s;
    };
  }

  asio::io_context io(1);
  std::vector<std::unique_ptr<qg::agent>> agents;
  for (int i = 0; i < n; ++i) {
    qg::agent_options o;
    o.port.type = qg::port_spec::kind::unix_listen;
    o.port.path = dir + "/" + fmt::format("vm{:05}.agent.sock", first + i);
    o.telemetry_interval = *interval;
    o.trim_heap = false;  // one heap for all of them
    o.telemetry_sources = sources;
    auto p = qg::open_port(io.get_executor(), o.port, o.port_tuning);
    if (!p) {
      std::fprintf(stderr, "qxa-fleet-sim: %s\n", p.error().describe().c_str());
      return 1;
    }
    agents.push_back(
        std::make_unique<qg::agent>(io.get_executor(), o, qg::ops::parts(), std::move(p.value())));
    asio::co_spawn(io, agents.back()->run(), [](std::exception_ptr e, int) {
      if (e) std::rethrow_exception(e);
    });
  }
  std::printf("serving %d guests in %s\n", n, dir.c_str());
  std::fflush(stdout);
  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&](std::error_code, int) { io.stop(); });
  io.run();
  agents.clear();  // removes the socket files
  return 0;
}
