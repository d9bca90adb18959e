// SPDX-License-Identifier: MIT
// qxa-fleet-sim: N simulated guests in one process, each a real agent (the guest core) serving
// DIR/vmNNNN.agent.sock as a unix-listen port, for measuring qx-agentd with a large fleet.
// Usage: qxa-fleet-sim DIR N [TELEMETRY-INTERVAL]     (interval default 10s)
#include <signal.h>
#include <sys/resource.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "qxa/common/duration.hpp"
#include "qxa/common/log.hpp"
#include "qxa/guest/agent.hpp"

namespace qg = qxa::guest;
namespace qc = qxa::common;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: qxa-fleet-sim DIR N [TELEMETRY-INTERVAL]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const int n = std::atoi(argv[2]);
  auto interval = qc::parse_duration(argc > 3 ? argv[3] : "10s");
  if (n <= 0 || !interval) {
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

  asio::io_context io(1);
  std::vector<std::unique_ptr<qg::agent>> agents;
  for (int i = 0; i < n; ++i) {
    qg::agent_options o;
    o.port.type = qg::port_spec::kind::unix_listen;
    o.port.path = dir + "/" + fmt::format("vm{:04}.agent.sock", i);
    o.telemetry_interval = *interval;
    auto p = qg::open_port(io.get_executor(), o.port, o.port_tuning);
    if (!p) {
      std::fprintf(stderr, "qxa-fleet-sim: %s\n", p.error().describe().c_str());
      return 1;
    }
    agents.push_back(std::make_unique<qg::agent>(io.get_executor(), o, std::move(p.value())));
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
