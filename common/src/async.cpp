// SPDX-License-Identifier: MIT
#include "qxa/common/async.hpp"

#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <exception>
#include <typeinfo>

#include "qxa/common/log.hpp"

namespace qxa::common {

void log_contained(const std::string& what, std::exception_ptr e) noexcept {
  try {
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log_error("{} ended by an exception, contained: {} ({})", what, ex.what(), typeid(ex).name());
    } catch (...) {
      log_error("{} ended by an exception of unknown type, contained", what);
    }
  } catch (...) {
    // Logging itself failed (out of memory): nothing more can be said.
  }
}

asio::awaitable<void> sleep_for(std::chrono::nanoseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  t.expires_after(d);
  co_await t.async_wait(asio::use_awaitable);
}

}  // namespace qxa::common
