// SPDX-License-Identifier: MIT
// upgrade, upgrade-status: the agent replaces its own binary and a guard outside it rolls the
// change back unless the host confirms the new agent (see upgrade.hpp).
#include "qxa/guest/mech/upgrade.hpp"

#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "qxa/common/log.hpp"
#include "qxa/common/sha256.hpp"
#include "qxa/common/text.hpp"
#include "qxa/common/version.hpp"
#include "qxa/common/wall_clock.hpp"
#include "qxa/guest/ops/ops.hpp"

namespace qxa::guest::ops {

namespace {

// How long past its deadline a pending upgrade holds new ones up (its guard acts at once).
constexpr std::int64_t guard_grace_ms = 60'000;

std::string new_token() {
  std::array<std::uint8_t, 16> bytes{};
  if (::getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    const auto t = std::chrono::steady_clock::now().time_since_epoch().count();
    std::memcpy(bytes.data(), &t, sizeof t);
  }
  return common::sha256::hex(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

pb::UpgradeStatus::State to_proto(upgrade_state s) {
  switch (s) {
    case upgrade_state::pending:
      return pb::UpgradeStatus::STATE_PENDING;
    case upgrade_state::confirmed:
      return pb::UpgradeStatus::STATE_CONFIRMED;
    case upgrade_state::rolled_back:
      return pb::UpgradeStatus::STATE_ROLLED_BACK;
    case upgrade_state::none:
      break;
  }
  return pb::UpgradeStatus::STATE_NONE;
}

pb::Envelope upgrade_reply(const upgrade_record& r, const agent_state& state) {
  pb::Envelope reply;
  auto* s = reply.mutable_upgrade_status();
  s->set_state(to_proto(r.state));
  s->set_token(r.token);
  s->set_from_version(r.from_version);
  s->set_to_version(r.to_version);
  s->set_deadline_unix_ms(r.deadline_unix_ms);
  s->set_binary(r.binary);
  s->set_previous(r.previous);
  s->set_detail(r.detail);
  s->set_running_version(common::software_version);
  s->set_agent_pid(state.pid);
  return reply;
}

pb::Envelope upgrade_failed(const request_context& ctx, const common::error_info& e) {
  common::log_warning("audit: op=upgrade session={:016x} request={} outcome=failed error={}",
                      ctx.session_id, ctx.request_id, common::log_value(e.message));
  const auto code = e.code == std::errc::operation_not_permitted ? pb::ERROR_CODE_PERMISSION_DENIED
                    : e.code == std::errc::invalid_argument      ? pb::ERROR_CODE_INVALID_ARGUMENT
                    : e.code == std::errc::no_such_file_or_directory
                        ? pb::ERROR_CODE_NOT_FOUND
                        : pb::ERROR_CODE_FAILED_PRECONDITION;
  return error_reply(code, e.message);
}

// Runs the staged binary's --version: it must start on this guest and name itself.
asio::awaitable<common::result<std::string>> version_of(const std::string& staged) {
  spawn_options o;
  o.argv = {staged, "--version"};
  o.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"};
  auto child =
      co_await child_process::start(co_await asio::this_coro::executor, o, version_check_timeout);
  if (!child) {
    co_return common::error_info{child.error().code,
                                 "the new binary does not run: " + child.error().message};
  }
  auto done = co_await run_to_end(**child, {}, 4096, version_check_timeout);
  if (done.timed_out || done.status.code != 0) {
    co_return common::error_info{
        std::make_error_code(std::errc::invalid_argument),
        fmt::format("the new binary does not run: --version {}",
                    done.timed_out ? "did not end"
                    : done.status.signal != 0
                        ? fmt::format("was killed by signal {}", done.status.signal)
                        : fmt::format("exited with {}: {}", done.status.code,
                                      common::log_value(done.err.data.substr(0, 200))))};
  }
  co_return parse_version_output(done.out.data);
}

// Starts the guard, the previous binary, so that it outlives the agent: a transient unit under
// systemd (the agent's own unit's processes all end with it), its own session elsewhere.
asio::awaitable<std::optional<common::error_info>> start_guard(const upgrade_record& r,
                                                               const std::string& state_dir) {
  const std::vector<std::string> guard = {r.previous, std::string(upgrade_guard_argument),
                                          state_dir};
  if (r.unit.empty()) co_return start_detached(guard);
  spawn_options o;
  o.argv = {"systemd-run", "--quiet", "--collect",
            "--unit=quantix-kvm-agent-upgrade-guard-" + r.token.substr(0, 12),
            "--description=Quantix KVM agent upgrade guard (rolls back an unconfirmed upgrade)"};
  o.argv.insert(o.argv.end(), guard.begin(), guard.end());
  auto child = co_await child_process::start(co_await asio::this_coro::executor, o,
                                             std::chrono::seconds(30));
  if (!child) co_return common::error_info{child.error().code, child.error().message};
  auto done = co_await run_to_end(**child, {}, 4096, std::chrono::seconds(30));
  if (done.timed_out || done.status.code != 0) {
    co_return common::error_info{
        std::make_error_code(std::errc::io_error),
        fmt::format("systemd-run failed: {}", common::log_value(done.err.data.substr(0, 300)))};
  }
  co_return std::nullopt;
}

}  // namespace

asio::awaitable<pb::Envelope> upgrade(request_context ctx, pb::Envelope request) {
  const auto& options = ctx.state.options.upgrade;
  const auto& dir = options.state_dir;
  if (request.has_upgrade_confirm_request()) {
    auto r = read_upgrade_record(dir);
    if (!r) co_return upgrade_failed(ctx, r.error());
    if (r->state == upgrade_state::none || r->token != request.upgrade_confirm_request().token()) {
      co_return error_reply(pb::ERROR_CODE_NOT_FOUND, "no upgrade with this token");
    }
    if (r->state == upgrade_state::pending && runs_inode(::getpid(), r->device, r->inode)) {
      r->state = upgrade_state::confirmed;
      r->detail = "confirmed by the host";
      if (auto e = write_upgrade_record(dir, *r)) co_return upgrade_failed(ctx, *e);
      common::log_info("audit: op=upgrade session={:016x} request={} outcome=confirmed version={}",
                       ctx.session_id, ctx.request_id, common::log_value(r->to_version));
    }
    co_return upgrade_reply(*r, ctx.state);
  }

  const auto& req = request.upgrade_request();
  if (req.sha256().size() != 32) {
    co_return error_reply(pb::ERROR_CODE_INVALID_ARGUMENT, "the SHA-256 must be 32 bytes");
  }
  // One at a time: until the last one is confirmed or its guard acted (a guard gone with a
  // reboot never acts: a minute past its deadline the record no longer holds new upgrades up).
  if (auto last = read_upgrade_record(dir);
      last && last->state == upgrade_state::pending &&
      common::unix_ms() < last->deadline_unix_ms + guard_grace_ms) {
    co_return error_reply(
        pb::ERROR_CODE_FAILED_PRECONDITION,
        fmt::format("the upgrade to {} waits for its confirmation or its rollback (deadline in "
                    "{} s)",
                    last->to_version, (last->deadline_unix_ms - common::unix_ms()) / 1000));
  }
  if (ctx.state.upgrading) {
    co_return error_reply(pb::ERROR_CODE_FAILED_PRECONDITION, "an upgrade is under way");
  }
  if (const auto jobs = ctx.state.jobs ? ctx.state.jobs->running() : 0; jobs > 0 && !req.force()) {
    co_return error_reply(
        pb::ERROR_CODE_FAILED_PRECONDITION,
        fmt::format("{} detached job{} running, and the agent's restart would end {}: wait for "
                    "{}, kill {}, or force the upgrade",
                    jobs, jobs == 1 ? " is" : "s are", jobs == 1 ? "it" : "them",
                    jobs == 1 ? "it" : "them", jobs == 1 ? "it" : "them"));
  }
  // Another upgrade request must not pass the checks above while this one runs its own.
  ctx.state.upgrading = true;
  struct under_way {
    agent_state& state;
    bool done = false;
    ~under_way() {
      if (!done) state.upgrading = false;
    }
  } flag{ctx.state};
  auto binary = agent_binary(options.binary);
  if (!binary) co_return upgrade_failed(ctx, binary.error());
  const auto bin_dir = binary->substr(0, std::max<std::size_t>(binary->rfind('/'), 1));
  if (auto bad = check_trusted_directory(bin_dir)) co_return upgrade_failed(ctx, *bad);
  const auto staged = staged_binary(*binary);
  // A staged file that fails a check is of no further use: removed, so that no stale binary
  // lies beside the agent's.
  if (auto bad = check_staged(staged, req.sha256())) {
    ::unlink(staged.c_str());
    co_return upgrade_failed(ctx, *bad);
  }
  auto version = co_await version_of(staged);
  if (!version) {
    ::unlink(staged.c_str());
    co_return upgrade_failed(ctx, version.error());
  }

  const auto within = std::clamp<std::chrono::nanoseconds>(
      req.confirm_within_ms() != 0 ? std::chrono::milliseconds(req.confirm_within_ms())
                                   : options.confirm_within,
      min_confirm_within, max_confirm_within);
  upgrade_record r{
      .state = upgrade_state::pending,
      .token = new_token(),
      .from_version = common::software_version,
      .to_version = *version,
      .binary = *binary,
      .previous = *binary + ".previous",
      .unit = systemd_running(ctx.state.options.power.systemd_dir) ? own_systemd_unit() : "",
      .deadline_unix_ms =
          common::unix_ms() + std::chrono::duration_cast<std::chrono::milliseconds>(within).count(),
      .sha256 = common::sha256::hex(req.sha256()),
      .detail = "",
  };
  // Recorded before the swap: a record never misses an installed binary.
  if (auto e = write_upgrade_record(dir, r)) co_return upgrade_failed(ctx, *e);
  auto installed = install_staged(r.binary, staged, r.previous);
  if (!installed) {
    r.state = upgrade_state::none;
    r.detail = installed.error().message;
    (void)write_upgrade_record(dir, r);
    co_return upgrade_failed(ctx, installed.error());
  }
  std::tie(r.device, r.inode) = *installed;
  // Without a record of the new inode, or without a guard, nothing would undo a new binary that
  // does not start: undone now.
  auto undo = [&](const common::error_info& e, const std::string& what) {
    std::string detail;
    restore_previous(r, detail);
    r.state = upgrade_state::rolled_back;
    r.detail = what + e.message;
    (void)write_upgrade_record(dir, r);
    return upgrade_failed(ctx, {e.code, r.detail});
  };
  if (auto e = write_upgrade_record(dir, r))
    co_return undo(*e, "the record could not be written: ");
  if (auto e = co_await start_guard(r, dir)) co_return undo(*e, "the guard could not start: ");
  flag.done = true;  // the agent exits next
  common::log_info(
      "audit: op=upgrade session={:016x} request={} outcome=installed from={} to={} binary={} "
      "guard={}",
      ctx.session_id, ctx.request_id, common::log_value(r.from_version),
      common::log_value(r.to_version), common::log_value(r.binary),
      r.unit.empty() ? "own-session" : "systemd-run");
  ctx.state.exit_after_reply = exit_telemetry_failed;
  co_return upgrade_reply(r, ctx.state);
}

asio::awaitable<pb::Envelope> upgrade_status(request_context ctx, pb::Envelope) {
  auto r = read_upgrade_record(ctx.state.options.upgrade.state_dir);
  if (!r) co_return upgrade_failed(ctx, r.error());
  auto reply = upgrade_reply(*r, ctx.state);
  if (auto binary = agent_binary(ctx.state.options.upgrade.binary)) {
    reply.mutable_upgrade_status()->set_binary(*binary);
    if (auto digest = file_sha256(*binary)) {
      reply.mutable_upgrade_status()->set_running_sha256(common::sha256::bytes(*digest));
    }
  }
  co_return reply;
}

}  // namespace qxa::guest::ops
