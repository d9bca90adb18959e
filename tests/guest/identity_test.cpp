// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/identity.hpp"

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "qxa/guest/platform/programs.hpp"
#include "support/temp_dir.hpp"

using qxa::test::temp_dir;
namespace qg = qxa::guest;

TEST_CASE("a password hash replaces only its user's field", "[unit][guest][identity]") {
  std::string shadow = "root:*:19000:0:99999:7:::\nalice:!:19000:0:99999:7:::\nal:x:1::::::\n";
  CHECK(qg::replace_password_field(shadow, "alice", "$6$salt$hash"));
  CHECK(shadow ==
        "root:*:19000:0:99999:7:::\nalice:$6$salt$hash:19000:0:99999:7:::\nal:x:1::::::\n");
  CHECK(qg::replace_password_field(shadow, "al", "H"));
  CHECK(shadow.ends_with("\nal:H:1::::::\n"));
  CHECK_FALSE(qg::replace_password_field(shadow, "ali", "H"));  // a prefix is not a user
  CHECK_FALSE(qg::replace_password_field(shadow, "bob", "H"));
}

TEST_CASE("authorized keys are matched by type and key, keeping options and comments",
          "[unit][guest][identity]") {
  CHECK(qg::key_identity("ssh-ed25519 AAAAC3 me@host") == "ssh-ed25519 AAAAC3");
  CHECK(qg::key_identity("from=\"10.0.0.1\",no-pty ssh-rsa AAAAB3 x") == "ssh-rsa AAAAB3");
  CHECK(qg::key_identity("ecdsa-sha2-nistp256 AAAAE2") == "ecdsa-sha2-nistp256 AAAAE2");
  CHECK(qg::key_identity("# a comment").empty());
  CHECK(qg::key_identity("not a key").empty());

  std::vector<std::string> lines = {"# managed by hand", "no-pty ssh-rsa AAAAB3 old@host"};
  CHECK(qg::edit_authorized_keys(lines, true, {"ssh-ed25519 AAAAC3 new@host"}) == 1);
  CHECK(qg::edit_authorized_keys(lines, true, {"ssh-rsa AAAAB3 same-key-other-comment"}) == 0);
  CHECK(lines.size() == 3);
  CHECK(qg::edit_authorized_keys(lines, false, {"ssh-rsa AAAAB3"}) == 1);
  CHECK(lines == std::vector<std::string>{"# managed by hand", "ssh-ed25519 AAAAC3 new@host"});
}

TEST_CASE("the power command: systemctl under systemd, else the guest's own command",
          "[unit][guest][identity]") {
  temp_dir dir;
  for (const char* name : {"systemctl", "poweroff", "reboot"}) {
    dir.write(name, "#!/bin/sh\n");
    REQUIRE(::chmod((dir / name).c_str(), 0755) == 0);
  }
  CHECK(qg::power_command("reboot", true, dir.path()) ==
        std::vector<std::string>{dir / "systemctl", "reboot"});
  CHECK(qg::power_command("reboot", false, dir.path()) == std::vector<std::string>{dir / "reboot"});
  CHECK(qg::power_command("halt", false, dir.path()).empty());  // nothing to run it with
  CHECK(qg::power_command("poweroff", true, "/nonexistent:" + dir.path()) ==
        std::vector<std::string>{dir / "systemctl", "poweroff"});
}
