// SPDX-License-Identifier: MIT
// Envelope <-> frame bytes, on top of the pure frame codec.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "quantix/agent/v1/agent.pb.h"
#include "qxa/common/error.hpp"
#include "qxa/common/frame.hpp"

namespace qxa::common {

namespace pb = ::quantix::agent::v1;

/// The protocol version this build speaks (carried in Hello / HelloAck and the frame header).
inline constexpr std::uint32_t protocol_version = 1;

/// Serializes one message (an Envelope, or a control message) into a complete frame. Fails with
/// frame_too_large when the payload would exceed `max_payload`.
result<frame_bytes> encode_message(const google::protobuf::MessageLite& message,
                                   std::size_t max_payload = default_max_frame_size);

inline result<frame_bytes> encode_envelope(const pb::Envelope& envelope,
                                           std::size_t max_payload = default_max_frame_size) {
  return encode_message(envelope, max_payload);
}

/// Sends what protobuf's runtime reports (while parsing a peer's message) to our log at debug
/// level; once per process, and done by decode_message().
void route_protobuf_logs();

/// Parses a frame payload. Returns false when the bytes are not a valid message.
bool decode_message(std::span<const std::uint8_t> payload, google::protobuf::MessageLite& out);

inline bool decode_envelope(std::span<const std::uint8_t> payload, pb::Envelope& out) {
  return decode_message(payload, out);
}

/// The name of the envelope's body ("ping", "telemetry", ...), for logs and metrics.
const char* body_name(const pb::Envelope& envelope) noexcept;

}  // namespace qxa::common
