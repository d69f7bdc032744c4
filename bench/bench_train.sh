#!/usr/bin/env bash
# Training time at equal k-means iterations: segforge's IVF_FLAT training
# (--iters N, one thread) beside FAISS 1.8.0 AVX2's IndexIVFFlat.train (at
# the same N coarse iterations, 10 being FAISS's default; OPENBLAS_NUM_THREADS=1,
# one OpenMP thread), on Fashion-MNIST (60,000 x 784, nlist 256; a generated
# set of that shape when the package is missing). The two take turns RUNS
# times; prints each time, the medians and segforge's over FAISS's.
#
#   bench/bench_train.sh [RUNS] [ITERS] [FAISS_ITERS]   (defaults 5, 10, ITERS)
#
# SEGFORGE=path/to/segforge times another build (a before/after pair).
#
# Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --bench
runs=${1:-5} iters=${2:-10}
fiters=${3:-$iters}
[ -x build/segforge ] || { cmake -S . -B build >/dev/null && cmake --build build -j2 >/dev/null; }
sf=${SEGFORGE:-build/segforge} PY=/usr/bin/python3 AVX2=../shared/anchors/faiss-1.8.0-avx2
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-train.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! $PY bench/fmnist_texmex.py --out "$work/data" --queries 10 >/dev/null; then
  echo "bench_train: no Fashion-MNIST; a generated 60000 x 784 set instead" >&2
  $sf gen --out "$work/data" --rows 60000 --dim 784 --queries 10 --k 10 2>/dev/null
fi
sfs="" fs=""
for r in $(seq "$runs"); do
  t0=$(date +%s.%N)
  $sf train --vectors "$work/data/base.fvecs" --out "$work/q" --index-type IVF_FLAT --metric L2 \
    --nlist 256 --threads 1 --iters "$iters" >/dev/null
  s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
  f=$(PYTHONPATH=$AVX2 OPENBLAS_NUM_THREADS=1 $PY bench/faiss_search.py --data "$work/data" \
    --type IVF_FLAT --nlist 256 --nprobe "" --coarse-iters "$fiters" --save "$work/f.index" | grep '^{' |
    $PY -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["train_s"])')
  echo "run $r: segforge $s s, FAISS 1.8.0 AVX2 $f s"
  sfs+=" $s" fs+=" $f"
done
med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ms=$(med <<<"$sfs") mf=$(med <<<"$fs")
echo "median: segforge $ms s ($iters iterations), FAISS $mf s ($fiters); segforge/FAISS $(awk -v a="$ms" -v b="$mf" 'BEGIN {printf "%.2fx", a / b}')"
