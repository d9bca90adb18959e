// SPDX-License-Identifier: MIT
// Files being written by the host. Data goes to a temporary file next to the destination
// (".NAME.qxa-XXXXXX", same directory, so the final rename is atomic); on commit the file is
// checked against the host's SHA-256, fsynced, given its mode and owner and renamed over the
// destination, and the directory is fsynced. Until then nothing appears at the destination
// path: an upload cut short (host gone, agent killed) never leaves a partial file there.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "qxa/common/error.hpp"
#include "qxa/common/sha256.hpp"

namespace qxa::guest {

struct upload_request {
  std::string path;
  mode_t mode = 0;  ///< 0: the replaced file's mode, or 0644
  bool create_parents = false;
  std::optional<std::pair<uid_t, gid_t>> owner;  ///< none: the replaced file's, or the agent's
};

class upload_table {
 public:
  upload_table() = default;
  ~upload_table();
  upload_table(const upload_table&) = delete;
  upload_table& operator=(const upload_table&) = delete;

  /// Starts an upload for `session`; returns its handle.
  common::result<std::uint64_t> open(std::uint64_t session, const upload_request& request);
  /// Appends `data` at `offset`, which must be where the previous chunk ended. Returns the
  /// bytes written so far. Fails (and discards the upload) beyond `max_bytes`.
  common::result<std::uint64_t> append(std::uint64_t session, std::uint64_t handle,
                                       std::uint64_t offset, std::string_view data,
                                       std::uint64_t max_bytes);
  struct committed {
    std::uint64_t size;
    common::sha256::digest digest;
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

 private:
  struct upload {
    std::uint64_t session = 0;
    std::string path;
    std::string temp_path;  ///< empty while the file has no name (O_TMPFILE)
    int fd = -1;
    std::uint64_t written = 0;
    common::sha256 digest;
  };
  void discard(upload& u);

  std::map<std::uint64_t, upload> uploads_;
  std::uint64_t next_handle_ = 1;
};

/// Creates `dir` and its missing parents with mode 0755.
std::error_code make_directories(const std::string& dir);

}  // namespace qxa::guest
