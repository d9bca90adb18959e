// SPDX-License-Identifier: MIT
// fstrim: which filesystems it takes, and the handler's reply. The handler is pointed at a mount
// table of the test's own whose "disks" live on a tmpfs, which cannot discard: the real FITRIM
// of a disk is the VM test's (vm_operations_test.cpp).
#include <sys/stat.h>
#include <sys/vfs.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "guest/ops_test_support.hpp"
#include "qxa/guest/platform/system_info.hpp"
#include "support/temp_dir.hpp"

using qxa::test::handler_bench;
using qxa::test::run_async;
using qxa::test::temp_dir;
namespace qg = qxa::guest;
namespace pb = quantix::agent::v1;

TEST_CASE("trim takes the writable disk filesystems, once each, and names a mount it cannot take",
          "[unit][guest][trim]") {
  const auto mounts = qg::parse_mountinfo(
      "20 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n"
      "21 20 0:5 / /proc rw - proc proc rw\n"
      "22 20 254:2 / /srv rw - xfs /dev/vdb rw\n"
      "23 20 254:2 /sub /srv-bind rw - xfs /dev/vdb rw\n"
      "24 20 11:0 / /media/cdrom ro - iso9660 /dev/sr0 ro\n"
      "25 20 0:40 / /home/alice/net rw - fuse.sshfs alice@host: rw\n");
  auto all = qg::writable_disks(mounts, {}, "trimmable");
  REQUIRE(all);
  REQUIRE(all->size() == 2);
  CHECK((*all)[0].mount_point == "/");
  CHECK((*all)[1].mount_point == "/srv");
  auto cdrom = qg::writable_disks(mounts, {"/media/cdrom"}, "trimmable");
  REQUIRE_FALSE(cdrom);
  CHECK(cdrom.error().message == "/media/cdrom is not a trimmable mount point");
  CHECK_FALSE(qg::writable_disks(mounts, {"/home/alice/net"}, "trimmable"));
}

TEST_CASE("the fstrim handler trims each filesystem on a thread of its own and says how each went",
          "[unit][guest][trim]") {
  temp_dir dir;
  // A directory on a tmpfs stands for a disk that cannot discard; a missing one for a mount
  // that went away.
  struct statfs sf {};
  REQUIRE(::statfs("/dev/shm", &sf) == 0);
  REQUIRE(sf.f_type == 0x01021994);  // TMPFS_MAGIC
  temp_dir on_tmpfs("/dev/shm");
  const auto mountinfo = dir.write("mountinfo", "30 1 254:7 / " + on_tmpfs.path() +
                                                    " rw - ext4 /dev/vdh rw\n31 1 254:8 / " +
                                                    (dir / "gone") + " rw - ext4 /dev/vdi rw\n");
  qg::agent_options options;
  options.freeze.mountinfo = mountinfo;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), options);
    pb::Envelope request;
    request.mutable_trim_request()->set_minimum_bytes(1 << 20);
    auto reply = co_await qg::ops::fstrim(bench.context(), request);
    REQUIRE(reply.has_trim_reply());
    const auto& mounts = reply.trim_reply().mounts();
    REQUIRE(mounts.size() == 2);
    CHECK(mounts[0].mount_point() == on_tmpfs.path());
    CHECK_FALSE(mounts[0].ok());
    CHECK(mounts[0].skipped());
    CHECK_THAT(mounts[0].error(), Catch::Contains("not supported"));
    CHECK_FALSE(mounts[1].ok());
    CHECK_FALSE(mounts[1].skipped());
    CHECK_THAT(mounts[1].error(), Catch::Contains("No such file"));

    // A mount point the table does not have as a writable disk is refused before anything runs.
    pb::Envelope named;
    named.mutable_trim_request()->add_mount_points("/proc");
    auto refused = co_await qg::ops::fstrim(bench.context(2), named);
    REQUIRE(refused.has_error());
    CHECK(refused.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
    CHECK_THAT(refused.error().message(), Catch::Contains("/proc is not a trimmable mount point"));
  });
}
