// SPDX-License-Identifier: MIT
// A FUSE filesystem that never answers, as a hostile or hung user-space filesystem looks to the
// agent: every lookup, getattr or statfs inside it blocks until the mount goes away. Needs root.
//
// Two kinds, as a user can make them:
//   - nobody reads /dev/fuse: a request waits to be read, and SIGKILL still ends its caller;
//   - its daemon answers the INIT handshake, then reads every request and answers none: the
//     caller waits in the kernel for an answer, and not even SIGKILL ends it until the mount
//     is torn down (what a malicious user's FUSE daemon does).
// The mount's owner and allow_other are what fusermount3 would set for that user: a mount of
// user U without allow_other is reachable by U alone (root included is refused it); with
// allow_other (user_allow_other in /etc/fuse.conf) by everyone, root included.
#pragma once

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/fuse.h>
#include <poll.h>
#include <sys/mount.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace qxa::test {

struct stuck_fuse_options {
  std::string subtype = "stuck";  ///< the type is "fuse.<subtype>"
  std::string source = "stuck";   ///< its device (any user may name it so: fsname)
  uid_t owner_uid = 0;            ///< the user the mount is for (user_id=, group_id=)
  gid_t owner_gid = 0;
  bool allow_other = false;
  /// Answer INIT, then read every request and answer none: callers cannot be killed.
  bool answer_init = false;
};

class stuck_fuse {
 public:
  explicit stuck_fuse(std::string dir, stuck_fuse_options o = {})
      : dir_(std::move(dir)), opt_(std::move(o)) {
    fd_ = ::open("/dev/fuse", O_RDWR | O_CLOEXEC | O_NONBLOCK);
    if (fd_ < 0) throw std::runtime_error(std::string("/dev/fuse: ") + std::strerror(errno));
    auto options = fmt::format("fd={},rootmode=40000,user_id={},group_id={}", fd_, opt_.owner_uid,
                               opt_.owner_gid);
    if (opt_.allow_other) options += ",allow_other";
    if (::mount(opt_.source.c_str(), dir_.c_str(), ("fuse." + opt_.subtype).c_str(),
                MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      const int err = errno;
      ::close(fd_);
      throw std::runtime_error("mounting a FUSE filesystem on " + dir_ + ": " + std::strerror(err));
    }
    if (opt_.answer_init) {
      if (::pipe2(wake_, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
      daemon_ = std::thread([this] { serve(); });
    }
  }
  /// Compatibility with the first form: a mount of root's that nobody reads.
  stuck_fuse(std::string dir, const std::string& subtype, const std::string& source = "stuck")
      : stuck_fuse(std::move(dir), stuck_fuse_options{.subtype = subtype, .source = source}) {}

  /// Tears it down: whatever waited on it fails from then on.
  ~stuck_fuse() { release(); }
  stuck_fuse(const stuck_fuse&) = delete;
  stuck_fuse& operator=(const stuck_fuse&) = delete;

  /// As the destructor, at a moment of the test's choosing (from any thread, once).
  void release() {
    if (fd_ < 0) return;
    if (daemon_.joinable()) {
      (void)!::write(wake_[1], "x", 1);
      daemon_.join();
      ::close(wake_[0]);
      ::close(wake_[1]);
    }
    ::umount2(dir_.c_str(), MNT_DETACH);
    ::close(fd_);  // the last /dev/fuse descriptor: the connection is aborted
    fd_ = -1;
  }

  /// Requests its daemon has read (and never answered) since the mount.
  [[nodiscard]] std::size_t requests_read() const noexcept { return requests_; }

 private:
  void serve() {
    std::vector<char> buf(1u << 20);  // at least the kernel's max_write plus headers
    for (;;) {
      pollfd p[2] = {{fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      if (::poll(p, 2, -1) < 0 && errno != EINTR) return;
      if (p[1].revents != 0) return;
      const auto n = ::read(fd_, buf.data(), buf.size());
      if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) continue;
      fuse_in_header in{};
      std::memcpy(&in, buf.data(), sizeof in);
      if (in.opcode != FUSE_INIT) {
        ++requests_;  // read, and never answered
        continue;
      }
      fuse_init_in init{};
      std::memcpy(&init, buf.data() + sizeof in, std::min(sizeof init, n - sizeof in));
      struct {
        fuse_out_header h;
        fuse_init_out o;
      } reply{};
      reply.h.len = sizeof reply;
      reply.h.unique = in.unique;
      reply.o.major = FUSE_KERNEL_VERSION;
      reply.o.minor = std::min<std::uint32_t>(init.minor, FUSE_KERNEL_MINOR_VERSION);
      reply.o.max_readahead = init.max_readahead;
      reply.o.max_background = 16;
      reply.o.congestion_threshold = 12;
      reply.o.max_write = 4096;
      reply.o.time_gran = 1;
      (void)!::write(fd_, &reply, sizeof reply);
    }
  }

  std::string dir_;
  stuck_fuse_options opt_;
  int fd_ = -1;
  int wake_[2] = {-1, -1};
  std::thread daemon_;
  std::atomic<std::size_t> requests_{0};
};

}  // namespace qxa::test
