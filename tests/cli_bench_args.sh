#!/usr/bin/env bash
# cli_bench_args.sh - the benchmarks' argument parsing (they themselves run
# on demand only): bench/bench_compact.sh reads up to four numbers, however
# many, up to `--`, and the policy flags after it; junk and too many numbers
# are refused; bench_serve_compact.sh, configured by its environment,
# refuses arguments instead of ignoring them.
# Env: SF_SRC (the source tree).
set -u
SRC=${SF_SRC:-$(dirname "$0")/..}
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
# SEGFORGE names a binary so that nothing is built, and one that fails: a
# script that ran instead of printing its arguments fails fast.
args() { BENCH_ARGS_ONLY=1 SEGFORGE=/bin/false timeout 60 bash "$SRC/bench/bench_compact.sh" "$@" 2>&1; }
expect() {
  local want=$1
  shift
  local got
  got=$(args "$@")
  [ "$got" = "$want" ] && ok "bench_compact.sh $*: $want" || bad "bench_compact.sh $*: got '$got', want '$want'"
}
expect "mode=serve jobs=1000 rows_per_job=500 nlist=256 runs=3 flags=" 
expect "mode=serve jobs=200 rows_per_job=500 nlist=256 runs=3 flags=--segments-per-tier 4" \
  200 -- --segments-per-tier 4
expect "mode=cli jobs=200 rows_per_job=100 nlist=256 runs=3 flags=--max-merge-at-once 4 --floor-segment-bytes 1M" \
  --no-broker 200 100 -- --max-merge-at-once 4 --floor-segment-bytes 1M
expect "mode=serve jobs=10 rows_per_job=20 nlist=30 runs=5 flags=--segments-per-tier 2" \
  10 20 30 5 -- --segments-per-tier 2
expect "mode=cli jobs=1000 rows_per_job=500 nlist=256 runs=3 flags=--segments-per-tier 2" \
  --no-broker -- --segments-per-tier 2
for a in "1 2 3 4 5 --" "10 --segments-per-tier 4" "-5" "ten"; do
  # shellcheck disable=SC2086 # the words are the arguments
  out=$(args $a)
  rc=$?
  [ $rc = 2 ] && case "$out" in *usage:*) true ;; *) false ;; esac &&
    ok "bench_compact.sh $a: refused with the usage" || bad "bench_compact.sh $a: rc $rc: $out"
done
out=$(timeout 60 bash "$SRC/bench/bench_serve_compact.sh" 40 2>&1)
rc=$?
[ $rc = 2 ] && case "$out" in *"JOBS=N GAP=SECONDS"*) true ;; *) false ;; esac &&
  ok "bench_serve_compact.sh 40: refused, pointing at JOBS and GAP" || bad "bench_serve_compact.sh 40: rc $rc: $out"
[ $fails = 0 ] && echo "all checks passed" || echo "$fails check(s) failed"
exit $((fails > 0))
