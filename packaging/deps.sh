# SPDX-License-Identifier: MIT
# Sourced by tests/run.sh and packaging/demo.sh: the Debian 12 packages the project needs, and
# a function that installs those missing (only those: with everything present it does nothing).
# QXA_SKIP_INSTALL=1 refuses to install and fails instead.

qxa_packages=(
  # build
  build-essential cmake ninja-build pkg-config file
  libasio-dev libprotobuf-dev protobuf-compiler libfmt-dev catch2
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libssl-dev zlib1g-dev libcrypt-dev
  # the fuzz targets (clang with libFuzzer and the sanitizer runtimes)
  clang libclang-rt-14-dev
  # the test VM and the demo
  qemu-system-x86 linux-image-amd64 busybox-static cpio xz-utils zstd kmod util-linux e2fsprogs
  # network namespaces for the agent's network view (ip netns)
  iproute2
  mmdebstrap dpkg-dev
  # packaging: the agent ISO and its checks; promtool checks the metrics
  xorriso systemd prometheus
  # the benchmark's peer and its plot; the qemu-ga port's tests compare answers with it
  qemu-guest-agent gnuplot-nox
  # qx-agentd beside libvirt: a real libvirtd and virsh (tests/vm/libvirt_test.cpp)
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-utils
)

qxa_install_missing() {
  local missing=()
  for p in "${qxa_packages[@]}"; do
    # Installed means dpkg says "install ok installed", not merely known.
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    echo "all ${#qxa_packages[@]} required packages are installed"
    return 0
  fi
  if [[ "${QXA_SKIP_INSTALL:-0}" == 1 ]]; then
    echo "missing packages: ${missing[*]} (QXA_SKIP_INSTALL=1, not installing)" >&2
    return 1
  fi
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "need root or sudo to install: ${missing[*]}" >&2; return 1; }
    sudo=(sudo)
  fi
  echo "installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}
