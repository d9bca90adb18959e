#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The main job, shown live: boots the test VM (Debian's kernel, a busybox initramfs and the
# static quantix-kvm-agent) under QEMU, starts qx-agentd for it, prints `qx-agent status`,
# `info` and a telemetry sample from inside the VM, then follows the VM's telemetry until Ctrl-C.
#
#   ./packaging/demo.sh           follow telemetry until Ctrl-C
#   ./packaging/demo.sh --once    print status, info and one sample, then exit 0
#
# On a fresh Debian 12 machine it first installs the missing packages and builds. When QEMU
# cannot run here it says so and talks to a local unix-listen agent instead.
# Environment: QXA_BUILD_DIR (default build), QXA_SKIP_INSTALL=1 to never call apt-get,
# QXA_QEMU to use another QEMU binary.
set -euo pipefail

once=0
for arg in "$@"; do
  case "$arg" in
    --once) once=1 ;;
    -h|--help) sed -n '3,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${QXA_BUILD_DIR:-$root/build}"
if [[ -t 1 ]]; then
  say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  say() { printf '\n== %s\n' "$*"; }
fi

# shellcheck source=deps.sh
source "$root/packaging/deps.sh"
qxa_install_missing | sed 's/^/demo.sh: /'

if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build_dir" --parallel "$(nproc)" --target quantix-kvm-agent qx-agentd qx-agent >/dev/null
agent_bin="$build_dir/guest/quantix-kvm-agent"
daemon_bin="$build_dir/host/qx-agentd"
cli="$build_dir/host/qx-agent"

work="$(mktemp -d /tmp/qxa-demo-XXXXXX)"
mkdir -p "$work/vms"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

vm=demo
mode=vm
qemu="${QXA_QEMU-$(command -v qemu-system-x86_64 || true)}"
if [[ -z "$qemu" ]]; then
  mode=local
  echo "demo.sh: QEMU is not installed here; using a local unix-listen agent instead" >&2
elif ! "$root/packaging/vm/build-vm.sh" "$build_dir/vm" "$agent_bin" >"$work/build-vm.log" 2>&1; then
  mode=local
  echo "demo.sh: cannot build the VM image ($(tail -1 "$work/build-vm.log")); using a local unix-listen agent instead" >&2
fi

if [[ "$mode" == vm ]]; then
  say "booting the test VM under QEMU (TCG: no KVM needed)"
  # The serial console goes to a file (and so has no input for the guest's command loop).
  "$qemu" -machine q35 -accel tcg -m 512 -display none -monitor none -no-reboot -nic none \
    -serial "file:$work/console.log" \
    -kernel "$build_dir/vm/kernel" -initrd "$build_dir/vm/initrd.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 qxa.interval=2s qxa.hostname=quantix-demo qxa.ip=192.0.2.10/24" \
    -device virtio-serial-pci \
    -chardev "socket,id=agent0,path=$work/vms/$vm.agent.sock,server=on,wait=off" \
    -device virtserialport,chardev=agent0,name=org.quantix.agent.0 \
    -netdev hubport,id=n0,hubid=0 -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
    < /dev/null > "$work/qemu.log" 2>&1 &
  qemu_pid=$!
  pids+=("$qemu_pid")
  booted=0
  for _ in $(seq 1 600); do
    if grep -q "QXA-VM-READY" "$work/console.log" 2>/dev/null; then booted=1; break; fi
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 0.2
  done
  if ((booted)); then
    echo "VM up: $(grep -o 'QXA-VM-READY.*' "$work/console.log" | head -1 | tr -d '\r')"
  else
    mode=local
    why="$(tail -2 "$work/qemu.log" | tr '\n' ' ')"
    echo "demo.sh: QEMU cannot run here (${why:-it exited before the guest came up}); using a local unix-listen agent instead" >&2
    kill "$qemu_pid" 2>/dev/null || true
    rm -f "$work/vms/$vm.agent.sock"
  fi
fi

if [[ "$mode" == local ]]; then
  say "starting a local agent in unix-listen mode"
  "$agent_bin" --config /dev/null --port "unix-listen:$work/vms/$vm.agent.sock" \
    --telemetry-interval 2s 2>"$work/agent.log" &
  pids+=($!)
fi

say "starting qx-agentd for $work/vms"
"$daemon_bin" --config /dev/null --socket-dir "$work/vms" --control-socket "$work/ctl.sock" \
  2>"$work/qx-agentd.log" &
pids+=($!)
ready=0
for _ in $(seq 1 300); do
  if "$cli" --control-socket "$work/ctl.sock" status "$vm" 2>/dev/null | grep -q " ready "; then
    ready=1
    break
  fi
  sleep 0.2
done
if ((!ready)); then
  echo "demo.sh: the agent did not become ready; qx-agentd said:" >&2
  tail -20 "$work/qx-agentd.log" >&2
  exit 1
fi
# The first pushed telemetry fills in the IP addresses of the status view.
for _ in $(seq 1 50); do
  "$cli" --json --control-socket "$work/ctl.sock" status "$vm" 2>/dev/null |
    grep -q '"last_telemetry_age_ms": [0-9]' && break
  sleep 0.2
done

say "qx-agent status"
"$cli" --control-socket "$work/ctl.sock" status
say "qx-agent info $vm"
"$cli" --control-socket "$work/ctl.sock" info "$vm"
say "qx-agent telemetry $vm"
"$cli" --control-socket "$work/ctl.sock" telemetry "$vm"

if ((once)); then
  exit 0
fi
say "following telemetry from $vm (Ctrl-C to stop)"
"$cli" --control-socket "$work/ctl.sock" telemetry "$vm" --watch || true
