// SPDX-License-Identifier: MIT
// The JSON views of protocol messages: protobuf's printer, with numbers as numbers and enums by
// short name.
#include "qxa/host/json.hpp"

#include <catch2/catch.hpp>

#include "quantix/agent/v1/control.pb.h"

namespace pb = quantix::agent::v1;
using qxa::host::to_json;

TEST_CASE("a message's JSON: names as in the .proto, 64-bit numbers as numbers, every field",
          "[host][json]") {
  pb::VmStatus s;
  s.set_vm("web1");
  s.set_state(pb::VM_STATE_STALE_SOCKET);
  s.set_reconnects(9'223'372'036'854'775'809ULL);  // past int64
  s.set_not_ready_since_unix_ms(-5);
  s.set_rtt_ms(0.25);
  s.add_ip_addresses("192.0.2.10/24");
  auto* i = s.mutable_last_telemetry()->add_interfaces();
  i->add_addresses()->set_family(pb::IpAddress::FAMILY_IPV6);
  i->add_addresses()->set_family(static_cast<pb::IpAddress::Family>(99));  // unnamed

  const auto j = to_json(s);
  CHECK(j["vm"] == "web1");
  CHECK(j["state"] == "stale-socket");
  REQUIRE(j["reconnects"].is_number_unsigned());
  CHECK(j["reconnects"].get<std::uint64_t>() == 9'223'372'036'854'775'809ULL);
  REQUIRE(j["not_ready_since_unix_ms"].is_number_integer());
  CHECK(j["not_ready_since_unix_ms"].get<std::int64_t>() == -5);
  CHECK(j["rtt_ms"].get<double>() == 0.25);
  CHECK(j["timeouts"] == 0);     // unset, still there
  CHECK(j["last_error"] == "");  // likewise
  CHECK(j["ip_addresses"] == nlohmann::ordered_json::array({"192.0.2.10/24"}));
  const auto& addresses = j["last_telemetry"]["interfaces"][0]["addresses"];
  CHECK(addresses[0]["family"] == "ipv6");
  CHECK(addresses[1]["family"] == 99);
  CHECK(j["last_telemetry"]["sequence"] == 0);
}

TEST_CASE("a string from a guest comes out as JSON text, whatever it holds", "[host][json]") {
  pb::Info info;
  info.set_hostname("a\"b\\c\x1b]0;title\x07\n");
  info.add_capabilities("ping");
  const auto text = to_json(info).dump();
  CHECK(text.find('\x1b') == std::string::npos);  // escaped, never raw
  CHECK(nlohmann::json::parse(text)["hostname"] == "a\"b\\c\x1b]0;title\x07\n");
}
