// SPDX-License-Identifier: MIT
// qx-agent exec: a command in the guest, its output live, its exit status as ours.
#include <unistd.h>

#include <asio/this_coro.hpp>
#include <cstring>

#include "cli.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/host/json.hpp"

namespace qxa::cli {

namespace {

struct exec_flags {
  std::vector<std::string> argv;
  bool shell = false;
  bool send_stdin = false;
  std::string user;
  std::string cwd;
  std::vector<std::string> env;
  bool detach = false;
};

asio::awaitable<int> run_exec(host::agent_access& access, const options& o, const exec_flags& own) {
  pb::Envelope request;
  auto* e = request.mutable_exec_request();
  if (own.shell) {
    std::string line;
    for (const auto& a : own.argv) line += (line.empty() ? "" : " ") + a;
    e->set_shell_command(line);
  } else {
    for (const auto& a : own.argv) e->add_argv(a);
  }
  for (const auto& kv : own.env) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      co_return report({exit_usage, fmt::format("--env {}: expected NAME=VALUE", kv)});
    }
    (*e->mutable_env())[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  e->set_working_directory(own.cwd);
  e->set_user(own.user);
  if (own.send_stdin) e->set_stdin(read_all_stdin());
  if (own.detach) {
    // A job has no time limit unless one is given; the reply comes at once.
    e->set_detach(true);
    if (o.timeout_given) {
      e->set_timeout_ms(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(o.timeout).count()));
    }
    auto r = co_await access.call(o.vm, std::move(request), std::chrono::seconds(15));
    if (auto f = failed(r)) co_return report(*f);
    if (o.json) {
      print_json(host::to_json(r->job()));
    } else {
      print_job_started(o, r->job());
    }
    co_return exit_ok;
  }
  const auto command_timeout = o.timeout;  // the verb's 60 s unless --timeout
  e->set_timeout_ms(static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(command_timeout).count()));
  e->set_stream_output(true);

  host::call_options call;
  call.timeout = command_timeout + std::chrono::seconds(15);  // from the last output
  call.on_progress = [&](const pb::Envelope& partial) {
    if (!partial.has_exec_output()) return;
    const auto& out = partial.exec_output();
    common::write_all(out.stream() == pb::ExecOutput::STREAM_STDERR ? STDERR_FILENO : STDOUT_FILENO,
                      out.data());
  };
  auto r = co_await access.call(o.vm, std::move(request), std::move(call));
  if (!r && r.code() == common::errc::cancelled) {
    std::fprintf(stderr, "qx-agent: interrupted: the command is stopped in the guest\n");
    co_await asio::this_coro::reset_cancellation_state();
    co_await access.flush(settle_time);
    co_return exit_interrupted;
  }
  if (auto f = failed(r)) co_return report(*f);
  const auto& x = r->exec_result();
  if (o.json) {
    // On standard error: standard output is the command's.
    std::cerr << host::to_json(x).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  if (x.stdout_truncated() || x.stderr_truncated()) {
    std::fprintf(stderr,
                 "qx-agent: output truncated by the guest's limit (stdout %llu bytes, stderr "
                 "%llu bytes produced)\n",
                 static_cast<unsigned long long>(x.stdout_bytes()),
                 static_cast<unsigned long long>(x.stderr_bytes()));
  }
  if (x.timed_out()) {
    co_return report(
        {exit_tempfail,
         fmt::format(
             "the command timed out after {} ms and was killed",
             std::chrono::duration_cast<std::chrono::milliseconds>(command_timeout).count())});
  }
  if (x.has_signal()) {
    std::fprintf(stderr, "qx-agent: the command was killed by signal %d (%s)\n", x.signal(),
                 ::strsignal(x.signal()));
    co_return 128 + x.signal();
  }
  co_return x.exit_code();
}

}  // namespace

verb exec_verb() {
  return make_verb<exec_flags>(
      {.name = "exec",
       .help = "run a command in the guest, its output live; exits with the command's "
               "status",
       .arguments =
           [](CLI::App& s, exec_flags& f) {
             s.add_option("ARGV", f.argv, "the program and its arguments (after --)")->required();
             s.add_flag("--shell", f.shell, "run ARGV joined by spaces as a /bin/sh -c line");
             s.add_option("--user", f.user, "run as this user, with their groups, HOME and USER");
             s.add_option("--cwd", f.cwd, "working directory (default: the user's home)");
             // One value per --env: a vector option would otherwise take every word
             // that follows, the VM's name included.
             s.add_option("--env", f.env, "NAME=VALUE added to the environment (repeatable)")
                 ->allow_extra_args(false);
             s.add_flag("--stdin", f.send_stdin,
                        "send this program's standard input to the command");
             s.add_flag("--detach", f.detach,
                        "start it as a job that outlives this program and the host's connection "
                        "(no time limit unless --timeout); prints the job's id");
           },
       .run = run_exec,
       // A command may run longer than an answer takes.
       .timeout_help = "kill the command after this long [60s; with --detach: no limit]",
       .timeout = std::chrono::seconds(60)});
}

}  // namespace qxa::cli
