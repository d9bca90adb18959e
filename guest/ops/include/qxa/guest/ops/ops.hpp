// SPDX-License-Identifier: MIT
// The operations: one file each under guest/ops/, all listed in one table (registry.cpp) that
// maps a request to its operation. The core runs them through run_operation(); tests call them
// directly. What an operation is: core/operation.hpp.
#pragma once

#include <asio/awaitable.hpp>
#include <string>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/mech/hooks.hpp"
#include "qxa/guest/mech/jobs.hpp"
#include "qxa/guest/mech/process.hpp"

namespace qxa::guest::ops {

/// Every request the agent understands.
operation_table table();
/// The operation for a request, or nullptr.
const operation* find(pb::Envelope::BodyCase request);
/// What the core needs from the operations (main.cpp gives it to the agent).
agent_parts parts();

asio::awaitable<pb::Envelope> ping(request_context ctx, pb::Envelope request);
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
/// A freeze's outcome as the wire has it (names made UTF-8).
pb::FreezeStatus to_proto(const guest::freeze_status& s);

/// The Info body, also used to fill HelloAck.
pb::Info make_info(const agent_state& state);
/// One telemetry sample as the wire has it, with the freeze while there is one (its sequence
/// number is the agent's to set).
pb::Telemetry telemetry_of(agent_state& state);

}  // namespace qxa::guest::ops
