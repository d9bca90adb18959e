// SPDX-License-Identifier: MIT
// Filesystem work for an agent that runs as root among users who control parts of the tree.
//
// A path that an unprivileged guest user can influence (a home directory, /tmp, anything under
// a policy root) is never followed by name. It is walked one component at a time from a
// directory descriptor, each step opened with O_PATH | O_NOFOLLOW:
//   - a symbolic link anywhere on the path is refused (ELOOP), so nothing escapes a root and
//     nothing lands where a link points;
//   - "." and ".." are refused before any lookup, so the walk never leaves where it started;
//   - a step into another mount is checked before anything is looked up inside it: a
//     filesystem whose lookups a process or a server answers (FUSE, network filesystems,
//     autofs) is refused (EXDEV), since one that never answers would block the agent. The
//     check uses statx(AT_STATX_DONT_SYNC), which asks such a filesystem nothing.
// (openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS would resolve the whole path in one call,
// leaving no point at which to check a mount before the lookups inside it.)
//
// Files are read only when they are regular files, through a descriptor whose type was checked
// before it was opened for reading, non-blocking and with a size cap: a FIFO, a device or a
// growing file cannot stall or flood the agent. Files are replaced through a temporary created
// exclusively in the directory already opened, given its mode and owner through its descriptor,
// and renamed with renameat.
//
// Directories named by the administrator (the hooks directory, /etc, the freeze state file's
// directory) are opened by path, and trusted only when root owns them and nobody else may write
// to them.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qxa/common/error.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/guest/platform/paths.hpp"

namespace qxa::guest {

using common::read_all;
using common::unique_fd;

/// What a node is, from statx without syncing (see above).
struct node_info {
  mode_t mode = 0;  ///< type and permission bits
  uid_t uid = 0;
  gid_t gid = 0;
  std::uint64_t size = 0;
  std::int64_t mtime_ms = 0;
  dev_t dev = 0;  ///< the device of the filesystem it is on
  ino_t ino = 0;
};

/// Where walk_beneath() ended: the directory holding the last component, and its name.
struct walked_path {
  unique_fd dir;     ///< O_PATH descriptor of the directory
  std::string name;  ///< the last component, not looked up yet; empty for the start itself
};

/// Walks `relative` from the directory `start` as described above and returns the directory
/// that holds its last component. With `create_parents`, a missing directory on the way is made
/// (mode 0755). Errors carry the errno (ELOOP, EXDEV, ENOTDIR, ENOENT, EACCES...) and a message
/// naming the component.
/// `label` names the start in messages (its path, say).
common::result<walked_path> walk_beneath(int start, std::string_view relative,
                                         bool create_parents = false,
                                         const std::string& label = {});

/// Opens `name` in `dir` as itself (O_PATH | O_NOFOLLOW; a symbolic link is not followed), with
/// the mount check of a walk step, and describes it.
common::result<std::pair<unique_fd, node_info>> open_node(int dir, const std::string& name);

/// The real path of the absolute `path` (what realpath(3) gives), found without asking a
/// filesystem the agent does not enter anything: walked as walk_beneath() walks, with the same
/// mount check at each step, its links read with readlinkat. Nothing when it leads onto such a
/// filesystem, nowhere, or through more than 40 links.
std::optional<std::string> real_path_without_entering(const std::string& path);

/// Describes the node an O_PATH descriptor refers to.
common::result<node_info> describe(int fd);

/// Reopens the regular file behind the O_PATH descriptor `node` (found as `name` in `dir`) for
/// reading, without blocking: through /proc/self/fd, or where /proc is missing by name with
/// O_NOFOLLOW and a check that it is still the same file.
common::result<unique_fd> open_for_reading(int dir, const std::string& name, int node);

/// As open_for_reading(), with `access` (O_RDONLY, O_WRONLY or O_RDWR, and O_APPEND).
common::result<unique_fd> reopen_regular(int dir, const std::string& name, int node, int access);

/// Reopens the directory behind an O_PATH descriptor for reading its entries or fsync.
common::result<unique_fd> open_directory(int node);

/// Reads `name` in `dir`, which must be a regular file (not a link, FIFO, device or socket) of
/// at most `cap` bytes. ENOENT when there is none.
common::result<std::string> read_regular_file(int dir, const std::string& name, std::size_t cap);

struct file_owner {
  uid_t uid = 0;
  gid_t gid = 0;
};

/// Replaces `name` in the directory `dir` (an O_PATH descriptor is fine) with `content`: a
/// temporary made exclusively in `dir`, its mode and owner set through its descriptor, synced,
/// renamed over `name`, and the directory synced. `name` itself is never opened or followed.
std::error_code replace_file_at(int dir, const std::string& name, std::string_view content,
                                mode_t mode, std::optional<file_owner> owner = std::nullopt);

/// Opens a directory an administrator named, following the path as given, and refuses it
/// (EPERM, with the reason) unless root owns it and neither its group nor others may write to
/// it. With `create`, a missing directory is made (mode 0755) first, parents included.
common::result<unique_fd> open_trusted_directory(const std::string& path, bool create = false);

/// Reads a file in a trusted directory (see above), as read_regular_file.
common::result<std::string> read_trusted_file(const std::string& path, std::size_t cap);

/// Replaces a file in a trusted directory (see above), as replace_file_at; `create_directory`
/// makes a missing directory first. Nothing, or what failed.
std::optional<common::error_info> write_trusted_file(const std::string& path,
                                                     std::string_view content, mode_t mode,
                                                     std::optional<file_owner> owner = std::nullopt,
                                                     bool create_directory = false);

/// What remove_tree() did.
struct tree_removal {
  std::uint64_t removed = 0;                  ///< entries removed, directories included
  std::optional<common::error_info> failure;  ///< the first thing left in place, and why
};

/// Removes the directory `name` in `dir` and everything beneath it, like `rm -r
/// --one-file-system`, by descriptor: each directory is opened from its parent's descriptor with
/// O_NOFOLLOW and checked to be the one just looked at, each entry is removed by name from its
/// directory's descriptor, and a symbolic link is removed, never followed. A directory on
/// another mount (a mount point, a bind mount) is not entered and is left in place, as is
/// whatever cannot be removed; the rest goes. Stops (with ECANCELED) as soon as `stop` is set,
/// and (with ELOOP) below `max_depth` levels: each level holds a descriptor.
tree_removal remove_tree(int dir, const std::string& name, const std::atomic<bool>& stop,
                         const std::string& label, std::size_t max_depth = 256);

}  // namespace qxa::guest
