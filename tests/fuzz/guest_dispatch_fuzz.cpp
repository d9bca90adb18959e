// SPDX-License-Identifier: MIT
// Fuzz target: the guest's request dispatch, with the default policy, inside the sandbox of
// sandbox.hpp.
//
// One input is one host connection: a Hello, then the records of fuzz_input.hpp as frames (or
// raw noise) on a socket pair, then the host leaves. The real session reads them through the
// real message stream and runs them through the handler table. The harness reads everything the
// agent writes and checks: every frame it sends decodes as an Envelope, a reply never answers
// a request that was not sent, and the session ends after the host leaves (a request that could
// keep it alive would be a hang, which libFuzzer's -timeout reports).
#include <sys/socket.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <vector>

#include "fuzz_input.hpp"
#include "qxa/common/frame.hpp"
#include "qxa/common/log.hpp"
#include "qxa/guest/core/session.hpp"
#include "qxa/guest/mech/identity.hpp"
#include "qxa/guest/ops/ops.hpp"
#include "sandbox.hpp"

namespace qc = qxa::common;
namespace qg = qxa::guest;
namespace pb = quantix::agent::v1;
using asio::awaitable;
using asio::use_awaitable;

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

constexpr std::uint64_t session_id = 0x5e55105e55105e55;

void add_frame(std::vector<std::uint8_t>& wire, const pb::Envelope& e) {
  const auto bytes = e.SerializeAsString();
  qc::append_frame({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()}, wire);
}

awaitable<void> host_writes(asio::posix::stream_descriptor& out,
                            std::vector<std::vector<std::uint8_t>> pieces) {
  for (const auto& p : pieces) {
    auto [ec, n] = co_await asio::async_write(out, asio::buffer(p),
                                              asio::experimental::as_tuple(use_awaitable));
    if (ec) break;
  }
  // The host leaves: the agent reads end-of-file.
  ::shutdown(out.native_handle(), SHUT_WR);
}

awaitable<void> host_reads(asio::posix::stream_descriptor& in, std::set<std::uint64_t> sent) {
  qc::frame_decoder decoder;
  std::vector<std::uint8_t> buf(64 << 10);
  for (;;) {
    auto [ec, n] =
        co_await in.async_read_some(asio::buffer(buf), asio::experimental::as_tuple(use_awaitable));
    if (ec) break;
    decoder.feed({buf.data(), n});
    for (;;) {
      auto r = decoder.next();
      if (r.status != qc::decode_status::frame) {
        check(r.status == qc::decode_status::need_more, "the agent sent an oversized frame");
        break;
      }
      pb::Envelope e;
      check(e.ParseFromArray(r.payload.data(), static_cast<int>(r.payload.size())),
            "the agent sent a frame that is not an Envelope");
      check(e.reply_to() == 0 || sent.contains(e.reply_to()),
            "the agent answered a request nobody sent");
    }
  }
  check(decoder.stats().garbage_bytes == 0 && decoder.stats().damaged_frames == 0,
        "the agent wrote bytes that are not whole frames");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // ssh-key runs the agent's own program (here: this one) as the ssh-key helper.
  if (*argc == 3 && (*argv)[1] == qg::ssh_keys_helper_argument) {
    std::_Exit(qg::run_ssh_keys_helper((*argv)[2], 0, 1, 2));
  }
  qxa::fuzz::enter_sandbox(qxa::fuzz::libfuzzer_paths(*argc, *argv));
  // Names that are not UTF-8, where listings and errors will meet them: every frame the agent
  // writes must still parse at the host.
  for (const char* name : {"/tmp/\xff\xfe-not-utf8", "/home/alice/caf\xe9", "/tmp/\xc3("}) {
    if (std::FILE* f = std::fopen(name, "w")) std::fclose(f);
  }
  // Every log line is formatted (hostile strings included) and thrown away.
  qc::logger::instance().set_level(qc::log_level::trace);
  qc::logger::instance().set_sink([](qc::log_level, std::string_view) {});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  asio::io_context io;
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  asio::posix::stream_descriptor agent_end(io, fds[0]);
  asio::posix::stream_descriptor host_end(io, fds[1]);

  // What the host sends.
  std::set<std::uint64_t> sent;
  std::vector<std::vector<std::uint8_t>> pieces(1);
  {
    pb::Envelope hello;
    hello.set_request_id(1);
    hello.set_session_id(session_id);
    hello.mutable_hello()->set_session_id(session_id);
    hello.mutable_hello()->set_protocol_version(1);
    add_frame(pieces.back(), hello);
    sent.insert(1);
  }
  std::uint64_t next_id = 2;
  for (const auto& rec : qxa::fuzz::split_records({data, size})) {
    if (rec.flags & qxa::fuzz::raw_bytes) {
      pieces.emplace_back(rec.bytes.begin(), rec.bytes.end());
      continue;
    }
    pb::Envelope e;
    if (!e.ParseFromArray(rec.bytes.data(), static_cast<int>(rec.bytes.size()))) continue;
    if (rec.flags & qxa::fuzz::fix_request_id) e.set_request_id(next_id++);
    if (rec.flags & qxa::fuzz::fix_session) e.set_session_id(session_id);
    sent.insert(e.request_id());
    std::vector<std::uint8_t> frame;
    add_frame(frame, e);
    if (rec.flags & qxa::fuzz::split_writes) {
      for (auto b : frame) pieces.push_back({b});
    } else {
      pieces.push_back(std::move(frame));
    }
  }

  // The agent's side: the state every session shares, with default options.
  qg::agent_state state;
  state.parts = qg::ops::parts();
  state.freeze = std::make_shared<qg::freezer>(io.get_executor(), state.options.freeze);
  state.uploads = std::make_shared<qg::upload_table>();
  state.options.request_timeout = std::chrono::seconds(2);
  // An upgrade stages next to, and swaps, this binary: a path inside the sandbox instead.
  state.options.upgrade.binary = "/usr/sbin/quantix-kvm-agent";
  state.jobs = std::make_shared<qg::job_table>(io.get_executor(), qg::job_limits_of(state.options));
  state.inflight = std::make_shared<qg::inflight_limit>(state.options.max_inflight_requests);
  auto stream = qg::guest_stream::create(std::move(agent_end));
  auto s = std::make_shared<qg::session>(state, stream);
  bool ended = false;
  asio::co_spawn(io, s->run(), [&](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
    ended = true;
    state.jobs->kill_all();  // as the agent does before it exits: detached jobs end with it
    // As the agent does before it exits; the lease would thaw too, but only after a minute.
    if (state.frozen()) {
      asio::co_spawn(
          io, [&]() -> awaitable<void> { (void)co_await state.freeze->thaw("fuzz"); },
          asio::detached);
    }
  });
  asio::co_spawn(io, host_writes(host_end, std::move(pieces)), asio::detached);
  asio::co_spawn(io, host_reads(host_end, std::move(sent)), asio::detached);
  io.run();
  check(ended, "the session did not end after the host left");
  return 0;
}
