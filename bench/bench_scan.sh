#!/usr/bin/env bash
# FLAT and SQ scans against the memory's limit: trains and stages IVF_FLAT
# and IVF_SQ on Fashion-MNIST (bench/fmnist_texmex.py; a generated 60000 x
# 784 set when the package is missing), then bench_scan reports per nprobe
# the code bytes scanned per query over the measured one-thread bandwidth.
#
#   bench/bench_scan.sh [NPROBES]   (default 8,16,32)
#
# Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --bench
nprobes=${1:-8,16,32}
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j2 --target segforge segforge_core >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -I"$b" -o "$b/bench_scan" bench/bench_scan.c \
  "$b/libsegforge_core.a" $(pkg-config --libs libzstd libxxhash jansson avro-c libisal 2>/dev/null) \
  -lroaring -lm -lpthread
sf=$b/segforge
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-scan.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! /usr/bin/python3 bench/fmnist_texmex.py --out "$work/data" --queries 1000; then
  echo "bench_scan: no Fashion-MNIST; a generated 60000 x 784 set instead" >&2
  $sf gen --out "$work/data" --rows 60000 --dim 784 --queries 1000 --k 10 2>/dev/null
fi
for t in IVF_FLAT IVF_SQ; do
  mkdir -p "$work/$t"
  $sf train --vectors "$work/data/base.fvecs" --out "$work/$t" --index-type $t --metric L2 \
    --nlist 256 >/dev/null
  $sf stage --vectors "$work/data/base.fvecs" --staging "$work/$t" --rows-per-fragment 60000 \
    --fragments 0 --shard-id s0 >/dev/null
  echo "== $t, nlist 256"
  "$b/bench_scan" "$work/$t/quantizer" "$work/data/query.fvecs" "$nprobes" "$work/$t/s0.sfshard"
done
