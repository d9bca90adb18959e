// SPDX-License-Identifier: MIT
#include "qxa/common/log_limiter.hpp"

namespace qxa::common {

log_limiter::verdict log_limiter::admit(std::string_view kind, clock::time_point now) {
  auto it = kinds_.find(kind);
  if (it == kinds_.end()) it = kinds_.emplace(std::string(kind), budget{now, 0, 0}).first;
  auto& b = it->second;
  verdict v;
  if (now - b.window_start >= window_) {
    v.held_before = b.held;
    b = budget{now, 0, 0};
  }
  if (b.written < burst_) {
    ++b.written;
    v.write = true;
  } else {
    ++b.held;
  }
  return v;
}

std::vector<std::pair<std::string, std::uint64_t>> log_limiter::overdue(clock::time_point now) {
  std::vector<std::pair<std::string, std::uint64_t>> out;
  for (auto it = kinds_.begin(); it != kinds_.end();) {
    auto& b = it->second;
    if (now - b.window_start < window_) {
      ++it;
      continue;
    }
    if (b.held > 0) out.emplace_back(it->first, b.held);
    it = kinds_.erase(it);  // a quiet kind costs nothing until it comes back
  }
  return out;
}

}  // namespace qxa::common
