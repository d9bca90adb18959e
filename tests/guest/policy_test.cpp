// SPDX-License-Identifier: MIT

#include "qxa/guest/policy.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

#include "qxa/guest/config.hpp"
#include "support/temp_dir.hpp"

namespace qg = qxa::guest;
using qxa::test::temp_dir;
using path_access = qg::local_policy::access;

TEST_CASE("the allow-list alone means only those operations, ping always", "[guest]") {
  qg::local_policy p;
  p.allow = {"info"};
  CHECK_FALSE(p.check_operation("info"));
  CHECK_FALSE(p.check_operation("ping"));
  auto no = p.check_operation("telemetry");
  REQUIRE(no);
  CHECK(no->rule == "policy.allow");
  CHECK_THAT(no->message, Catch::Contains("'telemetry'"));
}

TEST_CASE("with both lists the allow-list applies first, then the block-list", "[guest]") {
  qg::local_policy p;
  p.allow = {"info", "telemetry"};
  p.block = {"telemetry", "ping"};
  CHECK_FALSE(p.check_operation("info"));
  CHECK(p.check_operation("telemetry")->rule == "policy.block");
  CHECK_FALSE(p.check_operation("ping"));  // the heartbeat cannot be blocked
  qg::local_policy only_block;
  only_block.block = {"exec"};
  CHECK(only_block.check_operation("exec")->rule == "policy.block");
  CHECK_FALSE(only_block.check_operation("info"));
}

TEST_CASE("exec can be turned off and limited to listed programs", "[guest]") {
  qg::local_policy p;
  p.exec = false;
  CHECK(p.check_operation("exec")->rule == "policy.exec");
  CHECK(p.check_program("/bin/true")->rule == "policy.exec");
  qg::local_policy listed;
  listed.exec_allow = {"/bin/true", "uptime"};
  CHECK_FALSE(listed.check_program("/bin/true"));
  CHECK_FALSE(listed.check_program("uptime"));
  CHECK(listed.check_program("/bin/sh")->rule == "policy.exec_allow");
  temp_dir d;
  // A symlink that is listed but points elsewhere is judged by where it points.
  std::filesystem::create_symlink("/bin/sh", d / "innocent");
  listed.exec_allow.push_back(d / "innocent");
  CHECK_FALSE(listed.check_program(d / "innocent"));  // listed, resolves to a listed target
  qg::local_policy strict;
  strict.exec_allow = {"/bin/true"};
  CHECK(strict.check_program(d / "innocent")->rule == "policy.exec_allow");
}

TEST_CASE("paths may not escape their roots through .. or a symlink", "[guest]") {
  temp_dir d;
  std::filesystem::create_directories(d / "share/sub");
  std::filesystem::create_directories(d / "secret");
  d.write("secret/key", "k");
  d.write("share/ok.txt", "ok");
  std::filesystem::create_symlink(d / "secret", d / "share/link");
  qg::local_policy p;
  p.read_roots = {d / "share"};
  p.write_roots = {d / "share"};
  CHECK_FALSE(p.check_path(d / "share/ok.txt", path_access::read));
  CHECK_FALSE(p.check_path(d / "share/sub/new.txt", path_access::write));  // does not exist yet
  CHECK_FALSE(
      p.check_path(d / "share/sub/deeper/new.txt", path_access::write));  // parents to create
  auto dots = p.check_path(d / "share/../secret/key", path_access::read);
  REQUIRE(dots);
  CHECK(dots->rule == "policy.read_roots");
  CHECK_THAT(dots->message, Catch::Contains("really '" + d / "secret/key" + "'"));
  auto link = p.check_path(d / "share/link/key", path_access::read);
  REQUIRE(link);
  CHECK(link->rule == "policy.read_roots");
  CHECK(p.check_path(d / "share/link/new", path_access::write)->rule == "policy.write_roots");
  CHECK(p.check_path(d / "share/sub/../../secret/new", path_access::write)->rule ==
        "policy.write_roots");
  CHECK(p.check_path("relative/path", path_access::read));
  // A sibling that shares the root's name as a prefix is not inside it.
  std::filesystem::create_directories(d / "share2");
  CHECK(p.check_path(d / "share2/x", path_access::write));
}

TEST_CASE("the [policy] table is read strictly", "[guest]") {
  qg::agent_config c;
  REQUIRE_FALSE(
      qg::apply_agent_config(
          "[policy]\nallow = [\"info\", \"exec\"]\nblock = [\"exec\"]\nexec = false\n"
          "exec_allow = [\"/bin/true\"]\nread_roots = [\"/srv\"]\nwrite_roots = [\"/srv/in\"]\n"
          "max_output_bytes = 1048576\n",
          "agent.toml", c)
          .has_value());
  CHECK(c.agent.policy.allow == std::vector<std::string>{"info", "exec"});
  CHECK_FALSE(c.agent.policy.exec);
  CHECK(c.agent.policy.write_roots == std::vector<std::string>{"/srv/in"});
  CHECK(c.agent.policy.max_output_bytes == 1048576);
  qg::agent_config bad;
  auto err = qg::apply_agent_config("[policy]\nblock = [\"teleport\"]\n", "agent.toml", bad);
  REQUIRE(err);
  CHECK(err->message == "agent.toml:2: 'policy.block' names an unknown operation 'teleport'");
  err = qg::apply_agent_config("[policy]\nread_roots = [\"srv\"]\n", "agent.toml", bad);
  REQUIRE(err);
  CHECK_THAT(err->message,
             Catch::Contains("'policy.read_roots' holds 'srv', which is not an absolute path"));
  err = qg::apply_agent_config("[policy]\nexec = \"no\"\n", "agent.toml", bad);
  REQUIRE(err);
  CHECK_THAT(err->message, Catch::Contains("'policy.exec' must be true or false, not a string"));
}
