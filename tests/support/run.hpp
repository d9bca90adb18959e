// SPDX-License-Identifier: MIT
// Runs a test coroutine on a fresh io_context with a hard deadline.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <asio/local/connect_pair.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <exception>
#include <functional>
#include <utility>

namespace qxa::test {

// Duration literals for the test helpers' defaults (declarations, not a using-directive).
using std::chrono_literals::operator""h;
using std::chrono_literals::operator""min;
using std::chrono_literals::operator""s;
using std::chrono_literals::operator""ms;
using std::chrono_literals::operator""us;
using unix_socket = asio::local::stream_protocol::socket;

/// Runs `make()` on an io_context that outlives it, so that sockets made in the test scope stay
/// open (and unread) between steps; fails the test when the step misses its deadline.
template <typename Make>
void run_on(asio::io_context& io, Make&& make,
            std::chrono::steady_clock::duration deadline = std::chrono::seconds(60)) {
  bool done = false;
  std::exception_ptr error;
  io.restart();
  asio::co_spawn(io, make(), [&](std::exception_ptr e) {
    done = true;
    error = e;
    io.stop();
  });
  io.run_for(deadline);
  if (!done) FAIL("the step did not finish within its deadline");
  if (error) std::rethrow_exception(error);
}

/// Runs `make(io)` to completion on an io_context of its own, failing the test when it takes
/// longer than `deadline`.
template <typename Make>
void run_async(Make&& make,
               std::chrono::steady_clock::duration deadline = std::chrono::seconds(20)) {
  asio::io_context io;
  run_on(
      io, [&] { return make(io); }, deadline);
}

inline std::pair<unix_socket, unix_socket> socket_pair(asio::io_context& io) {
  unix_socket a(io), b(io);
  asio::local::connect_pair(a, b);
  return {std::move(a), std::move(b)};
}

inline asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(d);
  co_await t.async_wait(asio::use_awaitable);
}

}  // namespace qxa::test
