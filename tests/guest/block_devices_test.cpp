// SPDX-License-Identifier: MIT
// Block devices, their chains and their disks' places, over a sysfs tree written here as the
// kernel lays it out (the real one, with QEMU's disks, is in the Debian VM test).
#include "qxa/guest/platform/block_devices.hpp"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "guest/ops_test_support.hpp"
#include "qxa/guest/ops/mapping.hpp"
#include "support/temp_dir.hpp"

using qxa::test::call_handler;
using qxa::test::temp_dir;
namespace pb = quantix::agent::v1;
namespace qg = qxa::guest;
namespace fs = std::filesystem;

namespace {

// A device directory under devices/ with its attributes, and its class/block link.
void plant(const temp_dir& sys, const std::string& where, const std::string& devno,
           std::uint64_t sectors,
           std::initializer_list<std::pair<std::string, std::string>> attrs = {}) {
  const auto name = fs::path(where).filename().string();
  sys.write("devices/" + where + "/dev", devno + "\n");
  sys.write("devices/" + where + "/size", std::to_string(sectors) + "\n");
  sys.write("devices/" + where + "/ro", "0\n");
  for (const auto& [k, v] : attrs) sys.write("devices/" + where + "/" + k, v);
  fs::create_directories(sys / "class/block");
  fs::create_symlink("../../devices/" + where, sys / ("class/block/" + name));
}

void slave(const temp_dir& sys, const std::string& where, const std::string& below) {
  fs::create_directories(sys / ("devices/" + where + "/slaves/" + below));
}

// vda (virtio, serial qx-root) with vda1; vdb (virtio, qx-lvm) with vdb1 under an LVM volume
// (dm-0) under a LUKS mapping (dm-1); sda on virtio-scsi (serial in its VPD page) and nvme0n1
// (serial on the controller) in an md mirror; vdc behind a PCI bridge; an empty loop device and
// a ram disk.
void plant_machine(const temp_dir& sys) {
  const std::string v1 = "pci0000:00/0000:00:04.0/virtio1/block/vda";
  plant(sys, v1, "252:0", 8388608, {{"serial", "qx-root\n"}});
  plant(sys, v1 + "/vda1", "252:1", 8386560, {{"partition", "1\n"}});
  const std::string v2 = "pci0000:00/0000:00:05.0/virtio2/block/vdb";
  plant(sys, v2, "252:16", 131072, {{"serial", "qx-lvm\n"}});
  plant(sys, v2 + "/vdb1", "252:17", 129024, {{"partition", "1\n"}});
  plant(sys, "virtual/block/dm-0", "254:0", 65536,
        {{"dm/name", "qxvg-data\n"}, {"dm/uuid", "LVM-abcdef\n"}});
  slave(sys, "virtual/block/dm-0", "vdb1");
  plant(sys, "virtual/block/dm-1", "254:1", 61440,
        {{"dm/name", "secret\n"}, {"dm/uuid", "CRYPT-LUKS2-1234-secret\n"}});
  slave(sys, "virtual/block/dm-1", "dm-0");

  const std::string scsi = "pci0000:00/0000:00:06.0/virtio3/host2/target2:0:0/2:0:0:3";
  plant(sys, scsi + "/block/sda", "8:0", 204800);
  sys.write("devices/" + scsi + "/vpd_pg80", std::string("\0\x80\0\x09qx-scsi  ", 13));
  sys.write("devices/" + scsi + "/model", "QEMU HARDDISK   \n");
  sys.write("devices/" + scsi + "/vendor", "QEMU    \n");
  fs::create_symlink("../../../2:0:0:3", sys / ("devices/" + scsi + "/block/sda/device"));
  const std::string nvme = "pci0000:00/0000:00:07.0/nvme/nvme0";
  plant(sys, nvme + "/nvme0n1", "259:0", 204800, {{"nsid", "1\n"}, {"wwid", "eui.0011\n"}});
  sys.write("devices/" + nvme + "/serial", "nvme-qx-1   \n");
  sys.write("devices/" + nvme + "/model", "QEMU NVMe Ctrl\n");
  fs::create_symlink("../../nvme0", sys / ("devices/" + nvme + "/nvme0n1/device"));
  plant(sys, "virtual/block/md0", "9:0", 204672, {{"md/level", "raid1\n"}});
  slave(sys, "virtual/block/md0", "sda");
  slave(sys, "virtual/block/md0", "nvme0n1");

  plant(sys, "pci0000:00/0000:00:1c.0/0000:01:00.0/virtio4/block/vdc", "252:32", 2048,
        {{"serial", "behind-bridge\n"}});
  plant(sys, "virtual/block/loop0", "7:0", 0, {{"loop/backing_file", "/x\n"}});
  plant(sys, "virtual/block/ram0", "1:0", 8192);
}

const qg::block_device& named(const std::vector<qg::block_device>& all, const std::string& n) {
  for (const auto& d : all) {
    if (d.name == n) return d;
  }
  FAIL("no block device " << n);
  throw std::logic_error("unreachable");
}

std::vector<std::string> names(const std::vector<const qg::block_device*>& ds) {
  std::vector<std::string> out;
  for (const auto* d : ds) out.push_back(d->name);
  return out;
}

qg::mount_entry mount_of(std::string point, std::uint32_t major, std::uint32_t minor) {
  qg::mount_entry m;
  m.mount_point = std::move(point);
  m.fs_type = "ext4";
  m.major = major;
  m.minor = minor;
  return m;
}

}  // namespace

TEST_CASE("block devices: kinds, parents, and each disk's bus, PCI path, SCSI address and serial",
          "[unit][guest][disks]") {
  temp_dir sys;
  plant_machine(sys);
  const auto all = qg::read_block_devices(sys.path());
  // Sorted by name; the empty loop device and the ram disk are not storage.
  std::vector<std::string> got;
  for (const auto& d : all) got.push_back(d.name);
  CHECK(got == std::vector<std::string>{"dm-0", "dm-1", "md0", "nvme0n1", "sda", "vda", "vda1",
                                        "vdb", "vdb1", "vdc"});

  const auto& vda = named(all, "vda");
  CHECK(vda.kind == qg::block_kind::disk);
  CHECK(vda.size_bytes == 8388608ull * 512);
  CHECK(vda.identity.bus == "virtio");
  CHECK(vda.identity.pci_path == "0000:00:04.0");
  CHECK(vda.identity.serial == "qx-root");
  CHECK(vda.identity.scsi_address.empty());
  const auto& vda1 = named(all, "vda1");
  CHECK(vda1.kind == qg::block_kind::partition);
  CHECK(vda1.partition == 1);
  CHECK(vda1.parents == std::vector<std::string>{"vda"});
  CHECK(vda1.identity.serial.empty());  // partitions carry no disk identity

  CHECK(named(all, "dm-0").kind == qg::block_kind::lvm);
  CHECK(named(all, "dm-0").alias == "qxvg-data");
  CHECK(named(all, "dm-0").parents == std::vector<std::string>{"vdb1"});
  CHECK(named(all, "dm-1").kind == qg::block_kind::crypt);
  CHECK(named(all, "md0").kind == qg::block_kind::md);
  CHECK(named(all, "md0").parents == std::vector<std::string>{"nvme0n1", "sda"});

  const auto& sda = named(all, "sda");
  CHECK(sda.identity.bus == "scsi");  // virtio-scsi: a SCSI host on a virtio device
  CHECK(sda.identity.pci_path == "0000:00:06.0");
  CHECK(sda.identity.scsi_address == "2:0:0:3");
  CHECK(sda.identity.serial == "qx-scsi");
  CHECK(sda.identity.model == "QEMU HARDDISK");
  CHECK(sda.identity.vendor == "QEMU");
  const auto& nvme = named(all, "nvme0n1");
  CHECK(nvme.identity.bus == "nvme");
  CHECK(nvme.identity.serial == "nvme-qx-1");
  CHECK(nvme.identity.nvme_namespace == 1);
  CHECK(nvme.identity.wwn == "eui.0011");
  CHECK(named(all, "vdc").identity.pci_path == "0000:00:1c.0/0000:01:00.0");

  // At most `limit` devices, the first by name.
  CHECK(qg::read_block_devices(sys.path(), 3).size() == 3);
  temp_dir none;
  CHECK(qg::read_block_devices(none.path()).empty());
}

TEST_CASE("a filesystem's chain runs down to its disks, through LUKS, LVM, partitions and md",
          "[unit][guest][disks]") {
  temp_dir sys;
  plant_machine(sys);
  const auto all = qg::read_block_devices(sys.path());
  const auto* top = qg::device_of_mount(all, mount_of("/secret", 254, 1));
  REQUIRE(top != nullptr);
  CHECK(top->name == "dm-1");
  CHECK(names(qg::chain_below(all, *top)) ==
        std::vector<std::string>{"dm-1", "dm-0", "vdb1", "vdb"});
  CHECK(names(qg::disks_below(all, *top)) == std::vector<std::string>{"vdb"});
  const auto* md = qg::device_of_mount(all, mount_of("/mirror", 9, 0));
  REQUIRE(md != nullptr);
  CHECK(names(qg::disks_below(all, *md)) == std::vector<std::string>{"nvme0n1", "sda"});
  // A whole disk is its own bottom; a number no device has (btrfs's anonymous ones) is none.
  CHECK(names(qg::disks_below(all, *qg::find_block_device(all, 252, 32))) ==
        std::vector<std::string>{"vdc"});
  CHECK(qg::device_of_mount(all, mount_of("/anon", 0, 45)) == nullptr);
}

TEST_CASE("freeze by serial: the filesystems on the named disks, and clear refusals",
          "[unit][guest][disks][freeze]") {
  temp_dir sys;
  plant_machine(sys);
  const auto all = qg::read_block_devices(sys.path());
  const std::vector<qg::mount_entry> mounts = {mount_of("/", 252, 1), mount_of("/secret", 254, 1),
                                               mount_of("/mirror", 9, 0)};
  auto r = qg::mounts_on_disks(mounts, all, {"qx-lvm"});
  REQUIRE(r);
  CHECK(r.value() == std::vector<std::string>{"/secret"});
  r = qg::mounts_on_disks(mounts, all, {"qx-scsi", "qx-root"});  // a mirror half is enough
  REQUIRE(r);
  CHECK(r.value() == std::vector<std::string>{"/", "/mirror"});

  r = qg::mounts_on_disks(mounts, all, {"no-such-disk"});
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "no disk has the serial no-such-disk");
  r = qg::mounts_on_disks(mounts, all, {"behind-bridge"});  // a disk with nothing mounted
  REQUIRE_FALSE(r);
  CHECK(r.error().message == "the disk with the serial behind-bridge holds no writable filesystem");
  r = qg::mounts_on_disks(mounts, all, {""});
  REQUIRE_FALSE(r);
  // A partition, an LVM volume or a mapping has no serial of its own to match.
  r = qg::mounts_on_disks(mounts, all, {"secret"});
  REQUIRE_FALSE(r);
}

TEST_CASE("a SCSI serial page is read by its length, and a malformed one gives no serial",
          "[unit][guest][disks]") {
  CHECK(qg::parse_vpd_serial(std::string("\0\x80\0\x04"
                                         "abcdXYZ",
                                         11)) == "abcd");
  CHECK(qg::parse_vpd_serial(std::string("\0\x80\0\x20"
                                         "short",
                                         9)) == "short");
  CHECK(qg::parse_vpd_serial(std::string("\0\x83\0\x04"
                                         "abcd",
                                         8))
            .empty());  // another page
  CHECK(qg::parse_vpd_serial(std::string("\0\x80", 2)).empty());
  CHECK(qg::parse_vpd_serial(std::string("\0\x80\x01\x00", 4) + std::string(300, 'a')).size() ==
        256);
}

TEST_CASE(
    "the disks operation maps each filesystem to its device and disks, and refuses an "
    "unknown serial to freeze",
    "[unit][guest][disks]") {
  temp_dir sys, proc;
  plant_machine(sys);
  proc.write("mountinfo",
             "20 1 252:1 / / rw,relatime - ext4 /dev/vda1 rw\n"
             "21 20 254:1 / /secret rw,relatime - ext4 /dev/mapper/secret rw\n"
             "22 20 0:22 / /proc rw - proc proc rw\n"
             "23 20 9:0 / /mirror ro,relatime - xfs /dev/md0 ro\n");
  qg::agent_options o;
  o.sys_root = sys.path();
  o.freeze.mountinfo = proc / "mountinfo";
  pb::Envelope request;
  request.mutable_disks_request();
  const auto reply = call_handler(qg::ops::disks, request, o);
  REQUIRE(reply.has_disks_reply());
  const auto& d = reply.disks_reply();
  REQUIRE(d.filesystems_size() == 3);  // proc is not a disk
  CHECK(d.filesystems(0).mount_point() == "/");
  CHECK(d.filesystems(0).device() == "vda1");
  CHECK(d.filesystems(0).disks(0) == "vda");
  CHECK(d.filesystems(1).device() == "dm-1");
  CHECK(d.filesystems(1).source() == "/dev/mapper/secret");
  REQUIRE(d.filesystems(1).disks_size() == 1);
  CHECK(d.filesystems(1).disks(0) == "vdb");
  CHECK(d.filesystems(2).read_only());
  CHECK(d.filesystems(2).disks_size() == 2);
  REQUIRE(d.devices_size() == 10);
  CHECK(d.devices(4).name() == "sda");
  CHECK(d.devices(4).bus() == "scsi");
  CHECK(d.devices(4).scsi_address() == "2:0:0:3");
  CHECK(d.devices(4).serial() == "qx-scsi");
  CHECK(d.devices(0).kind() == "lvm");
  CHECK(d.devices(0).alias() == "qxvg-data");

  pb::Envelope freeze;
  freeze.mutable_freeze_request()->add_disk_serials("nope");
  auto refused = call_handler(qg::ops::freeze, freeze, o);
  REQUIRE(refused.has_error());
  CHECK(refused.error().code() == pb::ERROR_CODE_INVALID_ARGUMENT);
  CHECK(refused.error().message() == "no disk has the serial nope");
  // The mirror is read-only: nothing on its disks to freeze.
  freeze.mutable_freeze_request()->set_disk_serials(0, "qx-scsi");
  refused = call_handler(qg::ops::freeze, freeze, o);
  REQUIRE(refused.has_error());
  CHECK_THAT(refused.error().message(), Catch::Contains("holds no writable filesystem"));
}

TEST_CASE("diskstats and per-CPU times parse as the kernel writes them", "[unit][guest]") {
  const auto io = qg::parse_diskstats(
      " 252       0 vda 1200 30 96000 800 400 10 32000 600 0 1100 1400 5 0 2048 3 0 0\n"
      " 252       1 vda1 1100 30 90000 700 400 10 32000 600 0 1000 1300\n"
      "   8       0 sdb garbage\n"
      "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0\n");
  REQUIRE(io.size() == 3);
  CHECK(io[0].name == "vda");
  CHECK(io[0].reads == 1200);
  CHECK(io[0].read_sectors == 96000);
  CHECK(io[0].writes == 400);
  CHECK(io[0].write_sectors == 32000);
  CHECK(io[0].io_ms == 1100);
  CHECK(io[0].discards == 5);
  CHECK(io[0].discard_sectors == 2048);
  CHECK(io[1].discards == 0);  // a kernel before 4.18

  const auto t = qg::parse_proc_stat(
      "cpu  300 0 300 1600 0 0 0 0 0 0\n"
      "cpu0 100 0 200 800 10 1 2 3 0 0\n"
      "cpu1 200 0 100 800 0 0 0 0 0 0\n"
      "intr 5\n");
  REQUIRE(t);
  CHECK(t->cpu_count == 2);
  REQUIRE(t->cpus.size() == 2);
  CHECK(t->cpus[0].cpu == 0);
  CHECK(t->cpus[0].system == 200);
  CHECK(t->cpus[0].iowait == 10);
  CHECK(t->cpus[0].steal == 3);
  CHECK(t->cpus[1].user == 200);
}

TEST_CASE("telemetry carries whole disks' I/O and each CPU's times in milliseconds",
          "[unit][guest]") {
  temp_dir proc, sys;
  proc.write("stat", "cpu  300 0 300 1600 0 0 0 0 0 0\ncpu0 100 0 200 800 0 0 0 0 0 0\n");
  proc.write("diskstats",
             " 252 0 vda 1200 30 96000 800 400 10 32000 600 0 1100 1400\n"
             " 252 1 vda1 1100 30 90000 700 400 10 32000 600 0 1000 1300\n"
             "   7 0 loop0 0 0 0 0 0 0 0 0 0 0 0\n");
  sys.write("block/vda/dev", "252:0\n");
  sys.write("block/loop0/dev", "7:0\n");
  qg::sampler_sources src;
  src.proc_root = proc.path();
  src.sys_root = sys.path();
  src.addresses = nullptr;
  src.routes = nullptr;
  qg::telemetry_sampler sampler(src);
  const auto t = qg::ops::to_proto(sampler.take());
  REQUIRE(t.disk_io_size() == 1);  // vda1 is a partition, loop0 an idle loop device
  CHECK(t.disk_io(0).name() == "vda");
  CHECK(t.disk_io(0).read_bytes() == 96000ull * 512);
  CHECK(t.disk_io(0).written_bytes() == 32000ull * 512);
  REQUIRE(t.cpus_size() == 1);
  CHECK(t.cpus(0).system_ms() == 200 * 1000 / static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK)));
}
