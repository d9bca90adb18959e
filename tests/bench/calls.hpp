// SPDX-License-Identifier: MIT
// Our side of qx-bench's figures, made through qxa::host::agent_access: straight to an agent's
// socket (as `qx-agent --connect` does) or through qx-agentd, the same calls either way. Every
// transfer is verified as `qx-agent cp` verifies it, and qx-bench stops at the first failure.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <chrono>
#include <string>

#include "bench_io.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/host/agent_access.hpp"

namespace qxa::bench {

namespace pb = quantix::agent::v1;

/// Round trips of `n` pings, one at a time.
inline asio::awaitable<latency> ping_series(host::agent_access& a, std::string vm, int n) {
  latency l;
  for (int i = 0; i < n; ++i) {
    pb::Envelope p;
    p.mutable_ping();
    const auto t0 = clock_type::now();
    auto r = co_await a.call(vm, std::move(p), std::chrono::seconds(10));
    if (!r || !r->has_pong()) die("ping failed: " + (r ? r->DebugString() : r.error().describe()));
    l.ms.push_back(ms_since(t0));
  }
  co_return l;
}

/// Reads `path` (`bytes` long) from the agent, hashing what arrives and comparing it with the
/// agent's digest; MiB/s.
inline asio::awaitable<double> read_verified(host::agent_access& a, std::string vm,
                                             std::string path, std::size_t bytes) {
  pb::Envelope read;
  read.mutable_file_read_request()->set_path(path);
  host::call_options o;
  o.timeout = std::chrono::seconds(60);
  std::size_t got = 0;
  common::sha256 d;
  o.on_progress = [&](const pb::Envelope& m) {
    got += m.file_chunk().data().size();
    d.update(m.file_chunk().data());
  };
  const auto t0 = clock_type::now();
  auto r = co_await a.call(vm, std::move(read), std::move(o));
  if (!r || !r->has_file_read_result() || got != bytes ||
      r->file_read_result().sha256() != common::sha256::bytes(d.finish())) {
    die("file read of " + path + " failed: " + (r ? r->DebugString() : r.error().describe()));
  }
  co_return static_cast<double>(got) / (1 << 20) / (ms_since(t0) / 1000);
}

namespace detail {
inline asio::awaitable<void> upload_chunk(host::agent_access& a, std::string vm, pb::Envelope chunk,
                                          int& in_flight) {
  auto r = co_await a.call(vm, std::move(chunk), std::chrono::seconds(60));
  if (!r || r->has_error()) die("file write chunk failed");
  --in_flight;
}
}  // namespace detail

/// Writes `data` to `path` through the agent, 512 KiB chunks with eight in flight (as
/// `qx-agent cp` sends them), committed with its SHA-256; MiB/s.
inline asio::awaitable<double> write_verified(host::agent_access& a, std::string vm,
                                              std::string path, const std::string& data) {
  auto ex = co_await asio::this_coro::executor;
  const auto t0 = clock_type::now();
  pb::Envelope open;
  open.mutable_file_write_open()->set_path(path);
  auto h = co_await a.call(vm, std::move(open), std::chrono::seconds(10));
  if (!h || !h->has_file_write_reply()) die("file write open of " + path + " failed");
  const auto handle = h->file_write_reply().handle();
  int in_flight = 0;
  asio::steady_timer t(ex);
  constexpr std::size_t chunk = 512u << 10;
  for (std::size_t off = 0; off < data.size(); off += chunk) {
    while (in_flight >= 8) {
      t.expires_after(std::chrono::microseconds(100));
      co_await t.async_wait(asio::use_awaitable);
    }
    pb::Envelope e;
    auto* ch = e.mutable_file_write_chunk();
    ch->set_handle(handle);
    ch->set_offset(off);
    ch->set_data(data.substr(off, chunk));
    ++in_flight;
    asio::co_spawn(ex, detail::upload_chunk(a, vm, std::move(e), in_flight), asio::detached);
  }
  while (in_flight > 0) {
    t.expires_after(std::chrono::microseconds(100));
    co_await t.async_wait(asio::use_awaitable);
  }
  common::sha256 d;
  d.update(data);
  pb::Envelope close;
  close.mutable_file_write_close()->set_handle(handle);
  close.mutable_file_write_close()->set_sha256(common::sha256::bytes(d.finish()));
  auto done = co_await a.call(vm, std::move(close), std::chrono::seconds(60));
  if (!done || !done->has_file_write_reply()) die("file write commit of " + path + " failed");
  co_return static_cast<double>(data.size()) / (1 << 20) / (ms_since(t0) / 1000);
}

}  // namespace qxa::bench
