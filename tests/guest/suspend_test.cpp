// SPDX-License-Identifier: MIT
// Suspend and the power hooks over a /sys/power written here: what the guest can do, the
// hooks around a suspend, a failing hook stopping it (the real S3 sleep and wake-up, through
// QEMU, is in the VM test).
#include "qxa/guest/platform/suspend.hpp"

#include <sys/stat.h>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <fstream>

#include "guest/ops_test_support.hpp"
#include "qxa/guest/mech/hooks.hpp"
#include "support/files.hpp"
#include "support/temp_dir.hpp"

using qxa::test::handler_bench;
using qxa::test::run_async;
using qxa::test::temp_dir;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
using qxa::test::file_contents;

namespace {

// A sampler reading the /proc planted here (/proc/swaps).
qg::telemetry_sampler sampler_at(const std::string& proc) {
  qg::sampler_sources src;
  src.proc_root = proc;
  return qg::telemetry_sampler(src);
}

const std::string no_swap = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
const std::string a_swap = no_swap + "/dev/vdb2  partition\t1048572\t\t0\t\t-2\n";

// A guest whose kernel offers `state`, with `disk` in power/disk, and a hook that logs its
// argument (and fails for the phase `fail_on`).
struct power_bench {
  explicit power_bench(const std::string& state, const std::string& fail_on = "none") {
    dir.write("sys/power/state", state + "\n");
    dir.write("sys/power/disk", "[platform] shutdown reboot suspend\n");
    dir.write("proc/swaps", no_swap);
    dir.write("hooks/10-note",
              "#!/bin/sh\necho \"note $1\" >> " + log + "\n[ \"$1\" != " + fail_on + " ]\n");
    REQUIRE(::chmod((dir / "hooks/10-note").c_str(), 0755) == 0);
    options.sys_root = dir / "sys";
    options.power.hooks_dir = dir / "hooks";
    options.power.systemd_dir = dir / "no-systemd";  // never the machine's systemctl suspend
    options.power.hook_timeout = std::chrono::seconds(5);
  }
  temp_dir dir;
  std::string log = dir / "hooks.log";
  qg::agent_options options;
};

}  // namespace

TEST_CASE("suspend is refused, saying why, when the kernel or the swap cannot take it",
          "[unit][guest][power]") {
  temp_dir sys;
  sys.write("power/state", "freeze mem disk\n");
  sys.write("power/disk", "[platform] shutdown reboot\n");
  CHECK_FALSE(qg::suspend_refusal(sys.path(), no_swap, qg::suspend_mode::ram));
  CHECK(qg::suspend_refusal(sys.path(), no_swap, qg::suspend_mode::disk) ==
        "the guest cannot hibernate: no swap is active to hold the memory image");
  CHECK_FALSE(qg::suspend_refusal(sys.path(), a_swap, qg::suspend_mode::disk));
  CHECK(qg::suspend_refusal(sys.path(), a_swap, qg::suspend_mode::hybrid) ==
        "the guest cannot suspend hybrid: /sys/power/disk offers no 'suspend'");
  sys.write("power/disk", "[platform] shutdown reboot suspend\n");
  CHECK_FALSE(qg::suspend_refusal(sys.path(), a_swap, qg::suspend_mode::hybrid));

  sys.write("power/state", "freeze\n");  // no S3 (a machine with ACPI S3 turned off)
  CHECK(qg::suspend_refusal(sys.path(), a_swap, qg::suspend_mode::ram) ==
        "the guest cannot suspend to RAM: its kernel offers 'freeze' in /sys/power/state, no "
        "'mem'");
  CHECK(qg::suspend_refusal(sys.path(), a_swap, qg::suspend_mode::disk).value_or("") ==
        "the guest cannot hibernate: its kernel offers 'freeze' in /sys/power/state, no 'disk'");
  temp_dir none;  // no /sys/power at all
  CHECK(qg::suspend_refusal(none.path(), a_swap, qg::suspend_mode::ram)
            .value_or("")
            .find("offers nothing") != std::string::npos);

  // Through systemd when it runs, so that its inhibitors and sleep hooks take part.
  const auto cmd = qg::suspend_command(qg::suspend_mode::hybrid, true, "/usr/bin:/bin");
  if (!cmd.empty()) CHECK(cmd.back() == "hybrid-sleep");
  CHECK(qg::suspend_command(qg::suspend_mode::ram, false, "/usr/bin:/bin").empty());
}

TEST_CASE(
    "a suspend runs the suspend hooks, replies, sleeps through /sys/power, then runs the "
    "resume hooks and keeps how it went",
    "[unit][guest][power]") {
  power_bench b("freeze mem disk");
  pb::Envelope request;
  request.mutable_suspend_request()->set_mode(pb::SuspendRequest::MODE_RAM);
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), b.options);
    bench.state.sampler = sampler_at(b.dir / "proc");
    auto reply = co_await qg::ops::suspend(bench.context(), request);
    REQUIRE(reply.has_suspend_reply());
    CHECK(reply.suspend_reply().method() == "echo mem > /sys/power/state");
    REQUIRE(reply.suspend_reply().hooks_size() == 1);
    CHECK(reply.suspend_reply().hooks(0).ok());
    CHECK(reply.suspend_reply().hooks(0).phase() == "suspend");
    CHECK(bench.state.suspending);
    // A second suspend while the first is under way is refused.
    auto again = co_await qg::ops::suspend(bench.context(2), request);
    CHECK(again.error().message() == "a suspend is already under way");
    // The sleep happens after the reply; here the write to the planted file returns at once.
    asio::steady_timer t(io);
    for (int i = 0; i < 500 && bench.state.suspending; ++i) {
      t.expires_after(std::chrono::milliseconds(10));
      co_await t.async_wait(asio::use_awaitable);
    }
    REQUIRE_FALSE(bench.state.suspending);
    REQUIRE(bench.state.last_resume);
    const auto& r = *bench.state.last_resume;
    CHECK(r.mode() == "ram");
    CHECK(r.error().empty());
    CHECK(r.resumed_unix_ms() >= r.suspended_unix_ms());
    REQUIRE(r.hooks_size() == 1);
    CHECK(r.hooks(0).phase() == "resume");
    CHECK(r.hooks(0).ok());
    // Info carries it to the host.
    auto info = co_await qg::ops::info(bench.context(3), pb::Envelope{});
    CHECK(info.info().last_resume().mode() == "ram");
  });
  CHECK(file_contents(b.dir / "sys/power/state") == "mem");
  CHECK(file_contents(b.log) == "note suspend\nnote resume\n");
}

TEST_CASE("a suspend hook that fails stops the suspend, and the resume hooks undo it",
          "[unit][guest][power]") {
  power_bench b("freeze mem disk", "suspend");
  pb::Envelope request;
  request.mutable_suspend_request()->set_mode(pb::SuspendRequest::MODE_RAM);
  pb::Envelope reply;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), b.options);
    bench.state.sampler = sampler_at(b.dir / "proc");
    reply = co_await qg::ops::suspend(bench.context(), request);
    CHECK_FALSE(bench.state.suspending);
    CHECK_FALSE(bench.state.last_resume);
  });
  REQUIRE(reply.has_error());
  CHECK(reply.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);
  CHECK(reply.error().message() ==
        "a suspend hook failed: " + b.dir / "hooks/10-note suspend: exit status 1");
  CHECK(file_contents(b.dir / "sys/power/state") == "freeze mem disk\n");  // never written
  CHECK(file_contents(b.log) == "note suspend\nnote resume\n");

  // Hibernation without swap, and no mode: refused before any hook runs.
  pb::Envelope disk, no_mode;
  disk.mutable_suspend_request()->set_mode(pb::SuspendRequest::MODE_DISK);
  no_mode.mutable_suspend_request();
  pb::Envelope disk_reply, no_mode_reply;
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), b.options);
    bench.state.sampler = sampler_at(b.dir / "proc");
    disk_reply = co_await qg::ops::suspend(bench.context(), disk);
    no_mode_reply = co_await qg::ops::suspend(bench.context(2), no_mode);
  });
  CHECK(disk_reply.error().code() == pb::ERROR_CODE_FAILED_PRECONDITION);
  CHECK_THAT(disk_reply.error().message(), Catch::Contains("cannot hibernate"));
  CHECK(no_mode_reply.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
  CHECK(file_contents(b.log) == "note suspend\nnote resume\n");
}

TEST_CASE("a suspend cancelled while its hooks run leaves no suspend under way and no sleep",
          "[unit][guest][power]") {
  power_bench b("freeze mem disk");
  b.dir.write("hooks/20-slow", "#!/bin/sh\nexec sleep 30\n");
  REQUIRE(::chmod((b.dir / "hooks/20-slow").c_str(), 0755) == 0);
  pb::Envelope request;
  request.mutable_suspend_request()->set_mode(pb::SuspendRequest::MODE_RAM);
  const auto started = std::chrono::steady_clock::now();
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    handler_bench bench(io.get_executor(), b.options);
    bench.state.sampler = sampler_at(b.dir / "proc");
    asio::cancellation_signal cancel;
    bool ended = false;
    asio::co_spawn(io, qg::ops::suspend(bench.context(), request),
                   asio::bind_cancellation_slot(
                       cancel.slot(), [&](std::exception_ptr, pb::Envelope) { ended = true; }));
    asio::steady_timer t(io);
    t.expires_after(std::chrono::milliseconds(300));  // the slow hook is running by then
    co_await t.async_wait(asio::use_awaitable);
    CHECK(bench.state.suspending);
    cancel.emit(asio::cancellation_type::terminal);
    for (int i = 0; i < 500 && !ended; ++i) {
      t.expires_after(std::chrono::milliseconds(10));
      co_await t.async_wait(asio::use_awaitable);
    }
    CHECK(ended);
    CHECK_FALSE(bench.state.suspending);  // a later suspend is not refused
    CHECK_FALSE(bench.state.last_resume);
  });
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
  CHECK(file_contents(b.dir / "sys/power/state") == "freeze mem disk\n");  // never asleep
}

TEST_CASE("hooks run in name order or in reverse, each killed at its timeout, and only root's",
          "[unit][guest][power]") {
  temp_dir dir;
  const auto log = dir / "log";
  dir.write("hooks/10-a", "#!/bin/sh\necho \"a $1\" >> " + log + "\n");
  dir.write("hooks/20-slow", "#!/bin/sh\necho \"slow $1\" >> " + log + "\nexec sleep 30\n");
  dir.write("hooks/30-open", "#!/bin/sh\necho never >> " + log + "\n");
  dir.write("hooks/40-plain", "not executable");
  for (const char* h : {"hooks/10-a", "hooks/20-slow"}) {
    REQUIRE(::chmod((dir / h).c_str(), 0755) == 0);
  }
  REQUIRE(::chmod((dir / "hooks/30-open").c_str(), 0777) == 0);  // anyone could change it
  std::vector<qg::hook_outcome> out;
  const auto started = std::chrono::steady_clock::now();
  run_async([&](asio::io_context& io) -> asio::awaitable<void> {
    out = co_await qg::run_hooks(io.get_executor(), dir / "hooks", "resume",
                                 std::chrono::milliseconds(300), true);
  });
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(10));
  REQUIRE(out.size() == 3);
  CHECK_FALSE(out[0].ran);  // the refusal comes first
  CHECK_THAT(out[0].error, Catch::Contains("must be root's and writable by nobody else"));
  CHECK(out[1].hook == dir / "hooks/20-slow");
  CHECK(out[1].timed_out);
  CHECK(qg::describe(out[1]) == dir / "hooks/20-slow resume: timed out after 300 ms");
  CHECK(out[2].ok);
  CHECK(file_contents(log) == "slow resume\na resume\n");
}
