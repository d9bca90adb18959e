// SPDX-License-Identifier: MIT
// Boots a test guest (packaging/vm) under QEMU with TCG: the agent channel on a unix socket,
// the serial console on the process's standard output, and console commands on its input.
// Two guests speak the same console protocol (markers starting with "QXA-"):
// - busybox: Debian's kernel and a busybox initramfs whose /init runs the agent itself;
// - debian: a Debian 12 root filesystem with systemd, booted with the host's kernel and
//   initramfs, with no agent until a test installs one as users do.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/process.hpp"

namespace qxa::test {

enum class guest_kind { busybox, debian };

/// A disk with a serial at a fixed PCI slot: on virtio-blk, or alone on a virtio-scsi
/// controller in that slot (target 1, LUN 0).
struct vm_disk {
  std::string file;  // a raw image
  std::string serial;
  int pci_slot = 0;  // on the root bus: PCI address 0000:00:<slot>.0
  bool scsi = false;
};

struct vm_options {
  guest_kind guest = guest_kind::busybox;
  int memory_mb = 1024;
  std::string socket_path = {};  // the agent channel: QEMU listens here
  std::string kernel_args = {};  // appended: qxa.interval=..., qxa.restart_delay=...
  std::string mac = "52:54:00:12:34:56";
  std::string ip = "192.0.2.10/24";        // documentation range, on a NIC wired to nothing
  std::string cdrom = {};                  // an ISO to attach as a CD-ROM
  std::string disk = {};                   // a raw image: /dev/vda (busybox), /dev/vdb (debian)
  std::string qmp_path = {};               // a QMP socket, for test_vm::qmp
  bool allow_reboot = false;               // without it QEMU exits when the guest reboots
  std::string incoming = {};               // a migration to load: "exec:cat FILE"
  bool agent_port = true;                  // false: the port is hot-plugged later (through QMP)
  int max_cpus = 1;                        // more: one vCPU at boot, room to hot-plug the rest
  std::vector<vm_disk> serial_disks = {};  // after `disk`
};

/// What a command run on the guest's console printed, and its exit status.
struct console_result {
  int status = -1;  // -1: no answer in time
  std::string out;
};

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

class test_vm {
 public:
  explicit test_vm(const vm_options& o)
      : qemu_(args(o), {}, /*capture_stdout=*/true, /*stdin_pipe=*/true), qmp_path_(o.qmp_path) {}

  ~test_vm() {
    if (qemu_.running()) {
      command("qxa-poweroff");
      if (!qemu_.wait_exit(std::chrono::seconds(5))) qemu_.signal(SIGKILL);
    }
  }

  static std::string image_dir() { return QXA_VM_IMAGE_DIR; }
  static std::string debian_image() { return QXA_DEBIAN_IMAGE_DIR "/debian-guest.img"; }
  static std::string kernel_release() { return read_text(image_dir() + "/kernel-release"); }

  /// Waits for the guest's /init to report that it is up.
  bool wait_booted(std::chrono::seconds timeout = std::chrono::seconds(90)) {
    return console_has("QXA-VM-READY", timeout);
  }
  bool console_has(const std::string& needle, child_process::clock::duration timeout,
                   std::size_t times = 1) {
    return qemu_.wait_for_output_count(needle, timeout, times);
  }
  std::size_t console_count(const std::string& needle) { return qemu_.count_in_output(needle); }
  std::string console() { return qemu_.output(); }
  void command(const std::string& line) { qemu_.write_stdin(line + "\n"); }

  /// Runs a shell command in the guest (as root, through the console) and returns what it
  /// printed (standard output and error, carriage returns removed) once it has finished.
  console_result run(const std::string& shell_command,
                     child_process::clock::duration timeout = std::chrono::seconds(60)) {
    const auto n = std::to_string(++commands_);
    // The markers are split by "" in what is typed, so that an echo of the line never matches.
    const std::string begin = "QXA-OUT-" + n + "-BEGIN", end = "QXA-OUT-" + n + "-END";
    command("qxa-run echo QXA-OUT\"\"-" + n + "-BEGIN; ( " + shell_command +
            " ) 2>&1; echo \"QXA-OUT\"\"-" + n + "-END status=$? QXA-OUT\"\"-" + n + "-DONE\"");
    console_result r;
    if (!console_has("QXA-OUT-" + n + "-DONE", timeout)) return r;
    std::string text = console();
    std::erase(text, '\r');
    const auto b = text.find(begin + "\n");
    const auto e = text.find(end + " status=");
    if (b == std::string::npos || e == std::string::npos || e < b) return r;
    r.out = text.substr(b + begin.size() + 1, e - b - begin.size() - 1);
    r.status = std::atoi(text.c_str() + e + end.size() + 8);
    return r;
  }
  child_process& process() { return qemu_; }

  /// Runs one QMP command ("stop", "cont") on the VM's QMP socket (vm_options::qmp_path) and
  /// returns QEMU's answer to it: a line with "return" on success, "error" otherwise, or empty
  /// when QEMU did not answer within 10 s.
  std::string qmp(const std::string& command, const std::string& arguments = {}) const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, qmp_path_.c_str(), sizeof addr.sun_path - 1);
    const timeval limit{10, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    std::string answer;
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
      std::string pending;
      // Each answer is a line; the greeting comes first, then one per command.
      auto line = [&]() {
        for (;;) {
          if (const auto nl = pending.find('\n'); nl != std::string::npos) {
            auto l = pending.substr(0, nl);
            pending.erase(0, nl + 1);
            if (l.find("\"event\"") != std::string::npos) continue;  // not an answer
            return l;
          }
          char buf[4096];
          const auto n = ::read(fd, buf, sizeof buf);
          if (n <= 0) return std::string();
          pending.append(buf, static_cast<std::size_t>(n));
        }
      };
      auto send = [&](const std::string& c) {
        const auto text =
            "{\"execute\": \"" + c + "\"" +
            (c == command && !arguments.empty() ? ", \"arguments\": " + arguments : std::string()) +
            "}\n";
        return ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
      };
      if (!line().empty() && send("qmp_capabilities") && !line().empty() && send(command)) {
        answer = line();
      }
    }
    ::close(fd);
    return answer;
  }

 private:
  static std::vector<std::string> args(const vm_options& o) {
    const std::string dir = image_dir();
    const bool debian = o.guest == guest_kind::debian;
    // The Debian guest: the host's initramfs mounts the image (a throwaway overlay of it, so
    // that every test starts pristine) and starts its systemd.
    std::string append = debian
                             ? "console=ttyS0 root=/dev/vda rw quiet panic=-1 " + o.kernel_args
                             : "console=ttyS0 quiet panic=-1 qxa.ip=" + o.ip + " " + o.kernel_args;
    const std::string initrd =
        debian ? "/boot/initrd.img-" + kernel_release() : dir + "/initrd.cpio.gz";
    std::vector<std::string> a = {
        QXA_QEMU_PATH, "-machine", "q35", "-accel", "tcg,tb-size=256", "-m",
        std::to_string(o.memory_mb), "-nographic", "-nic", "none", "-kernel", dir + "/kernel",
        "-initrd", initrd, "-append", append, "-device", "virtio-serial-pci,id=vser0",
        // A NIC wired to an empty hub: the guest has an interface, and no traffic leaves.
        "-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-pci,netdev=n0,mac=" + o.mac};
    if (o.agent_port) {
      a.insert(a.end(),
               {"-chardev", "socket,id=agent0,path=" + o.socket_path + ",server=on,wait=off",
                "-device", "virtserialport,chardev=agent0,name=org.quantix.agent.0"});
    }
    if (o.max_cpus > 1) a.insert(a.end(), {"-smp", "1,maxcpus=" + std::to_string(o.max_cpus)});
    if (!o.allow_reboot) a.push_back("-no-reboot");
    if (debian) {
      a.insert(a.end(), {"-drive", "file=" + debian_image() + ",format=raw,if=virtio,snapshot=on"});
    }
    if (!o.incoming.empty()) a.insert(a.end(), {"-incoming", o.incoming});
    if (!o.disk.empty()) {
      // discard=unmap: a guest's trim punches holes in the image file.
      a.insert(a.end(),
               {"-drive", "file=" + o.disk + ",format=raw,if=virtio,cache=unsafe,discard=unmap"});
    }
    for (std::size_t i = 0; i < o.serial_disks.size(); ++i) {
      const auto& d = o.serial_disks[i];
      const auto id = "serialdisk" + std::to_string(i);
      const auto addr = ",addr=0x" + to_hex(d.pci_slot);
      a.insert(a.end(),
               {"-drive", "if=none,id=" + id + ",file=" + d.file + ",format=raw,cache=unsafe"});
      if (d.scsi) {
        a.insert(a.end(), {"-device", "virtio-scsi-pci,id=scsi" + id + addr, "-device",
                           "scsi-hd,bus=scsi" + id + ".0,scsi-id=1,lun=0,drive=" + id +
                               ",serial=" + d.serial});
      } else {
        a.insert(a.end(), {"-device", "virtio-blk-pci,drive=" + id + ",serial=" + d.serial + addr});
      }
    }
    if (!o.qmp_path.empty()) {
      a.insert(a.end(), {"-qmp", "unix:" + o.qmp_path + ",server=on,wait=off"});
    }
    if (!o.cdrom.empty()) {
      a.insert(a.end(), {"-drive", "file=" + o.cdrom + ",media=cdrom,readonly=on,if=ide"});
    }
    return a;
  }

  static std::string to_hex(int n) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%x", n);
    return buf;
  }

  child_process qemu_;
  std::string qmp_path_;
  int commands_ = 0;
};

}  // namespace qxa::test
