// SPDX-License-Identifier: MIT
// The time zone, the hardware clock's setting and the login records (clock.hpp), and the users
// handler over a utmp file written here.
#include "qxa/guest/platform/clock.hpp"

#include <unistd.h>
#include <utmpx.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "guest/ops_test_support.hpp"
#include "support/temp_dir.hpp"

using qxa::test::temp_dir;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;

namespace {

std::string record(short type, const char* user, const char* line, const char* host,
                   std::int64_t login_s, pid_t pid) {
  utmpx u{};
  u.ut_type = type;
  u.ut_pid = pid;
  std::strncpy(u.ut_user, user, sizeof u.ut_user);
  std::strncpy(u.ut_line, line, sizeof u.ut_line);
  std::strncpy(u.ut_host, host, sizeof u.ut_host);
  u.ut_tv.tv_sec = static_cast<std::int32_t>(login_s);
  u.ut_tv.tv_usec = 250'000;
  return std::string(reinterpret_cast<const char*>(&u), sizeof u);
}

}  // namespace

TEST_CASE("the time zone's name comes from /etc/localtime's target, else /etc/timezone",
          "[unit][guest]") {
  CHECK(qg::timezone_name("/usr/share/zoneinfo/Europe/Paris", "") == "Europe/Paris");
  CHECK(qg::timezone_name("../usr/share/zoneinfo/posix/Asia/Kolkata", "x") == "Asia/Kolkata");
  CHECK(qg::timezone_name("", "America/New_York\n") == "America/New_York");
  CHECK(qg::timezone_name("/etc/some-file", "Etc/UTC \r\nmore\n") == "Etc/UTC");
  CHECK(qg::timezone_name("", "") == "");
}

TEST_CASE("the hardware clock keeps UTC unless /etc/adjtime says LOCAL", "[unit][guest]") {
  CHECK(qg::hardware_clock_is_local("0.0 0 0.0\n0\nLOCAL\n"));
  CHECK_FALSE(qg::hardware_clock_is_local("0.0 0 0.0\n0\nUTC\n"));
  CHECK_FALSE(qg::hardware_clock_is_local("0.0 0 0.0\n"));
  CHECK_FALSE(qg::hardware_clock_is_local(""));
  // Where there is none, or it is not a clock, the reason comes back.
  temp_dir dir;
  CHECK(qg::write_hardware_clock(dir / "rtc0", 1'700'000'000, false) ==
        std::optional<std::string>("no hardware clock"));
  const auto not_a_clock = qg::write_hardware_clock("/dev/null", 1'700'000'000, false);
  REQUIRE(not_a_clock);
  CHECK_THAT(*not_a_clock, Catch::StartsWith("/dev/null: "));
}

TEST_CASE("utmp: the login sessions, oldest first, capped, without other records",
          "[unit][guest]") {
  std::string bytes = record(BOOT_TIME, "reboot", "~", "6.1.0", 1000, 0) +
                      record(USER_PROCESS, "alice", "pts/0", "10.0.0.7", 3000, 42) +
                      record(DEAD_PROCESS, "", "pts/1", "", 2500, 43) +
                      record(USER_PROCESS, "bob", "tty1", "", 2000, 44) +
                      record(LOGIN_PROCESS, "LOGIN", "tty2", "", 1500, 45);
  auto sessions = qg::parse_utmp(bytes + "partial record");
  REQUIRE(sessions.size() == 2);
  CHECK(sessions[0].user == "bob");
  CHECK(sessions[0].terminal == "tty1");
  CHECK(sessions[0].host.empty());
  CHECK(sessions[0].login_unix_ms == 2'000'250);
  CHECK(sessions[1].user == "alice");
  CHECK(sessions[1].host == "10.0.0.7");
  CHECK(sessions[1].pid == 42);
  CHECK(qg::parse_utmp(bytes, 1).size() == 1);
  // A user name that fills its field has no NUL: it ends at the field's end.
  const std::string long_name(sizeof(utmpx{}.ut_user), 'x');
  sessions = qg::parse_utmp(record(USER_PROCESS, long_name.c_str(), "pts/3", "", 1, 1));
  REQUIRE(sessions.size() == 1);
  CHECK(sessions[0].user == long_name);
}

TEST_CASE("the users handler reports the sessions whose login process still runs",
          "[unit][guest]") {
  temp_dir dir;
  const auto utmp =
      dir.write("utmp", record(USER_PROCESS, "alice", "pts/0", "host.example", 5000, ::getpid()) +
                            record(USER_PROCESS, "ghost", "pts/9", "", 4000, 0x3ffffff0));
  qg::agent_options o;
  o.utmp_path = utmp;
  pb::Envelope request;
  request.mutable_users_request();
  auto reply = qxa::test::call_handler(&qg::ops::users, request, o);
  REQUIRE(reply.has_users_reply());
  REQUIRE(reply.users_reply().sessions_size() == 1);  // the ghost's process is gone
  const auto& s = reply.users_reply().sessions(0);
  CHECK(s.user() == "alice");
  CHECK(s.terminal() == "pts/0");
  CHECK(s.host() == "host.example");
  CHECK(s.login_unix_ms() == 5'000'250);
  CHECK(s.pid() == static_cast<std::uint32_t>(::getpid()));

  o.utmp_path = dir / "none";  // no utmp at all: nobody logged in
  reply = qxa::test::call_handler(&qg::ops::users, request, o);
  REQUIRE(reply.has_users_reply());
  CHECK(reply.users_reply().sessions_size() == 0);
}
