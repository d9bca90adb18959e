// SPDX-License-Identifier: MIT
// mkdir, rm and mv in the guest: every path placed under the write roots and walked like an
// upload's (file_paths.hpp), every change made by name from a directory descriptor, nothing
// followed. Removing a tree can take long and blocks in the kernel: it runs on a thread of its
// own (own_thread.hpp) and stops when the request ends.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>

#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/mech/own_thread.hpp"
#include "qxa/guest/ops/file_paths.hpp"

namespace qxa::guest::ops {

namespace {

constexpr mode_t default_directory_mode = 0755;
/// Trees removed at once, each on its thread (a cancelled one may still be finishing a step).
constexpr int max_removals = 4;
std::atomic<int> removals_running{0};

struct tree_work final : thread_work {
  unique_fd dir;
  std::string name, label;
  tree_removal outcome;

  ~tree_work() override { --removals_running; }
  void run() override { outcome = remove_tree(dir.get(), name, stop, label); }
};

pb::Envelope changed(const request_context& ctx, const char* op, const std::string& path,
                     pb::FileChangeReply r) {
  common::log_info("audit: op={} session={:016x} request={} outcome=ok path={}{}", op,
                   ctx.session_id, ctx.request_id, common::log_value(path),
                   op == std::string_view("file-remove") ? fmt::format(" removed={}", r.removed())
                                                         : std::string());
  pb::Envelope reply;
  *reply.mutable_file_change_reply() = std::move(r);
  return reply;
}

pb::Envelope root_refused(const request_context& ctx, const char* op, const std::string& path,
                          const char* what) {
  return refused(
      ctx, op,
      refusal{"policy.write_roots",
              fmt::format("'{}' is a root of the guest's write_roots: it is not {}", path, what)});
}

}  // namespace

asio::awaitable<pb::Envelope> make_directory(request_context ctx, pb::Envelope request) {
  const auto& req = request.mkdir_request();
  const auto& policy = ctx.state.options.policy;
  if ((req.mode() & ~07777u) != 0) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT,
                          fmt::format("mode {:o} has bits beyond the permission bits", req.mode()));
  }
  const auto mode = req.mode() == 0 ? default_directory_mode : static_cast<mode_t>(req.mode());
  if ((mode & (S_ISUID | S_ISGID)) != 0 && !policy.write_setid) {
    co_return refused(ctx, "file-mkdir",
                      refusal{"policy.write_setid",
                              fmt::format("mode {:o} has the setuid or setgid bit, which the "
                                          "guest's policy does not allow",
                                          mode)});
  }
  auto where = place(ctx, "file-mkdir", req.path(), local_policy::access::write, req.parents());
  if (auto* failed = std::get_if<pb::Envelope>(&where)) co_return std::move(*failed);
  auto& p = std::get<placed>(where);
  pb::FileChangeReply r;
  if (p.name.empty() || ::mkdirat(p.dir.get(), p.name.c_str(), 0700) != 0) {
    const int err = p.name.empty() ? EEXIST : errno;
    if (err == EEXIST && req.parents()) {
      auto node = node_of(p);
      if (node && S_ISDIR(node->second.mode)) {
        r.set_existed(true);
        co_return changed(ctx, "file-mkdir", req.path(), std::move(r));
      }
      co_return error_reply(pb::ERROR_CODE_ALREADY_EXISTS,
                            fmt::format("'{}' exists and is not a directory", req.path()));
    }
    co_return system_error(err, "cannot make the directory " + req.path());
  }
  // Made 0700, then given its mode through a descriptor (exactly, whatever the agent's umask)
  // once it is certain to be the directory just made: whoever may write to the parent could
  // have put another in its place.
  unique_fd made(
      ::openat(p.dir.get(), p.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!made || ::fstat(made.get(), &st) != 0 || st.st_uid != ::geteuid()) {
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION,
                          fmt::format("'{}' was replaced while it was being made", req.path()));
  }
  if (::fchmod(made.get(), mode) != 0) {
    co_return system_error(errno, "cannot set the mode of " + req.path());
  }
  co_return changed(ctx, "file-mkdir", req.path(), std::move(r));
}

asio::awaitable<pb::Envelope> remove_path(request_context ctx, pb::Envelope request) {
  const auto& req = request.remove_request();
  const auto missing = [&] {
    pb::FileChangeReply r;
    r.set_missing(true);
    return changed(ctx, "file-remove", req.path(), std::move(r));
  };
  auto where = place(ctx, "file-remove", req.path(), local_policy::access::write);
  if (auto* failed = std::get_if<pb::Envelope>(&where)) {
    if (req.missing_ok() && failed->error().code() == pb::ERROR_CODE_NOT_FOUND) {
      co_return missing();
    }
    co_return std::move(*failed);
  }
  auto& p = std::get<placed>(where);
  if (p.name.empty()) co_return root_refused(ctx, "file-remove", req.path(), "removed");
  auto node = open_node(p.dir.get(), p.name);
  if (!node) {
    if (req.missing_ok() && node.code() == std::errc::no_such_file_or_directory) {
      co_return missing();
    }
    co_return walk_failure(
        ctx, "file-remove", req.path(), local_policy::access::write,
        {node.code(), "cannot remove " + req.path() + ": " + node.error().message});
  }
  pb::FileChangeReply r;
  if (!S_ISDIR(node->second.mode)) {
    if (::unlinkat(p.dir.get(), p.name.c_str(), 0) != 0) {
      co_return system_error(errno, "cannot remove " + req.path());
    }
    r.set_removed(1);
    co_return changed(ctx, "file-remove", req.path(), std::move(r));
  }
  if (!req.recursive()) {
    if (::unlinkat(p.dir.get(), p.name.c_str(), AT_REMOVEDIR) != 0) {
      if (errno == ENOTEMPTY || errno == EEXIST) {
        co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION,
                              fmt::format("'{}' is a directory with entries: remove it with "
                                          "what it holds only when asked to (rm -r)",
                                          req.path()));
      }
      co_return system_error(errno, "cannot remove " + req.path());
    }
    r.set_removed(1);
    co_return changed(ctx, "file-remove", req.path(), std::move(r));
  }
  if (++removals_running > max_removals) {
    --removals_running;
    co_return error_reply(pb::ERROR_CODE_RESOURCE_EXHAUSTED,
                          fmt::format("{} directory trees are being removed already; try again "
                                      "when one is done",
                                      max_removals));
  }
  auto work = std::make_shared<tree_work>();
  work->dir = std::move(p.dir);
  work->name = p.name;
  work->label = req.path();
  if (auto ec = co_await run_on_own_thread(work)) {
    co_return system_error(ec.value(), "cannot start removing " + req.path());
  }
  if (const auto& failure = work->outcome.failure) {
    common::log_info(
        "audit: op=file-remove session={:016x} request={} outcome=partial path={} removed={}",
        ctx.session_id, ctx.request_id, common::log_value(req.path()), work->outcome.removed);
    const int err =
        failure->code.category() == std::system_category() ? failure->code.value() : EIO;
    auto e = system_error(err, req.path());
    if (err == EXDEV || err == EBUSY || err == ENOTEMPTY || err == ELOOP || err == EAGAIN) {
      e.mutable_error()->set_code(pb::ERROR_CODE_FAILED_PRECONDITION);
    }
    e.mutable_error()->set_message(
        common::to_utf8(fmt::format("removed {} entries of {}, then left the rest: {}",
                                    work->outcome.removed, req.path(), failure->message)));
    co_return e;
  }
  r.set_removed(work->outcome.removed);
  co_return changed(ctx, "file-remove", req.path(), std::move(r));
}

asio::awaitable<pb::Envelope> move_path(request_context ctx, pb::Envelope request) {
  const auto& req = request.move_request();
  auto from = place(ctx, "file-move", req.from(), local_policy::access::write);
  if (auto* failed = std::get_if<pb::Envelope>(&from)) co_return std::move(*failed);
  auto to = place(ctx, "file-move", req.to(), local_policy::access::write);
  if (auto* failed = std::get_if<pb::Envelope>(&to)) co_return std::move(*failed);
  auto& f = std::get<placed>(from);
  auto& t = std::get<placed>(to);
  if (f.name.empty()) co_return root_refused(ctx, "file-move", req.from(), "moved");
  if (t.name.empty()) co_return root_refused(ctx, "file-move", req.to(), "replaced");
  // The source is renamed as itself: a symbolic link moves as a link.
  if (::renameat2(f.dir.get(), f.name.c_str(), t.dir.get(), t.name.c_str(),
                  req.replace() ? 0 : RENAME_NOREPLACE) != 0) {
    const int err = errno;
    if (err == EXDEV) {
      co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION,
                            fmt::format("'{}' and '{}' are on different filesystems: a move "
                                        "renames within one (copy, then remove)",
                                        req.from(), req.to()));
    }
    if (err == EBUSY) {
      co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION,
                            fmt::format("'{}' or '{}' is a mount point", req.from(), req.to()));
    }
    if (err == EEXIST && !req.replace()) {
      co_return error_reply(pb::ERROR_CODE_ALREADY_EXISTS,
                            fmt::format("'{}' exists: ask to replace it", req.to()));
    }
    co_return system_error(err, fmt::format("cannot move {} to {}", req.from(), req.to()));
  }
  common::log_info("audit: op=file-move session={:016x} request={} outcome=ok from={} to={}",
                   ctx.session_id, ctx.request_id, common::log_value(req.from()),
                   common::log_value(req.to()));
  pb::Envelope reply;
  reply.mutable_file_change_reply();
  co_return reply;
}

}  // namespace qxa::guest::ops
