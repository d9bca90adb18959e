// SPDX-License-Identifier: MIT
#include "qxa/guest/ops/mapping.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

// A sample on demand. It shares the sampler (and so the CPU delta) with the pushed telemetry,
// and takes the next sequence number, so a host sees one ordered series; it carries the freeze
// as the pushed samples do.
pb::Telemetry telemetry_of(agent_state& state) {
  auto t = to_proto(state.sampler.take());
  if (state.frozen()) {
    const auto f = state.freeze->state();
    auto* out = t.mutable_freeze();
    out->set_frozen(f.frozen);
    out->set_frozen_ms(f.frozen_ms);
    out->set_lease_remaining_ms(f.lease_remaining_ms);
  }
  return t;
}

asio::awaitable<pb::Envelope> telemetry(request_context ctx, pb::Envelope) {
  pb::Envelope reply;
  *reply.mutable_telemetry() = ctx.state.telemetry_sample();
  co_return reply;
}

}  // namespace qxa::guest::ops
