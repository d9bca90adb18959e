// SPDX-License-Identifier: MIT
// Waiting on a product's state (its status, counters, files) with a hard deadline: the one way
// tests wait for something the product does not announce.
#pragma once

#include <chrono>
#include <thread>

namespace qxa::test {

/// Calls `ready` until it returns true or `timeout` passes; true when it did. `ready` is asked
/// once more at the deadline, so a slow last step still counts.
template <typename Pred>
bool eventually(Pred&& ready, std::chrono::steady_clock::duration timeout,
                std::chrono::steady_clock::duration interval = std::chrono::milliseconds(20)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ready()) return true;
    std::this_thread::sleep_for(interval);
  }
  return ready();
}

}  // namespace qxa::test
