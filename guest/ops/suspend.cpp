// SPDX-License-Identifier: MIT
// suspend: to RAM, to disk or hybrid (suspend.hpp), with the power hooks around it. The reply
// leaves before the guest sleeps; what happened at the wake-up (the resume hooks, how long the
// guest slept, a suspend that failed) is kept for Info.last_resume.
#include "qxa/guest/platform/suspend.hpp"

#include <sys/stat.h>

#include <asio/co_spawn.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/core/session.hpp"
#include "qxa/guest/mech/hooks.hpp"
#include "qxa/guest/mech/own_thread.hpp"
#include "qxa/guest/mech/process.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

namespace {

// The sysfs write, which returns only after the wake-up, on a thread of its own.
struct sysfs_suspend final : thread_work {
  std::string sys_root;
  suspend_mode mode = suspend_mode::ram;
  std::optional<std::string> error;
  void run() override { error = suspend_through_sysfs(sys_root, mode); }
};

// Sleeps the guest and wakes it: runs after the reply has left.
asio::awaitable<void> sleep_and_wake(agent_state& state, suspend_mode mode,
                                     std::vector<std::string> command,
                                     std::shared_ptr<session> owner) {
  auto ex = co_await asio::this_coro::executor;
  asio::steady_timer t(ex);
  t.expires_after(std::chrono::milliseconds(100));
  co_await t.async_wait(asio::use_awaitable);
  if (owner && owner->is_open()) (void)co_await owner->stream().flush(std::chrono::seconds(2));

  pb::ResumeRecord record;
  record.set_mode(std::string(mode_name(mode)));
  record.set_suspended_unix_ms(common::unix_ms());
  const double asleep_before = seconds_asleep_so_far();
  if (command.empty()) {
    auto work = std::make_shared<sysfs_suspend>();
    work->sys_root = state.options.sys_root;
    work->mode = mode;
    if (auto ec = co_await run_on_own_thread(work)) {
      record.set_error("cannot start the suspend: " + ec.message());
    } else if (work->error) {
      record.set_error(*work->error);
    }
  } else {
    spawn_options o;
    o.argv = command;
    o.env = {"PATH=" + o.path};
    auto child = co_await child_process::start(ex, o, std::chrono::seconds(30));
    if (!child) {
      record.set_error(command.front() + ": " + child.error().message);
    } else if (const auto st = co_await child.value()->wait(); st.code != 0 || st.signal != 0) {
      record.set_error(fmt::format("{} {} ended with {} {}", command[0], command[1],
                                   st.signal != 0 ? "signal" : "status",
                                   st.signal != 0 ? st.signal : st.code));
    }
  }
  record.set_resumed_unix_ms(common::unix_ms());
  record.set_slept_seconds(std::max(0.0, seconds_asleep_so_far() - asleep_before));
  // Resume hooks undo suspend hooks: in reverse order, also when the suspend failed.
  for (const auto& o : co_await run_hooks(ex, state.options.power.hooks_dir, "resume",
                                          state.options.power.hook_timeout, true)) {
    if (!o.ok) common::log_warning("{}", describe(o));
    *record.add_hooks() = hook_to_proto(o);
  }
  common::log_info("audit: op=resume mode={} outcome={} slept={:.1f}s hooks={}", mode_name(mode),
                   record.error().empty() ? "ok" : "failed " + record.error(),
                   record.slept_seconds(), record.hooks_size());
  state.last_resume = std::move(record);
  state.suspending = false;
}

}  // namespace

pb::HookOutcome hook_to_proto(const hook_outcome& o) {
  pb::HookOutcome p;
  p.set_hook(common::to_utf8(o.hook));
  p.set_phase(o.phase);
  p.set_ok(o.ok);
  p.set_exit_status(o.exit_status);
  p.set_signal(o.signal);
  p.set_timed_out(o.timed_out);
  p.set_error(common::to_utf8(o.error));
  p.set_duration_ms(static_cast<std::uint32_t>(o.duration.count()));
  return p;
}

asio::awaitable<pb::Envelope> suspend(request_context ctx, pb::Envelope request) {
  suspend_mode mode;
  switch (request.suspend_request().mode()) {
    case pb::SuspendRequest::MODE_RAM:
      mode = suspend_mode::ram;
      break;
    case pb::SuspendRequest::MODE_DISK:
      mode = suspend_mode::disk;
      break;
    case pb::SuspendRequest::MODE_HYBRID:
      mode = suspend_mode::hybrid;
      break;
    default:
      co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "say ram, disk or hybrid");
  }
  auto& state = ctx.state;
  const auto refusal =
      suspend_refusal(state.options.sys_root,
                      read_file(state.sampler.sources().proc_root + "/swaps").value_or(""), mode);
  if (refusal) {
    common::log_info("audit: op=suspend session={:016x} request={} mode={} outcome=refused {}",
                     ctx.session_id, ctx.request_id, mode_name(mode), *refusal);
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, *refusal);
  }
  if (state.suspending) {
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, "a suspend is already under way");
  }
  // Until the sleep is handed on: a request cancelled while its hooks run (the host went
  // away) must not leave the guest refusing every later suspend.
  struct under_way {
    bool& flag;
    bool handed_on = false;
    ~under_way() {
      if (!handed_on) flag = false;
    }
  };
  state.suspending = true;
  under_way guard{state.suspending};
  auto command =
      suspend_command(mode, systemd_running(state.options.power.systemd_dir), spawn_options{}.path);
  std::string method;
  for (const auto& a : command) method += (method.empty() ? "" : " ") + a;
  if (method.empty()) {
    method = fmt::format("{}{} > /sys/power/state",
                         mode == suspend_mode::hybrid ? "echo suspend > /sys/power/disk; " : "",
                         mode == suspend_mode::ram ? "echo mem" : "echo disk");
  }

  auto ex = co_await asio::this_coro::executor;
  pb::Envelope reply;
  auto* r = reply.mutable_suspend_reply();
  r->set_method(method);
  std::string failed;
  for (const auto& o : co_await run_hooks(ex, state.options.power.hooks_dir, "suspend",
                                          state.options.power.hook_timeout)) {
    if (!o.ok && failed.empty()) failed = describe(o);
    *r->add_hooks() = hook_to_proto(o);
  }
  if (!failed.empty()) {
    // Not ready to sleep: what the hooks prepared is undone, and the guest stays up.
    for (const auto& o : co_await run_hooks(ex, state.options.power.hooks_dir, "resume",
                                            state.options.power.hook_timeout, true)) {
      if (!o.ok) common::log_warning("{}", describe(o));
    }
    common::log_info("audit: op=suspend session={:016x} request={} mode={} outcome=failed {}",
                     ctx.session_id, ctx.request_id, mode_name(mode), failed);
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, "a suspend hook failed: " + failed);
  }
  common::log_info(
      "audit: op=suspend session={:016x} request={} mode={} outcome=scheduled "
      "method='{}'",
      ctx.session_id, ctx.request_id, mode_name(mode), method);
  asio::co_spawn(ex, sleep_and_wake(state, mode, std::move(command), ctx.owner),
                 common::contained("a suspend"));
  guard.handed_on = true;
  co_return reply;
}

}  // namespace qxa::guest::ops
