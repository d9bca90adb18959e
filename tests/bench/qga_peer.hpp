// SPDX-License-Identifier: MIT
// qemu-guest-agent as qx-bench's peer: its JSON protocol on a unix socket, driven the way
// libvirt drives it, and the same measurements as ours.
#pragma once

#include <nlohmann/json.hpp>

#include "bench_io.hpp"

namespace qxa::bench {

using json = nlohmann::ordered_json;

class qga_client {
 public:
  explicit qga_client(const std::string& path) : fd_(connect_unix(path)) {}
  ~qga_client() { ::close(fd_); }
  json call(const json& request) {
    const auto text = request.dump() + "\n";
    write_all(fd_, text.data(), text.size());
    for (;;) {
      const auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        auto line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (line.find_first_not_of(" \r\t") == std::string::npos) continue;
        auto j = json::parse(line);
        if (j.contains("error")) die("qemu-ga: " + j["error"].dump());
        return j["return"];
      }
      char chunk[1 << 16];
      const ssize_t r = ::read(fd_, chunk, sizeof chunk);
      if (r <= 0) die("qemu-ga closed the connection");
      buf_.append(chunk, static_cast<std::size_t>(r));
    }
  }

 private:
  int fd_;
  std::string buf_;
};

struct qga_figures {
  latency rtt, exec;
  double read_mib_s = 0, idle_cpu_percent = 0;
  std::size_t idle_rss_kib = 0, peak_rss_kib = 0;
};

inline qga_figures measure_qga(const settings& s, const std::string& dir, const std::string& file,
                               pid_t pid) {
  qga_client q(dir + "/qga.sock");
  qga_figures f;
  for (int i = 0; i < s.pings; ++i) {
    const auto t0 = clock_type::now();
    q.call({{"execute", "guest-ping"}});
    f.rtt.ms.push_back(ms_since(t0));
  }
  f.idle_rss_kib = rss_kib(pid, "VmRSS:");
  const auto t0 = clock_type::now();
  const auto handle =
      q.call({{"execute", "guest-file-open"}, {"arguments", {{"path", file}, {"mode", "r"}}}});
  std::size_t got = 0;
  for (;;) {
    auto r = q.call(
        {{"execute", "guest-file-read"}, {"arguments", {{"handle", handle}, {"count", 4u << 20}}}});
    got += r["count"].get<std::size_t>();
    if (r["eof"].get<bool>() || r["count"].get<std::size_t>() == 0) break;
  }
  q.call({{"execute", "guest-file-close"}, {"arguments", {{"handle", handle}}}});
  if (got != s.file_bytes) die("qemu-ga read a different size");
  f.read_mib_s = static_cast<double>(got) / (1 << 20) / (ms_since(t0) / 1000);
  f.peak_rss_kib = rss_kib(pid, "VmHWM:");
  for (int i = 0; i < s.execs; ++i) {
    const auto e0 = clock_type::now();
    auto started = q.call({{"execute", "guest-exec"},
                           {"arguments", {{"path", "/bin/true"}, {"capture-output", true}}}});
    // As libvirt does: poll guest-exec-status until the process has exited.
    for (;;) {
      auto st =
          q.call({{"execute", "guest-exec-status"}, {"arguments", {{"pid", started["pid"]}}}});
      if (st["exited"].get<bool>()) break;
    }
    f.exec.ms.push_back(ms_since(e0));
  }
  const double cpu0 = cpu_seconds(pid);
  const auto i0 = clock_type::now();
  std::this_thread::sleep_for(s.idle);  // idle with a client attached
  f.idle_cpu_percent = (cpu_seconds(pid) - cpu0) / (ms_since(i0) / 1000) * 100;
  return f;
}

}  // namespace qxa::bench
