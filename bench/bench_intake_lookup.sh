#!/usr/bin/env bash
# What serve's intake pays per new job to tell it from one committed
# earlier: open the newest catalog version and look the staging id up in
# the window and the job archive, with the process's chunk cache off and on
# (bench/bench_intake_lookup.c says what is timed).
#
#   bench/bench_intake_lookup.sh [JOBS] [LOOKUPS]     (defaults 10000 2000)
#
# Builds against the core library of build-bench/ (RelWithDebInfo) and runs
# under build-bench/intake-lookup/ (removed afterwards). Run on demand;
# never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-10000} lookups=${2:-2000}
b=${SF_BENCH_BUILD:-build-bench}
cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$b" -j2 --target segforge_core >/dev/null
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -I"$b" -o "$b/bench_intake_lookup" \
  bench/bench_intake_lookup.c "$b/libsegforge_core.a" \
  $(pkg-config --libs avro-c jansson libzstd libxxhash) -lroaring -lpthread -lm
dir=$b/intake-lookup
rm -rf "$dir"
trap 'rm -rf "$dir"' EXIT
"$b/bench_intake_lookup" "$dir" "$jobs" "$lookups"
