// SPDX-License-Identifier: MIT
#include "qxa/guest/handlers.hpp"

namespace qxa::guest::handlers {

// A sample on demand. It shares the sampler (and so the CPU delta) with the pushed telemetry,
// and takes the next sequence number, so a host sees one ordered series.
asio::awaitable<pb::Envelope> telemetry(request_context ctx, pb::Envelope) {
  pb::Envelope reply;
  auto* t = reply.mutable_telemetry();
  *t = ctx.state.sampler.sample();
  t->set_sequence(++ctx.state.telemetry_sequence);
  co_return reply;
}

}  // namespace qxa::guest::handlers
