// SPDX-License-Identifier: MIT
// How many VM connections qx-agentd holds at most: its descriptor limit less a reserve kept for
// what must go on working when the VMs would take all the rest: the control socket's clients,
// /metrics, the configuration file, the socket directory's watch, the event loop itself.
// The VMs beyond it wait, reported "over capacity", and connect as descriptors come free.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <utility>

#include "qxa/common/async.hpp"

namespace qxa::host {

/// The descriptors kept from the VMs: 64, or a sixteenth of a large limit, at most half.
[[nodiscard]] constexpr std::uint64_t descriptor_reserve(std::uint64_t limit) noexcept {
  return std::min(std::max<std::uint64_t>(64, limit / 16), limit / 2);
}

class descriptor_budget {
 public:
  descriptor_budget(const asio::any_io_executor& ex, std::uint64_t limit)
      : limit_(limit), capacity_(limit - descriptor_reserve(limit)), freed_(ex) {}

  /// One VM connection's descriptor, given back when destroyed.
  class slot {
   public:
    explicit slot(descriptor_budget& b) : budget_(&b) { ++b.in_use_; }
    slot(slot&& o) noexcept : budget_(std::exchange(o.budget_, nullptr)) {}
    slot& operator=(slot&& o) noexcept {
      if (this != &o) {
        give_back();
        budget_ = std::exchange(o.budget_, nullptr);
      }
      return *this;
    }
    slot(const slot&) = delete;
    slot& operator=(const slot&) = delete;
    ~slot() { give_back(); }

   private:
    void give_back() noexcept {
      if (budget_ == nullptr) return;
      --budget_->in_use_;
      budget_->freed_.notify_all();
      budget_ = nullptr;
    }
    descriptor_budget* budget_;
  };

  /// A slot, or nothing when the VMs hold all they may.
  std::optional<slot> try_take() {
    if (in_use_ >= capacity_) return std::nullopt;
    return slot(*this);
  }
  /// Completes when a slot may have come free (or spuriously: take again to know).
  asio::awaitable<void> freed() { return freed_.wait(); }

  [[nodiscard]] std::uint64_t limit() const noexcept { return limit_; }
  [[nodiscard]] std::uint64_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::uint64_t in_use() const noexcept { return in_use_; }

 private:
  std::uint64_t limit_;
  std::uint64_t capacity_;
  std::uint64_t in_use_ = 0;
  common::async_event freed_;
};

}  // namespace qxa::host
