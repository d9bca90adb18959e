// SPDX-License-Identifier: MIT
#include "qxa/guest/core/request_gate.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "qxa/common/envelope.hpp"

namespace qxa::guest {

namespace {
// A host may not ask for frames smaller than this: every reply must still fit an error.
constexpr std::uint32_t min_host_frame = 4096;
}  // namespace

request_gate::request_gate(operation_table table, const local_policy& policy,
                           inflight_limit& limit)
    : table_(table), policy_(policy), limit_(limit) {}

std::vector<std::string> request_gate::capabilities() const {
  return guest::capabilities(table_);
}

namespace {

request_gate::refuse refusal_of(refusal_reply no) {
  using reason = request_gate::reason;
  const auto why = no.why == refusal_reply::reason::unknown  ? reason::unknown
                   : no.why == refusal_reply::reason::policy ? reason::policy
                   : no.why == refusal_reply::reason::frozen ? reason::frozen
                                                             : reason::busy;
  return request_gate::refuse{why, no.code, std::move(no.message), std::move(no.rule),
                              no.operation};
}

}  // namespace

request_gate::action request_gate::on_envelope(const pb::Envelope& envelope, bool frozen) {
  if (envelope.reply_to() != 0 || envelope.request_id() == 0) return ignore{};
  if (envelope.has_hello()) return on_hello(envelope);
  if (session_ == 0) {
    return refuse{
        reason::no_session, pb::ERROR_CODE_NO_SESSION, "no session: send Hello first", {}};
  }
  if (envelope.session_id() != session_) {
    return refuse{reason::stale_session,
                  pb::ERROR_CODE_STALE_SESSION,
                  fmt::format("request belongs to session {:016x}, not the current {:016x}",
                              envelope.session_id(), session_),
                  {}};
  }
  if (envelope.has_cancel_request()) return cancel{envelope.cancel_request().request_id()};
  if (envelope.has_stream_credit()) {
    return credit{envelope.stream_credit().request_id(), envelope.stream_credit().replies()};
  }
  // The heartbeat takes no place in flight: it is answered at once.
  if (envelope.has_ping()) {
    auto checked = check_request(table_, policy_, envelope, frozen);
    if (auto* no = std::get_if<refusal_reply>(&checked)) return refusal_of(std::move(*no));
    return answer_ping{};
  }
  auto admitted_or = admit(table_, policy_, envelope, frozen, limit_);
  if (auto* no = std::get_if<refusal_reply>(&admitted_or)) return refusal_of(std::move(*no));
  auto& a = std::get<admitted>(admitted_or);
  return run{a.op, std::move(a.slot)};
}

request_gate::action request_gate::on_hello(const pb::Envelope& envelope) {
  const auto& hello = envelope.hello();
  const std::uint64_t id = envelope.session_id();
  if (id == 0 || (hello.session_id() != 0 && hello.session_id() != id)) {
    return refuse{reason::bad_hello,
                  pb::ERROR_CODE_INVALID_ARGUMENT,
                  "Hello needs one non-zero session id",
                  {}};
  }
  open_session opened;
  opened.session = id;
  opened.repeated = session_ == id;
  opened.replaced = session_ != 0 && session_ != id ? session_ : 0;
  session_ = id;
  // A host that accepts less than the agent would send must never get more: one frame over
  // its limit ends its connection.
  host_max_frame_ = hello.limits().max_frame_bytes();
  if (host_max_frame_ != 0) host_max_frame_ = std::max(host_max_frame_, min_host_frame);
  return opened;
}

}  // namespace qxa::guest
