#!/usr/bin/env bash
# cli_commit.sh - `segforge commit`, `inspect --dataset` and `gc` as a user
# runs them on real segments: a commit and its no-op repeat, refusals that
# name the segment, fragments or field, --replace and its partial-cover
# refusal, a crash before the link (SF_FAULT) leaving the previous version,
# gc keeping what the newest version needs, and a damaged version's error.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_commit
DS=$T/ds
"$S" gen --out "$T/data" --rows 12000 --dim 16 --queries 5 --k 5 >/dev/null 2>&1 ||
  { echo "FAIL gen"; exit 1; }

# job JOB METRIC FRAGMENT-RANGES...: a staging root with one shard per range,
# built into segments; build's JSON in $T/JOB.json.
job() {
  local id=$1 metric=$2; shift 2
  local st=$DS/_indices/_staging/$id i=0
  mkdir -p "$st"
  "$S" train --vectors "$T/data/base.fvecs" --out "$st" --index-type IVF_FLAT --metric "$metric" \
    --nlist 4 >/dev/null 2>"$T/train.err" || { cat "$T/train.err"; bad "train $id"; return; }
  for r in "$@"; do
    "$S" stage --vectors "$T/data/base.fvecs" --staging "$st" --fragments "$r" \
      --rows-per-fragment 500 --shard-id "s$i" >/dev/null 2>&1 || bad "stage $id $r"
    i=$((i + 1))
  done
  "$S" build --staging "$st" --dataset "$DS" --staging-id "$id" --json >"$T/$id.json" 2>/dev/null ||
    bad "build $id"
}
commit() { # commit JOB [flags...]
  local id=$1; shift
  "$S" commit --dataset "$DS" --index emb_idx --column emb --staging-id "$id" \
    --segments-from "$T/$id.json" "$@"
}
newest() { ls "$DS/_indices/_catalog/" | grep -c '^v[0-9]*\.avro$'; }
# `inspect --dataset` is wired by cmd_inspect.c; its checks wait for it.
if "$S" inspect --help 2>/dev/null | grep -q -- '--dataset'; then INSPECT=1; else INSPECT=0; fi
icheck() { if [ $INSPECT = 1 ]; then check "$@"; else echo "skip $1 (inspect --dataset not wired)"; fi; }

# --- commit and its repeat ------------------------------------------------------
job job-1 L2 0-3 4-7 8-11
commit job-1 >"$T/out" 2>&1
check "a commit makes version 1" grep -q 'committed job job-1 to index emb_idx as version 1: 3 segments' "$T/out"
check "the quantizer is kept by checksum" test "$(ls "$DS/_indices/quantizers" | grep -c '^[0-9a-f]\{16\}$')" -eq 1
commit job-1 >"$T/out" 2>&1
check "committing the same job again is a no-op" grep -q 'already committed in version 1' "$T/out"
check "and writes no version" test "$(newest)" -eq 1
"$S" inspect --dataset "$DS" >"$T/out" 2>&1
icheck "inspect lists the index" grep -q '^index emb_idx  column emb  IVF_FLAT L2  dim 16  nlist 4' "$T/out"
icheck "inspect lists its segments and fragments" grep -q 'fragments 4-7  (job job-1, v1)' "$T/out"
"$S" inspect --dataset "$DS" --index emb_idx --json >"$T/out.json" 2>&1
icheck "inspect --json names shard ids from build's JSON" grep -q '"shard_ids": \[' "$T/out.json"
icheck "inspect --json lists the versions" grep -q '"versions": \[' "$T/out.json"
"$S" inspect --dataset "$DS" --index nope >/dev/null 2>"$T/err"
icheck "inspect of an unknown index fails naming it" grep -q "no index 'nope'" "$T/err"

# --- refusals -------------------------------------------------------------------
job job-2 L2 2-5
commit job-2 >/dev/null 2>"$T/err"
check "an overlapping commit fails" test $? -eq 1
check "naming the committed segment and the fragments" grep -q 'OVERLAP: new segment job-2-.* overlaps segment job-1-.* on fragments 2-3' "$T/err"
commit job-2 --replace >/dev/null 2>"$T/err"
check "--replace refuses to cover a segment partly" grep -q 'OVERLAP: --replace would cover segment job-1-.* only partly: its fragments 2-3 .* but 0-1 are not' "$T/err"
job job-3 COSINE 20-23
commit job-3 >/dev/null 2>"$T/err"
check "a parameter mismatch is refused naming the field" grep -q 'MISMATCH: index emb_idx has metric L2 but the new segments have metric COSINE' "$T/err"
check "refusals write no version" test "$(newest)" -eq 1

# --- replace --------------------------------------------------------------------
job job-4 L2 0-7
commit job-4 --replace >"$T/out" 2>&1
check "--replace swaps out the two segments it covers" grep -q 'as version 2: 1 segments, 2 replaced' "$T/out"
"$S" inspect --dataset "$DS" >"$T/out" 2>&1
icheck "the index now has two segments" grep -q '^  2 segments' "$T/out"

# --- a crash before the link ------------------------------------------------------
job job-5 L2 12-15
SF_FAULT=catalog.before_link commit job-5 >/dev/null 2>&1
check "SF_FAULT=catalog.before_link kills the commit (SIGKILL)" test $? -eq 137
SF_FAULT=catalog.befor_link commit job-5 >"$T/out" 2>&1
check "a misspelt SF_FAULT point is refused (status 2)" test $? -eq 2
check "naming the entry" grep -q "SF_FAULT: 'catalog.befor_link': no such fault point" "$T/out"
check "the previous version is still the newest" test "$(newest)" -eq 2
"$S" inspect --dataset "$DS" >/dev/null 2>&1
rc=$?
icheck "and it still reads" test $rc -eq 0
commit job-5 >"$T/out" 2>&1
check "the job commits afterwards" grep -q 'as version 3' "$T/out"

# --- gc ----------------------------------------------------------------------------
"$S" gc --dataset "$DS" --keep-versions 1 --grace 0 --dry-run >"$T/dry" 2>&1
check "gc --dry-run lists the old versions" grep -q 'would remove version .*v00000000000000000001.avro' "$T/dry"
check "gc --dry-run removes nothing" test "$(newest)" -eq 3
"$S" gc --dataset "$DS" --keep-versions 1 --grace 0 >"$T/gc" 2>&1
check "gc removes the two old versions" test "$(newest)" -eq 1
check "gc removes the staging root of a committed job" test ! -e "$DS/_indices/_staging/job-1"
check "gc keeps the staging root of a job never committed" test -d "$DS/_indices/_staging/job-2"
check "gc removes the replaced segments" grep -q 'removed segment .*job-1-' "$T/gc"
check "gc prints the same list as its dry run" diff <(sed 's/^would remove /removed /' "$T/dry") "$T/gc"
for id in job-4 job-5; do
  for p in $(grep -o '"path": "segments/[^"]*"' "$T/$id.json" | cut -d'"' -f4); do
    check "a segment the newest version lists is still there: $p" test -f "$DS/_indices/$p"
  done
done

# --- a damaged version ----------------------------------------------------------------
job job-6 L2 16-19
V=$(ls "$DS"/_indices/_catalog/v*.avro)
truncate -s 200 "$V"
commit job-6 >/dev/null 2>"$T/err"
check "a commit on a truncated version fails naming the file" grep -q "CORRUPT: .*$(basename "$V").*truncated" "$T/err"
"$S" inspect --dataset "$DS" >/dev/null 2>"$T/err"
icheck "and so does inspect" grep -q "CORRUPT: .*$(basename "$V").*truncated" "$T/err"

echo "$fails failures"
test "$fails" -eq 0
