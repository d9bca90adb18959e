// SPDX-License-Identifier: MIT
//
// The project's small coroutine vocabulary, used by every layer:
//
// - async_event: a wake-up signal for coroutines on one executor.
// - event_queue: a bounded queue with an awaitable pop that drops the oldest item when full.
// - The two completion policies of co_spawn (see "Failures are contained" in host/README.md):
//   `contained(what)` for every long-lived or per-connection coroutine: an exception that ends
//   one is logged with `what` and goes no further, so one VM's or one client's bug never stops
//   the io_context that serves the others; `propagate` only for the program's top-level task in
//   main, whose failure is the program's.
//
// Threading: not thread-safe; everything is used from one single-threaded executor.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <utility>

namespace qxa::common {

/// Wakes every coroutine waiting on it. Wakes may be spurious: waiters re-check their condition
/// in a loop (`while (!ready) co_await event.wait();`).
class async_event {
 public:
  explicit async_event(const asio::any_io_executor& ex) : timer_(ex) {
    timer_.expires_at(asio::steady_timer::time_point::max());
  }
  // cancel() wakes every waiter and leaves the expiry at "never", so the next wait blocks again.
  void notify_all() { timer_.cancel(); }
  asio::awaitable<void> wait() {
    std::error_code ec;
    co_await timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }

 private:
  asio::steady_timer timer_;
};

/// A queue of at most `capacity` items for one consumer that may fall behind. A push into a
/// full queue drops one item first: the oldest for which `expendable` holds, or else the oldest.
/// finish() ends it: pop() then drains what is left and gives nothing after.
template <typename T>
class event_queue {
 public:
  event_queue(const asio::any_io_executor& ex, std::size_t capacity,
              std::function<bool(const T&)> expendable = {})
      : ready_(ex), capacity_(capacity == 0 ? 1 : capacity), expendable_(std::move(expendable)) {}

  /// Returns true when an older item was dropped to make room.
  bool push(T item) {
    bool dropped = false;
    if (items_.size() >= capacity_) {
      auto it = items_.begin();
      if (expendable_) {
        for (auto e = items_.begin(); e != items_.end(); ++e) {
          if (expendable_(*e)) {
            it = e;
            break;
          }
        }
      }
      items_.erase(it);
      dropped = true;
    }
    items_.push_back(std::move(item));
    ready_.notify_all();
    return dropped;
  }

  /// The next item, or nothing once the queue is finished and empty.
  asio::awaitable<std::optional<T>> pop() {
    while (items_.empty() && !finished_) co_await ready_.wait();
    if (items_.empty()) co_return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    co_return item;
  }

  void finish() {
    finished_ = true;
    ready_.notify_all();
  }

  [[nodiscard]] std::size_t size() const noexcept { return items_.size(); }

 private:
  async_event ready_;
  std::deque<T> items_;
  std::size_t capacity_;
  std::function<bool(const T&)> expendable_;
  bool finished_ = false;
};

/// Completes after `d` (cancellable: then throws operation_aborted).
asio::awaitable<void> sleep_for(std::chrono::nanoseconds d);

/// Logs an exception that ended a coroutine, naming the coroutine. Defined in log.cpp.
void log_contained(const std::string& what, std::exception_ptr e) noexcept;

/// co_spawn completion for a coroutine whose failure must stay its own: logs and contains.
/// `then`, when given, runs after an exception (a VM's loop is started again, waiters are
/// failed); it is not called on a normal end.
inline auto contained(std::string what, std::function<void()> then = {}) {
  return [what = std::move(what), then = std::move(then)](std::exception_ptr e) {
    if (!e) return;
    log_contained(what, e);
    if (then) then();
  };
}

/// co_spawn completion for the program's top-level task only: its exception ends io.run().
inline constexpr auto propagate = [](std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
};

}  // namespace qxa::common
