// SPDX-License-Identifier: MIT
// Files: read as a stream of chunks, write as open / chunks / close (see uploads.hpp), stat,
// and list a directory a page at a time. Every path is checked against the policy's roots
// after resolving its real path.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "handlers.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/guest/uploads.hpp"

namespace qxa::guest::handlers {

namespace {

constexpr std::uint32_t default_chunk_bytes = 256u << 10;

pb::FileStat::Type type_of(mode_t mode) {
  if (S_ISREG(mode)) return pb::FileStat::TYPE_FILE;
  if (S_ISDIR(mode)) return pb::FileStat::TYPE_DIRECTORY;
  if (S_ISLNK(mode)) return pb::FileStat::TYPE_SYMLINK;
  return pb::FileStat::TYPE_OTHER;
}

void fill_stat(pb::FileStat& out, const std::string& name, const struct stat& st,
               const std::string& full_path) {
  out.set_path(name);
  out.set_type(type_of(st.st_mode));
  out.set_size(static_cast<std::uint64_t>(st.st_size));
  out.set_mode(st.st_mode & 07777);
  out.set_uid(st.st_uid);
  out.set_gid(st.st_gid);
  out.set_mtime_unix_ms(static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 +
                        st.st_mtim.tv_nsec / 1'000'000);
  if (S_ISLNK(st.st_mode)) {
    char target[4096];
    const ssize_t n = ::readlink(full_path.c_str(), target, sizeof target);
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
  return system_error(e.code.category() == std::system_category() ? e.code.value() : EIO,
                      e.message);
}

}  // namespace

asio::awaitable<pb::Envelope> file_read(request_context ctx, pb::Envelope request) {
  const auto& req = request.file_read_request();
  const auto& policy = ctx.state.options.policy;
  if (auto no = policy.check_path(req.path(), local_policy::access::read)) {
    co_return refused(ctx, "file-read", *no);
  }
  const int fd = ::open(req.path().c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) co_return system_error(errno, "cannot open " + req.path());
  struct closer {
    int fd;
    ~closer() { ::close(fd); }
  } guard{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) co_return system_error(errno, "cannot stat " + req.path());
  if (!S_ISREG(st.st_mode)) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, req.path() + " is not a regular file");
  }
  if (static_cast<std::uint64_t>(st.st_size) > policy.max_file_bytes) {
    co_return refused(ctx, "file-read",
                      refusal{"policy.max_file_bytes",
                              fmt::format("{} has {} bytes; the guest's limit is {}", req.path(),
                                          st.st_size, policy.max_file_bytes)});
  }
  std::uint32_t chunk = req.chunk_bytes() > 0 ? req.chunk_bytes() : default_chunk_bytes;
  chunk = std::min({chunk, policy.max_chunk_bytes, ctx.state.options.max_frame_size - 4096});
  common::sha256 digest;
  std::string buf(chunk, '\0');
  std::uint64_t offset = req.offset();
  std::uint64_t sent = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      co_return system_error(errno, "cannot read " + req.path());
    }
    if (n == 0) break;
    if (sent + static_cast<std::uint64_t>(n) > policy.max_file_bytes) {
      co_return error_reply(pb::ERROR_CODE_RESOURCE_EXHAUSTED, req.path() + " grew past the limit");
    }
    digest.update(buf.data(), static_cast<std::size_t>(n));
    pb::Envelope out;
    out.mutable_file_chunk()->set_offset(offset);
    out.mutable_file_chunk()->set_data(buf.data(), static_cast<std::size_t>(n));
    if (sent == 0) out.mutable_file_chunk()->set_file_size(static_cast<std::uint64_t>(st.st_size));
    if (!co_await ctx.progress(std::move(out))) {
      co_return error_reply(pb::ERROR_CODE_CANCELLED, "the host went away");
    }
    offset += static_cast<std::uint64_t>(n);
    sent += static_cast<std::uint64_t>(n);
  }
  const auto d = digest.finish();
  common::log_info("audit: op=file-read session={:016x} request={} outcome=ok path={} bytes={}",
                   ctx.session_id, ctx.request_id, req.path(), sent);
  pb::Envelope reply;
  auto* r = reply.mutable_file_read_result();
  r->set_size(sent);
  r->set_sha256(common::sha256::bytes(d));
  r->set_mode(st.st_mode & 07777);
  co_return reply;
}

asio::awaitable<pb::Envelope> file_write(request_context ctx, pb::Envelope request) {
  auto& uploads = *ctx.state.uploads;
  const auto& policy = ctx.state.options.policy;
  pb::Envelope reply;
  auto* r = reply.mutable_file_write_reply();
  if (request.has_file_write_open()) {
    const auto& req = request.file_write_open();
    if (auto no = policy.check_path(req.path(), local_policy::access::write)) {
      co_return refused(ctx, "file-write", *no);
    }
    if (req.expected_size() > policy.max_file_bytes) {
      co_return refused(ctx, "file-write",
                        refusal{"policy.max_file_bytes",
                                fmt::format("{} bytes is more than the guest's limit of {}",
                                            req.expected_size(), policy.max_file_bytes)});
    }
    upload_request u{req.path(), static_cast<mode_t>(req.mode() & 07777), req.create_parents(),
                     std::nullopt};
    if (req.set_owner()) u.owner = std::pair{req.uid(), req.gid()};
    auto handle = uploads.open(ctx.session_id, u);
    if (!handle) co_return from_error(handle.error());
    common::log_info("audit: op=file-write session={:016x} request={} outcome=opened handle={} "
                     "path={}",
                     ctx.session_id, ctx.request_id, *handle, req.path());
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
  common::log_info("audit: op=file-write session={:016x} request={} outcome={} handle={}{}",
                   ctx.session_id, ctx.request_id, done ? "ok" : "failed", req.handle(),
                   done ? fmt::format(" bytes={}", done->size) : " " + done.error().message);
  if (!done) co_return from_error(done.error());
  r->set_size(done->size);
  r->set_sha256(common::sha256::bytes(done->digest));
  r->set_committed(true);
  co_return reply;
}

asio::awaitable<pb::Envelope> file_stat(request_context ctx, pb::Envelope request) {
  const auto& path = request.file_stat_request().path();
  if (auto no = ctx.state.options.policy.check_path(path, local_policy::access::read)) {
    co_return refused(ctx, "file-stat", *no);
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) co_return system_error(errno, "cannot stat " + path);
  pb::Envelope reply;
  fill_stat(*reply.mutable_file_stat(), path, st, path);
  co_return reply;
}

asio::awaitable<pb::Envelope> dir_list(request_context ctx, pb::Envelope request) {
  const auto& req = request.dir_list_request();
  if (auto no = ctx.state.options.policy.check_path(req.path(), local_policy::access::read)) {
    co_return refused(ctx, "file-list", *no);
  }
  DIR* d = ::opendir(req.path().c_str());
  if (d == nullptr) co_return system_error(errno, "cannot list " + req.path());
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    if (!req.after().empty() && name <= req.after()) continue;
    names.push_back(std::move(name));
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  const std::size_t limit = req.limit() > 0 ? std::min<std::uint32_t>(req.limit(), 10'000) : 1000;
  pb::Envelope reply;
  auto* list = reply.mutable_dir_list();
  const std::string dir = req.path().ends_with('/') ? req.path() : req.path() + "/";
  for (std::size_t i = 0; i < names.size() && i < limit; ++i) {
    struct stat st {};
    const auto full = dir + names[i];
    if (::lstat(full.c_str(), &st) != 0) continue;  // gone meanwhile
    fill_stat(*list->add_entries(), names[i], st, full);
  }
  if (names.size() > limit) list->set_next_after(names[limit - 1]);
  co_return reply;
}

}  // namespace qxa::guest::handlers
