#!/usr/bin/env bash
# Compaction of an index of many incremental jobs (docs/compaction.md).
#
#   bench/bench_compact.sh [--no-broker] [JOBS] [ROWS_PER_JOB] [NLIST] [RUNS] [-- FLAGS...]
#
# JOBS (default 1000) jobs of ROWS_PER_JOB rows (default 500; IVF_SQ, dim
# 64, nlist NLIST default 256) go into one index one by one, as continuous
# use does; search QPS at nprobe 16 is the median of RUNS runs (default 3),
# and is compared with the same rows staged as one shard in one segment
# (the reference).
#
# By default the jobs go through `segforge serve` on its embedded broker
# (bench/bench_compact.py), once with --compact off and once with --compact
# on (the policy FLAGS after -- go to that serve), in one run: each job is a
# worker's `train --from-dataset` and `stage --publish`, one started every
# GAP seconds at most (default 0.2). It prints, for off and on: the segments
# left, search QPS as a ratio to one segment, p50 and p99 of a job's commit
# latency (serve's wait_ms: its event read -> its commit announced) and the
# ratio on / off, merges, the slots merges yielded to job builds, and the
# write amplification (bytes written per byte ingested).
#
# --no-broker: no serve and no broker; each job is `train --from-dataset`,
# `stage`, `finalize`, then `segforge compact` (FLAGS after --) runs once at
# the end: segment counts, QPS before and after, the bytes compaction
# rewrote and its write amplification.
#
# The numbers end at `--` however many are given (`bench_compact.sh 200 --
# --segments-per-tier 4` is 200 jobs with the defaults after it); anything
# but a positive whole number there is refused.
#
# Builds against build-bench/ (the default -O2 build) unless SEGFORGE names
# a binary. Run on demand; never part of the tests. The serve mode needs
# Debian's python3-kafka and python3-avro.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=serve
if [ "${1:-}" = --no-broker ]; then
  mode=cli
  shift
fi
# Up to four positional numbers, then optionally -- and the policy FLAGS:
# the numbers end at "--" (or at the end), however many there are.
pos=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  pos+=("$1")
  shift
done
[ "${1:-}" = -- ] && shift
usage="usage: bench/bench_compact.sh [--no-broker] [JOBS] [ROWS_PER_JOB] [NLIST] [RUNS] [-- FLAGS...]"
if [ ${#pos[@]} -gt 4 ]; then
  echo "bench_compact.sh: ${#pos[@]} numbers before the flags, at most 4 (put -- before the policy flags)" >&2
  echo "$usage" >&2
  exit 2
fi
for v in "${pos[@]}"; do
  case "$v" in
    '' | *[!0-9]* | 0)
      echo "bench_compact.sh: '$v' is not a positive whole number (JOBS ROWS_PER_JOB NLIST RUNS; flags go after --)" >&2
      echo "$usage" >&2
      exit 2
      ;;
  esac
done
jobs=${pos[0]:-1000} rpj=${pos[1]:-500} nlist=${pos[2]:-256} runs=${pos[3]:-3} dim=64 nprobe=16
# What the arguments were read as, without running (tests/cli_bench_args.sh).
if [ -n "${BENCH_ARGS_ONLY:-}" ]; then
  printf 'mode=%s jobs=%s rows_per_job=%s nlist=%s runs=%s flags=%s\n' "$mode" "$jobs" "$rpj" \
    "$nlist" "$runs" "$*"
  exit 0
fi
if [ -n "${SEGFORGE:-}" ]; then
  sf=$SEGFORGE
else
  cmake -S . -B build-bench >/dev/null
  cmake --build build-bench -j"$(nproc)" --target segforge >/dev/null
  sf=build-bench/segforge
fi
if [ $mode = serve ]; then
  SEGFORGE=$(realpath "$sf") SF_SRC=$PWD
  export SEGFORGE SF_SRC
  SF_TEST_TMP=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-compact.XXXXXX")
  export SF_TEST_TMP
  trap 'rm -rf "$SF_TEST_TMP"' EXIT
  # The script kills the processes it starts when it exits (tests/serve_helpers.py).
  /usr/bin/python3 bench/bench_compact.py "$jobs" "$rpj" "$nlist" "$runs" "$@"
  exit
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-compact.XXXXXX")
trap 'rm -rf "$work"' EXIT
rows=$((jobs * rpj))
py() { /usr/bin/python3 -c "$@"; }
echo "data: $rows x $dim clustered, 1000 queries; IVF_SQ nlist $nlist; $jobs jobs of $rpj rows"
$sf gen --out "$work/data" --rows "$rows" --dim "$dim" --queries 1000 --clusters 1000 --k 10 \
  >/dev/null 2>&1
ds=$work/ds one=$work/one
t0=$(date +%s.%N)
for ((j = 0; j < jobs; j++)); do
  st=$ds/_indices/_staging/job-$j
  if [ $j = 0 ]; then
    $sf train --vectors "$work/data/base.fvecs" --out "$st" --index-type IVF_SQ --metric L2 \
      --nlist "$nlist" >/dev/null
  else
    $sf train --from-dataset "$ds" --index idx --out "$st" >/dev/null
  fi
  $sf stage --vectors "$work/data/base.fvecs" --staging "$st" --rows-per-fragment "$rpj" \
    --fragments "$j" --shard-id s0 >/dev/null
  $sf finalize --dataset "$ds" --index idx --column emb --staging-id "job-$j" --max-merges 1 \
    >/dev/null 2>&1
done
t1=$(date +%s.%N)
# The reference: the same rows as one shard, one segment, same quantizer.
mkdir -p "$one/_indices/_staging/all"
cp "$ds/_indices/_staging/job-0/quantizer" "$one/_indices/_staging/all/quantizer"
$sf stage --vectors "$work/data/base.fvecs" --staging "$one/_indices/_staging/all" \
  --rows-per-fragment "$rpj" --fragments "0-$((jobs - 1))" --shard-id all >/dev/null
$sf finalize --dataset "$one" --index idx --column emb --staging-id all >/dev/null 2>&1

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
qps() { # dataset
  for _ in $(seq "$runs"); do
    $sf search --json --dataset "$1" --index idx --queries "$work/data/query.fvecs" --k 10 \
      --nprobe "$nprobe" | py 'import json,sys; print(json.load(sys.stdin)["qps"])'
  done | median
}
recall() {
  $sf search --dataset "$1" --index idx --queries "$work/data/query.fvecs" \
    --groundtruth "$work/data/gt.ivecs" --rows-per-fragment "$rpj" --k 10 --nprobe "$nprobe" |
    sed -n 's/^recall@10 = //p'
}
q_many=$(qps "$ds") r_many=$(recall "$ds")
out=$($sf compact --dataset "$ds" --index idx --json "$@")
q_comp=$(qps "$ds") r_comp=$(recall "$ds")
q_one=$(qps "$one") r_one=$(recall "$one")
f() { py "import json,sys; print(json.load(sys.stdin)[\"$1\"])" <<<"$out"; }
printf 'jobs committed in %.1f s (%.0f ms each: train --from-dataset, stage, finalize)\n' \
  "$(echo "$t1 - $t0" | bc)" "$(echo "($t1 - $t0) * 1000 / $jobs" | bc)"
printf 'compact %s: %s -> %s segments in %s merges over %s rounds, %.2f s\n' "${*:-(defaults)}" \
  "$(f segments_before)" "$(f segments_after)" "$(f merges)" "$(f rounds)" \
  "$(py "print($(f ms) / 1000)")"
printf '  rewrote %s of %s bytes: write amplification %.2f\n' "$(f bytes_written)" \
  "$(f bytes_before)" "$(f write_amplification)"
printf '%-28s %10s %10s %8s %18s\n' "search, nprobe $nprobe" segments q/s recall "vs one segment"
row() { printf '%-28s %10s %10.0f %8s %17.2fx\n' "$1" "$2" "$3" "$4" "$(py "print($3 / $q_one)")"; }
row "one segment per job" "$jobs" "$q_many" "$r_many"
row "after segforge compact" "$(f segments_after)" "$q_comp" "$r_comp"
row "one segment (reference)" 1 "$q_one" "$r_one"
