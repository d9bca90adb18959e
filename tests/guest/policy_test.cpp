// SPDX-License-Identifier: MIT

#include "qxa/guest/core/policy.hpp"

#include <catch2/catch.hpp>
#include <filesystem>

#include "qxa/guest/core/config.hpp"
#include "qxa/guest/ops/ops.hpp"
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

TEST_CASE("file-write in a list stands for mkdir, rm and mv as well", "[guest]") {
  qg::local_policy blocked;
  blocked.block = {"file-write"};
  for (const char* change : {"file-write", "file-mkdir", "file-remove", "file-move"}) {
    INFO(change);
    auto no = blocked.check_operation(change);
    REQUIRE(no);
    CHECK(no->rule == "policy.block");
  }
  CHECK_FALSE(blocked.check_operation("file-read"));
  qg::local_policy allowed;
  allowed.allow = {"file-write"};
  CHECK_FALSE(allowed.check_operation("file-remove"));
  CHECK(allowed.check_operation("file-read"));
  // Each one alone, too.
  qg::local_policy no_rm;
  no_rm.block = {"file-remove"};
  CHECK(no_rm.check_operation("file-remove"));
  CHECK_FALSE(no_rm.check_operation("file-write"));
  CHECK_FALSE(no_rm.check_operation("file-move"));
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

TEST_CASE("a path is under a root by its components, and '.' and '..' are refused", "[guest]") {
  temp_dir d;
  std::filesystem::create_directories(d / "share/sub");
  std::filesystem::create_directories(d / "real");
  std::filesystem::create_symlink(d / "real", d / "alias");
  qg::local_policy p;
  p.read_roots = {d / "share", d / "share/sub/", d / "alias"};
  p.write_roots = {d / "share"};
  qg::local_policy::located at;
  CHECK_FALSE(p.locate(d / "share/ok.txt", path_access::read, at));
  CHECK(at.root == d / "share");
  CHECK(at.relative == "ok.txt");
  CHECK_FALSE(p.locate(d / "share/sub/deeper/x", path_access::read, at));  // the longest root
  CHECK(at.root == d / "share/sub");
  CHECK(at.relative == "deeper/x");
  CHECK_FALSE(p.locate(d / "share", path_access::read, at));
  CHECK(at.relative.empty());
  // A root that is a link matches by its real path too; what is below it is walked later,
  // without following links (fs.hpp).
  CHECK_FALSE(p.locate(d / "real/file", path_access::read, at));
  CHECK(at.root == d / "real");
  CHECK_FALSE(p.check_path(d / "alias/file", path_access::read));
  CHECK_FALSE(p.check_path(d / "share/sub/deeper/new.txt", path_access::write));
  auto dots = p.check_path(d / "share/../secret/key", path_access::read);
  REQUIRE(dots);
  CHECK(dots->rule == "policy.read_roots");
  CHECK_THAT(dots->message, Catch::Contains("'.' or '..'"));
  CHECK(p.check_path(d / "share/sub/../../secret/new", path_access::write)->rule ==
        "policy.write_roots");
  CHECK(p.check_path(d / "real/x", path_access::write)->rule == "policy.write_roots");
  CHECK(p.check_path("relative/path", path_access::read));
  // A sibling that shares the root's name as a prefix is not inside it.
  std::filesystem::create_directories(d / "share2");
  CHECK(p.check_path(d / "share2/x", path_access::write));
}

TEST_CASE("under exec_allow only listed variables are set, and dangerous ones never", "[guest]") {
  qg::local_policy open;
  CHECK_FALSE(open.check_env("LD_PRELOAD"));  // any program may run anyway
  qg::local_policy p;
  p.exec_allow = {"/usr/bin/backup"};
  p.exec_env_allow = {"BACKUP_TARGET"};
  CHECK_FALSE(p.check_env("BACKUP_TARGET"));
  auto other = p.check_env("COLOR");
  REQUIRE(other);
  CHECK(other->rule == "policy.exec_env_allow");
  CHECK_THAT(other->message, Catch::Contains("'COLOR'"));
  for (const char* name : {"LD_PRELOAD",   "LD_LIBRARY_PATH",
                           "LD_AUDIT",     "BASH_FUNC_ls%%",
                           "BASH_ENV",     "ENV",
                           "PATH",         "PERL5OPT",
                           "PERL5LIB",     "PYTHONSTARTUP",
                           "PYTHONPATH",   "RUBYOPT",
                           "NODE_OPTIONS", "GLIBC_TUNABLES",
                           "GCONV_PATH",   "IFS",
                           "SHELLOPTS",    "GIT_SSH_COMMAND",
                           "HOME",         "JAVA_TOOL_OPTIONS",
                           "myfunc%%"}) {
    INFO(name);
    auto no = p.check_env(name);
    REQUIRE(no);
    CHECK(no->rule == "policy.exec_allow");
    CHECK_THAT(no->message, Catch::Contains(std::string("'") + name + "'"));
  }
  qg::agent_config c;
  auto err = qg::apply_agent_config("[policy]\nexec_env_allow = [\"LANG\", \"LD_PRELOAD\"]\n",
                                    "agent.toml", c);
  REQUIRE(err);
  CHECK_THAT(err->message, Catch::Contains("'policy.exec_env_allow' holds 'LD_PRELOAD', which is "
                                           "never allowed"));
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
  // The names are checked against the operations the agent runs (main.cpp gives its table).
  qg::agent_config bad;
  bad.operations = qg::ops::table();
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

TEST_CASE(
    "a policy confines roads, not names, so with exec confined in any way upgrade is off and "
    "files are written only under listed roots, never into the agent's own paths",
    "[guest][policy]") {
  const auto confine = [](const char* how) {
    qg::local_policy p;
    if (std::string_view(how) == "off") p.exec = false;
    if (std::string_view(how) == "blocked") p.block = {"exec"};
    if (std::string_view(how) == "not allowed") p.allow = {"file-write", "upgrade", "info"};
    if (std::string_view(how) == "exec_allow") p.exec_allow = {"/usr/bin/uptime"};
    p.protected_paths = {"/etc/quantix-kvm", "/usr/sbin/quantix-kvm-agent"};
    return p;
  };
  for (const char* how : {"off", "blocked", "not allowed", "exec_allow"}) {
    INFO("exec " << how);
    auto p = confine(how);
    REQUIRE(p.exec_confined_by());
    // The host's binary would run as root: not without policy.upgrade = true.
    CHECK_FALSE(p.upgrades_allowed());
    auto no = p.check_operation("upgrade");
    REQUIRE(no);
    CHECK(no->rule == "policy.upgrade");
    CHECK_THAT(no->message, Catch::Contains("exec is confined"));
    // The default write root "/" holds cron, units and the agent's hooks: no longer there.
    no = p.check_path("/etc/cron.d/job", path_access::write);
    REQUIRE(no);
    CHECK(no->rule == "policy.write_roots");
    CHECK_THAT(no->message, Catch::Contains("lists none"));
    CHECK_FALSE(p.check_path("/etc/cron.d/job", path_access::read));  // reading is no road
    // Roots the administrator lists hold, but never reach the agent's own paths.
    p.write_roots = {"/srv", "/etc"};
    p.write_roots_listed = true;
    CHECK_FALSE(p.check_path("/srv/data/file", path_access::write));
    for (const char* own : {"/etc/quantix-kvm", "/etc/quantix-kvm/freeze-hook.d/10-evil",
                            "/etc/quantix-kvm/agent.toml"}) {
      INFO(own);
      no = p.check_path(own, path_access::write);
      REQUIRE(no);
      CHECK(no->rule == "policy.exec");
    }
    CHECK_FALSE(p.check_path("/etc/quantix-kvm-other/file", path_access::write));
    // An explicit policy.upgrade = true is the administrator's choice.
    p.upgrade = true;
    CHECK_FALSE(p.check_operation("upgrade"));
  }
  // Exec open: every road is open, as before.
  qg::local_policy open;
  open.protected_paths = {"/etc/quantix-kvm"};
  CHECK_FALSE(open.exec_confined_by());
  CHECK(open.upgrades_allowed());
  CHECK_FALSE(open.check_path("/etc/quantix-kvm/freeze-hook.d/10-hook", path_access::write));
}
