// SPDX-License-Identifier: MIT
// Detached jobs: started by exec with detach (checked by exec's rules first), listed, attached
// to (the output ring replayed from the host's offsets, then followed to the job's end) and
// killed. The jobs themselves live in the agent's job table (jobs.hpp), not in a session.
#include <signal.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

using namespace asio::experimental::awaitable_operators;

namespace {

// While a followed job is quiet, its Job goes to the host this often: the host tells a quiet
// job from a lost agent by it.
constexpr auto keepalive_interval = std::chrono::seconds(5);

std::string no_such_job(const agent_state& state, std::uint64_t id) {
  return fmt::format(
      "no job {} in this agent (pid {}): jobs end with the agent that ran them, and an ended "
      "job is kept for {} s",
      id, state.pid,
      std::chrono::duration_cast<std::chrono::seconds>(state.options.keep_finished_jobs).count());
}

}  // namespace

pb::Job job_to_proto(const job& j, const agent_state& state) {
  pb::Job out;
  out.set_id(j.id());
  for (const auto& a : j.argv()) out.add_argv(common::to_utf8(a));
  out.set_user(common::to_utf8(j.user()));
  out.set_pid(j.pid());
  out.set_started_unix_ms(j.started_unix_ms());
  out.set_finished(j.finished());
  if (const auto& s = j.status()) {
    if (s->signal != 0) {
      out.set_signal(s->signal);
    } else {
      out.set_exit_code(s->code);
    }
    out.set_ended_unix_ms(j.ended_unix_ms());
    out.set_expires_unix_ms(
        j.ended_unix_ms() +
        std::chrono::duration_cast<std::chrono::milliseconds>(state.options.keep_finished_jobs)
            .count());
  }
  out.set_timed_out(j.timed_out());
  out.set_stdout_bytes(j.out().end());
  out.set_stderr_bytes(j.err().end());
  out.set_stdout_kept_from(j.out().begin());
  out.set_stderr_kept_from(j.err().begin());
  out.set_agent_pid(state.pid);
  return out;
}

asio::awaitable<pb::Envelope> start_job(const request_context& ctx, const pb::ExecRequest& req,
                                        const spawn_options& spawn, const std::string& program,
                                        const std::string& user) {
  auto jobs_owner = ctx.state.jobs;  // the table outlives this request's wait
  auto& jobs = *jobs_owner;
  if (auto no = jobs.refuse_start()) {
    co_return over_limit(ctx, "exec", refusal{"policy.max_jobs", std::move(*no)});
  }
  // Started within the request's deadline: a working directory or program that never
  // answers fails the request, it does not hold it.
  const job_table::start_slot slot(jobs);
  auto spawned = co_await child_process::start(
      jobs.executor(), spawn,
      std::min<std::chrono::nanoseconds>(ctx.state.options.request_timeout,
                                         req.timeout_ms() > 0
                                             ? std::chrono::milliseconds(req.timeout_ms())
                                             : ctx.state.options.request_timeout));
  if (!spawned) {
    common::log_info("audit: op=exec session={:016x} request={} outcome=failed program={} user={}",
                     ctx.session_id, ctx.request_id, common::log_value(spawn.argv[0]),
                     common::log_value(user));
    co_return spawn_failure(spawned.error());
  }
  job_spec spec{.argv = spawn.argv,
                .user = user,
                .input = req.stdin(),
                .timeout = std::chrono::milliseconds(req.timeout_ms()),
                .output_bytes = req.max_output_bytes()};
  auto j = jobs.start(std::move(spawned.value()), std::move(spec));
  common::log_info(
      "audit: op=exec session={:016x} request={} outcome=detached job={} program={} pid={} "
      "user={}",
      ctx.session_id, ctx.request_id, j->id(), common::log_value(program), j->pid(),
      common::log_value(user));
  pb::Envelope reply;
  *reply.mutable_job() = job_to_proto(*j, ctx.state);
  co_return reply;
}

asio::awaitable<pb::Envelope> job_list(request_context ctx, pb::Envelope) {
  pb::Envelope reply;
  auto* r = reply.mutable_jobs_reply();
  for (const auto& j : ctx.state.jobs->list()) *r->add_jobs() = job_to_proto(*j, ctx.state);
  r->set_max_jobs(ctx.state.jobs->limits().max_jobs);
  r->set_max_output_bytes(ctx.state.jobs->limits().max_output_bytes);
  co_return reply;
}

asio::awaitable<pb::Envelope> job_attach(request_context ctx, pb::Envelope request) {
  const auto& req = request.attach_request();
  auto j = ctx.state.jobs->find(req.job());
  if (!j) co_return error_reply(pb::ERROR_CODE_NOT_FOUND, no_such_job(ctx.state, req.job()));
  common::log_info("audit: op=job-attach session={:016x} request={} job={} follow={}",
                   ctx.session_id, ctx.request_id, j->id(), req.follow());
  // In pieces the host accepts (its Hello's frame limit may be small).
  const std::size_t piece = std::max<std::size_t>(ctx.max_reply_bytes() - 1024, 1024);
  std::uint64_t at[2] = {req.stdout_from(), req.stderr_from()};
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer keepalive(ex);
  for (;;) {
    // Everything the rings hold past the host's offsets; a ring that moved on past an offset
    // is read from its start, and the offset in the reply says so.
    for (int s = 0; s < 2; ++s) {
      const auto& ring = s == 0 ? j->out() : j->err();
      for (;;) {
        auto [offset, data] = ring.read(at[s], piece);
        at[s] = offset + data.size();
        if (data.empty()) break;
        pb::Envelope out;
        auto* o = out.mutable_exec_output();
        o->set_stream(s == 0 ? pb::ExecOutput::STREAM_STDOUT : pb::ExecOutput::STREAM_STDERR);
        o->set_offset(offset);
        o->set_data(std::move(data));
        if (!co_await ctx.progress(out)) {
          co_return error_reply(pb::ERROR_CODE_CANCELLED, "the host went away");
        }
      }
    }
    const bool drained = at[0] >= j->out().end() && at[1] >= j->err().end();
    if (!req.follow() || (j->finished() && drained)) break;
    if (!drained) continue;  // more arrived while the last piece was sent
    keepalive.expires_after(keepalive_interval);
    auto woke = co_await (j->changed() || keepalive.async_wait(asio::use_awaitable));
    if ((co_await asio::this_coro::cancellation_state).cancelled() !=
        asio::cancellation_type::none) {
      co_return error_reply(pb::ERROR_CODE_CANCELLED, "stopped");
    }
    if (woke.index() == 1) {
      pb::Envelope still;
      *still.mutable_job() = job_to_proto(*j, ctx.state);
      if (!co_await ctx.progress(still)) {
        co_return error_reply(pb::ERROR_CODE_CANCELLED, "the host went away");
      }
    }
  }
  pb::Envelope reply;
  *reply.mutable_job() = job_to_proto(*j, ctx.state);
  co_return reply;
}

asio::awaitable<pb::Envelope> job_kill(request_context ctx, pb::Envelope request) {
  const auto& req = request.kill_job_request();
  auto j = ctx.state.jobs->find(req.job());
  if (!j) co_return error_reply(pb::ERROR_CODE_NOT_FOUND, no_such_job(ctx.state, req.job()));
  const int sig = req.signal() == 0 ? SIGTERM : req.signal();
  if (sig < 1 || sig >= NSIG) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, fmt::format("no signal {}", sig));
  }
  if (!job_table::signal(*j, sig)) {
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION,
                          fmt::format("job {} has already ended", j->id()));
  }
  common::log_info("audit: op=job-kill session={:016x} request={} job={} pid={} signal={}",
                   ctx.session_id, ctx.request_id, j->id(), j->pid(), sig);
  pb::Envelope reply;
  *reply.mutable_job() = job_to_proto(*j, ctx.state);
  co_return reply;
}

}  // namespace qxa::guest::ops
