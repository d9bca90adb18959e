// SPDX-License-Identifier: MIT
#include "qxa/common/error.hpp"

namespace qxa::common {
namespace {

class category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "qxa"; }

  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::closed:
        return "closed";
      case errc::connection_lost:
        return "connection lost";
      case errc::write_timeout:
        return "write timed out";
      case errc::request_timeout:
        return "request timed out";
      case errc::handshake_timeout:
        return "handshake timed out";
      case errc::frame_too_large:
        return "frame exceeds the maximum size";
      case errc::bad_frame:
        return "frame does not hold a valid message";
      case errc::protocol_error:
        return "protocol error";
      case errc::not_connected:
        return "not connected";
      case errc::too_many_requests:
        return "too many requests in flight";
      case errc::queue_full:
        return "write queue full";
      case errc::superseded:
        return "superseded by a newer message";
      case errc::remote_error:
        return "the peer answered with an error";
      case errc::invalid_argument:
        return "invalid argument";
      case errc::cancelled:
        return "cancelled";
      case errc::unavailable:
        return "unavailable";
      case errc::internal:
        return "internal error (logged)";
    }
    return "unknown qxa error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& qxa_category() noexcept {
  static const category_impl instance;
  return instance;
}

std::string error_info::describe() const {
  if (message.empty()) return code.message();
  if (code.category() == qxa_category() && code == errc::remote_error) return message;
  // "End of file", not "End of file (End of file)".
  if (message == code.message()) return message;
  return message + " (" + code.message() + ")";
}

}  // namespace qxa::common
