#!/usr/bin/env bash
# The public library's hot paths beside their references (bench/bench_api.c):
# sf_shard_writer from memory against `segforge stage` from a file on the
# same rows, and sf_index_search from 1 and THREADS threads on one index.
# Medians of RUNS runs.
#
#   bench/bench_api.sh [ROWS] [DIM] [RUNS] [THREADS]   (defaults 200000 64 5 2)
#
# Builds against build-bench/ (the default -O2 build). Run on demand; never
# part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j2 --target segforge segforge_shared >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Iinclude -pthread -o "$b/bench_api" \
  bench/bench_api.c -L"$b" -lsegforge -Wl,-rpath,"$PWD/$b"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$b/bench_api" "$PWD/$b/segforge" "$dir" "${1:-200000}" "${2:-64}" "${3:-5}" "${4:-2}"
