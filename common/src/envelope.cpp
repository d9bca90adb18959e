// SPDX-License-Identifier: MIT
#include "qxa/common/envelope.hpp"

#include <fmt/format.h>

namespace qxa::common {

result<std::vector<std::uint8_t>> encode_message(const google::protobuf::MessageLite& envelope,
                                                 std::size_t max_payload) {
  const std::size_t size = envelope.ByteSizeLong();
  if (size > max_payload) {
    return {errc::frame_too_large,
            fmt::format("message of {} bytes exceeds the {} byte frame limit", size, max_payload)};
  }
  std::vector<std::uint8_t> frame(frame_header_size + size);
  envelope.SerializeWithCachedSizesToArray(frame.data() + frame_header_size);
  encode_frame_header({frame.data() + frame_header_size, size},
                      std::span<std::uint8_t, frame_header_size>(frame.data(), frame_header_size));
  return frame;
}

bool decode_message(std::span<const std::uint8_t> payload, google::protobuf::MessageLite& out) {
  return out.ParseFromArray(payload.data(), static_cast<int>(payload.size()));
}

const char* body_name(const pb::Envelope& envelope) noexcept {
  switch (envelope.body_case()) {
    case pb::Envelope::kHello:
      return "hello";
    case pb::Envelope::kHelloAck:
      return "hello_ack";
    case pb::Envelope::kError:
      return "error";
    case pb::Envelope::kPing:
      return "ping";
    case pb::Envelope::kPong:
      return "pong";
    case pb::Envelope::kAgentReady:
      return "agent_ready";
    case pb::Envelope::kInfoRequest:
      return "info_request";
    case pb::Envelope::kInfo:
      return "info";
    case pb::Envelope::kTelemetryRequest:
      return "telemetry_request";
    case pb::Envelope::kTelemetry:
      return "telemetry";
    case pb::Envelope::kTimeRequest:
      return "time_request";
    case pb::Envelope::kTimeReply:
      return "time_reply";
    case pb::Envelope::kHostnameRequest:
      return "hostname_request";
    case pb::Envelope::kHostnameReply:
      return "hostname_reply";
    case pb::Envelope::BODY_NOT_SET:
      return "empty";
  }
  return "unknown";
}

}  // namespace qxa::common
