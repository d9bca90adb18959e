// SPDX-License-Identifier: MIT
#include "qxa/guest/platform/system_info.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <filesystem>

#include "qxa/guest/ops/mapping.hpp"
#include "qxa/guest/platform/sampler.hpp"
#include "support/temp_dir.hpp"

namespace qg = qxa::guest;
namespace pb = quantix::agent::v1;
using qxa::test::temp_dir;

namespace {

const char* meminfo_fixture =
    "MemTotal:        2097152 kB\n"
    "MemFree:          524288 kB\n"
    "MemAvailable:    1048576 kB\n"
    "Buffers:           65536 kB\n"
    "Cached:           262144 kB\n"
    "SwapCached:            0 kB\n"
    "SwapTotal:       1048576 kB\n"
    "SwapFree:         786432 kB\n"
    "HugePages_Total:       0\n";

// Writes the /proc files every sample reads, with the given mountinfo.
void write_proc(const temp_dir& d, const std::string& mountinfo) {
  d.write("proc/meminfo", meminfo_fixture);
  d.write("proc/stat", "cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\nintr 1\n");
  d.write("proc/loadavg", "0.50 0.25 0.10 1/100 1234\n");
  d.write("proc/uptime", "12345.67 20000.00\n");
  d.write("proc/sys/kernel/hostname", "guest-1\n");
  d.write("proc/self/mountinfo", mountinfo);
  d.write("proc/1/stat", "1 (init) S\n");
  d.write("proc/42/stat", "42 (agent) S\n");
}

void write_interface(const temp_dir& d, const std::string& name, const std::string& flags,
                     const std::string& mac, const std::string& state, int mtu) {
  const std::string base = "sys/class/net/" + name + "/";
  d.write(base + "flags", flags + "\n");
  d.write(base + "address", mac + "\n");
  d.write(base + "operstate", state + "\n");
  d.write(base + "mtu", std::to_string(mtu) + "\n");
  d.write(base + "statistics/rx_bytes", "1000\n");
  d.write(base + "statistics/rx_packets", "10\n");
  d.write(base + "statistics/rx_errors", "1\n");
  d.write(base + "statistics/tx_bytes", "2000\n");
  d.write(base + "statistics/tx_packets", "20\n");
  d.write(base + "statistics/tx_errors", "2\n");
}

qg::sampler_sources fixture_sources(const temp_dir& d, std::vector<qg::address_entry> addrs) {
  qg::sampler_sources s;
  s.proc_root = d / "proc";
  s.sys_root = d / "sys";
  s.addresses = [addrs] { return addrs; };
  s.usage = [](const std::string&) -> std::optional<qg::disk_usage> {
    return qg::disk_usage{1000, 400, 500};
  };
  s.routes = [] {
    qg::route_entry r;
    r.destination = "0.0.0.0/0";
    r.gateway = "10.0.1.254";
    r.interface = "eth2";
    return std::vector<qg::route_entry>{r};
  };
  return s;
}

qg::address_entry addr(const std::string& ifname, qg::ip_family f, const std::string& a,
                       std::uint32_t prefix) {
  return {ifname, f, a, prefix};
}

}  // namespace

TEST_CASE("meminfo gives memory and swap in bytes", "[guest]") {
  const auto m = qg::parse_meminfo(meminfo_fixture);
  REQUIRE(m);
  CHECK(m->total == 2048ull << 20);
  CHECK(m->available == 1024ull << 20);
  CHECK(m->used == 1024ull << 20);
  CHECK(m->free == 512ull << 20);
  CHECK(m->buffers == 64ull << 20);
  CHECK(m->cached == 256ull << 20);
  CHECK(m->swap_total == 1024ull << 20);
  CHECK(m->swap_used == 256ull << 20);

  SECTION("an old kernel without MemAvailable gets an estimate") {
    const auto old =
        qg::parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\n");
    REQUIRE(old);
    CHECK(old->available == 350 * 1024);
  }
  SECTION("no MemTotal is a failure") { CHECK_FALSE(qg::parse_meminfo("MemFree: 1 kB\n")); }
  SECTION("more free swap than swap is clamped") {
    const auto odd = qg::parse_meminfo("MemTotal: 10 kB\nSwapTotal: 5 kB\nSwapFree: 9 kB\n");
    REQUIRE(odd);
    CHECK(odd->swap_free == 5 * 1024);
    CHECK(odd->swap_used == 0);
  }
}

TEST_CASE("CPU percent comes from the delta between two /proc/stat readings", "[guest]") {
  auto a = qg::parse_proc_stat("cpu  100 0 100 800 0 0 0 0 0 0\ncpu0 1\ncpu1 1\nintr 5\n");
  auto b = qg::parse_proc_stat("cpu  150 0 150 1100 100 0 0 0 0 0\ncpu0 1\ncpu1 1\nintr 5\n");
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->cpu_count == 2);
  // busy +100 of total +500 (idle +300, iowait +100).
  CHECK(qg::cpu_percent(*a, *b) == Approx(20.0));
  CHECK(qg::cpu_percent(*a, *a) == 0.0);
  CHECK(qg::cpu_percent(*b, *a) == 0.0);  // counters never go back; treat as no data
  CHECK_FALSE(qg::parse_proc_stat("intr 5\n"));
}

TEST_CASE("load average and uptime parse", "[guest]") {
  auto l = qg::parse_loadavg("0.50 0.25 0.10 1/100 1234\n");
  REQUIRE(l);
  CHECK(l->load1 == Approx(0.5));
  CHECK(l->load15 == Approx(0.1));
  CHECK(qg::parse_uptime("12345.67 20000.00\n").value() == Approx(12345.67));
  CHECK_FALSE(qg::parse_loadavg("garbage"));
}

TEST_CASE("mount paths with escaped characters are decoded", "[guest]") {
  CHECK(qg::decode_mount_path("/mnt/my\\040disk") == "/mnt/my disk");
  CHECK(qg::decode_mount_path("/a\\011b\\012c\\134d") == "/a\tb\nc\\d");
  CHECK(qg::decode_mount_path("/plain") == "/plain");
  CHECK(qg::decode_mount_path("/odd\\04") == "/odd\\04");  // incomplete escape kept as is
}

TEST_CASE("disks are real filesystems only, one per device, bind mounts collapsed", "[guest]") {
  const std::string mountinfo =
      "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
      "23 1 0:22 / /sys rw,nosuid - sysfs sysfs rw\n"
      "25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
      "26 23 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
      "27 1 0:24 / /run rw - tmpfs tmpfs rw\n"
      "28 1 254:2 / /srv/my\\040data rw shared:2 master:3 - xfs /dev/vdb rw\n"
      "29 1 254:1 /var/lib/docker /var/lib/docker rw - ext4 /dev/vda1 rw\n"  // bind of a subtree
      "30 1 0:25 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw\n"
      "31 1 0:26 / /mnt/nfs rw - nfs4 server:/export rw\n"
      "32 1 254:3 /sub /mnt/sub ro - ext4 /dev/vdc ro\n"       // only a subtree of vdc is mounted
      "33 1 254:3 / /mnt/vdc ro,noatime - ext4 /dev/vdc ro\n"  // then the whole of it
      "malformed line without separator\n";
  const auto disks = qg::select_disks(qg::parse_mountinfo(mountinfo));
  REQUIRE(disks.size() == 3);
  CHECK(disks[0].mount_point == "/");
  CHECK(disks[0].device == "/dev/vda1");
  CHECK(disks[1].mount_point == "/srv/my data");
  CHECK(disks[1].fs_type == "xfs");
  CHECK(disks[2].mount_point == "/mnt/vdc");  // the whole mount replaced the subtree bind
  CHECK(disks[2].read_only);
}

TEST_CASE("the sampler reads interfaces with no address, IPv6 only and many addresses", "[guest]") {
  temp_dir d;
  write_proc(d, "25 1 254:1 / / rw - ext4 /dev/vda1 rw\n");
  write_interface(d, "lo", "0x9", "00:00:00:00:00:00", "unknown", 65536);
  write_interface(d, "eth0", "0x1003", "52:54:00:00:00:01", "up", 1500);
  write_interface(d, "eth1", "0x1003", "52:54:00:00:00:02", "up", 9000);
  write_interface(d, "eth2", "0x1002", "52:54:00:00:00:03", "down", 1500);
  // Plumbing the default patterns leave out.
  write_interface(d, "docker0", "0x1003", "02:42:00:00:00:01", "up", 1500);
  write_interface(d, "veth1234", "0x1003", "02:42:00:00:00:02", "up", 1500);
  std::vector<qg::address_entry> addrs = {
      addr("docker0", qg::ip_family::ipv4, "172.17.0.1", 16),
      addr("lo", qg::ip_family::ipv4, "127.0.0.1", 8),
      addr("eth1", qg::ip_family::ipv6, "fd00::2", 64),
      addr("eth1", qg::ip_family::ipv6, "fe80::5054:ff:fe00:2", 64),
  };
  for (int i = 1; i <= 5; ++i)
    addrs.push_back(addr("eth2", qg::ip_family::ipv4, fmt::format("10.0.{}.1", i), 24));
  for (int i = 1; i <= 5; ++i)
    addrs.push_back(addr("eth2", qg::ip_family::ipv6, fmt::format("fd00:{}::1", i), 48));
  addrs[2].dynamic = true;  // fd00::2, from a router advertisement

  qg::telemetry_sampler sampler(fixture_sources(d, addrs));
  const auto t = qg::ops::to_proto(sampler.take());
  REQUIRE(t.interfaces_size() == 3);         // loopback, docker0 and the veth left out
  CHECK(t.primary_address() == "10.0.1.1");  // the default route's interface's first
  CHECK(t.interfaces(1).addresses(0).dynamic());
  CHECK_FALSE(t.interfaces(2).addresses(0).dynamic());
  const auto& eth0 = t.interfaces(0);
  CHECK(eth0.name() == "eth0");
  CHECK(eth0.mac() == "52:54:00:00:00:01");
  CHECK(eth0.addresses_size() == 0);
  CHECK(eth0.link_up());
  CHECK(eth0.mtu() == 1500);
  CHECK(eth0.rx_bytes() == 1000);
  CHECK(eth0.tx_errors() == 2);
  const auto& eth1 = t.interfaces(1);
  REQUIRE(eth1.addresses_size() == 2);
  CHECK(eth1.addresses(0).family() == pb::IpAddress::FAMILY_IPV6);
  CHECK(eth1.addresses(0).address() == "fd00::2");
  CHECK(eth1.addresses(0).prefix_length() == 64);
  CHECK(eth1.mtu() == 9000);
  const auto& eth2 = t.interfaces(2);
  CHECK(eth2.addresses_size() == 10);
  CHECK_FALSE(eth2.link_up());
  CHECK(eth2.oper_state() == "down");

  CHECK(t.memory().total_bytes() == 2048ull << 20);
  CHECK(t.hostname() == "guest-1");
  CHECK(t.process_count() == 2);
  CHECK(t.load1() == Approx(0.5));
  CHECK(t.uptime_seconds() == Approx(12345.67));
  REQUIRE(t.disks_size() == 1);
  CHECK(t.disks(0).total_bytes() == 1000);
  CHECK(t.disks(0).used_bytes() == 400);
}

TEST_CASE("the sampler's CPU percent is the delta since its previous sample", "[guest]") {
  temp_dir d;
  write_proc(d, "");
  qg::telemetry_sampler sampler(fixture_sources(d, {}));
  d.write("proc/stat", "cpu  200 0 200 1400 0 0 0 0 0 0\ncpu0 1\n");  // +200 busy of +800
  CHECK(qg::ops::to_proto(sampler.take()).cpu_percent() == Approx(25.0));
  d.write("proc/stat", "cpu  200 0 200 2400 0 0 0 0 0 0\ncpu0 1\n");  // idle only
  CHECK(qg::ops::to_proto(sampler.take()).cpu_percent() == Approx(0.0));
}

TEST_CASE("3000 interfaces and 500 mounts are sampled in time linear in their number", "[guest]") {
  // Builds a fixture of n interfaces (each with addresses) and n/6 mounts, returns the best of
  // three sampling times.
  auto measure = [](int interfaces, int mounts) {
    temp_dir d;
    std::string mountinfo;
    for (int i = 0; i < mounts; ++i) {
      mountinfo +=
          fmt::format("{} 1 8:{} / /mnt/disk{} rw - ext4 /dev/sd{} rw\n", 100 + i, i, i, i);
      // and a bind mount of each, which must collapse
      mountinfo += fmt::format("{} 1 8:{} /x /bind/{} rw - ext4 /dev/sd{} rw\n", 5000 + i, i, i, i);
    }
    write_proc(d, mountinfo);
    std::vector<qg::address_entry> addrs;
    for (int i = 0; i < interfaces; ++i) {
      const std::string name = fmt::format("ens{}", i);
      write_interface(d, name, "0x1003", "52:54:00:00:00:01", "up", 1500);
      addrs.push_back(addr(name, qg::ip_family::ipv4, "10.0.0.1", 24));
      addrs.push_back(addr(name, qg::ip_family::ipv6, "fd00::1", 64));
    }
    qg::telemetry_sampler sampler(fixture_sources(d, addrs));
    double best = 1e9;
    for (int round = 0; round < 3; ++round) {
      const auto t0 = std::chrono::steady_clock::now();
      const auto t = qg::ops::to_proto(sampler.take());
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, s);
      REQUIRE(t.interfaces_size() == interfaces);
      REQUIRE(t.disks_size() == mounts);
      REQUIRE(t.interfaces(interfaces - 1).addresses_size() == 2);
    }
    return best;
  };
  const double small = measure(750, 125);
  const double large = measure(3000, 500);
  WARN(
      fmt::format("sampling 750 interfaces + 125 mounts: {:.1f} ms; 3000 + 500: {:.1f} ms "
                  "(ratio {:.2f} for 4x the input)",
                  small * 1e3, large * 1e3, large / small));
  // Linear gives about 4; quadratic would give 16. The margin absorbs machine noise.
  CHECK(large / small < 9.0);
}

TEST_CASE("one real sample of this machine is complete", "[guest]") {
  qg::telemetry_sampler sampler;
  const auto t0 = std::chrono::steady_clock::now();
  const auto t = qg::ops::to_proto(sampler.take());
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  WARN(fmt::format("one real sample took {:.2f} ms ({} interfaces, {} disks, {} processes)", ms,
                   t.interfaces_size(), t.disks_size(), t.process_count()));
  CHECK(t.memory().total_bytes() > 0);
  CHECK(t.memory().available_bytes() <= t.memory().total_bytes());
  CHECK(t.process_count() > 0);
  CHECK(t.cpu_count() > 0);
  CHECK(t.uptime_seconds() > 0);
  CHECK_FALSE(t.hostname().empty());
  for (const auto& i : t.interfaces()) CHECK(i.name() != "lo");
}

TEST_CASE("os-release values are unquoted, and names that are not UTF-8 made so on the wire",
          "[guest]") {
  auto os = qg::parse_os_release(
      "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME='Debian GNU/Linux'\n"
      "VERSION_ID=\"12\"\nID=debian\n# comment\n");
  CHECK(os.pretty_name == "Debian GNU/Linux 12 (bookworm)");
  CHECK(os.name == "Debian GNU/Linux");
  CHECK(os.version == "12");
  CHECK(os.id == "debian");
  os.name = "Bad\xff";
  const auto wire = qg::ops::to_proto(os);
  CHECK(wire.name() == "Bad\\xff");
  CHECK(wire.pretty_name() == "Debian GNU/Linux 12 (bookworm)");
}

TEST_CASE("os-release as QEMU's test-qga.c has it: every field of guest-get-osinfo, escapes undone",
          "[guest][compat]") {
  // The os-release of test-qga's osinfo test, and what it expects of guest-get-osinfo.
  const auto os = qg::parse_os_release(
      "ID=qemu-ga-test\nNAME=QEMU-GA\nPRETTY_NAME=\"QEMU Guest Agent test\"\n"
      "VERSION=\"Test 1\"\nVERSION_ID=1\n"
      "VARIANT=\"Unit test \\\"\\'\\$\\`\\\\ and \\\\\\\\ etc.\"\nVARIANT_ID=unit-test\n");
  CHECK(os.id == "qemu-ga-test");
  CHECK(os.name == "QEMU-GA");
  CHECK(os.pretty_name == "QEMU Guest Agent test");
  CHECK(os.version_name == "Test 1");  // guest-get-osinfo's "version"
  CHECK(os.version == "1");            // its "version-id"
  CHECK(os.variant == "Unit test \"'$`\\ and \\\\ etc.");
  CHECK(os.variant_id == "unit-test");
  const auto wire = qg::ops::to_proto(os);
  CHECK(wire.variant() == os.variant);
  CHECK(wire.variant_id() == "unit-test");
}

TEST_CASE("hostnames are checked against RFC 1123", "[guest]") {
  const std::string longest_label(63, 'a');
  const std::string too_long_label(64, 'a');
  for (const std::string& ok :
       {std::string("web1"), std::string("a"), std::string("db-2.example.internal"),
        std::string("X9"), longest_label}) {
    INFO(ok);
    CHECK(qg::valid_hostname(ok));
  }
  for (const std::string& bad :
       {std::string(""), std::string("-lead"), std::string("trail-"), std::string("two..dots"),
        std::string(".dot"), std::string("dot."), std::string("under_score"), std::string("sp ace"),
        std::string("semi;colon"), std::string("new\nline"), too_long_label}) {
    INFO(bad);
    CHECK_FALSE(qg::valid_hostname(bad));
  }
  CHECK_FALSE(qg::valid_hostname(std::string(254, 'a')));
}
