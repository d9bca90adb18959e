// SPDX-License-Identifier: MIT
// Work that blocks in the kernel for long (a trim, removing a large tree) runs on a thread of
// its own, and the request's coroutine awaits it through an eventfd: the agent's event loop
// never waits on it. When the request ends first (cancelled, past its deadline, its session
// gone), the work is told to stop and finishes on its own; what it shares with the request lives
// until both are done.
#pragma once

#include <asio/awaitable.hpp>
#include <atomic>
#include <memory>
#include <system_error>

namespace qxa::guest {

struct thread_work {
  /// Set when the request that awaits the work has ended: stop at the next step.
  std::atomic<bool> stop{false};

  thread_work() = default;
  thread_work(const thread_work&) = delete;
  thread_work& operator=(const thread_work&) = delete;
  virtual ~thread_work() = default;
  /// Runs on the work's thread; what it finds is read by the request once this returned.
  virtual void run() = 0;
};

/// Runs `work->run()` on a new thread and resumes when it has returned. An error when no thread
/// (or eventfd) could be had; the work has then not run.
asio::awaitable<std::error_code> run_on_own_thread(std::shared_ptr<thread_work> work);

}  // namespace qxa::guest
