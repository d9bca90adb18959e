// SPDX-License-Identifier: MIT
// qx-agentd's Prometheus endpoint, checked by promtool and scraped by a real Prometheus.
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
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
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
using qxa::test::http;
using qxa::test::run_cli;
using qxa::test::start_vm_agent;
using qxa::test::temp_dir;
using json = nlohmann::json;

TEST_CASE("qx-agentd serves Prometheus metrics that promtool accepts, with each VM's state",
          "[integration][host]") {
  temp_dir vms, run;
  auto a = start_vm_agent(vms, "alpha");
  auto b = start_vm_agent(vms, "beta");
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
  // Each CPU's times from the agent's /proc/stat, in every mode; the disk counters' families.
  CHECK_THAT(body,
             Catch::Contains("qxa_guest_cpu_seconds_total{vm=\"alpha\",cpu=\"0\",mode=\"idle\"}"));
  CHECK_THAT(body,
             Catch::Contains("qxa_guest_cpu_seconds_total{vm=\"beta\",cpu=\"0\",mode=\"steal\"}"));
  CHECK_THAT(body, Catch::Contains("# TYPE qxa_guest_disk_read_bytes_total counter"));
  // The descriptor budget: both VMs connected, none waiting.
  CHECK_THAT(body, Catch::Contains("qxa_vm_connections 2\n"));
  CHECK_THAT(body, Catch::Contains("qxa_vms_over_capacity 0\n"));
  CHECK_THAT(body, Catch::Contains("qxa_vm_over_capacity{vm=\"alpha\"} 0"));
  CHECK_THAT(body, Catch::Contains("# TYPE qxa_descriptor_limit gauge"));
  CHECK(body.find("qxa_heartbeat_rtt_seconds_count{vm=\"beta\"} 0") == std::string::npos);
  const auto file = run.write("metrics.txt", body);
  auto lint = qxa::test::run_command({"/bin/sh", "-c", "promtool check metrics < " + file}, 30s);
  INFO(lint.out << lint.err);
  CHECK(lint.status == 0);
  CHECK(lint.out.empty());  // no lint findings either
  // The shipped alert rules name only families the daemon serves, and states it reports.
  std::ifstream rules(QXA_SOURCE_DIR "/packaging/prometheus/quantix-kvm-alerts.yml");
  const std::string rule_text((std::istreambuf_iterator<char>(rules)), {});
  const std::regex family(R"(qxa_[a-z_]+)");
  int named = 0;
  for (auto it = std::sregex_iterator(rule_text.begin(), rule_text.end(), family);
       it != std::sregex_iterator(); ++it, ++named) {
    CHECK_THAT(body, Catch::Contains("# TYPE " + it->str() + " "));
  }
  CHECK(named >= 8);
  for (const char* state : {"unresponsive", "connecting", "handshaking", "stale-socket", "ready"}) {
    CHECK_THAT(rule_text, Catch::Contains(state));
    CHECK_THAT(body,
               Catch::Contains(fmt::format("qxa_vm_state{{vm=\"alpha\",state=\"{}\"}}", state)));
  }

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

TEST_CASE(
    "a real Prometheus server scrapes qx-agentd, sees each VM's state and evaluates the "
    "shipped alert rules on it",
    "[integration][host]") {
  temp_dir vms, run;
  auto a = start_vm_agent(vms, "alpha");
  auto b = start_vm_agent(vms, "beta");
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
                fmt::format("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                            "rule_files:\n  - {}/packaging/prometheus/quantix-kvm-alerts.yml\n"
                            "scrape_configs:\n  - job_name: qxa\n"
                            "    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                            QXA_SOURCE_DIR, metrics_port));
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
  // Every shipped rule has been evaluated on these series without an error, and none fires for
  // two healthy VMs.
  std::size_t healthy = 0, firing = 0;
  qxa::test::eventually(
      [&] {
        auto [status, body] =
            http(web_port, "GET /api/v1/rules HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        const auto j = json::parse(body, nullptr, false);
        if (status != "HTTP/1.1 200 OK" || j.is_discarded() || j["status"] != "success") {
          return false;
        }
        healthy = firing = 0;
        for (const auto& g : j["data"]["groups"]) {
          for (const auto& r : g["rules"]) {
            healthy += r["health"] == "ok";
            firing += r["state"] == "firing";
          }
        }
        return healthy == 11;
      },
      30s, 100ms);
  CHECK(healthy == 11);
  CHECK(firing == 0);
  prometheus.signal(SIGTERM);
  prometheus.wait_exit(20s);
}
