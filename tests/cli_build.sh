#!/usr/bin/env bash
# cli_build.sh - `segforge plan` and `segforge build` as a user runs them:
# plans and their refusals, a kill in the middle of a build (SF_FAULT)
# leaving no partial segment, re-runs that finish and reuse, and a corrupt
# shard failing the build without leaving anything under a final name.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_build
quiet() { "$@" >/dev/null 2>&1; }
finals() { ls "$1"/_indices/segments/*.sfseg 2>/dev/null | wc -l; }
temps() { ls "$1"/_indices/segments/ 2>/dev/null | grep -c '\.tmp\.'; }

DS=$T/ds
ST=$DS/_indices/_staging/job-1
mkdir -p "$ST"
"$S" gen --out "$T/data" --rows 24000 --dim 32 --queries 10 --k 10 2>/dev/null ||
  { echo "FAIL gen"; exit 1; }
if ! "$S" train --vectors "$T/data/base.fvecs" --out "$ST" --index-type IVF_SQ --metric L2 \
    --nlist 16 >/dev/null 2>"$T/train.err"; then
  cat "$T/train.err"
  echo "FAIL segforge train (needed to make a staging root)"
  exit 1
fi
for i in 0 1 2 3 4 5; do
  "$S" stage --vectors "$T/data/base.fvecs" --staging "$ST" --fragments $((i * 4))-$((i * 4 + 3)) \
    --rows-per-fragment 1000 --shard-id "w$i" >/dev/null 2>&1 || bad "stage w$i"
done
shard_bytes=$(stat -c %s "$ST"/*.sfshard | sort -n | tail -1) # the largest

# --- plan ---------------------------------------------------------------------
"$S" plan --staging "$ST" >"$T/plan.txt" 2>&1
check "no budget: one segment per shard" grep -q '^6 segments' "$T/plan.txt"
"$S" plan --staging "$ST" --target-segment-bytes $((shard_bytes * 2 + 100)) >"$T/plan2.txt"
check "a budget of two shards: three segments" grep -q '^3 segments' "$T/plan2.txt"
check "the first segment holds w0 and w1" grep -q 'fragments 0-7  shards: w0 w1$' "$T/plan2.txt"
"$S" plan --staging "$ST" --target-segment-bytes $((shard_bytes * 2 + 100)) >"$T/plan3.txt"
check "re-planning gives the same segment ids" cmp -s "$T/plan2.txt" "$T/plan3.txt"
"$S" plan --staging "$ST" --json --target-segment-bytes $((shard_bytes * 2 + 100)) >"$T/plan.json"
check "--json names segments with the staging id" grep -q '"segment_id": "job-1-' "$T/plan.json"

"$S" plan --staging "$ST" --expected-fragments 0-27,40 >/dev/null 2>"$T/err"
rc=$?
check "missing fragments: exit 1" test $rc -eq 1
check "missing fragments are listed" grep -q 'INCOMPLETE.*missing: 24-27,40' "$T/err"
check "exactly the expected fragments: plans" quiet "$S" plan --staging "$ST" --expected-fragments 0-23
"$S" plan --staging "$ST" --index-type IVF_PQ >/dev/null 2>"$T/err"
check "a type the shards cannot become is refused" grep -q 'MISMATCH.*IVF_PQ was requested' "$T/err"

"$S" stage --vectors "$T/data/base.fvecs" --staging "$ST" --fragments 3-4 \
  --rows-per-fragment 1000 --shard-id dup >/dev/null 2>&1
"$S" plan --staging "$ST" >/dev/null 2>"$T/err"
check "overlapping shards are refused naming both and the fragments" \
  grep -q "OVERLAP: shards 'w0' .* and 'dup' .* both hold fragment(s) 3;" "$T/err"
rm -f "$ST/dup.sfshard"

# --- build, killed in the middle, then re-run ------------------------------------
BUDGET=$((shard_bytes * 2 + 100))
SF_FAULT=build.mid_segment "$S" build --staging "$ST" --dataset "$DS" \
  --target-segment-bytes $BUDGET --max-merges 1 >/dev/null 2>&1
rc=$?
check "SF_FAULT=build.mid_segment kills the build (status $rc)" test $rc -eq 137
check "the kill leaves no segment under a final name" test "$(finals "$DS")" -eq 0
check "...only the dead writer's temporary" test "$(temps "$DS")" -eq 1
"$S" build --staging "$ST" --dataset "$DS" --target-segment-bytes $BUDGET --max-merges 2 \
  >"$T/build.txt" 2>"$T/build.err"
check "the re-run finishes" test $? -eq 0
check "...with three segments" test "$(finals "$DS")" -eq 3
check "...and sweeps the dead temporary" test "$(temps "$DS")" -eq 0
check "...printing their paths" grep -q '^segments/job-1-.*\.sfseg  .* bytes  8000 rows  fragments 0-7$' "$T/build.txt"
"$S" build --staging "$ST" --dataset "$DS" --target-segment-bytes $BUDGET --json \
  >"$T/build.json" 2>"$T/build.err"
check "a third run reuses all three" grep -q '(0 built, 3 reused)' "$T/build.err"
check "--json lists shard ids for the catalog" grep -q '"shard_ids"' "$T/build.json"

DS2=$T/ds2
SF_FAULT=build.after_segment "$S" build --staging "$ST" --dataset "$DS2" \
  --target-segment-bytes $BUDGET --max-merges 1 >/dev/null 2>&1
check "SF_FAULT=build.after_segment kills after one segment" test "$(finals "$DS2")" -eq 1
"$S" build --staging "$ST" --dataset "$DS2" --target-segment-bytes $BUDGET >/dev/null 2>"$T/err"
check "the re-run reuses it and builds the rest" grep -q '(2 built, 1 reused)' "$T/err"
for f in "$DS"/_indices/segments/*.sfseg; do
  check "segments of both runs are byte-identical ($(basename "$f"))" \
    cmp -s "$f" "$DS2/_indices/segments/$(basename "$f")"
done

# --- a corrupt shard ----------------------------------------------------------
DS3=$T/ds3
printf '\xff\xff\xff\xff' | dd of="$ST/w3.sfshard" bs=1 seek=200 conv=notrunc status=none
"$S" build --staging "$ST" --dataset "$DS3" --target-segment-bytes $BUDGET --max-merges 2 \
  >/dev/null 2>"$T/err"
rc=$?
check "a corrupt shard fails the build" test $rc -eq 1
check "...naming the shard" grep -q "CORRUPT.*shard 'w3'" "$T/err"
check "...leaving no temporary" test "$(temps "$DS3")" -eq 0
seg_of_w3=$(grep -o '"segment_id": "[^"]*"' "$T/plan.json" | sed -n 2p | cut -d'"' -f4)
check "...and nothing under the failed segment's name" test ! -e "$DS3/_indices/segments/$seg_of_w3.sfseg"

"$S" build --staging "$ST" >/dev/null 2>"$T/err"
check "usage errors exit 2" test $? -eq 2

echo "$fails failure(s)"
test $fails -eq 0
