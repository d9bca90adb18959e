// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/freezer.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>

#include "qxa/guest/platform/accounts.hpp"
#include "support/files.hpp"
#include "support/run.hpp"
#include "support/temp_dir.hpp"

using qxa::test::run_async;
using qxa::test::temp_dir;
namespace qg = qxa::guest;
using namespace std::chrono_literals;
using qxa::test::file_contents;

namespace {

qg::mount_entry mount(std::string point, std::uint32_t minor, std::string fs = "ext4",
                      bool ro = false, std::string root = "/") {
  qg::mount_entry m;
  m.mount_point = std::move(point);
  m.root = std::move(root);
  m.device = "/dev/vd" + std::to_string(minor);
  m.fs_type = std::move(fs);
  m.major = 254;
  m.minor = minor;
  m.read_only = ro;
  return m;
}

}  // namespace

TEST_CASE("freeze order: real writable filesystems, once each, deepest first",
          "[unit][guest][freeze]") {
  const std::vector<qg::mount_entry> mounts = {mount("/", 1),
                                               mount("/proc", 0, "proc"),
                                               mount("/boot", 2),
                                               mount("/var", 3),
                                               mount("/run", 0, "tmpfs"),
                                               mount("/srv/bind", 3, "ext4", false, "/x"),
                                               mount("/iso", 4, "iso9660", true),
                                               mount("/var/lib/db", 5)};
  const auto points = [](const std::vector<qg::mount_entry>& order) {
    std::vector<std::string> out;
    for (const auto& m : order) out.push_back(m.mount_point);
    return out;
  };
  auto all = qg::freeze_order(mounts, {});
  REQUIRE(all);
  CHECK(points(*all) == std::vector<std::string>{"/var/lib/db", "/var", "/boot", "/"});
  auto some = qg::freeze_order(mounts, {"/var", "/"});
  REQUIRE(some);
  CHECK(points(*some) == std::vector<std::string>{"/var", "/"});
  auto bad = qg::freeze_order(mounts, {"/proc"});
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("/proc is not a freezable mount point"));
}

TEST_CASE("a freeze that finds nothing to freeze runs the hooks both ways and fails cleanly",
          "[unit][guest][freeze]") {
  temp_dir dir;
  const auto log = dir / "hooks.log";
  dir.write("hooks/10-db", "#!/bin/sh\necho \"db $1\" >> " + log + "\n");
  dir.write("hooks/20-app", "#!/bin/sh\necho \"app $1\" >> " + log + "\n");
  dir.write("hooks/30-not-executable", "#!/bin/sh\necho never >> " + log + "\n");
  REQUIRE(::chmod((dir / "hooks/10-db").c_str(), 0755) == 0);
  REQUIRE(::chmod((dir / "hooks/20-app").c_str(), 0755) == 0);
  // Only memory filesystems: nothing that FIFREEZE applies to.
  const auto mountinfo = dir.write("mountinfo", "22 1 0:21 / /run rw,nosuid - tmpfs tmpfs rw\n");
  qg::freeze_options o;
  o.hooks_dir = dir / "hooks";
  o.mountinfo = mountinfo;
  o.state_file = dir / "state/frozen";
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    qg::freezer f(io.get_executor(), o);
    auto r = co_await f.freeze({}, std::chrono::seconds(5));
    CHECK_FALSE(r);
    CHECK_FALSE(f.frozen());
  });
  // Freeze hooks in name order, thaw hooks in reverse.
  CHECK(file_contents(log) == "db freeze\napp freeze\napp thaw\ndb thaw\n");
  CHECK_FALSE(std::filesystem::exists(o.state_file));
}

TEST_CASE("a restarted agent thaws what an earlier one recorded as frozen",
          "[unit][guest][freeze]") {
  temp_dir dir;
  const auto log = dir / "hooks.log";
  dir.write("hooks/10-db", "#!/bin/sh\necho \"db $1\" >> " + log + "\n");
  REQUIRE(::chmod((dir / "hooks/10-db").c_str(), 0755) == 0);
  qg::freeze_options o;
  o.hooks_dir = dir / "hooks";
  o.state_file =
      dir.write("frozen", dir.path() + "\n");  // thawing a directory never frozen is fine
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    qg::freezer f(io.get_executor(), o);
    co_await f.recover();
    CHECK(f.status().thawed_by == "restart");
  });
  CHECK_FALSE(std::filesystem::exists(o.state_file));
  CHECK(file_contents(log) == "db thaw\n");
}

TEST_CASE("accounts come from passwd and group text, with supplementary groups", "[unit][guest]") {
  const std::string passwd =
      "# comment\nroot:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n"
      "broken:x:notanumber:1::/:\n";
  const std::string group = "root:x:0:\nalice:x:1000:\nwheel:x:10:bob,alice\nvideo:x:44:alice\n";
  auto a = qg::find_account("alice", passwd, group);
  REQUIRE(a);
  CHECK(a->uid == 1000);
  CHECK(a->home == "/home/alice");
  CHECK(a->groups == std::vector<gid_t>{1000, 10, 44});
  auto by_uid = qg::find_account("1000", passwd, group);
  REQUIRE(by_uid);
  CHECK(by_uid->name == "alice");
  CHECK_FALSE(qg::find_account("broken", passwd, group));
  CHECK_FALSE(qg::find_account("nobody-here", passwd, group));
}

TEST_CASE("the thaw guard thaws at its deadline from its own thread, whatever the caller does",
          "[unit][guest][freeze]") {
  temp_dir dir;
  std::mutex m;
  std::condition_variable cv;
  std::vector<qg::mount_outcome> reported;
  bool done = false;
  qg::thaw_guard guard([&](std::vector<qg::mount_outcome> o) {
    std::lock_guard lock(m);
    reported = std::move(o);
    done = true;
    cv.notify_all();
  });
  // Directories that are not frozen: FITHAW says EINVAL, which is as good as thawed.
  std::vector<qg::thaw_guard::frozen_mount> mounts;
  for (const char* name : {"a", "b"}) {
    std::filesystem::create_directories(dir / name);
    mounts.push_back({dir / name, qg::unique_fd(::open((dir / name).c_str(), O_RDONLY))});
  }
  const auto armed_at = std::chrono::steady_clock::now();
  guard.arm(std::move(mounts), armed_at + 30s);
  guard.extend(armed_at + 150ms);  // a shorter renewal counts too
  // No event loop runs here at all: the thread blocked in this wait is the whole program.
  std::unique_lock lock(m);
  REQUIRE(cv.wait_for(lock, 20s, [&] { return done; }));
  CHECK(std::chrono::steady_clock::now() - armed_at >= 150ms);
  CHECK(std::chrono::steady_clock::now() - armed_at < 10s);  // not at the first deadline
  REQUIRE(reported.size() == 2);
  CHECK(reported[0].mount_point == dir / "b");  // the reverse of freezing order
  CHECK(reported[0].ok);
  CHECK(reported[0].error == "was not frozen");
  CHECK_FALSE(guard.armed());
  CHECK(guard.disarm().empty());  // nothing left for a thaw by the host
}

TEST_CASE("FUSE and network filesystems are never frozen", "[unit][guest][freeze]") {
  const std::vector<qg::mount_entry> mounts = {
      mount("/", 1), mount("/home/alice/mnt", 40, "fuse.sshfs"), mount("/srv/nfs", 41, "nfs4"),
      mount("/media/usb", 42, "fuseblk")};
  auto all = qg::freeze_order(mounts, {});
  REQUIRE(all);
  REQUIRE(all->size() == 1);
  CHECK(all->front().mount_point == "/");
  auto asked = qg::freeze_order(mounts, {"/home/alice/mnt"});
  REQUIRE_FALSE(asked);
  CHECK_THAT(asked.error().message, Catch::Contains("not a freezable mount point"));
}
