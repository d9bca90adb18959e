// SPDX-License-Identifier: MIT
// A raw client of qx-agentd's control socket for fault and soak tests: it sends VmCalls with
// ids of its own and accounts for every message that comes back, so that a test can tell a
// call that got no answer, or two, from one that got exactly one.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/local/stream_protocol.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "quantix/agent/v1/control.pb.h"
#include "qxa/common/message_stream.hpp"

namespace qxa::test {

namespace pb = ::quantix::agent::v1;

class control_calls {
 public:
  using clock = std::chrono::steady_clock;
  using stream_type =
      common::message_stream<asio::local::stream_protocol::socket, pb::ControlMessage>;

  struct outcome {
    std::string vm;
    std::string op;
    int finals = 0;        ///< final answers (more = false); exactly one is right
    int partials = 0;      ///< partial answers before the final one
    bool ok = false;       ///< the final answer is the agent's reply, not an error
    int agent_error = 0;   ///< ErrorCode of an agent Error reply
    int daemon_error = 0;  ///< ErrorCode of the daemon's Error answer
    std::string message;
    clock::time_point sent{}, answered{};
  };

  explicit control_calls(asio::local::stream_protocol::socket s, common::stream_options o = {}) {
    stream_ = stream_type::create(std::move(s), o);
    stream_->start();
    asio::co_spawn(stream_->get_executor(), read_loop(stream_, this), asio::detached);
  }
  ~control_calls() { stream_->close(); }
  control_calls(const control_calls&) = delete;
  control_calls& operator=(const control_calls&) = delete;

  /// Queues one VmCall; returns its id (0 when it could not even be queued).
  std::uint64_t start(const std::string& vm, const std::string& op, pb::Envelope request,
                      std::chrono::milliseconds timeout, bool stream_progress = false) {
    pb::ControlMessage m;
    m.set_request_id(++last_id_);
    auto* c = m.mutable_vm_call();
    c->set_vm(vm);
    *c->mutable_request() = std::move(request);
    c->set_timeout_ms(static_cast<std::uint32_t>(timeout.count()));
    c->set_stream_progress(stream_progress);
    auto& o = calls_[m.request_id()];
    o.vm = vm;
    o.op = op;
    o.sent = clock::now();
    if (stream_->post(m)) {
      calls_.erase(m.request_id());
      return 0;
    }
    ++open_;
    return m.request_id();
  }

  /// Calls still without a final answer.
  [[nodiscard]] std::size_t open() const noexcept { return open_; }
  [[nodiscard]] bool connected() const noexcept { return stream_->is_open(); }
  [[nodiscard]] const std::map<std::uint64_t, outcome>& calls() const noexcept { return calls_; }
  /// Answers to ids never sent, or after the final answer.
  [[nodiscard]] std::uint64_t strays() const noexcept { return strays_; }

  /// Waits until every call has its final answer or `deadline` passes; true if all did.
  asio::awaitable<bool> wait_all(clock::time_point deadline) {
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (open_ > 0 && clock::now() < deadline && stream_->is_open()) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(asio::use_awaitable);
    }
    co_return open_ == 0;
  }

 private:
  // A static coroutine with the stream kept alive by its own reference; `self` is only used
  // while the stream is open (the destructor closes it first).
  static asio::awaitable<void> read_loop(std::shared_ptr<stream_type> stream, control_calls* self) {
    for (;;) {
      auto r = co_await stream->receive();
      if (!r || !stream->is_open()) co_return;
      self->account(*r);
    }
  }

  void account(const pb::ControlMessage& m) {
    auto it = calls_.find(m.reply_to());
    if (it == calls_.end()) {
      ++strays_;
      return;
    }
    auto& o = it->second;
    if (m.more()) {
      if (o.finals > 0) ++strays_;
      ++o.partials;
      return;
    }
    if (++o.finals > 1) {
      ++strays_;
      return;
    }
    --open_;
    o.answered = clock::now();
    if (m.has_error()) {
      o.daemon_error = m.error().code();
      o.message = m.error().message();
    } else if (m.vm_call_result().reply().has_error()) {
      o.agent_error = m.vm_call_result().reply().error().code();
      o.message = m.vm_call_result().reply().error().message();
    } else {
      o.ok = true;
    }
  }

  std::shared_ptr<stream_type> stream_;
  std::map<std::uint64_t, outcome> calls_;
  std::uint64_t last_id_ = 0;
  std::size_t open_ = 0;
  std::uint64_t strays_ = 0;
};

}  // namespace qxa::test
