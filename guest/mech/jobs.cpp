// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/jobs.hpp"

#include <signal.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/wall_clock.hpp"

namespace qxa::guest {

using namespace asio::experimental::awaitable_operators;

void output_ring::append(std::string_view data) {
  end_ += data.size();
  if (cap_ == 0) return;
  if (data.size() >= cap_) {
    buf_.assign(data.end() - static_cast<std::ptrdiff_t>(cap_), data.end());
    head_ = 0;
    size_ = cap_;
    return;
  }
  if (buf_.size() < cap_) {  // still growing: begin() is at index 0
    const std::size_t take = std::min(cap_ - buf_.size(), data.size());
    // Grown by doubling, but never past the ring's size: a vector's own growth could reserve
    // nearly twice that.
    if (buf_.capacity() < buf_.size() + take) {
      buf_.reserve(std::min(cap_, std::max(buf_.capacity() * 2, buf_.size() + take)));
    }
    buf_.insert(buf_.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(take));
    size_ = buf_.size();
    data.remove_prefix(take);
  }
  while (!data.empty()) {  // full: the oldest bytes, at head_, make way
    const std::size_t n = std::min(data.size(), cap_ - head_);
    std::memcpy(buf_.data() + head_, data.data(), n);
    head_ = (head_ + n) % cap_;
    data.remove_prefix(n);
  }
}

std::pair<std::uint64_t, std::string> output_ring::read(std::uint64_t offset,
                                                        std::size_t max) const {
  offset = std::max(offset, begin());
  if (offset >= end_ || max == 0) return {std::min(offset, end_), {}};
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(max, end_ - offset));
  const std::size_t at = (head_ + static_cast<std::size_t>(offset - begin())) % buf_.size();
  const std::size_t first = std::min(n, buf_.size() - at);
  std::string out(buf_.data() + at, first);
  out.append(buf_.data(), n - first);
  return {offset, std::move(out)};
}

job::job(const asio::any_io_executor& ex, std::uint64_t id, job_spec spec, pid_t pid,
         std::size_t ring_bytes)
    : id_(id),
      argv_(std::move(spec.argv)),
      user_(std::move(spec.user)),
      pid_(pid),
      started_unix_ms_(common::unix_ms()),
      out_(ring_bytes),
      err_(ring_bytes),
      changed_(ex, std::chrono::steady_clock::time_point::max()) {}

asio::awaitable<void> job::changed() {
  if (finished()) co_return;
  // Completes with operation_aborted when notify() cancels the timer; a cancellation of the
  // caller ends the wait the same way, and the caller's state tells which.
  (void)co_await changed_.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
}

void job::notify() { changed_.cancel(); }

namespace {

asio::awaitable<void> pump(asio::posix::stream_descriptor& pipe, job& j, output_ring& ring,
                           void (job::*notify)()) {
  std::vector<char> buf(64u << 10);
  for (;;) {
    auto [ec, n] = co_await pipe.async_read_some(asio::buffer(buf),
                                                 asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) co_return;  // end of file, or the pipe was closed on us
    ring.append({buf.data(), n});
    (j.*notify)();
  }
}

// Descendants that left the job's process group may hold its pipes after it ended; they get
// this long before the reading stops and the job counts as ended.
constexpr auto pipe_grace = std::chrono::seconds(2);

}  // namespace

job_table::job_table(asio::any_io_executor ex, job_limits limits)
    : ex_(std::move(ex)), limits_(limits) {}

job_table::~job_table() { kill_all(); }

void job_table::kill_all() {
  for (auto& [id, j] : jobs_) {
    if (!j->finished() && j->child_) {
      common::log_warning("job {} (pid {}) is killed: the agent is ending", id, j->pid());
      j->child_->kill_group(SIGKILL);
    }
  }
}

std::size_t job_table::running() const noexcept {
  return static_cast<std::size_t>(std::count_if(
      jobs_.begin(), jobs_.end(), [](const auto& kv) { return !kv.second->finished(); }));
}

void job_table::expire() {
  const auto now = std::chrono::steady_clock::now();
  std::erase_if(jobs_, [&](const auto& kv) {
    return kv.second->finished() && now - kv.second->ended_at() >= limits_.keep_finished;
  });
}

std::optional<std::string> job_table::refuse_start() {
  expire();
  if (limits_.max_jobs == 0)
    return "detached jobs are turned off in the guest (policy.max_jobs = 0)";
  if (running() + starting_ >= limits_.max_jobs) {
    return fmt::format("{} jobs are running, the most the guest's policy.max_jobs allows",
                       running() + starting_);
  }
  return std::nullopt;
}

std::shared_ptr<job> job_table::start(std::unique_ptr<child_process> child, job_spec spec) {
  expire();
  while (jobs_.size() >= limits_.max_jobs) {  // the oldest finished record makes room
    auto oldest = std::find_if(jobs_.begin(), jobs_.end(),
                               [](const auto& kv) { return kv.second->finished(); });
    if (oldest == jobs_.end()) break;
    jobs_.erase(oldest);
  }
  std::uint64_t ring = limits_.max_output_bytes;
  if (spec.output_bytes > 0) ring = std::min(ring, spec.output_bytes);
  std::string input = std::move(spec.input);
  const auto timeout = spec.timeout;
  auto j = std::make_shared<job>(ex_, next_id_++, std::move(spec), child->pid(),
                                 static_cast<std::size_t>(ring));
  j->child_ = std::move(child);
  jobs_.emplace(j->id(), j);
  asio::co_spawn(ex_, run(j, std::move(input), timeout), common::contained("a detached job"));
  return j;
}

asio::awaitable<void> job_table::run(std::shared_ptr<job> j, std::string input,
                                     std::chrono::nanoseconds timeout) {
  auto& child = *j->child_;
  const auto started = std::chrono::steady_clock::now();
  auto output = [&]() -> asio::awaitable<void> {
    co_await (pump(child.stdout_pipe(), *j, j->out_, &job::notify) &&
              pump(child.stderr_pipe(), *j, j->err_, &job::notify) &&
              feed_stdin(child.stdin_pipe(), std::move(input)));
  };
  auto exit_then_grace = [&]() -> asio::awaitable<void> {
    (void)co_await child.wait();
    co_await common::sleep_for(pipe_grace);
  };
  auto watchdog = [&]() -> asio::awaitable<void> {
    co_await common::sleep_for(timeout);
    j->timed_out_ = true;
    child.kill_group(SIGKILL);
    co_await common::sleep_for(std::chrono::seconds(1));
  };
  if (timeout > std::chrono::nanoseconds::zero()) {
    co_await ((output() || exit_then_grace()) || watchdog());
  } else {
    co_await (output() || exit_then_grace());
  }
  const auto status = co_await child.wait();  // at once, unless only its pipes closed
  j->status_ = status;
  j->ended_at_ = std::chrono::steady_clock::now();
  j->ended_unix_ms_ = common::unix_ms();
  common::log_info("job {} (pid {}) ended: {} {}{} after {:.0f} ms, {} + {} bytes of output",
                   j->id(), j->pid(), status.signal != 0 ? "signal" : "exit",
                   status.signal != 0 ? status.signal : status.code,
                   j->timed_out_ ? " (timed out)" : "",
                   std::chrono::duration<double, std::milli>(j->ended_at_ - started).count(),
                   j->out_.end(), j->err_.end());
  j->child_.reset();
  j->notify();
}

std::shared_ptr<job> job_table::find(std::uint64_t id) {
  expire();
  auto it = jobs_.find(id);
  return it == jobs_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<job>> job_table::list() {
  expire();
  std::vector<std::shared_ptr<job>> all;
  all.reserve(jobs_.size());
  for (auto& [id, j] : jobs_) all.push_back(j);
  return all;
}

bool job_table::signal(job& j, int signal) {
  if (j.finished() || !j.child_) return false;
  j.child_->kill_group(signal);
  return true;
}

}  // namespace qxa::guest
