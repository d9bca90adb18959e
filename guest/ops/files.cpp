// SPDX-License-Identifier: MIT
// Files: read as a stream of chunks, write as open / chunks / close (see uploads.hpp), and stat
// (a listing: file_list.cpp). Every path is placed under a policy root by its
// components and then walked from the root's descriptor without following symbolic links and
// without stepping into a FUSE or network filesystem (fs.hpp). Only regular files are read,
// through a descriptor whose type was checked first, without blocking.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/common/text.hpp"
#include "qxa/guest/mech/upgrade.hpp"
#include "qxa/guest/mech/uploads.hpp"
#include "qxa/guest/ops/file_paths.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest::ops {

namespace {

constexpr std::uint32_t default_chunk_bytes = 256u << 10;

}  // namespace

pb::FileStat::Type type_of(mode_t mode) {
  if (S_ISREG(mode)) return pb::FileStat::TYPE_FILE;
  if (S_ISDIR(mode)) return pb::FileStat::TYPE_DIRECTORY;
  if (S_ISLNK(mode)) return pb::FileStat::TYPE_SYMLINK;
  return pb::FileStat::TYPE_OTHER;
}

// `target` reads a symbolic link's target: readlinkat on the node.
void fill_stat(pb::FileStat& out, const std::string& name, const node_info& st, int dir,
               const char* link_name) {
  out.set_path(name);
  out.set_type(type_of(st.mode));
  out.set_size(st.size);
  out.set_mode(st.mode & 07777);
  out.set_uid(st.uid);
  out.set_gid(st.gid);
  out.set_mtime_unix_ms(st.mtime_ms);
  if (S_ISLNK(st.mode)) {
    char target[PATH_MAX];
    const ssize_t n = ::readlinkat(dir, link_name, target, sizeof target);
    if (n > 0) out.set_symlink_target(std::string(target, static_cast<std::size_t>(n)));
  }
}

pb::Envelope from_error(const common::error_info& e) {
  if (e.code == common::errc::invalid_argument) {
    return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, e.message);
  }
  if (e.code == common::errc::too_many_requests) {
    return error_reply(pb::ERROR_CODE_RESOURCE_EXHAUSTED, e.message);
  }
  // The message already says what the system said: only the code comes from the errno.
  return error_reply(
      error_code_for(e.code.category() == std::system_category() ? e.code.value() : EIO),
      e.message);
}

pb::Envelope walk_failure(const request_context& ctx, const char* op, const std::string& path,
                          local_policy::access mode, const common::error_info& e) {
  if (e.code == std::errc::too_many_symbolic_link_levels) {
    // The links are a user's, perhaps into a mount of theirs that never answers: resolved
    // without entering such a filesystem (realpath(3) as root would).
    const auto real = real_path_without_entering(path);
    return refused(
        ctx, op,
        refusal{mode == local_policy::access::read ? "policy.read_roots" : "policy.write_roots",
                fmt::format("{}{}", e.message,
                            real && path != *real ? fmt::format("; the real path is '{}'", *real)
                                                  : std::string())});
  }
  if (e.code == std::errc::cross_device_link) {
    return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, e.message);
  }
  return from_error(e);
}

std::variant<placed, pb::Envelope> place(const request_context& ctx, const char* op,
                                         const std::string& path, local_policy::access mode,
                                         bool create_parents) {
  local_policy::located where;
  if (auto no = ctx.state.options.policy.locate(path, mode, where)) return refused(ctx, op, *no);
  unique_fd root(::open(where.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return system_error(errno, "cannot open the root " + where.root);
  auto walked = walk_beneath(root.get(), where.relative, create_parents, where.root);
  if (!walked) return walk_failure(ctx, op, path, mode, walked.error());
  return placed{std::move(walked->dir), std::move(walked->name)};
}

common::result<std::pair<unique_fd, node_info>> node_of(const placed& p) {
  if (p.name.empty()) {
    unique_fd self(::fcntl(p.dir.get(), F_DUPFD_CLOEXEC, 0));
    auto info = describe(self.get());
    if (!info) return info.error();
    return std::pair{std::move(self), *info};
  }
  return open_node(p.dir.get(), p.name);
}

asio::awaitable<pb::Envelope> file_read(request_context ctx, pb::Envelope request) {
  const auto& req = request.file_read_request();
  const auto& policy = ctx.state.options.policy;
  auto where = place(ctx, "file-read", req.path(), local_policy::access::read);
  if (auto* failed = std::get_if<pb::Envelope>(&where)) co_return std::move(*failed);
  auto& p = std::get<placed>(where);
  auto node = node_of(p);
  if (!node) {
    co_return walk_failure(
        ctx, "file-read", req.path(), local_policy::access::read,
        {node.code(), "cannot open " + req.path() + ": " + node.error().message});
  }
  const auto& st = node->second;
  // The type is known before the file is opened for reading: a FIFO or a device is never
  // opened (a FIFO would block, a device may act on open), and a link is never followed.
  if (S_ISLNK(st.mode)) {
    co_return walk_failure(
        ctx, "file-read", req.path(), local_policy::access::read,
        {std::make_error_code(std::errc::too_many_symbolic_link_levels),
         fmt::format("'{}' is a symbolic link, which the agent does not follow", req.path())});
  }
  if (!S_ISREG(st.mode)) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, req.path() + " is not a regular file");
  }
  if (st.size > policy.max_file_bytes) {
    co_return refused(
        ctx, "file-read",
        refusal{"policy.max_file_bytes", fmt::format("{} has {} bytes; the guest's limit is {}",
                                                     req.path(), st.size, policy.max_file_bytes)});
  }
  auto opened = open_for_reading(p.dir.get(), p.name, node->first.get());
  if (!opened) co_return system_error(opened.code().value(), "cannot open " + req.path());
  const int fd = opened->get();
  std::uint32_t chunk = req.chunk_bytes() > 0 ? req.chunk_bytes() : default_chunk_bytes;
  chunk = std::min({chunk, policy.max_chunk_bytes, ctx.max_reply_bytes() - 4096});
  common::sha256 digest;
  std::uint64_t offset = req.offset();
  std::uint64_t sent = 0;
  // Each chunk is read straight into the message that carries it, whose buffer serves every
  // chunk in turn: no copy of the data besides the one into the write queue.
  pb::Envelope out;
  for (;;) {
    auto* c = out.mutable_file_chunk();
    std::string& data = *c->mutable_data();
    data.resize(chunk);
    const ssize_t n = ::pread(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      co_return system_error(errno, "cannot read " + req.path());
    }
    if (n == 0) break;
    data.resize(static_cast<std::size_t>(n));
    if (sent + static_cast<std::uint64_t>(n) > policy.max_file_bytes) {
      co_return error_reply(pb::ERROR_CODE_RESOURCE_EXHAUSTED, req.path() + " grew past the limit");
    }
    digest.update(data);
    c->set_offset(offset);
    if (sent == 0) {
      c->set_file_size(st.size);
    } else {
      c->clear_file_size();
    }
    if (!co_await ctx.progress(out)) {
      co_return error_reply(pb::ERROR_CODE_CANCELLED, "the host went away");
    }
    offset += static_cast<std::uint64_t>(n);
    sent += static_cast<std::uint64_t>(n);
  }
  const auto d = digest.finish();
  common::log_info("audit: op=file-read session={:016x} request={} outcome=ok path={} bytes={}",
                   ctx.session_id, ctx.request_id, common::log_value(req.path()), sent);
  pb::Envelope reply;
  auto* r = reply.mutable_file_read_result();
  r->set_size(sent);
  r->set_sha256(common::sha256::bytes(d));
  r->set_mode(st.mode & 07777);
  co_return reply;
}

namespace {

// A new agent binary for an upgrade: staged beside the running one whatever the write roots
// say, so it is the upgrade switch that allows it; the file is the agent's, mode 0700.
pb::Envelope stage_upgrade(const request_context& ctx, const pb::FileWriteOpen& req) {
  const auto& policy = ctx.state.options.policy;
  if (auto no = policy.check_operation("upgrade")) return refused(ctx, "file-write", *no);
  if (req.expected_size() > policy.max_file_bytes) {
    return refused(ctx, "file-write",
                   refusal{"policy.max_file_bytes",
                           fmt::format("{} bytes is more than the guest's limit of {}",
                                       req.expected_size(), policy.max_file_bytes)});
  }
  auto binary = agent_binary(ctx.state.options.upgrade.binary);
  if (!binary) return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, binary.error().message);
  const auto staged = staged_binary(*binary);
  const auto slash = staged.rfind('/');
  if (auto bad = check_trusted_directory(slash == 0 ? "/" : staged.substr(0, slash))) {
    return error_reply(pb::ERROR_CODE_PERMISSION_DENIED, bad->message);
  }
  upload_request u{.root = slash == 0 ? "/" : staged.substr(0, slash),
                   .relative = staged.substr(slash + 1),
                   .mode = 0700,
                   .owner = file_owner{::geteuid(), ::getegid()}};
  auto handle = ctx.state.uploads->open(ctx.session_id, u);
  if (!handle) {
    return error_reply(error_code_for(handle.code().value()),
                       "cannot stage " + staged + ": " + handle.error().message);
  }
  common::log_info(
      "audit: op=file-write session={:016x} request={} outcome=opened handle={} path={} "
      "(a new agent binary)",
      ctx.session_id, ctx.request_id, *handle, common::log_value(staged));
  pb::Envelope reply;
  reply.mutable_file_write_reply()->set_handle(*handle);
  return reply;
}

}  // namespace

asio::awaitable<pb::Envelope> file_write(request_context ctx, pb::Envelope request) {
  auto& uploads = *ctx.state.uploads;
  const auto& policy = ctx.state.options.policy;
  pb::Envelope reply;
  auto* r = reply.mutable_file_write_reply();
  // Each open upload holds two descriptors until it is closed or its session ends.
  if (request.has_file_write_open() && uploads.open_in(ctx.session_id) >= policy.max_open_uploads) {
    co_return over_limit(
        ctx, "file-write",
        refusal{"policy.max_open_uploads",
                fmt::format("{} uploads are open, the most the guest's policy.max_open_uploads "
                            "allows in one session: close or abort one first",
                            policy.max_open_uploads)});
  }
  if (request.has_file_write_open() && request.file_write_open().agent_upgrade()) {
    co_return stage_upgrade(ctx, request.file_write_open());
  }
  if (request.has_file_write_open()) {
    const auto& req = request.file_write_open();
    local_policy::located where;
    if (auto no = policy.locate(req.path(), local_policy::access::write, where)) {
      co_return refused(ctx, "file-write", *no);
    }
    if (req.expected_size() > policy.max_file_bytes) {
      co_return refused(ctx, "file-write",
                        refusal{"policy.max_file_bytes",
                                fmt::format("{} bytes is more than the guest's limit of {}",
                                            req.expected_size(), policy.max_file_bytes)});
    }
    const auto mode = static_cast<mode_t>(req.mode() & 07777);
    if ((mode & (S_ISUID | S_ISGID)) != 0 && !policy.write_setid) {
      co_return refused(ctx, "file-write",
                        refusal{"policy.write_setid",
                                fmt::format("mode {:o} has the setuid or setgid bit, which the "
                                            "guest's policy does not allow for uploads",
                                            mode)});
    }
    if (req.set_owner() && (req.uid() != ::geteuid() || req.gid() != ::getegid()) &&
        !policy.write_owner) {
      co_return refused(ctx, "file-write",
                        refusal{"policy.write_owner",
                                fmt::format("giving the file to uid {} gid {} is not allowed by "
                                            "the guest's policy",
                                            req.uid(), req.gid())});
    }
    upload_request u{.root = where.root,
                     .relative = where.relative,
                     .mode = mode,
                     .create_parents = req.create_parents(),
                     .owner = std::nullopt,
                     .allow_setid = policy.write_setid,
                     .keep_other_owner = policy.write_owner};
    if (req.set_owner()) u.owner = file_owner{req.uid(), req.gid()};
    auto handle = uploads.open(ctx.session_id, u);
    if (!handle) {
      if (handle.code() == std::errc::operation_not_permitted) {
        co_return refused(ctx, "file-write", refusal{"policy.write_setid", handle.error().message});
      }
      co_return walk_failure(ctx, "file-write", req.path(), local_policy::access::write,
                             handle.error());
    }
    common::log_info(
        "audit: op=file-write session={:016x} request={} outcome=opened handle={} "
        "path={}",
        ctx.session_id, ctx.request_id, *handle, common::log_value(req.path()));
    r->set_handle(*handle);
    co_return reply;
  }
  if (request.has_file_write_chunk()) {
    const auto& req = request.file_write_chunk();
    if (req.data().size() > policy.max_chunk_bytes) {
      co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT,
                            fmt::format("a chunk of {} bytes is more than the limit of {}",
                                        req.data().size(), policy.max_chunk_bytes));
    }
    auto n = uploads.append(ctx.session_id, req.handle(), req.offset(), req.data(),
                            policy.max_file_bytes);
    if (!n) {
      if (n.code() == common::errc::too_many_requests) {
        co_return refused(ctx, "file-write", refusal{"policy.max_file_bytes", n.error().message});
      }
      co_return from_error(n.error());
    }
    r->set_handle(req.handle());
    r->set_size(*n);
    co_return reply;
  }
  const auto& req = request.file_write_close();
  r->set_handle(req.handle());
  if (req.abort()) {
    uploads.abort(ctx.session_id, req.handle());
    co_return reply;
  }
  auto done = uploads.commit(ctx.session_id, req.handle(), req.sha256());
  common::log_info("audit: op=file-write session={:016x} request={} outcome={} handle={} {}",
                   ctx.session_id, ctx.request_id, done ? "ok" : "failed", req.handle(),
                   done ? fmt::format("path={} bytes={}", common::log_value(done->path), done->size)
                        : "error=" + common::log_value(done.error().message));
  if (!done) co_return from_error(done.error());
  r->set_size(done->size);
  r->set_sha256(common::sha256::bytes(done->digest));
  r->set_committed(true);
  co_return reply;
}

asio::awaitable<pb::Envelope> file_stat(request_context ctx, pb::Envelope request) {
  const auto& path = request.file_stat_request().path();
  auto where = place(ctx, "file-stat", path, local_policy::access::read);
  if (auto* failed = std::get_if<pb::Envelope>(&where)) co_return std::move(*failed);
  auto node = node_of(std::get<placed>(where));
  if (!node) {
    co_return walk_failure(ctx, "file-stat", path, local_policy::access::read,
                           {node.code(), "cannot stat " + path + ": " + node.error().message});
  }
  pb::Envelope reply;
  // A link is described as itself (lstat): readlinkat on its O_PATH descriptor.
  fill_stat(*reply.mutable_file_stat(), path, node->second, node->first.get(), "");
  co_return reply;
}

}  // namespace qxa::guest::ops
