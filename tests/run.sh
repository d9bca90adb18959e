#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Builds the project and runs the whole test suite. On a fresh Debian 12 machine it first
# installs the Debian packages that are missing (and only those: a second run installs nothing).
#
#   ./tests/run.sh              configure, build (all cores), the programs and unit tests built
#                               again file by file (build-nonunity/), ctest: unit and integration
#                               tests, then VM and fuzz tests (the fuzz targets get a build of
#                               their own with clang)
#   ./tests/run.sh -R PATTERN   extra arguments go to ctest
#   ./tests/run.sh --sanitize   the unit and integration suites built with AddressSanitizer and
#                               UndefinedBehaviorSanitizer (in build-asan/), then the host-client
#                               tests built with ThreadSanitizer (in build-tsan/)
#
# Environment: QXA_BUILD_DIR (default build), QXA_SKIP_INSTALL=1 to never call apt-get.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
jobs="$(nproc)"

# shellcheck source=../packaging/deps.sh
source "$root/packaging/deps.sh"
qxa_install_missing | sed 's/^/run.sh: /'

# configure DIR CMAKE_ARGS...: once per build directory.
configure() {
  local dir="$1"
  shift
  if [[ ! -f "$dir/CMakeCache.txt" ]]; then
    cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
  fi
}

if [[ "${1:-}" == "--sanitize" ]]; then
  shift
  # ASan and UBSan: every unit and integration test but those that check the optimised,
  # static release build itself (its size, its memory, its packages). The binaries the
  # integration tests run are the sanitized ones.
  asan_dir="$root/build-asan"
  configure "$asan_dir" -DQXA_SANITIZE=address,undefined -DQXA_VM_TESTS=OFF \
    -DQXA_BUILD_BENCHMARKS=OFF -DQXA_FUZZ=OFF
  cmake --build "$asan_dir" --parallel "$jobs"
  echo "run.sh: unit and integration tests under AddressSanitizer and UndefinedBehaviorSanitizer"
  (cd "$asan_dir" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --output-on-failure --parallel "$jobs" --timeout 600 -L 'unit|integration' "$@")

  # TSan: the host client library, which is used from several threads (is_connected(),
  # stats()), and the control socket.
  tsan_dir="$root/build-tsan"
  configure "$tsan_dir" -DQXA_SANITIZE=thread -DQXA_VM_TESTS=OFF -DQXA_BUILD_BENCHMARKS=OFF \
    -DQXA_FUZZ=OFF
  cmake --build "$tsan_dir" --parallel "$jobs" --target qxa_host_unit_tests
  echo "run.sh: host-client tests under ThreadSanitizer"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 "$tsan_dir/tests/qxa_host_unit_tests" \
    "[host]"
  exit 0
fi

build_dir="${QXA_BUILD_DIR:-$root/build}"
configure "$build_dir"
cmake --build "$build_dir" --parallel "$jobs"

# The programs and the unit tests compiled file by file as well (no unity batches, no
# optimisation: it checks, it does not ship): a file that uses what it does not include would
# compile in a batch that happens to include it first, and fail where the file is built alone.
nonunity_dir="$root/build-nonunity"
configure "$nonunity_dir" -DCMAKE_UNITY_BUILD=OFF -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS=-O0 \
  -DQXA_VM_TESTS=OFF -DQXA_BUILD_BENCHMARKS=OFF -DQXA_FUZZ=OFF
echo "run.sh: the programs and unit tests built file by file (no unity build)"
cmake --build "$nonunity_dir" --parallel "$jobs" --target quantix-kvm-agent qx-agentd qx-agent \
  qxa_unit_tests qxa_host_unit_tests

# Two passes. The unit and integration tests first, two at a time (the soak alone). Then the VM
# tests and the fuzzers, also two at a time: each keeps one core busy (a QEMU with one vCPU under
# TCG, a fuzzer), so they run beside each other but never beside the tests whose timing they
# would disturb.
cd "$build_dir"
status=0
ctest --output-on-failure --parallel "$jobs" --timeout 600 -LE 'vm|fuzz' "$@" || status=$?
ctest --output-on-failure --parallel "$jobs" --timeout 600 -L 'vm|fuzz' "$@" || status=$?
exit "$status"
