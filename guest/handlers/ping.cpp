// SPDX-License-Identifier: MIT
#include <chrono>

#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/handlers.hpp"

namespace qxa::guest::handlers {

pb::Envelope pong_for(const pb::Envelope& request) {
  pb::Envelope reply;
  reply.mutable_pong()->set_nonce(request.ping().nonce());
  reply.mutable_pong()->set_unix_ns(common::unix_ns());
  return reply;
}

// The session answers pings inline with pong_for() (see session::handle); this entry keeps
// ping in the table for its name, capability and policy.
asio::awaitable<pb::Envelope> ping(request_context, pb::Envelope request) {
  co_return pong_for(request);
}

}  // namespace qxa::guest::handlers
