// SPDX-License-Identifier: MIT
// A man in the middle for fault-injection tests: listens where qx-agentd looks for a VM's
// socket and relays each connection to the agent's real socket, on a thread of its own. Faults
// can be switched on and off while it runs:
// - garbage: random bytes (some starting with the frame magic) injected in both directions,
//   before a chunk or inside it, so that frames arrive damaged or with noise between them;
// - byte_writes: every byte relayed with a write of its own (frames in 1-byte pieces);
// - truncate_and_close: the next chunk from either side is cut in half, then both connections
//   close (a truncated frame followed by a close);
// - cut(): closes every relayed connection now.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <atomic>
#include <list>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace qxa::test {

class fault_proxy {
 public:
  using socket = asio::local::stream_protocol::socket;

  std::atomic<bool> garbage{false};
  std::atomic<bool> byte_writes{false};
  std::atomic<bool> truncate_and_close{false};

  std::atomic<std::uint64_t> connections{0};
  std::atomic<std::uint64_t> garbage_bytes{0};
  std::atomic<std::uint64_t> relayed_bytes{0};
  std::atomic<std::uint64_t> truncations{0};
  std::atomic<std::uint64_t> cuts{0};

  fault_proxy(std::string listen_path, std::string target_path, std::uint32_t seed = 1)
      : target_(std::move(target_path)),
        acceptor_(io_, asio::local::stream_protocol::endpoint(listen_path)),
        rng_(seed) {
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  ~fault_proxy() {
    asio::post(io_, [this] {
      acceptor_.close();
      close_all();
    });
    io_.stop();
    thread_.join();
  }

  fault_proxy(const fault_proxy&) = delete;
  fault_proxy& operator=(const fault_proxy&) = delete;

  /// Closes every relayed connection (both sides); new ones are accepted as before.
  void cut() {
    asio::post(io_, [this] {
      ++cuts;
      close_all();
    });
  }

 private:
  struct link {
    link(asio::io_context& io) : host(io), guest(io) {}
    socket host;
    socket guest;
  };

  void close_all() {
    for (auto& l : links_) {
      std::error_code ignored;
      l->host.close(ignored);
      l->guest.close(ignored);
    }
    links_.clear();
  }

  asio::awaitable<void> accept_loop() {
    using asio::experimental::as_tuple;
    for (;;) {
      auto [ec, s] = co_await acceptor_.async_accept(as_tuple(asio::use_awaitable));
      if (ec) co_return;
      auto l = std::make_shared<link>(io_);
      l->host = std::move(s);
      auto [cec] = co_await l->guest.async_connect(asio::local::stream_protocol::endpoint(target_),
                                                   as_tuple(asio::use_awaitable));
      if (cec) continue;  // no agent now: the host sees the connection close and retries
      ++connections;
      links_.push_back(l);
      asio::co_spawn(io_, pump(l, l->host, l->guest), asio::detached);
      asio::co_spawn(io_, pump(l, l->guest, l->host), asio::detached);
    }
  }

  std::vector<std::uint8_t> noise() {
    std::vector<std::uint8_t> n(1 + rng_() % 64);
    for (auto& b : n) b = static_cast<std::uint8_t>(rng_());
    if (rng_() % 2 == 0 && n.size() >= 4) {
      n[0] = 0xF5, n[1] = 0x51, n[2] = 0x58, n[3] = 0x41;  // a magic leading nowhere
    }
    return n;
  }

  asio::awaitable<void> pump(std::shared_ptr<link> l, socket& from, socket& to) {
    using asio::experimental::as_tuple;
    std::vector<std::uint8_t> buf(64 << 10);
    for (;;) {
      auto [ec, n] =
          co_await from.async_read_some(asio::buffer(buf), as_tuple(asio::use_awaitable));
      if (ec) break;
      std::size_t at = 0;
      std::error_code wec;
      if (truncate_and_close.exchange(false)) {
        ++truncations;
        co_await asio::async_write(to, asio::buffer(buf.data(), std::max<std::size_t>(1, n / 2)),
                                   as_tuple(asio::use_awaitable));
        break;
      }
      if (garbage && rng_() % 4 == 0) {
        // Before the chunk or somewhere inside it.
        const std::size_t split = rng_() % 2 ? 0 : rng_() % n;
        std::tie(wec, std::ignore) = co_await asio::async_write(to, asio::buffer(buf.data(), split),
                                                                as_tuple(asio::use_awaitable));
        auto g = noise();
        garbage_bytes += g.size();
        if (!wec) {
          std::tie(wec, std::ignore) =
              co_await asio::async_write(to, asio::buffer(g), as_tuple(asio::use_awaitable));
        }
        at = split;
      }
      if (byte_writes) {
        for (; at < n && !wec; ++at) {
          std::tie(wec, std::ignore) = co_await asio::async_write(
              to, asio::buffer(buf.data() + at, 1), as_tuple(asio::use_awaitable));
        }
      } else if (!wec) {
        std::tie(wec, std::ignore) = co_await asio::async_write(
            to, asio::buffer(buf.data() + at, n - at), as_tuple(asio::use_awaitable));
      }
      if (wec) break;
      relayed_bytes += n;
    }
    // One side ended: end the whole connection, as a relay of one stream must.
    std::error_code ignored;
    l->host.close(ignored);
    l->guest.close(ignored);
    links_.remove(l);
  }

  std::string target_;
  asio::io_context io_;
  asio::local::stream_protocol::acceptor acceptor_;
  std::list<std::shared_ptr<link>> links_;
  std::mt19937 rng_;
  std::thread thread_;
};

}  // namespace qxa::test
