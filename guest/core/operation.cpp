// SPDX-License-Identifier: MIT
#include "qxa/guest/core/operation.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/common/wall_clock.hpp"

namespace qxa::guest {

const operation* find_operation(operation_table table, pb::Envelope::BodyCase request) {
  for (const auto& e : table) {
    if (e.request == request) return &e;
  }
  return nullptr;
}

std::vector<std::string> operation_names(operation_table table) {
  std::vector<std::string> names;
  for (const auto& e : table) {
    if (std::find(names.begin(), names.end(), e.name) == names.end()) names.emplace_back(e.name);
  }
  return names;
}

std::vector<std::string> capabilities(operation_table table) {
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

pb::Envelope audited_refusal(const request_context& ctx, const char* op, const refusal& why,
                           pb::ErrorCode code) {
  common::log_warning("audit: op={} session={:016x} request={} outcome=refused rule={}", op,
                      ctx.session_id, ctx.request_id, why.rule);
  auto e = error_reply(code, why.message);
  e.mutable_error()->set_rule(why.rule);
  return e;
}

}  // namespace

pb::Envelope refused(const request_context& ctx, const char* op, const refusal& why) {
  return audited_refusal(ctx, op, why, pb::ERROR_CODE_PERMISSION_DENIED);
}

pb::Envelope over_limit(const request_context& ctx, const char* op, const refusal& why) {
  return audited_refusal(ctx, op, why, pb::ERROR_CODE_RESOURCE_EXHAUSTED);
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

pb::Envelope pong_for(const pb::Envelope& request) {
  pb::Envelope reply;
  reply.mutable_pong()->set_nonce(request.ping().nonce());
  reply.mutable_pong()->set_unix_ns(common::unix_ns());
  return reply;
}

}  // namespace qxa::guest
