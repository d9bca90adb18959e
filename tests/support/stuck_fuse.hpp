// SPDX-License-Identifier: MIT
// A FUSE filesystem that never answers: mounted on an open /dev/fuse whose requests nobody
// reads, so every lookup, getattr or statfs inside it blocks until the mount goes away. What a
// user's hung sshfs, or a FUSE daemon written to stall the agent, looks like. Needs root.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace qxa::test {

class stuck_fuse {
 public:
  /// Mounts it on the existing directory `dir`, with the type "fuse.<subtype>" and `source` as
  /// its device (any user may name it so: fusermount's fsname option).
  explicit stuck_fuse(std::string dir, const std::string& subtype = "stuck",
                      const std::string& source = "stuck")
      : dir_(std::move(dir)) {
    fd_ = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error(std::string("/dev/fuse: ") + std::strerror(errno));
    const auto options = fmt::format("fd={},rootmode=40000,user_id=0,group_id=0", fd_);
    if (::mount(source.c_str(), dir_.c_str(), ("fuse." + subtype).c_str(), MS_NOSUID | MS_NODEV,
                options.c_str()) != 0) {
      const int err = errno;
      ::close(fd_);
      throw std::runtime_error("mounting a FUSE filesystem on " + dir_ + ": " + std::strerror(err));
    }
  }
  /// Detaches it; whatever waited on it fails from then on.
  ~stuck_fuse() {
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::close(fd_);
  }
  stuck_fuse(const stuck_fuse&) = delete;
  stuck_fuse& operator=(const stuck_fuse&) = delete;

 private:
  std::string dir_;
  int fd_ = -1;
};

}  // namespace qxa::test
