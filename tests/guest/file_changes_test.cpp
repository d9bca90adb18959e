// SPDX-License-Identifier: MIT
// mkdir, rm and mv in the guest (file_changes.cpp), and the tree removal beneath rm -r.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "guest/ops_test_support.hpp"
#include "qxa/guest/safe_fs/fs.hpp"
#include "support/temp_dir.hpp"

using qxa::test::temp_dir;
namespace fs = std::filesystem;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
namespace ops = qxa::guest::ops;
using qxa::test::call_handler;

namespace {

pb::Envelope mkdir_request(const std::string& path, std::uint32_t mode = 0, bool parents = false) {
  pb::Envelope e;
  e.mutable_mkdir_request()->set_path(path);
  e.mutable_mkdir_request()->set_mode(mode);
  e.mutable_mkdir_request()->set_parents(parents);
  return e;
}

pb::Envelope rm_request(const std::string& path, bool recursive = false, bool missing_ok = false) {
  pb::Envelope e;
  e.mutable_remove_request()->set_path(path);
  e.mutable_remove_request()->set_recursive(recursive);
  e.mutable_remove_request()->set_missing_ok(missing_ok);
  return e;
}

pb::Envelope mv_request(const std::string& from, const std::string& to, bool replace = false) {
  pb::Envelope e;
  e.mutable_move_request()->set_from(from);
  e.mutable_move_request()->set_to(to);
  e.mutable_move_request()->set_replace(replace);
  return e;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

/// A small tmpfs mounted for the scope of a test (the test runs as root).
struct tmpfs_mount {
  explicit tmpfs_mount(std::string at) : path(std::move(at)) {
    fs::create_directories(path);
    REQUIRE(::mount("tmpfs", path.c_str(), "tmpfs", 0, "size=1m") == 0);
  }
  ~tmpfs_mount() { ::umount2(path.c_str(), MNT_DETACH); }
  std::string path;
};

qg::agent_options rooted_at(const std::string& root) {
  qg::agent_options o;
  o.policy.read_roots = {root};
  o.policy.write_roots = {root};
  return o;
}

}  // namespace

TEST_CASE(
    "mkdir makes a directory with exactly its mode, parents when asked, and says when one "
    "was there",
    "[unit][guest][files]") {
  temp_dir dir;
  const auto old_umask = ::umask(077);  // the mode asked for is the mode made, whatever the umask
  auto r = call_handler(&ops::make_directory, mkdir_request(dir / "a/b/c", 0750, true));
  ::umask(old_umask);
  REQUIRE(r.has_file_change_reply());
  CHECK_FALSE(r.file_change_reply().existed());
  CHECK(mode_of(dir / "a/b/c") == 0750);

  r = call_handler(&ops::make_directory, mkdir_request(dir / "a/b/c", 0, true));
  REQUIRE(r.has_file_change_reply());
  CHECK(r.file_change_reply().existed());
  CHECK(mode_of(dir / "a/b/c") == 0750);  // left as it was

  r = call_handler(&ops::make_directory, mkdir_request(dir / "a/b/c"));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_ALREADY_EXISTS);

  dir.write("file", "f");
  r = call_handler(&ops::make_directory, mkdir_request(dir / "file", 0, true));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_ALREADY_EXISTS);
  CHECK_THAT(r.error().message(), Catch::Contains("not a directory"));

  r = call_handler(&ops::make_directory, mkdir_request(dir / "missing/d"));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_NOT_FOUND);

  r = call_handler(&ops::make_directory, mkdir_request(dir / "d"));
  REQUIRE(r.has_file_change_reply());
  CHECK(mode_of(dir / "d") == 0755);
}

TEST_CASE("mkdir refuses setid modes unless allowed, bits beyond the mode, and paths through links",
          "[unit][guest][files]") {
  temp_dir dir, outside;
  auto r = call_handler(&ops::make_directory, mkdir_request(dir / "s", 02755));
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.write_setid");
  CHECK_FALSE(fs::exists(dir / "s"));
  qg::agent_options setid;
  setid.policy.write_setid = true;
  r = call_handler(&ops::make_directory, mkdir_request(dir / "s", 02755), setid);
  REQUIRE(r.has_file_change_reply());
  CHECK(mode_of(dir / "s") == 02755);

  r = call_handler(&ops::make_directory, mkdir_request(dir / "t", 010755));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);

  // A user's link on the way leads nowhere: neither the directory nor its parents appear there.
  fs::create_directory_symlink(outside.path(), dir / "link");
  r = call_handler(&ops::make_directory, mkdir_request(dir / "link/new/deeper", 0, true));
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.write_roots");
  CHECK(fs::is_empty(outside.path()));

  r = call_handler(&ops::make_directory, mkdir_request(dir / "x"), rooted_at(dir / "s"));
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.write_roots");
}

TEST_CASE(
    "rm removes a file, a link as itself and an empty directory, and one with entries only "
    "when recursive",
    "[unit][guest][files]") {
  temp_dir dir, outside;
  const auto target = outside.write("precious", "p");
  dir.write("file", "f");
  fs::create_symlink(target, dir / "link");
  fs::create_directory(dir / "empty");
  dir.write("full/inside", "i");

  auto r = call_handler(&ops::remove_path, rm_request(dir / "file"));
  REQUIRE(r.has_file_change_reply());
  CHECK(r.file_change_reply().removed() == 1);
  CHECK_FALSE(fs::exists(dir / "file"));

  r = call_handler(&ops::remove_path, rm_request(dir / "link"));
  REQUIRE(r.has_file_change_reply());
  CHECK_FALSE(fs::is_symlink(dir / "link"));
  CHECK(fs::exists(target));

  r = call_handler(&ops::remove_path, rm_request(dir / "empty"));
  REQUIRE(r.has_file_change_reply());
  CHECK_FALSE(fs::exists(dir / "empty"));

  r = call_handler(&ops::remove_path, rm_request(dir / "full"));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);
  CHECK(fs::exists(dir / "full/inside"));

  r = call_handler(&ops::remove_path, rm_request(dir / "gone"));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_NOT_FOUND);
  // The system's reason once, not twice.
  CHECK_THAT(r.error().message(), Catch::EndsWith("gone: No such file or directory"));
  for (const auto* path : {"gone", "nowhere/gone"}) {
    r = call_handler(&ops::remove_path, rm_request(dir / path, false, true));
    REQUIRE(r.has_file_change_reply());
    CHECK(r.file_change_reply().missing());
  }

  // A root of the policy is never removed, however asked.
  r = call_handler(&ops::remove_path, rm_request(dir / "full", true, true),
                   rooted_at(dir / "full"));
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.write_roots");
  CHECK(fs::exists(dir / "full/inside"));
}

TEST_CASE("a recursive rm removes links as links and leaves a mount inside the tree in place",
          "[unit][guest][files]") {
  REQUIRE(::geteuid() == 0);  // mounting one
  temp_dir dir, outside;
  outside.write("keep/me", "k");
  for (int i = 0; i < 50; ++i)
    dir.write("tree/d" + std::to_string(i % 5) + "/f" + std::to_string(i), "x");
  fs::create_directory_symlink(outside / "keep", dir / "tree/d0/to-outside");
  fs::create_symlink(outside / "keep/me", dir / "tree/d1/to-file");
  ::mkfifo((dir / "tree/fifo").c_str(), 0600);
  {
    tmpfs_mount mounted(dir / "tree/d2/mnt");
    { std::ofstream(mounted.path + "/on-the-mount") << "m"; }

    auto r = call_handler(&ops::remove_path, rm_request(dir / "tree", true));
    REQUIRE(r.has_error());
    CHECK(r.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);
    CHECK_THAT(r.error().message(), Catch::Contains("mounted there"));
    // Everything but the mount and the directories that hold it is gone.
    CHECK(fs::exists(mounted.path + "/on-the-mount"));
    CHECK_FALSE(fs::exists(dir / "tree/d0"));
    CHECK_FALSE(fs::exists(dir / "tree/fifo"));
    CHECK(fs::is_empty(dir / "tree/d2") == false);
    std::size_t left = 0;
    for ([[maybe_unused]] const auto& e : fs::recursive_directory_iterator(dir / "tree")) ++left;
    CHECK(left == 3);  // d2, d2/mnt, d2/mnt/on-the-mount

    // A mount point itself is not removed, nor what it holds.
    r = call_handler(&ops::remove_path, rm_request(mounted.path, true));
    REQUIRE(r.has_error());
    CHECK(fs::exists(mounted.path + "/on-the-mount"));
  }
  // What the links pointed to is untouched.
  CHECK(fs::exists(outside / "keep/me"));
  auto r = call_handler(&ops::remove_path, rm_request(dir / "tree", true));
  REQUIRE(r.has_file_change_reply());
  CHECK(r.file_change_reply().removed() == 3);
  CHECK_FALSE(fs::exists(dir / "tree"));
}

TEST_CASE("a tree removal stops when told to, and below its depth limit", "[unit][guest][files]") {
  temp_dir dir;
  dir.write("t/a/b/c/d/e/f/file", "x");
  qg::unique_fd at(::open(dir.path().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(at);
  std::atomic<bool> stop{true};
  auto out = qg::remove_tree(at.get(), "t", stop, dir / "t");
  REQUIRE(out.failure);
  CHECK(out.failure->code.value() == ECANCELED);
  CHECK(out.removed == 0);
  CHECK(fs::exists(dir / "t/a/b/c/d/e/f/file"));

  stop = false;
  out = qg::remove_tree(at.get(), "t", stop, dir / "t", 4);
  REQUIRE(out.failure);
  CHECK(out.failure->code.value() == ELOOP);
  CHECK_THAT(out.failure->message, Catch::Contains("deeper than 4 levels"));
  CHECK(fs::exists(dir / "t/a/b/c/d"));
  CHECK(out.removed == 0);

  out = qg::remove_tree(at.get(), "t", stop, dir / "t");
  CHECK_FALSE(out.failure);
  CHECK(out.removed == 8);
  CHECK_FALSE(fs::exists(dir / "t"));
}

TEST_CASE("mv renames within a filesystem, replaces only when asked, and never across one",
          "[unit][guest][files]") {
  REQUIRE(::geteuid() == 0);  // mounting one
  temp_dir dir;
  dir.write("a", "A");
  dir.write("b", "B");
  auto r = call_handler(&ops::move_path, mv_request(dir / "a", dir / "b"));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_ALREADY_EXISTS);
  CHECK(fs::exists(dir / "a"));

  r = call_handler(&ops::move_path, mv_request(dir / "a", dir / "b", true));
  REQUIRE(r.has_file_change_reply());
  CHECK_FALSE(fs::exists(dir / "a"));
  CHECK(fs::file_size(dir / "b") == 1);

  r = call_handler(&ops::move_path, mv_request(dir / "b", dir / "sub/c"));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_NOT_FOUND);

  tmpfs_mount other(dir / "other");
  r = call_handler(&ops::move_path, mv_request(dir / "b", other.path + "/b"));
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);
  CHECK_THAT(r.error().message(), Catch::Contains("different filesystems"));
  CHECK(fs::exists(dir / "b"));

  // Out of the roots, or the root itself: refused.
  r = call_handler(&ops::move_path, mv_request(dir / "b", "/etc/b"), rooted_at(dir.path()));
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.write_roots");
  r = call_handler(&ops::move_path, mv_request(dir.path(), dir / "elsewhere"),
                   rooted_at(dir.path()));
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.write_roots");
}
