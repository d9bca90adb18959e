// SPDX-License-Identifier: MIT
// The qemu-guest-agent port's driver: bytes from the port through the splitter, each command
// run to its end before the next is read (answers keep the order of the commands, which is all
// a qemu-ga client has to match them), each answer written within the write timeout.
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "qxa/common/log.hpp"
#include "qxa/guest/core/agent.hpp"
#include "qxa/guest/qga/qga.hpp"

namespace qxa::guest::qga {

using namespace asio::experimental::awaitable_operators;

namespace {

// The answer to one piece of input, as the line to send.
asio::awaitable<std::string> respond(context& ctx, splitter::piece piece) {
  if (piece.type == splitter::piece::kind::error) {
    co_return format_answer(answer::generic(std::move(piece.text)), nullptr);
  }
  auto parsed = parse_command(piece.text);
  if (auto* refused = std::get_if<answer>(&parsed)) co_return format_answer(*refused, nullptr);
  const auto& call = std::get<command_call>(parsed);
  answer a;
  try {
    a = co_await run_command(ctx, call);
  } catch (const std::exception& e) {
    common::log_error("qemu-ga command {} failed inside the agent: {}", call.name, e.what());
    a = answer::generic(call.name + " failed inside the agent: " + e.what());
  }
  common::log_debug("qemu-ga command {}: {}", call.name, a.failed() ? a.desc : "ok");
  co_return format_answer(a, &call, call.name == "guest-sync-delimited" && !a.failed());
}

// Serves one client until it goes away or stops reading.
asio::awaitable<void> serve_client(context& ctx, port_stream stream, const options& o) {
  splitter split(o.max_command_bytes);
  std::vector<splitter::piece> pieces;
  std::vector<char> buffer(64u << 10);
  std::uint64_t answered = 0;
  asio::steady_timer deadline(stream.get_executor());
  const char* why = "the client went away";
  for (;;) {
    auto [ec, n] = co_await stream.async_read_some(
        asio::buffer(buffer), asio::experimental::as_tuple(asio::use_awaitable));
    if (ec || n == 0) break;
    pieces.clear();
    split.feed({buffer.data(), n}, pieces);
    bool stuck = false;
    for (auto& piece : pieces) {
      const auto line = co_await respond(ctx, std::move(piece));
      if (line.empty()) continue;
      deadline.expires_after(ctx.state.options.write_timeout);
      auto written =
          co_await (asio::async_write(stream, asio::buffer(line),
                                      asio::experimental::as_tuple(asio::use_awaitable)) ||
                    deadline.async_wait(asio::use_awaitable));
      if (written.index() == 1 || std::get<0>(std::get<0>(written))) {
        why = written.index() == 1 ? "an answer was not taken within the write timeout"
                                   : "an answer could not be written";
        stuck = true;
        break;
      }
      ++answered;
    }
    if (stuck) break;
  }
  common::log_info("qemu-ga port: client ended ({}); {} answers sent", why, answered);
  std::error_code ignored;
  stream.close(ignored);
}

}  // namespace

asio::awaitable<void> serve(agent_state& state, port& p, const options& o) {
  context ctx{state};
  for (;;) {
    auto stream = co_await p.wait_for_host();
    if (!stream) {
      common::log_error("qemu-ga port {} failed: {}; the native port is served on", p.describe(),
                        stream.error().describe());
      co_return;
    }
    co_await serve_client(ctx, std::move(stream.value()), o);
  }
}

}  // namespace qxa::guest::qga
