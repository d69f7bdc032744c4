#!/usr/bin/env bash
# Search benchmark: segforge beside FAISS, both Debian's python3-faiss
# (1.7.3, compiled without vectorisation) and FAISS 1.8.0 built with AVX2
# (../shared/anchors/faiss-1.8.0-avx2 beside the repository, when present),
# on the same data, nlist and nprobes, one thread each, in one run.
# Prints recall@10, queries/s per nprobe and training time of each, and
# segforge's queries/s over the AVX2 build's.
#
#   bench/bench_search.sh [--data fmnist|gen] [--rows N] [--dim D] [--nlist N]
#                         [--nprobes "8 16 32"] [--types "IVF_FLAT IVF_SQ IVF_PQ:16"]
#                         [--queries N] [--repeat N] [--batch] [--iters N]
#
# --data fmnist (the default) is Fashion-MNIST, 60,000 x 784, from Debian's
# dataset-fashion-mnist converted by bench/fmnist_texmex.py (nlist 256;
# types FLAT, SQ, PQ m=16 and m=98); when the package is missing it says so
# and uses a generated 60,000 x 784 set instead. --data gen is a generated
# clustered set (default 200,000 x 128, nlist 1024, PQ m=16 and m=32).
# Everything is searched one query at a time (a service's path; FAISS's
# includes about a microsecond of Python per call), or in one batch for
# FAISS with --batch. Training runs on one thread: segforge --threads 1,
# FAISS with OPENBLAS_NUM_THREADS=1 and one OpenMP thread; each uses its own
# defaults (segforge 20 k-means iterations, FAISS 10 coarse and 25 for PQ);
# --iters N gives segforge N instead (10 compares IVF_FLAT training with
# FAISS's at equal iterations).
# Each FAISS is trained once and saved; then every pass runs segforge and
# each FAISS in turn, and the figures are medians of --repeat passes. Run
# on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --bench
data=fmnist rows="" dim="" nlist="" nprobes="8 16 32" types="" queries=1000 repeat=3 batch=0
iters=()
while [ $# -gt 0 ]; do
  case $1 in
    --data) data=$2; shift ;;
    --rows) rows=$2; shift ;;
    --dim) dim=$2; shift ;;
    --nlist) nlist=$2; shift ;;
    --nprobes) nprobes=$2; shift ;;
    --types) types=$2; shift ;;
    --queries) queries=$2; shift ;;
    --repeat) repeat=$2; shift ;;
    --batch) batch=1 ;;
    --iters) iters=(--iters "$2"); shift ;;
    -h | --help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "bench_search: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x build/segforge ] || { cmake -S . -B build >/dev/null && cmake --build build -j2 >/dev/null; }
sf=build/segforge
PY=/usr/bin/python3
AVX2=../shared/anchors/faiss-1.8.0-avx2
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-search.XXXXXX")
trap 'rm -rf "$work"' EXIT
k=10
if [ "$data" = fmnist ]; then
  if $PY bench/fmnist_texmex.py --out "$work/data" --queries "$queries"; then
    desc="Fashion-MNIST 60000 x 784 (Debian's dataset-fashion-mnist)"
  else
    echo "bench_search: Fashion-MNIST is not available offline here; using a generated 60000 x 784 set" >&2
    data=gen rows=${rows:-60000} dim=${dim:-784} nlist=${nlist:-256}
    types=${types:-"IVF_FLAT IVF_SQ IVF_PQ:16 IVF_PQ:98"}
  fi
  nlist=${nlist:-256} types=${types:-"IVF_FLAT IVF_SQ IVF_PQ:16 IVF_PQ:98"}
fi
if [ "$data" = gen ]; then
  rows=${rows:-200000} dim=${dim:-128} nlist=${nlist:-1024}
  types=${types:-"IVF_FLAT IVF_SQ IVF_PQ:16 IVF_PQ:32"}
  $sf gen --out "$work/data" --rows "$rows" --dim "$dim" --queries "$queries" --clusters 1000 \
    --k 100 2>/dev/null
  desc="generated: $rows x $dim, 1000 clusters"
fi
nrows=$(( $(stat -c %s "$work/data/base.fvecs") / (4 * ($(od -An -t d4 -N4 "$work/data/base.fvecs")) + 4) ))
engines=("faiss-debian:")
if [ -d "$AVX2" ] && PYTHONPATH=$AVX2 $PY -c 'import faiss' 2>/dev/null; then
  engines+=("faiss-avx2:$AVX2")
else
  echo "bench_search: no AVX2 FAISS at $AVX2 (or it does not load): Debian's only" >&2
fi
faissflags=(--one-at-a-time)
[ $batch = 1 ] && faissflags=()
np_csv=$(echo "$nprobes" | tr ' ' ',')
json() { $PY -c "import json,sys; print(json.load(sys.stdin)[sys.argv[1]])" "$2" <<<"$1"; }
echo "data: $desc; $queries queries, k=$k, nlist=$nlist, one thread, $([ $batch = 1 ] && echo "FAISS in one batch" || echo "one query at a time")"
printf '%-12s %-13s %6s %9s %11s %9s %12s\n' index engine nprobe recall@10 queries/s train_s "sf/avx2 q/s"
for t in $types; do
  type=${t%%:*} m=""
  [ "$type" = IVF_PQ ] && m=${t#*:}
  label=$type${m:+" m=$m"}
  root="$work/$type$m"
  mkdir -p "$root"
  pqflag=()
  [ -n "$m" ] && pqflag=(--pq-m "$m")
  t0=$(date +%s.%N)
  $sf train --vectors "$work/data/base.fvecs" --out "$root" --index-type "$type" --metric L2 \
    --nlist "$nlist" --threads 1 "${pqflag[@]}" "${iters[@]}" >/dev/null
  ttrain=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
  $sf stage --vectors "$work/data/base.fvecs" --staging "$root" --rows-per-fragment "$nrows" \
    --fragments 0 --shard-id s0 >/dev/null
  # Train each FAISS once, then take turns: segforge, then each FAISS, in
  # every pass, so that the machine's drift weighs on all alike.
  declare -A trs=() qps=() rec=()
  for e in "${engines[@]}"; do
    name=${e%%:*} path=${e#*:}
    line=$(PYTHONPATH=$path OPENBLAS_NUM_THREADS=1 $PY bench/faiss_search.py --data "$work/data" \
      --type "$type" --nlist "$nlist" --nprobe "" --pq-m "${m:-16}" --save "$root/$name.index" | grep '^{')
    trs[$name]=$(json "$line" train_s)
  done
  for _ in $(seq "$repeat"); do
    for np in $nprobes; do
      out=$($sf search --json --queries "$work/data/query.fvecs" --groundtruth "$work/data/gt.ivecs" \
        --rows-per-fragment "$nrows" --k $k --nprobe "$np" "$root/s0.sfshard")
      qps[segforge,$np]+=" $(json "$out" qps)"
      rec[segforge,$np]=$(json "$out" recall)
    done
    for e in "${engines[@]}"; do
      name=${e%%:*} path=${e#*:}
      while read -r line; do
        np=$(json "$line" nprobe)
        qps[$name,$np]+=" $(json "$line" qps)"
        rec[$name,$np]=$(json "$line" recall)
      done < <(PYTHONPATH=$path OPENBLAS_NUM_THREADS=1 $PY bench/faiss_search.py --data "$work/data" \
        --type "$type" --nprobe "$np_csv" --k $k --repeat 1 --load "$root/$name.index" \
        "${faissflags[@]}" | grep '^{')
    done
  done
  med() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
  for e in "${engines[@]}" "segforge:"; do
    name=${e%%:*}
    for np in $nprobes; do
      q=$(med <<<"${qps[$name,$np]}")
      ratio=""
      if [ "$name" = segforge ] && [ -n "${qps[faiss-avx2,$np]:-}" ]; then
        ratio=$(awk -v a="$q" -v b="$(med <<<"${qps[faiss-avx2,$np]}")" 'BEGIN {printf "%.2fx", a / b}')
      fi
      tt=${trs[$name]:-$ttrain}
      printf '%-12s %-13s %6s %9.4f %11.0f %9.2f %12s\n' "$label" "$name" "$np" "${rec[$name,$np]}" \
        "$q" "$tt" "$ratio"
    done
  done
  unset trs qps rec
done
