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

request_gate::request_gate(std::span<const operation> table, const local_policy& policy, limits l)
    : table_(table), policy_(policy), limits_(l) {}

const operation* request_gate::find(pb::Envelope::BodyCase body) const {
  auto it = std::find_if(table_.begin(), table_.end(),
                         [&](const operation& e) { return e.request == body; });
  return it == table_.end() ? nullptr : &*it;
}

std::vector<std::string> request_gate::capabilities() const { return guest::capabilities(table_); }

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
  const auto* entry = find(envelope.body_case());
  if (entry == nullptr) {
    return refuse{reason::unknown,
                  pb::ERROR_CODE_UNKNOWN_REQUEST,
                  fmt::format("this agent does not handle {}", common::body_name(envelope)),
                  {}};
  }
  if (auto no = policy_.check_operation(entry->name)) {
    return refuse{reason::policy, pb::ERROR_CODE_PERMISSION_DENIED, no->message, no->rule,
                  entry->name};
  }
  if (frozen && !entry->while_frozen) {
    return refuse{
        reason::frozen, pb::ERROR_CODE_FAILED_PRECONDITION,
        fmt::format("the guest's filesystems are frozen: {} must wait for the thaw", entry->name),
        "frozen", entry->name};
  }
  if (envelope.has_ping()) return answer_ping{};
  if (inflight_ >= limits_.max_inflight) {
    return refuse{reason::busy,
                  pb::ERROR_CODE_TOO_MANY_REQUESTS,
                  fmt::format("{} requests already in flight", inflight_),
                  {},
                  entry->name};
  }
  ++inflight_;
  return run{entry};
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

void request_gate::finished() noexcept {
  // Called from a scope guard, once per `run`; never below zero.
  if (inflight_ > 0) --inflight_;
}

}  // namespace qxa::guest
