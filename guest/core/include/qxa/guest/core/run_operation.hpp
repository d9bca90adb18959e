// SPDX-License-Identifier: MIT
// The one pipeline every operation runs through, whichever port asked for it (the native
// session, the qemu-guest-agent port): what is decided once, here, for both.
//   - admission, in the protocol's order: the request is known, the guest's policy allows its
//     operation, it may run while filesystems are frozen, and a place among the requests in
//     flight (limits.max_inflight_requests, shared by the ports) is free;
//   - the run: within the agent's request timeout unless the operation keeps its own deadline,
//     stopped when the caller's stop completes (a cancel, the session's end), and an exception
//     answered INTERNAL at once, never left to time out.
// The ports keep what is theirs: sessions, ids and replies on the wire (session.cpp), a
// command's arguments and answer (qga/).
#pragma once

#include <asio/awaitable.hpp>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/core/policy.hpp"

namespace qxa::guest {

/// The requests running at once, whichever port asked: at most `max`. Not thread-safe (the
/// agent's event loop).
class inflight_limit {
 public:
  /// A place among them, given back when the slot goes.
  class slot {
   public:
    slot() = default;
    explicit slot(inflight_limit& l) : limit_(&l) { ++l.count_; }
    slot(slot&& o) noexcept : limit_(std::exchange(o.limit_, nullptr)) {}
    slot& operator=(slot&& o) noexcept {
      if (this != &o) {
        release();
        limit_ = std::exchange(o.limit_, nullptr);
      }
      return *this;
    }
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    ~slot() { release(); }
    [[nodiscard]] bool held() const noexcept { return limit_ != nullptr; }

   private:
    void release() noexcept {
      if (limit_ != nullptr) --limit_->count_;
      limit_ = nullptr;
    }
    inflight_limit* limit_ = nullptr;
  };

  explicit inflight_limit(std::uint32_t max) : max_(max) {}
  inflight_limit(const inflight_limit&) = delete;
  inflight_limit& operator=(const inflight_limit&) = delete;

  /// A place, or nothing when all are taken.
  std::optional<slot> try_take() {
    if (count_ >= max_) return std::nullopt;
    return slot(*this);
  }
  [[nodiscard]] std::uint32_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint32_t max() const noexcept { return max_; }

 private:
  std::uint32_t max_;
  std::uint32_t count_ = 0;
};

/// Why a request does not run now, as its Error reply says.
struct refusal_reply {
  enum class reason { unknown, policy, frozen, busy };
  reason why = reason::unknown;
  pb::ErrorCode code = pb::ERROR_CODE_UNSPECIFIED;
  std::string message;
  std::string rule;             ///< the policy rule ("frozen" while frozen), or empty
  const char* operation = "";  ///< the operation's name, when the request is known
};

/// Why `op` may not run now: the policy refuses it, or (`frozen`) it may not run while
/// filesystems are frozen; nothing when it may.
std::optional<refusal_reply> check_operation(const operation& op, const local_policy& policy,
                                             bool frozen);

/// The operation of `table` that answers `request`, when the policy allows it and (`frozen`)
/// it may run while filesystems are frozen; else why not. The in-flight limit is the caller's
/// next step (admit() takes both).
std::variant<const operation*, refusal_reply> check_request(operation_table table,
                                                            const local_policy& policy,
                                                            const pb::Envelope& request,
                                                            bool frozen);

/// A request admitted: its operation and its place among the requests in flight.
struct admitted {
  const operation* op = nullptr;
  inflight_limit::slot slot;
};
/// check_request(), then a place in `limit`.
std::variant<admitted, refusal_reply> admit(operation_table table, const local_policy& policy,
                                            const pb::Envelope& request, bool frozen,
                                            inflight_limit& limit);

/// How a run ended.
struct operation_outcome {
  enum class end { replied, timed_out, stopped };
  end how = end::replied;
  pb::Envelope reply;  ///< the operation's reply, or the Error that says how it ended
};

/// Runs `op` to its reply. `request_timeout` bounds it unless the operation keeps its own
/// deadline (TIMEOUT); when `stop` (if any) completes first, it ends CANCELLED with `why`; an
/// exception is answered INTERNAL at once, logged with the ids.
asio::awaitable<operation_outcome> run_operation(const operation& op, request_context ctx,
                                                 pb::Envelope request,
                                                 std::chrono::nanoseconds request_timeout,
                                                 std::function<asio::awaitable<void>()> stop = {},
                                                 std::function<std::string()> why_stopped = {});

}  // namespace qxa::guest
