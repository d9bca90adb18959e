// SPDX-License-Identifier: MIT
#include "qxa/common/envelope.hpp"

#include <fmt/format.h>
#include <google/protobuf/stubs/logging.h>

#include "qxa/common/log.hpp"

namespace qxa::common {

namespace {

// What protobuf reports comes from parsing a peer's message (a string field that is not UTF-8,
// say): into our log, at debug level, so that a peer cannot flood stderr or the journal with it.
void protobuf_log(google::protobuf::LogLevel level, const char* file, int line,
                  const std::string& message) {
  const auto ours =
      level == google::protobuf::LOGLEVEL_FATAL ? log_level::critical : log_level::debug;
  log(ours, "protobuf ({}:{}): {}", file, line, message);
}

}  // namespace

void route_protobuf_logs() {
  static const bool routed = [] {
    google::protobuf::SetLogHandler(&protobuf_log);
    return true;
  }();
  (void)routed;
}

result<frame_bytes> encode_message(const google::protobuf::MessageLite& envelope,
                                   std::size_t max_payload) {
  const std::size_t size = envelope.ByteSizeLong();
  if (size > max_payload) {
    return {errc::frame_too_large,
            fmt::format("message of {} bytes exceeds the {} byte frame limit", size, max_payload)};
  }
  frame_bytes frame(frame_header_size + size);  // not zeroed: every byte is written below
  envelope.SerializeWithCachedSizesToArray(frame.data() + frame_header_size);
  encode_frame_header({frame.data() + frame_header_size, size},
                      std::span<std::uint8_t, frame_header_size>(frame.data(), frame_header_size));
  return frame;
}

bool decode_message(std::span<const std::uint8_t> payload, google::protobuf::MessageLite& out) {
  route_protobuf_logs();
  return out.ParseFromArray(payload.data(), static_cast<int>(payload.size()));
}

const char* body_name(const pb::Envelope& envelope) noexcept {
  switch (envelope.body_case()) {
#define QXA_ENVELOPE_BODY(field, Case, Type, number) \
  case pb::Envelope::k##Case:                        \
    return #field;
#include "quantix/agent/v1/envelope_bodies.inc"
#undef QXA_ENVELOPE_BODY
    case pb::Envelope::BODY_NOT_SET:
      return "empty";
  }
  return "unknown";
}

}  // namespace qxa::common
