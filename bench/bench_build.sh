#!/usr/bin/env bash
# bench_build.sh - how fast `segforge build` merges staged shards, next to
# what the same bytes cost to copy (cp + sync) and to merge with FAISS
# (IndexIVFFlat shards of the same vectors and nlist, merge_ondisk), and
# segforge's peak RSS for each size (it must not grow with the index).
# Beside wall time it reports the CPU cost, user + system seconds (from
# /usr/bin/time) per GiB of shards, of segforge build and of cp + sync.
# --busy keeps one other core spinning for the whole timed part, as when a
# worker shares its machine.
#
#   bench/bench_build.sh [--segforge BIN] [--gb "1 2"] [--runs 3] [--max-merges 2]
#                        [--shards 16] [--dim 128] [--nlist 1024] [--dir DIR] [--no-faiss]
#                        [--busy]
#
# Run on demand, never in CI. Needs about 6x the largest size in free disk
# under DIR (default: a new directory in $TMPDIR or /tmp), and deletes what
# it wrote when it ends. Every timing starts with the inputs in the page
# cache (all three read the same freshly written shards) and ends with the
# output on disk (segforge fsyncs; the others are followed by sync).
# Figures are medians of --runs runs. FAISS is Debian's python3-faiss, run
# with /usr/bin/python3 (not whatever python3 comes first on PATH).
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
SF=${SEGFORGE:-$SRC/build/segforge}
SIZES="1 2"
RUNS=3
MERGES=2
SHARDS=16
DIM=128
NLIST=1024
DIR=""
FAISS=1
BUSY=0
while [ $# -gt 0 ]; do
  case $1 in
    --segforge) SF=$2; shift ;;
    --gb) SIZES=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    --max-merges) MERGES=$2; shift ;;
    --shards) SHARDS=$2; shift ;;
    --dim) DIM=$2; shift ;;
    --nlist) NLIST=$2; shift ;;
    --dir) DIR=$2; shift ;;
    --no-faiss) FAISS=0 ;;
    --busy) BUSY=1 ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench_build: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$SF" ] || { echo "bench_build: no segforge at $SF (use --segforge BIN)" >&2; exit 2; }
PY=/usr/bin/python3
if [ $FAISS = 1 ] && ! $PY -c 'import faiss' 2>/dev/null; then
  echo "bench_build: $PY cannot import faiss (apt-get install python3-faiss), or pass --no-faiss" >&2
  exit 2
fi
W=$(mktemp -d "${DIR:-${TMPDIR:-/tmp}}/bench_build.XXXXXX")
BUSY_PID=""
trap '[ -z "$BUSY_PID" ] || kill "$BUSY_PID" 2>/dev/null; rm -rf "$W"' EXIT
echo "bench_build: working in $W; free space:"
df -h "$W" | tail -1

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
now() { date +%s.%N; }
# seconds of "Elapsed (wall clock)" in /usr/bin/time -v output (h:mm:ss or m:ss.ss)
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$1"; }
# user + system seconds of /usr/bin/time -v output
cpu() { awk -F': ' '/User time|System time/ {s += $2} END {print s}' "$1"; }
maxrss_mib() { awk -F': ' '/Maximum resident set size/ {printf "%.1f\n", $2 / 1024}' "$1"; }

declare -a ROWS_OUT
for GB in $SIZES; do
  D=$W/$GB
  ST=$D/ds/_indices/_staging/bench
  mkdir -p "$ST"
  # An IVF_FLAT row is DIM float32 codes plus about 2 bytes of compressed id.
  rows=$(awk -v g="$GB" -v d="$DIM" 'BEGIN {printf "%d", g * 1073741824 / (4 * d + 2)}')
  frags=$((SHARDS * 4))
  rpf=$(((rows + frags - 1) / frags))
  echo "== ${GB} GiB: $rows rows of dim $DIM, $SHARDS shards, nlist $NLIST"
  "$SF" gen --out "$D/data" --rows "$rows" --dim "$DIM" --queries 1 --k 1 --clusters 1000 2>/dev/null
  "$SF" train --vectors "$D/data/base.fvecs" --out "$ST" --index-type IVF_FLAT --metric L2 \
    --nlist "$NLIST" >/dev/null 2>&1
  for ((s = 0; s < SHARDS; s++)); do
    "$SF" stage --vectors "$D/data/base.fvecs" --staging "$ST" --fragments $((s * 4))-$((s * 4 + 3)) \
      --rows-per-fragment "$rpf" --shard-id "w$(printf %03d $s)" >/dev/null 2>&1 &
    if (((s + 1) % 2 == 0)); then wait; fi
  done
  wait
  bytes=$(cat "$ST"/*.sfshard | wc -c)
  echo "   staged $(awk -v b="$bytes" 'BEGIN {printf "%.2f GiB", b / 1073741824}') in $SHARDS shards"

  if [ $FAISS = 1 ]; then
    $PY "$SRC/bench/faiss_merge.py" prepare --vectors "$D/data/base.fvecs" --nlist "$NLIST" \
      --shards "$SHARDS" --work "$D/faiss" 2>/dev/null
  fi
  rm -f "$D/data/base.fvecs" # not needed any more: keep the page cache for the shards
  # The three contenders take turns within each run, so that whatever else
  # the machine (and its disk) is doing weighs on all of them alike.
  tb=() tc=() tf=() rss=() cb=() cc=()
  if [ $BUSY = 1 ]; then
    bash -c 'while :; do :; done' &
    BUSY_PID=$!
  fi
  for ((r = 0; r < RUNS; r++)); do
    rm -rf "$D/ds/_indices/segments"
    sync
    /usr/bin/time -v "$SF" build --staging "$ST" --dataset "$D/ds" --max-merges "$MERGES" \
      --target-segment-bytes 256M >/dev/null 2>"$D/time.txt"
    tb+=("$(wall "$D/time.txt")")
    cb+=("$(cpu "$D/time.txt")")
    rss+=("$(maxrss_mib "$D/time.txt")")
    nseg=$(ls "$D/ds/_indices/segments"/*.sfseg | wc -l)
    rm -rf "$D/ds/_indices/segments"
    mkdir -p "$D/cp"
    sync
    t0=$(now)
    /usr/bin/time -v cp "$ST"/*.sfshard "$D/cp/" 2>"$D/time_cp.txt"
    sync
    tc+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN {print b - a}')")
    cc+=("$(cpu "$D/time_cp.txt")")
    rm -rf "$D/cp"
    if [ $FAISS = 1 ]; then
      # FAISS's C++ side prints "resizing ..." on stdout: the JSON is the last line.
      out=$($PY "$SRC/bench/faiss_merge.py" merge --work "$D/faiss" --runs 1 | tail -1)
      tf+=("$(echo "$out" | $PY -c 'import json, sys; print(json.load(sys.stdin)["seconds"][0])')")
      fbytes=$(echo "$out" | $PY -c 'import json, sys; print(json.load(sys.stdin)["shard_bytes"])')
      rm -f "$D/faiss/merged.ivfdata" "$D/faiss/merged.index"
    fi
  done
  if [ -n "$BUSY_PID" ]; then
    kill "$BUSY_PID"
    wait "$BUSY_PID" 2>/dev/null || true
    BUSY_PID=""
  fi
  mb=$(printf '%s\n' "${tb[@]}" | median)
  mcb=$(printf '%s\n' "${cb[@]}" | median)
  mcc=$(printf '%s\n' "${cc[@]}" | median)
  mc=$(printf '%s\n' "${tc[@]}" | median)
  mr=$(printf '%s\n' "${rss[@]}" | median)
  pr=$(printf '%s\n' "${rss[@]}" | sort -g | tail -1)
  mf=NA
  if [ $FAISS = 1 ]; then
    mf=$(printf '%s\n' "${tf[@]}" | median)
    echo "   faiss shards: $(awk -v b="$fbytes" 'BEGIN {printf "%.2f GiB", b / 1073741824}'); merge_ondisk runs (s): ${tf[*]}"
  fi
  echo "   segforge build ($nseg segments) runs (s): ${tb[*]}; peak RSS (MiB): ${rss[*]}"
  echo "   cp+sync runs (s): ${tc[*]}; cpu (s) build ${cb[*]}, cp ${cc[*]}"
  ROWS_OUT+=("$GB $bytes $mb $mc $mf $mr $pr $mcb $mcc")
  rm -rf "$D"
done

echo
echo "medians of $RUNS runs; --max-merges $MERGES, --target-segment-bytes 256M, IVF_FLAT dim $DIM nlist $NLIST$([ $BUSY = 1 ] && echo ", other core busy")"
printf '%-7s %-9s %-12s %-10s %-12s %-14s %-15s %-9s %-9s %-13s %-10s\n' size shards build_s cp_sync_s faiss_s \
  build_vs_cp build_vs_faiss rss_MiB max_rss build_cpu/GiB cp_cpu/GiB
for row in "${ROWS_OUT[@]}"; do
  read -r gb bytes mb mc mf mr pr mcb mcc <<<"$row"
  awk -v gb="$gb" -v bytes="$bytes" -v mb="$mb" -v mc="$mc" -v mf="$mf" -v mr="$mr" -v pr="$pr" \
      -v mcb="$mcb" -v mcc="$mcc" 'BEGIN {
    vs_cp = mc / mb; vs_f = (mf == "NA") ? "NA" : sprintf("%.2fx", mf / mb); g = bytes / 1073741824
    printf "%-7s %-9s %-12.3f %-10.3f %-12s %-14s %-15s %-9s %-9s %-13.3f %-10.3f\n", gb "GiB",
      sprintf("%.2fGiB", g), mb, mc, (mf == "NA") ? mf : sprintf("%.3f", mf),
      sprintf("%.2fx", vs_cp), vs_f, mr, pr, mcb / g, mcc / g }'
done
echo "build_vs_cp = cp_sync_s / build_s (target >= 0.9); build_vs_faiss = faiss_s / build_s (target > 1)"
echo "cpu/GiB = user + system seconds per GiB of shards (target: build <= 3x cp)"
