// SPDX-License-Identifier: MIT
// The handler interface: one handler per capability, each in its own file under guest/handlers/,
// all listed in one table (guest/handlers/registry.cpp). The session runs them; tests call them
// directly.
#pragma once

#include <asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/guest/agent.hpp"
#include "qxa/guest/hooks.hpp"
#include "qxa/guest/process.hpp"

namespace qxa::guest::handlers {

/// What a handler may use while it runs.
struct request_context {
  agent_state& state;
  std::uint64_t session_id;
  std::uint64_t request_id = 0;
  std::shared_ptr<session> owner;  ///< null in unit tests: progress then goes to on_progress
  std::function<void(const pb::Envelope&)> on_progress = nullptr;

  /// Sends a partial reply (more = true) to this request, first waiting while the session's
  /// write queue holds much bulk data (the host reads at its pace; small replies go first).
  /// False once the session has ended: the handler should stop. `body` is sent as it is on
  /// return (its reply fields set): the handler may fill it again, its buffers reused.
  asio::awaitable<bool> progress(pb::Envelope& body) const;
  /// The largest reply payload the host accepts (its Hello's limit, or the agent's own).
  [[nodiscard]] std::uint32_t max_reply_bytes() const;
};

/// A handler takes the request by value (it owns it for its whole run) and returns the reply
/// envelope's body; the session fills in ids. A failure is a reply with an Error body.
using handler_fn = asio::awaitable<pb::Envelope> (*)(request_context ctx, pb::Envelope request);

struct handler_entry {
  pb::Envelope::BodyCase request;
  const char* name;  // also the capability advertised in HelloAck
  handler_fn handle;
  /// The handler bounds its own run time (exec's timeout; a transfer lasts as long as it makes
  /// progress) instead of the agent's request timeout.
  bool own_deadline = false;
  /// Runs while filesystems are frozen (it writes nothing to disk).
  bool while_frozen = false;
};

/// Every request the agent understands.
std::span<const handler_entry> table();
/// The operation names, once each, in table order.
std::vector<std::string> operation_names(std::span<const handler_entry> entries = table());
/// What the agent advertises (HelloAck, Info): each operation once, and "cancel".
std::vector<std::string> capabilities(std::span<const handler_entry> entries = table());
/// The entry for a request, or nullptr.
const handler_entry* find(pb::Envelope::BodyCase request);

pb::Envelope error_reply(pb::ErrorCode code, std::string message);

asio::awaitable<pb::Envelope> ping(request_context ctx, pb::Envelope request);
/// The answer to a Ping, built without a coroutine.
pb::Envelope pong_for(const pb::Envelope& request);
asio::awaitable<pb::Envelope> info(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> telemetry(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> time(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> hostname(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> users(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> network(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> exec(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> job_list(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> job_attach(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> job_kill(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> file_read(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> file_write(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> file_stat(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> dir_list(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> make_directory(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> remove_path(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> move_path(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> power(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> suspend(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> freeze(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> thaw(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> freeze_status(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> fstrim(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> disks(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> password(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> ssh_keys(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> hotplug(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> upgrade(request_context ctx, pb::Envelope request);
asio::awaitable<pb::Envelope> upgrade_status(request_context ctx, pb::Envelope request);

/// Starts a detached exec, already checked against the policy, as a job: its Job, or why not.
asio::awaitable<pb::Envelope> start_job(const request_context& ctx, const pb::ExecRequest& request,
                                        const spawn_options& spawn, const std::string& program,
                                        const std::string& user);
/// A job as the wire has it.
pb::Job job_to_proto(const job& j, const agent_state& state);

/// A power hook's run as the wire has it.
pb::HookOutcome hook_to_proto(const hook_outcome& o);
/// Whether systemd is the guest's service manager (`dir`: /run/systemd/system).
bool systemd_running(const std::string& dir);

/// An Error reply for a refusal by the local policy, with its audit line.
pb::Envelope refused(const request_context& ctx, const char* op, const refusal& why);
/// An Error reply (RESOURCE_EXHAUSTED) for a request over a cap of the local policy
/// (policy.max_jobs, policy.max_open_uploads), with its audit line.
pb::Envelope over_limit(const request_context& ctx, const char* op, const refusal& why);
/// An Error reply for a failed system call (errno `err`), mapped to the nearest code.
pb::Envelope system_error(int err, const std::string& what);
/// The code of an Error reply for a failed system call (errno `err`).
pb::ErrorCode error_code_for(int err) noexcept;
/// The reply to a command that could not be started (child_process::spawn's error): not found,
/// or what failed and why (out of descriptors: resource exhausted).
pb::Envelope spawn_failure(const common::error_info& e);

/// The Info body, also used to fill HelloAck.
pb::Info make_info(const agent_state& state);

}  // namespace qxa::guest::handlers
