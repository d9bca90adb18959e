// SPDX-License-Identifier: MIT
// quantix-kvm-agent: the in-VM guest agent, and the composition root of the guest's roles: the
// core's agent, given the operations (ops) and the qemu-guest-agent protocol (qga), with the
// policy in the configuration checked against the operations' names.
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "qxa/common/duration.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/common/systemd.hpp"
#include "qxa/common/version.hpp"
#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/core/config.hpp"
#include "qxa/guest/mech/identity.hpp"
#include "qxa/guest/mech/upgrade.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/qga/qga.hpp"

namespace qc = qxa::common;
namespace qg = qxa::guest;

namespace {

constexpr int exit_usage = 2;

int usage_error(const std::string& message) {
  qc::print_startup_error("quantix-kvm-agent", message);
  return exit_usage;
}

}  // namespace

int main(int argc, char** argv) {
  // The agent runs itself, as a user, for work in that user's home (identity.hpp). Not an
  // option for people: it does what the user running it could do anyway.
  if (argc == 3 && argv[1] == qg::ssh_keys_helper_argument) {
    return qg::run_ssh_keys_helper(argv[2], STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO);
  }
  // The previous binary, started by an upgrade to roll it back unless it is confirmed
  // (upgrade.hpp): not an option for people either.
  if (argc == 3 && argv[1] == qg::upgrade_guard_argument) {
    std::signal(SIGPIPE, SIG_IGN);
    return qg::run_upgrade_guard(argv[2]);
  }
  CLI::App app{
      "Quantix KVM guest agent: serves the host over the virtio-serial port "
      "org.quantix.agent.0.",
      "quantix-kvm-agent"};
  std::string config_path = qg::default_config_path;
  std::optional<std::string> port, qemu_ga_port, interval, write_timeout, log_level;
  bool version = false;
  auto* config_opt =
      app.add_option("--config", config_path, "configuration file")->capture_default_str();
  app.add_option("--port", port,
                 "device path, or unix-listen:PATH to serve one host on a unix socket "
                 "(default " +
                     std::string(qg::default_port_path) + ")");
  app.add_option("--qemu-ga-port", qemu_ga_port,
                 "serve the qemu-guest-agent protocol on this device path or unix-listen:PATH, "
                 "or 'off' (default: [qemu_ga] in the config: its port unless qemu-guest-agent is "
                 "installed)");
  app.add_option("--telemetry-interval", interval, "how often telemetry is pushed (default 5s)");
  app.add_option("--write-timeout", write_timeout, "deadline for one telemetry write (default 5s)");
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warning, error, critical or off (default info)");
  app.add_flag("--version", version, "print the version and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : exit_usage;
  }
  if (version) {
    std::printf("quantix-kvm-agent %s\n", qc::software_version);
    return 0;
  }

  qg::agent_config config;
  config.operations = qg::ops::table();
  config.qemu_ga_commands = qg::qga::command_names();
  // A missing default file is normal; a file named on the command line must exist.
  struct stat st {};
  const bool explicit_config = config_opt->count() > 0;
  if (explicit_config || ::stat(config_path.c_str(), &st) == 0) {
    if (auto err = qg::load_agent_config(config_path, config)) return usage_error(err->message);
  }
  // Command-line flags override the file.
  if (port) {
    auto spec = qg::port_spec::parse(*port);
    if (!spec) return usage_error("--port: " + spec.error().message);
    config.agent.port = *spec;
  }
  if (qemu_ga_port) {
    auto& q = config.agent.qemu_ga;
    if (*qemu_ga_port == "off") {
      q.enabled = qg::qemu_ga_options::mode::off;
    } else {
      auto spec = qg::port_spec::parse(*qemu_ga_port);
      if (!spec) return usage_error("--qemu-ga-port: " + spec.error().message);
      q.port = *spec;
      q.enabled = qg::qemu_ga_options::mode::on;
    }
  }
  auto duration_flag = [](const char* name, const std::optional<std::string>& text,
                          std::chrono::nanoseconds& out) -> std::optional<std::string> {
    if (!text) return std::nullopt;
    auto d = qc::parse_duration(*text);
    if (!d) return std::string(name) + ": " + d.error().message;
    if (d->count() <= 0) return std::string(name) + ": must be more than 0";
    out = *d;
    return std::nullopt;
  };
  if (auto e = duration_flag("--telemetry-interval", interval, config.agent.telemetry_interval)) {
    return usage_error(*e);
  }
  if (auto e = duration_flag("--write-timeout", write_timeout, config.agent.write_timeout)) {
    return usage_error(*e);
  }
  if (log_level) {
    auto l = qc::parse_log_level(*log_level);
    if (!l) return usage_error("--log-level: unknown level '" + *log_level + "'");
    config.log_level = *l;
  }
  qc::logger::instance().set_level(config.log_level);
  // Concurrent requests, jobs and qemu-ga's open files each hold descriptors. Said once the
  // ports are open: a start-up error stays the first line.
  const auto descriptors = qc::raise_descriptor_limit();

  asio::io_context io(1);
  auto port_or = qg::open_port(io.get_executor(), config.agent.port, config.agent.port_tuning);
  if (!port_or) {
    qc::log_error("{}", port_or.error().describe());
    return 1;
  }
  std::unique_ptr<qg::port> qemu_ga;
  const auto& q = config.agent.qemu_ga;
  if (q.enabled == qg::qemu_ga_options::mode::on ||
      (q.enabled == qg::qemu_ga_options::mode::automatic && qg::qga::automatic_mode_serves())) {
    if (q.port.to_string() == config.agent.port.to_string()) {
      return usage_error("the qemu-ga port is the native port (" + q.port.to_string() + ")");
    }
    auto opened = qg::open_port(io.get_executor(), q.port, config.agent.port_tuning);
    if (!opened) {
      qc::log_error("qemu-ga port: {}", opened.error().describe());
      return 1;
    }
    qemu_ga = std::move(opened.value());
  }
  qc::log_info("{}", qc::describe(descriptors));
  config.agent.config_file = std::filesystem::absolute(config_path).lexically_normal().string();
  auto parts = qg::ops::parts();
  parts.serve_qemu_ga = [options = config.agent.qemu_ga](qg::agent_state& state, qg::port& p) {
    return qg::qga::serve(state, p, options);
  };
  auto agent = std::make_unique<qg::agent>(io.get_executor(), config.agent, std::move(parts),
                                           std::move(port_or.value()), std::move(qemu_ga));

  int status = 0;
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](std::error_code ec, int signo) {
    if (ec) return;
    qc::log_info("received {}, exiting", signo == SIGTERM ? "SIGTERM" : "SIGINT");
    qc::sd_notify("STOPPING=1");
    status = 0;
    // A freeze must not outlive the agent.
    asio::co_spawn(io, agent->prepare_exit(), [&](std::exception_ptr) { io.stop(); });
  });
  // SIGPIPE would kill the agent when the host closes while we write.
  std::signal(SIGPIPE, SIG_IGN);

  asio::co_spawn(io, agent->run(), [&](std::exception_ptr e, int result) {
    if (e) std::rethrow_exception(e);
    status = result;
    io.stop();
  });
  // Under systemd (Type=notify) the start is complete once the port is open: a configuration or
  // port error fails `systemctl start` itself instead of a service that dies after it.
  qc::sd_notify("READY=1");
  io.run();
  agent.reset();  // closes the port and removes a unix-listen socket file
  return status;
}
