#!/usr/bin/env bash
# cli_readme.sh - the README's "distributed build by hand" runs as written,
# on a fresh path: the block is taken from README.md and run verbatim, with
# only /data/ moved into a scratch directory and `segforge` the program
# under test. It must succeed command after command (train creating the
# staging root and its parents), print recall@10 from the search, and leave
# a catalog that inspect describes.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch), SF_SRC (the source tree).
. "$(dirname "$0")/shell_helpers.sh"
SRC=${SF_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
scratch cli_readme

# The block after "A distributed build by hand", between its ```sh fence and the next.
awk '/^A distributed build by hand/ {f = 1} f && /^```sh/ {g = 1; next} g && /^```/ {exit} g' \
  "$SRC/README.md" >"$T/example.sh"
check "the README has the example" grep -q '^segforge finalize' "$T/example.sh"
check "...which stages into a staging root that does not exist yet" \
  grep -q 'S=$DS/_indices/_staging/job-1' "$T/example.sh"
{
  echo 'set -ex'
  echo 'segforge() { "$SEGFORGE" "$@"; }'
  sed "s#/data/#$T/data/#g" "$T/example.sh"
} >"$T/run.sh"
check "no path outside the scratch directory is left" test -z "$(grep -n ' /data' "$T/run.sh")"

SEGFORGE=$S bash "$T/run.sh" >"$T/out" 2>"$T/err"
rc=$?
check "the example runs to the end (status $rc)" test $rc -eq 0
[ $rc -eq 0 ] || tail -20 "$T/err"
DS=$T/data/ds
check "train created the staging root and its quantizer" \
  test -f "$DS/_indices/_staging/job-1/quantizer"
check "finalize committed the job" grep -q '^committed job job-1 as catalog version 1: ' "$T/out"
recall=$(sed -n 's/^recall@10 = \([0-9.]*\)$/\1/p' "$T/out")
check "search printed recall@10 ($recall)" test -n "$recall"
check "...and it is that of IVF_SQ with nprobe 16 of 256 lists (>= 0.90)" \
  awk -v r="${recall:-0}" 'BEGIN {exit !(r >= 0.90)}'
check "inspect shows the index" \
  grep -q '^index emb_idx  column emb  IVF_SQ L2  dim 64  nlist 256' "$T/out"
check "...with all 100000 rows in one segment of the 256M budget" \
  grep -q '^  1 segments, 100000 rows, ' "$T/out"
check "...added by job-1 in version 1" grep -q 'fragments 0-9  (job job-1, v1)' "$T/out"

echo "$fails failure(s)"
test $fails -eq 0
