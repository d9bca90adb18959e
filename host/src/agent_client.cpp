// SPDX-License-Identifier: MIT
#include "qxa/host/agent_client.hpp"

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/redirect_error.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <mutex>
#include <random>
#include <type_traits>
#include <variant>

#include "qxa/common/async.hpp"
#include "qxa/common/envelope.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/version.hpp"
#include "qxa/host/guest_data.hpp"

namespace qxa::host {

using common::errc;
using common::result;
using namespace asio::experimental::awaitable_operators;

struct agent_client::pending_request {
  explicit pending_request(const asio::any_io_executor& ex) : timer(ex) {}
  asio::steady_timer timer;
  std::optional<result<pb::Envelope>> outcome;
  std::chrono::nanoseconds timeout{};
  std::function<void(const pb::Envelope&)> on_progress;
  /// Flow control (call_options::stream_window; 0: none): replies taken and not yet credited
  /// back, and whether a credit is on its way (waiting for `taken`).
  std::uint32_t window = 0;
  std::function<asio::awaitable<void>()> taken;
  std::uint32_t owed = 0;
  bool crediting = false;

  /// A partial reply: hand it over and count the deadline again from now.
  void progress(const pb::Envelope& e) {
    if (outcome) return;
    if (on_progress) on_progress(e);
    timer.expires_after(timeout);  // wakes the waiter, which waits again
  }

  void complete(result<pb::Envelope> r) {
    if (outcome) return;
    outcome.emplace(std::move(r));
    timer.cancel();
  }
};

namespace {

// Whether the agent said it does `capability` (an operation, or "cancel", "stream-credit").
bool lists_capability(const pb::HelloAck& ack, std::string_view capability) {
  const auto& caps = ack.capabilities();
  return std::find(caps.begin(), caps.end(), capability) != caps.end();
}

}  // namespace

std::uint64_t random_session_id() {
  static std::mutex m;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard lock(m);
  std::uint64_t v = 0;
  while (v == 0) v = rng();
  return v;
}

std::shared_ptr<agent_client> agent_client::create(asio::any_io_executor ex,
                                                   std::string socket_path,
                                                   client_options options) {
  return std::shared_ptr<agent_client>(
      new agent_client(std::move(ex), std::move(socket_path), std::move(options)));
}

agent_client::agent_client(asio::any_io_executor ex, std::string path, client_options o)
    : ex_(std::move(ex)),
      path_(std::move(path)),
      opt_(std::move(o)),
      // A consumer that falls behind loses the oldest telemetry: newer telemetry supersedes it,
      // and other events are rare.
      events_(ex_, opt_.event_queue, [](const pb::Envelope& e) { return e.has_telemetry(); }),
      closed_(ex_) {}

agent_client::~agent_client() {
  if (stream_) stream_->close();
}

client_stats agent_client::stats() const {
  client_stats s;
  s.requests = stats_.requests;
  s.timeouts = stats_.timeouts;
  s.connection_lost = stats_.connection_lost;
  s.unknown_replies = stats_.unknown_replies;
  s.ignored = stats_.ignored;
  s.bad_frames = stats_.bad_frames;
  s.trimmed = stats_.trimmed;
  s.events_dropped = stats_.events_dropped;
  s.frames_in = stats_.frames_in;
  s.sessions = sessions_.load();
  return s;
}

asio::awaitable<std::error_code> agent_client::connect() {
  if (auto ec = co_await open()) co_return ec;
  co_return co_await handshake();
}

asio::awaitable<std::error_code> agent_client::open() {
  asio::local::stream_protocol::socket socket(ex_);
  asio::steady_timer timer(ex_);
  timer.expires_after(opt_.connect_timeout);
  auto outcome =
      co_await (socket.async_connect(asio::local::stream_protocol::endpoint(path_),
                                     asio::experimental::as_tuple(asio::use_awaitable)) ||
                timer.async_wait(asio::use_awaitable));
  if (outcome.index() == 1) co_return make_error_code(errc::handshake_timeout);
  if (auto [ec] = std::get<0>(outcome); ec) co_return ec;

  common::stream_options so;
  so.max_frame_size = opt_.max_frame_size;
  so.write_timeout = opt_.write_timeout;
  so.close_on_write_timeout = true;  // a guest that does not drain is dead to us
  so.max_garbage_bytes = opt_.max_garbage_bytes;
  so.max_queued_bytes = 16u << 20;
  so.read_on_demand = true;  // one idle VM holds no read buffer
  // Only receive() calls it, from read_loop, which holds this client.
  so.on_undecodable = [this](std::span<const std::uint8_t> payload) { undecodable(payload); };
  stream_ = agent_stream::create(std::move(socket), so);
  stream_->start();
  connected_ = true;
  log_guest(common::log_level::info, "connections", "{}: reader started", path_);
  // The reader holds the client; if it ever ends by an exception (a bug), the client ends as if
  // the connection had been lost: pending requests fail at once and the VM reconnects.
  std::weak_ptr<agent_client> weak = shared_from_this();
  asio::co_spawn(
      ex_, [self = shared_from_this()] { return read_loop(self); },
      common::contained(fmt::format("{}: the reader", path_), [weak] {
        if (auto self = weak.lock()) self->end("internal error in the reader (logged)");
      }));
  co_return std::error_code{};
}

asio::awaitable<std::error_code> agent_client::handshake() {
  auto ec = co_await send_hello();
  if (ec) close(fmt::format("handshake failed: {}", ec.message()));
  co_return ec;
}

asio::awaitable<std::error_code> agent_client::send_hello() {
  const std::uint64_t session = random_session_id();
  pb::Envelope e;
  auto* h = e.mutable_hello();
  h->set_session_id(session);
  h->set_protocol_version(common::protocol_version);
  h->set_software_version(opt_.software_version + " " + common::software_version);
  h->mutable_limits()->set_max_frame_bytes(opt_.max_frame_size);
  h->mutable_limits()->set_max_inflight_requests(opt_.max_inflight);
  e.set_session_id(session);
  // The only reply accepted before the handshake completes.
  dispatch_.hello_sent(next_id_, session);
  e.set_request_id(next_id_);
  hello_request_ = e;
  auto r = co_await send_request(std::move(e), opt_.handshake_timeout);
  if (!r) {
    co_return r.code() == errc::request_timeout ? make_error_code(errc::handshake_timeout)
                                                : r.code();
  }
  // The reader has already taken the session into use (see dispatch), so that events sent
  // right after the HelloAck are not lost. (An agent that restarted right after answering
  // leaves the session taken but not ready: the restart's own handshake follows.)
  if (dispatch_.session() != session) {
    co_return make_error_code(errc::protocol_error);
  }
  co_return std::error_code{};
}

asio::awaitable<result<pb::Envelope>> agent_client::request(
    pb::Envelope request, std::optional<std::chrono::nanoseconds> timeout) {
  if (!is_connected())
    co_return result<pb::Envelope>{errc::not_connected, "not connected to " + path_};
  if (!dispatch_.ready()) {
    co_return result<pb::Envelope>{errc::not_connected, "no session with the agent yet"};
  }
  request.set_session_id(dispatch_.session());
  co_return co_await send_request(std::move(request), timeout.value_or(opt_.request_timeout));
}

asio::awaitable<result<pb::Envelope>> agent_client::request(pb::Envelope request,
                                                            call_options options) {
  if (!is_connected())
    co_return result<pb::Envelope>{errc::not_connected, "not connected to " + path_};
  if (!dispatch_.ready()) {
    co_return result<pb::Envelope>{errc::not_connected, "no session with the agent yet"};
  }
  request.set_session_id(dispatch_.session());
  const auto timeout = options.timeout.value_or(opt_.request_timeout);
  co_return co_await send_request(std::move(request), timeout, std::move(options));
}

asio::awaitable<bool> agent_client::flush(std::chrono::nanoseconds timeout) {
  if (!stream_) co_return true;
  co_return co_await stream_->flush(timeout);
}

void agent_client::cancel(std::uint64_t request_id) {
  if (!is_ready() || !pending_.contains(request_id)) return;
  pb::Envelope e;
  e.set_request_id(next_id_++);  // its reply is not waited for
  e.set_session_id(dispatch_.session());
  e.mutable_cancel_request()->set_request_id(request_id);
  common::send_options o;
  o.urgent = true;
  (void)stream_->post(e, o);
}

asio::awaitable<result<pb::Envelope>> agent_client::send_request(pb::Envelope request,
                                                                 std::chrono::nanoseconds timeout,
                                                                 call_options options) {
  if (!is_connected()) co_return result<pb::Envelope>{errc::not_connected, "not connected"};
  if (pending_.size() >= opt_.max_inflight) {
    co_return result<pb::Envelope>{errc::too_many_requests,
                                   fmt::format("{} requests already pending", pending_.size())};
  }
  const std::uint64_t id = next_id_++;  // never reused within a connection
  request.set_request_id(id);
  request.set_reply_to(0);
  auto p = std::make_shared<pending_request>(ex_);
  p->timer.expires_after(timeout);
  p->timeout = timeout;
  p->on_progress = std::move(options.on_progress);
  if (options.stream_window > 0 && lists_capability(dispatch_.hello(), "stream-credit")) {
    request.set_stream_window(options.stream_window);
    p->window = options.stream_window;
    p->taken = std::move(options.taken);
  }
  pending_.emplace(id, p);
  ++stats_.requests;
  if (auto ec = stream_->post(request)) {
    pending_.erase(id);
    co_return result<pb::Envelope>{ec, "cannot send: " + ec.message()};
  }
  if (options.on_sent) options.on_sent(id);
  asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
  for (;;) {
    std::error_code ignored;
    co_await p->timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
    if (p->outcome) break;
    if (cs.cancelled() != asio::cancellation_type::none) {
      cancel(id);  // the agent stops it; its final reply is not waited for
      pending_.erase(id);
      co_return result<pb::Envelope>{errc::cancelled, "cancelled by the caller"};
    }
    if (p->timer.expiry() <= asio::steady_timer::clock_type::now()) break;
    // A partial reply moved the deadline: wait again.
  }
  pending_.erase(id);
  if (p->outcome) co_return std::move(*p->outcome);
  ++stats_.timeouts;
  co_return result<pb::Envelope>{
      errc::request_timeout,
      fmt::format("no reply from the agent within {} ms",
                  std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count())};
}

asio::awaitable<void> agent_client::read_loop(std::shared_ptr<agent_client> self) {
  std::uint64_t frames = 0;
  // Damaged and unparsable frames are counted as they happen (the status shows them while the
  // connection lives), from the stream's counters, which only this coroutine reads.
  std::uint64_t counted_bad = 0;
  auto count_bad = [&] {
    const auto bad = self->stream_->decoding().damaged_frames + self->stream_->stats().bad_messages;
    self->stats_.bad_frames += bad - counted_bad;
    counted_bad = bad;
  };
  std::string why;
  for (;;) {
    auto r = co_await self->stream_->receive();
    if (!r) {
      const auto& err = r.error();
      if (err.code == asio::error::eof) {
        why = "end of file";
      } else if (err.code == errc::frame_too_large) {
        ++self->stats_.bad_frames;
        why = "oversized frame: " + err.message;
      } else if (err.code == errc::bad_frame) {
        why = "damaged stream: " + err.message;
      } else {
        why = err.describe();
      }
      break;
    }
    ++frames;
    ++self->stats_.frames_in;
    count_bad();
    self->dispatch(std::move(r.value()));
  }
  count_bad();
  const auto& dec = self->stream_->decoding();
  if (self->ended_) why = self->end_reason_;  // we closed it ourselves
  self->log_guest(common::log_level::info, "connections",
                  "{}: reader ended after {} frames: {} ({} damaged, {} garbage bytes)",
                  self->path_, frames, why, dec.damaged_frames, dec.garbage_bytes);
  self->end(why);
}

void agent_client::undecodable(std::span<const std::uint8_t> payload) {
  // The body did not parse; its addressing fields may still say which call it answered.
  pb::EnvelopeHeader header;
  if (!common::decode_message(payload, header)) return;
  const auto id = dispatch_.on_undecodable(header, is_pending());
  if (id == 0) return;
  auto it = pending_.find(id);
  auto p = it->second;
  pending_.erase(it);
  log_guest(common::log_level::warning, "replies that do not parse",
            "{}: the reply to request {} does not parse ({} bytes); failing the call", path_, id,
            payload.size());
  p->complete(result<pb::Envelope>{
      errc::bad_frame,
      fmt::format("the agent's reply ({} bytes) could not be decoded: a field that is not valid "
                  "UTF-8, or a newer protocol",
                  payload.size())});
}

client_dispatch::is_pending_fn agent_client::is_pending() const {
  return [this](std::uint64_t id) { return pending_.contains(id); };
}

void agent_client::dispatch(pb::Envelope envelope) {
  if (auto cut = cap_guest_message(envelope); !cut.empty()) {
    // Logged once per connection (one client is one connection): a guest that keeps sending
    // too much must not flood the log.
    if (stats_.trimmed++ == 0) {
      log_guest(common::log_level::warning, "messages cut to the limits",
                "{}: {} from the guest cut to the host's limits: {}", path_,
                common::body_name(envelope), cut);
    }
  }
  const auto action = dispatch_.on_envelope(envelope, is_pending());
  sessions_ = dispatch_.sessions();
  std::visit(
      [&](const auto& a) {
        using A = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<A, client_dispatch::ignore>) {
          ++stats_.ignored;
        } else if constexpr (std::is_same_v<A, client_dispatch::unknown>) {
          ++stats_.unknown_replies;  // not ours, or an answer meant for an earlier session
        } else if constexpr (std::is_same_v<A, client_dispatch::deliver>) {
          deliver(a, std::move(envelope));
        } else if constexpr (std::is_same_v<A, client_dispatch::repeat_hello>) {
          // The agent (re)opened its port after our Hello was sent: a guest drops what an
          // earlier host left in its buffer, and that may have been our Hello. Say it again.
          common::log_debug("{}: agent announced itself during the handshake; repeating Hello",
                            path_);
          ++stats_.ignored;
          (void)stream_->post(hello_request_);
        } else if constexpr (std::is_same_v<A, client_dispatch::agent_restarted>) {
          agent_restarted(std::move(envelope));
        } else {
          static_assert(std::is_same_v<A, client_dispatch::event>);
          push_event(std::move(envelope));
        }
      },
      action);
}

void agent_client::deliver(const client_dispatch::deliver& d, pb::Envelope envelope) {
  auto it = pending_.find(d.id);
  auto p = it->second;
  if (d.partial) {
    p->progress(envelope);
    if (p->window > 0) give_credit(d.id, p);
    return;
  }
  pending_.erase(it);
  p->complete(std::move(envelope));
}

void agent_client::give_credit(std::uint64_t id, const std::shared_ptr<pending_request>& p) {
  // Credit goes back in batches of a quarter of the window: one small message per few
  // replies, and the agent never runs dry while the consumer keeps up.
  ++p->owed;
  if (p->crediting || p->owed < std::max<std::uint32_t>(1, p->window / 4)) return;
  p->crediting = true;
  auto send = [this, id, session = dispatch_.session(), p] {
    const auto replies = std::exchange(p->owed, 0);
    if (!is_ready() || dispatch_.session() != session || !pending_.contains(id)) return;
    pb::Envelope e;
    e.set_request_id(next_id_++);  // not answered
    e.set_session_id(session);
    e.mutable_stream_credit()->set_request_id(id);
    e.mutable_stream_credit()->set_replies(replies);
    common::send_options o;
    o.urgent = true;  // never behind bulk data of our own
    (void)stream_->post(e, o);
  };
  if (!p->taken) {
    send();
    p->crediting = false;
    return;
  }
  asio::co_spawn(
      ex_,
      [self = shared_from_this(), p, send]() -> asio::awaitable<void> {
        // What arrived while this waited is taken by the same wait.
        co_await p->taken();
        send();
        p->crediting = false;
      },
      common::contained("a stream credit"));
}

void agent_client::agent_restarted(pb::Envelope envelope) {
  // The agent behind the socket started afresh: our session is gone with the old process.
  log_guest(common::log_level::info, "agent restarts",
            "{}: agent restarted (pid {}); opening a new session", path_,
            envelope.agent_ready().agent_pid());
  fail_pending("the agent restarted");
  push_event(std::move(envelope));
  asio::co_spawn(
      ex_,
      [self = shared_from_this()]() -> asio::awaitable<void> {
        auto ec = co_await self->send_hello();
        if (ec) {
          self->close(fmt::format("re-handshake failed: {}", ec.message()));
          co_return;
        }
        pb::Envelope e;
        *e.mutable_hello_ack() = self->dispatch_.hello();
        self->push_event(std::move(e));
      },
      common::contained(fmt::format("{}: the re-handshake", path_)));
}

void agent_client::push_event(pb::Envelope envelope) {
  if (events_.push(std::move(envelope))) ++stats_.events_dropped;
}

asio::awaitable<std::optional<pb::Envelope>> agent_client::next_event() {
  co_return co_await events_.pop();
}

asio::awaitable<void> agent_client::wait_closed() {
  while (!ended_) co_await closed_.wait();
}

void agent_client::fail_pending(const std::string& reason) {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, p] : pending) {
    ++stats_.connection_lost;
    p->complete(result<pb::Envelope>{errc::connection_lost, reason});
  }
}

void agent_client::end(std::string reason) {
  if (ended_) return;
  ended_ = true;
  connected_ = false;
  end_reason_ = std::move(reason);
  if (stream_) stream_->close(make_error_code(errc::connection_lost));
  fail_pending("connection lost: " + end_reason_);
  events_.finish();
  closed_.notify_all();
}

void agent_client::close(std::string reason) {
  if (ended_) return;
  common::log_debug("{}: closing: {}", path_, reason);
  end(std::move(reason));
}

}  // namespace qxa::host
