// SPDX-License-Identifier: MIT
#include <unistd.h>

#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest::ops {

// Sets the hostname now (sethostname) and for the next boot (/etc/hostname, written atomically).
asio::awaitable<pb::Envelope> hostname(request_context ctx, pb::Envelope request) {
  const std::string name = request.hostname_request().name();
  if (!valid_hostname(name)) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT,
                          "invalid hostname '" + name + "': use letters, digits, '-' and '.'");
  }
  if (::sethostname(name.data(), name.size()) != 0) {
    const int err = errno;
    common::log_warning("audit: op=hostname session={:016x} outcome=failed error={}",
                        ctx.session_id, std::strerror(err));
    co_return error_reply(err == EPERM ? pb::ERROR_CODE_PERMISSION_DENIED : pb::ERROR_CODE_INTERNAL,
                          std::string("cannot set the hostname: ") + std::strerror(err));
  }
  // /etc is root's: the file is replaced there through a temporary made exclusively.
  const auto failed = write_trusted_file("/etc/hostname", name + "\n", 0644);
  common::log_info("audit: op=hostname session={:016x} outcome=ok name={}{}", ctx.session_id, name,
                   failed ? " (not persisted: " + failed->message + ")" : "");
  pb::Envelope reply;
  reply.mutable_hostname_reply()->set_hostname(common::to_utf8(read_hostname()));
  reply.mutable_hostname_reply()->set_persisted(!failed);
  co_return reply;
}

}  // namespace qxa::guest::ops
