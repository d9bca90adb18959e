// SPDX-License-Identifier: MIT
// Files being written by the host. The destination's directory is reached once, at open, by a
// walk from the policy root that follows no symbolic link (fs.hpp), and its descriptor is kept
// until the commit: nothing the path names can be swapped in between. Data goes to an unnamed
// file in that directory (O_TMPFILE; a hidden name made exclusively where the filesystem has no
// O_TMPFILE). On commit the file is checked against the host's SHA-256, synced, given its owner
// and mode through its descriptor, named and renamed over the destination with renameat, and
// the directory is synced. Until then nothing appears at the destination: an upload cut short
// (host gone, agent killed) never leaves a partial file there.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "qxa/common/error.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest {

struct upload_request {
  std::string root = {};      ///< the policy root the path lies under (its links are followed)
  std::string relative = {};  ///< the rest of the path, below the root
  mode_t mode = 0;            ///< 0: the replaced file's mode, or 0644
  bool create_parents = false;
  /// None: the agent's, or what the replaced file had (see keep_other_owner).
  std::optional<file_owner> owner = {};
  bool allow_setid = false;  ///< the file may end up setuid or setgid
  /// A replaced file that another user owns (planted in /tmp, say) passes its owner on to the
  /// new one (policy.write_owner). Otherwise the new file is the agent's, and keeps the old
  /// one's group and mode without write for group and others: what replaces a user's file is
  /// never theirs to edit afterwards.
  bool keep_other_owner = false;
};

class upload_table {
 public:
  upload_table() = default;
  ~upload_table();
  upload_table(const upload_table&) = delete;
  upload_table& operator=(const upload_table&) = delete;

  /// Starts an upload for `session`; returns its handle. Fails with the walk's error (ELOOP for
  /// a link on the path, EXDEV for a FUSE or network filesystem...), EPERM when the file would
  /// be setuid or setgid and that is not allowed, or EINVAL when the destination is not a
  /// regular file.
  common::result<std::uint64_t> open(std::uint64_t session, const upload_request& request);
  /// Appends `data` at `offset`, which must be where the previous chunk ended. Returns the
  /// bytes written so far. Fails (and discards the upload) beyond `max_bytes`.
  common::result<std::uint64_t> append(std::uint64_t session, std::uint64_t handle,
                                       std::uint64_t offset, std::string_view data,
                                       std::uint64_t max_bytes);
  struct committed {
    std::uint64_t size;
    common::sha256::digest digest;
    std::string path;  ///< for the audit line
  };
  /// Checks the digest (when `expected` is not empty), syncs and renames into place. The
  /// upload is gone afterwards, committed or not.
  common::result<committed> commit(std::uint64_t session, std::uint64_t handle,
                                   std::string_view expected_sha256);
  /// Discards one upload; false if there was none.
  bool abort(std::uint64_t session, std::uint64_t handle);
  /// Discards every upload of a session (the host went away).
  std::size_t abort_session(std::uint64_t session);
  [[nodiscard]] std::size_t size() const noexcept { return uploads_.size(); }
  /// The uploads `session` has open.
  [[nodiscard]] std::size_t open_in(std::uint64_t session) const noexcept;

 private:
  struct upload {
    std::uint64_t session = 0;
    std::string path;  ///< root and relative, for messages
    unique_fd dir;     ///< the destination's directory, from open to commit
    std::string name;  ///< the destination's name in it
    std::string temp;  ///< the temporary's name in `dir`; empty while it has none (O_TMPFILE)
    unique_fd file;
    mode_t mode = 0644;
    std::optional<file_owner> owner;
    std::uint64_t written = 0;
    common::sha256 digest;
  };
  void discard(upload& u);

  std::map<std::uint64_t, upload> uploads_;
  std::uint64_t next_handle_ = 1;
};

}  // namespace qxa::guest
