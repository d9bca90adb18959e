// SPDX-License-Identifier: MIT
// qx-agent upgrade: a new agent binary to one VM, or to every ready VM a few at a time. For each:
// the upload (staged beside the agent's binary, SHA-256 checked), the upgrade (the guest swaps
// the binaries, starts its rollback guard and restarts), then the wait for a new agent to answer
// through qx-agentd and its confirmation. Unconfirmed, the guest rolls back by itself; what the
// agent that answers afterwards says is what is reported.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/this_coro.hpp>
#include <cerrno>
#include <cstring>

#include "cli.hpp"
#include "qxa/common/async.hpp"
#include "qxa/common/duration.hpp"
#include "qxa/common/sha256.hpp"

namespace qxa::cli {

using namespace std::chrono_literals;

namespace {

struct upgrade_flags {
  std::string binary;
  bool all = false;
  std::uint32_t parallel = 4;
  std::string confirm_within_text = "2m";
  bool force = false;
};

struct outcome {
  std::string vm = {};
  std::string result = {};  // upgraded, unchanged, rolled-back, failed, skipped
  std::string from = {}, to = {}, message = {};
  double seconds = 0;
  int status = exit_ok;
};

struct binary_file {
  int fd = -1;
  std::uint64_t size = 0;
  std::string sha256;  // raw
  ~binary_file() {
    if (fd >= 0) ::close(fd);
  }
};

std::optional<failure> open_binary(const std::string& path, binary_file& b) {
  b.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (b.fd < 0) return failure{exit_usage, fmt::format("{}: {}", path, std::strerror(errno))};
  struct stat st {};
  if (::fstat(b.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return failure{exit_usage, path + " is not a regular file"};
  }
  char magic[4] = {};
  if (::pread(b.fd, magic, sizeof magic, 0) != 4 || std::memcmp(magic,
                                                                "\x7f"
                                                                "ELF",
                                                                4) != 0) {
    return failure{exit_usage, path + " is not an ELF program (the static quantix-kvm-agent)"};
  }
  b.size = static_cast<std::uint64_t>(st.st_size);
  common::sha256 digest;
  std::string buf(1u << 16, '\0');
  for (off_t at = 0;;) {
    const auto n = ::pread(b.fd, buf.data(), buf.size(), at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return failure{exit_usage, fmt::format("{}: {}", path, std::strerror(errno))};
    if (n == 0) break;
    digest.update(buf.data(), static_cast<std::size_t>(n));
    at += n;
  }
  b.sha256 = common::sha256::bytes(digest.finish());
  return std::nullopt;
}

std::optional<pb::VmStatus> vm_status(const common::result<pb::StatusReport>& r) {
  if (!r || r->vms_size() == 0) return std::nullopt;
  return r->vms(0);
}

asio::awaitable<outcome> upgrade_one(host::agent_access& b, const options& o,
                                     const upgrade_flags& own, const binary_file& file,
                                     std::string vm, std::chrono::nanoseconds confirm_within) {
  outcome out{.vm = vm};
  const auto started = std::chrono::steady_clock::now();
  auto fail = [&](int status, std::string message) {
    out.result = "failed";
    out.status = status;
    out.message = std::move(message);
    out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return out;
  };
  auto before = vm_status(co_await b.status(vm));
  if (!before || before->state() != pb::VM_STATE_READY) {
    co_return fail(exit_unavailable, "its agent is not ready");
  }
  out.from = before->agent_version();
  pb::Envelope ask;
  ask.mutable_upgrade_status_request();
  auto now = co_await b.call(vm, ask, o.timeout);
  if (auto f = failed(now)) co_return fail(f->status, f->message);
  if (now->upgrade_status().running_sha256() == file.sha256) {
    out.result = "unchanged";
    out.to = out.from;
    out.message = "already runs this binary";
    co_return out;
  }

  pb::Envelope open;
  auto* op = open.mutable_file_write_open();
  op->set_agent_upgrade(true);
  op->set_expected_size(file.size);
  auto sent = co_await upload_file(b, vm, file.fd, std::move(open), o.timeout);
  if (sent.interrupted) co_return fail(exit_interrupted, "interrupted");
  if (sent.error) co_return fail(sent.error->status, "upload: " + sent.error->message);

  pb::Envelope request;
  auto* up = request.mutable_upgrade_request();
  up->set_sha256(file.sha256);
  up->set_force(own.force);
  up->set_confirm_within_ms(static_cast<std::uint32_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(confirm_within).count()));
  auto installed = co_await b.call(vm, request, std::max(o.timeout, std::chrono::nanoseconds(60s)));
  if (auto f = failed(installed)) co_return fail(f->status, f->message);
  const auto pending = installed->upgrade_status();
  out.to = pending.to_version();

  // A new agent answers once its service manager restarted it; the one that runs the new
  // binary confirms. Past the guest's deadline its guard rolls back and restarts the agent:
  // the agent then answering says so. A little longer than the deadline covers the restart.
  const auto give_up = std::chrono::steady_clock::now() + confirm_within + 60s;
  auto last_pid = before->agent_pid();
  auto last_session = before->session_id();
  // An agent that answered "pending" is asked again at each turn: the guard may put the old
  // binary back and restart it (a new agent) before it records the rollback, and that agent
  // then reports the rollback only once the guard has written it.
  bool ask_again = false;
  while (std::chrono::steady_clock::now() < give_up) {
    co_await common::sleep_for(250ms);
    auto s = vm_status(co_await b.status(vm));
    if (!s || s->state() != pb::VM_STATE_READY ||
        (!ask_again && s->agent_pid() == last_pid && s->session_id() == last_session)) {
      continue;
    }
    pb::Envelope confirm;
    confirm.mutable_upgrade_confirm_request()->set_token(pending.token());
    auto r = co_await b.call(vm, confirm, o.timeout);
    if (!r) continue;  // gone again (a new binary that does not stay up)
    if (auto f = failed(r)) co_return fail(f->status, "confirmation: " + f->message);
    const auto& st = r->upgrade_status();
    last_pid = s->agent_pid();
    last_session = s->session_id();
    ask_again = st.state() == pb::UpgradeStatus::STATE_PENDING;
    if (st.state() == pb::UpgradeStatus::STATE_CONFIRMED) {
      out.result = "upgraded";
      out.to = st.running_version();
      out.message = fmt::format("agent pid {} -> {}", before->agent_pid(), st.agent_pid());
      out.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      co_return out;
    }
    if (st.state() == pb::UpgradeStatus::STATE_ROLLED_BACK) {
      out.result = "rolled-back";
      out.status = exit_remote;
      out.to = st.running_version();
      out.message = st.detail();
      out.seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      co_return out;
    }
  }
  co_return fail(exit_tempfail,
                 fmt::format("no agent confirmed the upgrade to {}: the guest rolls it back by "
                             "itself at its deadline",
                             pending.to_version()));
}

void print_outcome(const options& o, const outcome& r) {
  if (o.json) return;
  if (r.result == "upgraded") {
    std::printf("%s: upgraded %s -> %s in %.1f s (%s)\n", shown(r.vm).c_str(),
                shown(r.from).c_str(), shown(r.to).c_str(), r.seconds, r.message.c_str());
  } else if (r.result == "unchanged") {
    std::printf("%s: unchanged, %s %s\n", shown(r.vm).c_str(), r.message.c_str(),
                shown(r.from).c_str());
  } else if (r.result == "rolled-back") {
    std::fprintf(stderr, "%s: rolled back to %s after %.1f s: %s\n", shown(r.vm).c_str(),
                 shown(r.to).c_str(), r.seconds, shown(r.message).c_str());
  } else {
    // failed, or skipped (not ready): what did not happen goes where errors go.
    std::fprintf(stderr, "%s: %s: %s\n", shown(r.vm).c_str(), r.result.c_str(),
                 shown(r.message).c_str());
  }
  std::fflush(stdout);
}

json outcome_json(const outcome& r) {
  return {{"vm", r.vm},         {"result", r.result},   {"from_version", r.from},
          {"to_version", r.to}, {"message", r.message}, {"seconds", r.seconds}};
}

}  // namespace

void print_upgrade_status(const options& o, const pb::UpgradeStatus& s) {
  std::printf("agent of %s: %s (pid %u), binary %s", shown(o.vm).c_str(),
              shown(s.running_version()).c_str(), s.agent_pid(), shown(s.binary()).c_str());
  if (!s.running_sha256().empty()) {
    std::printf(", SHA-256 %s", common::sha256::hex(s.running_sha256()).c_str());
  }
  std::printf("\n");
  switch (s.state()) {
    case pb::UpgradeStatus::STATE_PENDING:
      std::printf("last upgrade: %s -> %s, waiting for its confirmation (deadline %s ago)\n",
                  shown(s.from_version()).c_str(), shown(s.to_version()).c_str(),
                  human_age(s.deadline_unix_ms()).c_str());
      break;
    case pb::UpgradeStatus::STATE_CONFIRMED:
      std::printf("last upgrade: %s -> %s, confirmed; the previous binary is kept as %s\n",
                  shown(s.from_version()).c_str(), shown(s.to_version()).c_str(),
                  shown(s.previous()).c_str());
      break;
    case pb::UpgradeStatus::STATE_ROLLED_BACK:
      std::printf("last upgrade: %s -> %s, rolled back: %s\n", shown(s.from_version()).c_str(),
                  shown(s.to_version()).c_str(), shown(s.detail()).c_str());
      break;
    default:
      std::printf("no upgrade recorded\n");
  }
}

namespace {

asio::awaitable<int> run_upgrade(host::agent_access& b, const options& o,
                                 const upgrade_flags& own) {
  if (own.all == !o.vm.empty()) co_return report({exit_usage, "upgrade: name one VM, or --all"});
  std::chrono::nanoseconds confirm_within{};
  if (auto d = common::parse_duration(own.confirm_within_text);
      !d || *d < std::chrono::seconds(10) || *d > std::chrono::hours(1)) {
    co_return report({exit_usage, "upgrade: --confirm-within must be from 10s to 1h"});
  } else {
    confirm_within = *d;
  }
  if (own.parallel == 0) co_return report({exit_usage, "upgrade: --parallel must be at least 1"});
  binary_file file;
  if (auto f = open_binary(own.binary, file)) co_return report(*f);

  std::vector<std::string> targets;
  // Shared with the upgrades in flight, which may outlive this frame after an interruption.
  struct progress {
    explicit progress(const asio::any_io_executor& ex) : changed(ex) {}
    std::vector<outcome> results;
    std::size_t running = 0;
    common::async_event changed;
  };
  auto ex = co_await asio::this_coro::executor;
  auto p = std::make_shared<progress>(ex);
  auto& results = p->results;
  if (own.all) {
    auto report_all = co_await b.status("");
    if (!report_all) co_return report({status_for(report_all.code()), report_all.error().message});
    for (const auto& s : report_all->vms()) {
      if (s.state() == pb::VM_STATE_READY) {
        targets.push_back(s.vm());
      } else {
        outcome skipped{.vm = s.vm(), .result = "skipped", .message = "its agent is not ready"};
        print_outcome(o, skipped);
        results.push_back(skipped);
      }
    }
  } else {
    targets.push_back(o.vm);
  }

  // At most --parallel at once: each VM's agent restarts, and the uploads share the host.
  asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
  std::size_t next = 0;
  while (next < targets.size() || p->running > 0) {
    while (p->running < own.parallel && next < targets.size()) {
      ++p->running;
      const auto& vm = targets[next++];
      asio::co_spawn(
          ex, upgrade_one(b, o, own, file, vm, confirm_within),
          [p, &o, vm](std::exception_ptr e, outcome r) {
            if (e)
              r = outcome{
                  .vm = vm, .result = "failed", .message = "internal error", .status = exit_remote};
            print_outcome(o, r);
            p->results.push_back(std::move(r));
            --p->running;
            p->changed.notify_all();
          });
    }
    co_await p->changed.wait();
    if (cs.cancelled() != asio::cancellation_type::none) {
      co_await asio::this_coro::reset_cancellation_state();
      std::fprintf(stderr,
                   "qx-agent: upgrade interrupted; a guest whose upgrade was installed rolls it "
                   "back by itself unless it is confirmed\n");
      co_return exit_interrupted;
    }
  }
  int status = exit_ok;
  json list = json::array();
  for (const auto& r : results) {
    list.push_back(outcome_json(r));
    if (r.result != "skipped" && r.status != exit_ok && status == exit_ok) status = r.status;
  }
  if (o.json) print_json(own.all ? json{{"vms", list}} : list[0], 2);
  co_return status;
}

}  // namespace

verb upgrade_verb() {
  return make_verb<upgrade_flags>(
      {.name = "upgrade",
       .help = "replace a VM's agent (or every ready VM's) with a new binary; the guest puts the "
               "old one back unless the new agent answers and is confirmed",
       .takes_vm = false,
       .optional_vm = "the VM (or --all)",
       .arguments =
           [](CLI::App& s, upgrade_flags& f) {
             s.add_flag("--all", f.all, "every VM whose agent is ready");
             s.add_option("--binary", f.binary, "the new static quantix-kvm-agent")->required();
             s.add_option("--parallel", f.parallel, "with --all: at most this many at once")
                 ->capture_default_str();
             s.add_option("--confirm-within", f.confirm_within_text,
                          "the new agent must answer within this long, or the guest rolls back "
                          "(10s to 1h)")
                 ->capture_default_str();
             s.add_flag("--force", f.force,
                        "upgrade even while detached jobs run (the agent's restart ends them)");
           },
       .run = run_upgrade});
}

}  // namespace qxa::cli
