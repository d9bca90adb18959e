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
    case pb::Envelope::kStreamCredit:
      return "stream_credit";
    case pb::Envelope::kTimeRequest:
      return "time_request";
    case pb::Envelope::kTimeReply:
      return "time_reply";
    case pb::Envelope::kHostnameRequest:
      return "hostname_request";
    case pb::Envelope::kHostnameReply:
      return "hostname_reply";
    case pb::Envelope::kCancelRequest:
      return "cancel_request";
    case pb::Envelope::kCancelReply:
      return "cancel_reply";
    case pb::Envelope::kUsersRequest:
      return "users_request";
    case pb::Envelope::kUsersReply:
      return "users_reply";
    case pb::Envelope::kNetworkRequest:
      return "network_request";
    case pb::Envelope::kNetworkReply:
      return "network_reply";
    case pb::Envelope::kExecRequest:
      return "exec_request";
    case pb::Envelope::kExecOutput:
      return "exec_output";
    case pb::Envelope::kExecResult:
      return "exec_result";
    case pb::Envelope::kJob:
      return "job";
    case pb::Envelope::kJobsRequest:
      return "jobs_request";
    case pb::Envelope::kJobsReply:
      return "jobs_reply";
    case pb::Envelope::kAttachRequest:
      return "attach_request";
    case pb::Envelope::kKillJobRequest:
      return "kill_job_request";
    case pb::Envelope::kFileReadRequest:
      return "file_read_request";
    case pb::Envelope::kFileChunk:
      return "file_chunk";
    case pb::Envelope::kFileReadResult:
      return "file_read_result";
    case pb::Envelope::kFileWriteOpen:
      return "file_write_open";
    case pb::Envelope::kFileWriteChunk:
      return "file_write_chunk";
    case pb::Envelope::kFileWriteClose:
      return "file_write_close";
    case pb::Envelope::kFileWriteReply:
      return "file_write_reply";
    case pb::Envelope::kFileStatRequest:
      return "file_stat_request";
    case pb::Envelope::kFileStat:
      return "file_stat";
    case pb::Envelope::kDirListRequest:
      return "dir_list_request";
    case pb::Envelope::kDirList:
      return "dir_list";
    case pb::Envelope::kMkdirRequest:
      return "mkdir_request";
    case pb::Envelope::kRemoveRequest:
      return "remove_request";
    case pb::Envelope::kMoveRequest:
      return "move_request";
    case pb::Envelope::kFileChangeReply:
      return "file_change_reply";
    case pb::Envelope::kPowerRequest:
      return "power_request";
    case pb::Envelope::kPowerReply:
      return "power_reply";
    case pb::Envelope::kSuspendRequest:
      return "suspend_request";
    case pb::Envelope::kSuspendReply:
      return "suspend_reply";
    case pb::Envelope::kFreezeRequest:
      return "freeze_request";
    case pb::Envelope::kThawRequest:
      return "thaw_request";
    case pb::Envelope::kFreezeStatusRequest:
      return "freeze_status_request";
    case pb::Envelope::kFreezeStatus:
      return "freeze_status";
    case pb::Envelope::kTrimRequest:
      return "trim_request";
    case pb::Envelope::kTrimReply:
      return "trim_reply";
    case pb::Envelope::kDisksRequest:
      return "disks_request";
    case pb::Envelope::kDisksReply:
      return "disks_reply";
    case pb::Envelope::kPasswordRequest:
      return "password_request";
    case pb::Envelope::kPasswordReply:
      return "password_reply";
    case pb::Envelope::kSshKeysRequest:
      return "ssh_keys_request";
    case pb::Envelope::kSshKeysReply:
      return "ssh_keys_reply";
    case pb::Envelope::kHotplugRequest:
      return "hotplug_request";
    case pb::Envelope::kHotplugReply:
      return "hotplug_reply";
    case pb::Envelope::kUpgradeRequest:
      return "upgrade_request";
    case pb::Envelope::kUpgradeConfirmRequest:
      return "upgrade_confirm_request";
    case pb::Envelope::kUpgradeStatusRequest:
      return "upgrade_status_request";
    case pb::Envelope::kUpgradeStatus:
      return "upgrade_status";
    case pb::Envelope::BODY_NOT_SET:
      return "empty";
  }
  return "unknown";
}

}  // namespace qxa::common
