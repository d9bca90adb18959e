// SPDX-License-Identifier: MIT
// log_limiter: bounds the log lines one source writes (one VM, in qx-agentd), without I/O. A
// guest decides how often its events happen (an agent that announces itself again and again, a
// connection it breaks on purpose); written one line each, they would fill the journal, which
// then drops every other VM's lines too (journald's rate limit is per service). So each kind
// of line has a budget per window: the first `burst` are written, the rest counted, and the
// count is said once, either with the next line of that kind after the window or by itself
// (overdue()) when none comes. Not thread-safe: one per event loop.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace qxa::common {

class log_limiter {
 public:
  using clock = std::chrono::steady_clock;

  explicit log_limiter(std::size_t burst = 10,
                       std::chrono::nanoseconds window = std::chrono::seconds(60))
      : burst_(burst), window_(window) {}

  struct verdict {
    bool write = false;
    /// Lines of this kind not written in the window before this one (say so with this line).
    std::uint64_t held_before = 0;
  };
  /// Whether a line of `kind` may be written at `now`.
  verdict admit(std::string_view kind, clock::time_point now);
  /// The kinds whose window has ended with lines held back, and how many: each is said once
  /// (the count starts over).
  std::vector<std::pair<std::string, std::uint64_t>> overdue(clock::time_point now);

 private:
  struct budget {
    clock::time_point window_start;
    std::size_t written = 0;
    std::uint64_t held = 0;
  };
  std::size_t burst_;
  std::chrono::nanoseconds window_;
  std::map<std::string, budget, std::less<>> kinds_;
};

}  // namespace qxa::common
