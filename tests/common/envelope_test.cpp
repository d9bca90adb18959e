// SPDX-License-Identifier: MIT
#include "qxa/common/envelope.hpp"

#include <catch2/catch.hpp>

namespace qc = qxa::common;
namespace pb = quantix::agent::v1;

TEST_CASE("an envelope survives encoding into a frame and decoding back", "[common]") {
  pb::Envelope e;
  e.set_request_id(7);
  e.set_session_id(0xDEADBEEFCAFEF00DULL);
  auto* t = e.mutable_telemetry();
  t->set_sequence(3);
  t->mutable_memory()->set_total_bytes(256ull << 20);
  auto* nic = t->add_interfaces();
  nic->set_name("eth0");
  auto* addr = nic->add_addresses();
  addr->set_family(pb::IpAddress::FAMILY_IPV6);
  addr->set_address("fe80::1");
  addr->set_prefix_length(64);

  auto frame = qc::encode_envelope(e);
  REQUIRE(frame);
  qc::frame_decoder d;
  d.feed(*frame);
  auto r = d.next();
  REQUIRE(r.status == qc::decode_status::frame);
  pb::Envelope back;
  REQUIRE(qc::decode_envelope(r.payload, back));
  CHECK(back.request_id() == 7);
  CHECK(back.session_id() == 0xDEADBEEFCAFEF00DULL);
  CHECK(back.telemetry().interfaces(0).addresses(0).address() == "fe80::1");
  CHECK(std::string(qc::body_name(back)) == "telemetry");
}

TEST_CASE("an envelope larger than the frame limit is refused before it is queued", "[common]") {
  pb::Envelope e;
  e.mutable_error()->set_message(std::string(2000, 'x'));
  auto frame = qc::encode_envelope(e, 1000);
  REQUIRE_FALSE(frame);
  CHECK(frame.code() == qc::errc::frame_too_large);
}

TEST_CASE("bytes that are not an envelope are reported as such", "[common]") {
  const std::uint8_t junk[] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
  pb::Envelope e;
  CHECK_FALSE(qc::decode_envelope(junk, e));
}
