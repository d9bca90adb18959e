// SPDX-License-Identifier: MIT
#include "qxa/host/metrics.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/read_until.hpp>
#include <asio/steady_timer.hpp>
#include <asio/streambuf.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <charconv>

#include "qxa/common/async.hpp"
#include "qxa/common/log.hpp"
#include "qxa/common/text.hpp"

namespace qxa::host {

using common::errc;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr std::size_t max_request_bytes = 8192;
constexpr auto request_deadline = std::chrono::seconds(5);

// Label values escape backslash, double quote and newline (the exposition format's rules);
// what came from a guest is made printable first, so no control character reaches a scraper's
// terminal or UI.
std::string label(std::string_view v) {
  std::string out;
  for (char c : common::printable(v)) {
    if (c == '\\' || c == '"') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

struct writer {
  std::string text;
  void family(const char* name, const char* type, const char* help) {
    fmt::format_to(std::back_inserter(text), "# HELP {} {}\n# TYPE {} {}\n", name, help, name,
                   type);
  }
  template <typename V>
  void sample(std::string_view name, const std::string& labels, V value) {
    fmt::format_to(std::back_inserter(text), "{}{{{}}} {}\n", name, labels, value);
  }
};

}  // namespace

std::string render_metrics(const std::vector<vm_metrics>& vms) {
  writer w;
  w.family("qxa_vms", "gauge", "VMs whose agent socket is in the socket directory.");
  fmt::format_to(std::back_inserter(w.text), "qxa_vms {}\n", vms.size());

  w.family("qxa_vm_state", "gauge", "1 for the VM's current connection state, 0 for the others.");
  for (const auto& v : vms) {
    for (auto s : {pb::VM_STATE_CONNECTING, pb::VM_STATE_HANDSHAKING, pb::VM_STATE_READY,
                   pb::VM_STATE_UNRESPONSIVE, pb::VM_STATE_STALE_SOCKET}) {
      w.sample("qxa_vm_state",
               fmt::format("vm=\"{}\",state=\"{}\"", label(v.status.vm()), to_string(s)),
               v.status.state() == s ? 1 : 0);
    }
  }

  w.family("qxa_heartbeat_rtt_seconds", "histogram", "Round trip of answered heartbeat pings.");
  for (const auto& v : vms) {
    const auto vm = label(v.status.vm());
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < rtt_buckets.size(); ++i) {
      cumulative += v.rtt_bucket_counts[i];
      w.sample("qxa_heartbeat_rtt_seconds_bucket",
               fmt::format("vm=\"{}\",le=\"{}\"", vm, rtt_buckets[i]), cumulative);
    }
    w.sample("qxa_heartbeat_rtt_seconds_bucket", fmt::format("vm=\"{}\",le=\"+Inf\"", vm),
             v.rtt_count);
    w.sample("qxa_heartbeat_rtt_seconds_sum", fmt::format("vm=\"{}\"", vm), v.rtt_sum_seconds);
    w.sample("qxa_heartbeat_rtt_seconds_count", fmt::format("vm=\"{}\"", vm), v.rtt_count);
  }

  w.family("qxa_requests_total", "counter",
           "Requests forwarded to the VM's agent, by operation and outcome.");
  for (const auto& v : vms) {
    for (const auto& [key, n] : v.requests) {
      w.sample("qxa_requests_total",
               fmt::format("vm=\"{}\",operation=\"{}\",outcome=\"{}\"", label(v.status.vm()),
                           label(key.first), label(key.second)),
               n);
    }
  }

  struct counter {
    const char* name;
    const char* help;
    std::uint64_t (pb::VmStatus::*get)() const;
  };
  for (const auto& c : {
           counter{"qxa_reconnects_total", "Connections to the VM's socket after the first.",
                   &pb::VmStatus::reconnects},
           counter{"qxa_timeouts_total", "Heartbeats and requests that missed their deadline.",
                   &pb::VmStatus::timeouts},
           counter{"qxa_bad_frames_total",
                   "Damaged, oversized or unparsable frames from the guest.",
                   &pb::VmStatus::bad_frames},
           counter{"qxa_unknown_replies_total", "Replies whose request id was not pending.",
                   &pb::VmStatus::unknown_replies},
           counter{"qxa_sessions_total", "Handshakes completed with the VM's agent.",
                   &pb::VmStatus::sessions},
           counter{"qxa_guest_data_trimmed_total",
                   "Messages from the guest cut to the host's limits (counts, name lengths).",
                   &pb::VmStatus::guest_data_trimmed},
       }) {
    w.family(c.name, "counter", c.help);
    for (const auto& v : vms) {
      w.sample(c.name, fmt::format("vm=\"{}\"", label(v.status.vm())), (v.status.*c.get)());
    }
  }

  // Guest telemetry: only for VMs that have sent some.
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto per_vm = [&](const char* name, const char* help, auto value) {
    w.family(name, "gauge", help);
    for (const auto& v : vms) {
      if (v.status.last_telemetry_unix_ms() == 0) continue;
      w.sample(name, fmt::format("vm=\"{}\"", label(v.status.vm())), value(v));
    }
  };
  per_vm("qxa_guest_memory_total_bytes", "Guest memory, as the guest sees it.",
         [](const vm_metrics& v) { return v.status.last_telemetry().memory().total_bytes(); });
  per_vm("qxa_guest_memory_available_bytes", "Guest memory available for new work.",
         [](const vm_metrics& v) { return v.status.last_telemetry().memory().available_bytes(); });
  per_vm("qxa_guest_cpu_percent", "Guest CPU use over the last telemetry interval.",
         [](const vm_metrics& v) { return v.status.last_telemetry().cpu_percent(); });
  per_vm("qxa_guest_telemetry_age_seconds", "Time since the VM's last telemetry arrived.",
         [&](const vm_metrics& v) {
           return static_cast<double>(now_ms - v.status.last_telemetry_unix_ms()) / 1000.0;
         });
  auto per_disk = [&](const char* name, const char* help, auto value) {
    w.family(name, "gauge", help);
    for (const auto& v : vms) {
      for (const auto& d : v.status.last_telemetry().disks()) {
        w.sample(name,
                 fmt::format("vm=\"{}\",mount_point=\"{}\",device=\"{}\"", label(v.status.vm()),
                             label(d.mount_point()), label(d.device())),
                 value(d));
      }
    }
  };
  per_disk("qxa_guest_disk_total_bytes", "Size of a guest filesystem.",
           [](const pb::Disk& d) { return d.total_bytes(); });
  per_disk("qxa_guest_disk_used_bytes", "Used bytes of a guest filesystem.",
           [](const pb::Disk& d) { return d.used_bytes(); });
  return std::move(w.text);
}

common::result<asio::ip::tcp::endpoint> parse_listen_address(const std::string& text) {
  using R = common::result<asio::ip::tcp::endpoint>;
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) {
    return R{errc::invalid_argument, fmt::format("'{}': expected ADDR:PORT", text)};
  }
  std::string host = colon == 0 ? "127.0.0.1" : text.substr(0, colon);  // ":PORT": loopback
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const auto port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || p != port_text.data() + port_text.size() || port > 65535) {
    return R{errc::invalid_argument, fmt::format("'{}': bad port '{}'", text, port_text)};
  }
  std::error_code aec;
  const auto address = asio::ip::make_address(host, aec);
  if (aec) return R{errc::invalid_argument, fmt::format("'{}': bad address '{}'", text, host)};
  return R{asio::ip::tcp::endpoint(address, static_cast<std::uint16_t>(port))};
}

std::shared_ptr<metrics_server> metrics_server::create(asio::any_io_executor ex,
                                                       std::shared_ptr<agent_manager> manager) {
  return std::shared_ptr<metrics_server>(new metrics_server(std::move(ex), std::move(manager)));
}

metrics_server::metrics_server(asio::any_io_executor ex, std::shared_ptr<agent_manager> manager)
    : acceptor_(ex), manager_(std::move(manager)) {}

std::optional<common::error_info> metrics_server::listen(const asio::ip::tcp::endpoint& at) {
  std::error_code ec;
  acceptor_.open(at.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor_.bind(at, ec);
  if (!ec) acceptor_.listen(64, ec);
  if (ec) {
    return common::error_info{ec, fmt::format("cannot listen for metrics on {}:{}: {}",
                                              at.address().to_string(), at.port(), ec.message())};
  }
  return std::nullopt;
}

asio::ip::tcp::endpoint metrics_server::local_endpoint() const {
  std::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void metrics_server::start() {
  asio::co_spawn(
      acceptor_.get_executor(), [self = shared_from_this()] { return self->accept_loop(); },
      common::contained("the metrics accept loop"));
}

void metrics_server::stop() {
  std::error_code ignored;
  acceptor_.close(ignored);
}

asio::awaitable<void> metrics_server::accept_loop() {
  while (acceptor_.is_open()) {
    auto [ec, socket] =
        co_await acceptor_.async_accept(asio::experimental::as_tuple(asio::use_awaitable));
    if (ec) {
      if (!acceptor_.is_open()) co_return;
      asio::steady_timer t(acceptor_.get_executor());
      t.expires_after(std::chrono::milliseconds(100));  // out of descriptors, say
      co_await t.async_wait(asio::use_awaitable);
      continue;
    }
    asio::co_spawn(
        acceptor_.get_executor(),
        [self = shared_from_this(), socket = std::move(socket)]() mutable {
          return self->serve(std::move(socket));
        },
        common::contained("a metrics connection"));
  }
}

asio::awaitable<void> metrics_server::serve(asio::ip::tcp::socket socket) {
  asio::streambuf buf(max_request_bytes);
  asio::steady_timer deadline(socket.get_executor());
  deadline.expires_after(request_deadline);
  // The request line and headers, bounded in size and time; a body is never read.
  auto got = co_await (asio::async_read_until(socket, buf, "\r\n\r\n",
                                              asio::experimental::as_tuple(asio::use_awaitable)) ||
                       deadline.async_wait(asio::use_awaitable));
  std::string status = "200 OK", body, content_type = "text/plain; version=0.0.4; charset=utf-8";
  if (got.index() == 1) co_return;  // too slow: just close
  if (auto [ec, n] = std::get<0>(got); ec) {
    if (ec != asio::error::not_found) co_return;  // closed early
    status = "431 Request Header Fields Too Large";
    body = "request too large\n";
  } else {
    std::string head(asio::buffers_begin(buf.data()), asio::buffers_begin(buf.data()) + n);
    const auto line = head.substr(0, head.find("\r\n"));
    const auto sp1 = line.find(' ');
    const auto sp2 = line.find(' ', sp1 + 1);
    const auto method = line.substr(0, sp1);
    const auto target = sp1 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos ||
        !line.substr(sp2 + 1).starts_with("HTTP/1.")) {
      status = "400 Bad Request";
      body = "bad request\n";
    } else if (method != "GET" && method != "HEAD") {
      status = "405 Method Not Allowed";
      body = "only GET\n";
    } else if (target != "/metrics" && !target.starts_with("/metrics?")) {
      status = "404 Not Found";
      body = "not found; metrics are at /metrics\n";
    } else {
      body = render_metrics(manager_->metrics());
      if (method == "HEAD") {
        const auto length = body.size();
        body.clear();
        std::string response = fmt::format(
            "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: "
            "close\r\n\r\n",
            content_type, length);
        co_await asio::async_write(socket, asio::buffer(response),
                                   asio::experimental::as_tuple(asio::use_awaitable));
        co_return;
      }
    }
    if (!status.starts_with("200")) content_type = "text/plain; charset=utf-8";
  }
  std::string response = fmt::format(
      "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
      status, content_type, body.size(), body);
  deadline.expires_after(request_deadline);
  co_await (asio::async_write(socket, asio::buffer(response),
                              asio::experimental::as_tuple(asio::use_awaitable)) ||
            deadline.async_wait(asio::use_awaitable));
  std::error_code ignored;
  socket.shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
}

}  // namespace qxa::host
