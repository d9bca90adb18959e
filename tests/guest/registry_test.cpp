// SPDX-License-Identifier: MIT
// The agent's operations checked against the schema: every body of Envelope's oneof (the list
// the build derives from agent.proto) that the host sends is answered, by the session itself or
// by exactly one operation of the registry, and no reply is ever taken as a request.
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <string_view>

#include "qxa/guest/core/operation.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;

namespace {

struct body {
  std::string_view name;
  pb::Envelope::BodyCase body_case;
};

constexpr body schema_bodies[] = {
#define QXA_ENVELOPE_BODY(field, Case, Type, number) {#field, pb::Envelope::k##Case},
#include "quantix/agent/v1/envelope_bodies.inc"
#undef QXA_ENVELOPE_BODY
};

// What the host sends: requests, and the three messages of an upload.
bool host_sends(std::string_view name) {
  return name.ends_with("_request") || name == "hello" || name == "ping" ||
         name == "stream_credit" || name == "file_write_open" || name == "file_write_chunk" ||
         name == "file_write_close";
}

// Answered by the session before any operation (request_gate.cpp). A ping is an operation (the
// policy may block it), which the gate answers at once.
bool session_answers(std::string_view name) {
  return name == "hello" || name == "cancel_request" || name == "stream_credit";
}

}  // namespace

TEST_CASE(
    "every request of the schema is answered by the session or by one operation of the "
    "registry, and no reply is an operation's",
    "[guest][schema]") {
  const auto table = qg::ops::table();
  REQUIRE(std::size(schema_bodies) > 60);
  std::set<std::string_view> names;
  for (const auto& b : schema_bodies) {
    INFO(b.name);
    CHECK(names.insert(b.name).second);
    const auto* op = qg::find_operation(table, b.body_case);
    if (!host_sends(b.name)) {
      CHECK(op == nullptr);
    } else if (session_answers(b.name)) {
      CHECK(op == nullptr);
    } else {
      REQUIRE(op != nullptr);
      int answering = 0;
      for (const auto& o : table) answering += o.request == b.body_case ? 1 : 0;
      CHECK(answering == 1);
    }
  }
  // And every operation answers a body of the schema.
  for (const auto& o : table) {
    INFO(o.name);
    bool known = false;
    for (const auto& b : schema_bodies) known = known || b.body_case == o.request;
    CHECK(known);
  }
}
