// SPDX-License-Identifier: MIT
// The guest-file-* commands (files.cpp), for the command table (commands.cpp).
#pragma once

#include <asio/awaitable.hpp>

#include "qxa/guest/qga.hpp"

namespace qxa::guest::qga {

asio::awaitable<answer> file_open(context& ctx, const command_call& call);
asio::awaitable<answer> file_close(context& ctx, const command_call& call);
asio::awaitable<answer> file_read(context& ctx, const command_call& call);
asio::awaitable<answer> file_write(context& ctx, const command_call& call);
asio::awaitable<answer> file_seek(context& ctx, const command_call& call);
asio::awaitable<answer> file_flush(context& ctx, const command_call& call);

}  // namespace qxa::guest::qga
