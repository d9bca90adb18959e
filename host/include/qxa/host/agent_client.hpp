// SPDX-License-Identifier: MIT
// agent_client: the host's connection to one VM's agent socket.
//
// connect() opens the socket, starts the reader and does the Hello handshake; request() sends
// one request and waits for its reply with a deadline of its own, many in flight at once.
// The reader is the connection's heartbeat in a narrow sense: is_connected() is true only while
// the socket is open and the reader runs. When the reader ends, for any reason, the socket is
// closed completely (QEMU serves one client; a half-closed one would block the next), the client
// is marked disconnected, and every pending request fails at once with connection_lost.
//
// Threading: every member but is_connected() and stats() is used from the client's executor,
// which must be single-threaded.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "qxa/common/async.hpp"
#include "qxa/common/error.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/log_limiter.hpp"
#include "qxa/common/message_stream.hpp"
#include "qxa/host/client_dispatch.hpp"

namespace qxa::host {

namespace pb = ::quantix::agent::v1;
using agent_stream = common::message_stream<asio::local::stream_protocol::socket>;

struct client_options {
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(2);
  std::chrono::nanoseconds handshake_timeout = std::chrono::seconds(5);
  /// The default per-request deadline.
  std::chrono::nanoseconds request_timeout = std::chrono::seconds(10);
  /// A frame not written by then closes the connection.
  std::chrono::nanoseconds write_timeout = std::chrono::seconds(5);
  std::uint32_t max_frame_size = 8u << 20;   ///< largest frame accepted from the guest
  std::uint32_t max_inflight = 1024;         ///< pending requests; more fail at once
  std::size_t event_queue = 32;              ///< events kept for a slow consumer
  std::size_t max_garbage_bytes = 1u << 20;  ///< noise tolerated between valid frames
  std::string software_version = "qx-agentd";
};

/// Counters of one client; all monotonic. Readable from any thread.
struct client_stats {
  std::uint64_t requests = 0;
  std::uint64_t timeouts = 0;
  std::uint64_t connection_lost = 0;  ///< requests failed because the connection ended
  std::uint64_t unknown_replies = 0;  ///< replies to ids not pending, dropped
  std::uint64_t ignored = 0;          ///< frames before the handshake completed, dropped
  std::uint64_t bad_frames = 0;       ///< damaged, oversized or unparsable frames
  std::uint64_t trimmed = 0;          ///< messages cut to the guest data limits (guest_data.hpp)
  std::uint64_t events_dropped = 0;   ///< telemetry dropped for a slow consumer
  std::uint64_t frames_in = 0;
  std::uint64_t sessions = 0;  ///< handshakes completed
};

/// How one request is made.
struct call_options {
  /// Deadline for the reply, counted again from every partial reply (a transfer or a command
  /// that keeps producing output is alive). Default: client_options::request_timeout.
  std::optional<std::chrono::nanoseconds> timeout;
  /// Receives the partial replies (more = true) in order, before the final reply.
  std::function<void(const pb::Envelope&)> on_progress;
  /// Told the request id once the request is queued (to cancel it with cancel()).
  std::function<void(std::uint64_t)> on_sent;
  /// Flow control of the partial replies, with an agent that lists "stream-credit": at most
  /// this many on their way and not yet taken; the agent waits for the rest (a command's output
  /// then waits in its pipe). 0: as fast as the channel takes them.
  std::uint32_t stream_window = 0;
  /// With stream_window: awaited after on_progress has a partial reply; the reply is taken when
  /// it completes (a consumer that passes the replies on waits until they are gone). None: at
  /// once.
  std::function<asio::awaitable<void>()> taken;
};

class agent_client : public std::enable_shared_from_this<agent_client> {
 public:
  static std::shared_ptr<agent_client> create(asio::any_io_executor ex, std::string socket_path,
                                              client_options options = {});
  ~agent_client();

  /// Connects and handshakes: open() then handshake(). Call once.
  asio::awaitable<std::error_code> connect();
  /// Connects the socket and starts the reader. Fails with the connect's error (refused: nobody
  /// listens on the socket) or handshake_timeout when the connect itself takes too long.
  asio::awaitable<std::error_code> open();
  /// Sends Hello and completes once the HelloAck arrived, or with the error (handshake timeout,
  /// connection_lost, protocol_error), after which the client is closed. Call once, after open().
  asio::awaitable<std::error_code> handshake();

  /// Sends one request (the body of `request`; ids and session are filled in) and completes with
  /// the agent's reply, which may carry an Error body. Fails with not_connected,
  /// too_many_requests, request_timeout (at `timeout`, default options().request_timeout) or
  /// connection_lost (at once when the reader ends).
  asio::awaitable<common::result<pb::Envelope>> request(
      pb::Envelope request, std::optional<std::chrono::nanoseconds> timeout = {});
  /// Same, with partial replies. Cancelling the awaiting coroutine (Asio cancellation) asks
  /// the agent to stop the request and completes with `cancelled`.
  asio::awaitable<common::result<pb::Envelope>> request(pb::Envelope request, call_options options);

  /// Asks the agent to stop a running request; its caller gets the agent's final reply (a
  /// CANCELLED error when it was still running).
  void cancel(std::uint64_t request_id);
  /// Waits (up to `timeout`) until every queued frame is written; true when they were.
  asio::awaitable<bool> flush(std::chrono::nanoseconds timeout);

  /// The next event (AgentReady, Telemetry, or a HelloAck after a re-handshake), or nothing once
  /// the connection has ended. A consumer slower than the agent loses the oldest telemetry,
  /// never the connection.
  asio::awaitable<std::optional<pb::Envelope>> next_event();

  /// Completes when the reader has ended.
  asio::awaitable<void> wait_closed();

  /// Closes the connection; pending requests fail with connection_lost. Idempotent.
  void close(std::string reason = "closed by the host");

  /// Bounds the lines this client logs about what its guest does (connections, restarts,
  /// replies that do not parse, data cut to the limits): qx-agentd shares one per VM across
  /// the VM's connections. By default the client has one of its own.
  void set_log_limiter(std::shared_ptr<common::log_limiter> limiter) {
    if (limiter) log_limit_ = std::move(limiter);
  }

  /// True while the socket is open and the reader is alive. Thread-safe.
  [[nodiscard]] bool is_connected() const noexcept { return connected_.load(); }
  /// True while a handshake is complete on this connection.
  [[nodiscard]] bool is_ready() const noexcept { return is_connected() && dispatch_.ready(); }
  [[nodiscard]] const pb::HelloAck& hello() const noexcept { return dispatch_.hello(); }
  [[nodiscard]] std::uint64_t session_id() const noexcept { return dispatch_.session(); }
  [[nodiscard]] std::size_t pending() const noexcept { return pending_.size(); }
  [[nodiscard]] const std::string& end_reason() const noexcept { return end_reason_; }
  [[nodiscard]] const std::string& socket_path() const noexcept { return path_; }
  [[nodiscard]] const client_options& options() const noexcept { return opt_; }
  [[nodiscard]] client_stats stats() const;

 private:
  struct pending_request;

  agent_client(asio::any_io_executor ex, std::string path, client_options o);
  asio::awaitable<std::error_code> send_hello();
  asio::awaitable<common::result<pb::Envelope>> send_request(pb::Envelope request,
                                                             std::chrono::nanoseconds timeout,
                                                             call_options options = {});
  static asio::awaitable<void> read_loop(std::shared_ptr<agent_client> self);
  void dispatch(pb::Envelope envelope);
  /// A partial reply of the paced request `id` was handed over: credit goes back to the agent
  /// (in batches), once the request's `taken` (if any) completes.
  void give_credit(std::uint64_t id, const std::shared_ptr<pending_request>& p);
  void deliver(const client_dispatch::deliver& d, pb::Envelope envelope);
  void agent_restarted(pb::Envelope envelope);
  [[nodiscard]] client_dispatch::is_pending_fn is_pending() const;
  void undecodable(std::span<const std::uint8_t> payload);
  void push_event(pb::Envelope envelope);
  void end(std::string reason);
  void fail_pending(const std::string& reason);
  /// Logs a line of `kind` about the guest's doing, within the log budget.
  template <typename... Args>
  void log_guest(common::log_level level, std::string_view kind, fmt::format_string<Args...> format,
                 Args&&... args) {
    const auto v = log_limit_->admit(kind, std::chrono::steady_clock::now());
    if (!v.write) return;
    auto text = fmt::format(format, std::forward<Args>(args)...);
    if (v.held_before > 0) {
      text +=
          fmt::format(" ({} more {} were not logged in the minute before)", v.held_before, kind);
    }
    common::log(level, "{}", text);
  }

  asio::any_io_executor ex_;
  std::string path_;
  client_options opt_;
  std::shared_ptr<agent_stream> stream_;
  std::atomic<bool> connected_{false};
  bool ended_ = false;
  std::uint64_t next_id_ = 1;
  client_dispatch dispatch_;
  pb::Envelope hello_request_;
  std::unordered_map<std::uint64_t, std::shared_ptr<pending_request>> pending_;
  common::event_queue<pb::Envelope> events_;
  common::async_event closed_;
  std::string end_reason_;
  // Written on the executor, read from anywhere.
  struct atomic_stats {
    std::atomic<std::uint64_t> requests{0}, timeouts{0}, connection_lost{0}, unknown_replies{0},
        ignored{0}, bad_frames{0}, trimmed{0}, events_dropped{0}, frames_in{0};
  } stats_;
  std::atomic<std::uint64_t> sessions_{0};  ///< copied from dispatch_ on the executor
  std::shared_ptr<common::log_limiter> log_limit_ = std::make_shared<common::log_limiter>();
};

/// A fresh random non-zero session id.
std::uint64_t random_session_id();

}  // namespace qxa::host
