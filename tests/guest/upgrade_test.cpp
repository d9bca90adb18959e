// SPDX-License-Identifier: MIT
// Upgrades in the guest: the record, the checks of the staged binary, the swap and its undoing,
// and the handler end to end with small scripts standing in for agent binaries (the guard they
// start is then the script too, which prints and exits; the real guard is run directly).
#include "qxa/guest/mech/upgrade.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "guest/ops_test_support.hpp"
#include "qxa/common/sha256.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using qxa::test::handler_bench;
using qxa::test::run_async;
using qxa::test::temp_dir;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
namespace ops = qxa::guest::ops;

namespace {

std::string digest_of(const std::string& path) {
  auto d = qg::file_sha256(path);
  REQUIRE(d);
  return qxa::common::sha256::bytes(*d);
}

// A script that says it is an agent of `version` (the stand-in for a new binary).
std::string agent_script(const std::string& version) {
  return "#!/bin/sh\necho quantix-kvm-agent " + version + "\n";
}

struct install_bench {
  install_bench() {
    ::chmod(bin.path().c_str(), 0755);
    binary = bin.write("quantix-kvm-agent", agent_script("1.0"));
    ::chmod(binary.c_str(), 0755);
    options.upgrade.binary = binary;
    options.upgrade.state_dir = state / "lib";
    options.power.systemd_dir = state / "no-systemd";
  }
  // Stages `content` as an upload with agent_upgrade would: the agent's own, mode 0700.
  std::string stage(const std::string& content) {
    const auto staged = qg::staged_binary(binary);
    std::ofstream(staged, std::ios::trunc) << content;
    ::chmod(staged.c_str(), 0700);
    return staged;
  }
  temp_dir bin, state;
  std::string binary;
  qg::agent_options options;
};

pb::Envelope upgrade_request(const std::string& sha256, std::uint32_t within_ms = 60'000) {
  pb::Envelope e;
  e.mutable_upgrade_request()->set_sha256(sha256);
  e.mutable_upgrade_request()->set_confirm_within_ms(within_ms);
  return e;
}

pb::Envelope confirm_request(const std::string& token) {
  pb::Envelope e;
  e.mutable_upgrade_confirm_request()->set_token(token);
  return e;
}

}  // namespace

TEST_CASE("an upgrade record keeps every field through its text form, and a damaged one is refused",
          "[upgrade]") {
  qg::upgrade_record r{.state = qg::upgrade_state::rolled_back,
                       .token = "abc",
                       .from_version = "1.0",
                       .to_version = "2.0",
                       .binary = "/usr/sbin/quantix-kvm-agent",
                       .previous = "/usr/sbin/quantix-kvm-agent.previous",
                       .unit = "quantix-kvm-agent.service",
                       .deadline_unix_ms = 1796095999986,
                       .device = 65024,
                       .inode = 10952842,
                       .sha256 = std::string(64, 'a'),
                       .detail = "no confirmation = put back"};
  auto back = qg::parse_upgrade_record(qg::format_upgrade_record(r));
  REQUIRE(back);
  CHECK(back->state == r.state);
  CHECK(back->token == r.token);
  CHECK(back->to_version == r.to_version);
  CHECK(back->unit == r.unit);
  CHECK(back->deadline_unix_ms == r.deadline_unix_ms);
  CHECK(back->inode == r.inode);
  CHECK(back->sha256 == r.sha256);
  CHECK(back->detail == r.detail);  // the first '=' splits; the rest is the value
  CHECK_FALSE(qg::parse_upgrade_record("token=abc\n"));                 // no state
  CHECK_FALSE(qg::parse_upgrade_record("state=pending\ninode=12x\n"));  // not a number
  CHECK_FALSE(qg::parse_upgrade_record("state=whatever\n"));
  CHECK(qg::parse_upgrade_record("state=pending\nfuture_key=1\n"));  // unknown keys skipped

  temp_dir dir;
  CHECK(qg::read_upgrade_record(dir / "none")->state == qg::upgrade_state::none);
  REQUIRE_FALSE(qg::write_upgrade_record(dir.path(), r));
  CHECK(qg::read_upgrade_record(dir.path())->token == "abc");
  r.detail = "two\nlines";
  CHECK(qg::write_upgrade_record(dir.path(), r));  // refused: a value must stay one line
}

TEST_CASE("only \"quantix-kvm-agent VERSION\" names an agent", "[upgrade]") {
  CHECK(*qg::parse_version_output("quantix-kvm-agent 1.2.3\n") == "1.2.3");
  CHECK_FALSE(qg::parse_version_output("quantix-kvm-agent 1.2.3"));  // no newline: cut off
  CHECK_FALSE(qg::parse_version_output("busybox v1.35\n"));
  CHECK_FALSE(qg::parse_version_output("quantix-kvm-agent \n"));
  CHECK_FALSE(qg::parse_version_output("quantix-kvm-agent 1.0\nmore\n"));  // one line only
  CHECK_FALSE(qg::parse_version_output("quantix-kvm-agent " + std::string(65, '1') + "\n"));
}

TEST_CASE(
    "a staged binary is taken only as the agent's own file with the digest asked for, "
    "and only from a directory nobody else can write",
    "[upgrade]") {
  install_bench b;
  const auto staged = b.stage(agent_script("2.0"));
  const auto sha = digest_of(staged);
  CHECK_FALSE(qg::check_staged(staged, sha));
  CHECK(qg::check_staged(staged, std::string(32, 'x'))->message.find("SHA-256") !=
        std::string::npos);
  ::chmod(staged.c_str(), 0720);  // group-writable: someone else could have changed it
  CHECK(qg::check_staged(staged, sha));
  ::chmod(staged.c_str(), 0700);
  const auto other = b.bin / "hard-link";
  REQUIRE(::link(staged.c_str(), other.c_str()) == 0);  // a second name another user may hold
  CHECK(qg::check_staged(staged, sha));
  ::unlink(other.c_str());
  ::unlink(staged.c_str());
  CHECK(qg::check_staged(staged, sha)->code == std::errc::no_such_file_or_directory);

  CHECK_FALSE(qg::check_trusted_directory(b.bin.path()));
  ::chmod(b.bin.path().c_str(), 01777);  // like /tmp
  CHECK(qg::check_trusted_directory(b.bin.path())->message.find("writable by others") !=
        std::string::npos);
}

TEST_CASE(
    "upgrade: checked, swapped with the previous binary kept, recorded as pending, and the "
    "agent asked to exit: confirmed only by the new binary, and one at a time",
    "[upgrade]") {
  install_bench b;
  const auto old_sha = digest_of(b.binary);
  const auto staged = b.stage(agent_script("2.0"));
  const auto new_sha = digest_of(staged);
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), b.options);
    auto reply = co_await ops::upgrade(bench.context(), upgrade_request(new_sha));
    INFO(reply.DebugString());
    REQUIRE(reply.has_upgrade_status());
    const auto& s = reply.upgrade_status();
    CHECK(s.state() == pb::UpgradeStatus::STATE_PENDING);
    CHECK(s.to_version() == "2.0");
    CHECK(s.binary() == b.binary);
    CHECK(s.previous() == b.binary + ".previous");
    CHECK(digest_of(b.binary) == new_sha);
    CHECK(digest_of(b.binary + ".previous") == old_sha);
    CHECK_FALSE(std::filesystem::exists(staged));
    CHECK(bench.state.exit_after_reply == 75);
    const auto record = qg::read_upgrade_record(b.options.upgrade.state_dir);
    REQUIRE(record);
    CHECK(record->state == qg::upgrade_state::pending);
    CHECK(record->unit.empty());  // no systemd here: the guard runs in its own session

    // This process does not run the new binary: it cannot confirm it.
    auto confirm = co_await ops::upgrade(bench.context(), confirm_request(s.token()));
    CHECK(confirm.upgrade_status().state() == pb::UpgradeStatus::STATE_PENDING);
    auto wrong = co_await ops::upgrade(bench.context(), confirm_request("other"));
    CHECK(wrong.error().code() == pb::ERROR_CODE_NOT_FOUND);

    // A second upgrade waits for the first one's outcome.
    b.stage(agent_script("3.0"));
    auto again = co_await ops::upgrade(bench.context(), upgrade_request(digest_of(staged)));
    CHECK(again.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);
    CHECK_THAT(again.error().message(), Catch::Contains("waits for its confirmation"));

    // Nor does one start while another request is between its checks and its reply.
    REQUIRE(qg::write_upgrade_record(b.options.upgrade.state_dir, qg::upgrade_record{}) ==
            std::nullopt);
    bench.state.upgrading = true;
    auto busy = co_await ops::upgrade(bench.context(), upgrade_request(digest_of(staged)));
    CHECK_THAT(busy.error().message(), Catch::Contains("an upgrade is under way"));
    bench.state.upgrading = false;

    auto status = co_await ops::upgrade_status(bench.context(), {});
    CHECK(status.upgrade_status().running_sha256() == new_sha);
  });
}

TEST_CASE("upgrade refuses a staged file that does not run as an agent, and leaves the binary",
          "[upgrade]") {
  install_bench b;
  const auto old_sha = digest_of(b.binary);
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), b.options);
    for (const auto& content : {std::string("#!/bin/sh\necho hello\n"),
                                std::string("#!/bin/sh\nexit 3\n"), std::string("not a program")}) {
      const auto staged = b.stage(content);
      auto reply = co_await ops::upgrade(bench.context(), upgrade_request(digest_of(staged)));
      INFO(content);
      CHECK(reply.has_error());
      CHECK(digest_of(b.binary) == old_sha);
      CHECK_FALSE(std::filesystem::exists(b.binary + ".previous"));
      CHECK_FALSE(bench.state.exit_after_reply);
      CHECK_FALSE(std::filesystem::exists(staged));  // of no further use: removed
    }
    auto no_staged = co_await ops::upgrade(bench.context(), upgrade_request(std::string(32, 'a')));
    CHECK(no_staged.error().code() == pb::ERROR_CODE_NOT_FOUND);
  });
}

TEST_CASE("policy.upgrade = false refuses the upgrade and the upload of a new binary",
          "[upgrade]") {
  install_bench b;
  b.options.policy.upgrade = false;
  CHECK(b.options.policy.check_operation("upgrade")->rule == "policy.upgrade");
  CHECK(b.options.policy.check_operation("upgrade-status")->rule == "policy.upgrade");
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), b.options);
    pb::Envelope open;
    open.mutable_file_write_open()->set_agent_upgrade(true);
    auto reply = co_await ops::file_write(bench.context(), open);
    CHECK(reply.error().code() == pb::ERROR_CODE_PERMISSION_DENIED);
    CHECK(reply.error().rule() == "policy.upgrade");
    CHECK(bench.state.uploads->size() == 0);
  });
}

TEST_CASE(
    "the guard puts the previous binary back past the deadline, never over a binary "
    "something else replaced, and leaves a confirmed upgrade alone",
    "[upgrade]") {
  install_bench b;
  const auto old_sha = digest_of(b.binary);
  const auto staged = b.stage(agent_script("2.0"));
  auto installed = qg::install_staged(b.binary, staged, b.binary + ".previous");
  REQUIRE(installed);
  qg::upgrade_record r{.state = qg::upgrade_state::confirmed,
                       .token = "t",
                       .from_version = "1.0",
                       .to_version = "2.0",
                       .binary = b.binary,
                       .previous = b.binary + ".previous",
                       .unit = "",
                       .deadline_unix_ms = 1,
                       .device = installed->first,
                       .inode = installed->second,
                       .sha256 = qxa::common::sha256::hex(digest_of(b.binary)),
                       .detail = ""};
  const auto dir = b.options.upgrade.state_dir;
  REQUIRE_FALSE(qg::write_upgrade_record(dir, r));
  CHECK(qg::run_upgrade_guard(dir) == 0);
  CHECK(digest_of(b.binary) != old_sha);  // confirmed: nothing to do

  r.state = qg::upgrade_state::pending;
  REQUIRE_FALSE(qg::write_upgrade_record(dir, r));
  CHECK(qg::run_upgrade_guard(dir) == 0);
  CHECK(digest_of(b.binary) == old_sha);
  auto after = qg::read_upgrade_record(dir);
  CHECK(after->state == qg::upgrade_state::rolled_back);
  CHECK_THAT(after->detail, Catch::Contains("no confirmation"));

  // Something else (a package upgrade) replaced the new binary meanwhile: not touched. As a
  // package manager does, the replacement is written beside the new binary and renamed over it
  // (while the new binary still exists, so its inode number cannot be the new binary's).
  auto again = qg::install_staged(b.binary, b.stage(agent_script("2.0")), b.binary + ".previous");
  REQUIRE(again);
  r.device = again->first;
  r.inode = again->second;
  const auto replaced = b.bin.write("replacement", agent_script("9.0"));
  REQUIRE(::rename(replaced.c_str(), b.binary.c_str()) == 0);
  const auto theirs = digest_of(b.binary);
  REQUIRE_FALSE(qg::write_upgrade_record(dir, r));
  CHECK(qg::run_upgrade_guard(dir) == 1);
  CHECK(digest_of(b.binary) == theirs);
  CHECK_THAT(qg::read_upgrade_record(dir)->detail, Catch::Contains("replaced"));

  // A file made after the new binary was removed may get its inode number: the digest tells
  // them apart (here the record is given the replacement's inode, as such a reuse would).
  struct stat st {};
  REQUIRE(::stat(b.binary.c_str(), &st) == 0);
  r.device = st.st_dev;
  r.inode = st.st_ino;
  REQUIRE_FALSE(qg::write_upgrade_record(dir, r));
  CHECK(qg::run_upgrade_guard(dir) == 1);
  CHECK(digest_of(b.binary) == theirs);
  CHECK_THAT(qg::read_upgrade_record(dir)->detail, Catch::Contains("replaced"));
}
