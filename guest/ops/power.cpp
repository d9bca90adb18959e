// SPDX-License-Identifier: MIT
// power: poweroff, reboot or halt after an optional delay in seconds. The power hooks run
// first (their outcomes go in the reply; a failed one does not stop the action: a guest must
// not refuse a shutdown because a script failed), then the reply goes out; the action runs
// later through the guest's own service manager (systemctl when systemd runs, else the
// poweroff / reboot / halt commands), so that services stop cleanly.

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/core/session.hpp"
#include "qxa/guest/mech/process.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/programs.hpp"

namespace qxa::guest::ops {

namespace {

const char* verb(pb::PowerRequest::Action a) {
  switch (a) {
    case pb::PowerRequest::ACTION_POWEROFF:
      return "poweroff";
    case pb::PowerRequest::ACTION_REBOOT:
      return "reboot";
    case pb::PowerRequest::ACTION_HALT:
      return "halt";
    default:
      return nullptr;
  }
}

}  // namespace

asio::awaitable<pb::Envelope> power(request_context ctx, pb::Envelope request) {
  const auto& req = request.power_request();
  const char* action = verb(req.action());
  if (action == nullptr) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "say poweroff, reboot or halt");
  }
  auto command = power_command(action, systemd_running(ctx.state.options.power.systemd_dir),
                               spawn_options{}.path);
  if (command.empty()) {
    co_return error_reply(pb::ERROR_CODE_NOT_SUPPORTED,
                          fmt::format("no systemctl and no {} command in this guest", action));
  }
  const auto delay = std::chrono::seconds(req.delay_seconds());
  std::string method;
  for (const auto& a : command) method += (method.empty() ? "" : " ") + a;
  common::log_info(
      "audit: op=power session={:016x} request={} outcome=scheduled action={} "
      "delay={}s method='{}'",
      ctx.session_id, ctx.request_id, action, req.delay_seconds(), method);
  auto ex = co_await asio::this_coro::executor;
  pb::Envelope reply;
  for (const auto& o : co_await run_hooks(ex, ctx.state.options.power.hooks_dir, action,
                                          ctx.state.options.power.hook_timeout)) {
    if (!o.ok) common::log_warning("{}", describe(o));
    *reply.mutable_power_reply()->add_hooks() = hook_to_proto(o);
  }
  asio::co_spawn(
      ex,
      [](asio::any_io_executor on, std::vector<std::string> argv, std::chrono::seconds wait,
         std::shared_ptr<session> owner) -> asio::awaitable<void> {
        asio::steady_timer t(on);
        // Let the reply leave first, then wait out the delay.
        t.expires_after(std::chrono::milliseconds(100));
        co_await t.async_wait(asio::use_awaitable);
        if (owner && owner->is_open())
          (void)co_await owner->stream().flush(std::chrono::seconds(2));
        t.expires_after(wait);
        co_await t.async_wait(asio::use_awaitable);
        spawn_options o;
        o.argv = argv;
        o.env = {"PATH=" + o.path};
        auto child = co_await child_process::start(on, o, std::chrono::seconds(30));
        if (!child) {
          common::log_error("{} failed: {}", argv.front(), child.error().message);
          co_return;
        }
        const auto st = co_await child.value()->wait();
        if (st.code != 0) {
          common::log_error("{} ended with status {} (signal {})", argv.front(), st.code,
                            st.signal);
        }
      }(ex, command, delay, ctx.owner),
      common::contained("a scheduled power action"));
  reply.mutable_power_reply()->set_method(method);
  reply.mutable_power_reply()->set_at_unix_ms(
      common::unix_ms(std::chrono::system_clock::now() + delay));
  co_return reply;
}

}  // namespace qxa::guest::ops
