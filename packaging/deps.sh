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
  # packaging: the agent ISO and its checks; promtool checks the metrics; the manual pages
  # (help2man, man to check them), lintian checks the Debian packages
  xorriso systemd prometheus help2man man-db lintian
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
  local noun=packages
  ((${#missing[@]} == 1)) && noun=package
  echo "installing ${#missing[@]} $noun: ${missing[*]}"
  echo "apt: updating the package lists"
  qxa_apt "${sudo[@]}" apt-get update &&
    qxa_apt "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y \
      --no-install-recommends "${missing[@]}"
}

# qxa_apt COMMAND...: runs an apt-get command quietly. What it installs and its progress show as
# a few lines (every 25 % of the packages fetched, then set up, counted from apt's and dpkg's own
# lines); everything apt and dpkg print goes to a log, removed on success and shown whole when
# the command fails. (apt's machine-readable APT::Status-Fd is not used: on standard output it
# broke maintainer scripts that print, and another descriptor does not pass through sudo.)
qxa_apt() {
  local log status
  log=$(mktemp "${TMPDIR:-/tmp}/qxa-apt.XXXXXX") || return 1
  "$@" -o Dpkg::Use-Pty=0 2>&1 | awk -v logfile="$log" '
    function step(what, n,    p) {
      if (total == 0) return
      p = int(n * 4 / total) * 25
      if (p > 100) p = 100
      if (p <= shown[what]) return
      shown[what] = p
      printf "apt: %s %d %%\n", what, p
      fflush()
    }
    { print > logfile; fflush(logfile) }
    /^[0-9]+ upgraded, [0-9]+ newly installed/ {
      total = $1 + $3
      printf "apt: %d package%s to fetch and set up, with what they need\n", total, total == 1 ? "" : "s"
      fflush()
    }
    /^Get:[0-9]+ / { step("fetched", ++fetched) }
    /^Setting up / { step("set up", ++set_up) }'
  status=${PIPESTATUS[0]}
  if ((status != 0)); then
    echo "apt-get failed (status $status); its whole output:" >&2
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}
