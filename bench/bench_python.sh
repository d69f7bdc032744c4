#!/usr/bin/env bash
# The Python package beside the C library on the same rows, index and
# queries (bench/bench_python.py): staging from numpy, search from 1 and
# THREADS Python threads, and the cost of one call through ctypes.
#
#   bench/bench_python.sh [ROWS] [DIM] [RUNS] [THREADS]   (defaults 200000 64 5 2)
#
# Builds against build-bench/ (the default -O2 build), as bench_api.sh does.
# Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j2 --target segforge segforge_shared >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Iinclude -pthread -o "$b/bench_api" \
  bench/bench_api.c -L"$b" -lsegforge -Wl,-rpath,"$PWD/$b"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
SEGFORGE_LIBRARY="$PWD/$b/libsegforge.so.1" PYTHONPATH="$PWD/python" PYTHONDONTWRITEBYTECODE=1 \
  /usr/bin/python3 bench/bench_python.py "$PWD/$b/bench_api" "$PWD/$b/segforge" "$dir" \
  "${1:-200000}" "${2:-64}" "${3:-5}" "${4:-2}"
