// SPDX-License-Identifier: MIT
#include "qxa/host/control.hpp"

namespace qxa::host {

using common::errc;

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

std::error_code local_code(pb::ErrorCode code) noexcept {
  switch (code) {
    case pb::ERROR_CODE_UNAVAILABLE:
      return make_error_code(errc::unavailable);
    case pb::ERROR_CODE_CONNECTION_LOST:
      return make_error_code(errc::connection_lost);
    case pb::ERROR_CODE_TIMEOUT:
      return make_error_code(errc::request_timeout);
    case pb::ERROR_CODE_TOO_MANY_REQUESTS:
      return make_error_code(errc::too_many_requests);
    case pb::ERROR_CODE_INVALID_ARGUMENT:
      return make_error_code(errc::invalid_argument);
    case pb::ERROR_CODE_CANCELLED:
      return make_error_code(errc::cancelled);
    default:
      return make_error_code(errc::remote_error);
  }
}

}  // namespace qxa::host
