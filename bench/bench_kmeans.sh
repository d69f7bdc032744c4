#!/usr/bin/env bash
# k-means assignment: segforge's panel kernel beside OpenBLAS sgemm (the
# serial build, one thread), per dimension and k: the measurement behind
# keeping the panel kernel (docs/performance.md).
#
#   bench/bench_kmeans.sh [RUNS] [N]   (defaults 5 32768)
#
# Needs libopenblas-dev and libopenblas0-serial. Run on demand; never part
# of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --bench
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j2 --target segforge_core >/dev/null
blas=/usr/lib/$(gcc -print-multiarch)/openblas-serial
[ -e "$blas/libopenblas.so.0" ] || { echo "bench_kmeans: apt-get install libopenblas0-serial libopenblas-dev" >&2; exit 2; }
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -I"$b" -o "$b/bench_kmeans" \
  bench/bench_kmeans.c "$b/libsegforge_core.a" "$blas/libopenblas.so.0" -Wl,-rpath,"$blas" \
  $(pkg-config --libs libisal 2>/dev/null) -lm -lpthread
"$b/bench_kmeans" "$@"
