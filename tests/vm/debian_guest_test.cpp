// SPDX-License-Identifier: MIT
// The agent in a Debian 12 guest with systemd, installed as users install it: from the agent
// ISO on a CD-ROM with install.sh, or the Debian package with dpkg. The unit, the udev rule and
// /etc/quantix-kvm/agent.toml are the shipped ones; only what a test says (a drop-in with short
// telemetry settings) differs.
#include <fmt/format.h>

#include <asio/io_context.hpp>
#include <asio/local/stream_protocol.hpp>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/cli.hpp"
#include "support/daemon.hpp"
#include "support/fake_host.hpp"
#include "support/poll.hpp"
#include "support/process.hpp"
#include "support/status.hpp"
#include "support/temp_dir.hpp"
#include "support/vm.hpp"

using namespace std::chrono_literals;
using qxa::test::console_result;
using qxa::test::guest_kind;
using qxa::test::run_cli;
using qxa::test::start_daemon_for_vms;
using qxa::test::temp_dir;
using qxa::test::test_vm;
using qxa::test::wait_vm_state;
using json = nlohmann::json;

namespace {

const std::string unit = "quantix-kvm-agent.service";

// A Debian guest booted to its console, with `cdrom` attached.
std::unique_ptr<test_vm> boot_debian(const std::string& socket, const std::string& cdrom,
                                     const std::string& disk = {}) {
  auto vm = std::make_unique<test_vm>(qxa::test::vm_options{.guest = guest_kind::debian,
                                                            .memory_mb = 512,
                                                            .socket_path = socket,
                                                            .cdrom = cdrom,
                                                            .disk = disk});
  const auto started = std::chrono::steady_clock::now();
  const bool booted = vm->wait_booted(180s);
  INFO(vm->console());
  REQUIRE(booted);
  WARN(fmt::format("the Debian guest reached its console in {:.1f} s",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - started)
                       .count()));
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

}  // namespace

TEST_CASE(
    "Debian guest: install.sh from the ISO starts the shipped unit and config under systemd; a "
    "bad config fails once, at error priority; uninstall.sh removes all but the config",
    "[vm][debian]") {
  temp_dir vms, run;
  const std::string ctl = run / "ctl.sock";
  auto vm = boot_debian(vms / "deb1.agent.sock", QXA_AGENT_ISO);
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
      "echo 'bogus_key = 1' >> /etc/quantix-kvm/agent.toml && systemctl restart " + unit);
  CHECK(bad.status != 0);
  REQUIRE(wait_unit_state(*vm, "failed"));
  CHECK(property(*vm, "ExecMainStatus") == "2");
  const auto errors = vm->run("journalctl -u " + unit + " -p err -o cat --no-pager");
  CHECK_THAT(errors.out, Catch::Contains("bogus_key"));
  const auto restarts = property(*vm, "NRestarts");
  CHECK(vm->run("sleep 5").status == 0);  // two restart intervals: nothing may happen
  CHECK(property(*vm, "NRestarts") == restarts);
  CHECK(vm->run("systemctl is-failed " + unit).out == "failed\n");
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
