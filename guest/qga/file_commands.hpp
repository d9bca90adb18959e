// SPDX-License-Identifier: MIT
// What commands.cpp and files.cpp share: the native checks, and the guest-file-* commands
// (files.cpp) for the command table (commands.cpp).
#pragma once

#include <asio/awaitable.hpp>

#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/qga/qga.hpp"

namespace qxa::guest::qga {

/// The native checks for the operation that answers `body` (the policy's lists, then the
/// frozen state), as run_operation() makes them: nothing when it may run; else the answer
/// "Command NAME has been disabled: why", after its audit line.
std::optional<answer> native_refusal(const context& ctx, const command_call& call,
                                     pb::Envelope::BodyCase body);

asio::awaitable<answer> file_open(context& ctx, const command_call& call);
asio::awaitable<answer> file_close(context& ctx, const command_call& call);
asio::awaitable<answer> file_read(context& ctx, const command_call& call);
asio::awaitable<answer> file_write(context& ctx, const command_call& call);
asio::awaitable<answer> file_seek(context& ctx, const command_call& call);
asio::awaitable<answer> file_flush(context& ctx, const command_call& call);

}  // namespace qxa::guest::qga
