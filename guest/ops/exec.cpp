// SPDX-License-Identifier: MIT
// exec: runs a program (or a shell line) with its own environment, directory, user, stdin and
// timeout. stdout and stderr are read concurrently (so a chatty child never blocks on a full
// pipe), each up to a cap; streamed to the host as ExecOutput while the process runs when the
// request asks. On timeout or cancellation the whole process group is killed and reaped.
// A detached exec is checked the same way and handed to the job table (jobs.cpp).
#include <signal.h>
#include <unistd.h>

#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/read.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/mech/process.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

using namespace asio::experimental::awaitable_operators;

namespace {

struct output_sink {
  pb::ExecOutput::Stream stream;
  std::uint64_t cap;
  bool streamed;
  captured_output captured;
  std::uint64_t sent = 0;
};

asio::awaitable<void> pump(asio::posix::stream_descriptor& pipe, output_sink& sink,
                           const request_context& ctx) {
  std::vector<char> buf(64u << 10);
  bool host_listens = true;
  for (;;) {
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(buf),
                                                 asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return;  // end of file (all writers closed) or the pipe was closed on us
    sink.captured.total += n;
    const std::uint64_t room = sink.cap > sink.sent + sink.captured.data.size()
                                   ? sink.cap - sink.sent - sink.captured.data.size()
                                   : 0;
    const auto keep = static_cast<std::size_t>(std::min<std::uint64_t>(room, n));
    if (keep == 0) continue;  // over the cap: read and drop, so the writer never blocks
    if (sink.streamed && host_listens) {
      // In pieces the host accepts (its Hello's frame limit may be small).
      const std::size_t piece = std::max<std::size_t>(ctx.max_reply_bytes() - 1024, 1024);
      for (std::size_t at = 0; at < keep && host_listens; at += piece) {
        pb::Envelope out;
        out.mutable_exec_output()->set_stream(sink.stream);
        out.mutable_exec_output()->set_data(buf.data() + at, std::min(piece, keep - at));
        sink.sent += std::min(piece, keep - at);
        host_listens = co_await ctx.progress(out);
      }
    } else if (!sink.streamed) {
      sink.captured.data.append(buf.data(), keep);
    }
  }
}

// Kills the process group at the timeout; descendants that left the group may still hold the
// pipes, so they get a moment before the reading stops.
asio::awaitable<void> watchdog(child_process& child, std::chrono::nanoseconds timeout,
                               bool& timed_out) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(timeout);
  co_await t.async_wait(asio::use_awaitable);
  timed_out = true;
  child.kill_group(SIGKILL);
  t.expires_after(std::chrono::seconds(1));
  co_await t.async_wait(asio::use_awaitable);
}

asio::awaitable<void> collect(child_process& child, output_sink& out, output_sink& err,
                              std::string input, const request_context& ctx, exit_status& status) {
  co_await (pump(child.stdout_pipe(), out, ctx) && pump(child.stderr_pipe(), err, ctx) &&
            feed_stdin(child.stdin_pipe(), std::move(input)));
  status = co_await child.wait();
}

constexpr const char* default_search_path =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What a request asks to run, checked against the policy: the program, its environment, user
// and directory. Nothing when it may run; the refusal's reply otherwise.
struct prepared {
  spawn_options spawn;
  std::string program;  // the path it runs as, for the audit
  std::string user;
};

std::optional<pb::Envelope> prepare(const request_context& ctx, const pb::ExecRequest& req,
                                    prepared& p) {
  const auto& policy = ctx.state.options.policy;
  spawn_options& o = p.spawn;
  if (!req.shell_command().empty()) {
    if (req.argv_size() > 0) {
      return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "give argv or a shell command, not both");
    }
    o.argv = {"/bin/sh", "-c", req.shell_command()};
  } else {
    o.argv.assign(req.argv().begin(), req.argv().end());
  }
  if (o.argv.empty() || o.argv[0].empty()) {
    return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "no program given");
  }
  // Arguments and the environment reach the program as C strings: a NUL would cut one short
  // without a word.
  const auto has_nul = [](const std::string& t) { return t.find('\0') != std::string::npos; };
  for (const auto& a : o.argv) {
    if (has_nul(a)) return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "an argument has a NUL");
  }
  // The user: their uid, groups, HOME and USER.
  std::optional<account> user;
  if (!req.user().empty()) {
    user = lookup_account(req.user());
    if (!user) {
      return error_reply(pb::ERROR_CODE_NOT_FOUND,
                         fmt::format("no user '{}' in /etc/passwd", req.user()));
    }
    o.user = user;
  }
  const auto who = user ? user : current_account();
  // Under exec_allow the environment is the fixed base plus what policy.exec_env_allow names
  // (check_env): the host cannot turn an allowed program into another through it.
  for (const auto& [k, v] : req.env()) {
    if (k.empty() || k.find('=') != std::string::npos || has_nul(k) || has_nul(v)) {
      return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT,
                         fmt::format("bad environment variable '{}'", common::printable(k)));
    }
    if (auto no = policy.check_env(k)) return refused(ctx, "exec", *no);
  }
  o.path = default_search_path;
  if (auto it = req.env().find("PATH"); it != req.env().end()) o.path = it->second;
  o.env = {"PATH=" + o.path, "HOME=" + who->home, "USER=" + who->name, "LOGNAME=" + who->name,
           "SHELL=" + (who->shell.empty() ? std::string("/bin/sh") : who->shell)};
  for (const auto& [k, v] : req.env()) {
    if (k == "PATH" || k == "HOME" || k == "USER" || k == "LOGNAME" || k == "SHELL") {
      for (auto& e : o.env) {
        if (e.starts_with(k + "=")) e = k + "=" + v;
      }
    } else {
      o.env.push_back(k + "=" + v);
    }
  }
  // A user's home is where the command starts unless the host names a directory; one that
  // cannot be entered (gone, not the user's to enter) leaves it in "/". The child enters it as
  // the user, so the agent never looks at it: it may be a mount that never answers.
  if (!req.working_directory().empty()) {
    o.working_directory = req.working_directory();
  } else {
    o.working_directory = who->home.empty() ? "/" : who->home;
    o.working_directory_optional = true;
  }
  // The program is looked up by the child (PATH, as the user). Under exec_allow it must be
  // one of the administrator's programs, found in the system's directories (the host cannot
  // set PATH there), and the child runs exactly that file.
  p.program = o.argv[0];
  if (!policy.exec_allow.empty()) {
    if (o.argv[0].find('/') == std::string::npos) {
      if (auto found = find_program(o.argv[0], o.path); !found.empty()) p.program = found;
    }
    if (auto no = policy.check_program(p.program)) return refused(ctx, "exec", *no);
    o.executable = p.program;
  } else if (auto no = policy.check_program(p.program)) {
    return refused(ctx, "exec", *no);
  }
  o.merge_stderr = req.merge_stderr();
  p.user = who->name;
  return std::nullopt;
}

}  // namespace

asio::awaitable<pb::Envelope> exec(request_context ctx, pb::Envelope request) {
  const auto& req = request.exec_request();
  const auto& policy = ctx.state.options.policy;
  prepared p;
  if (auto no = prepare(ctx, req, p)) co_return std::move(*no);
  if (req.detach()) co_return co_await start_job(ctx, req, p.spawn, p.program, p.user);
  const auto& o = p.spawn;
  const auto& program = p.program;

  auto ex = co_await asio::this_coro::executor;
  const auto started = std::chrono::steady_clock::now();
  const auto timeout = req.timeout_ms() > 0
                           ? std::chrono::nanoseconds(std::chrono::milliseconds(req.timeout_ms()))
                           : ctx.state.options.request_timeout;
  // Its start counts against its timeout: a working directory that never answers makes it
  // time out like a command that never ends.
  auto spawned = co_await child_process::start(ex, o, timeout);
  if (!spawned) {
    common::log_info("audit: op=exec session={:016x} request={} outcome=failed program={} user={}",
                     ctx.session_id, ctx.request_id, common::log_value(o.argv[0]),
                     common::log_value(p.user));
    co_return spawn_failure(spawned.error());
  }
  auto& child = *spawned.value();
  common::log_info(
      "audit: op=exec session={:016x} request={} outcome=started program={} pid={} "
      "user={}",
      ctx.session_id, ctx.request_id, common::log_value(program), child.pid(),
      common::log_value(p.user));

  // Output beyond the cap is dropped; a reply that is not streamed must fit in one frame.
  std::uint64_t cap = policy.max_output_bytes;
  if (req.max_output_bytes() > 0) cap = std::min<std::uint64_t>(cap, req.max_output_bytes());
  if (!req.stream_output()) {
    // Both streams and the rest of the reply in one frame the host accepts (its Hello says how
    // big), with room for the envelope.
    const std::uint64_t frame = ctx.max_reply_bytes();
    cap = std::min<std::uint64_t>(cap, frame > (8u << 10) ? (frame - (4u << 10)) / 2 : 0);
  }
  output_sink out{pb::ExecOutput::STREAM_STDOUT, cap, req.stream_output(), {}};
  output_sink err{pb::ExecOutput::STREAM_STDERR, cap, req.stream_output(), {}};
  const auto left = std::max<std::chrono::nanoseconds>(
      timeout - (std::chrono::steady_clock::now() - started), std::chrono::nanoseconds(0));
  bool timed_out = false;
  exit_status status;
  co_await (collect(child, out, err, req.stdin(), ctx, status) || watchdog(child, left, timed_out));
  if (!child.reaped()) {
    // Killed: it dies at once, unless a filesystem that never answers holds it in the kernel.
    if (auto s = co_await child.wait_for(kill_grace)) {
      status = *s;
    } else {
      status.signal = SIGKILL;
      common::log_warning(
          "audit: op=exec session={:016x} request={} pid={} did not end when killed (held in "
          "the kernel by a filesystem that does not answer?): it is reaped whenever it ends",
          ctx.session_id, ctx.request_id, child.pid());
    }
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();

  pb::Envelope reply;
  auto* r = reply.mutable_exec_result();
  r->set_pid(child.pid());
  if (status.signal != 0) {
    r->set_signal(status.signal);
  } else {
    r->set_exit_code(status.code);
  }
  r->set_timed_out(timed_out);
  r->set_duration_ms(ms);
  r->set_stdout(std::move(out.captured.data));
  r->set_stderr(std::move(err.captured.data));
  r->set_stdout_bytes(out.captured.total);
  r->set_stderr_bytes(err.captured.total);
  r->set_stdout_truncated(out.captured.total > cap);
  r->set_stderr_truncated(err.captured.total > cap);
  common::log_info("audit: op=exec session={:016x} request={} outcome={} pid={} {} {} in {:.0f} ms",
                   ctx.session_id, ctx.request_id, timed_out ? "timed-out" : "done", child.pid(),
                   status.signal != 0 ? "signal" : "exit",
                   status.signal != 0 ? status.signal : status.code, ms);
  co_return reply;
}

}  // namespace qxa::guest::ops
