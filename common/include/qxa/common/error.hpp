// SPDX-License-Identifier: MIT
#pragma once

#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

namespace qxa::common {

/// Expected outcomes of the project's operations. They travel as std::error_code, in the
/// "qxa" category; exceptions are kept for bugs.
enum class errc {
  closed = 1,         ///< the stream or client was closed locally
  connection_lost,    ///< the peer went away, or our reader ended
  write_timeout,      ///< a frame was not written within its deadline
  request_timeout,    ///< no reply within the request's deadline
  handshake_timeout,  ///< no HelloAck within the handshake deadline
  frame_too_large,    ///< a header announced more than the maximum frame size
  bad_frame,          ///< a frame passed its checksums but its envelope does not parse
  protocol_error,     ///< a well-formed message that is wrong at this point
  not_connected,      ///< the operation needs a connection and there is none
  too_many_requests,  ///< the in-flight limit is reached
  queue_full,         ///< the write queue is at its limit
  superseded,         ///< a newer message replaced this unsent one
  remote_error,       ///< the peer answered with a structured Error
  invalid_argument,
  cancelled,
  unavailable,  ///< the agent or daemon cannot be reached
  internal,     ///< a bug in this program ended the operation (logged where it happened)
};

const std::error_category& qxa_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), qxa_category()};
}

/// An error code with a human-readable explanation of this particular failure.
struct error_info {
  std::error_code code;
  std::string message;

  /// "message (code text)" or just the code text when there is no message.
  [[nodiscard]] std::string describe() const;
};

/// A value or an error_info. Small on purpose; C++23's std::expected is not available here.
template <typename T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}   // NOLINT: implicit
  result(error_info e) : v_(std::in_place_index<1>, std::move(e)) {}  // NOLINT: implicit
  result(std::error_code ec, std::string message = {})
      : v_(std::in_place_index<1>, error_info{ec, std::move(message)}) {}
  result(errc e, std::string message = {}) : result(make_error_code(e), std::move(message)) {}

  [[nodiscard]] bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const error_info& error() const& { return std::get<1>(v_); }
  [[nodiscard]] std::error_code code() const noexcept {
    return has_value() ? std::error_code{} : std::get<1>(v_).code;
  }

 private:
  std::variant<T, error_info> v_;
};

}  // namespace qxa::common

template <>
struct std::is_error_code_enum<qxa::common::errc> : std::true_type {};
