// SPDX-License-Identifier: MIT
#include "qxa/host/agent_access.hpp"

#include <fmt/format.h>

#include "qxa/common/wall_clock.hpp"
#include "qxa/host/clock_sync.hpp"
#include "qxa/host/control_client.hpp"
#include "qxa/host/vm_state.hpp"

namespace qxa::host {

using common::errc;
using common::error_info;
using common::result;

namespace {

/// The daemon's own answer (not the agent's) as a local error.
error_info daemon_said(const pb::Error& e) { return {local_code(e.code()), e.message()}; }

class daemon_access final : public agent_access {
 public:
  daemon_access(asio::any_io_executor ex, std::string path) : client_(ex), path_(std::move(path)) {}

  asio::awaitable<std::optional<error_info>> open() override {
    if (auto ec = co_await client_.connect(path_)) {
      co_return error_info{make_error_code(errc::unavailable),
                           fmt::format("cannot reach qx-agentd at {}: {} (is the daemon running?)",
                                       path_, ec.message())};
    }
    co_return std::nullopt;
  }

  asio::awaitable<result<pb::StatusReport>> status(const std::string& vm) override {
    pb::ControlMessage m;
    m.mutable_status_query()->set_vm(vm);
    auto r = co_await client_.call(std::move(m), std::chrono::seconds(10));
    if (!r) co_return r.error();
    if (r->has_error()) co_return daemon_said(r->error());
    co_return r->status_report();
  }

  asio::awaitable<result<pb::Envelope>> call(const std::string& vm, pb::Envelope request,
                                             call_options options) override {
    const auto timeout = options.timeout.value_or(std::chrono::seconds(10));
    pb::ControlMessage m;
    auto* c = m.mutable_vm_call();
    c->set_vm(vm);
    *c->mutable_request() = std::move(request);
    c->set_timeout_ms(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
    if (!options.on_progress) {
      // The daemon answers at the call's deadline at the latest; a margin for the way there.
      auto r = co_await client_.call(std::move(m), timeout + std::chrono::seconds(5));
      if (!r) co_return r.error();
      if (r->has_error()) co_return daemon_said(r->error());
      co_return r->vm_call_result().reply();
    }
    c->set_stream_progress(true);
    std::optional<result<pb::Envelope>> final;
    auto ec = co_await client_.stream(
        std::move(m),
        [&](const pb::ControlMessage& msg) {
          if (msg.more() && msg.has_vm_call_result()) {
            options.on_progress(msg.vm_call_result().reply());
            return true;
          }
          if (msg.has_error()) {
            final.emplace(daemon_said(msg.error()));
          } else {
            final.emplace(msg.vm_call_result().reply());
          }
          return false;
        },
        options.on_sent);
    if (final) co_return std::move(*final);
    co_return error_info{ec ? ec : make_error_code(errc::connection_lost),
                         "qx-agentd closed the connection"};
  }

  asio::awaitable<error_info> watch(const std::string& vm,
                                    std::function<void(const pb::Telemetry&)> on_sample) override {
    pb::ControlMessage m;
    m.mutable_telemetry_watch()->set_vm(vm);
    std::optional<error_info> ended;
    auto ec = co_await client_.stream(std::move(m), [&](const pb::ControlMessage& msg) {
      if (msg.has_telemetry()) {
        on_sample(msg.telemetry());
        return true;
      }
      if (msg.has_error()) ended = daemon_said(msg.error());
      return false;
    });
    if (ended) co_return *ended;
    co_return error_info{ec ? ec : make_error_code(errc::connection_lost),
                         "qx-agentd closed the connection"};
  }

  asio::awaitable<void> flush(std::chrono::nanoseconds timeout) override {
    co_await client_.flush(timeout);
  }

 private:
  control_client client_;
  std::string path_;
};

class direct_access final : public agent_access {
 public:
  direct_access(asio::any_io_executor ex, std::string path, client_options options)
      : client_(agent_client::create(std::move(ex), path, std::move(options))),
        path_(std::move(path)) {}

  asio::awaitable<std::optional<error_info>> open() override {
    if (auto ec = co_await client_->connect()) {
      co_return error_info{make_error_code(errc::unavailable),
                           fmt::format("cannot reach the agent at {}: {}", path_, ec.message())};
    }
    co_return std::nullopt;
  }

  asio::awaitable<result<pb::StatusReport>> status(const std::string&) override {
    pb::StatusReport report;
    auto* s = report.add_vms();
    s->set_vm(path_);
    s->set_socket_path(path_);
    const auto& h = client_->hello();
    s->set_agent_version(h.software_version());
    *s->mutable_os() = h.os();
    s->set_hostname(h.hostname());
    s->set_session_id(client_->session_id());
    s->set_agent_pid(h.agent_pid());
    s->set_sessions(1);
    pb::Envelope ping;
    ping.mutable_ping();
    const auto sent_at = std::chrono::system_clock::now();
    const auto t0 = std::chrono::steady_clock::now();
    auto r = co_await client_->request(ping, std::chrono::seconds(3));
    s->set_state(r ? pb::VM_STATE_READY : pb::VM_STATE_UNRESPONSIVE);
    s->set_state_since_unix_ms(common::unix_ms());
    s->set_last_seen_unix_ms(common::unix_ms());  // the handshake just now
    if (r && r->has_pong()) {
      const auto rtt = std::chrono::steady_clock::now() - t0;
      s->set_rtt_ms(std::chrono::duration<double, std::milli>(rtt).count());
      if (r->pong().unix_ns() != 0) {
        s->set_clock_offset_ms(clock_offset_ms(r->pong().unix_ns(), sent_at, rtt));
      }
    } else {
      s->set_not_ready_since_unix_ms(common::unix_ms());
    }
    pb::Envelope tr;
    tr.mutable_telemetry_request();
    if (auto t = co_await client_->request(tr, std::chrono::seconds(3)); t && t->has_telemetry()) {
      *s->mutable_last_telemetry() = t->telemetry();
      s->set_last_telemetry_unix_ms(common::unix_ms());
      set_ip_addresses(*s, t->telemetry());
    }
    co_return report;
  }

  asio::awaitable<result<pb::Envelope>> call(const std::string&, pb::Envelope request,
                                             call_options options) override {
    co_return co_await client_->request(std::move(request), std::move(options));
  }

  asio::awaitable<error_info> watch(const std::string&,
                                    std::function<void(const pb::Telemetry&)> on_sample) override {
    for (;;) {
      auto e = co_await client_->next_event();
      if (!e) {
        co_return error_info{make_error_code(errc::connection_lost),
                             "connection to the agent lost: " + client_->end_reason()};
      }
      if (e->has_telemetry()) on_sample(e->telemetry());
    }
  }

  asio::awaitable<void> flush(std::chrono::nanoseconds timeout) override {
    co_await client_->flush(timeout);
  }

 private:
  std::shared_ptr<agent_client> client_;
  std::string path_;
};

}  // namespace

asio::awaitable<result<pb::Envelope>> agent_access::call(const std::string& vm,
                                                         pb::Envelope request,
                                                         std::chrono::nanoseconds timeout) {
  call_options o;
  o.timeout = timeout;
  co_return co_await call(vm, std::move(request), std::move(o));
}

std::unique_ptr<agent_access> through_daemon(asio::any_io_executor ex, std::string control_socket) {
  return std::make_unique<daemon_access>(std::move(ex), std::move(control_socket));
}

std::unique_ptr<agent_access> straight_to(asio::any_io_executor ex, std::string socket_path,
                                          client_options options) {
  return std::make_unique<direct_access>(std::move(ex), std::move(socket_path), std::move(options));
}

}  // namespace qxa::host
