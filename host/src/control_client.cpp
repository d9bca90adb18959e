// SPDX-License-Identifier: MIT
#include "qxa/host/control_client.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <map>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"

namespace qxa::host {

using common::errc;
using common::result;
using namespace asio::experimental::awaitable_operators;

struct control_client::pending {
  explicit pending(const asio::any_io_executor& ex) : wake(ex) {}
  /// Gets each response; false: this was the last one.
  std::function<bool(const pb::ControlMessage&)> on_message;
  common::async_event wake;
  bool done = false;
  bool answered = false;  ///< ended by its last response, not by the connection closing
};

asio::awaitable<std::error_code> control_client::connect(const std::string& path) {
  asio::local::stream_protocol::socket socket(ex_);
  auto [ec] = co_await socket.async_connect(asio::local::stream_protocol::endpoint(path),
                                            asio::experimental::as_tuple(asio::use_awaitable));
  if (ec) co_return ec;
  stream_ = control_stream::create(std::move(socket));
  stream_->start();
  asio::co_spawn(ex_, read_loop(stream_, pending_), common::contained("the control reader"));
  co_return std::error_code{};
}

// One reader hands each response to the call it answers, so calls may run concurrently.
asio::awaitable<void> control_client::read_loop(
    std::shared_ptr<control_stream> stream,
    std::shared_ptr<std::map<std::uint64_t, std::shared_ptr<pending>>> calls) {
  for (;;) {
    auto m = co_await stream->receive();
    if (!m) break;
    auto it = calls->find(m->reply_to());
    if (it == calls->end()) continue;
    auto p = it->second;
    if (!p->on_message(*m)) {
      p->done = true;
      p->answered = true;
      calls->erase(it);
      p->wake.notify_all();
    }
  }
  auto left = std::move(*calls);
  calls->clear();
  for (auto& [id, p] : left) {
    p->done = true;
    p->wake.notify_all();
  }
}

asio::awaitable<result<pb::ControlMessage>> control_client::call(pb::ControlMessage request,
                                                                 std::chrono::nanoseconds timeout) {
  std::optional<pb::ControlMessage> answer;
  auto ec = co_await stream(
      std::move(request),
      [&](const pb::ControlMessage& m) {
        answer = m;
        return false;
      },
      {}, timeout);
  if (answer) co_return std::move(*answer);
  if (ec == errc::request_timeout) {
    co_return result<pb::ControlMessage>{errc::request_timeout, "no answer from qx-agentd"};
  }
  if (ec == errc::cancelled) co_return result<pb::ControlMessage>{errc::cancelled, "cancelled"};
  co_return result<pb::ControlMessage>{errc::connection_lost, "qx-agentd closed the connection"};
}

asio::awaitable<bool> control_client::flush(std::chrono::nanoseconds timeout) {
  if (!stream_) co_return true;
  co_return co_await stream_->flush(timeout);
}

void control_client::cancel(std::uint64_t request_id) {
  pb::ControlMessage m;
  m.set_request_id(next_id_++);
  m.mutable_cancel_call()->set_request_id(request_id);
  (void)stream_->post(m);
}

asio::awaitable<std::error_code> control_client::stream(
    pb::ControlMessage request, std::function<bool(const pb::ControlMessage&)> on_message,
    std::function<void(std::uint64_t)> on_sent, std::optional<std::chrono::nanoseconds> timeout) {
  const auto id = next_id_++;
  request.set_request_id(id);
  auto p = std::make_shared<pending>(ex_);
  p->on_message = std::move(on_message);
  (*pending_)[id] = p;
  // However this call ends (answered, timed out, cancelled, or its frame destroyed), its entry
  // goes with it: a response that arrives later finds nobody, and never calls into a dead frame.
  struct forget_on_exit {
    std::shared_ptr<pending_map> calls;
    std::uint64_t id;
    ~forget_on_exit() { calls->erase(id); }
  } forget{pending_, id};
  const bool is_vm_call = request.has_vm_call();
  if (auto ec = stream_->post(request)) co_return ec;
  if (on_sent) on_sent(id);
  asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
  asio::steady_timer deadline(ex_);
  deadline.expires_after(timeout.value_or(std::chrono::nanoseconds::max() / 2));
  while (!p->done) {
    if (cs.cancelled() != asio::cancellation_type::none) break;
    std::error_code ignored;
    auto woke = co_await (p->wake.wait() ||
                          deadline.async_wait(asio::redirect_error(asio::use_awaitable, ignored)));
    if (p->done) break;
    if (cs.cancelled() != asio::cancellation_type::none) break;
    if (woke.index() == 1) co_return make_error_code(errc::request_timeout);
  }
  if (!p->done) {
    // Cancelled by our caller: the daemon stops the call in the guest too.
    if (is_vm_call && stream_->is_open()) cancel(id);
    co_return make_error_code(errc::cancelled);
  }
  co_return p->answered ? std::error_code{} : make_error_code(errc::connection_lost);
}

}  // namespace qxa::host
