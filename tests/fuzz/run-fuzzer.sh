#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Runs one fuzz target for a while from its seed corpus:
#
#   run-fuzzer.sh FUZZER SEED_DIR WORK_DIR SECONDS [libFuzzer options...]
#
# New interesting inputs go to WORK_DIR/corpus (the seed directory is only read); a crash, leak,
# sanitizer report, hang (over 20 s on one input) or out-of-memory (over 2 GiB) ends the run
# with a non-zero status and its input in WORK_DIR/artifacts. Replay one: FUZZER FILE.
set -euo pipefail
if (($# < 4)); then
  echo "usage: $0 FUZZER SEED_DIR WORK_DIR SECONDS [libFuzzer options...]" >&2
  exit 2
fi
fuzzer="$1" seeds="$2" work="$3" seconds="$4"
shift 4
mkdir -p "$work/corpus" "$work/artifacts"
exec "$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$@" "$work/corpus" "$seeds"
