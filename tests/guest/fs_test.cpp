// SPDX-License-Identifier: MIT
// The agent's filesystem primitives against what a hostile user plants: links, FIFOs, device
// links, directories others may write to, and a FUSE filesystem that never answers.
#include "qxa/guest/safe_fs/fs.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "qxa/guest/platform/system_info.hpp"
#include "support/files.hpp"
#include "support/process.hpp"
#include "support/stuck_fuse.hpp"
#include "support/temp_dir.hpp"

namespace qg = qxa::guest;
namespace fs = std::filesystem;
using qxa::test::temp_dir;
using namespace std::chrono_literals;
using qxa::test::file_contents;

namespace {

qg::unique_fd open_dir(const std::string& path) {
  qg::unique_fd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(fd);
  return fd;
}

// Runs `f` on a thread of its own and fails the test if it has not finished within the deadline
// (what the agent must never do is block; a failure here is the bug being shown).
template <typename F>
auto within(std::chrono::seconds deadline, F f) {
  auto fut = std::async(std::launch::async, std::move(f));
  const bool done = fut.wait_for(deadline) == std::future_status::ready;
  if (!done) FAIL_CHECK("blocked for more than " << deadline.count() << " s");
  return std::pair{done, std::move(fut)};
}

}  // namespace

TEST_CASE("path components: '.' and '..' are refused, doubled slashes are nothing",
          "[unit][guest][fs]") {
  CHECK(qg::path_components("a//b/c/") == std::vector<std::string>{"a", "b", "c"});
  CHECK(qg::path_components("/srv/x") == std::vector<std::string>{"srv", "x"});
  CHECK(qg::path_components("").value().empty());
  CHECK_FALSE(qg::path_components("a/../b"));
  CHECK_FALSE(qg::path_components("./a"));
  CHECK_FALSE(qg::path_components("a/.."));
  CHECK(qg::path_components("a/..b/.c").has_value());  // names that only start with dots
}

TEST_CASE("filesystems answered by a process or a server are told apart", "[unit][guest][fs]") {
  for (const char* t : {"fuse", "fuse.sshfs", "fuse.stuck", "fuseblk", "nfs", "nfs4", "cifs", "9p",
                        "autofs", "virtiofs", "ceph"}) {
    CHECK(qg::answered_elsewhere(t));
  }
  for (const char* t : {"ext4", "xfs", "btrfs", "tmpfs", "vfat", "overlay", "fusectl"}) {
    CHECK_FALSE(qg::answered_elsewhere(t));
  }
}

TEST_CASE("a walk follows no symbolic link, never leaves its start and names what stopped it",
          "[unit][guest][fs]") {
  temp_dir t;
  t.write("root/a/b/c.txt", "c");
  t.write("outside/secret", "s");
  fs::create_symlink(t / "outside", t / "root/link");
  fs::create_symlink("../outside", t / "root/a/rel");
  const auto root = open_dir(t / "root");

  auto ok = qg::walk_beneath(root.get(), "a/b/c.txt");
  REQUIRE(ok);
  CHECK(ok->name == "c.txt");
  CHECK(qg::read_regular_file(ok->dir.get(), ok->name, 100).value() == "c");

  for (const char* through : {"link/secret", "a/rel/secret", "link/x/y"}) {
    INFO(through);
    auto r = qg::walk_beneath(root.get(), through, false, "/srv");
    REQUIRE_FALSE(r);
    CHECK(r.code() == std::errc::too_many_symbolic_link_levels);
    CHECK_THAT(r.error().message, Catch::Contains("is a symbolic link"));
  }
  auto r = qg::walk_beneath(root.get(), "link/secret", false, "/srv");
  CHECK_THAT(r.error().message, Catch::StartsWith("'/srv/link' is a symbolic link"));
  CHECK(qg::walk_beneath(root.get(), "a/../b").code() == std::errc::invalid_argument);
  CHECK(qg::walk_beneath(root.get(), "a/b/c.txt/d").code() == std::errc::not_a_directory);
  CHECK(qg::walk_beneath(root.get(), "nope/x").code() == std::errc::no_such_file_or_directory);

  // Missing directories are made on the way when asked, a link still stops the walk.
  auto made = qg::walk_beneath(root.get(), "new/deeper/file", true);
  REQUIRE(made);
  CHECK(fs::is_directory(t / "root/new/deeper"));
  CHECK((fs::status(t / "root/new/deeper").permissions() & fs::perms::all) ==
        (fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
         fs::perms::others_read | fs::perms::others_exec));
  CHECK_FALSE(qg::walk_beneath(root.get(), "link/new/file", true));
  CHECK_FALSE(fs::exists(t / "outside/new"));
}

TEST_CASE("only a regular file is read, never a FIFO, a device or a link, and only up to a cap",
          "[unit][guest][fs]") {
  temp_dir t;
  REQUIRE(::mkfifo((t / "fifo").c_str(), 0644) == 0);
  fs::create_symlink("/dev/zero", t / "zero");
  t.write("big", std::string(5000, 'b'));
  t.write("ok", "fine");
  const auto dir = open_dir(t.path());
  auto [done, fut] = within(5s, [&] { return qg::read_regular_file(dir.get(), "fifo", 1 << 20); });
  if (!done) {
    // Release the reader the agent must never have become.
    const int w = ::open((t / "fifo").c_str(), O_WRONLY | O_NONBLOCK);
    if (w >= 0) ::close(w);
  }
  auto fifo = fut.get();
  REQUIRE_FALSE(fifo);
  CHECK_THAT(fifo.error().message, Catch::Contains("FIFO"));
  auto zero = qg::read_regular_file(dir.get(), "zero", 1 << 20);
  REQUIRE_FALSE(zero);
  CHECK_THAT(zero.error().message, Catch::Contains("symbolic link"));
  auto big = qg::read_regular_file(dir.get(), "big", 4096);
  REQUIRE_FALSE(big);
  CHECK(big.code() == std::errc::file_too_large);
  CHECK(qg::read_regular_file(dir.get(), "ok", 4096).value() == "fine");
  CHECK(qg::read_regular_file(dir.get(), "missing", 4096).code() ==
        std::errc::no_such_file_or_directory);
}

TEST_CASE("a file is replaced through a temporary made exclusively, never through a planted link",
          "[unit][guest][fs]") {
  temp_dir t;
  const auto decoy = t.write("decoy", "untouched");
  t.write("dir/keep", "x");
  fs::create_symlink(decoy, t / "dir/hostname");
  // Names an older version used for its temporaries: links there must not matter either.
  fs::create_symlink(decoy, t / "dir/hostname.qxa-tmp");
  fs::create_symlink(decoy, t / "dir/.hostname.qxa-XXXXXX");
  const auto dir = open_dir(t / "dir");
  REQUIRE_FALSE(qg::replace_file_at(dir.get(), "hostname", "guest-1\n", 0640));
  CHECK(file_contents(decoy) == "untouched");
  CHECK(fs::is_regular_file(fs::symlink_status(t / "dir/hostname")));
  CHECK(file_contents(t / "dir/hostname") == "guest-1\n");
  CHECK((fs::status(t / "dir/hostname").permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read));
  std::size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(t / "dir")) ++entries;
  CHECK(entries == 4);  // keep, hostname and the two links: no temporary left behind
  if (::geteuid() == 0) {
    REQUIRE_FALSE(qg::replace_file_at(dir.get(), "owned", "x", 0600, qg::file_owner{1234, 5678}));
    struct stat st {};
    REQUIRE(::lstat((t / "dir/owned").c_str(), &st) == 0);
    CHECK(st.st_uid == 1234);
    CHECK(st.st_gid == 5678);
  }
  CHECK(qg::replace_file_at(dir.get(), "../escape", "x", 0600) == std::errc::invalid_argument);
}

TEST_CASE("a directory is trusted only when root owns it and nobody else may write to it",
          "[unit][guest][fs]") {
  REQUIRE(::geteuid() == 0);  // ownership is what is being tested
  temp_dir t;
  REQUIRE(::chmod(t.path().c_str(), 0755) == 0);
  fs::create_directories(t / "ok");
  fs::create_directories(t / "open");
  REQUIRE(::chmod((t / "open").c_str(), 0777) == 0);
  fs::create_directories(t / "sticky/inner");
  REQUIRE(::chmod((t / "sticky").c_str(), 01777) == 0);
  fs::create_directories(t / "users/inner");
  REQUIRE(::chown((t / "users").c_str(), 1000, 1000) == 0);
  fs::create_symlink(t / "ok", t / "link-to-ok");

  CHECK(qg::open_trusted_directory(t / "ok"));
  CHECK(qg::open_trusted_directory(t / "link-to-ok"));    // an administrator's link is followed
  CHECK(qg::open_trusted_directory(t / "sticky/inner"));  // /tmp-like above, root's itself
  auto open = qg::open_trusted_directory(t / "open");
  REQUIRE_FALSE(open);
  CHECK_THAT(open.error().message, Catch::Contains("may be written by others"));
  CHECK_FALSE(qg::open_trusted_directory(t / "sticky"));
  auto users = qg::open_trusted_directory(t / "users/inner");
  REQUIRE_FALSE(users);
  CHECK_THAT(users.error().message, Catch::Contains("belongs to uid 1000"));
  // So a file is written there only when nobody else could have swapped what is in it.
  CHECK_FALSE(qg::write_trusted_file(t / "ok/state", "s", 0600));
  CHECK(file_contents(t / "ok/state") == "s");
  auto refused = qg::write_trusted_file(t / "users/inner/state", "s", 0600);
  REQUIRE(refused);
  CHECK_FALSE(fs::exists(t / "users/inner/state"));
  CHECK_FALSE(qg::write_trusted_file(t / "made/here/state", "m", 0600, std::nullopt, true));
  CHECK(file_contents(t / "made/here/state") == "m");
  CHECK(qg::write_trusted_file(t / "missing/state", "m", 0600)->code ==
        std::errc::no_such_file_or_directory);
}

TEST_CASE("a walk does not step into a FUSE filesystem that never answers, and asks it nothing",
          "[unit][guest][fs]") {
  REQUIRE(::geteuid() == 0);  // mounting one
  temp_dir t;
  fs::create_directories(t / "root/mnt");
  t.write("root/file", "f");
  qxa::test::stuck_fuse fuse(t / "root/mnt");
  const auto root = open_dir(t / "root");
  auto [done, fut] = within(5s, [&] {
    auto into = qg::walk_beneath(root.get(), "mnt/x/y", false, "/home/alice");
    auto node = qg::open_node(root.get(), "mnt");
    auto read = qg::read_regular_file(root.get(), "mnt", 100);
    return std::tuple{std::move(into), std::move(node), std::move(read)};
  });
  REQUIRE(done);
  auto [into, node, read] = fut.get();
  REQUIRE_FALSE(into);
  CHECK(into.code() == std::errc::cross_device_link);
  CHECK_THAT(into.error().message,
             Catch::Contains("'/home/alice/mnt' is on a fuse.stuck filesystem"));
  CHECK(node.code() == std::errc::cross_device_link);
  CHECK_FALSE(read);
  // Beside it, the rest of the directory is as usable as ever.
  CHECK(qg::read_regular_file(root.get(), "file", 100).value() == "f");
}

TEST_CASE(
    "a trusted directory whose levels all exist opens on a frozen filesystem without waiting "
    "for the thaw",
    "[unit][guest][fs]") {
  REQUIRE(::geteuid() == 0);  // a mount namespace and a loop mount of its own
  temp_dir t;
  REQUIRE(::chmod(t.path().c_str(), 0755) == 0);
  const std::string image = t / "fs.img", mnt = t / "mnt";
  fs::create_directories(mnt);
  const auto mkfs = qxa::test::run_command({"/sbin/mkfs.ext4", "-q", "-F", image, "16M"}, 60s);
  REQUIRE(mkfs.status == 0);
  // In a child with a mount namespace of its own: mkdir() of a directory that exists waits for
  // write access to its parent's filesystem, forever while that filesystem is frozen (the
  // agent's state file lives in /run, under a frozen / on most guests).
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0) ::_exit(10);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(11);
    if (std::system(("mount -o loop '" + image + "' '" + mnt + "'").c_str()) != 0) ::_exit(12);
    fs::create_directories(mnt + "/a/b");
    const int fd = ::open(mnt.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || ::ioctl(fd, FIFREEZE, 0) != 0) ::_exit(13);
    std::promise<bool> opened;
    auto result = opened.get_future();
    std::thread walker(
        [&] { opened.set_value(bool(qg::open_trusted_directory(mnt + "/a/b", true))); });
    const bool finished = result.wait_for(10s) == std::future_status::ready;
    ::ioctl(fd, FITHAW, 0);  // releases a walker that waited
    walker.join();
    ::_exit(!finished ? 1 : result.get() ? 0 : 2);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // 1: it waited for the thaw
}
