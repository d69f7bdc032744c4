#!/usr/bin/env bash
# Search benchmark: segforge beside FAISS (Debian's python3-faiss, OpenBLAS)
# on the same generated data, the same nlist and nprobe, one thread each.
# Prints recall@k and queries/s of both, and their ratio.
#
#   bench/bench_search.sh [ROWS] [DIM] [NLIST] [NPROBE] [TYPES] [REPEAT]
#   defaults: 200000 128 1024 16 "IVF_FLAT IVF_SQ IVF_PQ" 3
#
# segforge searches one query at a time (its service path); FAISS searches
# the whole batch at once, its fastest single-thread mode. Medians of REPEAT
# runs. Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-200000} dim=${2:-128} nlist=${3:-1024} nprobe=${4:-16}
types=${5:-"IVF_FLAT IVF_SQ IVF_PQ"} repeat=${6:-3}
k=10 shards=4 metric=L2 pqm=$((dim / 8))
[ -x build/segforge ] || { cmake -S . -B build >/dev/null && cmake --build build -j"$(nproc)" >/dev/null; }
sf=build/segforge
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-search.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "data: $rows x $dim clustered, 1000 queries, k=$k, nlist=$nlist, nprobe=$nprobe, $shards shards"
$sf gen --out "$work/data" --rows "$rows" --dim "$dim" --queries 1000 --clusters 1000 --k 100 2>/dev/null
rpf=$(( (rows + shards - 1) / shards ))
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '%-9s %-8s %8s %10s %12s\n' type engine recall@10 "queries/s" "train+build"
for t in $types; do
  root="$work/$t"
  t0=$(date +%s.%N)
  pqflag=()
  [ "$t" = IVF_PQ ] && pqflag=(--pq-m "$pqm")
  mkdir -p "$root"
  $sf train --vectors "$work/data/base.fvecs" --out "$root" --index-type "$t" --metric $metric \
      --nlist "$nlist" "${pqflag[@]}" >/dev/null
  for s in $(seq 0 $((shards - 1))); do
    $sf stage --vectors "$work/data/base.fvecs" --staging "$root" --rows-per-fragment "$rpf" \
        --fragments "$s" --shard-id "s$s" >/dev/null &
  done
  wait
  t1=$(date +%s.%N)
  qps=() rec=""
  for r in $(seq "$repeat"); do
    out=$($sf search --json --queries "$work/data/query.fvecs" --groundtruth "$work/data/gt.ivecs" \
          --rows-per-fragment "$rpf" --k $k --nprobe "$nprobe" "$root"/s*.sfshard)
    qps+=("$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["qps"])' <<<"$out")")
    rec=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["recall"])' <<<"$out")
  done
  sq=$(printf '%s\n' "${qps[@]}" | median)
  printf '%-9s %-8s %8.4f %10.0f %11.1fs\n' "$t" segforge "$rec" "$sq" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
  echo "segforge $t: qps runs ${qps[*]}" >&2
  fj=$(/usr/bin/python3 bench/faiss_search.py --data "$work/data" --type "$t" --metric $metric \
       --nlist "$nlist" --nprobe "$nprobe" --pq-m "$pqm" --k $k --repeat "$repeat")
  echo "faiss $t: $fj" >&2
  fq=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["qps"])' <<<"$fj")
  fr=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["recall"])' <<<"$fj")
  fb=$(/usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["train_add_s"])' <<<"$fj")
  printf '%-9s %-8s %8.4f %10.0f %11.1fs\n' "$t" faiss "$fr" "$fq" "$fb"
  printf '%-9s ratio segforge/faiss queries/s: %.2f\n' "$t" "$(awk -v a="$sq" -v b="$fq" 'BEGIN{print a/b}')"
done
