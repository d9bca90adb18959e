// SPDX-License-Identifier: MIT
// Child processes for exec and hooks: spawned in a process group of their own with pipes for
// stdin, stdout and stderr, optionally as another user, and always reaped, also when the
// caller gives up on them (a cancelled or timed-out command leaves no zombie).
#pragma once

#include <sys/types.h>

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "qxa/common/error.hpp"
#include "qxa/guest/accounts.hpp"

namespace qxa::guest {

struct spawn_options {
  std::vector<std::string> argv;  ///< argv[0]: an absolute path, or a name looked up in `path`
  std::vector<std::string> env;   ///< "NAME=value"
  std::string working_directory = "/";
  std::optional<account> user;  ///< switch to this user and their groups before exec
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
};

/// The absolute path `program` runs as (looked up in `search_path` when it has no '/'), or
/// empty when there is no such executable.
std::string find_program(const std::string& program, const std::string& search_path);

/// How a process ended.
struct exit_status {
  int code = -1;   ///< exit code, when it exited
  int signal = 0;  ///< the signal that killed it, or 0
};

class child_process {
 public:
  /// Starts the program. Fails with the reason exec failed (no such program, permission, no
  /// such directory, no such user's groups).
  static common::result<std::unique_ptr<child_process>> spawn(const asio::any_io_executor& ex,
                                                              const spawn_options& options);
  /// Kills the process group if the process still runs and reaps it in the background.
  ~child_process();
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  asio::posix::stream_descriptor& stdin_pipe() noexcept { return in_; }
  asio::posix::stream_descriptor& stdout_pipe() noexcept { return out_; }
  asio::posix::stream_descriptor& stderr_pipe() noexcept { return err_; }

  /// Completes when the process has ended, and reaps it.
  asio::awaitable<exit_status> wait();
  /// Sends `signal` to the whole process group.
  void kill_group(int signal) const noexcept;
  [[nodiscard]] bool reaped() const noexcept { return status_.has_value(); }

 private:
  child_process(const asio::any_io_executor& ex, pid_t pid, int pidfd, int in, int out, int err);
  std::optional<exit_status> try_reap();

  asio::any_io_executor ex_;
  pid_t pid_;
  int pidfd_;
  asio::posix::stream_descriptor in_, out_, err_;
  std::optional<exit_status> status_;
};

/// Writes `input` to a child's stdin (a child that does not read it is no error), then closes
/// it: the child sees the end of its input.
asio::awaitable<void> feed_stdin(asio::posix::stream_descriptor& pipe, std::string input);

/// Reads a whole pipe, keeping at most `cap` bytes; the rest is read and dropped so that the
/// writer never blocks. Returns the bytes kept and the total the pipe delivered.
struct captured_output {
  std::string data;
  std::uint64_t total = 0;
  [[nodiscard]] bool truncated() const noexcept { return total > data.size(); }
};

/// How a child run by run_to_end() ended, and what it wrote.
struct finished_child {
  exit_status status;
  captured_output out, err;
  bool timed_out = false;
};

/// Runs a spawned child to its end: writes `input` to its standard input and closes it, reads
/// its standard output and error (keeping at most `cap` bytes of each), and kills its process
/// group at `timeout`. Completes once the child is reaped.
asio::awaitable<finished_child> run_to_end(child_process& child, std::string input, std::size_t cap,
                                           std::chrono::nanoseconds timeout);

}  // namespace qxa::guest
