// SPDX-License-Identifier: MIT
#include "qxa/host/control.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <map>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"

namespace qxa::host {

using common::errc;
using common::result;
using namespace asio::experimental::awaitable_operators;

pb::ErrorCode wire_code(std::error_code ec) noexcept {
  if (ec == errc::unavailable) return pb::ERROR_CODE_UNAVAILABLE;
  if (ec == errc::connection_lost || ec == errc::not_connected || ec == errc::closed) {
    return pb::ERROR_CODE_CONNECTION_LOST;
  }
  if (ec == errc::request_timeout || ec == errc::write_timeout) return pb::ERROR_CODE_TIMEOUT;
  if (ec == errc::too_many_requests) return pb::ERROR_CODE_TOO_MANY_REQUESTS;
  if (ec == errc::invalid_argument) return pb::ERROR_CODE_INVALID_ARGUMENT;
  if (ec == errc::cancelled) return pb::ERROR_CODE_CANCELLED;
  if (ec == errc::frame_too_large || ec == errc::queue_full) {
    return pb::ERROR_CODE_RESOURCE_EXHAUSTED;
  }
  return pb::ERROR_CODE_INTERNAL;
}

}  // namespace qxa::host
