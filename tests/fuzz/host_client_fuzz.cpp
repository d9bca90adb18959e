// SPDX-License-Identifier: MIT
// Fuzz target: how the host client (qxa::host::agent_client) handles what a guest sends. The
// guest is untrusted: whatever it writes, the client must not crash, must finish every request
// exactly once (a reply, or an error when the connection ends) and must end up disconnected
// with nothing pending once the guest has gone.
//
// One input is one connection. The harness plays the guest: it answers the Hello, waits for the
// client's three requests (a ping, an info, an exec with partial replies), then writes the
// records of fuzz_input.hpp (fix_request_id turns a record into an answer to one of the pending
// requests, picked by the record's high bits) and leaves.
#include <sys/socket.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/write.hpp>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "fuzz_input.hpp"
#include "qxa/common/frame.hpp"
#include "qxa/common/log.hpp"
#include "qxa/host/agent_client.hpp"

namespace qc = qxa::common;
namespace qh = qxa::host;
namespace pb = quantix::agent::v1;
using asio::awaitable;
using asio::use_awaitable;
using asio::experimental::as_tuple;
using unix_socket = asio::local::stream_protocol::socket;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

std::string socket_path;

void add_frame(std::vector<std::uint8_t>& wire, const pb::Envelope& e) {
  const auto bytes = e.SerializeAsString();
  qc::append_frame({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}, wire);
}

/// Reads frames from the client until `want` envelopes arrived; false if it went away first.
awaitable<bool> read_envelopes(unix_socket& s, qc::frame_decoder& d, std::vector<pb::Envelope>& got,
                               std::size_t want) {
  std::vector<std::uint8_t> buf(4096);
  while (got.size() < want) {
    for (;;) {
      auto r = d.next();
      if (r.status != qc::decode_status::frame) break;
      pb::Envelope e;
      check(e.ParseFromArray(r.payload.data(), static_cast<int>(r.payload.size())),
            "the client sent a frame that is not an Envelope");
      got.push_back(std::move(e));
    }
    if (got.size() >= want) break;
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), as_tuple(use_awaitable));
    if (ec) co_return false;
    d.feed({buf.data(), n});
  }
  co_return true;
}

awaitable<void> guest(asio::local::stream_protocol::acceptor& acceptor,
                      std::vector<qxa::fuzz::record> records) {
  auto [aec, s] = co_await acceptor.async_accept(as_tuple(use_awaitable));
  acceptor.close();
  if (aec) co_return;
  qc::frame_decoder d;
  std::vector<pb::Envelope> got;
  if (!co_await read_envelopes(s, d, got, 1) || !got[0].has_hello()) co_return;
  const std::uint64_t session = got[0].session_id();
  {
    pb::Envelope ack;
    ack.set_reply_to(got[0].request_id());
    ack.set_session_id(session);
    ack.mutable_hello_ack()->set_session_id(session);
    ack.mutable_hello_ack()->set_protocol_version(1);
    std::vector<std::uint8_t> wire;
    add_frame(wire, ack);
    co_await asio::async_write(s, asio::buffer(wire), as_tuple(use_awaitable));
  }
  // The three requests.
  if (!co_await read_envelopes(s, d, got, 4)) co_return;
  for (const auto& rec : records) {
    std::vector<std::uint8_t> wire;
    if (rec.flags & qxa::fuzz::raw_bytes) {
      wire.assign(rec.bytes.begin(), rec.bytes.end());
    } else {
      pb::Envelope e;
      if (!e.ParseFromArray(rec.bytes.data(), static_cast<int>(rec.bytes.size()))) continue;
      if (rec.flags & qxa::fuzz::fix_request_id) {
        e.set_reply_to(got[1 + (rec.flags >> 4) % 3].request_id());
        e.set_request_id(0);
      }
      if (rec.flags & qxa::fuzz::fix_session) e.set_session_id(session);
      add_frame(wire, e);
    }
    std::error_code ec;
    if (rec.flags & qxa::fuzz::split_writes) {
      for (auto b : wire) {
        std::tie(ec, std::ignore) =
            co_await asio::async_write(s, asio::buffer(&b, 1), as_tuple(use_awaitable));
        if (ec) break;
      }
    } else {
      std::tie(ec, std::ignore) =
          co_await asio::async_write(s, asio::buffer(wire), as_tuple(use_awaitable));
    }
    if (ec) break;  // the client closed: it may, for a guest this bad
  }
  // The guest goes away.
}

struct call_result {
  int completions = 0;
  bool ok = false;
};

awaitable<void> call(std::shared_ptr<qh::agent_client> client, pb::Envelope request,
                     call_result& out) {
  qh::call_options o;
  o.on_progress = [](const pb::Envelope& e) {
    check(e.more(), "a final reply passed as progress");
  };
  auto r = co_await client->request(std::move(request), std::move(o));
  ++out.completions;
  out.ok = r.has_value();
}

awaitable<void> host(std::shared_ptr<qh::agent_client> client, std::vector<call_result>& results,
                     bool& connected) {
  auto ec = co_await client->connect();
  connected = !ec;
  if (ec) co_return;
  auto ex = co_await asio::this_coro::executor;
  pb::Envelope ping, info, exec;
  ping.mutable_ping()->set_nonce(7);
  info.mutable_info_request();
  exec.mutable_exec_request()->add_argv("/bin/true");
  asio::co_spawn(ex, call(client, ping, results[0]), asio::detached);
  asio::co_spawn(ex, call(client, info, results[1]), asio::detached);
  asio::co_spawn(ex, call(client, exec, results[2]), asio::detached);
  // The events, until the connection ends.
  while (co_await client->next_event()) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/qxa-fuzz-host-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) std::abort();
  socket_path = std::string(tmpl) + "/guest.sock";
  std::atexit(
      [] { std::filesystem::remove_all(std::filesystem::path(socket_path).parent_path()); });
  qc::logger::instance().set_level(qc::log_level::trace);
  qc::logger::instance().set_sink([](qc::log_level, std::string_view) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  asio::io_context io;
  ::unlink(socket_path.c_str());
  asio::local::stream_protocol::acceptor acceptor(
      io, asio::local::stream_protocol::endpoint(socket_path));
  qh::client_options o;
  o.request_timeout = std::chrono::seconds(5);
  o.handshake_timeout = std::chrono::seconds(5);
  o.max_frame_size = 1u << 16;
  o.max_garbage_bytes = 4096;
  auto client = qh::agent_client::create(io.get_executor(), socket_path, o);
  std::vector<call_result> results(3);
  bool connected = false;
  asio::co_spawn(io, guest(acceptor, qxa::fuzz::split_records({data, size})), asio::detached);
  asio::co_spawn(io, host(client, results, connected), asio::detached);
  io.run();
  check(connected, "the handshake failed");
  for (const auto& r : results) check(r.completions == 1, "a request did not finish exactly once");
  check(!client->is_connected(), "connected after the guest left");
  check(client->pending() == 0, "requests still pending after the guest left");
  return 0;
}
