// SPDX-License-Identifier: MIT
// qx-agentd beside a real libvirtd: a domain defined with the agent channel of
// packaging/libvirt, booting the busybox test guest, and the lifecycle operators drive through
// virsh. Each ends with the VM ready again and exec working, with no manual step. The guest's
// agent serves the qemu-guest-agent port too, so libvirt's own agent commands work on it.
#include "support/libvirt.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/files.hpp"
#include "support/poll.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"
#include "support/vm.hpp"

using namespace std::chrono_literals;
using qxa::test::eventually;
using qxa::test::libvirt_daemon;
using qxa::test::run_cli;
using qxa::test::temp_dir;
using qxa::test::test_vm;
using qxa::test::wait_vm_state;

namespace {

// A domain booting the busybox test guest (its kernel and initramfs; TCG), with a console log
// in `dir`, the qcow2 disk `disk` (vda), a NIC wired to user networking, and no agent channel
// yet.
std::string domain_xml(const std::string& name, const std::string& dir, const std::string& disk) {
  const auto images = test_vm::image_dir();
  return fmt::format(R"(<domain type='qemu'>
  <name>{0}</name>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{1}/kernel</kernel>
    <initrd>{1}/initrd.cpio.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 qxa.interval=1s qxa.ip=192.0.2.10/24</cmdline>
  </os>
  <on_reboot>restart</on_reboot>
  <devices>
    <serial type='file'><source path='{2}/console.log'/></serial>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{3}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:12:34:56'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='none'/>
  </devices>
</domain>
)",
                     name, images, dir, disk);
}

// The guest's boot id through the daemon, or "" when exec does not work.
std::string boot_id(const std::string& ctl, const std::string& vm) {
  auto r = run_cli(
      {"--control-socket", ctl, "exec", vm, "--", "/bin/cat", "/proc/sys/kernel/random/boot_id"},
      30s);
  if (r.status != 0) return {};
  while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
  return r.out;
}

// Waits until the VM is ready and exec works, and returns its boot id.
std::string ready_boot(const std::string& ctl, const std::string& vm, const std::string& not_this) {
  std::string id;
  const bool ok = eventually(
      [&] {
        if (!wait_vm_state(ctl, vm, "ready", 1s)) return false;
        id = boot_id(ctl, vm);
        return !id.empty() && id != not_this;
      },
      180s, 200ms);
  REQUIRE(ok);
  return id;
}

}  // namespace

TEST_CASE(
    "libvirt: a domain with the agent channel is reached by qx-agentd, and is ready again with "
    "exec working after virsh reboot, destroy and start, and save and restore",
    "[vm][libvirt]") {
  libvirt_daemon libvirt;
  temp_dir run, dir;
  ::chmod(dir.path().c_str(), 0755);  // the console log: QEMU runs as libvirt-qemu
  // Where the shipped channel puts the socket (the host package's tmpfiles.d entry makes it).
  const std::string vms = "/run/quantix-kvm/vms";
  std::filesystem::create_directories(vms);
  const std::string ctl = run / "ctl.sock";
  const std::string name = fmt::format("qxa-test-{}", ::getpid());
  auto daemon = qxa::test::start_daemon(vms, run, "300ms", "1s");
  // An ext4 filesystem on a qcow2 disk.
  const std::string raw = dir / "data.raw", disk = dir / "data.qcow2";
  REQUIRE(qxa::test::run_command({"/sbin/mkfs.ext4", "-q", "-F", raw, "32M"}).status == 0);
  REQUIRE(
      qxa::test::run_command({"/usr/bin/qemu-img", "convert", "-O", "qcow2", raw, disk}).status ==
      0);
  libvirt.define(name, domain_xml(name, dir.path(), disk));
  // The channels are added as an operator adds them to an existing domain.
  const std::vector<std::string> attach = {QXA_SOURCE_DIR "/packaging/libvirt/qx-libvirt-attach",
                                           "-c", libvirt.uri(), name};
  auto added = qxa::test::run_command(attach);
  INFO(added.out << added.err);
  REQUIRE(added.status == 0);
  CHECK(added.out.find("org.quantix.agent.0 channel added") != std::string::npos);
  CHECK(added.out.find("org.qemu.guest_agent.0 channel added") != std::string::npos);
  added = qxa::test::run_command(attach);  // a second time changes nothing
  CHECK(added.status == 0);
  CHECK(added.out.find("already has the org.quantix.agent.0 channel") != std::string::npos);
  CHECK(libvirt.virsh({"dumpxml", name}).out.find(vms + "/" + name + ".agent.sock") !=
        std::string::npos);
  auto started = libvirt.virsh({"start", name});
  INFO(started.out << started.err << libvirt.log());
  REQUIRE(started.status == 0);
  const auto first = ready_boot(ctl, name, "");

  SECTION("libvirt's agent commands give the native channel's answers") {
    const auto native = [&](std::vector<std::string> args) {
      args.insert(args.begin(), {"--json", "--control-socket", ctl});
      auto r = run_cli(args, 60s);
      INFO(r.out << r.err);
      REQUIRE(r.status == 0);
      return nlohmann::json::parse(r.out);
    };
    const auto virsh = [&](std::vector<std::string> args) {
      auto r = libvirt.virsh(args);
      INFO(r.out << r.err);
      REQUIRE(r.status == 0);
      return r.out;
    };
    // The data disk, mounted as a guest would have it.
    REQUIRE(run_cli({"--control-socket", ctl, "exec", name, "--", "/bin/mount", "/dev/vda", "/mnt"})
                .status == 0);

    const auto ping = virsh({"qemu-agent-command", name, R"({"execute":"guest-ping"})"});
    CHECK(ping.find(R"({"return":{}})") != std::string::npos);

    // guestinfo: the hostname, the OS, the filesystems.
    const auto info = native({"info", name});
    const auto guestinfo = virsh({"guestinfo", name, "--hostname", "--os", "--filesystem"});
    CHECK_THAT(guestinfo,
               Catch::Contains("hostname            : " + info["hostname"].get<std::string>()));
    CHECK_THAT(guestinfo, Catch::Contains("os.kernel-release   : " +
                                          info["os"]["kernel_release"].get<std::string>()));
    CHECK_THAT(guestinfo, Catch::Contains("fs.0.mountpoint     : /mnt"));
    CHECK_THAT(guestinfo, Catch::Contains("fs.0.fstype         : ext4"));
    CHECK_THAT(guestinfo, Catch::Contains("fs.0.disk.0.alias   : vda"));

    // domfsinfo: the same filesystems the native view has, on the domain's disk.
    const auto disks = native({"disks", name});
    REQUIRE(disks["filesystems"].size() == 1);
    CHECK(disks["filesystems"][0]["mount_point"] == "/mnt");
    const auto fsinfo = virsh({"domfsinfo", name});
    CHECK_THAT(fsinfo, Catch::Matches("(.|\n)*/mnt +vda +ext4 +vda(.|\n)*"));

    // domifaddr --source agent: the interface and address the native view has.
    const auto network = native({"network", name});
    REQUIRE(network["interfaces"].size() >= 1);
    const auto& nic = network["interfaces"][0];
    const auto ifaddr = virsh({"domifaddr", name, "--source", "agent"});
    CHECK_THAT(ifaddr, Catch::Contains(nic["name"].get<std::string>()) &&
                           Catch::Contains(nic["mac"].get<std::string>()) &&
                           Catch::Contains("192.0.2.10/24"));

    // domtime: the guest's clock as the native view reads it, and --sync sets it.
    const auto domtime = virsh({"domtime", name});
    const auto guest_s = std::stoll(domtime.substr(domtime.find("Time: ") + 6));
    const auto native_s = native({"time", name})["unix_ns"].get<std::int64_t>() / 1'000'000'000;
    CHECK(std::abs(guest_s - native_s) <= 5);
    virsh({"domtime", name, "--sync"});

    // domfsfreeze and domfsthaw: the native view sees the freeze, and its end.
    // (virsh -q leaves out its "Froze N filesystem(s)".)
    virsh({"domfsfreeze", name});
    CHECK(native({"freeze", name, "--status"})["frozen"] == true);
    virsh({"domfsthaw", name});
    CHECK(native({"freeze", name, "--status"})["frozen"] == false);

    // A quiesced snapshot of the qcow2 disk: frozen for it, thawed after.
    const std::string overlay = dir / "overlay.qcow2";
    virsh({"snapshot-create-as", name, "--disk-only", "--quiesce", "--no-metadata", "--diskspec",
           "vda,file=" + overlay});
    CHECK(std::filesystem::exists(overlay));
    CHECK(native({"freeze", name, "--status"})["frozen"] == false);
    // The snapshot went through the agent: a freeze, then a thaw, in the guest's log.
    const auto console = qxa::test::file_contents(dir / "console.log");
    CHECK_THAT(console, Catch::Contains("audit: op=freeze") && Catch::Contains("audit: op=thaw"));

    // set-user-password: alice's hash changes in the guest.
    virsh({"set-user-password", name, "alice", "s3cret-from-virsh"});
    const auto shadow = run_cli(
        {"--control-socket", ctl, "exec", name, "--", "/bin/grep", "^alice:", "/etc/shadow"});
    CHECK_THAT(shadow.out, Catch::StartsWith("alice:$"));

    // set-user-sshkeys and get-user-sshkeys, as virsh documents them: a key file (whose last
    // line ends in a newline, so virsh also sends an empty key), added, then removed.
    const std::string key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl v@host";
    const std::string key_file = dir / "key.pub";
    {
      std::ofstream(key_file) << key << "\n";
    }
    virsh({"set-user-sshkeys", name, "alice", "--file", key_file});
    CHECK_THAT(virsh({"get-user-sshkeys", name, "alice"}), Catch::Contains(key));
    CHECK(native({"ssh-key", name, "list", "alice"})["keys"].dump().find("v@host") !=
          std::string::npos);
    virsh({"set-user-sshkeys", name, "alice", "--remove", "--file", key_file});
    CHECK_THAT(virsh({"get-user-sshkeys", name, "alice"}), !Catch::Contains(key));

    // shutdown --mode agent: the guest powers off through its agent.
    virsh({"shutdown", name, "--mode", "agent"});
    CHECK(eventually(
        [&] {
          return libvirt.virsh({"domstate", name}).out.find("shut off") != std::string::npos;
        },
        60s, 200ms));
  }

  SECTION("virsh reboot") {
    const auto r = libvirt.virsh({"reboot", name});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(ready_boot(ctl, name, first) != first);
  }

  SECTION("virsh destroy, then virsh start") {
    REQUIRE(libvirt.virsh({"destroy", name}).status == 0);
    // libvirt removes the socket; the daemon drops the VM.
    CHECK(eventually([&] { return !std::filesystem::exists(vms + "/" + name + ".agent.sock"); },
                     10s));
    CHECK(eventually([&] { return qxa::test::vm_status(ctl, name).is_null(); }, 10s));
    const auto r = libvirt.virsh({"start", name});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(ready_boot(ctl, name, first) != first);
  }

  SECTION("virsh save to a file, then virsh restore: the same boot goes on") {
    const std::string image = dir / "saved.img";
    auto r = libvirt.virsh({"save", name, image});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    CHECK(eventually([&] { return qxa::test::vm_status(ctl, name).is_null(); }, 10s));
    r = libvirt.virsh({"restore", image});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
    // The restored guest is the same boot: ready again, exec working, its clock set right.
    std::string after;
    REQUIRE(eventually(
        [&] {
          after = boot_id(ctl, name);
          return !after.empty();
        },
        120s, 200ms));
    CHECK(after == first);
  }
}
