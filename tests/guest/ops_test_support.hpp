// SPDX-License-Identifier: MIT
// Runs guest handlers directly, without a session: progress goes to the context's on_progress,
// or nowhere.
#pragma once

#include <asio/io_context.hpp>
#include <memory>

#include "qxa/guest/ops/ops.hpp"
#include "support/run.hpp"

namespace qxa::test {

namespace qg = ::qxa::guest;
namespace pb = ::quantix::agent::v1;

struct handler_bench {
  explicit handler_bench(const asio::any_io_executor& ex, qg::agent_options options = {}) {
    state.options = std::move(options);
    state.parts = qg::ops::parts();
    state.freeze = std::make_shared<qg::freezer>(ex, state.options.freeze);
    state.uploads = std::make_shared<qg::upload_table>();
    state.jobs = std::make_shared<qg::job_table>(ex, qg::job_limits_of(state.options));
    state.inflight = std::make_shared<qg::inflight_limit>(state.options.max_inflight_requests);
  }
  qg::request_context context(std::uint64_t request_id = 1) {
    return {state, 0x5e55, request_id, nullptr};
  }
  qg::agent_state state;
};

/// Runs one handler on a bench with `options`, to its reply.
inline pb::Envelope call_handler(qg::operation_fn fn, pb::Envelope request,
                                 qg::agent_options options = {}) {
  pb::Envelope reply;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), options);
    reply = co_await fn(bench.context(), request);
  });
  return reply;
}

}  // namespace qxa::test
