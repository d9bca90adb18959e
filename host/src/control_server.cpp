// SPDX-License-Identifier: MIT
#include "qxa/host/control_server.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <map>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"

namespace qxa::host {

using common::errc;
using common::result;
using namespace asio::experimental::awaitable_operators;

namespace {

// A streamed call's pace: partial replies the agent may have on their way (file chunks are
// 256 KiB by default, at most policy.max_chunk_bytes), and what the control connection may
// still hold unwritten when one counts as taken. Together about 5 MiB per call.
constexpr std::uint32_t paced_window = 16;
constexpr std::size_t paced_queue_bytes = 1u << 20;

pb::ControlMessage error_message(std::uint64_t reply_to, pb::ErrorCode code, std::string text) {
  pb::ControlMessage m;
  m.set_reply_to(reply_to);
  m.mutable_error()->set_code(code);
  m.mutable_error()->set_message(std::move(text));
  return m;
}

// Queues an answer for a control client. An answer that cannot be sent is never dropped in
// silence: one over the frame limit is replaced by an error saying so, and the rest is logged.
void answer(control_stream& stream, const pb::ControlMessage& reply, std::string_view hint = {}) {
  const auto ec = stream.post(reply);
  if (!ec) return;
  if (ec == errc::frame_too_large) {
    const auto size = reply.ByteSizeLong();
    common::log_warning("control socket: an answer of {} bytes is over the frame limit of {}", size,
                        stream.options().max_frame_size);
    const auto refusal = error_message(
        reply.reply_to(), pb::ERROR_CODE_RESOURCE_EXHAUSTED,
        fmt::format("the answer is {} bytes, more than the control socket's limit of {}{}", size,
                    stream.options().max_frame_size, hint));
    if (auto again = stream.post(refusal)) {
      common::log_warning("control socket: cannot send an error either: {}", again.message());
    }
    return;
  }
  common::log_debug("control socket: answer to {} not sent: {}", reply.reply_to(), ec.message());
}

}  // namespace

std::shared_ptr<control_server> control_server::create(asio::any_io_executor ex, std::string path,
                                                       std::shared_ptr<agent_manager> manager) {
  return std::shared_ptr<control_server>(
      new control_server(std::move(ex), std::move(path), std::move(manager)));
}

control_server::control_server(asio::any_io_executor ex, std::string path,
                               std::shared_ptr<agent_manager> m)
    : acceptor_(ex), path_(std::move(path)), manager_(std::move(m)) {}

std::optional<common::error_info> control_server::listen() {
  using asio::local::stream_protocol;
  // Made 0660 by bind itself, under a umask that allows no more: a socket made under the
  // service's umask and given its mode afterwards would take connections in between.
  struct restrictive_umask {
    mode_t old = ::umask(0117);
    ~restrictive_umask() { ::umask(old); }
  } const umask_for_bind;
  std::error_code ec;
  acceptor_.open(stream_protocol(), ec);
  if (!ec) acceptor_.bind(stream_protocol::endpoint(path_), ec);
  if (ec == asio::error::address_in_use) {
    stream_protocol::socket probe(acceptor_.get_executor());
    std::error_code probe_ec;
    probe.connect(stream_protocol::endpoint(path_), probe_ec);
    if (!probe_ec) {
      return common::error_info{ec, fmt::format("control socket {}: another qx-agentd is "
                                                "listening there",
                                                path_)};
    }
    ::unlink(path_.c_str());  // stale, from a daemon that did not exit cleanly
    acceptor_.bind(stream_protocol::endpoint(path_), ec);
  }
  if (!ec) acceptor_.listen(64, ec);
  if (ec) {
    return common::error_info{
        ec, fmt::format("cannot listen on control socket {}: {}", path_, ec.message())};
  }
  bound_ = true;
  // Exactly 0660 whatever the umask was (one may take more away than 0117 does).
  if (::chmod(path_.c_str(), 0660) != 0) {
    return common::error_info{std::error_code(errno, std::system_category()),
                              fmt::format("cannot set permissions of {}", path_)};
  }
  return std::nullopt;
}

void control_server::start() {
  asio::co_spawn(
      acceptor_.get_executor(), [self = shared_from_this()] { return self->accept_loop(); },
      common::contained("the control socket's accept loop"));
}

void control_server::stop() {
  std::error_code ignored;
  acceptor_.close(ignored);
  if (bound_) {
    ::unlink(path_.c_str());
    bound_ = false;
  }
}

asio::awaitable<void> control_server::accept_loop() {
  std::error_code failing;  // the error accept keeps failing with, said once
  while (acceptor_.is_open()) {
    auto [ec, socket] =
        co_await acceptor_.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor_.is_open()) co_return;
      // Out of descriptors, say: logged once, retried ten times a second meanwhile (the
      // waiting client stays in the listen queue), never in a busy loop.
      if (ec != failing) common::log_warning("control socket: accept failed: {}", ec.message());
      failing = ec;
      asio::steady_timer t(acceptor_.get_executor());
      t.expires_after(std::chrono::milliseconds(100));
      co_await t.async_wait(asio::use_awaitable);
      continue;
    }
    if (failing) common::log_info("control socket: accepting again");
    failing = {};
    common::stream_options o;
    o.write_timeout = std::chrono::seconds(10);
    auto stream = control_stream::create(std::move(socket), o);
    stream->start();
    asio::co_spawn(
        acceptor_.get_executor(),
        [self = shared_from_this(), stream] { return self->serve(stream); },
        common::contained("a control connection", [stream] { stream->close(); }));
  }
}

// One control connection and the calls it has running: they are cancelled when it closes.
struct control_server::connection {
  explicit connection(std::shared_ptr<control_stream> s) : stream(std::move(s)) {}
  std::shared_ptr<control_stream> stream;
  std::map<std::uint64_t, std::shared_ptr<asio::cancellation_signal>> calls;
};

asio::awaitable<void> control_server::serve(std::shared_ptr<control_stream> stream) {
  auto conn = std::make_shared<connection>(stream);
  for (;;) {
    auto r = co_await stream->receive();
    if (!r) break;
    auto& m = r.value();
    switch (m.body_case()) {
      case pb::ControlMessage::kStatusQuery: {
        pb::ControlMessage reply;
        reply.set_reply_to(m.request_id());
        *reply.mutable_status_report() = manager_->status(m.status_query().vm());
        answer(*stream, reply, m.status_query().vm().empty() ? "; ask for one VM at a time" : "");
        break;
      }
      case pb::ControlMessage::kVmCall: {
        auto signal = std::make_shared<asio::cancellation_signal>();
        conn->calls[m.request_id()] = signal;
        asio::co_spawn(
            stream->get_executor(),
            [self = shared_from_this(), conn, m = std::move(m)]() mutable {
              return self->serve_call(conn, std::move(m));
            },
            asio::bind_cancellation_slot(signal->slot(), common::contained("a control call")));
        break;
      }
      case pb::ControlMessage::kCancelCall:
        if (auto it = conn->calls.find(m.cancel_call().request_id()); it != conn->calls.end()) {
          it->second->emit(asio::cancellation_type::terminal);
        }
        break;
      case pb::ControlMessage::kTelemetryWatch:
        asio::co_spawn(
            stream->get_executor(),
            [self = shared_from_this(), stream, m = std::move(m)]() mutable {
              return self->serve_watch(stream, std::move(m));
            },
            common::contained("a telemetry watch"));
        break;
      default:
        answer(*stream, error_message(m.request_id(), pb::ERROR_CODE_UNKNOWN_REQUEST,
                                      "not a control request"));
    }
  }
  // The client is gone: nobody will read what its calls produce.
  auto calls = conn->calls;
  for (auto& [id, signal] : calls) signal->emit(asio::cancellation_type::terminal);
  stream->close();
}

asio::awaitable<void> control_server::serve_call(std::shared_ptr<connection> conn,
                                                 pb::ControlMessage m) {
  const auto& call = m.vm_call();
  const auto id = m.request_id();
  auto stream = conn->stream;
  call_options options;
  if (call.timeout_ms() > 0) options.timeout = std::chrono::milliseconds(call.timeout_ms());
  // Why the daemon stopped the call itself: a partial reply it could not queue.
  auto dropped = std::make_shared<std::error_code>();
  if (call.stream_progress()) {
    options.on_progress = [conn, id, dropped](const pb::Envelope& partial) {
      if (*dropped) return;  // nothing after a hole
      pb::ControlMessage out;
      out.set_reply_to(id);
      out.set_more(true);
      *out.mutable_vm_call_result()->mutable_reply() = partial;
      if (auto ec = conn->stream->post(out)) {
        // A client this far behind (or gone) would get a stream with a hole: stop the call.
        // (Only an agent without flow control can get it there.)
        *dropped = ec;
        if (auto it = conn->calls.find(id); it != conn->calls.end()) {
          it->second->emit(asio::cancellation_type::terminal);
        }
      }
    };
    // The agent's partial replies are paced by this client: a reply is taken once the control
    // connection has written out all but `paced_queue_bytes`, so a slow reader holds back the
    // agent (a command's output waits in its pipe) instead of filling the daemon's memory.
    options.stream_window = paced_window;
    options.taken = [stream = conn->stream] { return stream->wait_queue_below(paced_queue_bytes); };
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = co_await manager_->call(call.vm(), call.request(), std::move(options));
  conn->calls.erase(id);
  if (*dropped && stream->is_open()) {
    common::log_warning("control call {} to vm {} stopped: its client fell behind ({})", id,
                        call.vm(), dropped->message());
    const auto why =
        error_message(id, pb::ERROR_CODE_RESOURCE_EXHAUSTED,
                      fmt::format("stopped: this client fell behind the streamed reply ({})",
                                  dropped->message()));
    // With its queue still full the client learns it from the connection's end.
    if (stream->post(why)) stream->close();
    co_return;
  }
  if (!r) {
    // The code travels on its own: the text is the message alone when the client can tell the
    // code again from the wire's (else "... (unavailable) (unavailable)" once it describes it).
    const auto& e = r.error();
    const bool round_trip = local_code(wire_code(e.code)) == e.code && !e.message.empty();
    answer(*stream, error_message(id, wire_code(e.code), round_trip ? e.message : e.describe()));
    co_return;
  }
  pb::ControlMessage reply;
  reply.set_reply_to(id);
  auto* result = reply.mutable_vm_call_result();
  *result->mutable_reply() = std::move(r.value());
  result->set_rtt_ms(
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  answer(*stream, reply);
}

asio::awaitable<void> control_server::serve_watch(std::shared_ptr<control_stream> stream,
                                                  pb::ControlMessage m) {
  auto feed = manager_->watch(m.telemetry_watch().vm());
  if (!feed) {
    answer(*stream, error_message(m.request_id(), pb::ERROR_CODE_UNAVAILABLE,
                                  fmt::format("no VM named '{}'", m.telemetry_watch().vm())));
    co_return;
  }
  while (stream->is_open()) {
    auto t = co_await feed->pop();
    if (!t) break;
    pb::ControlMessage out;
    out.set_reply_to(m.request_id());
    out.set_more(true);
    *out.mutable_telemetry() = std::move(*t);
    if (auto ec = stream->post(out)) {
      // A watcher that does not read (its queue is full) is dropped, and told why if it can be.
      answer(*stream, error_message(m.request_id(), wire_code(ec),
                                    fmt::format("telemetry watch ended: {}", ec.message())));
      co_return;
    }
  }
  answer(*stream, error_message(m.request_id(), pb::ERROR_CODE_UNAVAILABLE, "the VM went away"));
}

}  // namespace qxa::host
