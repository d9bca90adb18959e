// SPDX-License-Identifier: MIT
// Child processes for exec and hooks: started in a process group of their own with pipes for
// stdin, stdout and stderr, optionally as another user, and always reaped, also when the
// caller gives up on them (a cancelled or timed-out command leaves no zombie).
//
// Between its start and its execve a child may block for ever: it enters its working directory
// and looks up its program as the user it runs as, and a user's FUSE mount there may never
// answer. So the agent never waits for that part: the child is a copy of the agent (no shared
// memory, no CLONE_VFORK), it reports a failure to start through a close-on-exec pipe, and the
// caller waits for that report (or its end of file at the execve) with a deadline, killing the
// child when the deadline passes. Nothing of what a host names (the program, PATH, the working
// directory, a home) is looked at by the agent itself.
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
#include "qxa/guest/platform/accounts.hpp"
#include "qxa/guest/platform/programs.hpp"

namespace qxa::guest {

struct spawn_options {
  std::vector<std::string> argv;  ///< argv[0]: an absolute path, or a name looked up in `path`
  /// The file to run, when it is not argv[0] (looked up): exactly this path, no lookup.
  std::string executable;
  std::vector<std::string> env;  ///< "NAME=value"
  std::string working_directory = "/";
  /// The working directory is only a preference (a user's home by default): when it cannot be
  /// entered the child starts in "/" instead.
  bool working_directory_optional = false;
  std::optional<account> user;  ///< switch to this user and their groups before exec
  /// Where argv[0] is looked up when it has no '/': by the child, as the user, with execve.
  std::string path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  /// stderr is stdout's pipe (2>&1): the output in one stream, in the order written; the stderr
  /// pipe then ends at once, empty.
  bool merge_stderr = false;
};

/// How a process ended.
struct exit_status {
  int code = -1;   ///< exit code, when it exited
  int signal = 0;  ///< the signal that killed it, or 0
};

class child_process {
 public:
  /// Starts the program and completes once it runs (its execve succeeded), or with the reason
  /// it could not start: no such program (errc::invalid_argument), permission, no such
  /// directory, the user's groups, no pipes or process to be had. When it has neither run nor
  /// failed within `start_timeout` (a working directory or program on a filesystem that does
  /// not answer), its process group is killed and the error is errc::timed_out.
  static asio::awaitable<common::result<std::unique_ptr<child_process>>> start(
      const asio::any_io_executor& ex, const spawn_options& options,
      std::chrono::nanoseconds start_timeout);
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
  /// As wait(), for at most `timeout`: nothing when it has not ended by then. A process killed
  /// while a filesystem that never answers holds it in the kernel does not end.
  asio::awaitable<std::optional<exit_status>> wait_for(std::chrono::nanoseconds timeout);
  /// Sends `signal` to the whole process group.
  void kill_group(int signal) const noexcept;
  [[nodiscard]] bool reaped() const noexcept { return status_.has_value(); }

 private:
  child_process(const asio::any_io_executor& ex, pid_t pid, int pidfd, int in, int out, int err,
                int report);
  static common::result<std::unique_ptr<child_process>> spawn(const asio::any_io_executor& ex,
                                                              const spawn_options& options);
  /// Reads the child's report: nothing once it has exec'd, or why it could not.
  asio::awaitable<std::optional<common::error_info>> started(const spawn_options& options,
                                                             std::chrono::nanoseconds timeout);
  std::optional<exit_status> try_reap();

  asio::any_io_executor ex_;
  pid_t pid_;
  int pidfd_;
  asio::posix::stream_descriptor in_, out_, err_;
  asio::posix::stream_descriptor report_;  ///< the child's start report (close-on-exec pipe)
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
  /// Killed at its deadline, it had still not ended a moment later (held in the kernel by a
  /// filesystem that does not answer): it is reaped in the background whenever it ends.
  bool unkillable = false;
};

/// How long a killed child is waited for before the caller goes on without it.
inline constexpr std::chrono::seconds kill_grace{2};

/// Runs a started child to its end: writes `input` to its standard input and closes it, reads
/// its standard output and error (keeping at most `cap` bytes of each), and kills its process
/// group at `timeout`. Completes once the child is reaped, or kill_grace after the kill.
asio::awaitable<finished_child> run_to_end(child_process& child, std::string input, std::size_t cap,
                                           std::chrono::nanoseconds timeout);

}  // namespace qxa::guest
