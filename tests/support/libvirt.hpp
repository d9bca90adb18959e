// SPDX-License-Identifier: MIT
// A real libvirtd for a test, and virsh to drive it.
//
// When the machine runs libvirtd already (its socket answers), the test uses it. Otherwise the
// test starts its own, as an operator does where PID 1 is not systemd: virtlogd (unless one
// runs) and libvirtd in the foreground, with libvirtd's configuration, sockets and pid file in
// a temporary directory. libvirt keeps its QEMU driver's state where it always does
// (/run/libvirt, /var/lib/libvirt, /etc/libvirt/qemu for defined domains): a test names its
// domains uniquely and undefines them at the end. Tests that use it hold the CTest resource
// lock "libvirtd", so that two never start one each.
#pragma once

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace qxa::test {

class libvirt_daemon {
 public:
  libvirt_daemon() {
    if (answers("qemu:///system")) {
      uri_ = "qemu:///system";
      return;
    }
    ::chmod(dir_.path().c_str(), 0755);
    if (!std::filesystem::exists("/run/libvirt/virtlogd-sock")) {
      logd_ = std::make_unique<child_process>(std::vector<std::string>{"/usr/sbin/virtlogd"});
    }
    const auto config = dir_.write("libvirtd.conf", "unix_sock_dir = \"" + dir_.path() +
                                                        "\"\n"
                                                        "unix_sock_rw_perms = \"0700\"\n"
                                                        "auth_unix_rw = \"none\"\n"
                                                        "auth_unix_ro = \"none\"\n");
    daemon_ = std::make_unique<child_process>(
        std::vector<std::string>{"/usr/sbin/libvirtd", "-f", config, "-p", dir_ / "libvirtd.pid"});
    uri_ = "qemu:///system?socket=" + (dir_ / "libvirt-sock");
    // A libvirtd that cannot start (another holds its driver's state) exits: that ends the wait.
    eventually([&] { return !daemon_->running() || answers(uri_); }, std::chrono::seconds(60),
               std::chrono::milliseconds(200));
    INFO(daemon_->log());
    REQUIRE(daemon_->running());
    REQUIRE(answers(uri_));
  }

  ~libvirt_daemon() {
    for (const auto& name : domains_) {
      virsh({"destroy", name});
      virsh({"undefine", name, "--managed-save", "--snapshots-metadata", "--nvram"});
    }
    for (auto* p : {daemon_.get(), logd_.get()}) {
      if (p == nullptr) continue;
      p->signal(SIGTERM);
      if (!p->wait_exit(std::chrono::seconds(20))) p->signal(SIGKILL);
    }
  }
  libvirt_daemon(const libvirt_daemon&) = delete;
  libvirt_daemon& operator=(const libvirt_daemon&) = delete;

  [[nodiscard]] const std::string& uri() const { return uri_; }

  /// Runs virsh against this libvirtd.
  command_result virsh(std::vector<std::string> args,
                       std::chrono::steady_clock::duration timeout = std::chrono::seconds(120)) {
    args.insert(args.begin(), {"/usr/bin/virsh", "-q", "-c", uri_});
    return run_command(std::move(args), timeout);
  }

  /// Defines a domain from `xml` (undefined again when the test ends).
  void define(const std::string& name, const std::string& xml) {
    domains_.push_back(name);
    const auto file = dir_.write(name + ".xml", xml);
    const auto r = virsh({"define", file});
    INFO(r.out << r.err);
    REQUIRE(r.status == 0);
  }

  /// libvirtd's log, when the test started it.
  [[nodiscard]] std::string log() const { return daemon_ ? daemon_->log() : std::string(); }

 private:
  static bool answers(const std::string& uri) {
    return run_command({"/usr/bin/virsh", "-q", "-c", uri, "version"}, std::chrono::seconds(10))
               .status == 0;
  }

  temp_dir dir_;
  std::string uri_;
  std::unique_ptr<child_process> logd_, daemon_;
  std::vector<std::string> domains_;
};

}  // namespace qxa::test
