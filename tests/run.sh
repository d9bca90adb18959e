#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Builds the project and runs the whole test suite. On a fresh Debian 12 machine it first
# installs the Debian packages that are missing (and only those: a second run installs nothing).
#
#   ./tests/run.sh              configure, build (all cores), ctest
#   ./tests/run.sh -R PATTERN   extra arguments go to ctest
#
# Environment: QXA_BUILD_DIR (default build), QXA_SKIP_INSTALL=1 to never call apt-get.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${QXA_BUILD_DIR:-$root/build}"

# What building and testing needs, all from Debian 12.
packages=(
  build-essential cmake ninja-build pkg-config file
  qemu-system-x86 linux-image-amd64 busybox-static cpio xz-utils zstd kmod util-linux
  libasio-dev libprotobuf-dev protobuf-compiler libfmt-dev catch2
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libssl-dev zlib1g-dev
)

install_missing() {
  local missing=()
  for p in "$@"; do
    # Installed means dpkg says "install ok installed", not merely known.
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]} == 0)); then
    echo "run.sh: all ${#packages[@]} required packages are installed"
    return
  fi
  if [[ "${QXA_SKIP_INSTALL:-0}" == 1 ]]; then
    echo "run.sh: missing packages: ${missing[*]} (QXA_SKIP_INSTALL=1, not installing)" >&2
    exit 1
  fi
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "run.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "run.sh: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
}

install_missing "${packages[@]}"

jobs="$(nproc)"
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$build_dir" --parallel "$jobs"

cd "$build_dir"
ctest --output-on-failure --parallel "$jobs" --timeout 600 "$@"
