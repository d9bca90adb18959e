// SPDX-License-Identifier: MIT
#include "qxa/guest/core/session.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <type_traits>
#include <variant>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/version.hpp"
#include "qxa/guest/core/log_text.hpp"
#include "qxa/guest/core/operation.hpp"

namespace qxa::guest {

using namespace asio::experimental::awaitable_operators;

session::session(agent_state& state, std::shared_ptr<guest_stream> stream,
                 std::optional<operation_table> table)
    : state_(state),
      stream_(std::move(stream)),
      gate_(table.value_or(state.parts.operations), state.options.policy, *state.inflight) {}

asio::awaitable<void> session::run() {
  stream_->start();
  pb::Envelope ready;
  auto* r = ready.mutable_agent_ready();
  r->set_software_version(common::software_version);
  r->set_boot_id(state_.boot_id);
  r->set_agent_pid(state_.pid);
  r->set_agent_started_unix_ms(state_.started_unix_ms);
  (void)stream_->post(ready);

  for (;;) {
    // Back-pressure: a host that sends requests but does not read replies is not served more.
    co_await stream_->wait_queue_below(state_.options.max_queued_reply_bytes);
    auto received = co_await stream_->receive();
    if (!received) {
      const auto& st = stream_->stats();
      const auto& dec = stream_->decoding();
      common::log_info("{}: {}; {} frames in, {} out, {} damaged, {} garbage bytes",
                       log_text::host_gone, received.error().describe(), st.frames_received,
                       st.frames_sent, dec.damaged_frames, dec.garbage_bytes);
      break;
    }
    handle(std::move(received.value()));
  }
  cancel_all("the host connection ended");
  if (auto n = state_.uploads->abort_session(gate_.session())) {
    common::log_info("{} {}", n, log_text::uploads_discarded);
  }
  stream_->close(make_error_code(common::errc::connection_lost));
}

void session::handle(pb::Envelope envelope) {
  auto action = gate_.on_envelope(envelope, state_.frozen());
  std::visit(
      [&](auto& a) {
        using A = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<A, request_gate::ignore>) {
          common::log_debug("ignored {} (reply_to {}, request_id {})", common::body_name(envelope),
                            envelope.reply_to(), envelope.request_id());
        } else if constexpr (std::is_same_v<A, request_gate::refuse>) {
          refuse(envelope, a);
        } else if constexpr (std::is_same_v<A, request_gate::open_session>) {
          answer_hello(envelope, a);
        } else if constexpr (std::is_same_v<A, request_gate::answer_ping>) {
          // The heartbeat is answered at once, without a coroutine of its own: it is the most
          // frequent request and the one whose latency matters.
          common::log_debug("request {} (ping) of session {:016x} executed", envelope.request_id(),
                            gate_.session());
          reply(envelope.request_id(), pong_for(envelope));
        } else if constexpr (std::is_same_v<A, request_gate::cancel>) {
          cancel(envelope.request_id(), a.target);
        } else if constexpr (std::is_same_v<A, request_gate::credit>) {
          // Not answered; a credit for a request that has ended is dropped.
          if (auto it = running_.find(a.target); it != running_.end()) {
            it->second->credit(a.replies);
          }
        } else {
          static_assert(std::is_same_v<A, request_gate::run>);
          // The request holds its place in flight until this coroutine ends, however it ends;
          // the lambda holds the session for as long.
          asio::co_spawn(
              stream_->get_executor(),
              [self = shared_from_this(), entry = a.entry, slot = std::move(a.slot),
               request = std::move(envelope)]() mutable {
                return self->execute(*entry, std::move(slot), std::move(request));
              },
              common::contained("a request's coroutine"));
        }
      },
      action);
}

asio::awaitable<void> session::execute(const operation& entry, inflight_limit::slot slot,
                                       pb::Envelope request) {
  const std::uint64_t id = request.request_id();
  const std::uint64_t stamped = request.session_id();
  if (!gate_.is_current(stamped)) {
    // A Hello read after this request (a host that reconnected before we saw it leave) ended
    // its session before it could start.
    common::log_info("request {} ({}) of session {:016x} not run: session {:016x} replaced it", id,
                     entry.name, stamped, gate_.session());
    co_return;
  }
  auto ex = co_await asio::this_coro::executor;
  auto stop = std::make_shared<stopper>(ex, request.stream_window());
  running_[id] = stop;
  struct running_guard {
    std::map<std::uint64_t, std::shared_ptr<stopper>>& running;
    std::uint64_t id;
    ~running_guard() { running.erase(id); }
  } listed{running_, id};
  // Named, not temporaries of the co_await's full expression: GCC 12 destroys such temporaries
  // twice when the coroutine suspends inside it (here, a shared_ptr released once too often).
  request_context ctx{state_, stamped, id, shared_from_this()};
  std::function<asio::awaitable<void>()> wait_stop = [stop] { return stop->wait(); };
  std::function<std::string()> why = [stop] { return std::string(stop->why); };
  auto outcome =
      co_await run_operation(entry, std::move(ctx), std::move(request),
                             state_.options.request_timeout, std::move(wait_stop), std::move(why));
  slot = {};  // the operation has ended: its place in flight is free
  // A timeout or a cancellation is logged whoever is left to hear it; "executed" only while
  // the session that asked is current (the logs then show no request of an old session run);
  // the answer goes only to that session.
  const bool current = gate_.is_current(stamped) && stream_->is_open();
  if (outcome.how == operation_outcome::end::replied && current) {
    common::log_debug("request {} ({}) of session {:016x} executed", id, entry.name, stamped);
  }
  // A final reply never overtakes the request's own partial replies.
  const bool may_overtake =
      outcome.how == operation_outcome::end::timed_out || !stop->sent_progress;
  pb::Envelope answer = std::move(outcome.reply);
  if (!current) {
    // Never hand an answer to a session that did not ask.
    common::log_info("reply to request {} ({}) dropped: session {:016x} has ended", id, entry.name,
                     stamped);
  } else {
    reply(id, std::move(answer), may_overtake);
  }
  if (state_.exit_after_reply && state_.exit_now) {
    // The host learns what happened before the agent goes (an upgrade).
    if (current) co_await stream_->flush(std::chrono::seconds(3));
    if (state_.exit_now) state_.exit_now();
  }
}

void session::cancel(std::uint64_t request_id, std::uint64_t target) {
  auto it = running_.find(target);
  pb::Envelope body;
  body.mutable_cancel_reply()->set_found(it != running_.end());
  if (it != running_.end())
    it->second->stop(log_text::host_cancelled.data());  // a literal: NUL-terminated
  reply(request_id, std::move(body));
}

void session::cancel_all(const char* why) {
  auto running = running_;  // stopping one may end it and erase it
  for (auto& [id, stop] : running) stop->stop(why);
}

asio::awaitable<bool> session::send_progress(std::uint64_t stamped, std::uint64_t request_id,
                                             pb::Envelope& body) {
  // Bulk data waits while this much is queued, so that a small reply (a pong) is never stuck
  // behind much of it; urgent replies overtake what is queued anyway.
  constexpr std::size_t bulk_queue_bytes = 1u << 20;
  if (!gate_.is_current(stamped) || !stream_->is_open()) co_return false;
  // A request the host paces (stream_window) waits for its credit: whoever reads its partial
  // replies at the far end of the host is slower than the channel.
  auto running = running_.find(request_id);
  std::shared_ptr<stopper> stop = running != running_.end() ? running->second : nullptr;
  if (stop) co_await stop->wait_for_credit();
  co_await stream_->wait_queue_below(bulk_queue_bytes);
  if (!gate_.is_current(stamped) || !stream_->is_open()) co_return false;
  if (stop && stop->stopped) co_return false;
  body.set_reply_to(request_id);
  body.set_session_id(stamped);
  body.set_more(true);
  if (!fits(body)) {
    common::log_warning("partial reply to request {} is over the host's limit of {}: stopped",
                        request_id, max_reply_bytes());
    co_return false;
  }
  if (stop) {
    stop->sent_progress = true;
    ++stop->unacknowledged;
  }
  // Partial replies have no deadline of their own beyond the stream's: the write timeout.
  co_return !stream_->post(body);
}

asio::awaitable<bool> request_context::progress(pb::Envelope& body) const {
  if (!owner) {
    if (on_progress) on_progress(body);
    co_return true;
  }
  co_return co_await owner->send_progress(session_id, request_id, body);
}

std::uint32_t request_context::max_reply_bytes() const {
  return owner ? owner->max_reply_bytes() : state.options.max_frame_size;
}

std::uint32_t session::max_reply_bytes() const noexcept {
  const auto own = state_.options.max_frame_size;
  const auto host = gate_.host_max_frame();
  return host != 0 ? std::min(own, host) : own;
}

bool session::fits(const pb::Envelope& message) const {
  return message.ByteSizeLong() <= max_reply_bytes();
}

void session::answer_hello(const pb::Envelope& request, const request_gate::open_session& opened) {
  const auto& hello = request.hello();
  const std::uint64_t id = opened.session;
  if (opened.replaced != 0) {
    cancel_all("the host opened a new session");
    state_.uploads->abort_session(opened.replaced);
    common::log_info("session {:016x} {} {} (protocol {}), replacing session {:016x}", id,
                     log_text::session_started, hello.software_version(), hello.protocol_version(),
                     opened.replaced);
  } else if (opened.repeated) {
    common::log_debug("Hello repeated for session {:016x}", id);
  } else {
    common::log_info("session {:016x} {} {} (protocol {})", id, log_text::session_started,
                     hello.software_version(), hello.protocol_version());
  }
  if (!opened.repeated) {
    ++state_.sessions;  // a repeated Hello is the same session
    told_stale_ = 0;
  }
  const pb::Info info = state_.parts.info ? state_.parts.info(state_) : pb::Info{};
  pb::Envelope reply;
  auto* ack = reply.mutable_hello_ack();
  ack->set_session_id(id);
  ack->set_protocol_version(common::protocol_version);
  ack->set_software_version(common::software_version);
  ack->mutable_limits()->set_max_frame_bytes(state_.options.max_frame_size);
  ack->mutable_limits()->set_max_inflight_requests(state_.options.max_inflight_requests);
  for (const auto& name : gate_.capabilities()) ack->add_capabilities(name);
  *ack->mutable_os() = info.os();
  ack->set_hostname(info.hostname());
  ack->set_boot_id(state_.boot_id);
  ack->set_agent_pid(state_.pid);
  ack->set_agent_started_unix_ms(state_.started_unix_ms);
  this->reply(request.request_id(), std::move(reply));
}

void session::refuse(const pb::Envelope& request, const request_gate::refuse& no) {
  using reason = request_gate::reason;
  switch (no.why) {
    // Both come from a host that is gone: its heartbeats and calls wait in the port while
    // no agent reads (a restart, a reboot) or arrive after its successor's Hello. Expected, so
    // not a warning: the first of each kind in a session is told, the rest only at debug.
    case reason::no_session:
      common::log(told_before_hello_++ == 0 ? common::log_level::info : common::log_level::debug,
                  "refused request {} ({}) {}; further ones until a Hello are logged at debug",
                  request.request_id(), common::body_name(request), log_text::before_hello);
      break;
    case reason::stale_session:
      common::log(told_stale_++ == 0 ? common::log_level::info : common::log_level::debug,
                  "{} {} ({}) of session {:016x}; the current session is {:016x}",
                  log_text::stale_request, request.request_id(), common::body_name(request),
                  request.session_id(), gate_.session());
      break;
    case reason::policy:
      // One audit line per refused operation, in the journal.
      common::log_warning("audit: op={} session={:016x} request={} {} rule={}", no.operation,
                          gate_.session(), request.request_id(), log_text::audit_refused, no.rule);
      break;
    default:
      common::log_debug("refused request {} ({}): {}", request.request_id(),
                        common::body_name(request), no.message);
      break;
  }
  auto body = error_reply(no.code, no.message);
  if (!no.rule.empty()) body.mutable_error()->set_rule(no.rule);
  reply(request.request_id(), std::move(body));
}

void session::reply(std::uint64_t request_id, pb::Envelope body, bool may_overtake) {
  body.set_reply_to(request_id);
  body.set_session_id(gate_.session());
  if (!fits(body)) {
    const auto size = body.ByteSizeLong();
    common::log_warning("reply to request {} ({}) is {} bytes, over the host's limit of {}",
                        request_id, common::body_name(body), size, max_reply_bytes());
    body = error_reply(
        pb::ERROR_CODE_RESOURCE_EXHAUSTED,
        fmt::format("the reply is {} bytes, more than the host accepts ({}); ask for less "
                    "(a page of a listing, a streamed command)",
                    size, max_reply_bytes()));
    body.set_reply_to(request_id);
    body.set_session_id(gate_.session());
  }
  // Small answers overtake queued bulk data (command output, file chunks).
  common::send_options o;
  o.urgent = may_overtake && body.ByteSizeLong() <= 64u << 10;
  if (auto ec = stream_->post(body, o)) {
    common::log_debug("reply to {} not queued: {}", request_id, ec.message());
  }
}

}  // namespace qxa::guest
