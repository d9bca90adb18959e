// SPDX-License-Identifier: MIT
// The agent in a Debian 12 guest with systemd, installed as users install it: from the agent
// ISO on a CD-ROM with install.sh, or the Debian package with dpkg. The unit, the udev rule and
// /etc/quantix-kvm/agent.toml are the shipped ones; only what a test says (a drop-in with short
// telemetry settings) differs.
#include <fmt/format.h>

#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "qxa/guest/core/log_text.hpp"
#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/fake_host.hpp"
#include "support/files.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"
#include "support/vm.hpp"

using namespace std::chrono_literals;
using qxa::test::child_process;
using qxa::test::console_result;
using qxa::test::eventually;
using qxa::test::guest_kind;
using qxa::test::run_cli;
using qxa::test::start_daemon_for_vms;
using qxa::test::temp_dir;
using qxa::test::test_vm;
using qxa::test::wait_vm_state;
using json = nlohmann::json;

namespace {

const std::string unit = "quantix-kvm-agent.service";

// A Debian guest booted to its console (its kind and memory are set here; the rest is the
// test's).
std::unique_ptr<test_vm> boot_debian(qxa::test::vm_options o) {
  o.guest = guest_kind::debian;
  o.memory_mb = 512;
  auto vm = std::make_unique<test_vm>(o);
  const auto started = std::chrono::steady_clock::now();
  const bool booted = vm->wait_booted(180s);
  INFO(vm->console());
  REQUIRE(booted);
  WARN(fmt::format(
      "the Debian guest reached its console in {:.1f} s",
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()));
  return vm;
}

// Mounts the CD-ROM on /media/cdrom.
void mount_cdrom(test_vm& vm) {
  const auto r = vm.run("mkdir -p /media/cdrom && mount -o ro /dev/sr0 /media/cdrom");
  INFO(r.out);
  REQUIRE(r.status == 0);
}

// The unit's journal as (priority, message) pairs, oldest first.
std::vector<std::pair<int, std::string>> journal(test_vm& vm) {
  const auto r =
      vm.run("journalctl -u " + unit + " -o json --output-fields=PRIORITY,MESSAGE --no-pager");
  REQUIRE(r.status == 0);
  std::vector<std::pair<int, std::string>> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] != '{') continue;
    const auto j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("MESSAGE") || !j["MESSAGE"].is_string()) continue;
    lines.emplace_back(std::stoi(j.value("PRIORITY", "6")), j["MESSAGE"].get<std::string>());
  }
  return lines;
}

// The priority of the first journal line containing `text`, or -1.
int priority_of(const std::vector<std::pair<int, std::string>>& lines, const std::string& text) {
  for (const auto& [priority, message] : lines) {
    if (message.find(text) != std::string::npos) return priority;
  }
  return -1;
}

std::string property(test_vm& vm, const std::string& name) {
  auto r = vm.run("systemctl show -p " + name + " --value " + unit);
  while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
  return r.out;
}

// Waits, inside the guest, until the unit is in `state` ("active", "failed"...).
bool wait_unit_state(test_vm& vm, const std::string& state) {
  const auto r = vm.run(fmt::format(
      "for i in $(seq 300); do [ \"$(systemctl is-active {})\" = {} ] && exit 0; sleep 0.1; "
      "done; systemctl status --no-pager {}; exit 1",
      unit, state, unit));
  INFO(r.out);
  return r.status == 0;
}

// A sparse raw disk of `mib` MiB with an MBR holding one partition of `type` from 1 MiB to the
// end (what fdisk would write; the host has no fdisk).
void write_partitioned_disk(const std::string& path, unsigned mib, unsigned char type) {
  std::string mbr(512, '\0');
  const std::uint32_t start = 2048, sectors = mib * 2048 - start;
  auto put32 = [&](std::size_t at, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) mbr[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
  };
  mbr[446 + 4] = static_cast<char>(type);
  put32(446 + 8, start);
  put32(446 + 12, sectors);
  mbr[510] = static_cast<char>(0x55);
  mbr[511] = static_cast<char>(0xaa);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(mbr.data(), static_cast<std::streamsize>(mbr.size()));
  out.close();
  std::filesystem::resize_file(path, std::uintmax_t{mib} << 20);
}

const json* with(const json& list, const std::string& key, const std::string& value) {
  for (const auto& e : list) {
    if (e.value(key, std::string()) == value) return &e;
  }
  return nullptr;
}

}  // namespace

TEST_CASE(
    "Debian guest: install.sh from the ISO starts the shipped unit and config under systemd, a "
    "bad config fails once at error priority, uninstall.sh removes all but the config",
    "[vm][debian]") {
  temp_dir vms, run;
  const std::string ctl = run / "ctl.sock";
  auto vm = boot_debian({.socket_path = vms / "deb1.agent.sock", .cdrom = QXA_AGENT_ISO});
  mount_cdrom(*vm);
  const auto install = vm->run("sh /media/cdrom/install.sh", 120s);
  INFO(install.out);
  REQUIRE(install.status == 0);
  CHECK_THAT(install.out, Catch::Contains("started (systemd): " + unit + " is active"));
  CHECK(vm->run("systemctl is-active " + unit).out == "active\n");
  CHECK(vm->run("cmp /media/cdrom/agent.toml /etc/quantix-kvm/agent.toml").status == 0);
  CHECK(property(*vm, "NRestarts") == "0");

  auto daemon = start_daemon_for_vms(vms, run);
  REQUIRE(wait_vm_state(ctl, "deb1", "ready", 60s));
  const auto info = run_cli({"--json", "--control-socket", ctl, "info", "deb1"});
  REQUIRE(info.status == 0);
  const auto os = json::parse(info.out)["os"];
  CHECK_THAT(os["pretty_name"].get<std::string>(), Catch::Contains("Debian GNU/Linux 12"));
  CHECK(os["kernel_release"] == test_vm::kernel_release());

  // The journal has the agent's lines at their own priorities, without a "<6>" left in them.
  const auto lines = journal(*vm);
  REQUIRE(!lines.empty());
  CHECK(priority_of(lines, "agent started on port /dev/virtio-ports/org.quantix.agent.0") == 6);
  CHECK(priority_of(lines, "session ") == 6);
  CHECK(priority_of(lines, "<") == -1);
  for (const auto& [priority, message] : lines) {
    INFO(message);
    CHECK(priority >= 5);  // a clean start warns of nothing
  }

  // A bad configuration: the start fails at once, the message is an error in the journal, and
  // systemd does not restart the agent every 2 s.
  const auto bad = vm->run(
      "cp /etc/quantix-kvm/agent.toml /root/agent.toml && "
      "echo 'bogus_key = 1' >> /etc/quantix-kvm/agent.toml && systemctl restart " +
      unit);
  CHECK(bad.status != 0);
  REQUIRE(wait_unit_state(*vm, "failed"));
  CHECK(property(*vm, "ExecMainStatus") == "2");
  const auto errors = vm->run("journalctl -u " + unit + " -p err -o cat --no-pager");
  CHECK_THAT(errors.out, Catch::Contains("bogus_key"));
  const auto restarts = property(*vm, "NRestarts");
  CHECK(vm->run("sleep 5").status == 0);  // two restart intervals: nothing may happen
  CHECK(property(*vm, "NRestarts") == restarts);
  CHECK(vm->run("systemctl is-failed " + unit).out == "failed\n");
  // install.sh run again keeps that configuration, and says the agent did not start, and why.
  const auto reinstall = vm->run("sh /media/cdrom/install.sh", 120s);
  CHECK(reinstall.status == 1);
  CHECK_THAT(reinstall.out, Catch::Contains("did not start") && Catch::Contains("bogus_key"));
  // Fixed: it starts again, and the host finds it.
  const auto session = qxa::test::vm_status(ctl, "deb1").value("session_id", "");
  REQUIRE(vm->run("cp /root/agent.toml /etc/quantix-kvm/agent.toml && systemctl restart " + unit)
              .status == 0);
  CHECK(!qxa::test::wait_new_session(ctl, "deb1", session, 60s).empty());
  // The host's heartbeats that waited in the port while the agent was down are old news to
  // the new agent, not a burst of warnings.
  REQUIRE(run_cli({"--control-socket", ctl, "ping", "deb1"}).status == 0);
  const auto restarted = journal(*vm);
  std::size_t last_start = 0;
  for (std::size_t i = 0; i < restarted.size(); ++i) {
    if (restarted[i].second.find("agent started on port") != std::string::npos) last_start = i;
  }
  for (std::size_t i = last_start; i < restarted.size(); ++i) {
    INFO(restarted[i].second);
    CHECK(restarted[i].first >= 5);
  }

  // uninstall.sh: the service stopped, every installed file gone, the config kept.
  const auto uninstall = vm->run("sh /media/cdrom/uninstall.sh", 120s);
  INFO(uninstall.out);
  REQUIRE(uninstall.status == 0);
  CHECK(vm->run("pidof quantix-kvm-agent").status != 0);
  const auto left = vm->run(
      "ls -d /usr/sbin/quantix-kvm-agent /lib/systemd/system/quantix-kvm-agent.service "
      "/lib/udev/rules.d/60-quantix-kvm-agent.rules /var/lib/quantix-kvm-agent "
      "/etc/systemd/system/*.wants/quantix-kvm-agent.service 2>/dev/null; "
      "systemctl list-unit-files --no-legend 'quantix*'; test -f /etc/quantix-kvm/agent.toml");
  CHECK(left.status == 0);
  INFO(left.out);
  CHECK(left.out.empty());
  REQUIRE(wait_vm_state(ctl, "deb1", "unresponsive", 60s));
}

namespace {

// The guest's package from CPack, on an ISO of its own (the guest reads it from its CD-ROM).
std::string package_iso(const temp_dir& dir) {
  const auto build = qxa::test::run_command(
      {"/bin/sh", "-c",
       fmt::format("cd '{}' && cpack -G DEB -B '{}' >/dev/null && mkdir -p '{}' && "
                   "cp '{}'/quantix-kvm-agent_*.deb '{}'/ && xorriso -report_about SORRY -as "
                   "mkisofs -quiet -R -J -o '{}' '{}'",
                   QXA_BINARY_DIR, dir / "cpack", dir / "media", dir / "cpack", dir / "media",
                   dir / "packages.iso", dir / "media")},
      120s);
  INFO(build.out << build.err);
  REQUIRE(build.status == 0);
  return dir / "packages.iso";
}

// Every path on the guest's root filesystem but those that change by themselves (logs, caches,
// dpkg's and systemd's own state), sorted, into FILE.
std::string list_files(const std::string& file) {
  return "find / -xdev \\( -path /var/log -o -path /var/cache -o -path /var/lib/dpkg -o -path "
         "/var/lib/apt -o -path /var/lib/systemd -o -path /media -o -path /tmp -o -path /root "
         "\\) -prune -o -print | sort > " +
         file;
}

}  // namespace

TEST_CASE(
    "Debian guest: the agent's Debian package installed with dpkg -i runs the shipped unit, and "
    "apt-get purge leaves the filesystem as it was",
    "[vm][debian]") {
  temp_dir vms, run, packages;
  const std::string ctl = run / "ctl.sock";
  auto vm = boot_debian({.socket_path = vms / "deb2.agent.sock", .cdrom = package_iso(packages)});
  mount_cdrom(*vm);
  REQUIRE(vm->run(list_files("/run/before")).status == 0);

  const auto install = vm->run("dpkg -i /media/cdrom/quantix-kvm-agent_*.deb", 120s);
  INFO(install.out);
  REQUIRE(install.status == 0);
  REQUIRE(wait_unit_state(*vm, "active"));
  // Static, started by the port: the udev rule's wants, nothing enabled.
  CHECK(vm->run("systemctl is-enabled " + unit).out == "static\n");
  CHECK_THAT(vm->run("systemctl show -p WantedBy --value " + unit).out, Catch::Contains(".device"));
  CHECK(property(*vm, "NRestarts") == "0");
  auto daemon = start_daemon_for_vms(vms, run);
  REQUIRE(wait_vm_state(ctl, "deb2", "ready", 60s));
  CHECK(run_cli({"--control-socket", ctl, "ping", "deb2"}).status == 0);
  const auto lines = journal(*vm);
  CHECK(priority_of(lines, "agent started on port /dev/virtio-ports/org.quantix.agent.0") == 6);

  // An upgrade (the package installed over itself) restarts the running agent on the new
  // binary, through deb-systemd-invoke; the host finds the new session.
  const auto pid = property(*vm, "MainPID");
  const auto session = qxa::test::vm_status(ctl, "deb2").value("session_id", "");
  const auto upgrade = vm->run("dpkg -i /media/cdrom/quantix-kvm-agent_*.deb", 120s);
  INFO(upgrade.out);
  REQUIRE(upgrade.status == 0);
  REQUIRE(wait_unit_state(*vm, "active"));
  CHECK(property(*vm, "MainPID") != pid);
  CHECK(!qxa::test::wait_new_session(ctl, "deb2", session, 60s).empty());

  const auto purge = vm->run("apt-get purge -y quantix-kvm-agent", 120s);
  INFO(purge.out);
  REQUIRE(purge.status == 0);
  CHECK(vm->run("pidof quantix-kvm-agent").status != 0);
  CHECK(vm->run("systemctl list-unit-files --no-legend 'quantix*'").out.empty());
  REQUIRE(vm->run(list_files("/run/after")).status == 0);
  const auto diff = vm->run("diff /run/before /run/after");
  INFO(diff.out);
  CHECK(diff.status == 0);
  REQUIRE(wait_vm_state(ctl, "deb2", "unresponsive", 60s));
}

TEST_CASE(
    "Debian guest: systemd restarts the agent after SIGKILL and after it exits 75 under a host "
    "that stopped reading",
    "[vm][debian]") {
  temp_dir vms, run;
  const std::string ctl = run / "ctl.sock";
  const std::string sock = vms / "deb3.agent.sock";
  auto vm = boot_debian({.socket_path = sock, .cdrom = QXA_AGENT_ISO});
  mount_cdrom(*vm);
  // Short telemetry settings in a drop-in: the shipped unit otherwise.
  const auto install = vm->run("mkdir -p /etc/systemd/system/" + unit +
                                   ".d && printf '[Service]\\nExecStart=\\n"
                                   "ExecStart=/usr/sbin/quantix-kvm-agent --telemetry-interval "
                                   "20ms --write-timeout 20ms\\n' "
                                   "> /etc/systemd/system/" +
                                   unit + ".d/fast.conf && sh /media/cdrom/install.sh",
                               120s);
  INFO(install.out);
  REQUIRE(install.status == 0);
  {
    auto daemon = start_daemon_for_vms(vms, run);
    REQUIRE(wait_vm_state(ctl, "deb3", "ready", 60s));
    const auto before = qxa::test::required_vm_status(ctl, "deb3");
    REQUIRE(vm->run("kill -KILL $(systemctl show -p MainPID --value " + unit + ")").status == 0);
    const auto now =
        qxa::test::wait_new_session(ctl, "deb3", before["session_id"].get<std::string>(), 60s);
    REQUIRE(!now.empty());
    CHECK(qxa::test::required_vm_status(ctl, "deb3")["agent_pid"] != before["agent_pid"]);
    CHECK(property(*vm, "NRestarts") == "1");
    daemon->signal(SIGKILL);
    REQUIRE(daemon->wait_exit(10s).has_value());
  }

  // A host that handshakes, then never reads: the agent's writes fail 50 times, it exits 75,
  // and systemd starts it again.
  const auto pid = property(*vm, "MainPID");
  {
    asio::io_context io;
    qxa::test::fake_host<qxa::test::unix_socket> host(qxa::test::connect_now(io, sock));
    qxa::test::run_on(io, [&]() -> asio::awaitable<void> { co_await host.handshake(30s); });
    const auto exited =
        vm->run("for i in $(seq 1200); do [ \"$(systemctl show -p NRestarts --value " + unit +
                    ")\" = 2 ] && exit 0; sleep 0.1; done; exit 1",
                150s);
    CHECK(exited.status == 0);
  }
  const auto lines = journal(*vm);
  CHECK(priority_of(lines, qxa::guest::log_text::telemetry_write_failed(50, 50)) == 4);
  const auto status = vm->run("journalctl -u " + unit + " -o cat --no-pager | grep -c 'status=75'");
  CHECK(status.out != "0\n");
  REQUIRE(wait_unit_state(*vm, "active"));
  CHECK(property(*vm, "MainPID") != pid);
}

TEST_CASE(
    "Debian guest: hostname, passwd, ssh-key, exec --user, cp both ways, a freeze of a second "
    "disk, users, the time zone, mkdir, mv and rm -r, and disks mapped to QEMU's serials and "
    "PCI slots (LVM on a partition, virtio-scsi) with a freeze by serial, and a detached job "
    "that outlives qx-agentd, through the unit as shipped",
    "[vm][debian]") {
  temp_dir vms, run, files;
  const std::string ctl = run / "ctl.sock";
  const std::string disk = files / "data.img";
  REQUIRE(qxa::test::run_command({"/sbin/mkfs.ext4", "-q", "-F", disk, "32M"}, 60s).status == 0);
  // Beside the data disk (no serial): a virtio disk with an LVM partition in slot 0x11, and a
  // virtio-scsi disk in slot 0x12.
  const std::string lvm_disk = files / "lvm.img", scsi_disk = files / "scsi.img";
  write_partitioned_disk(lvm_disk, 64, 0x8e);
  write_partitioned_disk(scsi_disk, 16, 0x83);
  auto vm = boot_debian(
      {.socket_path = vms / "deb4.agent.sock",
       .cdrom = QXA_AGENT_ISO,
       .disk = disk,
       .serial_disks = {{lvm_disk, "qx-lvm", 0x11, false}, {scsi_disk, "qx-scsi", 0x12, true}}});
  mount_cdrom(*vm);
  REQUIRE(
      vm->run("sh /media/cdrom/install.sh && mkdir -p /mnt/data && mount /dev/vdb /mnt/data", 120s)
          .status == 0);
  const auto lvm = vm->run(
      "set -e; d=/dev/disk/by-id/virtio-qx-lvm-part1; udevadm settle; pvcreate -q $d; "
      "vgcreate -q qxvg $d; lvcreate -q -y -n data -L 24M qxvg; mkfs.ext4 -q /dev/qxvg/data; "
      "mkdir -p /mnt/lv; mount /dev/qxvg/data /mnt/lv",
      120s);
  INFO(lvm.out);
  REQUIRE(lvm.status == 0);
  auto daemon = start_daemon_for_vms(vms, run);
  REQUIRE(wait_vm_state(ctl, "deb4", "ready", 60s));
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--control-socket", ctl});
    auto r = run_cli(args);
    INFO(r.err);
    return r;
  };

  REQUIRE(cli({"hostname", "deb4", "renamed-deb"}).status == 0);
  CHECK(vm->run("hostname; cat /etc/hostname").out == "renamed-deb\nrenamed-deb\n");

  const auto passwd = qxa::test::run_command(
      {"/bin/sh", "-c",
       "printf 'S3cret-Pa55\\n' | " QXA_CLI_PATH " --control-socket " + ctl + " passwd deb4 alice"},
      60s);
  INFO(passwd.err);
  REQUIRE(passwd.status == 0);
  // crypt(3) of the password with the stored hash as its setting gives the hash back, whatever
  // the method (perl-base is essential in Debian).
  const auto check = vm->run(
      "perl -e 'print crypt($ARGV[0], $ARGV[1]) eq $ARGV[1] ? \"match\" : \"differ\"' "
      "S3cret-Pa55 \"$(getent shadow alice | cut -d: -f2)\"; getent shadow alice | cut -c1-12");
  CHECK_THAT(check.out, Catch::StartsWith("match"));

  const std::string key =
      "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl one@host";
  REQUIRE(cli({"ssh-key", "deb4", "add", "alice", key}).status == 0);
  CHECK(vm->run("stat -c '%a %U' /home/alice/.ssh /home/alice/.ssh/authorized_keys; "
                "cat /home/alice/.ssh/authorized_keys")
            .out == "700 alice\n600 alice\n" + key + "\n");

  const auto id = cli({"exec", "deb4", "--user", "alice", "--", "id", "-un"});
  CHECK(id.status == 0);
  CHECK(id.out == "alice\n");
  const auto systemctl = cli({"exec", "deb4", "--", "systemctl", "is-active", unit});
  CHECK(systemctl.out == "active\n");

  const std::string up = files / "up.bin", down = files / "down.bin";
  qxa::test::write_random_file(up, 200000);
  const auto digest = qxa::test::file_sha256(up);
  REQUIRE(cli({"cp", up, "deb4:/home/alice/up.bin"}).status == 0);
  CHECK(vm->run("sha256sum < /home/alice/up.bin").out == digest + "  -\n");
  REQUIRE(cli({"cp", "deb4:/home/alice/up.bin", down}).status == 0);
  CHECK(qxa::test::file_sha256(down) == digest);

  const auto frozen = cli({"--json", "freeze", "deb4", "--lease", "60s"});
  INFO(frozen.err);
  REQUIRE(frozen.status == 0);
  bool data_frozen = false;
  const auto freeze_reply = json::parse(frozen.out);
  for (const auto& m : freeze_reply["mounts"]) {
    data_frozen |= m["mount_point"] == "/mnt/data" && m["ok"] == true;
  }
  CHECK(data_frozen);
  // A write into the frozen filesystem waits until the thaw (uninterruptibly: in the
  // background, so that the console stays free).
  REQUIRE(vm->run("(echo one > /mnt/data/one; touch /run/wrote-one) &").status == 0);
  CHECK(cli({"ping", "deb4"}).status == 0);
  CHECK(vm->run("sleep 2; test -e /run/wrote-one").status == 1);
  REQUIRE(cli({"thaw", "deb4"}).status == 0);
  CHECK(vm->run("for i in $(seq 100); do test -e /run/wrote-one && break; sleep 0.1; done; "
                "cat /mnt/data/one")
            .out == "one\n");

  // The disks as QEMU was told: serials, PCI slots, the SCSI target, and the chain from the
  // LVM volume through its partition to its disk.
  const auto disks_out = cli({"--json", "disks", "deb4"});
  REQUIRE(disks_out.status == 0);
  const auto disks = json::parse(disks_out.out);
  INFO(disks.dump(1));
  const auto* lvm_dev = with(disks["devices"], "serial", "qx-lvm");
  const auto* scsi_dev = with(disks["devices"], "serial", "qx-scsi");
  REQUIRE(lvm_dev != nullptr);
  REQUIRE(scsi_dev != nullptr);
  CHECK((*lvm_dev)["kind"] == "disk");
  CHECK((*lvm_dev)["bus"] == "virtio");
  CHECK((*lvm_dev)["pci_path"] == "0000:00:11.0");
  CHECK((*lvm_dev)["size_bytes"] == 64u << 20);
  CHECK((*scsi_dev)["bus"] == "scsi");
  CHECK((*scsi_dev)["pci_path"] == "0000:00:12.0");
  CHECK_THAT((*scsi_dev)["scsi_address"].get<std::string>(), Catch::EndsWith(":0:1:0"));
  CHECK((*scsi_dev)["vendor"] == "QEMU");
  const auto* lv_fs = with(disks["filesystems"], "mount_point", "/mnt/lv");
  REQUIRE(lv_fs != nullptr);
  CHECK((*lv_fs)["disks"] == json::array({(*lvm_dev)["name"]}));
  const auto* lv = with(disks["devices"], "name", (*lv_fs)["device"].get<std::string>());
  REQUIRE(lv != nullptr);
  CHECK((*lv)["kind"] == "lvm");
  CHECK((*lv)["alias"] == "qxvg-data");
  REQUIRE((*lv)["parents"].size() == 1);
  const auto* part = with(disks["devices"], "name", (*lv)["parents"][0].get<std::string>());
  REQUIRE(part != nullptr);
  CHECK((*part)["kind"] == "partition");
  CHECK((*part)["partition"] == 1);
  CHECK((*part)["parents"] == json::array({(*lvm_dev)["name"]}));
  const auto* data_fs = with(disks["filesystems"], "mount_point", "/mnt/data");
  REQUIRE(data_fs != nullptr);
  CHECK((*data_fs)["disks"] == json::array({(*data_fs)["device"]}));
  const auto* root_fs = with(disks["filesystems"], "mount_point", "/");
  REQUIRE(root_fs != nullptr);
  CHECK_FALSE((*root_fs)["device"].get<std::string>().empty());
  CHECK_THAT(cli({"disks", "deb4"}).out, Catch::Contains("/mnt/lv"));

  // A freeze by serial freezes what is on that disk and nothing else: /mnt/data takes writes.
  const auto by_serial = cli({"--json", "freeze", "deb4", "--disk", "qx-lvm", "--lease", "60s"});
  REQUIRE(by_serial.status == 0);
  const auto by_serial_mounts = json::parse(by_serial.out)["mounts"];
  REQUIRE(by_serial_mounts.size() == 1);
  CHECK(by_serial_mounts[0]["mount_point"] == "/mnt/lv");
  CHECK(by_serial_mounts[0]["ok"] == true);
  CHECK(vm->run("echo two > /mnt/data/two && cat /mnt/data/two", 20s).out == "two\n");
  REQUIRE(vm->run("(echo lv > /mnt/lv/lv; touch /run/wrote-lv) &").status == 0);
  CHECK(vm->run("sleep 2; test -e /run/wrote-lv").status == 1);
  REQUIRE(cli({"thaw", "deb4"}).status == 0);
  CHECK(vm->run("for i in $(seq 100); do test -e /run/wrote-lv && break; sleep 0.1; done; "
                "cat /mnt/lv/lv")
            .out == "lv\n");
  const auto nothing = cli({"freeze", "deb4", "--disk", "qx-scsi"});
  CHECK(nothing.status == 1);
  CHECK_THAT(nothing.err, Catch::Contains("qx-scsi holds no writable filesystem"));
  // Telemetry counts the disks' I/O and the CPU's times.
  const auto telemetry = json::parse(cli({"--json", "telemetry", "deb4"}).out);
  const auto* lvm_io = with(telemetry["disk_io"], "name", (*lvm_dev)["name"].get<std::string>());
  REQUIRE(lvm_io != nullptr);
  CHECK((*lvm_io)["written_bytes"].get<std::uint64_t>() > 0);
  REQUIRE(telemetry["cpus"].size() == 1);
  CHECK(telemetry["cpus"][0]["idle_ms"].get<std::uint64_t>() > 0);

  // A login on a terminal (login -f on a pseudo-terminal, as sshd or a console would) shows in
  // users; the time zone set the Debian way shows in time.
  REQUIRE(vm->run("(sleep 120 | script -qfc 'login -f alice' /dev/null >/dev/null 2>&1 &) ; "
                  "ln -sf /usr/share/zoneinfo/Asia/Kolkata /etc/localtime")
              .status == 0);
  REQUIRE(eventually(
      [&] {
        const auto u = cli({"--json", "users", "deb4"});
        return u.status == 0 && json::parse(u.out)["sessions"].size() == 1;
      },
      30s));
  const auto users = json::parse(cli({"--json", "users", "deb4"}).out)["sessions"][0];
  CHECK(users["user"] == "alice");
  CHECK_THAT(users["terminal"].get<std::string>(), Catch::StartsWith("pts/"));
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  CHECK(std::abs(users["login_unix_ms"].get<double>() - static_cast<double>(now_ms)) < 120e3);
  CHECK_THAT(cli({"users", "deb4"}).out, Catch::Contains("alice"));
  const auto time = json::parse(cli({"--json", "time", "deb4"}).out);
  CHECK(time["timezone"] == "Asia/Kolkata");
  CHECK(time["timezone_abbreviation"] == "IST");
  CHECK(time["utc_offset_seconds"] == 19800);
  CHECK_THAT(cli({"time", "deb4"}).out, Catch::Contains("Asia/Kolkata (IST, UTC+05:30)"));

  // mkdir, mv and rm -r in a home whose owner planted a link to /etc and a deep tree: what the
  // link points to stays, the rest goes.
  REQUIRE(vm->run("su alice -c 'mkdir -p ~/tree/a/b && ln -s /etc ~/tree/a/etc-link && "
                  "touch ~/tree/a/b/f'")
              .status == 0);
  REQUIRE(cli({"mkdir", "deb4", "/home/alice/made/deeper", "--parents", "--mode", "0750"}).status ==
          0);
  CHECK(vm->run("stat -c '%a %U' /home/alice/made/deeper").out == "750 root\n");
  REQUIRE(cli({"mv", "deb4", "/home/alice/made", "/home/alice/tree/"}).status == 0);
  const auto listed = cli({"ls", "deb4", "/home/alice/tree"});
  CHECK(listed.out == "a\nmade\n");
  const auto removed = cli({"--json", "rm", "-r", "deb4", "/home/alice/tree"});
  REQUIRE(removed.status == 0);
  CHECK(json::parse(removed.out)["removed"] == 7);
  CHECK(
      vm->run("! test -e /home/alice/tree && test -s /etc/passwd && test -d /etc/systemd").status ==
      0);

  // A detached job as alice outlives qx-agentd: killed while an attach follows the job and
  // started again, the daemon attaches anew and gets the whole output and the exit status.
  const auto job =
      json::parse(cli({"--json", "exec", "--detach", "deb4", "--user", "alice", "--", "sh", "-c",
                       "id -un; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo done >&2; exit 5"})
                      .out);
  const auto job_id = std::to_string(job["id"].get<std::uint64_t>());
  {
    child_process follower({QXA_CLI_PATH, "--control-socket", ctl, "attach", "deb4", job_id}, {},
                           true);
    CHECK(follower.wait_for_output("alice", 60s));
    daemon->signal(SIGKILL);
    REQUIRE(daemon->wait_exit(10s).has_value());
    const auto cut = follower.wait_exit(30s);
    REQUIRE(cut.has_value());
    CHECK(*cut != 0);
  }
  daemon = start_daemon_for_vms(vms, run);
  REQUIRE(wait_vm_state(ctl, "deb4", "ready", 60s));
  const auto jobs = json::parse(cli({"--json", "jobs", "deb4"}).out)["jobs"];
  REQUIRE(jobs.size() == 1);
  CHECK(jobs[0]["user"] == "alice");
  CHECK(jobs[0]["finished"] == false);
  // The job runs in the agent's service, as alice.
  const std::string proc = "/proc/" + std::to_string(jobs[0]["pid"].get<int>());
  CHECK(vm->run("stat -c %U " + proc + "; grep -c " + unit + " " + proc + "/cgroup").out ==
        "alice\n1\n");
  REQUIRE(vm->run("touch /tmp/go").status == 0);
  const auto attached = cli({"attach", "deb4", job_id});
  CHECK(attached.status == 5);
  CHECK(attached.out == "alice\n");
  CHECK_THAT(attached.err, Catch::Contains("done\n"));

  // The audit lines, held while frozen, reached the journal after the thaw.
  const auto lines = journal(*vm);
  for (const std::string op :
       {"hostname", "password", "ssh-key", "exec", "file-write", "file-read", "freeze", "thaw",
        "file-mkdir", "file-move", "file-remove", "job-attach"}) {
    INFO(op);
    CHECK(priority_of(lines, "audit: op=" + op + " session=") >= 5);
  }
}

TEST_CASE(
    "Debian guest: qx-agent reboot goes through systemd, and the agent is back by itself with a "
    "new boot and session",
    "[vm][debian]") {
  temp_dir vms, run;
  const std::string ctl = run / "ctl.sock";
  auto vm = boot_debian(
      {.socket_path = vms / "deb5.agent.sock", .cdrom = QXA_AGENT_ISO, .allow_reboot = true});
  mount_cdrom(*vm);
  REQUIRE(vm->run("sh /media/cdrom/install.sh", 120s).status == 0);
  auto daemon = start_daemon_for_vms(vms, run);
  REQUIRE(wait_vm_state(ctl, "deb5", "ready", 60s));
  const auto before = qxa::test::required_vm_status(ctl, "deb5");
  const auto info_before = run_cli({"--json", "--control-socket", ctl, "info", "deb5"});
  REQUIRE(info_before.status == 0);

  const auto reboot = run_cli({"--control-socket", ctl, "reboot", "deb5"});
  INFO(reboot.err);
  REQUIRE(reboot.status == 0);
  CHECK_THAT(reboot.out, Catch::Contains("systemctl"));
  REQUIRE(vm->console_has("QXA-VM-READY", 240s, 2));
  const auto now =
      qxa::test::wait_new_session(ctl, "deb5", before["session_id"].get<std::string>(), 120s);
  REQUIRE(!now.empty());
  const auto info_after = run_cli({"--json", "--control-socket", ctl, "info", "deb5"});
  REQUIRE(info_after.status == 0);
  CHECK(json::parse(info_after.out)["boot_id"] != json::parse(info_before.out)["boot_id"]);
  CHECK(vm->process().running());
  // Enabled: the unit came up by itself at boot, bound to the port's device.
  CHECK(vm->run("systemctl is-active " + unit).out == "active\n");
  CHECK(vm->run("systemctl show -p NRestarts --value " + unit).out == "0\n");
}

TEST_CASE(
    "Debian guest: the port hot-plugged after install starts the agent through the shipped udev "
    "rule, and unplugging it stops the agent",
    "[vm][debian]") {
  temp_dir vms, run;
  const std::string ctl = run / "ctl.sock";
  const std::string sock = vms / "deb6.agent.sock";
  auto vm = boot_debian({.socket_path = sock,
                         .cdrom = QXA_AGENT_ISO,
                         .qmp_path = run / "qmp.sock",
                         .agent_port = false});
  mount_cdrom(*vm);
  const auto install = vm->run("sh /media/cdrom/install.sh", 120s);
  INFO(install.out);
  REQUIRE(install.status == 0);
  CHECK_THAT(install.out, Catch::Contains("starts when the org.quantix.agent.0 port appears"));
  CHECK(vm->run("systemctl is-active " + unit).out == "inactive\n");

  const auto chardev = vm->qmp(
      "chardev-add",
      fmt::format(R"({{"id": "agent0", "backend": {{"type": "socket", "data": {{"addr": {{"type":
          "unix", "data": {{"path": "{}"}}}}, "server": true, "wait": false}}}}}})",
                  sock));
  REQUIRE(chardev.find("return") != std::string::npos);
  const auto plug = vm->qmp("device_add", R"({"driver": "virtserialport", "bus": "vser0.0",
      "chardev": "agent0", "name": "org.quantix.agent.0", "id": "agentport"})");
  INFO(plug);
  REQUIRE(plug.find("return") != std::string::npos);
  REQUIRE(wait_unit_state(*vm, "active"));
  auto daemon = start_daemon_for_vms(vms, run);
  REQUIRE(wait_vm_state(ctl, "deb6", "ready", 60s));
  CHECK(run_cli({"--control-socket", ctl, "ping", "deb6"}).status == 0);

  REQUIRE(vm->qmp("device_del", R"({"id": "agentport"})").find("return") != std::string::npos);
  REQUIRE(wait_unit_state(*vm, "inactive"));
  CHECK(vm->run("pidof quantix-kvm-agent").status != 0);
  CHECK(property(*vm, "NRestarts") == "0");  // stopped with its device, not crashed and restarted
}

TEST_CASE(
    "Debian guest: qx-agent upgrade under systemd: a new binary is confirmed, then one that does "
    "not start is rolled back by the guard's own unit and the shipped unit runs the old one again",
    "[vm][debian]") {
  temp_dir vms, run, work;
  const std::string ctl = run / "ctl.sock";
  auto vm = boot_debian({.socket_path = vms / "deb7.agent.sock", .cdrom = QXA_AGENT_ISO});
  mount_cdrom(*vm);
  REQUIRE(vm->run("sh /media/cdrom/install.sh", 120s).status == 0);
  auto daemon = start_daemon_for_vms(vms, run);
  REQUIRE(wait_vm_state(ctl, "deb7", "ready", 60s));
  const auto sha_in_guest = [&] {
    return vm->run("sha256sum < /usr/sbin/quantix-kvm-agent | cut -c1-64").out;
  };
  const auto installed = sha_in_guest();

  // A new binary: the agent with bytes after its end (ELF ignores them), so its digest says
  // which one runs.
  const std::string binary = work / "quantix-kvm-agent";
  std::filesystem::copy_file(QXA_AGENT_PATH, binary);
  std::ofstream(binary, std::ios::app | std::ios::binary) << "\nan upgraded agent\n";
  const auto sha_of = [](const std::string& path) {
    return qxa::test::run_command({"/bin/sh", "-c", "sha256sum < '" + path + "' | cut -c1-64"}, 10s)
        .out;
  };
  const auto before = qxa::test::required_vm_status(ctl, "deb7");
  auto up = run_cli(
      {"--control-socket", ctl, "upgrade", "deb7", "--binary", binary, "--confirm-within", "90s"},
      240s);
  INFO(up.out << up.err);
  REQUIRE(up.status == 0);
  CHECK_THAT(up.out, Catch::Contains("deb7: upgraded"));
  CHECK(sha_in_guest() == sha_of(binary));
  CHECK(vm->run("sha256sum < /usr/sbin/quantix-kvm-agent.previous | cut -c1-64").out == installed);
  CHECK(qxa::test::required_vm_status(ctl, "deb7")["agent_pid"] != before["agent_pid"]);
  CHECK(vm->run("grep -x state=confirmed /var/lib/quantix-kvm-agent/upgrade").status == 0);
  // The guard ran in a unit of its own and ended with the confirmation.
  CHECK(vm->run("for i in $(seq 100); do systemctl list-units --all --no-legend "
                "'quantix-kvm-agent-upgrade-guard-*' | grep -q running || exit 0; sleep 0.1; "
                "done; exit 1")
            .status == 0);
  CHECK(vm->run("systemctl is-active " + unit).out == "active\n");

  // A binary that does not start: systemd restarts it until the guard puts the last one back.
  auto broken = run_cli({"--control-socket", ctl, "upgrade", "deb7", "--binary",
                         QXA_BROKEN_AGENT_PATH, "--confirm-within", "20s"},
                        240s);
  INFO(broken.out << broken.err);
  CHECK(broken.status == 1);
  CHECK_THAT(broken.err, Catch::Contains("deb7: rolled back to"));
  REQUIRE(wait_unit_state(*vm, "active"));
  CHECK(sha_in_guest() == sha_of(binary));
  CHECK(vm->run("grep -x state=rolled-back /var/lib/quantix-kvm-agent/upgrade").status == 0);
  const auto guard_log = vm->run(
      "journalctl -o cat --no-pager -u 'quantix-kvm-agent-upgrade-guard-*' | grep 'was put back'");
  INFO(guard_log.out);
  CHECK(guard_log.status == 0);
  CHECK(
      vm->run("journalctl -u " + unit + " -o cat --no-pager | grep -q 'this agent does not start'")
          .status == 0);
  REQUIRE(wait_vm_state(ctl, "deb7", "ready", 60s));
  CHECK(run_cli({"--control-socket", ctl, "ping", "deb7"}).status == 0);
}
