// SPDX-License-Identifier: MIT
//
// The guest session's rules, without I/O: for each envelope from the host, what the session
// does with it. The session (session.cpp) is a thin driver: it reads envelopes, asks the gate,
// carries out the action, and tells the gate when a request it started has ended.
//
// The order of the checks is the protocol's: replies and events from the host are ignored; a
// Hello opens (or repeats) a session; anything else needs a session, and the current one; a
// cancel is answered at once; then the pipeline's admission (run_operation.hpp): the request
// must be known, allowed by the local policy, possible while frozen, and within the in-flight
// limit the ports share. Ping is answered inline (no coroutine) once it passes the same checks
// but the last.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <variant>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/guest/core/log_text.hpp"
#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/core/policy.hpp"
#include "qxa/guest/core/run_operation.hpp"

namespace qxa::guest {

namespace pb = ::quantix::agent::v1;

class request_gate {
 public:
  /// Replies and events from the host: nothing to do.
  struct ignore {};
  /// Why a request is refused; the session logs each kind its own way (policy refusals with an
  /// audit line).
  enum class reason { bad_hello, no_session, stale_session, unknown, policy, frozen, busy };
  /// Answer with an Error. `rule` names the policy rule, when one refused it.
  struct refuse {
    reason why;
    pb::ErrorCode code;
    std::string message;
    std::string rule;
    const char* operation = "";  ///< the handler's name, when the request is known
  };
  /// A Hello, answered with a HelloAck for `session`. `replaced` is the session it ends
  /// (its requests are to be cancelled and its uploads dropped), 0 when none or the same.
  struct open_session {
    std::uint64_t session = 0;
    std::uint64_t replaced = 0;
    bool repeated = false;  ///< the same session's Hello again
  };
  /// Answer a Ping now.
  struct answer_ping {};
  /// Stop the running request `target` and answer whether it was found.
  struct cancel {
    std::uint64_t target = 0;
  };
  /// Give `replies` partial replies back to the running request `target` (StreamCredit).
  struct credit {
    std::uint64_t target = 0;
    std::uint32_t replies = 0;
  };
  /// Run `entry`'s operation, holding `slot` (its place among the requests in flight) until
  /// it has ended.
  struct run {
    const operation* entry = nullptr;
    inflight_limit::slot slot;
  };
  using action = std::variant<ignore, refuse, open_session, answer_ping, cancel, credit, run>;

  request_gate(operation_table table, const local_policy& policy, inflight_limit& limit);

  /// The action for one envelope from the host. `frozen`: the guest's filesystems are frozen.
  action on_envelope(const pb::Envelope& envelope, bool frozen);

  /// The session opened by the latest Hello; 0 before any.
  [[nodiscard]] std::uint64_t session() const noexcept { return session_; }
  /// The largest frame the host accepts, from its Hello (at least 4096); 0 when it gave none.
  [[nodiscard]] std::uint32_t host_max_frame() const noexcept { return host_max_frame_; }
  [[nodiscard]] std::uint32_t inflight() const noexcept { return limit_.count(); }
  /// Whether a request stamped with `session` still belongs to the current session.
  [[nodiscard]] bool is_current(std::uint64_t session) const noexcept {
    return session != 0 && session == session_;
  }
  /// The capabilities a HelloAck lists: each operation once, "cancel" and "stream-credit".
  [[nodiscard]] std::vector<std::string> capabilities() const;

 private:
  action on_hello(const pb::Envelope& envelope);
  operation_table table_;
  const local_policy& policy_;
  inflight_limit& limit_;
  std::uint64_t session_ = 0;
  std::uint32_t host_max_frame_ = 0;
};

}  // namespace qxa::guest
