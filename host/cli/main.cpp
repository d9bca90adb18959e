// SPDX-License-Identifier: MIT
// qx-agent: the operator's command line, through qx-agentd or straight to one VM socket.
//
// Exit status: 0 success; 1 the agent answered with an error; 2 usage; 69 agent or daemon
// unavailable; 75 timeout or connection lost; 130 interrupted. Interruption is Asio
// cancellation: the first SIGINT or SIGTERM cancels the command's coroutine (a request running
// in the guest is cancelled there too, and the verb ends with 130, a --watch with 0); a second
// signal ends the program at once.
#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/this_coro.hpp>

#include "cli.hpp"
#include "qxa/common/duration.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/version.hpp"
#include "qxa/host/control.hpp"

namespace {

using namespace qxa::cli;
namespace qc = qxa::common;
namespace qh = qxa::host;

asio::awaitable<int> run(const verb& v, const options& o) {
  if (std::string_view(v.name) == "upgrade" && !o.connect.empty()) {
    // The agent restarts: only the daemon reaches the new one again.
    co_return report({exit_usage,
                      "upgrade: works through qx-agentd (it waits for the restarted agent), "
                      "not with --connect"});
  }
  auto ex = co_await asio::this_coro::executor;
  qh::client_options direct;
  direct.software_version = "qx-agent";
  auto access = o.connect.empty() ? qh::through_daemon(ex, o.control_socket)
                                  : qh::straight_to(ex, o.connect, direct);
  if (auto err = co_await access->open()) co_return report({exit_unavailable, err->message});
  if (v.run) co_return co_await v.run(*access, o);
  co_return co_await one_shot(v, *access, o);
}

/// A positive duration from the command line, or a usage message.
std::optional<std::string> parse_positive(const char* what, const std::string& text,
                                          std::chrono::nanoseconds& out) {
  auto d = qc::parse_duration(text);
  if (!d) return fmt::format("{}: {}", what, d.error().message);
  if (d->count() <= 0) return fmt::format("{}: must be more than 0", what);
  out = *d;
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "Quantix KVM agent command line: talks to guest agents through qx-agentd, or "
      "straight to one VM socket with --connect.\n"
      "Exit status: 0 success, 1 the agent answered with an error, 2 usage, 69 agent or "
      "daemon unavailable, 75 timeout or connection lost, 130 interrupted.",
      "qx-agent"};
  app.require_subcommand(1);
  app.set_version_flag("--version", fmt::format("qx-agent {}", qc::software_version),
                       "print the version and exit");
  options o;
  o.control_socket = qh::default_control_socket;
  app.add_flag("--json", o.json, "machine-readable output");
  auto* control = app.add_option("--control-socket", o.control_socket, "qx-agentd control socket")
                      ->capture_default_str();
  auto* connect = app.add_option(
      "--connect", o.connect, "talk straight to one VM socket (or a unix-listen agent), no daemon");
  control->excludes(connect);

  std::map<CLI::App*, const verb*> by_command;
  for (const auto& v : verbs()) {
    auto* sub = app.add_subcommand(v.name, v.help);
    by_command[sub] = &v;
    if (v.takes_vm) {
      sub->add_option("VM", o.vm, "the VM's name (with --connect, any name or -)")->required();
    } else if (v.optional_vm != nullptr) {
      sub->add_option("VM", o.vm, v.optional_vm);
    }
    if (v.arguments) v.arguments(*sub);
    if (v.timeout_help != nullptr) {
      auto* t = sub->add_option("--timeout", o.timeout_text, v.timeout_help);
      if (std::strchr(v.timeout_help, '[') == nullptr)
        t->default_str(qc::format_duration(v.timeout));
    }
  }
  // "-:PATH" (the VM called "-" with --connect) would read as an option: give it a name.
  std::vector<std::string> args(argv + 1, argv + argc);
  for (auto& a : args) {
    if (a.starts_with("-:")) a = "." + a;
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes them last first
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : exit_usage;
  }
  auto* command = app.get_subcommands().front();
  const verb& v = *by_command.at(command);
  o.verb = v.name;
  if (const auto* given = command->get_option_no_throw("--timeout")) {
    o.timeout_given = given->count() > 0;
  }
  o.timeout = v.timeout;
  if (o.timeout_given) {
    if (auto bad = parse_positive("--timeout", o.timeout_text, o.timeout)) {
      std::fprintf(stderr, "qx-agent: %s\n", bad->c_str());
      return exit_usage;
    }
  }
  qc::logger::instance().set_level(qc::log_level::warning);

  asio::io_context io(1);
  int status_code = exit_ok;
  bool interrupted = false;
  asio::cancellation_signal interrupt;
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code ec, int) {
    if (ec) return;
    interrupted = true;
    interrupt.emit(asio::cancellation_type::terminal);
    signals.async_wait([&](std::error_code e, int) {
      if (e) return;
      status_code = exit_interrupted;
      io.stop();
    });
  });
  asio::co_spawn(io, run(v, o),
                 asio::bind_cancellation_slot(interrupt.slot(), [&](std::exception_ptr e, int r) {
                   if (e && !interrupted) std::rethrow_exception(e);  // a bug: main's to report
                   // A verb with no use for an interruption ends where it was waiting (by
                   // operation_aborted); Ctrl-C is how a --watch ends.
                   const bool well = v.interrupt_ends_well && v.interrupt_ends_well();
                   status_code = e ? (well ? exit_ok : exit_interrupted) : r;
                   io.stop();
                 }));
  io.run();
  return status_code;
}
