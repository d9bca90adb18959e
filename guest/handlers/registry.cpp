// SPDX-License-Identifier: MIT
#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/handlers.hpp"

namespace qxa::guest::handlers {

namespace {
// The name is the operation the policy's allow and block lists speak of.
constexpr bool own_deadline = true;
constexpr bool while_frozen = true;
constexpr std::array entries = {
    handler_entry{pb::Envelope::kPing, "ping", &ping, !own_deadline, while_frozen},
    handler_entry{pb::Envelope::kInfoRequest, "info", &info, !own_deadline, while_frozen},
    handler_entry{pb::Envelope::kTelemetryRequest, "telemetry", &telemetry, !own_deadline,
                  while_frozen},
    handler_entry{pb::Envelope::kTimeRequest, "time", &time},
    handler_entry{pb::Envelope::kHostnameRequest, "hostname", &hostname},
    handler_entry{pb::Envelope::kUsersRequest, "users", &users, !own_deadline, while_frozen},
    handler_entry{pb::Envelope::kNetworkRequest, "network", &network, !own_deadline, while_frozen},
    handler_entry{pb::Envelope::kExecRequest, "exec", &exec, own_deadline},
    // Jobs touch no file: listed, attached to and killed while frozen too. An attach follows a
    // job for as long as it runs.
    handler_entry{pb::Envelope::kJobsRequest, "job-list", &job_list, !own_deadline, while_frozen},
    handler_entry{pb::Envelope::kAttachRequest, "job-attach", &job_attach, own_deadline,
                  while_frozen},
    handler_entry{pb::Envelope::kKillJobRequest, "job-kill", &job_kill, !own_deadline,
                  while_frozen},
    handler_entry{pb::Envelope::kFileReadRequest, "file-read", &file_read, own_deadline},
    handler_entry{pb::Envelope::kFileWriteOpen, "file-write", &file_write},
    handler_entry{pb::Envelope::kFileWriteChunk, "file-write", &file_write},
    handler_entry{pb::Envelope::kFileWriteClose, "file-write", &file_write},
    handler_entry{pb::Envelope::kFileStatRequest, "file-stat", &file_stat},
    handler_entry{pb::Envelope::kDirListRequest, "file-list", &dir_list},
    handler_entry{pb::Envelope::kMkdirRequest, "file-mkdir", &make_directory},
    handler_entry{pb::Envelope::kRemoveRequest, "file-remove", &remove_path},
    handler_entry{pb::Envelope::kMoveRequest, "file-move", &move_path},
    // The power hooks run before the reply, each bounded by power.hook_timeout: cutting them
    // off at limits.request_timeout would leave a hook's work half done and the action unrun.
    handler_entry{pb::Envelope::kPowerRequest, "power", &power, own_deadline},
    handler_entry{pb::Envelope::kSuspendRequest, "suspend", &suspend, own_deadline},
    handler_entry{pb::Envelope::kFreezeRequest, "freeze", &freeze, own_deadline, while_frozen},
    handler_entry{pb::Envelope::kThawRequest, "thaw", &thaw, own_deadline, while_frozen},
    handler_entry{pb::Envelope::kFreezeStatusRequest, "freeze-status", &freeze_status,
                  !own_deadline, while_frozen},
    // Trims take minutes: the request carries its own deadline.
    handler_entry{pb::Envelope::kTrimRequest, "fstrim", &fstrim, own_deadline},
    handler_entry{pb::Envelope::kDisksRequest, "disks", &disks, !own_deadline, while_frozen},
    handler_entry{pb::Envelope::kPasswordRequest, "password", &password},
    handler_entry{pb::Envelope::kSshKeysRequest, "ssh-key", &ssh_keys},
    handler_entry{pb::Envelope::kHotplugRequest, "hotplug", &hotplug},
    // The confirmation writes the upgrade's record: not while frozen either.
    handler_entry{pb::Envelope::kUpgradeRequest, "upgrade", &upgrade},
    handler_entry{pb::Envelope::kUpgradeConfirmRequest, "upgrade", &upgrade},
    handler_entry{pb::Envelope::kUpgradeStatusRequest, "upgrade-status", &upgrade_status,
                  !own_deadline, while_frozen},
};
}  // namespace

std::span<const handler_entry> table() { return entries; }

const handler_entry* find(pb::Envelope::BodyCase request) {
  for (const auto& e : entries) {
    if (e.request == request) return &e;
  }
  return nullptr;
}

std::vector<std::string> operation_names(std::span<const handler_entry> table) {
  std::vector<std::string> names;
  for (const auto& e : table) {
    if (std::find(names.begin(), names.end(), e.name) == names.end()) names.emplace_back(e.name);
  }
  return names;
}

std::vector<std::string> capabilities(std::span<const handler_entry> table) {
  auto names = operation_names(table);
  names.emplace_back("cancel");
  names.emplace_back("stream-credit");
  return names;
}

pb::Envelope error_reply(pb::ErrorCode code, std::string message) {
  pb::Envelope e;
  e.mutable_error()->set_code(code);
  // Messages carry names from the system (a path, a mount point): made UTF-8, so that the
  // reply parses at the host whatever the bytes of the names.
  e.mutable_error()->set_message(common::to_utf8(message));
  return e;
}

namespace {

pb::Envelope refusal_reply(const request_context& ctx, const char* op, const refusal& why,
                           pb::ErrorCode code) {
  common::log_warning("audit: op={} session={:016x} request={} outcome=refused rule={}", op,
                      ctx.session_id, ctx.request_id, why.rule);
  auto e = error_reply(code, why.message);
  e.mutable_error()->set_rule(why.rule);
  return e;
}

}  // namespace

pb::Envelope refused(const request_context& ctx, const char* op, const refusal& why) {
  return refusal_reply(ctx, op, why, pb::ERROR_CODE_PERMISSION_DENIED);
}

pb::Envelope over_limit(const request_context& ctx, const char* op, const refusal& why) {
  return refusal_reply(ctx, op, why, pb::ERROR_CODE_RESOURCE_EXHAUSTED);
}

pb::ErrorCode error_code_for(int err) noexcept {
  pb::ErrorCode code = pb::ERROR_CODE_INTERNAL;
  switch (err) {
    case ENOENT:
      code = pb::ERROR_CODE_NOT_FOUND;
      break;
    case EACCES:
    case EPERM:
    case EROFS:
      code = pb::ERROR_CODE_PERMISSION_DENIED;
      break;
    case EEXIST:
      code = pb::ERROR_CODE_ALREADY_EXISTS;
      break;
    case EBUSY:
    case ENOTEMPTY:
    case EXDEV:
      code = pb::ERROR_CODE_FAILED_PRECONDITION;
      break;
    case ENOTDIR:
    case EISDIR:
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
      code = pb::ERROR_CODE_INVALID_ARGUMENT;
      break;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
    case ENOMEM:
    case EMFILE:  // the agent's descriptors, or the system's, are all taken
    case ENFILE:
      code = pb::ERROR_CODE_RESOURCE_EXHAUSTED;
      break;
    default:
      break;
  }
  return code;
}

pb::Envelope system_error(int err, const std::string& what) {
  return error_reply(error_code_for(err), fmt::format("{}: {}", what, std::strerror(err)));
}

pb::Envelope spawn_failure(const common::error_info& e) {
  if (e.code == common::errc::invalid_argument) {
    return error_reply(pb::ERROR_CODE_NOT_FOUND, e.message);
  }
  // It did not start within its deadline (a directory or program that does not answer).
  if (e.code == std::errc::timed_out) return error_reply(pb::ERROR_CODE_TIMEOUT, e.message);
  // Out of descriptors says so; any other failure (the program's exec refused,
  // say) is the guest's trouble, not the host's request's. The message says what and why.
  const bool exhausted = e.code.category() == std::system_category() &&
                         error_code_for(e.code.value()) == pb::ERROR_CODE_RESOURCE_EXHAUSTED;
  return error_reply(exhausted ? pb::ERROR_CODE_RESOURCE_EXHAUSTED : pb::ERROR_CODE_INTERNAL,
                     e.message);
}

}  // namespace qxa::guest::handlers
