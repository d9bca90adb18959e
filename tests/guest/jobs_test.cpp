// SPDX-License-Identifier: MIT
#include "qxa/guest/mech/jobs.hpp"

#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "guest/ops_test_support.hpp"
#include "qxa/guest/core/policy.hpp"
#include "support/poll.hpp"

using namespace std::chrono_literals;
using qxa::test::handler_bench;
using qxa::test::run_async;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
namespace ops = qxa::guest::ops;

namespace {

pb::Envelope detach_request(const std::string& shell_line, std::uint32_t timeout_ms = 0) {
  pb::Envelope e;
  auto* x = e.mutable_exec_request();
  x->set_shell_command(shell_line);
  x->set_detach(true);
  x->set_timeout_ms(timeout_ms);
  return e;
}

pb::Envelope attach_request(std::uint64_t job, bool follow, std::uint64_t stdout_from = 0,
                            std::uint64_t stderr_from = 0) {
  pb::Envelope e;
  auto* a = e.mutable_attach_request();
  a->set_job(job);
  a->set_follow(follow);
  a->set_stdout_from(stdout_from);
  a->set_stderr_from(stderr_from);
  return e;
}

pb::Envelope kill_request(std::uint64_t job, int signal) {
  pb::Envelope e;
  e.mutable_kill_job_request()->set_job(job);
  e.mutable_kill_job_request()->set_signal(signal);
  return e;
}

// What an attach sent as partial replies, and its final reply.
struct attached {
  std::vector<pb::ExecOutput> output;
  std::string out, err;
  pb::Envelope last;
};

asio::awaitable<attached> attach(handler_bench& bench, pb::Envelope request) {
  attached a;
  auto ctx = bench.context();
  ctx.on_progress = [&a](const pb::Envelope& partial) {
    if (!partial.has_exec_output()) return;
    a.output.push_back(partial.exec_output());
    (partial.exec_output().stream() == pb::ExecOutput::STREAM_STDOUT ? a.out : a.err) +=
        partial.exec_output().data();
  };
  a.last = co_await ops::job_attach(ctx, std::move(request));
  co_return a;
}

// Gone, or killed and waiting for whoever adopted it to reap it.
bool dead(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && line.size() > close + 2 && line[close + 2] == 'Z';
}

}  // namespace

TEST_CASE("a job's output ring keeps the newest bytes, with offsets that count every byte",
          "[unit][guest][jobs]") {
  qg::output_ring r(10);
  r.append("abc");
  CHECK(r.begin() == 0);
  CHECK(r.end() == 3);
  CHECK(r.read(0, 100) == std::pair<std::uint64_t, std::string>{0, "abc"});
  r.append("defghijkl");  // 12 bytes in all: the first 2 make way
  CHECK(r.begin() == 2);
  CHECK(r.end() == 12);
  CHECK(r.read(0, 100) == std::pair<std::uint64_t, std::string>{2, "cdefghijkl"});
  CHECK(r.read(5, 3) == std::pair<std::uint64_t, std::string>{5, "fgh"});
  r.append("XYZ");  // wraps: the oldest three go
  CHECK(r.read(0, 100) == std::pair<std::uint64_t, std::string>{5, "fghijklXYZ"});
  CHECK(r.read(11, 100) == std::pair<std::uint64_t, std::string>{11, "lXYZ"});
  CHECK(r.read(15, 100) == std::pair<std::uint64_t, std::string>{15, ""});
  CHECK(r.read(99, 100).first == 15);             // past the end: nothing, at the end
  r.append(std::string(25, 'q') + "0123456789");  // more than the ring at once
  CHECK(r.end() == 50);
  CHECK(r.read(0, 100) == std::pair<std::uint64_t, std::string>{40, "0123456789"});
  r.append("ab");
  CHECK(r.read(41, 100) == std::pair<std::uint64_t, std::string>{42, "23456789ab"});

  // Its memory grows with what it holds, up to its size and no further.
  qg::output_ring big(100'000);
  big.append(std::string(10, 'a'));
  CHECK(big.memory() < 1000);
  for (int i = 0; i < 300; ++i) {
    big.append(std::string(999, 'b'));
    CHECK(big.memory() <= 100'000);
  }
  CHECK(big.memory() == 100'000);
  CHECK(big.read(0, 1'000'000).second.size() == 100'000);

  qg::output_ring none(0);  // keeps nothing, still counts
  none.append("hello");
  CHECK(none.end() == 5);
  CHECK(none.begin() == 5);
  CHECK(none.read(0, 10) == std::pair<std::uint64_t, std::string>{5, ""});
}

TEST_CASE(
    "a detached exec answers at once with its job, and attach replays its output then follows "
    "it to its exit status",
    "[unit][guest][jobs]") {
  run_async([](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor());
    auto started = co_await ops::exec(
        bench.context(), detach_request("echo one; read line; echo \"two $line\" >&2; exit 4"));
    REQUIRE(started.has_job());
    const auto job = started.job();
    CHECK(job.id() == 1);
    CHECK_FALSE(job.finished());
    CHECK(job.pid() > 0);
    CHECK(job.argv_size() == 3);
    CHECK(job.argv(0) == "/bin/sh");

    // Its stdin was the request's: none, so `read` sees the end at once.
    auto a = co_await attach(bench, attach_request(job.id(), true));
    REQUIRE(a.last.has_job());
    CHECK(a.last.job().finished());
    CHECK(a.last.job().exit_code() == 4);
    CHECK(a.out == "one\n");
    CHECK(a.err == "two \n");
    CHECK(a.last.job().stdout_bytes() == 4);
    CHECK(a.last.job().stderr_bytes() == 5);
    CHECK(a.last.job().ended_unix_ms() >= a.last.job().started_unix_ms());

    // Again from an offset: only what lies past it.
    auto again = co_await attach(bench, attach_request(job.id(), false, 2, 5));
    CHECK(again.out == "e\n");
    CHECK(again.err.empty());
    REQUIRE_FALSE(again.output.empty());
    CHECK(again.output.front().offset() == 2);

    auto listed = co_await ops::job_list(bench.context(), {});
    REQUIRE(listed.jobs_reply().jobs_size() == 1);
    CHECK(listed.jobs_reply().jobs(0).exit_code() == 4);
    CHECK(listed.jobs_reply().max_jobs() == 16);

    auto missing = co_await attach(bench, attach_request(99, true));
    CHECK(missing.last.error().code() == pb::ERROR_CODE_NOT_FOUND);
  });
}

TEST_CASE("a job's stdin is what the request carried", "[unit][guest][jobs]") {
  run_async([](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor());
    auto request = detach_request("tr a-z A-Z");
    request.mutable_exec_request()->set_stdin("shout\n");
    auto started = co_await ops::exec(bench.context(), request);
    REQUIRE(started.has_job());
    auto a = co_await attach(bench, attach_request(started.job().id(), true));
    CHECK(a.out == "SHOUT\n");
    CHECK(a.last.job().exit_code() == 0);
  });
}

TEST_CASE("output beyond a job's ring is dropped from the front, and attach says where it resumes",
          "[unit][guest][jobs]") {
  qg::agent_options o;
  o.policy.max_job_output_bytes = 4096;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), o);
    auto started = co_await ops::exec(
        bench.context(), detach_request("head -c 100000 /dev/zero | tr '\\0' x; echo END"));
    REQUIRE(started.has_job());
    auto a = co_await attach(bench, attach_request(started.job().id(), true));
    REQUIRE(a.last.has_job());
    CHECK(a.last.job().stdout_bytes() == 100004);
    // Followed from the start, the attach saw everything or was told where it skipped to;
    // read again afterwards, only the ring's last 4096 bytes are there.
    auto again = co_await attach(bench, attach_request(started.job().id(), false));
    REQUIRE(again.output.size() == 1);
    CHECK(again.output[0].offset() == 100004 - 4096);
    CHECK(again.out.size() == 4096);
    CHECK(again.out.ends_with("xxEND\n"));
    CHECK(again.last.job().stdout_kept_from() == 100004 - 4096);
  });
}

TEST_CASE(
    "policy.max_jobs caps the jobs running, and the oldest ended record makes way for a new job",
    "[unit][guest][jobs]") {
  qg::agent_options o;
  o.policy.max_jobs = 2;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), o);
    auto first = co_await ops::exec(bench.context(), detach_request("exec sleep 30"));
    auto second = co_await ops::exec(bench.context(), detach_request("exec sleep 30"));
    REQUIRE(first.has_job());
    REQUIRE(second.has_job());
    auto third = co_await ops::exec(bench.context(), detach_request("exec sleep 30"));
    REQUIRE(third.has_error());
    CHECK(third.error().code() == pb::ERROR_CODE_RESOURCE_EXHAUSTED);
    CHECK(third.error().rule() == "policy.max_jobs");

    auto killed = co_await ops::job_kill(bench.context(), kill_request(first.job().id(), 0));
    REQUIRE(killed.has_job());
    auto ended = co_await attach(bench, attach_request(first.job().id(), true));
    CHECK(ended.last.job().signal() == SIGTERM);
    auto again = co_await ops::job_kill(bench.context(), kill_request(first.job().id(), 0));
    CHECK(again.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);

    third = co_await ops::exec(bench.context(), detach_request("exec sleep 30"));
    REQUIRE(third.has_job());
    CHECK(third.job().id() == 3);
    auto listed = co_await ops::job_list(bench.context(), {});
    REQUIRE(listed.jobs_reply().jobs_size() == 2);  // job 1's record made way
    CHECK(listed.jobs_reply().jobs(0).id() == 2);
    CHECK(listed.jobs_reply().jobs(1).id() == 3);

    auto bad = co_await ops::job_kill(bench.context(), kill_request(2, 4096));
    CHECK(bad.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
  });
}

TEST_CASE("kill reaches a job's whole process group, and a job's timeout kills it",
          "[unit][guest][jobs]") {
  run_async([](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor());
    // The shell waits for a child of its own: both must go for the job to end.
    auto started = co_await ops::exec(bench.context(), detach_request("sleep 30 & echo $!; wait"));
    REQUIRE(started.has_job());
    // Once the child's pid is out, it runs.
    auto running = bench.state.jobs->find(started.job().id());
    attached a;
    while (a.out.empty() && !running->finished()) {
      co_await running->changed();
      a = co_await attach(bench, attach_request(started.job().id(), false));
    }
    const pid_t child = std::stoi(a.out);
    CHECK(::kill(child, 0) == 0);
    (void)co_await ops::job_kill(bench.context(), kill_request(started.job().id(), SIGKILL));
    auto ended = co_await attach(bench, attach_request(started.job().id(), true));
    CHECK(ended.last.job().signal() == SIGKILL);
    CHECK_FALSE(ended.last.job().timed_out());
    // Killed with its group; it dies when it next runs, which on a loaded machine may be a
    // moment after the shell's end was seen.
    CHECK(qxa::test::eventually([&] { return dead(child); }, std::chrono::seconds(5)));

    auto slow = co_await ops::exec(bench.context(), detach_request("exec sleep 30", 300));
    REQUIRE(slow.has_job());
    auto timed = co_await attach(bench, attach_request(slow.job().id(), true));
    CHECK(timed.last.job().timed_out());
    CHECK(timed.last.job().signal() == SIGKILL);
  });
}

TEST_CASE("an ended job's record is kept for jobs.keep_finished", "[unit][guest][jobs]") {
  qg::agent_options o;
  o.keep_finished_jobs = std::chrono::nanoseconds::zero();
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), o);
    auto started = co_await ops::exec(bench.context(), detach_request("true"));
    REQUIRE(started.has_job());
    auto a = co_await attach(bench, attach_request(started.job().id(), true));
    // The last answer about it still says how it ended; then it is gone.
    CHECK(a.last.job().exit_code() == 0);
    auto listed = co_await ops::job_list(bench.context(), {});
    CHECK(listed.jobs_reply().jobs_size() == 0);
  });
}

TEST_CASE("the job operations are exec's in the guest's policy", "[unit][guest][jobs]") {
  for (const char* op : {"job-list", "job-attach", "job-kill"}) {
    CHECK(qg::operation_family(op) == "exec");
    qg::local_policy off;
    off.exec = false;
    CHECK(off.check_operation(op).has_value());
    qg::local_policy blocked;
    blocked.block = {"exec"};
    CHECK(blocked.check_operation(op).has_value());
    qg::local_policy allowed;
    allowed.allow = {"exec"};
    CHECK_FALSE(allowed.check_operation(op).has_value());
  }
}
