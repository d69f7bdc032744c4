#!/usr/bin/env bash
# cli_vector_core.sh - the vector core as a user drives it: gen, train,
# stage (workers in parallel), search with recall, inspect; and every kind of
# damaged input giving a clear message that names the file, a non-zero exit
# and no crash (a crash would exit with a signal's status, >= 128).
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_core
# expect_fail "what" "text the message must contain" command...
expect_fail() {
  local what=$1 want=$2 rc; shift 2
  "$@" >"$T/out" 2>"$T/err"; rc=$?
  if [ $rc -eq 0 ]; then bad "$what: exit 0"; return; fi
  if [ $rc -ge 128 ]; then bad "$what: crashed with status $rc"; cat "$T/err"; return; fi
  if ! grep -qF -- "$want" "$T/err"; then bad "$what: message lacks '$want':"; cat "$T/err"; return; fi
  ok "$what (exit $rc: $(head -c 160 "$T/err" | tr '\n' ' '))"
}

D=$T/data ST=$T/ds/_indices/_staging/job-1
mkdir -p "$ST"
"$S" gen --out "$D" --rows 20000 --dim 32 --queries 200 --clusters 200 --k 10 2>/dev/null || { echo "FAIL gen"; exit 1; }
"$S" train --vectors "$D/base.fvecs" --out "$ST" --index-type IVF_FLAT --metric L2 --nlist 32 >/dev/null 2>&1 ||
  { echo "FAIL train"; exit 1; }
pids=()
for i in 0 1 2 3; do
  "$S" stage --vectors "$D/base.fvecs" --staging "$ST" --fragments $((i * 5))-$((i * 5 + 4)) \
    --rows-per-fragment 1000 --shard-id "w$i" >/dev/null 2>"$T/stage$i.err" & pids+=($!)
done
for i in 0 1 2 3; do wait "${pids[$i]}" || bad "parallel stage w$i: $(cat "$T/stage$i.err")"; done
[ "$(ls "$ST"/*.sfshard | wc -l)" = 4 ] && ok "four workers staged four shards in parallel" || bad "shard count"

# Exhaustive IVF_FLAT search equals the brute-force ground truth.
out=$("$S" search --queries "$D/query.fvecs" --groundtruth "$D/gt.ivecs" --rows-per-fragment 1000 \
       --k 10 --nprobe 32 "$ST"/w*.sfshard)
echo "$out" | grep -q 'recall@10 = 1.0000' && ok "nprobe = nlist: recall@10 is exactly 1" || bad "exhaustive recall: $out"
json=$("$S" search --json --queries "$D/query.fvecs" --k 3 --nprobe 4 "$ST"/w*.sfshard)
/usr/bin/python3 - "$json" <<'PY' && ok "search --json gives 200 results of 3 ids, scores ascending" || bad "search --json"
import json, sys
o = json.loads(sys.argv[1])
assert o["queries"] == 200 and len(o["results"]) == 200
for r in o["results"]:
    assert len(r["ids"]) == 3 and r["scores"] == sorted(r["scores"])
    for i in r["ids"]:
        assert (i >> 32) < 20 and (i & 0xffffffff) < 1000
PY
"$S" inspect "$ST/w1.sfshard" | grep -q 'fragments   5-9 (5)' && ok "inspect shows the shard's fragments" || bad "inspect fragments"
"$S" inspect --json "$ST/quantizer" | grep -q '"nlist": 32' && ok "inspect reads the quantizer" || bad "inspect quantizer"

# Damaged files: a copy per case, so each case sees one fault.
cp "$ST/w0.sfshard" "$T/flip.sfshard"
printf '\xff' | dd of="$T/flip.sfshard" bs=1 seek=5000 conv=notrunc 2>/dev/null
expect_fail "a flipped byte in a code block" "flip.sfshard" "$S" inspect "$T/flip.sfshard"
cp "$ST/quantizer" "$T/q.sfq" && cp "$ST/w0.sfshard" "$T/trunc.sfshard"
truncate -s -100 "$T/trunc.sfshard"
expect_fail "a truncated shard" "trunc.sfshard" "$S" search --queries "$D/query.fvecs" --quantizer "$T/q.sfq" "$T/trunc.sfshard"
cp "$ST/w0.sfshard" "$T/hdr.sfshard"
printf '\xff\xff\xff\x7f' | dd of="$T/hdr.sfshard" bs=1 seek=24 conv=notrunc 2>/dev/null
expect_fail "a huge count in the header" "hdr.sfshard" "$S" inspect "$T/hdr.sfshard"
cp "$ST/quantizer" "$T/badq"
printf '\x01' | dd of="$T/badq" bs=1 seek=100 conv=notrunc 2>/dev/null
expect_fail "a flipped byte in the quantizer" "badq" "$S" search --queries "$D/query.fvecs" --quantizer "$T/badq" "$ST/w0.sfshard"
head -c 1000 "$D/base.fvecs" > "$T/short.fvecs"
expect_fail "a truncated vector file" "truncated tail" "$S" stage --vectors "$T/short.fvecs" --staging "$ST" \
  --fragments 0 --rows-per-fragment 10 --shard-id x
expect_fail "a fragment past the end of the vectors" "fragment 25 starts at row 25000" "$S" stage --vectors "$D/base.fvecs" \
  --staging "$ST" --fragments 25 --rows-per-fragment 1000 --shard-id x
expect_fail "overlapping shards in one search" "fragments" "$S" search --queries "$D/query.fvecs" "$ST/w0.sfshard" "$ST/w0.sfshard"
expect_fail "a malformed fragment list" "range list" "$S" stage --vectors "$D/base.fvecs" --staging "$ST" \
  --fragments 3-1 --rows-per-fragment 1000 --shard-id x
expect_fail "a shard id that is not a file name" "shard-id" "$S" stage --vectors "$D/base.fvecs" --staging "$ST" \
  --fragments 1 --rows-per-fragment 1000 --shard-id ../x
expect_fail "ground truth without rows per fragment" "rows-per-fragment" "$S" search --queries "$D/query.fvecs" \
  --groundtruth "$D/gt.ivecs" "$ST/w0.sfshard"
expect_fail "queries of another dimension" "dimension" "$S" search --queries "$D/gt.ivecs" "$ST/w0.sfshard"
expect_fail "a file that is not an index" "not a shard" "$S" inspect "$D/base.fvecs"
[ -z "$(ls "$ST" | grep -v -E '^(quantizer|w[0-3]\.sfshard)$')" ] && ok "failed stages left nothing in the staging root" ||
  bad "staging root has leftovers: $(ls "$ST")"
echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
