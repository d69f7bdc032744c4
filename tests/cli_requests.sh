#!/usr/bin/env bash
# cli_requests.sh - a request is checked whole before any I/O it would do:
#  - ids (staging ids, index names) name directories and files, so each
#    command refuses one such as '../../x' as it parses its flags, exit 2,
#    reading nothing outside the dataset and writing nothing at all;
#  - stage refuses to replace a shard it staged before (unless --force), and
#    `stage --publish` checks its event (fragments, staging root, client
#    properties) before it writes the shard, so a refusal leaves no shard
#    that a later finalize would pick up.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_requests
# snapshot: every file under $T with its size and time, to compare before
# and after (the test's own scratch files, $T/snap.* and $T/err, aside).
snapshot() {
  find "$T" \( -path "$T/snap.*" -o -path "$T/err" \) -prune -o -type d -printf '%p/\n' \
    -o -printf '%p %s %T@\n' | sort
}

"$S" gen --out "$T/data" --rows 2000 --dim 8 --queries 5 --k 5 >/dev/null 2>&1 ||
  { echo "FAIL gen"; exit 1; }
DS=$T/x/ds # so that _indices/_staging/../../../../outs is $T/outs
ST=$DS/_indices/_staging/job-1
stage() { # stage SHARD FRAGMENTS [flags...]
  local id=$1 fr=$2; shift 2
  "$S" stage --vectors "$T/data/base.fvecs" --staging "$ST" --fragments "$fr" \
    --rows-per-fragment 500 --shard-id "$id" "$@"
}
mkdir -p "$ST"
"$S" train --vectors "$T/data/base.fvecs" --out "$ST" --index-type IVF_FLAT --metric L2 \
  --nlist 4 >/dev/null 2>&1 || bad "train"
stage w0 0-1 >/dev/null 2>&1 || bad "stage w0"
# A staging root outside the dataset, which '../../../../outs' would name.
mkdir -p "$T/outs"
cp "$ST/quantizer" "$ST/w0.sfshard" "$T/outs/"

# --- ids are refused before any I/O ---------------------------------------------
# refused "what" command...: exit 2, the flag named in the message, and not a
# file created, removed or changed anywhere under $T.
refused() {
  local what=$1; shift
  snapshot >"$T/snap.before"
  "$@" </dev/null >/dev/null 2>"$T/err"
  local rc=$?
  snapshot >"$T/snap.after"
  check "$what: exit 2 (got $rc)" test $rc -eq 2
  check "$what: says the id is not valid" grep -q "is not a valid id" "$T/err"
  check "$what: nothing written" cmp -s "$T/snap.before" "$T/snap.after"
}
refused "build --staging-id ../../x" \
  "$S" build --staging "$ST" --dataset "$DS" --staging-id ../../x
check "...and no segment directory" test ! -e "$DS/_indices/segments"
refused "plan --staging-id ../x" "$S" plan --staging "$ST" --staging-id ../x
refused "finalize --staging-id ../../../../outs" \
  "$S" finalize --dataset "$DS" --index emb_idx --column emb --staging-id ../../../../outs
refused "finalize --index .." \
  "$S" finalize --dataset "$DS" --index .. --column emb --staging-id job-1
refused "commit --staging-id ../../../../outs" \
  "$S" commit --dataset "$DS" --index emb_idx --column emb --staging-id ../../../../outs \
  --segments-from "$ST"
refused "commit --index a/b" \
  "$S" commit --dataset "$DS" --index a/b --column emb --staging-id job-1 --segments-from "$ST"
refused "stage --publish --staging-id ../job-1" \
  stage w1 2-3 --publish --brokers 127.0.0.1:1 --dataset-uri "$DS" --index-name emb_idx \
  --column emb --staging-id ../job-1 --expected-fragments 0-3
refused "stage --publish --index-name '.'" \
  stage w1 2-3 --publish --brokers 127.0.0.1:1 --dataset-uri "$DS" --index-name . \
  --column emb --staging-id job-1 --expected-fragments 0-3
refused "search --index ../emb_idx" \
  "$S" search --dataset "$DS" --index ../emb_idx --queries "$T/data/query.fvecs"
refused "inspect --dataset --index a/b" "$S" inspect --dataset "$DS" --index a/b
check "no segment was built from the outside root" test -z "$(find "$T" -name '*.sfseg')"
check "no catalog was written" test ! -e "$DS/_indices/_catalog"

# --- stage never replaces a shard unless --force ------------------------------------
cp "$ST/w0.sfshard" "$T/w0.before"
stage w0 2-3 >/dev/null 2>"$T/err"
check "staging an existing shard id again exits 1" test $? -eq 1
check "...saying it is staged already" grep -q "EXISTS: shard 'w0' is staged already" "$T/err"
check "...and the shard is unchanged" cmp -s "$ST/w0.sfshard" "$T/w0.before"
stage w0 2-3 --force >/dev/null 2>"$T/err"
check "--force replaces it" test $? -eq 0
"$S" inspect "$ST/w0.sfshard" >"$T/out" 2>&1
check "...with the new fragments" grep -q '^fragments   2-3 (2)' "$T/out"
check "...and no temporary is left" test -z "$(ls "$ST" | grep '\.tmp\.')"

# --- stage --publish checks its event before it writes the shard ---------------------
publish_refused() { # publish_refused "what" STATUS PATTERN [stage flags...]
  local what=$1 want=$2 pattern=$3; shift 3
  stage w2 0-1 --publish --brokers 127.0.0.1:1 --dataset-uri "$DS" --index-name emb_idx \
    --column emb --timeout 2000 "$@" >/dev/null 2>"$T/err"
  local rc=$?
  check "$what: exit $want (got $rc)" test $rc -eq "$want"
  check "$what: says '$pattern'" grep -q -- "$pattern" "$T/err"
  check "$what: no shard was written" test ! -e "$ST/w2.sfshard"
}
publish_refused "fragments outside --expected-fragments" 1 \
  "nothing was staged: ShardStaged.fragments has fragments 0-1 that are not in expected_fragments" \
  --staging-id job-1 --expected-fragments 2-3
publish_refused "a staging id whose root is another directory" 1 \
  "nothing was staged: staging root $DS/_indices/_staging/job-2" \
  --staging-id job-2 --expected-fragments 0-3
mkdir -p "$DS/_indices/_staging/job-3"
publish_refused "a staging directory that is not the event's root" 1 \
  "is not the staging root $DS/_indices/_staging/job-3" \
  --staging-id job-3 --expected-fragments 0-3
publish_refused "a bad client property" 2 "acks: Invalid value" \
  --staging-id job-1 --expected-fragments 0-3 -X acks=banana
publish_refused "a bad column" 1 "ShardStaged.column" \
  --staging-id job-1 --expected-fragments 0-3 --column ''
"$S" finalize --dataset "$DS" --index emb_idx --column emb --staging-id job-1 \
  --expected-fragments 2-3 >"$T/out" 2>&1
check "a later finalize sees only the shards staged on purpose" \
  grep -q 'committed job job-1 as catalog version 1: 1 segments' "$T/out"

echo "$fails failure(s)"
test $fails -eq 0
