// SPDX-License-Identifier: MIT
// agent_access: one way to reach VMs' agents, either through qx-agentd's control socket or
// straight to one VM's socket (qx-agent --connect). What qx-agent runs on, and what a program
// that embeds qxa::host can use the same way: one interface, the same errors either way.
//
// Errors: a request's result is the agent's reply (an Error body when the agent refused it), or
// an error_info whose code says what failed on the way: unavailable (no such VM, its agent not
// ready, no daemon), connection_lost, request_timeout, cancelled (Asio cancellation of the
// awaiting coroutine), or remote_error (the daemon refused the request for another reason).
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/common/error.hpp"
#include "qxa/host/agent_client.hpp"

namespace qxa::host {

class agent_access {
 public:
  virtual ~agent_access() = default;

  /// Connects: to the daemon, or to the VM's socket with a handshake. unavailable, with what
  /// failed, when it cannot.
  virtual asio::awaitable<std::optional<common::error_info>> open() = 0;

  /// The daemon's status of `vm` (every VM when empty). Straight to a socket: what the
  /// handshake, a ping and a telemetry request tell of the one VM there.
  virtual asio::awaitable<common::result<pb::StatusReport>> status(const std::string& vm) = 0;

  /// Sends `request` to `vm`'s agent and waits for the reply (see call_options: partial replies
  /// and the deadline). Cancelled by the awaiting coroutine's cancellation, in the guest too.
  virtual asio::awaitable<common::result<pb::Envelope>> call(const std::string& vm,
                                                             pb::Envelope request,
                                                             call_options options) = 0;
  asio::awaitable<common::result<pb::Envelope>> call(const std::string& vm, pb::Envelope request,
                                                     std::chrono::nanoseconds timeout);

  /// Hands each telemetry sample `vm` pushes to `on_sample` until the VM goes or the connection
  /// ends (the error says which), or the awaiting coroutine is cancelled.
  virtual asio::awaitable<common::error_info> watch(
      const std::string& vm, std::function<void(const pb::Telemetry&)> on_sample) = 0;

  /// Waits (up to `timeout`) until everything queued is written: what a cancellation sent (the
  /// cancel of a request in the guest) goes out before a program ends.
  virtual asio::awaitable<void> flush(std::chrono::nanoseconds timeout) = 0;
};

/// Through qx-agentd's control socket at `control_socket`.
std::unique_ptr<agent_access> through_daemon(asio::any_io_executor ex, std::string control_socket);

/// Straight to one VM's agent socket (QEMU's chardev, or an agent's unix-listen port).
std::unique_ptr<agent_access> straight_to(asio::any_io_executor ex, std::string socket_path,
                                          client_options options = {});

}  // namespace qxa::host
