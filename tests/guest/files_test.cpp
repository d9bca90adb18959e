// SPDX-License-Identifier: MIT
#include "support/files.hpp"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>

#include "guest/ops_test_support.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/guest/mech/uploads.hpp"
#include "support/stuck_fuse.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::handler_bench;
using qxa::test::run_async;
using qxa::test::temp_dir;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
namespace qc = qxa::common;
namespace ops = qxa::guest::ops;
using qxa::test::call_handler;
using qxa::test::file_contents;

namespace {

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("SHA-256 of known inputs", "[unit][common]") {
  qc::sha256 h;
  h.update("abc");
  CHECK(qc::sha256::hex(h.finish()) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // finish() starts over: the empty input next.
  CHECK(qc::sha256::hex(h.finish()) ==
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("an upload appears at its path only when committed, with its mode",
          "[unit][guest][files]") {
  temp_dir dir;
  const auto target = dir / "sub/dir/file.bin";
  qg::upload_table uploads;
  auto h = uploads.open(
      7,
      {.root = dir.path(), .relative = "sub/dir/file.bin", .mode = 0600, .create_parents = true});
  REQUIRE(h);
  REQUIRE(uploads.append(7, *h, 0, "hello ", 1 << 20));
  CHECK_FALSE(std::filesystem::exists(target));  // not before the commit
  REQUIRE(uploads.append(7, *h, 6, "world", 1 << 20));
  qc::sha256 expected;
  expected.update("hello world");
  auto done = uploads.commit(7, *h, qc::sha256::bytes(expected.finish()));
  REQUIRE(done);
  CHECK(done->size == 11);
  CHECK(file_contents(target) == "hello world");
  struct stat st {};
  REQUIRE(::stat(target.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(names_in(dir / "sub/dir") == std::vector<std::string>{"file.bin"});  // no temporary left
  CHECK(uploads.size() == 0);
}

TEST_CASE("an upload with a wrong digest, a gap or too many bytes leaves nothing behind",
          "[unit][guest][files]") {
  temp_dir dir;
  qg::upload_table uploads;
  auto h = uploads.open(1, {.root = dir.path(), .relative = "file"});
  REQUIRE(h);
  REQUIRE(uploads.append(1, *h, 0, "data", 100));
  auto gap = uploads.append(1, *h, 10, "more", 100);
  CHECK_FALSE(gap);  // offsets must continue where the last chunk ended
  CHECK_FALSE(uploads.append(2, *h, 4, "x", 100));  // another session's handle
  auto bad = uploads.commit(1, *h, std::string(32, 'x'));
  REQUIRE_FALSE(bad);
  CHECK_THAT(bad.error().message, Catch::Contains("SHA-256 mismatch"));
  CHECK(names_in(dir.path()).empty());

  h = uploads.open(1, {.root = dir.path(), .relative = "file"});
  REQUIRE(h);
  auto big = uploads.append(1, *h, 0, std::string(101, 'a'), 100);
  REQUIRE_FALSE(big);
  CHECK(names_in(dir.path()).empty());

  // A session that ends takes its uploads with it.
  REQUIRE(uploads.open(3, {.root = dir.path(), .relative = "file"}));
  REQUIRE(uploads.open(3, {.root = dir.path(), .relative = "other"}));
  CHECK(names_in(dir.path()).empty());  // unnamed until committed
  CHECK(uploads.size() == 2);
  CHECK(uploads.abort_session(3) == 2);
  CHECK(uploads.size() == 0);
  CHECK(names_in(dir.path()).empty());
}

TEST_CASE("an upload replacing a file keeps its mode", "[unit][guest][files]") {
  temp_dir dir;
  const auto target = dir.write("script", "old");
  REQUIRE(::chmod(target.c_str(), 0751) == 0);
  qg::upload_table uploads;
  auto h = uploads.open(1, {.root = dir.path(), .relative = "script"});
  REQUIRE(h);
  REQUIRE(uploads.append(1, *h, 0, "new", 100));
  REQUIRE(uploads.commit(1, *h, {}));
  struct stat st {};
  REQUIRE(::stat(target.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0751);
  CHECK(file_contents(target) == "new");
}

TEST_CASE("file-read streams a file with its SHA-256, and stat and a paged listing describe it",
          "[unit][guest][files]") {
  temp_dir dir;
  std::string content(300'000, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>(i * 7);
  const auto path = dir.write("data.bin", content);
  pb::Envelope read;
  read.mutable_file_read_request()->set_path(path);
  auto r = call_handler(&ops::file_read, read);
  REQUIRE(r.has_file_read_result());
  qc::sha256 h;
  h.update(content);
  CHECK(r.file_read_result().size() == content.size());
  CHECK(r.file_read_result().sha256() == qc::sha256::bytes(h.finish()));

  pb::Envelope stat;
  stat.mutable_file_stat_request()->set_path(path);
  r = call_handler(&ops::file_stat, stat);
  REQUIRE(r.has_file_stat());
  CHECK(r.file_stat().type() == pb::FileStat::TYPE_FILE);
  CHECK(r.file_stat().size() == content.size());

  for (const char* n : {"b", "c", "d", "e"}) dir.write(n, n);
  pb::Envelope list;
  list.mutable_dir_list_request()->set_path(dir.path());
  list.mutable_dir_list_request()->set_limit(2);
  std::vector<std::string> seen;
  for (int page = 0; page < 5; ++page) {
    r = call_handler(&ops::dir_list, list);
    REQUIRE(r.has_dir_list());
    for (const auto& e : r.dir_list().entries()) seen.push_back(e.path());
    if (r.dir_list().next_after().empty()) break;
    list.mutable_dir_list_request()->set_after(r.dir_list().next_after());
  }
  CHECK(seen == std::vector<std::string>{"b", "c", "d", "data.bin", "e"});
  // By position: the directory's own order, two at a time, each entry once.
  list.mutable_dir_list_request()->clear_after();
  list.mutable_dir_list_request()->set_by_position(true);
  std::multiset<std::string> positioned;
  int pages = 0;
  for (; pages < 10; ++pages) {
    r = call_handler(&ops::dir_list, list);
    REQUIRE(r.has_dir_list());
    CHECK(r.dir_list().entries_size() <= 2);
    for (const auto& e : r.dir_list().entries()) positioned.insert(e.path());
    if (r.dir_list().next_position() == 0) break;
    list.mutable_dir_list_request()->set_position(r.dir_list().next_position());
  }
  CHECK(pages >= 2);
  CHECK(positioned == std::multiset<std::string>{"b", "c", "d", "data.bin", "e"});
}

TEST_CASE(
    "file operations refuse paths that escape the roots, through .. or a symlink, and files "
    "over the size limit",
    "[unit][guest][files]") {
  temp_dir dir;
  const auto inside = dir / "inside";
  dir.write("inside/ok.txt", "fine");
  dir.write("outside/secret.txt", "secret");
  REQUIRE(::symlink((dir / "outside/secret.txt").c_str(), (inside + "/link").c_str()) == 0);
  qg::agent_options o;
  o.policy.read_roots = {inside};
  o.policy.write_roots = {inside};
  o.policy.max_file_bytes = 10;

  auto refused_read = [&](const std::string& path, const std::string& rule) {
    pb::Envelope read;
    read.mutable_file_read_request()->set_path(path);
    auto r = call_handler(&ops::file_read, read, o);
    REQUIRE(r.has_error());
    CHECK(r.error().code() == pb::ERROR_CODE_PERMISSION_DENIED);
    CHECK(r.error().rule() == rule);
  };
  refused_read(inside + "/../outside/secret.txt", "policy.read_roots");
  refused_read(inside + "/link", "policy.read_roots");
  dir.write("inside/big.txt", std::string(11, 'x'));
  refused_read(inside + "/big.txt", "policy.max_file_bytes");

  pb::Envelope write;
  write.mutable_file_write_open()->set_path(inside + "/../outside/new.txt");
  auto r = call_handler(&ops::file_write, write, o);
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.write_roots");
  write.mutable_file_write_open()->set_path(inside + "/new.txt");
  write.mutable_file_write_open()->set_expected_size(11);
  r = call_handler(&ops::file_write, write, o);
  REQUIRE(r.has_error());
  CHECK(r.error().rule() == "policy.max_file_bytes");
  CHECK_FALSE(std::filesystem::exists(dir / "outside/new.txt"));
}

namespace {

// One upload through the handler, open to commit, with `o`'s policy: the error, or nothing.
std::optional<pb::Error> upload(const std::string& path, const std::string& data,
                                qg::agent_options o = {}, std::uint32_t mode = 0,
                                std::optional<std::pair<std::uint32_t, std::uint32_t>> owner = {},
                                bool parents = false) {
  std::optional<pb::Error> failed;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), o);
    pb::Envelope open;
    auto* op = open.mutable_file_write_open();
    op->set_path(path);
    op->set_mode(mode);
    op->set_create_parents(parents);
    if (owner) {
      op->set_set_owner(true);
      op->set_uid(owner->first);
      op->set_gid(owner->second);
    }
    auto r = co_await ops::file_write(bench.context(), open);
    if (r.has_error()) {
      failed = r.error();
      co_return;
    }
    const auto handle = r.file_write_reply().handle();
    pb::Envelope chunk;
    chunk.mutable_file_write_chunk()->set_handle(handle);
    chunk.mutable_file_write_chunk()->set_data(data);
    r = co_await ops::file_write(bench.context(), chunk);
    if (r.has_error()) {
      failed = r.error();
      co_return;
    }
    pb::Envelope close;
    close.mutable_file_write_close()->set_handle(handle);
    r = co_await ops::file_write(bench.context(), close);
    if (r.has_error()) failed = r.error();
  });
  return failed;
}

std::size_t entries_in(const std::string& dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

}  // namespace

TEST_CASE("an upload lands only where its path says, never through or over a planted link",
          "[unit][guest][files]") {
  temp_dir dir;
  const auto decoy = dir.write("outside/decoy", "untouched");
  std::filesystem::create_directories(dir / "root/real");
  // A user's links inside the write root: one to a directory outside it, one to a file.
  std::filesystem::create_symlink(dir / "outside", dir / "root/away");
  std::filesystem::create_symlink(decoy, dir / "root/file-link");
  // And outside the root, a link into it (judged before by its target, then replaced itself).
  std::filesystem::create_symlink(dir / "root/real", dir / "outside/into-root");
  qg::agent_options o;
  o.policy.write_roots = {dir / "root"};

  auto e = upload(dir / "root/away/decoy", "overwritten", o);
  REQUIRE(e);
  CHECK(e->code() == pb::ERROR_CODE_PERMISSION_DENIED);
  CHECK(e->rule() == "policy.write_roots");
  CHECK_THAT(e->message(), Catch::Contains("symbolic link") &&
                               Catch::Contains("the real path is '" + dir / "outside/decoy"));
  e = upload(dir / "root/away/new", "x", o, 0, {}, true);
  REQUIRE(e);
  e = upload(dir / "root/file-link", "overwritten", o);
  REQUIRE(e);
  CHECK_THAT(e->message(), Catch::Contains("symbolic link"));
  CHECK(std::filesystem::is_symlink(dir / "root/file-link"));
  e = upload(dir / "outside/into-root/new", "x", o);
  REQUIRE(e);
  CHECK(e->rule() == "policy.write_roots");
  CHECK(std::filesystem::is_symlink(dir / "outside/into-root"));
  CHECK(file_contents(decoy) == "untouched");
  CHECK(entries_in(dir / "outside") == 2);  // the decoy and the link: nothing new
  CHECK_FALSE(upload(dir / "root/real/fine", "landed", o));
  CHECK(file_contents(dir / "root/real/fine") == "landed");
}

TEST_CASE(
    "an upload keeps the directory it opened: swapping the path before the commit moves "
    "nothing out of the root",
    "[unit][guest][files]") {
  temp_dir dir;
  std::filesystem::create_directories(dir / "root/sub");
  std::filesystem::create_directories(dir / "outside");
  qg::upload_table uploads;
  auto h = uploads.open(1, {.root = dir / "root", .relative = "sub/file"});
  REQUIRE(h);
  REQUIRE(uploads.append(1, *h, 0, "data", 100));
  // Between open and commit the user renames the directory away and puts a link in its place.
  std::filesystem::rename(dir / "root/sub", dir / "root/moved");
  std::filesystem::create_symlink(dir / "outside", dir / "root/sub");
  REQUIRE(uploads.commit(1, *h, {}));
  CHECK(file_contents(dir / "root/moved/file") == "data");
  CHECK(entries_in(dir / "outside") == 0);
}

TEST_CASE("setuid and setgid modes and other owners are refused unless the policy allows them",
          "[unit][guest][files]") {
  temp_dir dir;
  qg::agent_options o;
  o.policy.write_roots = {dir.path()};
  auto e = upload(dir / "suid", "x", o, 04755);
  REQUIRE(e);
  CHECK(e->rule() == "policy.write_setid");
  e = upload(dir / "sgid", "x", o, 02755);
  REQUIRE(e);
  CHECK(e->rule() == "policy.write_setid");
  e = upload(dir / "given", "x", o, 0644, std::pair{1000u, 1000u});
  REQUIRE(e);
  CHECK(e->rule() == "policy.write_owner");
  // Replacing a setuid file would keep its mode: that needs the policy too.
  const auto setuid = dir.write("tool", "old");
  REQUIRE(::chmod(setuid.c_str(), 04755) == 0);
  e = upload(setuid, "new", o);
  REQUIRE(e);
  CHECK(e->rule() == "policy.write_setid");
  CHECK(file_contents(setuid) == "old");
  CHECK_FALSE(std::filesystem::exists(dir / "suid"));
  CHECK_FALSE(std::filesystem::exists(dir / "given"));
  o.policy.write_setid = true;
  o.policy.write_owner = true;
  CHECK_FALSE(upload(dir / "suid", "x", o, 04755));
  if (::geteuid() == 0) CHECK_FALSE(upload(dir / "given", "x", o, 0644, std::pair{1000u, 1000u}));
  struct stat st {};
  REQUIRE(::stat((dir / "suid").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 04755);
}

TEST_CASE(
    "an upload over a file a user planted is the agent's, with no write for group or others, "
    "unless policy.write_owner keeps the user's",
    "[unit][guest][files][hostile]") {
  REQUIRE(::geteuid() == 0);  // a file of another user's to replace
  temp_dir dir;
  // Sticky and world-writable, as /tmp is: a user plants the name the host will upload to.
  REQUIRE(::chmod(dir.path().c_str(), 01777) == 0);
  const auto plant = [&](const std::string& name) {
    const auto path = dir.write(name, "planted by uid 1000\n");
    REQUIRE(::chown(path.c_str(), 1000, 1000) == 0);
    REQUIRE(::chmod(path.c_str(), 0777) == 0);
    return path;
  };
  const auto stat_of = [](const std::string& path) {
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    return st;
  };
  qg::agent_options o;
  o.policy.write_roots = {dir.path()};
  const auto script = plant("backup.sh");
  REQUIRE_FALSE(upload(script, "#!/bin/sh\necho the host's script\n", o));
  auto st = stat_of(script);
  CHECK(file_contents(script) == "#!/bin/sh\necho the host's script\n");
  CHECK(st.st_uid == 0);                // not hers to edit before root runs it
  CHECK((st.st_mode & 07777) == 0755);  // her mode, without write for group and others
  CHECK(st.st_gid == 1000);             // her group may still read and run it
  // An explicit mode is the host's.
  const auto exact = plant("exact.sh");
  REQUIRE_FALSE(upload(exact, "x", o, 0700));
  CHECK(stat_of(exact).st_uid == 0);
  CHECK((stat_of(exact).st_mode & 07777) == 0700);
  // The administrator may keep replaced files with their owners.
  o.policy.write_owner = true;
  const auto kept = plant("kept.sh");
  REQUIRE_FALSE(upload(kept, "y", o));
  CHECK(stat_of(kept).st_uid == 1000);
  CHECK((stat_of(kept).st_mode & 07777) == 0777);
}

TEST_CASE("file-read of a FIFO or a link to /dev/zero answers at once, reading nothing",
          "[unit][guest][files]") {
  temp_dir dir;
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0644) == 0);
  std::filesystem::create_symlink("/dev/zero", dir / "zero");
  for (const char* name : {"fifo", "zero"}) {
    INFO(name);
    pb::Envelope read;
    read.mutable_file_read_request()->set_path(dir / name);
    pb::Envelope r;
    // A reader blocked on the FIFO would miss this deadline (and every ping with it).
    run_async(
        [&](asio::io_context& io) -> asio::awaitable<void> {
          handler_bench bench(io.get_executor());
          r = co_await ops::file_read(bench.context(), read);
        },
        5s);
    REQUIRE(r.has_error());
  }
  pb::Envelope list;
  list.mutable_dir_list_request()->set_path(dir.path());
  auto r = call_handler(&ops::dir_list, list);
  REQUIRE(r.has_dir_list());
  CHECK(r.dir_list().entries_size() == 2);  // described from the directory, never opened
}

TEST_CASE("listing or describing a directory that holds a stuck FUSE mount asks it nothing",
          "[unit][guest][files]") {
  REQUIRE(::geteuid() == 0);  // mounting one
  temp_dir dir;
  std::filesystem::create_directories(dir / "home/mnt");
  dir.write("home/file", "f");
  qxa::test::stuck_fuse fuse(dir / "home/mnt");
  pb::Envelope list;
  list.mutable_dir_list_request()->set_path(dir / "home");
  pb::Envelope stat;
  stat.mutable_file_stat_request()->set_path(dir / "home/mnt");
  pb::Envelope listed, described;
  // Blocked on the mount, the handlers would miss this deadline.
  run_async(
      [&](asio::io_context& io) -> asio::awaitable<void> {
        handler_bench bench(io.get_executor());
        listed = co_await ops::dir_list(bench.context(), list);
        described = co_await ops::file_stat(bench.context(), stat);
      },
      5s);
  REQUIRE(listed.has_dir_list());
  CHECK(listed.dir_list().entries_size() == 2);
  REQUIRE(described.has_error());  // the walk does not step onto it
  CHECK(described.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);
  CHECK_THAT(described.error().message(), Catch::Contains("fuse.stuck"));
}

TEST_CASE(
    "policy.max_open_uploads caps the uploads one session holds open, and closing one, or another "
    "session, makes room",
    "[unit][guest][files]") {
  temp_dir dir;
  qg::agent_options o;
  o.policy.write_roots = {dir.path()};
  o.policy.max_open_uploads = 3;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), o);
    auto open = [&](const qg::request_context& ctx,
                    const std::string& name) -> asio::awaitable<pb::Envelope> {
      pb::Envelope e;
      e.mutable_file_write_open()->set_path(dir / name);
      co_return co_await ops::file_write(ctx, e);
    };
    std::vector<std::uint64_t> handles;
    for (int i = 0; i < 3; ++i) {
      auto r = co_await open(bench.context(), fmt::format("file-{}", i));
      REQUIRE(r.has_file_write_reply());
      handles.push_back(r.file_write_reply().handle());
    }
    auto over = co_await open(bench.context(), "one-too-many");
    REQUIRE(over.has_error());
    CHECK(over.error().code() == pb::ERROR_CODE_RESOURCE_EXHAUSTED);
    CHECK(over.error().rule() == "policy.max_open_uploads");
    CHECK_THAT(over.error().message(), Catch::Contains("3 uploads are open"));
    // An agent upgrade's staging is an upload like any other.
    pb::Envelope stage;
    stage.mutable_file_write_open()->set_agent_upgrade(true);
    auto staged = co_await ops::file_write(bench.context(), stage);
    REQUIRE(staged.has_error());
    CHECK(staged.error().rule() == "policy.max_open_uploads");
    // Another session has its own three.
    const qg::request_context other{bench.state, 0x07e4, 2, nullptr};
    auto theirs = co_await open(other, "theirs");
    CHECK(theirs.has_file_write_reply());
    // One committed and one aborted: two may open again, and a third not.
    pb::Envelope close;
    close.mutable_file_write_close()->set_handle(handles[0]);
    auto closed = co_await ops::file_write(bench.context(), close);
    CHECK(closed.file_write_reply().committed());
    close.mutable_file_write_close()->set_handle(handles[1]);
    close.mutable_file_write_close()->set_abort(true);
    closed = co_await ops::file_write(bench.context(), close);
    CHECK_FALSE(closed.has_error());
    auto again = co_await open(bench.context(), "again-1");
    CHECK(again.has_file_write_reply());
    again = co_await open(bench.context(), "again-2");
    CHECK(again.has_file_write_reply());
    again = co_await open(bench.context(), "again-3");
    CHECK(again.error().rule() == "policy.max_open_uploads");
    // A session's end gives back all it held.
    CHECK(bench.state.uploads->abort_session(0x5e55) == 3);
    again = co_await open(bench.context(), "after-the-session");
    CHECK(again.has_file_write_reply());
  });
  CHECK(file_contents(dir / "file-0").empty());
  CHECK_FALSE(std::filesystem::exists(dir / "one-too-many"));
}
