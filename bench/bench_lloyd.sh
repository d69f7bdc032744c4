#!/usr/bin/env bash
# Bounded Lloyd iterations beside plain Lloyd (time, rows scanned, same
# centroids, label differences, objectives) on Fashion-MNIST (Debian's
# dataset-fashion-mnist, converted to texmex) and generated data: the
# measurement behind SF_KMEANS_BOUNDS_MIN_DIM (docs/performance.md).
#
#   bench/bench_lloyd.sh [RUNS] [ITERS]   (defaults 3 and 20)
#
# Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --bench
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j2 --target segforge_core >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -I"$b" -o "$b/bench_lloyd" \
  bench/bench_lloyd.c "$b/libsegforge_core.a" $(pkg-config --libs libisal 2>/dev/null) \
  -lm -lpthread
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-lloyd.XXXXXX")
trap 'rm -rf "$work"' EXIT
data=""
if /usr/bin/python3 bench/fmnist_texmex.py --out "$work/data" --queries 10 >/dev/null; then
  data="$work/data/base.fvecs"
else
  echo "bench_lloyd: no Fashion-MNIST; generated data only" >&2
fi
"$b/bench_lloyd" "${1:-3}" "${2:-20}" $data
