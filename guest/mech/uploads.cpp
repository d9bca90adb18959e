// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/uploads.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/common/posix.hpp"

namespace qxa::guest {

using common::errc;

namespace {

using common::last_error;
using common::write_all;

// ".NAME.qxa-0123456789abcdef": hidden, recognisably ours, and not guessable in advance.
std::string hidden_name(const std::string& name) {
  std::uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) r = static_cast<std::uint64_t>(::getpid());
  return fmt::format(".{}.qxa-{:016x}", name, r);
}

std::string shown_path(const std::string& root, const std::string& relative) {
  if (relative.empty()) return root;
  return root == "/" ? "/" + relative : root + "/" + relative;
}

}  // namespace

upload_table::~upload_table() {
  for (auto& [handle, u] : uploads_) discard(u);
}

void upload_table::discard(upload& u) {
  u.file.reset();
  if (!u.temp.empty() && u.dir) ::unlinkat(u.dir.get(), u.temp.c_str(), 0);
  u.temp.clear();
}

common::result<std::uint64_t> upload_table::open(std::uint64_t session,
                                                 const upload_request& request) {
  using R = common::result<std::uint64_t>;
  const std::string path = shown_path(request.root, request.relative);
  unique_fd root(::open(request.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) {
    const auto ec = last_error();
    return R{ec, fmt::format("cannot open {}: {}", request.root, ec.message())};
  }
  auto walked = walk_beneath(root.get(), request.relative, request.create_parents, request.root);
  if (!walked) return walked.error();
  if (walked->name.empty()) {
    return R{errc::invalid_argument, fmt::format("'{}' does not name a file", path)};
  }
  upload u;
  u.session = session;
  u.path = path;
  u.dir = std::move(walked->dir);
  u.name = std::move(walked->name);
  std::optional<node_info> existing;
  if (auto node = open_node(u.dir.get(), u.name)) {
    existing = node->second;
  } else if (node.code() != std::errc::no_such_file_or_directory) {
    return R{node.code(), fmt::format("cannot open {}: {}", path, node.error().message)};
  }
  if (existing && S_ISLNK(existing->mode)) {
    return R{
        std::make_error_code(std::errc::too_many_symbolic_link_levels),
        fmt::format("{} is a symbolic link: the agent does not write through or over links", path)};
  }
  if (existing && !S_ISREG(existing->mode)) {
    return R{errc::invalid_argument, path + " exists and is not a regular file"};
  }
  u.mode = request.mode != 0 ? request.mode : existing ? existing->mode & 07777 : 0644;
  u.owner = request.owner;
  if (!u.owner && existing && (existing->uid != ::geteuid() || existing->gid != ::getegid())) {
    // The replaced file's owner, or (a user's file, without policy.write_owner) the agent as
    // owner with its group, and no write for group or others when its mode was kept.
    if (existing->uid == ::geteuid() || request.keep_other_owner) {
      u.owner = file_owner{existing->uid, existing->gid};
    } else {
      u.owner = file_owner{::geteuid(), existing->gid};
      if (request.mode == 0) u.mode &= ~static_cast<mode_t>(S_IWGRP | S_IWOTH);
    }
  }
  if ((u.mode & (S_ISUID | S_ISGID)) != 0 && !request.allow_setid) {
    return R{std::make_error_code(std::errc::operation_not_permitted),
             fmt::format("{} would be setuid or setgid (mode {:o}), which the guest's "
                         "policy.write_setid does not allow",
                         path, u.mode)};
  }
  // An unnamed file in the destination's filesystem: if the agent dies, the kernel frees it and
  // nothing partial is left behind. It gets a name only when complete (commit).
  u.file.reset(::openat(u.dir.get(), ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600));
  if (!u.file && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    for (int attempt = 0; attempt < 100 && !u.file; ++attempt) {
      u.temp = hidden_name(u.name);
      u.file.reset(::openat(u.dir.get(), u.temp.c_str(),
                            O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!u.file && errno != EEXIST) break;
    }
    if (!u.file) u.temp.clear();
  }
  if (!u.file) {
    const auto ec = last_error();
    return R{ec, fmt::format("cannot create a file beside {}: {}", path, ec.message())};
  }
  const std::uint64_t handle = next_handle_++;
  uploads_.emplace(handle, std::move(u));
  return R{handle};
}

common::result<std::uint64_t> upload_table::append(std::uint64_t session, std::uint64_t handle,
                                                   std::uint64_t offset, std::string_view data,
                                                   std::uint64_t max_bytes) {
  using R = common::result<std::uint64_t>;
  auto it = uploads_.find(handle);
  if (it == uploads_.end() || it->second.session != session) {
    return R{errc::invalid_argument, fmt::format("no upload {} in this session", handle)};
  }
  auto& u = it->second;
  if (offset != u.written) {
    return R{
        errc::invalid_argument,
        fmt::format("chunk at offset {}, but {} bytes were written so far", offset, u.written)};
  }
  if (u.written + data.size() > max_bytes) {
    discard(u);
    uploads_.erase(it);
    return R{errc::too_many_requests, fmt::format("the file grows beyond {} bytes", max_bytes)};
  }
  if (!write_all(u.file.get(), data)) {
    const auto ec = last_error();
    auto message = fmt::format("cannot write {}: {}", u.path, ec.message());
    discard(u);
    uploads_.erase(it);
    return R{ec, std::move(message)};
  }
  u.digest.update(data);
  u.written += data.size();
  return R{u.written};
}

common::result<upload_table::committed> upload_table::commit(std::uint64_t session,
                                                             std::uint64_t handle,
                                                             std::string_view expected) {
  using R = common::result<committed>;
  auto it = uploads_.find(handle);
  if (it == uploads_.end() || it->second.session != session) {
    return R{errc::invalid_argument, fmt::format("no upload {} in this session", handle)};
  }
  upload u = std::move(it->second);
  uploads_.erase(it);
  const auto digest = u.digest.finish();
  if (!expected.empty() && common::sha256::bytes(digest) != expected) {
    discard(u);
    return R{errc::invalid_argument,
             fmt::format("SHA-256 mismatch: received data hashes to {}, the host sent {}",
                         common::sha256::hex(digest), common::sha256::hex(expected))};
  }
  // Owner, then mode (a change of owner clears setuid and setgid), through the descriptor.
  std::error_code ec;
  if (u.owner && ::fchown(u.file.get(), u.owner->uid, u.owner->gid) != 0) ec = last_error();
  if (!ec && ::fchmod(u.file.get(), u.mode) != 0) ec = last_error();
  if (!ec && ::fsync(u.file.get()) != 0) ec = last_error();
  if (!ec && u.temp.empty()) {
    // Name the unnamed file (under a hidden name: linkat cannot replace), then rename it over
    // the destination, so that the destination is always either the old file or the new one.
    const auto fd_path = fmt::format("/proc/self/fd/{}", u.file.get());
    for (int attempt = 0; attempt < 100 && u.temp.empty(); ++attempt) {
      std::string candidate = hidden_name(u.name);
      if (::linkat(AT_FDCWD, fd_path.c_str(), u.dir.get(), candidate.c_str(), AT_SYMLINK_FOLLOW) ==
              0 ||
          ::linkat(u.file.get(), "", u.dir.get(), candidate.c_str(), AT_EMPTY_PATH) == 0) {
        u.temp = std::move(candidate);
      } else if (errno != EEXIST) {
        ec = last_error();
        break;
      }
    }
    if (!ec && u.temp.empty()) ec = std::make_error_code(std::errc::file_exists);
  }
  if (!ec && ::renameat(u.dir.get(), u.temp.c_str(), u.dir.get(), u.name.c_str()) != 0) {
    ec = last_error();
  }
  if (ec) {
    discard(u);
    return R{ec, fmt::format("cannot commit {}: {}", u.path, ec.message())};
  }
  u.temp.clear();
  u.file.reset();
  // The rename is durable once the directory is.
  if (auto d = open_directory(u.dir.get())) ::fsync(d->get());
  return R{committed{u.written, digest, u.path}};
}

bool upload_table::abort(std::uint64_t session, std::uint64_t handle) {
  auto it = uploads_.find(handle);
  if (it == uploads_.end() || it->second.session != session) return false;
  discard(it->second);
  uploads_.erase(it);
  return true;
}

std::size_t upload_table::open_in(std::uint64_t session) const noexcept {
  std::size_t n = 0;
  for (const auto& [handle, u] : uploads_) n += u.session == session ? 1 : 0;
  return n;
}

std::size_t upload_table::abort_session(std::uint64_t session) {
  std::size_t n = 0;
  for (auto it = uploads_.begin(); it != uploads_.end();) {
    if (it->second.session == session) {
      discard(it->second);
      it = uploads_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

}  // namespace qxa::guest
