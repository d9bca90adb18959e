// SPDX-License-Identifier: MIT
//
// The host client's rules for what arrives from a guest, without I/O: which envelope answers
// which call, when the handshake is complete, what is an event, and what is dropped and counted
// how. agent_client is the driver: it tells the dispatch about each Hello it sends, asks it
// about each envelope from the reader, and carries out the action (wake a waiter, queue an
// event, repeat the Hello, open a new session).
//
// The rules:
// - Before the handshake completes only the answer to our own Hello counts; everything else is
//   `ignored`. An AgentReady while our Hello waits means the agent (re)opened its port and may
//   have dropped the Hello: say it again.
// - The HelloAck of our Hello, for our session, completes the handshake. The same answer again
//   (to a repeated Hello) is ignored, not an unknown reply.
// - After it, a reply is delivered when it answers a pending call of the current session; a
//   partial one (more = true) keeps the call pending. Anything else is an unknown reply.
// - An AgentReady after the handshake means the agent restarted: the session is gone.
// - Telemetry is an event; any other message without reply_to is ignored.
#pragma once

#include <cstdint>
#include <functional>
#include <variant>

#include "quantix/agent/v1/agent.pb.h"

namespace qxa::host {

namespace pb = ::quantix::agent::v1;

class client_dispatch {
 public:
  /// Dropped and counted as ignored (before the handshake, a repeated HelloAck, events we do not
  /// take).
  struct ignore {};
  /// A reply to no pending call of this session: dropped and counted as unknown.
  struct unknown {};
  /// Hand the envelope to the pending call `id`; `partial`: more follows, the call stays.
  struct deliver {
    std::uint64_t id = 0;
    bool partial = false;
  };
  /// Send the Hello again (same id and session).
  struct repeat_hello {};
  /// The agent restarted: fail the pending calls, queue the envelope as an event, handshake anew.
  struct agent_restarted {};
  /// Queue the envelope as an event (telemetry).
  struct event {};
  using action = std::variant<ignore, unknown, deliver, repeat_hello, agent_restarted, event>;

  using is_pending_fn = std::function<bool(std::uint64_t)>;

  /// A Hello with `request_id` opening `session` was sent: the handshake starts (again).
  void hello_sent(std::uint64_t request_id, std::uint64_t session);

  /// What to do with one envelope from the guest. `is_pending` says which call ids are waiting.
  action on_envelope(const pb::Envelope& envelope, const is_pending_fn& is_pending);

  /// A frame whose body does not parse but whose header did: the pending call it answers, to
  /// fail at once, or 0.
  std::uint64_t on_undecodable(const pb::EnvelopeHeader& header,
                               const is_pending_fn& is_pending) const;

  [[nodiscard]] bool ready() const noexcept { return ready_; }
  [[nodiscard]] std::uint64_t session() const noexcept { return session_; }
  [[nodiscard]] const pb::HelloAck& hello() const noexcept { return hello_; }
  /// Handshakes completed.
  [[nodiscard]] std::uint64_t sessions() const noexcept { return sessions_; }

 private:
  bool ready_ = false;
  std::uint64_t hello_id_ = 0;
  std::uint64_t handshake_session_ = 0;
  std::uint64_t session_ = 0;
  std::uint64_t sessions_ = 0;
  pb::HelloAck hello_;
};

}  // namespace qxa::host
