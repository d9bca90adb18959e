// SPDX-License-Identifier: MIT
#include "qxa/guest/session.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>

#include "../handlers/handlers.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/version.hpp"

namespace qxa::guest {

using namespace asio::experimental::awaitable_operators;

session::session(agent_state& state, std::shared_ptr<guest_stream> stream)
    : state_(state), stream_(std::move(stream)) {}

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
      common::log_info(
          "host connection ended: {}; {} frames in, {} out, {} damaged, {} garbage bytes",
          received.error().describe(), st.frames_received, st.frames_sent, dec.damaged_frames,
          dec.garbage_bytes);
      break;
    }
    handle(std::move(received.value()));
  }
  cancel_all("the host connection ended");
  if (auto n = state_.uploads->abort_session(session_id_)) {
    common::log_info("{} unfinished file uploads discarded", n);
  }
  stream_->close(make_error_code(common::errc::connection_lost));
}

void session::handle(pb::Envelope envelope) {
  if (envelope.reply_to() != 0 || envelope.request_id() == 0) {
    // Replies and events from the host need no answer.
    common::log_debug("ignored {} (reply_to {}, request_id 0)", common::body_name(envelope),
                      envelope.reply_to());
    return;
  }
  if (envelope.has_hello()) {
    answer_hello(envelope);
    return;
  }
  if (!handshaken()) {
    common::log_warning("refused request {} ({}) received before any Hello", envelope.request_id(),
                        common::body_name(envelope));
    refuse(envelope, pb::ERROR_CODE_NO_SESSION, "no session: send Hello first");
    return;
  }
  if (envelope.session_id() != session_id_) {
    common::log_warning(
        "refused stale request {} ({}) of session {:016x}; the current session is {:016x}",
        envelope.request_id(), common::body_name(envelope), envelope.session_id(), session_id_);
    refuse(envelope, pb::ERROR_CODE_STALE_SESSION,
           fmt::format("request belongs to session {:016x}, not the current {:016x}",
                       envelope.session_id(), session_id_));
    return;
  }
  if (envelope.has_cancel_request()) {
    cancel(envelope);
    return;
  }
  const auto* entry = handlers::find(envelope.body_case());
  if (entry == nullptr) {
    refuse(envelope, pb::ERROR_CODE_UNKNOWN_REQUEST,
           fmt::format("this agent does not handle {}", common::body_name(envelope)));
    return;
  }
  if (auto no = state_.options.policy.check_operation(entry->name)) {
    // One audit line per refused operation, in the journal.
    common::log_warning("audit: op={} session={:016x} request={} outcome=refused rule={}",
                        entry->name, session_id_, envelope.request_id(), no->rule);
    refuse(envelope, pb::ERROR_CODE_PERMISSION_DENIED, no->message, no->rule);
    return;
  }
  if (state_.frozen() && !entry->while_frozen) {
    refuse(
        envelope, pb::ERROR_CODE_FAILED_PRECONDITION,
        fmt::format("the guest's filesystems are frozen: {} must wait for the thaw", entry->name),
        "frozen");
    return;
  }
  if (envelope.has_ping()) {
    // The heartbeat is answered at once, without a coroutine of its own: it is the most frequent
    // request and the one whose latency matters.
    common::log_debug("request {} (ping) of session {:016x} executed", envelope.request_id(),
                      session_id_);
    reply(envelope.request_id(), handlers::pong_for(envelope));
    return;
  }
  if (inflight_ >= state_.options.max_inflight_requests) {
    refuse(envelope, pb::ERROR_CODE_TOO_MANY_REQUESTS,
           fmt::format("{} requests already in flight", inflight_));
    return;
  }
  ++inflight_;
  asio::co_spawn(stream_->get_executor(), execute(std::move(envelope)),
                 [self = shared_from_this()](std::exception_ptr e) {
                   --self->inflight_;
                   if (e) std::rethrow_exception(e);  // a bug: let it surface
                 });
}

asio::awaitable<void> session::execute(pb::Envelope request) {
  const auto* entry = handlers::find(request.body_case());
  const std::uint64_t id = request.request_id();
  const std::uint64_t stamped = request.session_id();
  if (stamped != session_id_) {
    // A Hello read after this request (a host that reconnected before we saw it leave) ended
    // its session before it could start.
    common::log_info("request {} ({}) of session {:016x} not run: session {:016x} replaced it", id,
                     entry->name, stamped, session_id_);
    co_return;
  }
  auto ex = co_await asio::this_coro::executor;
  auto stop = std::make_shared<stopper>(ex);
  running_[id] = stop;
  handlers::request_context ctx{state_, stamped, id, shared_from_this()};
  asio::steady_timer deadline(ex);
  deadline.expires_after(entry->own_deadline ? std::chrono::nanoseconds::max() / 2
                                             : state_.options.request_timeout);
  auto outcome = co_await (entry->handle(ctx, std::move(request)) ||
                           deadline.async_wait(asio::use_awaitable) || stop->wait());
  running_.erase(id);
  if (stamped != session_id_ || !stream_->is_open()) {
    // Never hand an answer to a session that did not ask.
    common::log_info("reply to request {} ({}) dropped: session {:016x} has ended", id, entry->name,
                     stamped);
    co_return;
  }
  if (outcome.index() == 0) {
    common::log_debug("request {} ({}) of session {:016x} executed", id, entry->name, stamped);
    // A final reply never overtakes the request's own partial replies.
    reply(id, std::move(std::get<0>(outcome)), !stop->sent_progress);
  } else if (outcome.index() == 1) {
    common::log_warning(
        "request {} ({}) timed out after {} ms", id, entry->name,
        std::chrono::duration_cast<std::chrono::milliseconds>(state_.options.request_timeout)
            .count());
    reply(id, handlers::error_reply(pb::ERROR_CODE_TIMEOUT, "the request timed out"));
  } else {
    common::log_info("request {} ({}) cancelled: {}", id, entry->name, stop->why);
    reply(id,
          handlers::error_reply(pb::ERROR_CODE_CANCELLED, fmt::format("cancelled: {}", stop->why)),
          !stop->sent_progress);
  }
}

void session::cancel(const pb::Envelope& request) {
  const auto target = request.cancel_request().request_id();
  auto it = running_.find(target);
  pb::Envelope body;
  body.mutable_cancel_reply()->set_found(it != running_.end());
  if (it != running_.end()) it->second->stop("the host cancelled it");
  reply(request.request_id(), std::move(body));
}

void session::cancel_all(const char* why) {
  auto running = running_;  // stopping one may end it and erase it
  for (auto& [id, stop] : running) stop->stop(why);
}

asio::awaitable<bool> session::send_progress(std::uint64_t stamped, std::uint64_t request_id,
                                             pb::Envelope body) {
  // Bulk data waits while this much is queued, so that a small reply (a pong) is never stuck
  // behind much of it; urgent replies overtake what is queued anyway.
  constexpr std::size_t bulk_queue_bytes = 1u << 20;
  if (stamped != session_id_ || !stream_->is_open()) co_return false;
  co_await stream_->wait_queue_below(bulk_queue_bytes);
  if (stamped != session_id_ || !stream_->is_open()) co_return false;
  body.set_reply_to(request_id);
  body.set_session_id(stamped);
  body.set_more(true);
  if (!fits(body)) {
    common::log_warning("partial reply to request {} is over the host's limit of {}: stopped",
                        request_id, max_reply_bytes());
    co_return false;
  }
  if (auto it = running_.find(request_id); it != running_.end()) it->second->sent_progress = true;
  // Partial replies have no deadline of their own beyond the stream's: the write timeout.
  co_return !stream_->post(body);
}

asio::awaitable<bool> handlers::request_context::progress(pb::Envelope body) const {
  if (!owner) co_return true;
  co_return co_await owner->send_progress(session_id, request_id, std::move(body));
}

std::uint32_t handlers::request_context::max_reply_bytes() const {
  return owner ? owner->max_reply_bytes() : state.options.max_frame_size;
}

std::uint32_t session::max_reply_bytes() const noexcept {
  const auto own = state_.options.max_frame_size;
  return host_max_frame_ != 0 ? std::min(own, host_max_frame_) : own;
}

bool session::fits(const pb::Envelope& message) const {
  return message.ByteSizeLong() <= max_reply_bytes();
}

void session::answer_hello(const pb::Envelope& request) {
  const auto& hello = request.hello();
  const std::uint64_t id = request.session_id();
  if (id == 0 || (hello.session_id() != 0 && hello.session_id() != id)) {
    refuse(request, pb::ERROR_CODE_INVALID_ARGUMENT, "Hello needs one non-zero session id");
    return;
  }
  const std::uint64_t previous = session_id_;
  if (previous != 0 && previous != id) {
    cancel_all("the host opened a new session");
    state_.uploads->abort_session(previous);
  }
  session_id_ = id;
  // A host that accepts less than the agent would send must never get more: one frame over
  // its limit ends its connection.
  host_max_frame_ = hello.limits().max_frame_bytes();
  if (host_max_frame_ != 0 && host_max_frame_ < 4096) host_max_frame_ = 4096;
  ++state_.sessions;
  if (previous == id) {
    common::log_debug("Hello repeated for session {:016x}", id);
  } else if (previous != 0) {
    common::log_info("session {:016x} started by host {} (protocol {}), replacing session {:016x}",
                     id, hello.software_version(), hello.protocol_version(), previous);
  } else {
    common::log_info("session {:016x} started by host {} (protocol {})", id,
                     hello.software_version(), hello.protocol_version());
  }
  const pb::Info info = handlers::make_info(state_);
  pb::Envelope reply;
  auto* ack = reply.mutable_hello_ack();
  ack->set_session_id(id);
  ack->set_protocol_version(common::protocol_version);
  ack->set_software_version(common::software_version);
  ack->mutable_limits()->set_max_frame_bytes(state_.options.max_frame_size);
  ack->mutable_limits()->set_max_inflight_requests(state_.options.max_inflight_requests);
  for (const auto& h : handlers::table()) ack->add_capabilities(h.name);
  ack->add_capabilities("cancel");
  *ack->mutable_os() = info.os();
  ack->set_hostname(info.hostname());
  ack->set_boot_id(state_.boot_id);
  ack->set_agent_pid(state_.pid);
  ack->set_agent_started_unix_ms(state_.started_unix_ms);
  this->reply(request.request_id(), std::move(reply));
}

void session::refuse(const pb::Envelope& request, pb::ErrorCode code, std::string message,
                     std::string rule) {
  auto body = handlers::error_reply(code, std::move(message));
  if (!rule.empty()) body.mutable_error()->set_rule(std::move(rule));
  reply(request.request_id(), std::move(body));
}

void session::reply(std::uint64_t request_id, pb::Envelope body, bool may_overtake) {
  body.set_reply_to(request_id);
  body.set_session_id(session_id_);
  if (!fits(body)) {
    const auto size = body.ByteSizeLong();
    common::log_warning("reply to request {} ({}) is {} bytes, over the host's limit of {}",
                        request_id, common::body_name(body), size, max_reply_bytes());
    body = handlers::error_reply(
        pb::ERROR_CODE_RESOURCE_EXHAUSTED,
        fmt::format("the reply is {} bytes, more than the host accepts ({}); ask for less "
                    "(a page of a listing, a streamed command)",
                    size, max_reply_bytes()));
    body.set_reply_to(request_id);
    body.set_session_id(session_id_);
  }
  // Small answers overtake queued bulk data (command output, file chunks).
  common::send_options o;
  o.urgent = may_overtake && body.ByteSizeLong() <= 64u << 10;
  if (auto ec = stream_->post(body, o)) {
    common::log_debug("reply to {} not queued: {}", request_id, ec.message());
  }
}

}  // namespace qxa::guest
