// SPDX-License-Identifier: MIT
// freeze, thaw and freeze-status: the wire side of the freezer (see freezer.hpp).
#include <algorithm>
#include <asio/co_spawn.hpp>
#include <optional>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/mech/freezer.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/platform/block_devices.hpp"

namespace qxa::guest::ops {

namespace {

using freeze_result = common::result<guest::freeze_status>;

struct shared_outcome {
  explicit shared_outcome(const asio::any_io_executor& e) : done(e) {}
  std::optional<freeze_result> outcome;
  common::async_event done;
};

asio::awaitable<void> run_into(asio::awaitable<freeze_result> op,
                               std::shared_ptr<shared_outcome> state) {
  // Whatever happens, the waiter gets an outcome: an exception is this operation's failure.
  try {
    state->outcome.emplace(co_await std::move(op));
  } catch (const std::exception& e) {
    state->outcome.emplace(freeze_result{common::errc::internal, e.what()});
  }
  state->done.notify_all();
}

// Runs a freeze or thaw to its end even when the request is cancelled (the host went away):
// stopping half way would leave hooks run and mounts frozen with no one in charge of them.
asio::awaitable<freeze_result> to_completion(asio::awaitable<freeze_result> op) {
  auto ex = co_await asio::this_coro::executor;
  auto state = std::make_shared<shared_outcome>(ex);
  asio::co_spawn(ex, run_into(std::move(op), state), common::contained("a freeze or thaw"));
  while (!state->outcome) co_await state->done.wait();
  co_return std::move(*state->outcome);
}

// The writable disk filesystems on the disks with these serials.
common::result<std::vector<std::string>> mounts_on_serials(
    const request_context& ctx, const std::vector<std::string>& serials) {
  auto text = read_file(ctx.state.options.freeze.mountinfo);
  if (!text) return {common::errc::unavailable, "cannot read the mount table"};
  auto writable = writable_disks(parse_mountinfo(*text), {}, "freezable");
  if (!writable) return writable.error();
  return mounts_on_disks(writable.value(), read_block_devices(ctx.state.options.sys_root), serials);
}

pb::Envelope status_reply(const guest::freeze_status& s) {
  pb::Envelope reply;
  *reply.mutable_freeze_status() = ops::to_proto(s);
  return reply;
}

}  // namespace

pb::FreezeStatus to_proto(const guest::freeze_status& s) {
  pb::FreezeStatus out;
  out.set_frozen(s.frozen);
  for (const auto& m : s.mounts) {
    auto* o = out.add_mounts();
    o->set_mount_point(common::to_utf8(m.mount_point));
    o->set_ok(m.ok);
    o->set_error(common::to_utf8(m.error));
  }
  out.set_lease_expires_unix_ms(s.lease_expires_unix_ms);
  for (const auto& e : s.hook_errors) out.add_hook_errors(common::to_utf8(e));
  out.set_thawed_by(s.thawed_by);
  return out;
}

asio::awaitable<pb::Envelope> freeze(request_context ctx, pb::Envelope request) {
  const auto& req = request.freeze_request();
  auto& f = *ctx.state.freeze;
  const bool renewal = f.frozen();
  std::vector<std::string> mount_points(req.mount_points().begin(), req.mount_points().end());
  if (req.disk_serials_size() > 0 && !renewal) {
    auto on_disks = mounts_on_serials(ctx, {req.disk_serials().begin(), req.disk_serials().end()});
    if (!on_disks) {
      common::log_info("audit: op=freeze session={:016x} request={} outcome=failed {}",
                       ctx.session_id, ctx.request_id, on_disks.error().message);
      co_return error_reply(on_disks.code() == common::errc::invalid_argument
                                ? pb::ERROR_CODE_INVALID_ARGUMENT
                                : pb::ERROR_CODE_UNAVAILABLE,
                            on_disks.error().message);
    }
    for (auto& m : on_disks.value()) {
      if (std::find(mount_points.begin(), mount_points.end(), m) == mount_points.end()) {
        mount_points.push_back(std::move(m));
      }
    }
  }
  auto r = co_await to_completion(
      f.freeze(std::move(mount_points), std::chrono::milliseconds(req.lease_ms())));
  // While frozen, this line is held in memory and written after the thaw.
  common::log_info("audit: op=freeze session={:016x} request={} outcome={}{}", ctx.session_id,
                   ctx.request_id, r ? (renewal ? "renewed" : "frozen") : "failed",
                   r ? "" : " " + r.error().message);
  if (!r) {
    co_return error_reply(r.code() == common::errc::invalid_argument
                              ? pb::ERROR_CODE_INVALID_ARGUMENT
                              : pb::ERROR_CODE_FAILED_PRECONDITION,
                          r.error().message);
  }
  co_return status_reply(std::move(r.value()));
}

asio::awaitable<pb::Envelope> thaw(request_context ctx, pb::Envelope) {
  auto r = co_await to_completion(ctx.state.freeze->thaw("host"));
  common::log_info("audit: op=thaw session={:016x} request={} outcome={}", ctx.session_id,
                   ctx.request_id, r ? "ok" : r.error().message);
  if (!r) co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, r.error().message);
  co_return status_reply(std::move(r.value()));
}

asio::awaitable<pb::Envelope> freeze_status(request_context ctx, pb::Envelope) {
  co_return status_reply(ctx.state.freeze->status());
}

}  // namespace qxa::guest::ops
