#!/usr/bin/env bash
# End-to-end benchmark of `segforge serve` on the embedded broker: the latency
# a job's stream processing adds (last ShardStaged -> SegmentsCommitted,
# minus the finalize time; target <= 20 ms p50) and the ShardStaged intake
# rate with tiny shards (target >= 50k events/s). Medians of RUNS runs; see
# bench/bench_e2e.py for what exactly is timed.
#
#   bench/bench_e2e.sh            JOBS=60 SHARDS=2 EVENTS=100000 RUNS=3 by default
#
# Builds build-bench/ (the default -O2 build). Run on demand; never part of
# the tests. Needs Debian's python3-kafka and python3-avro.
set -euo pipefail
cd "$(dirname "$0")/.."
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j"$(nproc)" --target segforge >/dev/null
export SEGFORGE="$PWD/$b/segforge" SF_SRC="$PWD" SF_TEST_TMP="${SF_TEST_TMP:-$PWD/$b/benchtmp}"
mkdir -p "$SF_TEST_TMP"
# The script kills the processes it starts when it exits (tests/serve_helpers.py).
timeout 900 /usr/bin/python3 bench/bench_e2e.py
