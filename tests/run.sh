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

# shellcheck source=../packaging/deps.sh
source "$root/packaging/deps.sh"
qxa_install_missing | sed 's/^/run.sh: /'

jobs="$(nproc)"
if [[ ! -f "$build_dir/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
cmake --build "$build_dir" --parallel "$jobs"

cd "$build_dir"
ctest --output-on-failure --parallel "$jobs" --timeout 600 "$@"
