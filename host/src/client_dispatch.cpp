// SPDX-License-Identifier: MIT
#include "qxa/host/client_dispatch.hpp"

namespace qxa::host {

void client_dispatch::hello_sent(std::uint64_t request_id, std::uint64_t session) {
  ready_ = false;
  hello_id_ = request_id;
  handshake_session_ = session;
}

client_dispatch::action client_dispatch::on_envelope(const pb::Envelope& envelope,
                                                     const is_pending_fn& is_pending) {
  if (envelope.reply_to() != 0) {
    const auto id = envelope.reply_to();
    if (!ready_) {
      if (id != hello_id_) return ignore{};  // anything before the answer to our own Hello
      if (envelope.has_hello_ack() && envelope.hello_ack().session_id() == handshake_session_) {
        hello_ = envelope.hello_ack();
        session_ = handshake_session_;
        ready_ = true;
        ++sessions_;
      }
      // The Hello's waiter learns either way; one that finds no session fails the handshake.
      return is_pending(id) ? action{deliver{id, false}} : action{ignore{}};
    }
    if (envelope.session_id() != session_) return unknown{};  // meant for an earlier session
    if (!is_pending(id)) {
      // The agent answers each copy of a repeated Hello; the second answer is no surprise.
      if (id == hello_id_ && envelope.has_hello_ack()) return ignore{};
      return unknown{};
    }
    return deliver{id, envelope.more()};
  }
  if (!ready_) {
    if (envelope.has_agent_ready() && is_pending(hello_id_)) return repeat_hello{};
    return ignore{};
  }
  if (envelope.has_agent_ready()) {
    ready_ = false;
    return agent_restarted{};
  }
  if (envelope.has_telemetry()) return event{};
  return ignore{};
}

std::uint64_t client_dispatch::on_undecodable(const pb::EnvelopeHeader& header,
                                              const is_pending_fn& is_pending) const {
  const auto id = header.reply_to();
  if (id == 0) return 0;
  if (ready_ ? header.session_id() != session_ : id != hello_id_) return 0;
  return is_pending(id) ? id : 0;
}

}  // namespace qxa::host
