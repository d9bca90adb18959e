// SPDX-License-Identifier: MIT
#include "qxa/guest/core/run_operation.hpp"

#include <fmt/format.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "qxa/common/envelope.hpp"
#include "qxa/common/log.hpp"

namespace qxa::guest {

using namespace asio::experimental::awaitable_operators;

std::optional<refusal_reply> check_operation(const operation& op, const local_policy& policy,
                                             bool frozen) {
  using reason = refusal_reply::reason;
  if (auto no = policy.check_operation(op.name)) {
    return refusal_reply{reason::policy, pb::ERROR_CODE_PERMISSION_DENIED, no->message, no->rule,
                         op.name};
  }
  if (frozen && !op.while_frozen) {
    return refusal_reply{
        reason::frozen, pb::ERROR_CODE_FAILED_PRECONDITION,
        fmt::format("the guest's filesystems are frozen: {} must wait for the thaw", op.name),
        "frozen", op.name};
  }
  return std::nullopt;
}

std::variant<const operation*, refusal_reply> check_request(operation_table table,
                                                            const local_policy& policy,
                                                            const pb::Envelope& request,
                                                            bool frozen) {
  using reason = refusal_reply::reason;
  const auto* op = find_operation(table, request.body_case());
  if (op == nullptr) {
    return refusal_reply{reason::unknown,
                         pb::ERROR_CODE_UNKNOWN_REQUEST,
                         fmt::format("this agent does not handle {}", common::body_name(request)),
                         {}};
  }
  if (auto no = check_operation(*op, policy, frozen)) return std::move(*no);
  return op;
}

std::variant<admitted, refusal_reply> admit(operation_table table, const local_policy& policy,
                                            const pb::Envelope& request, bool frozen,
                                            inflight_limit& limit) {
  auto checked = check_request(table, policy, request, frozen);
  if (auto* no = std::get_if<refusal_reply>(&checked)) return std::move(*no);
  const auto* op = std::get<const operation*>(checked);
  auto slot = limit.try_take();
  if (!slot) {
    return refusal_reply{refusal_reply::reason::busy,
                         pb::ERROR_CODE_TOO_MANY_REQUESTS,
                         fmt::format("{} requests already in flight", limit.count()),
                         {},
                         op->name};
  }
  return admitted{op, std::move(*slot)};
}

namespace {

// An exception from an operation (a descriptor it could not get, a bug) is its request's
// failure, answered at once: otherwise it would never win the race below, and the caller would
// see a timeout much later, or never for an operation with its own deadline.
asio::awaitable<pb::Envelope> guarded(const operation& op, request_context ctx,
                                      pb::Envelope request) {
  asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
  try {
    co_return co_await op.handle(ctx, std::move(request));
  } catch (const std::exception& e) {
    if (cs.cancelled() != asio::cancellation_type::none) {
      // Stopped (cancelled, timed out, the host gone): the race has its outcome already, and
      // an operation ended by that is no failure.
      common::log_debug("request {} ({}) stopped: {}", ctx.request_id, op.name, e.what());
      co_return error_reply(pb::ERROR_CODE_CANCELLED, "stopped");
    }
    common::log_error("request {} ({}) of session {:016x} failed inside the agent: {}",
                      ctx.request_id, op.name, ctx.session_id, e.what());
    co_return error_reply(pb::ERROR_CODE_INTERNAL,
                          fmt::format("{} failed inside the agent: {}", op.name, e.what()));
  }
}

asio::awaitable<void> never() {
  asio::steady_timer forever(co_await asio::this_coro::executor);
  forever.expires_at(asio::steady_timer::time_point::max());
  co_await forever.async_wait(asio::use_awaitable);
}

}  // namespace

asio::awaitable<operation_outcome> run_operation(const operation& op, request_context ctx,
                                                 pb::Envelope request,
                                                 std::chrono::nanoseconds request_timeout,
                                                 std::function<asio::awaitable<void>()> stop,
                                                 std::function<std::string()> why_stopped) {
  asio::steady_timer deadline(co_await asio::this_coro::executor);
  deadline.expires_after(op.own_deadline ? std::chrono::nanoseconds::max() / 2 : request_timeout);
  const auto id = ctx.request_id;
  // Each awaitable is a named object before the race: GCC 12 mishandles the lifetime of an
  // awaitable made by a conditional expression inside a co_await.
  asio::awaitable<pb::Envelope> run = guarded(op, std::move(ctx), std::move(request));
  asio::awaitable<void> stopped = stop ? stop() : never();
  auto outcome =
      co_await (std::move(run) || deadline.async_wait(asio::use_awaitable) || std::move(stopped));
  if (outcome.index() == 0) {
    co_return operation_outcome{operation_outcome::end::replied, std::move(std::get<0>(outcome))};
  }
  if (outcome.index() == 1) {
    common::log_warning(
        "request {} ({}) timed out after {} ms", id, op.name,
        std::chrono::duration_cast<std::chrono::milliseconds>(request_timeout).count());
    co_return operation_outcome{operation_outcome::end::timed_out,
                                error_reply(pb::ERROR_CODE_TIMEOUT, "the request timed out")};
  }
  const std::string why = why_stopped ? why_stopped() : std::string("stopped");
  common::log_info("request {} ({}) cancelled: {}", id, op.name, why);
  co_return operation_outcome{
      operation_outcome::end::stopped,
      error_reply(pb::ERROR_CODE_CANCELLED, fmt::format("cancelled: {}", why))};
}

}  // namespace qxa::guest
