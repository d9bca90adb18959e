// SPDX-License-Identifier: MIT
// The host client's dispatch rules, driven without sockets.
#include "qxa/host/client_dispatch.hpp"

#include <catch2/catch.hpp>
#include <set>
#include <variant>

namespace pb = quantix::agent::v1;
using qxa::host::client_dispatch;

namespace {

constexpr std::uint64_t our_session = 0x5e55;
constexpr std::uint64_t hello_id = 1;

struct calls {
  std::set<std::uint64_t> ids;
  client_dispatch::is_pending_fn fn() {
    return [this](std::uint64_t id) { return ids.contains(id); };
  }
};

pb::Envelope reply(std::uint64_t to, std::uint64_t in_session, bool more = false) {
  pb::Envelope e;
  e.set_reply_to(to);
  e.set_session_id(in_session);
  e.set_more(more);
  e.mutable_pong();
  return e;
}

pb::Envelope hello_ack(std::uint64_t to, std::uint64_t for_session) {
  pb::Envelope e;
  e.set_reply_to(to);
  e.set_session_id(for_session);
  e.mutable_hello_ack()->set_session_id(for_session);
  e.mutable_hello_ack()->set_agent_pid(77);
  return e;
}

pb::Envelope agent_ready() {
  pb::Envelope e;
  e.mutable_agent_ready()->set_agent_pid(78);
  return e;
}

pb::Envelope telemetry() {
  pb::Envelope e;
  e.mutable_telemetry()->set_sequence(3);
  return e;
}

template <typename A>
bool is(const client_dispatch::action& a) {
  return std::holds_alternative<A>(a);
}

// A dispatch whose handshake is complete, with the Hello answered.
client_dispatch ready_dispatch(calls& pending) {
  client_dispatch d;
  d.hello_sent(hello_id, our_session);
  pending.ids.insert(hello_id);
  REQUIRE(
      is<client_dispatch::deliver>(d.on_envelope(hello_ack(hello_id, our_session), pending.fn())));
  pending.ids.erase(hello_id);
  REQUIRE(d.ready());
  return d;
}

}  // namespace

TEST_CASE("client dispatch: before the HelloAck only the answer to our Hello counts", "[host]") {
  calls pending;
  client_dispatch d;
  d.hello_sent(hello_id, our_session);
  pending.ids.insert(hello_id);
  CHECK(is<client_dispatch::ignore>(d.on_envelope(reply(5, our_session), pending.fn())));
  CHECK(is<client_dispatch::ignore>(d.on_envelope(telemetry(), pending.fn())));
  // The agent reopened its port: our Hello may be lost, say it again.
  CHECK(is<client_dispatch::repeat_hello>(d.on_envelope(agent_ready(), pending.fn())));
  // A HelloAck for another session answers the Hello without completing the handshake.
  auto other = d.on_envelope(hello_ack(hello_id, 0x0bad), pending.fn());
  REQUIRE(is<client_dispatch::deliver>(other));
  CHECK_FALSE(d.ready());
  auto ours = d.on_envelope(hello_ack(hello_id, our_session), pending.fn());
  REQUIRE(is<client_dispatch::deliver>(ours));
  CHECK(std::get<client_dispatch::deliver>(ours).id == hello_id);
  CHECK(d.ready());
  CHECK(d.session() == our_session);
  CHECK(d.hello().agent_pid() == 77);
  CHECK(d.sessions() == 1);
}

TEST_CASE("client dispatch: a second answer to a repeated Hello is not an unknown reply",
          "[host]") {
  calls pending;
  auto d = ready_dispatch(pending);
  CHECK(is<client_dispatch::ignore>(d.on_envelope(hello_ack(hello_id, our_session), pending.fn())));
  CHECK(d.sessions() == 1);
}

TEST_CASE("client dispatch: replies reach pending calls of this session, partial ones first",
          "[host]") {
  calls pending;
  auto d = ready_dispatch(pending);
  pending.ids = {2, 3};
  auto partial = d.on_envelope(reply(2, our_session, true), pending.fn());
  REQUIRE(is<client_dispatch::deliver>(partial));
  CHECK(std::get<client_dispatch::deliver>(partial).partial);
  auto final_reply = d.on_envelope(reply(2, our_session), pending.fn());
  REQUIRE(is<client_dispatch::deliver>(final_reply));
  CHECK_FALSE(std::get<client_dispatch::deliver>(final_reply).partial);
  // A reply to an id never sent, to one whose caller has gone, or from an earlier session.
  CHECK(is<client_dispatch::unknown>(d.on_envelope(reply(9, our_session), pending.fn())));
  pending.ids.erase(2);
  CHECK(is<client_dispatch::unknown>(d.on_envelope(reply(2, our_session), pending.fn())));
  CHECK(is<client_dispatch::unknown>(d.on_envelope(reply(3, 0x01d), pending.fn())));
  CHECK(is<client_dispatch::event>(d.on_envelope(telemetry(), pending.fn())));
}

TEST_CASE("client dispatch: an AgentReady after the handshake means the agent restarted",
          "[host]") {
  calls pending;
  auto d = ready_dispatch(pending);
  CHECK(is<client_dispatch::agent_restarted>(d.on_envelope(agent_ready(), pending.fn())));
  CHECK_FALSE(d.ready());
  // Until the new handshake completes, replies of the old session are not delivered.
  pending.ids = {4};
  CHECK(is<client_dispatch::ignore>(d.on_envelope(reply(4, our_session), pending.fn())));
  d.hello_sent(5, 0xfeed);
  pending.ids = {5};
  REQUIRE(is<client_dispatch::deliver>(d.on_envelope(hello_ack(5, 0xfeed), pending.fn())));
  CHECK(d.session() == 0xfeed);
  CHECK(d.sessions() == 2);
}

TEST_CASE("client dispatch: an undecodable reply fails only a pending call it can name", "[host]") {
  calls pending;
  auto d = ready_dispatch(pending);
  pending.ids = {6};
  pb::EnvelopeHeader h;
  h.set_reply_to(6);
  h.set_session_id(our_session);
  CHECK(d.on_undecodable(h, pending.fn()) == 6);
  h.set_session_id(0x01d);
  CHECK(d.on_undecodable(h, pending.fn()) == 0);
  h.set_session_id(our_session);
  h.set_reply_to(7);
  CHECK(d.on_undecodable(h, pending.fn()) == 0);
  h.set_reply_to(0);
  CHECK(d.on_undecodable(h, pending.fn()) == 0);
}
