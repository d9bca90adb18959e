// SPDX-License-Identifier: MIT
// One period of host presence on the port: AgentReady, the Hello handshake, then requests.
// Only requests stamped with the session the host opened in its latest Hello are executed; the
// rest are refused with a structured error and a log line.
#pragma once

#include <asio/awaitable.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>

#include "qxa/common/async.hpp"
#include "qxa/common/message_stream.hpp"
#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/core/port.hpp"
#include "qxa/guest/core/request_gate.hpp"

namespace qxa::guest {

using guest_stream = common::message_stream<port_stream>;

class session : public std::enable_shared_from_this<session> {
 public:
  /// Runs the operations of `state.parts` (tests may give others: `table`).
  session(agent_state& state, std::shared_ptr<guest_stream> stream,
          std::optional<operation_table> table = std::nullopt);

  /// Runs until the host goes away or the stream fails; then closes the stream.
  asio::awaitable<void> run();

  /// True once a Hello has been answered on this connection.
  [[nodiscard]] bool handshaken() const noexcept { return gate_.session() != 0; }
  [[nodiscard]] std::uint64_t id() const noexcept { return gate_.session(); }
  [[nodiscard]] guest_stream& stream() noexcept { return *stream_; }
  [[nodiscard]] bool is_open() const noexcept { return stream_->is_open(); }

  /// Sends a partial reply to a request of session `stamped` (see request_context::progress).
  asio::awaitable<bool> send_progress(std::uint64_t stamped, std::uint64_t request_id,
                                      pb::Envelope& body);
  /// Stops every request still running (the host went away or opened a new session).
  void cancel_all(const char* why);
  /// The largest payload the host accepts: the limit in its Hello, or the agent's own.
  [[nodiscard]] std::uint32_t max_reply_bytes() const noexcept;
  /// Whether `message` fits max_reply_bytes(); a frame over the host's limit would end the
  /// connection, so nothing bigger is ever sent.
  [[nodiscard]] bool fits(const pb::Envelope& message) const;

 private:
  void handle(pb::Envelope envelope);
  void answer_hello(const pb::Envelope& request, const request_gate::open_session& opened);
  void refuse(const pb::Envelope& request, const request_gate::refuse& no);
  /// `may_overtake`: a small reply goes ahead of queued bulk data.
  void reply(std::uint64_t request_id, pb::Envelope body, bool may_overtake = true);
  void cancel(std::uint64_t request_id, std::uint64_t target);
  /// Runs an admitted request through run_operation(), holding its place in flight, and
  /// answers it while its session is current.
  asio::awaitable<void> execute(const operation& entry, inflight_limit::slot slot,
                                pb::Envelope request);

  /// A running request's way to be stopped early, and the credit its partial replies have.
  struct stopper {
    stopper(const asio::any_io_executor& ex, std::uint32_t stream_window)
        : event(ex), window(stream_window) {}
    bool stopped = false;
    bool sent_progress = false;
    const char* why = "";
    common::async_event event;
    /// Flow control (Envelope.stream_window; 0: none): partial replies sent less those the host
    /// gave back (below zero when it gave credit ahead).
    std::uint32_t window = 0;
    std::int64_t unacknowledged = 0;
    void stop(const char* reason) {
      if (stopped) return;
      stopped = true;
      why = reason;
      event.notify_all();
    }
    asio::awaitable<void> wait() {
      while (!stopped) co_await event.wait();
    }
    void credit(std::uint32_t replies) {
      unacknowledged -= replies;
      event.notify_all();
    }
    /// Until another partial reply may go, or the request is stopped.
    asio::awaitable<void> wait_for_credit() {
      while (window != 0 && unacknowledged >= window && !stopped) co_await event.wait();
    }
  };

  agent_state& state_;
  std::shared_ptr<guest_stream> stream_;
  request_gate gate_;
  std::map<std::uint64_t, std::shared_ptr<stopper>> running_;
  // Refusals of a gone host's leftovers so far: the first is logged at info, the rest at debug.
  std::size_t told_before_hello_ = 0;
  std::size_t told_stale_ = 0;
};

}  // namespace qxa::guest
