// SPDX-License-Identifier: MIT
// Detached jobs: commands that run in the agent independently of any session, so that a host
// that goes away (a restarted qx-agentd, a lost connection) does not kill a package upgrade,
// and can attach again later. Each stream's output goes to a ring of bounded size, read at any
// offset; the pipes are always drained, so a job never blocks on a reader. A job lives as long
// as the agent that started it (its process group is killed when the agent ends, and the
// service manager's control group would end it anyway); a finished job's record is kept for
// keep_finished, or until a new job needs its place.
#pragma once

#include <sys/types.h>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qxa/guest/mech/process.hpp"

namespace qxa::guest {

/// The last `capacity` bytes of a stream; offsets count every byte the stream produced.
class output_ring {
 public:
  explicit output_ring(std::size_t capacity) : cap_(capacity) {}
  void append(std::string_view data);
  /// The offset of the first byte still kept.
  [[nodiscard]] std::uint64_t begin() const noexcept { return end_ - size_; }
  /// One past the last byte produced.
  [[nodiscard]] std::uint64_t end() const noexcept { return end_; }
  /// Up to `max` bytes from `offset` (from begin() when `offset` is older), with the offset
  /// they start at.
  [[nodiscard]] std::pair<std::uint64_t, std::string> read(std::uint64_t offset,
                                                           std::size_t max) const;
  [[nodiscard]] std::size_t capacity() const noexcept { return cap_; }
  /// The bytes it holds in memory: never more than capacity().
  [[nodiscard]] std::size_t memory() const noexcept { return buf_.capacity(); }

 private:
  std::size_t cap_;
  std::vector<char> buf_;  ///< grows to cap_, then wraps
  std::size_t head_ = 0;   ///< where begin() lies in buf_
  std::size_t size_ = 0;
  std::uint64_t end_ = 0;
};

struct job_limits {
  std::uint32_t max_jobs = 16;                  ///< running at once; records kept at most
  std::uint64_t max_output_bytes = 256u << 10;  ///< ring size, per stream of one job
  std::chrono::nanoseconds keep_finished = std::chrono::hours(1);
};

/// What a job was started with.
struct job_spec {
  std::vector<std::string> argv;
  std::string user;
  std::string input;                    ///< written to its stdin, which is then closed
  std::chrono::nanoseconds timeout{0};  ///< 0: none
  std::uint64_t output_bytes = 0;       ///< ring size per stream; 0: the limit's
};

class job {
 public:
  job(const asio::any_io_executor& ex, std::uint64_t id, job_spec spec, pid_t pid,
      std::size_t ring_bytes);
  job(const job&) = delete;
  job& operator=(const job&) = delete;

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  [[nodiscard]] const std::vector<std::string>& argv() const noexcept { return argv_; }
  [[nodiscard]] const std::string& user() const noexcept { return user_; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] std::int64_t started_unix_ms() const noexcept { return started_unix_ms_; }
  [[nodiscard]] bool finished() const noexcept { return status_.has_value(); }
  [[nodiscard]] const std::optional<exit_status>& status() const noexcept { return status_; }
  [[nodiscard]] bool timed_out() const noexcept { return timed_out_; }
  [[nodiscard]] std::int64_t ended_unix_ms() const noexcept { return ended_unix_ms_; }
  [[nodiscard]] std::chrono::steady_clock::time_point ended_at() const noexcept {
    return ended_at_;
  }
  [[nodiscard]] const output_ring& out() const noexcept { return out_; }
  [[nodiscard]] const output_ring& err() const noexcept { return err_; }

  /// Completes at the job's next change (output, its end); at once if it has ended.
  /// Cancellable.
  asio::awaitable<void> changed();

 private:
  friend class job_table;
  void notify();

  std::uint64_t id_;
  std::vector<std::string> argv_;
  std::string user_;
  pid_t pid_;
  std::int64_t started_unix_ms_;
  std::optional<exit_status> status_;
  bool timed_out_ = false;
  std::int64_t ended_unix_ms_ = 0;
  std::chrono::steady_clock::time_point ended_at_{};
  output_ring out_, err_;
  asio::steady_timer changed_;            ///< never expires: cancelled to wake every waiter
  std::unique_ptr<child_process> child_;  ///< while it runs
};

class job_table {
 public:
  job_table(asio::any_io_executor ex, job_limits limits);
  /// Kills the process groups of the jobs still running.
  ~job_table();
  job_table(const job_table&) = delete;
  job_table& operator=(const job_table&) = delete;

  /// Why no job may start now (max_jobs are running or starting), or nothing.
  [[nodiscard]] std::optional<std::string> refuse_start();
  /// Holds a job's place among max_jobs from the check to start(): a program takes a moment
  /// to start, and others may be asked for meanwhile.
  class start_slot {
   public:
    explicit start_slot(job_table& t) : t_(&t) { ++t_->starting_; }
    start_slot(const start_slot&) = delete;
    start_slot& operator=(const start_slot&) = delete;
    ~start_slot() { --t_->starting_; }

   private:
    job_table* t_;
  };
  /// Runs a spawned child as a new job, making room by dropping the oldest finished record
  /// when the table is full. Call refuse_start() first.
  std::shared_ptr<job> start(std::unique_ptr<child_process> child, job_spec spec);
  /// The job with `id`, or null (never was, or its record expired).
  std::shared_ptr<job> find(std::uint64_t id);
  /// Every job, by id.
  std::vector<std::shared_ptr<job>> list();
  /// Sends `signal` to a running job's process group; false when it has ended.
  static bool signal(job& j, int signal);
  /// Kills every running job's process group (the agent is ending).
  void kill_all();
  [[nodiscard]] std::size_t running() const noexcept;
  [[nodiscard]] const job_limits& limits() const noexcept { return limits_; }
  [[nodiscard]] const asio::any_io_executor& executor() const noexcept { return ex_; }

 private:
  void expire();
  /// A job from its start to its end: its pipes drained into its rings, its stdin fed, its
  /// timeout kept, its status recorded.
  static asio::awaitable<void> run(std::shared_ptr<job> j, std::string input,
                                   std::chrono::nanoseconds timeout);

  asio::any_io_executor ex_;
  job_limits limits_;
  std::map<std::uint64_t, std::shared_ptr<job>> jobs_;
  std::uint64_t next_id_ = 1;
  std::size_t starting_ = 0;
};

}  // namespace qxa::guest
