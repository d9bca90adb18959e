// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/own_thread.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <asio/posix/stream_descriptor.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstdint>
#include <thread>

#include "qxa/guest/safe_fs/fs.hpp"

namespace qxa::guest {

asio::awaitable<std::error_code> run_on_own_thread(std::shared_ptr<thread_work> work) {
  // An eventfd rather than a pipe: the thread's write never meets a closed reader (SIGPIPE) when
  // the request ended first.
  unique_fd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event) co_return std::error_code(errno, std::system_category());
  unique_fd signal(::fcntl(event.get(), F_DUPFD_CLOEXEC, 0));
  if (!signal) co_return std::error_code(errno, std::system_category());
  auto done = std::make_shared<std::atomic<bool>>(false);
  try {
    std::thread([work, done, fd = signal.get()] {
      work->run();
      done->store(true, std::memory_order_release);
      const std::uint64_t one = 1;
      (void)!::write(fd, &one, sizeof one);
      ::close(fd);
    }).detach();
    (void)signal.release();  // the thread's now
  } catch (const std::system_error& e) {
    co_return e.code();
  }
  asio::posix::stream_descriptor woken(co_await asio::this_coro::executor, event.release());
  // However this coroutine ends, the thread learns that nobody waits for it any more.
  struct stop_on_exit {
    thread_work& w;
    ~stop_on_exit() { w.stop = true; }
  } stopper{*work};
  while (!done->load(std::memory_order_acquire)) {
    co_await woken.async_wait(asio::posix::descriptor_base::wait_read, asio::use_awaitable);
  }
  co_return std::error_code();
}

}  // namespace qxa::guest
