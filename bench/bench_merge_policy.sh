#!/usr/bin/env bash
# The merge policy (docs/compaction.md), two ways.
#
#   bench/bench_merge_policy.sh [OPTIONS]
#     The simulation: 100,000 commits of varied sizes, the policy applied
#     after each; segment count against its bound, write amplification
#     against its model and hard bound, largest segment, contiguity, time per
#     policy call; segforge's fragment order beside Lucene's size order.
#     OPTIONS go to bench_merge_policy (--help lists them).
#
#   bench/bench_merge_policy.sh --search [JOBS] [ROWS_PER_JOB] [NLIST] [RUNS]
#     What a segment costs a query, which the floor is chosen from: JOBS
#     shards of ROWS_PER_JOB rows (defaults 200 x 500, IVF_SQ dim 128, nlist
#     256) searched as JOBS files, as one segment merged from them by block
#     copy, and as one shard of all the rows; queries/s at nprobe 4, 16, 64
#     (medians of RUNS runs, default 5) and the cost per segment and probed
#     partition that follows.
#
# Builds against build-bench/ (the default -O2 build). Run on demand; never
# part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
b=build-bench
cmake -S . -B "$b" >/dev/null

if [ "${1:-}" != --search ]; then
  cmake --build "$b" -j"$(nproc)" --target bench_merge_policy >/dev/null
  exec "$b/bench_merge_policy" "$@"
fi

jobs=${2:-200} rpj=${3:-500} nlist=${4:-256} runs=${5:-5} dim=128
cmake --build "$b" -j"$(nproc)" --target segforge >/dev/null
sf=$b/segforge
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-policy.XXXXXX")
trap 'rm -rf "$work"' EXIT
rows=$((jobs * rpj))
echo "data: $rows x $dim clustered, 1000 queries; IVF_SQ nlist $nlist; $jobs jobs of $rpj rows"
$sf gen --out "$work/data" --rows "$rows" --dim "$dim" --queries 1000 --clusters 1000 --k 10 \
  >/dev/null 2>&1
many=$work/ds/_indices/_staging/many one=$work/ds/_indices/_staging/one
mkdir -p "$many" "$one"
$sf train --vectors "$work/data/base.fvecs" --out "$many" --index-type IVF_SQ --metric L2 \
  --nlist "$nlist" >/dev/null
cp "$many/quantizer" "$one/quantizer"
for i in $(seq 0 $((jobs - 1))); do
  $sf stage --vectors "$work/data/base.fvecs" --staging "$many" --rows-per-fragment "$rpj" \
    --fragments "$i" --shard-id "j$i" >/dev/null
done
$sf stage --vectors "$work/data/base.fvecs" --staging "$one" --rows-per-fragment "$rpj" \
  --fragments "0-$((jobs - 1))" --shard-id all >/dev/null
# One segment of all the jobs' shards, their blocks copied as compaction will.
$sf build --staging "$many" --dataset "$work/ds" --staging-id many \
  --target-segment-bytes 1024G >/dev/null
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
qps() { # nprobe files...
  local np=$1
  shift
  for _ in $(seq "$runs"); do
    $sf search --json --quantizer "$many/quantizer" --queries "$work/data/query.fvecs" --k 10 \
      --nprobe "$np" "$@" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["qps"])'
  done | median
}
printf '%-7s %14s %22s %16s %26s\n' nprobe "$jobs files" "1 merged segment" "1 shard" \
  "us per segment-partition"
for np in 4 16 64; do
  a=$(qps "$np" "$many"/j*.sfshard)
  m=$(qps "$np" "$work"/ds/_indices/segments/*.sfseg)
  o=$(qps "$np" "$one/all.sfshard")
  per=$(awk -v a="$a" -v m="$m" -v j="$jobs" -v np="$np" \
    'BEGIN { printf "%.2f", (1 / a - 1 / m) / (j - 1) / np * 1e6 }')
  printf '%-7s %10.0f q/s %18.0f q/s %12.0f q/s %26s\n' "$np" "$a" "$m" "$o" "$per"
done
