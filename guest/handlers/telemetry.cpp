// SPDX-License-Identifier: MIT
#include "qxa/guest/handlers.hpp"

namespace qxa::guest::handlers {

// A sample on demand. It shares the sampler (and so the CPU delta) with the pushed telemetry,
// and takes the next sequence number, so a host sees one ordered series; it carries the freeze
// as the pushed samples do.
asio::awaitable<pb::Envelope> telemetry(request_context ctx, pb::Envelope) {
  pb::Envelope reply;
  *reply.mutable_telemetry() = ctx.state.telemetry_sample();
  co_return reply;
}

}  // namespace qxa::guest::handlers
