// SPDX-License-Identifier: MIT
// qx-bench --vm: the real channel. Boots the bench's guest (the test guest, with qxa-port-echo
// in its /usr/local/bin) under QEMU, the agent stopped; measures the port's floors with the
// echo program (round trip of a 64-byte message, raw bulk each way, and a verified copy each
// way: SHA-256 on both ends, the guest reading or writing a file); then starts the agent in the
// guest and measures ours over the same port, straight to QEMU's socket (as `qx-agent
// --connect`) and through qx-agentd (the shipped qx-agentd.toml), side by side.
#pragma once

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "bench_io.hpp"
#include "calls.hpp"
#include "fleet.hpp"
#include "floors.hpp"
#include "report.hpp"
#include "support/vm.hpp"

namespace qxa::bench {

struct port_figures {
  latency rtt;
  double to_guest_mib_s = 0, to_host_mib_s = 0;  ///< raw bulk
  double verified_to_guest_mib_s = 0;            ///< into a file in the guest, SHA-256 on
  double verified_to_host_mib_s = 0;             ///< out of a file in the guest, SHA-256 on
};

struct channel_figures {
  latency rtt;
  double read_mib_s = 0, write_mib_s = 0;
};

/// One command to qxa-port-echo: a letter and a 64-bit little-endian count.
inline void port_command(int fd, char op, std::uint64_t count) {
  char c[9] = {op};
  for (int i = 1; i <= 8; ++i, count >>= 8) c[i] = static_cast<char>(count & 0xff);
  if (!write_all(fd, c, sizeof c)) die("the port echo is gone");
}

/// The floors of the port, measured against qxa-port-echo at the other end of `socket`; `data`
/// is what the verified write sends.
inline port_figures measure_port(const settings& s, const std::string& socket,
                                 const std::string& data) {
  port_figures f;
  const int fd = connect_unix(socket);
  char msg[64] = {'p'};
  port_command(fd, 'e', sizeof msg * static_cast<std::uint64_t>(s.pings));
  for (int i = 0; i < s.pings; ++i) {
    const auto t0 = clock_type::now();
    if (!write_all(fd, msg, sizeof msg) || !read_all(fd, msg, sizeof msg)) {
      die("the port echo stopped answering");
    }
    f.rtt.ms.push_back(ms_since(t0));
  }
  std::vector<char> block(floor_block, 'x');
  {
    const auto t0 = clock_type::now();
    port_command(fd, 'r', s.file_bytes);
    for (std::size_t sent = 0; sent < s.file_bytes; sent += block.size()) {
      if (!write_all(fd, block.data(), std::min(block.size(), s.file_bytes - sent))) {
        die("the port echo stopped reading");
      }
    }
    char done[8];
    if (!read_all(fd, done, sizeof done)) die("the port echo did not confirm what it read");
    f.to_guest_mib_s = mib_s(s.file_bytes, t0);
  }
  {
    const auto t0 = clock_type::now();
    port_command(fd, 's', s.file_bytes);
    for (std::size_t got = 0; got < s.file_bytes; got += block.size()) {
      if (!read_all(fd, block.data(), std::min(block.size(), s.file_bytes - got))) {
        die("the port echo stopped sending");
      }
    }
    f.to_host_mib_s = mib_s(s.file_bytes, t0);
  }
  // Verified copies: SHA-256 on both ends, the guest's end reading or writing its file. The
  // host hashes as it goes: natively, many times faster than the emulated guest.
  {
    const auto t0 = clock_type::now();
    port_command(fd, 'S', s.file_bytes);
    common::sha256 digest;
    for (std::size_t got = 0; got < s.file_bytes; got += block.size()) {
      const auto n = std::min(block.size(), s.file_bytes - got);
      if (!read_all(fd, block.data(), n)) die("the port echo stopped sending its file");
      digest.update(block.data(), n);
    }
    char theirs[32];
    if (!read_all(fd, theirs, sizeof theirs) ||
        common::sha256::bytes(digest.finish()) != std::string_view(theirs, sizeof theirs)) {
      die("the port echo's file arrived changed");
    }
    f.verified_to_host_mib_s = mib_s(s.file_bytes, t0);
  }
  {
    const auto t0 = clock_type::now();
    port_command(fd, 'R', data.size());
    common::sha256 digest;
    for (std::size_t sent = 0; sent < data.size(); sent += block.size()) {
      const auto n = std::min(block.size(), data.size() - sent);
      digest.update(data.data() + sent, n);
      if (!write_all(fd, data.data() + sent, n)) die("the port echo stopped reading");
    }
    char theirs[32];
    if (!read_all(fd, theirs, sizeof theirs) ||
        common::sha256::bytes(digest.finish()) != std::string_view(theirs, sizeof theirs)) {
      die("the port echo wrote something else");
    }
    f.verified_to_guest_mib_s = mib_s(data.size(), t0);
  }
  port_command(fd, 'q', 0);
  ::close(fd);
  return f;
}

/// Pings, a verified read of the guest's `/tmp/data.bin` and a verified write of `data`, made
/// to `vm` through the access `open_access` makes. Its connection ends on return (with the
/// io_context that holds it): QEMU takes one client at a time.
inline channel_figures measure_channel(
    const settings& s,
    const std::function<std::unique_ptr<host::agent_access>(asio::any_io_executor)>& open_access,
    const std::string& vm, const std::string& data) {
  channel_figures f;
  asio::io_context io;
  auto a = open_access(io.get_executor());
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        // The agent may still be starting in the guest: QEMU holds what is sent meanwhile, and
        // a handshake that times out is tried again.
        for (int attempt = 1;; ++attempt) {
          auto e = co_await a->open();
          if (!e) break;
          if (attempt == 5) die("cannot reach the agent in the guest: " + e->describe());
        }
        // One untimed round first, as the floors' verified copies come after their raw bulk:
        // the guest's first pass through the code and its buffers is slower under TCG.
        co_await ping_series(*a, vm, 20);
        co_await read_verified(*a, vm, "/tmp/data.bin", s.file_bytes);
        co_await write_verified(*a, vm, "/tmp/written.bin", data);
        f.rtt = co_await ping_series(*a, vm, s.pings);
        f.read_mib_s = co_await read_verified(*a, vm, "/tmp/data.bin", s.file_bytes);
        f.write_mib_s = co_await write_verified(*a, vm, "/tmp/written.bin", data);
      },
      [&io](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
        io.stop();  // the client's reader would keep it running
      });
  io.run();
  return f;
}

/// `dir`: a scratch directory of qx-bench's. Returns the table.
inline report measure_vm(const settings& s, const std::string& dir) {
  const auto vms = dir + "/vms";
  std::filesystem::create_directory(vms);
  const auto socket = vms + "/bench.agent.sock";
  test::test_vm vm({.memory_mb = 1024,
                    .socket_path = socket,
                    .kernel_args = "qxa.agent=none"});  // the port is the echo's first
  const watched_child qemu(vm.process().pid());  // killed if qx-bench gives up
  const auto boot0 = clock_type::now();
  if (!vm.wait_booted(std::chrono::seconds(120))) die("the guest did not boot:\n" + vm.console());
  std::printf("guest booted in %.1f s\n", ms_since(boot0) / 1000);
  if (s.file_bytes % (1 << 20) != 0) die("the VM's test file is a whole number of MiB");
  const auto mib = s.file_bytes >> 20;
  if (vm.run(fmt::format("dd if=/dev/urandom of=/tmp/data.bin bs=1M count={} 2>/dev/null", mib))
          .status != 0) {
    die("cannot write the guest's test file:\n" + vm.console());
  }
  const std::string port = "/dev/virtio-ports/org.quantix.agent.0";
  // In the background, so that the console stays free; the marker is split by "" in what is
  // typed, so that the console's echo of the line never matches it.
  vm.command("qxa-run ( /usr/local/bin/qxa-port-echo " + port +
             " /tmp/data.bin; echo QXA-ECHO\"\"-EXIT status=$? ) &");
  const auto data = random_bytes(s.file_bytes, 2);
  auto floor = measure_port(s, socket, data);
  if (!vm.console_has("QXA-ECHO-EXIT status=0", std::chrono::seconds(30))) {
    die("the port echo did not end well:\n" + vm.console());
  }
  if (vm.run("/sbin/quantix-kvm-agent --config /etc/quantix-kvm/agent.toml >/tmp/agent.log 2>&1 &")
          .status != 0) {
    die("cannot start the agent in the guest");
  }
  auto direct = measure_channel(
      s, [&](asio::any_io_executor ex) { return host::straight_to(ex, socket); }, "", data);
  channel_figures daemon;
  {
    const auto config = dir + "/qx-agentd.toml";
    std::filesystem::copy_file(QXA_SHIPPED_DAEMON_CONFIG, config);
    const auto ctl = dir + "/ctl.sock";
    child d({QXA_AGENTD_PATH, "--config", config, "--socket-dir", vms, "--control-socket", ctl});
    if (wait_ready(ctl, 1, clock_type::now(), std::chrono::seconds(60)) < 0) {
      die("the guest did not become ready in qx-agentd");
    }
    daemon = measure_channel(
        s, [&](asio::any_io_executor ex) { return host::through_daemon(ex, ctl); }, "bench", data);
  }
  report t{.columns = {"floor", "direct", "qx-agentd"}, .ratios = {{1, 0}, {2, 0}}, .rows = {}};
  t.rows.push_back({"ping round trip p50 (ms)",
                    {floor.rtt.pct(0.5), direct.rtt.pct(0.5), daemon.rtt.pct(0.5)},
                    true});
  t.rows.push_back({"ping round trip p99 (ms)",
                    {floor.rtt.pct(0.99), direct.rtt.pct(0.99), daemon.rtt.pct(0.99)},
                    true});
  // Each transfer twice: against the raw port (the target's floor) and against a verified copy
  // over the same port (what SHA-256 in the guest leaves of it).
  t.rows.push_back({fmt::format("file read {} MiB against the raw port (MiB/s)", mib),
                    {floor.to_host_mib_s, direct.read_mib_s, daemon.read_mib_s},
                    false});
  t.rows.push_back({fmt::format("file read {} MiB against a verified copy (MiB/s)", mib),
                    {floor.verified_to_host_mib_s, direct.read_mib_s, daemon.read_mib_s},
                    false});
  t.rows.push_back({fmt::format("file write {} MiB against the raw port (MiB/s)", mib),
                    {floor.to_guest_mib_s, direct.write_mib_s, daemon.write_mib_s},
                    false});
  t.rows.push_back({fmt::format("file write {} MiB against a verified copy (MiB/s)", mib),
                    {floor.verified_to_guest_mib_s, direct.write_mib_s, daemon.write_mib_s},
                    false});
  return t;
}

}  // namespace qxa::bench
