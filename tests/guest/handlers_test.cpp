// SPDX-License-Identifier: MIT
// Handlers that are safe to run on the test machine, called directly; what would change this
// machine (setting the clock, the hostname, a password, powering off) is tested in the VM.
#include <catch2/catch.hpp>

#include "guest/ops_test_support.hpp"
#include "qxa/guest/platform/clock.hpp"

using namespace std::chrono_literals;
namespace pb = quantix::agent::v1;
namespace ops = qxa::guest::ops;
using qxa::test::call_handler;

TEST_CASE("time reads the guest clock without setting it", "[unit][guest]") {
  pb::Envelope t;
  t.mutable_time_request();
  const auto before = std::chrono::system_clock::now();
  auto r = call_handler(&ops::time, t);
  const auto after = std::chrono::system_clock::now();
  REQUIRE(r.has_time_reply());
  CHECK_FALSE(r.time_reply().was_set());
  const auto ns = std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(
          std::chrono::nanoseconds(r.time_reply().unix_ns())));
  CHECK(ns >= before - 1ms);
  CHECK(ns <= after + 1ms);
  // The zone this machine is in, as the C library and /etc say.
  const auto tz = qxa::guest::read_timezone();
  CHECK(r.time_reply().timezone() == tz.name);
  CHECK(r.time_reply().utc_offset_seconds() == tz.utc_offset_seconds);
  CHECK_FALSE(r.time_reply().timezone().empty());
}

TEST_CASE("operations answer bad input with a clear error, touching nothing", "[unit][guest]") {
  pb::Envelope h;
  h.mutable_hostname_request()->set_name("bad_name!");
  auto r = call_handler(&ops::hostname, h);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);

  pb::Envelope p;
  p.mutable_power_request();  // no action
  r = call_handler(&ops::power, p);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);

  pb::Envelope pw;
  pw.mutable_password_request()->set_user("-rf");
  pw.mutable_password_request()->set_password("x");
  r = call_handler(&ops::password, pw);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
  pw.mutable_password_request()->set_user("no-such-user-anywhere");
  r = call_handler(&ops::password, pw);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_NOT_FOUND);
  pw.mutable_password_request()->set_user("root");
  pw.mutable_password_request()->set_password("two\nlines");
  r = call_handler(&ops::password, pw);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
  // A NUL would cut the password short where crypt(3) and chpasswd read it: refused, not
  // silently shortened.
  pw.mutable_password_request()->set_password(std::string("secret\0rest", 11));
  r = call_handler(&ops::password, pw);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
  CHECK_THAT(r.error().message(), Catch::Contains("NUL"));

  pb::Envelope k;
  k.mutable_ssh_keys_request()->set_user("root");
  k.mutable_ssh_keys_request()->set_action(pb::SshKeysRequest::ACTION_ADD);
  k.mutable_ssh_keys_request()->add_keys("not a key");
  r = call_handler(&ops::ssh_keys, k);
  REQUIRE(r.has_error());
  CHECK(r.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);

  pb::Envelope s;
  s.mutable_freeze_status_request();
  r = call_handler(&ops::freeze_status, s);
  REQUIRE(r.has_freeze_status());
  CHECK_FALSE(r.freeze_status().frozen());
  pb::Envelope th;
  th.mutable_thaw_request();
  r = call_handler(&ops::thaw, th);  // nothing frozen: nothing to do
  REQUIRE(r.has_freeze_status());
  CHECK_FALSE(r.freeze_status().frozen());
}
