// SPDX-License-Identifier: MIT
#include <chrono>

#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

// The session answers pings inline with pong_for() (see session::handle); this entry keeps
// ping in the table for its name, capability and policy.
asio::awaitable<pb::Envelope> ping(request_context, pb::Envelope request) {
  co_return pong_for(request);
}

}  // namespace qxa::guest::ops
