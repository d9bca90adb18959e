// SPDX-License-Identifier: MIT
// One handler per capability, each in its own file, all listed in one table (registry.cpp).
#pragma once

#include <asio/awaitable.hpp>
#include <span>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/guest/agent.hpp"

namespace qxa::guest::handlers {

/// What a handler may use while it runs.
struct request_context {
  agent_state& state;
  std::uint64_t session_id;
};

/// A handler takes the request by value (it owns it for its whole run) and returns the reply
/// envelope's body; the session fills in ids. A failure is a reply with an Error body.
using handler_fn = asio::awaitable<pb::Envelope> (*)(request_context ctx, pb::Envelope request);

struct handler_entry {
  pb::Envelope::BodyCase request;
  const char* name;  // also the capability advertised in HelloAck
  handler_fn handle;
};

/// Every request the agent understands.
std::span<const handler_entry> table();
/// The entry for a request, or nullptr.
const handler_entry* find(pb::Envelope::BodyCase request);

pb::Envelope error_reply(pb::ErrorCode code, std::string message);

asio::awaitable<pb::Envelope> ping(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> info(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> telemetry(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> time(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> hostname(request_context ctx, pb::Envelope request);

/// The Info body, also used to fill HelloAck.
pb::Info make_info(const agent_state& state);

}  // namespace qxa::guest::handlers
