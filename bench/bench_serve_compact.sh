#!/usr/bin/env bash
# Job commit latency in `segforge serve` with background compaction on
# against off, in one run (docs/serve.md, "Compaction"; docs/compaction.md):
# JOBS one-fragment jobs into one index, one every GAP seconds, under
# --max-merges 1 (every merge competes with every job for the one slot) and
# with every partition copy slowed to 50 ms (SF_FAULT=build.slow_partition),
# so that merges of 10 segments take about a second and jobs arrive while
# they run. Prints p50/p99/max of a job's commit latency (its first event
# read -> its commit announced, `wait_ms`) and of its finalize time, the
# merges, and the segments left, for both.
#
#   [JOBS=N] [GAP=SECONDS] bench/bench_serve_compact.sh    JOBS=40 GAP=1.2 by default
#
# Builds build-bench/ (the default -O2 build). Run on demand; never part of
# the tests. Needs Debian's python3-kafka and python3-avro.
set -euo pipefail
# JOBS and GAP come from the environment; an argument would be ignored in
# silence, so none is taken.
if [ $# -gt 0 ]; then
  echo "bench_serve_compact.sh takes no arguments (got '$*'): set JOBS=N GAP=SECONDS in the environment" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j2 --target segforge >/dev/null
export SEGFORGE="$PWD/$b/segforge" SF_SRC="$PWD" SF_TEST_TMP="${SF_TEST_TMP:-$PWD/$b/benchtmp}"
mkdir -p "$SF_TEST_TMP"
# The script kills the processes it starts when it exits (tests/serve_helpers.py).
timeout 1800 /usr/bin/python3 bench/bench_serve_compact.py
