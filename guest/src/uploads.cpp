// SPDX-License-Identifier: MIT
#include "qxa/guest/uploads.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "qxa/common/log.hpp"

namespace qxa::guest {

using common::errc;

namespace {

std::error_code last_error() { return {errno, std::system_category()}; }

std::pair<std::string, std::string> split_path(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return {".", path};
  return {slash == 0 ? "/" : path.substr(0, slash), path.substr(slash + 1)};
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// "DIR/.NAME.qxa-XXXXXX" (mkstemp's pattern by default): hidden, and recognisably ours.
std::string hidden_name(const std::string& dir, const std::string& name,
                        const std::string& unique = "XXXXXX") {
  return dir + (dir == "/" ? "" : "/") + "." + name + ".qxa-" + unique;
}

}  // namespace

std::error_code make_directories(const std::string& dir) {
  if (dir.empty() || dir == "/") return {};
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    return S_ISDIR(st.st_mode) ? std::error_code{}
                               : std::make_error_code(std::errc::not_a_directory);
  }
  if (auto ec = make_directories(split_path(dir).first)) return ec;
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return last_error();
  return {};
}

upload_table::~upload_table() {
  for (auto& [handle, u] : uploads_) discard(u);
}

void upload_table::discard(upload& u) {
  if (u.fd >= 0) ::close(u.fd);
  u.fd = -1;
  if (!u.temp_path.empty()) ::unlink(u.temp_path.c_str());
  u.temp_path.clear();
}

common::result<std::uint64_t> upload_table::open(std::uint64_t session,
                                                 const upload_request& request) {
  using R = common::result<std::uint64_t>;
  if (request.path.empty() || request.path.front() != '/') {
    return R{errc::invalid_argument, "the path must be absolute"};
  }
  const auto [dir, name] = split_path(request.path);
  if (name.empty() || name == "." || name == "..") {
    return R{errc::invalid_argument, "'" + request.path + "' does not name a file"};
  }
  if (request.create_parents) {
    if (auto ec = make_directories(dir)) {
      return R{ec, fmt::format("cannot create {}: {}", dir, ec.message())};
    }
  }
  struct stat existing {};
  const bool replaces = ::stat(request.path.c_str(), &existing) == 0;
  if (replaces && !S_ISREG(existing.st_mode)) {
    return R{errc::invalid_argument, request.path + " exists and is not a regular file"};
  }
  // An unnamed file in the destination's filesystem: if the agent dies, the kernel frees it and
  // nothing partial is left behind. It gets a name only when complete (commit). Filesystems
  // without O_TMPFILE get a hidden temporary name instead, removed on every path but SIGKILL.
  std::string temp;
  int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    temp = hidden_name(dir, name);
    fd = ::mkostemp(temp.data(), O_CLOEXEC);
  }
  if (fd < 0) {
    const auto ec = last_error();
    return R{ec, fmt::format("cannot create a file in {}: {}", dir, ec.message())};
  }
  const mode_t mode = request.mode != 0 ? request.mode : replaces ? existing.st_mode & 07777 : 0644;
  bool ok = ::fchmod(fd, mode) == 0;
  if (ok && request.owner) {
    ok = ::fchown(fd, request.owner->first, request.owner->second) == 0;
  } else if (ok && replaces && (existing.st_uid != ::geteuid() || existing.st_gid != ::getegid())) {
    ok = ::fchown(fd, existing.st_uid, existing.st_gid) == 0;  // keep the replaced file's owner
  }
  if (!ok) {
    const auto ec = last_error();
    ::close(fd);
    if (!temp.empty()) ::unlink(temp.c_str());
    return R{ec, fmt::format("cannot set the mode or owner of {}: {}", request.path, ec.message())};
  }
  const std::uint64_t handle = next_handle_++;
  auto& u = uploads_[handle];
  u.session = session;
  u.path = request.path;
  u.temp_path = std::move(temp);  // empty: unnamed
  u.fd = fd;
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
  if (!write_all(u.fd, data)) {
    const auto ec = last_error();
    discard(u);
    uploads_.erase(it);
    return R{ec, fmt::format("cannot write {}: {}", u.path, ec.message())};
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
  std::error_code ec;
  if (::fsync(u.fd) != 0) ec = last_error();
  if (!ec && u.temp_path.empty()) {
    // Name the unnamed file (under a hidden name: linkat cannot replace), then rename it over
    // the destination, so that the destination is always either the old file or the new one.
    const auto dir = split_path(u.path);
    for (int attempt = 0; attempt < 100 && u.temp_path.empty(); ++attempt) {
      static std::uint64_t counter = 0;
      std::string candidate =
          hidden_name(dir.first, dir.second, fmt::format("{}-{}", ::getpid(), ++counter));
      const auto fd_path = fmt::format("/proc/self/fd/{}", u.fd);
      if (::linkat(AT_FDCWD, fd_path.c_str(), AT_FDCWD, candidate.c_str(), AT_SYMLINK_FOLLOW) ==
              0 ||
          ::linkat(u.fd, "", AT_FDCWD, candidate.c_str(), AT_EMPTY_PATH) == 0) {
        u.temp_path = std::move(candidate);
      } else if (errno != EEXIST) {
        ec = last_error();
        break;
      }
    }
    if (!ec && u.temp_path.empty()) ec = std::make_error_code(std::errc::file_exists);
  }
  if (::close(u.fd) != 0 && !ec) ec = last_error();
  u.fd = -1;
  if (!ec && ::rename(u.temp_path.c_str(), u.path.c_str()) != 0) ec = last_error();
  if (ec) {
    discard(u);
    return R{ec, fmt::format("cannot commit {}: {}", u.path, ec.message())};
  }
  u.temp_path.clear();
  // The rename is durable once the directory is.
  const int dir = ::open(split_path(u.path).first.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return R{committed{u.written, digest}};
}

bool upload_table::abort(std::uint64_t session, std::uint64_t handle) {
  auto it = uploads_.find(handle);
  if (it == uploads_.end() || it->second.session != session) return false;
  discard(it->second);
  uploads_.erase(it);
  return true;
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
