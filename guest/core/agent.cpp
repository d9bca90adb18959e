// SPDX-License-Identifier: MIT
#include "qxa/guest/core/agent.hpp"

#include <malloc.h>
#include <unistd.h>

#include <asio/experimental/awaitable_operators.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <climits>
#include <cstdlib>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/core/log_text.hpp"
#include "qxa/guest/core/session.hpp"

namespace qxa::guest {

using namespace asio::experimental::awaitable_operators;
using common::errc;

namespace {

// Errors that mean the host went away: absence, not a failed write.
bool host_went_away(std::error_code ec) {
  return ec == errc::closed || ec == errc::connection_lost || ec == asio::error::eof ||
         ec == asio::error::broken_pipe || ec == asio::error::connection_reset ||
         ec == asio::error::bad_descriptor || ec == asio::error::operation_aborted;
}

constexpr std::uint32_t telemetry_replace_key = 1;

}  // namespace

agent::agent(asio::any_io_executor ex, agent_options options, agent_parts parts,
             std::unique_ptr<port> p, std::unique_ptr<port> qemu_ga)
    : ex_(std::move(ex)), port_(std::move(p)), qemu_ga_port_(std::move(qemu_ga)) {
  state_ = std::make_unique<agent_state>(agent_state{
      .options = std::move(options),
      .parts = std::move(parts),
      .sampler = telemetry_sampler{},
      .boot_id = read_boot_id(),
      .started_unix_ms = common::unix_ms(),
      .pid = static_cast<std::uint32_t>(::getpid()),
  });
  sampler_sources sources = state_->options.telemetry_sources;
  sources.exclude_interfaces = state_->options.exclude_interfaces;
  sources.primary_interface = state_->options.primary_interface;
  state_->sampler = telemetry_sampler{std::move(sources)};
  state_->options.policy.protected_paths = agent_paths(state_->options);
  state_->freeze = std::make_shared<freezer>(ex_, state_->options.freeze);
  state_->uploads = std::make_shared<upload_table>();
  state_->jobs = std::make_shared<job_table>(ex_, job_limits_of(state_->options));
  state_->inflight = std::make_shared<inflight_limit>(state_->options.max_inflight_requests);
  // Members, not the frame of exit_when_asked(): that frame may be destroyed after the agent
  // (with the io_context), and must then touch nothing of it.
  exit_asked_ = std::make_unique<common::async_event>(ex_);
  state_->exit_now = [this] {
    exit_wanted_ = true;
    exit_asked_->notify_all();
  };
}

std::vector<std::string> agent_paths(const agent_options& options) {
  // The package's configuration directory, and the file the agent was started with wherever
  // it is (its directory may hold anything else).
  std::vector<std::string> named = {"/etc/quantix-kvm",
                                    options.config_file,
                                    options.freeze.hooks_dir,
                                    options.power.hooks_dir,
                                    options.upgrade.state_dir,
                                    "/etc/systemd/system/quantix-kvm-agent.service",
                                    "/etc/systemd/system/quantix-kvm-agent.service.d"};
  if (auto binary = agent_binary(options.upgrade.binary)) {
    named.push_back(*binary);
    named.push_back(*binary + ".previous");
    named.push_back(staged_binary(*binary));
  }
  for (const auto& program : options.policy.exec_allow) {
    if (program.starts_with('/')) named.push_back(program);
  }
  std::vector<std::string> out;
  for (const auto& p : named) {
    if (!p.starts_with('/') || p == "/") continue;
    out.push_back(p);
    // The administrator's own paths, so following their links is safe here.
    if (char real[PATH_MAX]; ::realpath(p.c_str(), real) != nullptr && p != real) {
      out.emplace_back(real);
    }
  }
  return out;
}

job_limits job_limits_of(const agent_options& options) {
  return {.max_jobs = options.policy.max_jobs,
          .max_output_bytes = options.policy.max_job_output_bytes,
          .keep_finished = options.keep_finished_jobs};
}

bool agent_state::frozen() const noexcept { return freeze && freeze->frozen(); }

pb::Telemetry agent_state::telemetry_sample() {
  auto t = parts.telemetry ? parts.telemetry(*this) : pb::Telemetry{};
  t.set_sequence(++telemetry_sequence);
  return t;
}

asio::awaitable<void> agent::prepare_exit() {
  state_->jobs->kill_all();
  if (state_->frozen()) {
    common::log_warning("exiting while filesystems are frozen: thawing them first");
    (void)co_await state_->freeze->thaw("agent exit");
  }
}

agent::~agent() = default;

asio::awaitable<int> agent::run() {
  common::log_info(
      "{} on port {} (telemetry every {} ms, write deadline {} ms)", log_text::started,
      port_->describe(),
      std::chrono::duration_cast<std::chrono::milliseconds>(state_->options.telemetry_interval)
          .count(),
      std::chrono::duration_cast<std::chrono::milliseconds>(state_->options.write_timeout).count());
  warn_about_write_roots();
  co_await state_->freeze->recover();  // a freeze an earlier agent made and did not undo
  note_pending_upgrade();
  auto outcome =
      co_await (serve_hosts() || telemetry_loop() || exit_when_asked() || serve_qemu_ga());
  co_await prepare_exit();
  if (current_) current_->stream().close();
  port_->close();
  if (qemu_ga_port_) qemu_ga_port_->close();
  if (outcome.index() == 1) co_return std::get<1>(outcome);
  if (outcome.index() == 2) co_return std::get<2>(outcome);
  co_return 1;  // the port failed for good
}

void agent::warn_about_write_roots() const {
  const auto& p = state_->options.policy;
  const auto confined = p.exec_confined_by();
  if (!confined || !p.write_roots_listed) return;
  // Where root runs or reads programs: a write root on, above or below one of these is a road
  // around the confinement that only the administrator can close.
  static constexpr std::string_view roads[] = {"/etc", "/usr",       "/root",   "/boot",
                                               "/lib", "/lib64",     "/bin",    "/sbin",
                                               "/opt", "/var/spool", "/var/lib"};
  const auto on_or_below = [](std::string_view path, std::string_view dir) {
    return dir == "/" || path == dir || (path.starts_with(dir) && path[dir.size()] == '/');
  };
  for (const auto& root : p.write_roots) {
    for (auto road : roads) {
      if (on_or_below(root, road) || on_or_below(road, root)) {
        common::log_warning(
            "exec is confined ({}), but policy.write_roots lists {}, which holds or lies in {}: "
            "files the host writes there (cron jobs, units, libraries) can run code as root",
            *confined, common::log_value(root), road);
        break;
      }
    }
  }
}

asio::awaitable<int> agent::exit_when_asked() {
  while (!exit_wanted_) co_await exit_asked_->wait();
  common::log_info("exiting with status {} to make way for the upgraded binary",
                   state_->exit_after_reply.value_or(0));
  co_return state_->exit_after_reply.value_or(0);
}

asio::awaitable<void> agent::serve_qemu_ga() {
  if (qemu_ga_port_ && state_->parts.serve_qemu_ga) {
    common::log_info("serving the qemu-guest-agent protocol on port {}", qemu_ga_port_->describe());
    co_await state_->parts.serve_qemu_ga(*state_, *qemu_ga_port_);
  }
  // Without it (or once it failed for good) the native port goes on: never the end of the agent.
  asio::steady_timer forever(ex_);
  for (;;) {
    forever.expires_at(asio::steady_timer::time_point::max());
    co_await forever.async_wait(asio::use_awaitable);
  }
}

void agent::note_pending_upgrade() const {
  auto r = read_upgrade_record(state_->options.upgrade.state_dir);
  if (!r || r->state != upgrade_state::pending) return;
  if (runs_inode(::getpid(), r->device, r->inode)) {
    common::log_info(
        "running the upgraded binary ({} from {}): the host confirms it, or the "
        "previous one is put back",
        r->to_version, r->from_version);
  }
}

asio::awaitable<void> agent::serve_hosts() {
  for (;;) {
    auto stream = co_await port_->wait_for_host();
    if (!stream) {
      common::log_error("port {} failed: {}", port_->describe(), stream.error().describe());
      co_return;
    }
    common::stream_options o;
    o.max_frame_size = state_->options.max_frame_size;
    o.write_timeout = state_->options.write_timeout;
    // A frame is never abandoned half-written: a stuck one stays in flight until the host
    // drains or goes away, so the framing on the wire stays intact.
    o.close_on_write_timeout = false;
    o.max_queued_bytes = state_->options.max_queued_reply_bytes * 2;
    auto s = std::make_shared<session>(*state_, guest_stream::create(std::move(stream.value()), o));
    current_ = s;
    co_await s->run();
    current_.reset();
  }
}

asio::awaitable<int> agent::telemetry_loop() {
  const auto& opt = state_->options;
  asio::steady_timer timer(ex_);
  auto next = std::chrono::steady_clock::now() + opt.telemetry_interval;
  std::uint32_t failures = 0;
  std::error_code last_error;
  for (;;) {
    timer.expires_at(next);
    co_await timer.async_wait(asio::use_awaitable);
    const auto now = std::chrono::steady_clock::now();
    next += opt.telemetry_interval;
    if (next < now) next = now + opt.telemetry_interval;  // a slow write delayed us: skip ticks
    // Hand the heap's free pages back to the guest. glibc keeps the heap at its high-water
    // mark: a burst of requests (file chunks, command output) raised an agent's RSS by 10% in
    // steps that stayed after the burst was over. Trimming about 1 MiB of heap takes microseconds.
    if (opt.trim_heap) ::malloc_trim(0);

    auto s = current_;
    if (!s || !s->handshaken() || !s->is_open()) continue;  // host absent: not a failure

    pb::Envelope e;
    e.set_session_id(s->id());
    auto* t = e.mutable_telemetry();
    *t = state_->telemetry_sample();
    if (!s->fits(e)) {
      // A frame over the host's limit would end its connection: not sent, and said why.
      common::log_warning("telemetry sample of {} bytes is over the host's frame limit of {}",
                          e.ByteSizeLong(), s->max_reply_bytes());
      continue;
    }
    // Urgent like any small reply: in line with answers to requests, ahead of bulk data, and
    // never starved by a stream of urgent answers.
    const auto ec = co_await s->stream().send(
        e, {.timeout = opt.write_timeout, .replace_key = telemetry_replace_key, .urgent = true});
    if (!ec) {
      ++state_->telemetry_sent;
      if (failures > 0) {
        common::log_info("{}", log_text::telemetry_recovered(failures));
      }
      failures = 0;
      continue;
    }
    if (host_went_away(ec) || !s->is_open()) {
      common::log_debug("telemetry {} not sent: host went away", t->sequence());
      continue;
    }
    ++failures;
    last_error = ec;
    common::log_warning("{}: {}", log_text::telemetry_write_failed(failures, opt.failure_limit),
                        ec.message());
    if (failures >= opt.failure_limit) {
      common::log_error(
          "telemetry: {} consecutive failed writes (last error: {}); exiting with status {} so "
          "that the service manager restarts the agent",
          failures, last_error.message(), exit_telemetry_failed);
      co_return exit_telemetry_failed;
    }
  }
}

}  // namespace qxa::guest
