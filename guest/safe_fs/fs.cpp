// SPDX-License-Identifier: MIT
// Every rule for touching files as root among hostile users lives here, in one file on purpose
// (walks, trusted directories, replacement, tree removal share statx_of and the mount checks);
// fs.hpp says what each rule is.
#include "qxa/guest/safe_fs/fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/random.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "qxa/common/posix.hpp"
#include "qxa/guest/platform/system_info.hpp"

namespace qxa::guest {

using common::error_info;
using common::result;

namespace {

error_info sys_error(int err, std::string message) {
  return {std::error_code(err, std::system_category()), std::move(message)};
}

std::string joined(const std::string& label, const std::vector<std::string>& comps,
                   std::size_t count) {
  std::string out = label;
  for (std::size_t i = 0; i < count; ++i) {
    if (out.empty() || out.back() != '/') out += '/';
    out += comps[i];
  }
  return out.empty() ? "." : out;
}

struct statx_node {
  node_info info;
  std::uint64_t mount_id = 0;
  bool has_mount_id = false;
};

result<statx_node> statx_of(int dir, const char* name, int flags) {
  struct statx sx {};
  const unsigned mask = STATX_TYPE | STATX_MODE | STATX_UID | STATX_GID | STATX_SIZE | STATX_MTIME |
                        STATX_INO | STATX_MNT_ID;
  // DONT_SYNC: a FUSE or network filesystem answers from what it has, asking nobody.
  if (::statx(dir, name, flags | AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, mask, &sx) != 0) {
    return sys_error(errno, std::strerror(errno));
  }
  statx_node n;
  n.info.mode = sx.stx_mode;
  n.info.uid = sx.stx_uid;
  n.info.gid = sx.stx_gid;
  n.info.size = sx.stx_size;
  n.info.mtime_ms =
      static_cast<std::int64_t>(sx.stx_mtime.tv_sec) * 1000 + sx.stx_mtime.tv_nsec / 1'000'000;
  n.info.dev = ::makedev(sx.stx_dev_major, sx.stx_dev_minor);
  n.info.ino = sx.stx_ino;
  n.has_mount_id = (sx.stx_mask & STATX_MNT_ID) != 0;
  n.mount_id = sx.stx_mnt_id;
  return n;
}

bool same_mount(const statx_node& a, const statx_node& b) {
  if (a.has_mount_id && b.has_mount_id) return a.mount_id == b.mount_id;
  return a.info.dev == b.info.dev;
}

// The mounts of this process, read when a walk first crosses into another mount, and again when
// it meets one mounted since.
class mount_table {
 public:
  /// Why the agent does not step onto the mount of `n` (reached as `where`), or nothing.
  std::optional<error_info> refuse(const statx_node& n, const std::string& where) {
    const mount_entry* m = find(n);
    if (m == nullptr && !reloaded_) {
      load();
      reloaded_ = true;
      m = find(n);
    }
    if (m == nullptr) {
      return sys_error(EXDEV, fmt::format("cannot tell which filesystem '{}' is on", where));
    }
    if (answered_elsewhere(m->fs_type)) {
      return sys_error(EXDEV, fmt::format("'{}' is on a {} filesystem, which the agent does not "
                                          "enter: a process or a server answers its lookups, and "
                                          "might never answer",
                                          where, m->fs_type));
    }
    return std::nullopt;
  }

 private:
  void load() {
    mounts_ = parse_mountinfo(read_file("/proc/self/mountinfo").value_or(""));
    loaded_ = true;
  }
  const mount_entry* find(const statx_node& n) {
    if (!loaded_) load();
    for (const auto& m : mounts_) {
      if (n.has_mount_id ? m.id == n.mount_id : ::makedev(m.major, m.minor) == n.info.dev) {
        return &m;
      }
    }
    return nullptr;
  }

  std::vector<mount_entry> mounts_;
  bool loaded_ = false;
  bool reloaded_ = false;
};

std::string random_suffix() {
  std::uint64_t r = 0;
  if (::getrandom(&r, sizeof r, 0) != sizeof r) r ^= static_cast<std::uint64_t>(::getpid());
  return fmt::format("{:016x}", r);
}

using common::last_error;

// Root's, or (for tests that run unprivileged) the agent's own.
bool trusted_owner(uid_t uid) { return uid == 0 || uid == ::geteuid(); }

}  // namespace

result<node_info> describe(int fd) {
  auto n = statx_of(fd, "", AT_EMPTY_PATH);
  if (!n) return n.error();
  return n->info;
}

result<walked_path> walk_beneath(int start, std::string_view relative, bool create_parents,
                                 const std::string& label) {
  auto comps = path_components(relative);
  if (!comps) {
    return sys_error(EINVAL, fmt::format("'{}' has a '.' or '..' component", relative));
  }
  mount_table mounts;
  auto here = statx_of(start, "", AT_EMPTY_PATH);
  if (!here) return here.error();
  unique_fd cur(::fcntl(start, F_DUPFD_CLOEXEC, 0));
  if (!cur) return sys_error(errno, "cannot duplicate a descriptor");
  if (comps->empty()) return walked_path{std::move(cur), {}};
  for (std::size_t i = 0; i + 1 < comps->size(); ++i) {
    const auto& c = (*comps)[i];
    const std::string where = joined(label, *comps, i + 1);
    int fd = ::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create_parents) {
      if (::mkdirat(cur.get(), c.c_str(), 0755) != 0 && errno != EEXIST) {
        return sys_error(errno, fmt::format("cannot create '{}': {}", where, std::strerror(errno)));
      }
      fd = ::openat(cur.get(), c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    }
    if (fd < 0) {
      return sys_error(errno, fmt::format("cannot open '{}': {}", where, std::strerror(errno)));
    }
    unique_fd next(fd);
    auto n = statx_of(next.get(), "", AT_EMPTY_PATH);
    if (!n) return n.error();
    if (S_ISLNK(n->info.mode)) {
      return sys_error(ELOOP, fmt::format("'{}' is a symbolic link, which the agent does not "
                                          "follow",
                                          where));
    }
    if (!S_ISDIR(n->info.mode)) {
      return sys_error(ENOTDIR, fmt::format("'{}' is not a directory", where));
    }
    if (!same_mount(*n, *here)) {
      if (auto no = mounts.refuse(*n, where)) return *no;
    }
    cur = std::move(next);
    here = std::move(n);
  }
  return walked_path{std::move(cur), comps->back()};
}

result<std::pair<unique_fd, node_info>> open_node(int dir, const std::string& name) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return sys_error(EINVAL, fmt::format("'{}' is not a name in a directory", name));
  }
  const int fd = ::openat(dir, name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return sys_error(errno, std::strerror(errno));
  unique_fd node(fd);
  auto n = statx_of(node.get(), "", AT_EMPTY_PATH);
  if (!n) return n.error();
  auto parent = statx_of(dir, "", AT_EMPTY_PATH);
  if (!parent) return parent.error();
  if (!same_mount(*n, *parent)) {
    mount_table mounts;
    if (auto no = mounts.refuse(*n, name)) return *no;
  }
  return std::pair{std::move(node), n->info};
}

std::optional<std::string> real_path_without_entering(const std::string& path) {
  if (path.empty() || path.front() != '/') return std::nullopt;
  // The components still to resolve, the next one last; a link's target goes in their place.
  std::vector<std::string> todo;
  const auto push = [&todo](std::string_view p) {
    std::vector<std::string> parts;
    while (!p.empty()) {
      const auto slash = p.find('/');
      if (const auto c = p.substr(0, slash); !c.empty() && c != ".") parts.emplace_back(c);
      if (slash == std::string_view::npos) break;
      p.remove_prefix(slash + 1);
    }
    todo.insert(todo.end(), parts.rbegin(), parts.rend());
  };
  push(path);
  unique_fd cur(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur) return std::nullopt;
  std::vector<std::string> resolved;
  int links = 0;
  while (!todo.empty()) {
    const std::string c = std::move(todo.back());
    todo.pop_back();
    if (c == "..") {
      // Up from a directory already checked: never onto a filesystem answered elsewhere.
      unique_fd up(::openat(cur.get(), "..", O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!up) return std::nullopt;
      cur = std::move(up);
      if (!resolved.empty()) resolved.pop_back();
      continue;
    }
    auto node = open_node(cur.get(), c);  // the mount check of a walk
    if (!node) return std::nullopt;
    if (S_ISLNK(node->second.mode)) {
      if (++links > 40) return std::nullopt;  // as the kernel's own limit
      char target[PATH_MAX];
      const ssize_t n = ::readlinkat(node->first.get(), "", target, sizeof target);
      if (n <= 0 || static_cast<std::size_t>(n) >= sizeof target) return std::nullopt;
      const std::string_view t(target, static_cast<std::size_t>(n));
      if (t.front() == '/') {
        cur.reset(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!cur) return std::nullopt;
        resolved.clear();
      }
      push(t);
      continue;
    }
    resolved.push_back(c);
    if (S_ISDIR(node->second.mode)) {
      cur = std::move(node->first);
    } else if (!todo.empty()) {
      return std::nullopt;  // a file with more after it
    }
  }
  std::string out;
  for (const auto& c : resolved) out += "/" + c;
  return out.empty() ? "/" : out;
}

result<unique_fd> open_for_reading(int dir, const std::string& name, int node) {
  return reopen_regular(dir, name, node, O_RDONLY);
}

result<unique_fd> reopen_regular(int dir, const std::string& name, int node, int access) {
  auto before = describe(node);
  if (!before) return before.error();
  if (!S_ISREG(before->mode)) return sys_error(EINVAL, "not a regular file");
  const int flags = (access & (O_ACCMODE | O_APPEND)) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  const auto proc = fmt::format("/proc/self/fd/{}", node);
  int fd = ::open(proc.c_str(), flags);
  if (fd < 0 && errno == ENOENT) {
    // No /proc: by name, not following a link, and only if it is still the same file.
    fd = ::openat(dir, name.c_str(), flags | O_NOFOLLOW);
    if (fd >= 0) {
      struct stat st {};
      if (::fstat(fd, &st) != 0 || st.st_dev != before->dev || st.st_ino != before->ino) {
        ::close(fd);
        return sys_error(ESTALE, "the file was replaced while it was being opened");
      }
    }
  }
  if (fd < 0) return sys_error(errno, std::strerror(errno));
  return unique_fd(fd);
}

result<unique_fd> open_directory(int node) {
  const auto proc = fmt::format("/proc/self/fd/{}", node);
  int fd = ::open(proc.c_str(), O_RDONLY | O_DIRECTORY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) fd = ::openat(node, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error(errno, std::strerror(errno));
  return unique_fd(fd);
}

result<std::string> read_regular_file(int dir, const std::string& name, std::size_t cap) {
  auto node = open_node(dir, name);
  if (!node) return node.error();
  const mode_t type = node->second.mode & S_IFMT;
  if (type != S_IFREG) {
    return sys_error(EINVAL, type == S_IFLNK    ? "it is a symbolic link"
                             : type == S_IFIFO  ? "it is a FIFO"
                             : type == S_IFDIR  ? "it is a directory"
                             : type == S_IFSOCK ? "it is a socket"
                                                : "it is a device");
  }
  if (node->second.size > cap) {
    return sys_error(EFBIG, fmt::format("it has {} bytes, more than {}", node->second.size, cap));
  }
  auto fd = open_for_reading(dir, name, node->first.get());
  if (!fd) return fd.error();
  return read_all(fd->get(), cap);
}

std::error_code replace_file_at(int dir, const std::string& name, std::string_view content,
                                mode_t mode, std::optional<file_owner> owner) {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    return std::make_error_code(std::errc::invalid_argument);
  }
  // An unnamed file in the directory, or one under a fresh name made exclusively.
  std::string temp;
  int fd = ::openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
    for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
      temp = "." + name + ".qxa-" + random_suffix();
      fd = ::openat(dir, temp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0600);
      if (fd < 0 && errno != EEXIST) break;
    }
  }
  if (fd < 0) return last_error();
  unique_fd file(fd);
  auto fail = [&](std::error_code ec) {
    if (!temp.empty()) ::unlinkat(dir, temp.c_str(), 0);
    return ec;
  };
  if (!common::write_all(file.get(), content)) return fail(last_error());
  if (owner && ::fchown(file.get(), owner->uid, owner->gid) != 0) return fail(last_error());
  if (::fchmod(file.get(), mode) != 0 || ::fsync(file.get()) != 0) return fail(last_error());
  if (temp.empty()) {
    const auto proc = fmt::format("/proc/self/fd/{}", file.get());
    for (int attempt = 0; attempt < 100 && temp.empty(); ++attempt) {
      std::string candidate = "." + name + ".qxa-" + random_suffix();
      if (::linkat(AT_FDCWD, proc.c_str(), dir, candidate.c_str(), AT_SYMLINK_FOLLOW) == 0 ||
          ::linkat(file.get(), "", dir, candidate.c_str(), AT_EMPTY_PATH) == 0) {
        temp = std::move(candidate);
      } else if (errno != EEXIST) {
        return last_error();
      }
    }
    if (temp.empty()) return std::make_error_code(std::errc::file_exists);
  }
  if (::renameat(dir, temp.c_str(), dir, name.c_str()) != 0) return fail(last_error());
  if (auto d = open_directory(dir)) ::fsync(d->get());  // the rename is durable with the dir
  return {};
}

result<unique_fd> open_trusted_directory(const std::string& path, bool create) {
  if (path.empty() || path.front() != '/') {
    return sys_error(EINVAL, fmt::format("'{}' is not an absolute path", path));
  }
  if (create) {
    // Each missing level is made by root, 0755; the walk below judges what was there already.
    // Only a missing level: mkdir() of one that exists still waits for write access to its
    // parent's filesystem, forever when that filesystem is frozen (the state file's /run lives
    // under a frozen /).
    std::string at;
    for (const auto& c : path_components(path).value_or(std::vector<std::string>{})) {
      at += "/" + c;
      struct stat st {};
      if (::lstat(at.c_str(), &st) == 0) continue;
      if (::mkdir(at.c_str(), 0755) != 0 && errno != EEXIST) {
        return sys_error(errno, fmt::format("cannot create {}: {}", at, std::strerror(errno)));
      }
    }
  }
  // The administrator's path may hold links: the real path is judged, from / down, each level
  // opened as itself so that nothing can be swapped in between.
  char real[PATH_MAX];
  if (::realpath(path.c_str(), real) == nullptr) {
    return sys_error(errno, fmt::format("{}: {}", path, std::strerror(errno)));
  }
  auto comps = path_components(real).value_or(std::vector<std::string>{});
  unique_fd cur(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur) return sys_error(errno, "cannot open /");
  std::string at = "/";
  auto judge = [&](int fd, bool last) -> std::optional<error_info> {
    auto n = describe(fd);
    if (!n) return n.error();
    if (!S_ISDIR(n->mode)) return sys_error(ENOTDIR, fmt::format("{} is not a directory", at));
    if (!trusted_owner(n->uid)) {
      return sys_error(EPERM, fmt::format("{} belongs to uid {}, not root", at, n->uid));
    }
    // Others may write to a level above only when its sticky bit keeps them from renaming
    // what root owns in it (/tmp); to the directory itself, never.
    if ((n->mode & (S_IWGRP | S_IWOTH)) != 0 && (last || (n->mode & S_ISVTX) == 0)) {
      return sys_error(EPERM, fmt::format("{} may be written by others than root (mode {:o})", at,
                                          n->mode & 07777));
    }
    return std::nullopt;
  };
  if (auto no = judge(cur.get(), comps.empty())) return *no;
  for (std::size_t i = 0; i < comps.size(); ++i) {
    at += (at == "/" ? "" : "/") + comps[i];
    const int fd = ::openat(cur.get(), comps[i].c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return sys_error(errno, fmt::format("{}: {}", at, std::strerror(errno)));
    cur.reset(fd);
    if (auto no = judge(cur.get(), i + 1 == comps.size())) return *no;
  }
  return cur;
}

result<std::string> read_trusted_file(const std::string& path, std::size_t cap) {
  const auto [dir, name] = split_parent(path);
  auto d = open_trusted_directory(dir);
  if (!d) return d.error();
  auto text = read_regular_file(d->get(), name, cap);
  if (!text)
    return sys_error(text.code().value(), fmt::format("{}: {}", path, text.error().message));
  return text;
}

std::optional<error_info> write_trusted_file(const std::string& path, std::string_view content,
                                             mode_t mode, std::optional<file_owner> owner,
                                             bool create_directory) {
  const auto [dir, name] = split_parent(path);
  auto d = open_trusted_directory(dir, create_directory);
  if (!d) return d.error();
  if (auto ec = replace_file_at(d->get(), name, content, mode, owner)) {
    return error_info{ec, fmt::format("cannot write {}: {}", path, ec.message())};
  }
  return std::nullopt;
}

namespace {

class tree_remover {
 public:
  tree_remover(const std::atomic<bool>& stop, std::size_t max_depth)
      : stop_(stop), max_depth_(max_depth) {}

  tree_removal result() && { return std::move(out_); }

  /// Removes the directory `name` in `parent` (reached as `where`) with all it holds. False
  /// when something was left in place (out_.failure says the first thing).
  bool remove_directory(int parent, const std::string& name, const std::string& where,
                        std::size_t depth) {
    auto seen = statx_of(parent, name.c_str(), 0);
    if (!seen) return fail(seen.code().value(), where, seen.error().message);
    if (depth == 0) {
      top_ = *seen;
      auto up = statx_of(parent, "", AT_EMPTY_PATH);
      if (!up || !same_mount(*up, top_)) {
        return fail(EBUSY, where, "a filesystem is mounted there; it is not removed");
      }
    }
    if (!same_mount(*seen, top_)) {
      return fail(EXDEV, where, "another filesystem is mounted there; it is left in place");
    }
    if (depth > 0 && !S_ISDIR(seen->info.mode)) {
      // Read as a directory, now something else (a link put in its place): removed as itself.
      if (::unlinkat(parent, name.c_str(), 0) == 0) {
        ++out_.removed;
        return true;
      }
      return errno == ENOENT ? true : fail(errno, where, std::strerror(errno));
    }
    if (depth >= max_depth_) {
      return fail(ELOOP, where, fmt::format("deeper than {} levels; left in place", max_depth_));
    }
    unique_fd fd(::openat(parent, name.c_str(),
                          O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
    if (!fd) return fail(errno, where, std::strerror(errno));
    // The directory opened is the one looked at: a rename in between cannot slip another in.
    auto opened = statx_of(fd.get(), "", AT_EMPTY_PATH);
    if (!opened || opened->info.ino != seen->info.ino || opened->info.dev != seen->info.dev ||
        !same_mount(*opened, top_)) {
      return fail(EAGAIN, where, "it changed while being removed; left in place");
    }
    DIR* d = ::fdopendir(fd.get());
    if (d == nullptr) return fail(errno, where, std::strerror(errno));
    (void)fd.release();
    struct closer {
      DIR* d;
      ~closer() { ::closedir(d); }
    } close_at_end{d};
    // Entries removed while a directory is read may make the reading skip others on some
    // filesystems: read it again while a pass removes something.
    for (int pass = 0; pass < 4; ++pass) {
      bool removed_some = false;
      for (;;) {
        errno = 0;
        const dirent* e = ::readdir(d);
        if (e == nullptr) {
          if (errno != 0) return fail(errno, where, std::strerror(errno));
          break;
        }
        if (stop_) return fail(ECANCELED, where, "the request ended; the rest is left in place");
        const std::string entry = e->d_name;
        if (entry == "." || entry == "..") continue;
        const std::string entry_where = where + "/" + entry;
        unsigned char type = e->d_type;
        if (type == DT_UNKNOWN) {
          auto n = statx_of(::dirfd(d), entry.c_str(), 0);
          if (!n) continue;  // gone meanwhile
          type = S_ISDIR(n->info.mode) ? DT_DIR : DT_REG;
        }
        if (type == DT_DIR) {
          if (remove_directory(::dirfd(d), entry, entry_where, depth + 1)) removed_some = true;
          if (stop_) return false;
        } else if (::unlinkat(::dirfd(d), entry.c_str(), 0) == 0) {
          ++out_.removed;
          removed_some = true;
        } else if (errno == EISDIR) {
          // A directory now where a file was: taken as a directory.
          if (remove_directory(::dirfd(d), entry, entry_where, depth + 1)) removed_some = true;
        } else if (errno != ENOENT) {
          fail(errno, entry_where, std::strerror(errno));
        }
      }
      if (::unlinkat(parent, name.c_str(), AT_REMOVEDIR) == 0) {
        ++out_.removed;
        return true;
      }
      if (errno != ENOTEMPTY || !removed_some) break;
      ::rewinddir(d);
    }
    const int err = errno;
    return fail(err, where, err == ENOTEMPTY ? "entries are left in it" : std::strerror(err));
  }

 private:
  bool fail(int err, const std::string& where, const std::string& why) {
    if (!out_.failure) out_.failure = sys_error(err, fmt::format("'{}': {}", where, why));
    return false;
  }

  const std::atomic<bool>& stop_;
  std::size_t max_depth_;
  statx_node top_;
  tree_removal out_;
};

}  // namespace

tree_removal remove_tree(int dir, const std::string& name, const std::atomic<bool>& stop,
                         const std::string& label, std::size_t max_depth) {
  tree_remover r(stop, max_depth);
  r.remove_directory(dir, name, label, 0);
  return std::move(r).result();
}

}  // namespace qxa::guest
