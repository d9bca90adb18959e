// SPDX-License-Identifier: MIT
// The manager's I/O: the socket directory (inotify and rescans), each VM's connection loop with
// its descriptor budget, heartbeats and events. What they mean for a VM's status is vm_state's
// to decide. One file because these coroutines share the VM records and the manager's running
// state; the decisions are already apart (vm_state, clock_sync, descriptor_budget).
#include "qxa/host/agent_manager.hpp"

#include <dirent.h>
#include <pwd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>
#include <random>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/log_limiter.hpp"
#include "qxa/common/version.hpp"
#include "qxa/common/wall_clock.hpp"

namespace qxa::host {

using common::errc;
using common::result;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::string_view socket_suffix = ".agent.sock";

std::chrono::nanoseconds with_jitter(std::chrono::nanoseconds d) {
  static std::mt19937 rng{std::random_device{}()};
  // +-20%, so that many VMs lost at once do not reconnect in lockstep.
  std::uniform_real_distribution<double> f(0.8, 1.2);
  return std::chrono::nanoseconds(
      static_cast<std::int64_t>(static_cast<double>(d.count()) * f(rng)));
}

}  // namespace

std::string vm_name_of(std::string_view file_name) {
  if (file_name.size() <= socket_suffix.size() || !file_name.ends_with(socket_suffix)) return {};
  return std::string(file_name.substr(0, file_name.size() - socket_suffix.size()));
}

std::optional<std::string> untrusted_socket(const std::string& path, uid_t self,
                                            const std::vector<uid_t>& owners) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0)
    return fmt::format("cannot stat it: {}", std::strerror(errno));
  if (S_ISLNK(st.st_mode)) return std::string("it is a symbolic link, not QEMU's socket");
  if (!S_ISSOCK(st.st_mode)) return std::string("it is not a socket");
  if (st.st_uid == 0 || st.st_uid == self ||
      std::find(owners.begin(), owners.end(), st.st_uid) != owners.end()) {
    return std::nullopt;
  }
  return fmt::format(
      "it belongs to uid {}, who is neither root, qx-agentd's user nor one of "
      "socket_owners: anyone's socket could pose as a VM",
      st.st_uid);
}

std::optional<std::string> unsafe_socket_dir(const struct stat& dir) {
  if ((dir.st_mode & S_IWOTH) == 0) return std::nullopt;
  return fmt::format(
      "others may write to it (mode {:o}): anyone could make a socket there that "
      "poses as a VM; make it writable by root and QEMU's user alone",
      dir.st_mode & 07777);
}

// ---- agent_manager ------------------------------------------------------------------------

struct agent_manager::vm_record {
  vm_record(const asio::any_io_executor& ex, const std::string& vm, const std::string& socket,
            const manager_options& o)
      : name(vm),
        path(socket),
        state(vm, socket, {o.reconnect_initial, o.reconnect_max}),
        wake(ex),
        clock(o.clock) {}
  std::string name;
  std::string path;
  vm_state state;
  std::shared_ptr<agent_client> client;
  common::async_event wake;  // the socket reappeared: retry now
  bool present = true;
  bool retry_now = false;
  std::vector<std::weak_ptr<telemetry_feed>> watchers;
  clock_sync clock;  // across connections: a migrated guest arrives on a new one
  /// What the guest makes this VM log, bounded (its connections' clients share it).
  std::shared_ptr<common::log_limiter> log_limit = std::make_shared<common::log_limiter>();

  [[nodiscard]] pb::VmStatus status() const {
    return state.status(client ? client->stats() : client_stats{});
  }
};

namespace {}  // namespace

void agent_manager::log_change(vm_record& vm, const std::optional<state_change>& c) {
  if (!c) return;
  if (c->quiet) {
    common::log_debug("{}", c->text(vm.name));
    return;
  }
  // A guest can make its VM change state as often as it likes: bounded per VM.
  const auto v = vm.log_limit->admit("state changes", std::chrono::steady_clock::now());
  if (!v.write) return;
  if (v.held_before == 0) {
    common::log_info("{}", c->text(vm.name));
  } else {
    common::log_info("{} ({} more state changes were not logged in the minute before)",
                     c->text(vm.name), v.held_before);
  }
}

void agent_manager::log_overdue_summaries() {
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [name, vm] : vms_) {
    for (const auto& [kind, count] : vm->log_limit->overdue(now)) {
      common::log_info("vm {}: {} more {} were not logged in the last minute", name, count, kind);
    }
  }
}

std::shared_ptr<agent_manager> agent_manager::create(asio::any_io_executor ex,
                                                     manager_options options) {
  return std::shared_ptr<agent_manager>(new agent_manager(std::move(ex), std::move(options)));
}

namespace {

std::uint64_t limit_or_own(std::uint64_t limit) {
  if (limit != 0) return limit;
  rlimit l{};
  if (::getrlimit(RLIMIT_NOFILE, &l) != 0 || l.rlim_cur == RLIM_INFINITY) return 1u << 20;
  return l.rlim_cur;
}

}  // namespace

agent_manager::agent_manager(asio::any_io_executor ex, manager_options options)
    : ex_(std::move(ex)),
      opt_(std::move(options)),
      rescan_timer_(ex_),
      budget_(ex_, limit_or_own(opt_.descriptor_limit)) {}

agent_manager::~agent_manager() { stop(); }

std::optional<common::error_info> agent_manager::start() {
  struct stat st {};
  if (::stat(opt_.socket_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return common::error_info{make_error_code(errc::invalid_argument),
                              fmt::format("socket directory {}: {}", opt_.socket_dir,
                                          errno ? std::strerror(errno) : "not a directory")};
  }
  if (auto unsafe = unsafe_socket_dir(st)) {
    return common::error_info{make_error_code(errc::invalid_argument),
                              fmt::format("socket directory {}: {}", opt_.socket_dir, *unsafe)};
  }
  socket_owner_uids_.clear();
  for (const auto& name : opt_.socket_owners) {
    if (const passwd* pw = ::getpwnam(name.c_str())) {
      socket_owner_uids_.push_back(pw->pw_uid);
    } else {
      common::log_debug("socket_owners: no user {} here", name);
    }
  }
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0 || ::inotify_add_watch(inotify_fd_, opt_.socket_dir.c_str(),
                                             IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM |
                                                 IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
    const int err = errno;
    if (inotify_fd_ >= 0) ::close(inotify_fd_);
    return common::error_info{
        std::error_code(err, std::system_category()),
        fmt::format("cannot watch {}: {}", opt_.socket_dir, std::strerror(err))};
  }
  inotify_ = std::make_unique<asio::posix::stream_descriptor>(ex_, inotify_fd_);
  running_ = true;
  common::log_info("watching {} for *{}", opt_.socket_dir, socket_suffix);
  rescan();
  auto self = shared_from_this();
  asio::co_spawn(
      ex_, [self]() { return self->watch_directory(); },
      common::contained("the socket directory watch"));
  asio::co_spawn(
      ex_, [self]() { return self->rescan_loop(); }, common::contained("the rescan timer"));
  return std::nullopt;
}

void agent_manager::stop() {
  if (!running_) return;
  running_ = false;
  std::error_code ignored;
  if (inotify_) inotify_->close(ignored);
  rescan_timer_.cancel();
  for (auto& [name, vm] : vms_) {
    vm->present = false;
    if (vm->client) vm->client->close("daemon stopping");
    vm->wake.notify_all();
    for (auto& w : vm->watchers) {
      if (auto f = w.lock()) f->finish();
    }
  }
  vms_.clear();
}

void agent_manager::update_timing(const manager_options& o) {
  opt_.heartbeat_interval = o.heartbeat_interval;
  opt_.heartbeat_timeout = o.heartbeat_timeout;
  opt_.reconnect_initial = o.reconnect_initial;
  opt_.reconnect_max = o.reconnect_max;
  opt_.rescan_interval = o.rescan_interval;
  opt_.clock = o.clock;
  for (auto& [name, vm] : vms_) {
    vm->clock.set_options(o.clock);
    vm->state.set_backoff({o.reconnect_initial, o.reconnect_max});
  }
}

asio::awaitable<void> agent_manager::watch_directory() {
  std::vector<char> buf(16 * 1024);
  while (running_) {
    auto [ec, n] = co_await inotify_->async_read_some(
        asio::buffer(buf), asio::experimental::as_tuple(asio::use_awaitable));
    if (!ec) {
      handle_events(buf.data(), n);
      continue;
    }
    if (running_) common::log_error("inotify on {} failed: {}", opt_.socket_dir, ec.message());
    co_return;
  }
}

void agent_manager::handle_events(const char* buf, std::size_t n) {
  for (std::size_t at = 0; at + sizeof(inotify_event) <= n;) {
    inotify_event ev{};
    std::memcpy(&ev, buf + at, sizeof ev);
    const std::string name = ev.len ? std::string(buf + at + sizeof ev) : std::string();
    at += sizeof(inotify_event) + ev.len;
    if (ev.mask & IN_Q_OVERFLOW) {
      rescan();
    } else if (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
      common::log_error("socket directory {} was removed", opt_.socket_dir);
      rescan();
    } else if (ev.mask & (IN_CREATE | IN_MOVED_TO | IN_ATTRIB)) {
      socket_appeared(name);
    } else if (ev.mask & (IN_DELETE | IN_MOVED_FROM)) {
      socket_vanished(name);
    }
  }
}

asio::awaitable<void> agent_manager::rescan_loop() {
  while (running_) {
    rescan_timer_.expires_after(opt_.rescan_interval);
    std::error_code ec;
    co_await rescan_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (!running_) co_return;
    rescan();
    log_overdue_summaries();
  }
}

void agent_manager::rescan() {
  std::set<std::string> seen;
  if (DIR* dir = ::opendir(opt_.socket_dir.c_str())) {
    while (const dirent* e = ::readdir(dir)) {
      const std::string name = e->d_name;
      if (vm_name_of(name).empty()) continue;
      seen.insert(name);
      socket_appeared(name);
    }
    ::closedir(dir);
  }
  std::vector<std::string> gone;
  for (const auto& [vm, rec] : vms_) {
    const std::string file = vm + std::string(socket_suffix);
    if (!seen.contains(file)) gone.push_back(file);
  }
  for (const auto& f : gone) socket_vanished(f);
}

void agent_manager::socket_appeared(const std::string& file_name) {
  const std::string vm = vm_name_of(file_name);
  if (vm.empty()) return;
  const std::string path = opt_.socket_dir + "/" + file_name;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (auto why = untrusted_socket(path, ::geteuid(), socket_owner_uids_)) {
    // Said once while it stays; a VM whose socket was replaced by such a one is dropped.
    if (auto [it, fresh] = refused_sockets_.try_emplace(file_name, *why);
        fresh || it->second != *why) {
      it->second = *why;
      if (S_ISSOCK(st.st_mode) || S_ISLNK(st.st_mode)) {
        common::log_warning("{}: refused as VM {}'s socket: {}", path, vm, *why);
      }
    }
    if (vms_.contains(vm)) drop_vm(vm, "its socket was replaced by one that is refused");
    return;
  }
  refused_sockets_.erase(file_name);
  if (auto it = vms_.find(vm); it != vms_.end()) {
    // Known VM, socket recreated (an agent or QEMU restarted): retry now, not at the backoff.
    it->second->retry_now = true;
    it->second->wake.notify_all();
    return;
  }
  auto rec = std::make_shared<vm_record>(ex_, vm, path, opt_);
  log_change(*rec, rec->state.discovered(common::unix_ms()));
  vms_.emplace(vm, rec);
  common::log_info("vm {}: socket appeared at {}", vm, path);
  spawn_vm_loop(rec);
}

void agent_manager::spawn_vm_loop(const std::shared_ptr<vm_record>& vm) {
  std::weak_ptr<agent_manager> weak = shared_from_this();
  auto start_over = [weak, vm] {
    auto self = weak.lock();
    if (!self || !self->running_ || !vm->present) return;
    if (vm->client) vm->client->close("internal error (logged)");
    retire_client(*vm);
    log_change(*vm, vm->state.internal_error(common::unix_ms()));
    auto t = std::make_shared<asio::steady_timer>(self->ex_);
    t->expires_after(with_jitter(self->opt_.reconnect_initial));
    t->async_wait([weak, vm, t](std::error_code) {
      auto again = weak.lock();
      if (again && again->running_ && vm->present) again->spawn_vm_loop(vm);
    });
  };
  asio::co_spawn(
      ex_, [self = shared_from_this(), vm] { return self->vm_loop(vm); },
      common::contained(fmt::format("vm {}: the connection loop", vm->name),
                        std::move(start_over)));
}

void agent_manager::socket_vanished(const std::string& file_name) {
  refused_sockets_.erase(file_name);
  const std::string vm = vm_name_of(file_name);
  auto it = vms_.find(vm);
  if (it == vms_.end()) return;
  struct stat st {};
  if (::lstat(it->second->path.c_str(), &st) == 0) return;  // replaced already
  drop_vm(vm, "socket removed");
}

void agent_manager::drop_vm(const std::string& vm, const std::string& why) {
  auto it = vms_.find(vm);
  if (it == vms_.end()) return;
  common::log_info("vm {}: {}; dropping the VM", vm, why);
  auto rec = it->second;
  vms_.erase(it);
  rec->present = false;
  log_change(*rec, rec->state.removed(common::unix_ms()));
  if (rec->client) rec->client->close(why);
  rec->wake.notify_all();
  for (auto& w : rec->watchers) {
    if (auto f = w.lock()) f->finish();
  }
}

agent_manager::waiting_for_descriptor::waiting_for_descriptor(agent_manager& m) : m_(m) {
  if (m_.over_capacity_++ > 0) return;
  common::log_warning(
      "descriptor limit {} reached: at most {} VM connections ({} descriptors kept for the "
      "control socket and metrics); the other VMs wait, over capacity, until one comes free "
      "(raise LimitNOFILE to serve them all)",
      m_.budget_.limit(), m_.budget_.capacity(), m_.budget_.limit() - m_.budget_.capacity());
}

agent_manager::waiting_for_descriptor::~waiting_for_descriptor() {
  if (--m_.over_capacity_ > 0 || !m_.running_) return;
  common::log_info("every VM has its connection again (descriptor limit {})", m_.budget_.limit());
}

void agent_manager::retire_client(vm_record& vm) {
  if (vm.client) vm.state.retire(vm.client->stats());
  vm.client.reset();
}

asio::awaitable<void> agent_manager::vm_loop(std::shared_ptr<vm_record> vm) {
  // Waits for the backoff, or less when the socket is recreated.
  auto back_off = [&]() -> asio::awaitable<void> {
    asio::steady_timer t(ex_);
    t.expires_after(with_jitter(vm->state.next_backoff()));
    if (!vm->retry_now) co_await (t.async_wait(asio::use_awaitable) || vm->wake.wait());
    vm->retry_now = false;
  };
  while (vm->present && running_) {
    // A descriptor for the connection, within the budget; released before any backoff.
    auto slot = budget_.try_take();
    if (!slot) {
      log_change(*vm, vm->state.over_capacity(budget_.limit(), common::unix_ms()));
      const waiting_for_descriptor waiting(*this);
      while (!(slot = budget_.try_take()) && vm->present && running_) {
        co_await (budget_.freed() || vm->wake.wait());
      }
      if (!slot) co_return;
    }
    vm->state.attempt_started();
    auto client = agent_client::create(ex_, vm->path, opt_.client);
    client->set_log_limiter(vm->log_limit);
    vm->client = client;
    auto ec = co_await client->open();
    if (!ec && vm->present && running_) {
      log_change(*vm, vm->state.accepted(common::unix_ms()));
      ec = co_await client->handshake();
    }
    if (!vm->present || !running_) co_return;
    if (ec) {
      retire_client(*vm);
      slot.reset();
      log_change(*vm, vm->state.attempt_failed(ec, ec == asio::error::connection_refused,
                                               common::unix_ms()));
      co_await back_off();
      continue;
    }
    const auto connected_at = std::chrono::steady_clock::now();
    vm->retry_now = false;
    log_change(*vm, vm->state.connected(client->hello(), client->session_id(), common::unix_ms()));
    co_await (heartbeat(vm, client) || pump_events(vm, client));
    retire_client(*vm);
    slot.reset();
    if (!vm->present || !running_) co_return;
    bool wait_first = false;
    log_change(*vm, vm->state.connection_ended(client->end_reason(),
                                               std::chrono::steady_clock::now() - connected_at,
                                               common::unix_ms(), wait_first));
    if (wait_first) co_await back_off();
  }
}

asio::awaitable<void> agent_manager::heartbeat(std::shared_ptr<vm_record> vm,
                                               std::shared_ptr<agent_client> c) {
  asio::steady_timer t(ex_);
  while (c->is_connected()) {
    t.expires_after(opt_.heartbeat_interval);
    auto woke = co_await (t.async_wait(asio::use_awaitable) || c->wait_closed());
    if (woke.index() == 1 || !c->is_connected()) co_return;
    if (!c->is_ready()) continue;  // re-handshaking after an agent restart
    pb::Envelope ping;
    ping.mutable_ping()->set_nonce(static_cast<std::uint64_t>(common::unix_ms()));
    const auto sent_at = std::chrono::system_clock::now();
    const auto t0 = std::chrono::steady_clock::now();
    auto r = co_await c->request(std::move(ping), opt_.heartbeat_timeout);
    if (r && r->has_pong()) {
      const auto round_trip = std::chrono::steady_clock::now() - t0;
      log_change(*vm, vm->state.heartbeat_answered(round_trip, common::unix_ms()));
      co_await check_clock(vm, c, r->pong().unix_ns(), sent_at, round_trip);
    } else if (r.code() == errc::request_timeout) {
      log_change(*vm, vm->state.heartbeat_missed(opt_.heartbeat_timeout, common::unix_ms()));
    } else if (!c->is_connected()) {
      co_return;
    }
  }
}

asio::awaitable<void> agent_manager::check_clock(std::shared_ptr<vm_record> vm,
                                                 std::shared_ptr<agent_client> c,
                                                 std::int64_t guest_unix_ns,
                                                 std::chrono::system_clock::time_point sent_at,
                                                 std::chrono::nanoseconds rtt) {
  const auto lead = vm->clock.observe(guest_unix_ns, midpoint_unix_ns(sent_at, rtt), rtt,
                                      std::chrono::steady_clock::now());
  const auto offset_ms = static_cast<double>(vm->clock.offset().count()) / 1e6;
  vm->state.clock_observed(offset_ms);
  if (!lead) co_return;
  pb::Envelope set;
  set.mutable_time_request()->set_set(true);
  const auto set_at = std::chrono::system_clock::now();
  set.mutable_time_request()->set_set_unix_ns(common::unix_ns(set_at + *lead));
  const auto t0 = std::chrono::steady_clock::now();
  auto r = co_await c->request(std::move(set), opt_.heartbeat_timeout);
  if (r && r->has_time_reply() && r->time_reply().was_set()) {
    vm->state.clock_set(true);
    vm->state.clock_observed(
        clock_offset_ms(r->time_reply().unix_ns(), set_at, std::chrono::steady_clock::now() - t0));
    common::log_info(
        "vm {}: the guest's clock was {:+.0f} ms off (a pause or a migration); set "
        "to this host's",
        vm->name, offset_ms);
    co_return;
  }
  vm->state.clock_set(false);
  std::string why = !r               ? r.error().describe()
                    : r->has_error() ? r->error().message()
                                     : "the agent did not set it";
  common::log_warning("vm {}: the guest's clock is {:+.0f} ms off; setting it failed: {}", vm->name,
                      offset_ms, why);
}

asio::awaitable<void> agent_manager::pump_events(std::shared_ptr<vm_record> vm,
                                                 std::shared_ptr<agent_client> c) {
  for (;;) {
    auto e = co_await c->next_event();
    if (!e) co_return;
    if (e->has_telemetry()) {
      const auto& t = e->telemetry();
      vm->state.telemetry(t, common::unix_ms());
      std::erase_if(vm->watchers, [&](const std::weak_ptr<telemetry_feed>& w) {
        auto f = w.lock();
        if (f) f->push(t);
        return !f;
      });
    } else if (e->has_agent_ready()) {
      log_change(*vm, vm->state.agent_restarted(common::unix_ms()));
    } else if (e->has_hello_ack()) {
      log_change(*vm, vm->state.new_session(e->hello_ack(), c->session_id(), common::unix_ms()));
    }
  }
}

pb::StatusReport agent_manager::status(const std::string& vm) const {
  pb::StatusReport report;
  report.set_daemon_version(common::software_version);
  report.set_socket_dir(opt_.socket_dir);
  report.set_descriptor_limit(budget_.limit());
  report.set_max_vm_connections(budget_.capacity());
  report.set_vm_connections(budget_.in_use());
  for (const auto& [name, rec] : vms_) {
    if (!vm.empty() && name != vm) continue;
    *report.add_vms() = rec->status();
  }
  return report;
}

asio::awaitable<result<pb::Envelope>> agent_manager::call(const std::string& vm,
                                                          pb::Envelope request,
                                                          call_options options) {
  auto it = vms_.find(vm);
  if (it == vms_.end()) {
    co_return result<pb::Envelope>{
        errc::unavailable,
        fmt::format("no VM named '{}' (no {}/{}{})", vm, opt_.socket_dir, vm, socket_suffix)};
  }
  auto rec = it->second;
  auto client = rec->client;
  if (!client || !client->is_ready()) {
    // The agent cannot be reached now: unavailable (a call that loses its connection while it
    // runs is connection_lost).
    co_return result<pb::Envelope>{
        errc::unavailable,
        fmt::format("vm {} is {}{}", vm, to_string(rec->state.state()),
                    rec->state.last_error().empty() ? "" : ": " + rec->state.last_error())};
  }
  std::string op = common::body_name(request);
  if (op.ends_with("_request")) op.resize(op.size() - 8);
  auto r = co_await client->request(std::move(request), std::move(options));
  std::string outcome = "ok";
  if (!r) {
    outcome = r.code() == errc::request_timeout ? "timeout"
              : r.code() == errc::cancelled     ? "cancelled"
                                                : "connection_lost";
  } else if (r->has_error()) {
    outcome = r->error().code() == pb::ERROR_CODE_PERMISSION_DENIED ? "refused" : "error";
  }
  rec->state.request_done(op, outcome);
  co_return r;
}

std::vector<vm_metrics> agent_manager::metrics() const {
  std::vector<vm_metrics> out;
  out.reserve(vms_.size());
  for (const auto& [name, rec] : vms_) {
    out.push_back(rec->state.metrics(rec->client ? rec->client->stats() : client_stats{}));
  }
  return out;
}

capacity_figures agent_manager::capacity() const {
  return {.descriptor_limit = budget_.limit(),
          .max_vm_connections = budget_.capacity(),
          .vm_connections = budget_.in_use(),
          .vms_over_capacity = over_capacity_};
}

std::shared_ptr<telemetry_feed> agent_manager::watch(const std::string& vm) {
  auto it = vms_.find(vm);
  if (it == vms_.end()) return nullptr;
  auto feed = std::make_shared<telemetry_feed>(ex_, telemetry_feed_depth);
  it->second->watchers.push_back(feed);
  return feed;
}

}  // namespace qxa::host
