// SPDX-License-Identifier: MIT
// What an operation is to the core: the request it answers, its name in the policy's lists, the
// function that runs it and how the pipeline (run_operation.hpp) must treat it; what it may use
// while it runs (request_context); and the replies every operation builds its errors with. The
// operations themselves live in guest/ops/, their table in ops/ops.hpp.
#pragma once

#include <asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/common/error.hpp"
#include "qxa/guest/core/policy.hpp"

namespace qxa::guest {

namespace pb = ::quantix::agent::v1;

struct agent_state;
class session;

/// What an operation may use while it runs.
struct request_context {
  agent_state& state;
  std::uint64_t session_id;
  std::uint64_t request_id = 0;
  std::shared_ptr<session> owner;  ///< null in unit tests: progress then goes to on_progress
  std::function<void(const pb::Envelope&)> on_progress = nullptr;

  /// Sends a partial reply (more = true) to this request, first waiting while the session's
  /// write queue holds much bulk data (the host reads at its pace; small replies go first).
  /// False once the session has ended: the operation should stop. `body` is sent as it is on
  /// return (its reply fields set): the operation may fill it again, its buffers reused.
  asio::awaitable<bool> progress(pb::Envelope& body) const;
  /// The largest reply payload the host accepts (its Hello's limit, or the agent's own).
  [[nodiscard]] std::uint32_t max_reply_bytes() const;
};

/// An operation takes the request by value (it owns it for its whole run) and returns the reply
/// envelope's body; the caller fills in ids. A failure is a reply with an Error body.
using operation_fn = asio::awaitable<pb::Envelope> (*)(request_context ctx, pb::Envelope request);

struct operation {
  pb::Envelope::BodyCase request;
  const char* name;  // the policy's name for it, also the capability advertised in HelloAck
  operation_fn handle;
  /// It bounds its own run time (exec's timeout; a transfer lasts as long as it makes
  /// progress) instead of the agent's request timeout.
  bool own_deadline = false;
  /// Runs while filesystems are frozen (it writes nothing to disk).
  bool while_frozen = false;
};

using operation_table = std::span<const operation>;

/// The operation names, once each, in table order.
std::vector<std::string> operation_names(operation_table table);
/// What the agent advertises (HelloAck, Info): each operation once, "cancel" and
/// "stream-credit".
std::vector<std::string> capabilities(operation_table table);
/// The operation of `table` that answers `request`, or nullptr.
const operation* find_operation(operation_table table, pb::Envelope::BodyCase request);

pb::Envelope error_reply(pb::ErrorCode code, std::string message);
/// The answer to a Ping, built without a coroutine.
pb::Envelope pong_for(const pb::Envelope& request);
/// An Error reply for a refusal by the local policy, with its audit line.
pb::Envelope refused(const request_context& ctx, const char* op, const refusal& why);
/// An Error reply (RESOURCE_EXHAUSTED) for a request over a cap of the local policy
/// (policy.max_jobs, policy.max_open_uploads), with its audit line.
pb::Envelope over_limit(const request_context& ctx, const char* op, const refusal& why);
/// An Error reply for a failed system call (errno `err`), mapped to the nearest code.
pb::Envelope system_error(int err, const std::string& what);
/// The code of an Error reply for a failed system call (errno `err`).
pb::ErrorCode error_code_for(int err) noexcept;
/// The reply to a command that could not be started (child_process::start's error): not found,
/// timed out, or what failed and why (out of descriptors: resource exhausted).
pb::Envelope spawn_failure(const common::error_info& e);

}  // namespace qxa::guest
