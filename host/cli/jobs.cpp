// SPDX-License-Identifier: MIT
// qx-agent's job verbs: exec --detach's answer, jobs, attach (the job's output from its ring,
// then live, its exit status as ours) and kill.
#include <signal.h>
#include <unistd.h>

#include <array>
#include <asio/this_coro.hpp>
#include <charconv>
#include <cstring>

#include "cli.hpp"
#include "qxa/common/posix.hpp"
#include "qxa/host/json.hpp"

namespace qxa::cli {

namespace {

// The command line as a shell would take it back: words with spaces or quotes quoted.
std::string command_text(const pb::Job& j) {
  std::string line;
  for (const auto& a : j.argv()) {
    if (!line.empty()) line += ' ';
    const bool plain =
        !a.empty() && a.find_first_of(" \t\n'\"\\$`;&|<>()*?[]{}~#") == std::string::npos;
    if (plain) {
      line += a;
    } else {
      line += '\'';
      for (char c : a) line += c == '\'' ? std::string("'\\''") : std::string(1, c);
      line += '\'';
    }
  }
  return line;
}

std::string signal_name(int signal) {
  const char* abbrev = ::sigabbrev_np(signal);
  return abbrev ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", signal);
}

std::string state_text(const pb::Job& j) {
  if (!j.finished()) return "running";
  if (j.has_signal()) return signal_name(j.signal()) + (j.timed_out() ? " (timed out)" : "");
  return fmt::format("exit {}", j.exit_code());
}

// A job's end as this program's status, as a shell reports a command's.
int job_status(const pb::Job& j) {
  if (!j.finished()) return exit_ok;
  if (j.has_signal()) return 128 + j.signal();
  return j.exit_code();
}

}  // namespace

void print_job_started(const options& o, const pb::Job& j) {
  std::printf("job %llu started in %s (pid %d): %s\n", static_cast<unsigned long long>(j.id()),
              shown(o.vm).c_str(), j.pid(), shown(command_text(j)).c_str());
  std::printf("follow it with: qx-agent attach %s %llu\n", shown(o.vm).c_str(),
              static_cast<unsigned long long>(j.id()));
}

void print_jobs(const pb::JobsReply& r) {
  if (r.jobs().empty()) {
    std::printf("no jobs (at most %u at once, %s of output kept per stream)\n", r.max_jobs(),
                human_bytes(r.max_output_bytes()).c_str());
    return;
  }
  std::vector<std::array<std::string, 6>> rows;
  rows.push_back({"JOB", "STATE", "PID", "STARTED", "OUTPUT", "COMMAND"});
  for (const auto& j : r.jobs()) {
    rows.push_back({std::to_string(j.id()), state_text(j), std::to_string(j.pid()),
                    human_age(j.started_unix_ms()) + " ago",
                    human_bytes(j.stdout_bytes() + j.stderr_bytes()), shown(command_text(j))});
  }
  std::array<std::size_t, 6> width{};
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::printf("%-*s  %-*s  %-*s  %-*s  %-*s  %s\n", static_cast<int>(width[0]), row[0].c_str(),
                static_cast<int>(width[1]), row[1].c_str(), static_cast<int>(width[2]),
                row[2].c_str(), static_cast<int>(width[3]), row[3].c_str(),
                static_cast<int>(width[4]), row[4].c_str(), row[5].c_str());
  }
}

namespace {

/// "TERM", "SIGKILL", "9": the signal's number.
common::result<int> parse_signal(const std::string& text) {
  std::string name = text;
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name.starts_with("SIG")) name = name.substr(3);
  for (int s = 1; s < NSIG; ++s) {
    if (const char* abbrev = ::sigabbrev_np(s); abbrev && name == abbrev) return s;
  }
  int n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec == std::errc() && end == text.data() + text.size() && n > 0 && n < NSIG) return n;
  return common::error_info{common::errc::invalid_argument,
                            fmt::format("--signal {}: not a signal name or number", text)};
}

struct attach_flags {
  std::uint64_t job = 0;
  bool no_follow = false;
};

asio::awaitable<int> run_attach(host::agent_access& access, const options& o,
                                const attach_flags& own) {
  pb::Envelope request;
  auto* a = request.mutable_attach_request();
  a->set_job(own.job);
  a->set_follow(!own.no_follow);
  // Where each stream should go on: a replay that starts later says what was lost.
  std::array<std::uint64_t, 2> next{0, 0};
  host::call_options call;
  // The agent sends the job's state every few seconds while it is quiet.
  call.timeout = o.timeout;  // the verb's 30 s unless --timeout
  call.on_progress = [&](const pb::Envelope& partial) {
    if (!partial.has_exec_output()) return;
    const auto& out = partial.exec_output();
    const bool err = out.stream() == pb::ExecOutput::STREAM_STDERR;
    auto& at = next[err ? 1 : 0];
    if (out.offset() > at) {
      std::fprintf(stderr,
                   "qx-agent: %llu bytes of the job's %s were dropped before this (its ring keeps "
                   "only the newest)\n",
                   static_cast<unsigned long long>(out.offset() - at), err ? "stderr" : "stdout");
    }
    at = out.offset() + out.data().size();
    common::write_all(err ? STDERR_FILENO : STDOUT_FILENO, out.data());
  };
  auto r = co_await access.call(o.vm, std::move(request), std::move(call));
  if (!r && r.code() == common::errc::cancelled) {
    // Only the attach stops (no co_await may come before the reset: it would throw).
    std::fprintf(stderr, "qx-agent: detached from job %llu; it keeps running in the guest\n",
                 static_cast<unsigned long long>(own.job));
    co_await asio::this_coro::reset_cancellation_state();
    co_await access.flush(settle_time);
    co_return exit_interrupted;
  }
  if (auto f = failed(r)) co_return report(*f);
  const auto& j = r->job();
  if (o.json) {
    // On standard error: standard output is the job's.
    std::cerr << host::to_json(j).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
  }
  if (!j.finished()) co_return exit_ok;  // --no-follow
  if (j.timed_out()) {
    std::fprintf(stderr, "qx-agent: job %llu timed out and was killed\n",
                 static_cast<unsigned long long>(j.id()));
  } else if (j.has_signal()) {
    std::fprintf(stderr, "qx-agent: job %llu was killed by signal %d (%s)\n",
                 static_cast<unsigned long long>(j.id()), j.signal(), ::strsignal(j.signal()));
  }
  co_return job_status(j);
}

struct kill_flags {
  std::uint64_t job = 0;
  std::string signal_text = "TERM";
};

void print_job_killed(const options& o, const kill_flags& own, const pb::Job& j) {
  const auto signal = parse_signal(own.signal_text);
  std::printf("sent %s to job %llu (pid %d) in %s\n",
              signal ? signal_name(*signal).c_str() : own.signal_text.c_str(),
              static_cast<unsigned long long>(j.id()), j.pid(), shown(o.vm).c_str());
}

}  // namespace

verb attach_verb() {
  return make_verb<attach_flags>(
      {.name = "attach",
       .help = "a job's output kept so far, then live until it ends; exits with the job's status "
               "(Ctrl-C leaves the job running)",
       .arguments =
           [](CLI::App& s, attach_flags& f) {
             s.add_option("JOB", f.job, "the job's id (see jobs)")->required();
             s.add_flag("--no-follow", f.no_follow, "print the output kept so far and stop");
           },
       .run = run_attach,
       .timeout_help = "give up when the guest has said nothing for this long [30s]; a quiet "
                       "job's state comes every 5 s",
       .timeout = std::chrono::seconds(30)});
}

verb kill_verb() {
  return make_verb<kill_flags>(
      {.name = "kill",
       .help = "send a signal to a job's process group",
       .arguments =
           [](CLI::App& s, kill_flags& f) {
             s.add_option("JOB", f.job, "the job's id (see jobs)")->required();
             s.add_option("--signal", f.signal_text, "TERM, KILL, INT, HUP, ... or a number")
                 ->capture_default_str();
           },
       .request = [](const options&, const kill_flags& f) -> common::result<pb::Envelope> {
         const auto signal = parse_signal(f.signal_text);
         if (!signal) return usage("kill: " + signal.error().message);
         pb::Envelope e;
         e.mutable_kill_job_request()->set_job(f.job);
         e.mutable_kill_job_request()->set_signal(*signal);
         return e;
       },
       .text = [](const options& o, const kill_flags& f, const pb::Envelope& r,
                  const round_trip&) { print_job_killed(o, f, r.job()); }});
}

}  // namespace qxa::cli
