// SPDX-License-Identifier: MIT
// Pings a VM through qx-agentd from a thread of its own until stopped, the way an operator's
// monitoring would, and keeps count: how many were sent, how many failed or took longer than
// their deadline, and the slowest.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "support/process.hpp"

namespace qxa::test {

class pinger {
 public:
  /// `cli` is qx-agent; each ping has `deadline` (also its --timeout).
  pinger(std::string cli, std::string control_socket, std::string vm,
         std::chrono::milliseconds deadline = std::chrono::milliseconds(2000))
      : cli_(std::move(cli)),
        ctl_(std::move(control_socket)),
        vm_(std::move(vm)),
        deadline_(deadline),
        thread_([this] { run(); }) {}
  ~pinger() { stop(); }
  pinger(const pinger&) = delete;
  pinger& operator=(const pinger&) = delete;

  void stop() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] int sent() const { return sent_; }
  [[nodiscard]] int failed() const { return failed_; }
  [[nodiscard]] double worst_ms() const { return worst_ms_; }

 private:
  void run() {
    while (!stopping_) {
      auto r = run_command({cli_, "--control-socket", ctl_, "ping", vm_, "--timeout",
                            std::to_string(deadline_.count()) + "ms"},
                           deadline_ + std::chrono::seconds(10));
      ++sent_;
      const auto ms = std::chrono::duration<double, std::milli>(r.took).count();
      if (r.status != 0 || ms > static_cast<double>(deadline_.count())) ++failed_;
      worst_ms_ = std::max(worst_ms_.load(), ms);
    }
  }

  std::string cli_, ctl_, vm_;
  std::chrono::milliseconds deadline_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> sent_{0}, failed_{0};
  std::atomic<double> worst_ms_{0};
  std::thread thread_;
};

}  // namespace qxa::test
