// SPDX-License-Identifier: MIT
// qx-agentd: one connection per VM agent socket, heartbeats, reconnects, and a control socket.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "qxa/common/log.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/common/systemd.hpp"
#include "qxa/common/version.hpp"
#include "qxa/host/agent_manager.hpp"
#include "qxa/host/control_server.hpp"
#include "qxa/host/daemon_config.hpp"
#include "qxa/host/metrics_server.hpp"

namespace qc = qxa::common;
namespace qh = qxa::host;

namespace {

int fail(const std::string& message, int status = 1) {
  qc::log_error("{}", message);
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Quantix KVM host daemon: keeps one connection per VM guest agent, with "
      "heartbeats and reconnects, and serves qx-agent on a control socket.",
      "qx-agentd"};
  std::string config_path = qh::default_daemon_config;
  std::optional<std::string> socket_dir, control_socket, metrics_listen, log_level;
  bool version = false;
  auto* config_opt =
      app.add_option("--config", config_path, "configuration file")->capture_default_str();
  app.add_option("--socket-dir", socket_dir,
                 "directory of <vm>.agent.sock sockets (default /run/quantix-kvm/vms)");
  app.add_option("--control-socket", control_socket,
                 std::string("control socket (default ") + qh::default_control_socket + ")");
  app.add_option("--metrics-listen", metrics_listen,
                 "ADDR:PORT for Prometheus metrics (default: off)");
  app.add_option("--log-level", log_level, "trace, debug, info, warning, error, critical or off");
  app.add_flag("--version", version, "print the version and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (version) {
    std::printf("qx-agentd %s\n", qc::software_version);
    return 0;
  }

  const bool explicit_config = config_opt->count() > 0;
  auto load = [&](qh::daemon_config& c) -> std::optional<qc::error_info> {
    struct stat st {};
    if (explicit_config || ::stat(config_path.c_str(), &st) == 0) {
      if (auto err = qh::load_daemon_config(config_path, c)) return err;
    }
    if (socket_dir) c.manager.socket_dir = *socket_dir;
    if (control_socket) c.control_socket = *control_socket;
    if (metrics_listen) c.metrics_listen = *metrics_listen;
    if (log_level) {
      auto l = qc::parse_log_level(*log_level);
      if (!l)
        return qc::error_info{make_error_code(qc::errc::invalid_argument),
                              "--log-level: unknown level '" + *log_level + "'"};
      c.log_level = *l;
    }
    return std::nullopt;
  };
  qh::daemon_config config;
  if (auto err = load(config)) {
    qc::print_startup_error("qx-agentd", err->message);
    return 2;
  }
  qc::logger::instance().set_level(config.log_level);
  // Each VM's connection is a descriptor: take what the administrator allows, less a reserve
  // for the control socket and metrics, which must answer whatever the VMs take (the
  // manager's budget).
  const auto descriptors = qc::raise_descriptor_limit();
  config.manager.descriptor_limit = descriptors.now;
  std::optional<asio::ip::tcp::endpoint> metrics_at;
  if (!config.metrics_listen.empty()) {
    auto at = qh::parse_listen_address(config.metrics_listen);
    if (!at) return fail("--metrics-listen: " + at.error().message, 2);
    metrics_at = *at;
  }

  asio::io_context io(1);
  auto manager = qh::agent_manager::create(io.get_executor(), config.manager);
  if (auto err = manager->start()) return fail("cannot start: " + err->message);
  auto control = qh::control_server::create(io.get_executor(), config.control_socket, manager);
  if (auto err = control->listen()) {
    manager->stop();
    return fail("cannot start: " + err->describe());
  }
  control->start();
  std::shared_ptr<qh::metrics_server> metrics;
  if (metrics_at) {
    metrics = qh::metrics_server::create(io.get_executor(), manager);
    if (auto err = metrics->listen(*metrics_at)) {
      control->stop();
      manager->stop();
      return fail("cannot start: " + err->message);
    }
    metrics->start();
    qc::log_info("metrics on http://{}:{}/metrics", metrics->local_endpoint().address().to_string(),
                 metrics->local_endpoint().port());
  }
  // Said once everything is open: a start-up error stays the first line.
  const auto reserve = qh::descriptor_reserve(descriptors.now);
  qc::log_info(
      "{}: at most {} VM connections, {} descriptors kept for the control socket and "
      "metrics",
      qc::describe(descriptors), descriptors.now - reserve, reserve);
  qc::log_info("qx-agentd {} ready: vm sockets in {}, control socket {}", qc::software_version,
               config.manager.socket_dir, config.control_socket);
  qc::sd_notify("READY=1\nSTATUS=serving");

  asio::steady_timer watchdog(io);
  std::function<void()> kick;
  if (auto interval = qc::sd_watchdog_interval()) {
    kick = [&, half = *interval / 2] {
      qc::sd_notify("WATCHDOG=1");
      watchdog.expires_after(half);
      watchdog.async_wait([&](std::error_code ec) {
        if (!ec) kick();
      });
    };
    kick();
  }

  asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  stop_signals.async_wait([&](std::error_code ec, int signo) {
    if (ec) return;
    qc::log_info("received {}, shutting down", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    qc::sd_notify("STOPPING=1");
    if (metrics) metrics->stop();
    control->stop();
    manager->stop();
    watchdog.cancel();
    io.stop();
  });
  asio::signal_set reload_signal(io, SIGHUP);
  std::function<void()> on_hup = [&] {
    reload_signal.async_wait([&](std::error_code ec, int) {
      if (ec) return;
      qc::sd_notify("RELOADING=1");
      qh::daemon_config fresh;
      if (auto err = load(fresh)) {
        qc::log_error("reload refused, keeping the running configuration: {}", err->message);
      } else {
        qc::logger::instance().set_level(fresh.log_level);
        manager->update_timing(fresh.manager);
        if (fresh.manager.socket_dir != config.manager.socket_dir ||
            fresh.control_socket != config.control_socket) {
          qc::log_warning("reload: socket_dir and control_socket take effect at restart");
        }
        qc::log_info("configuration reloaded from {}", config_path);
      }
      qc::sd_notify("READY=1");
      on_hup();
    });
  };
  on_hup();
  std::signal(SIGPIPE, SIG_IGN);

  io.run();
  control->stop();
  manager->stop();
  return 0;
}
