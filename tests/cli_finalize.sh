#!/usr/bin/env bash
# cli_finalize.sh - `segforge finalize` end to end and the index it commits:
# a job staged by six workers, finalized into budgeted segments, answers
# exactly like a single-segment index over the same rows (IVF_FLAT,
# nprobe = nlist) and clears the recall floors for SQ and PQ; a second
# finalize is a no-op; the catalog lists what was built.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_finalize
D=$T/data
"$S" gen --out "$D" --rows 24000 --dim 32 --queries 200 --clusters 300 --k 10 2>/dev/null || { echo "FAIL gen"; exit 1; }

# stage_job DATASET JOB TYPE NLIST SHARDS: a quantizer and SHARDS shards over
# fragments 0-23 (1000 rows each) in the job's staging root.
stage_job() {
  local ds=$1 job=$2 type=$3 nlist=$4 shards=$5 per i pq=()
  local st=$ds/_indices/_staging/$job
  mkdir -p "$st"
  [ "$type" = IVF_PQ ] && pq=(--pq-m 16)
  "$S" train --vectors "$D/base.fvecs" --out "$st" --index-type "$type" --metric L2 --nlist "$nlist" \
    --seed 3 "${pq[@]}" >/dev/null 2>&1 || { bad "train $job"; return 1; }
  per=$((24 / shards))
  for ((i = 0; i < shards; i++)); do
    "$S" stage --vectors "$D/base.fvecs" --staging "$st" --fragments $((i * per))-$((i * per + per - 1)) \
      --rows-per-fragment 1000 --shard-id "w$i" >/dev/null 2>&1 &
  done
  wait
}
search_ids() { # DATASET NPROBE -> one line of ids per query
  "$S" search --json --dataset "$1" --index idx --queries "$D/query.fvecs" --k 10 --nprobe "$2" |
    /usr/bin/python3 -c 'import json,sys; [print(*r["ids"]) for r in json.load(sys.stdin)["results"]]'
}
recall() { # DATASET NPROBE -> recall@10
  "$S" search --dataset "$1" --index idx --queries "$D/query.fvecs" --groundtruth "$D/gt.ivecs" \
    --rows-per-fragment 1000 --k 10 --nprobe "$2" | sed -n 's/^recall@10 = //p'
}

# IVF_FLAT: six shards into budgeted segments vs one shard into one segment.
stage_job "$T/many" job-a IVF_FLAT 32 6
shard=$(stat -c %s "$T/many/_indices/_staging/job-a/w0.sfshard")
out=$("$S" finalize --dataset "$T/many" --index idx --column emb --staging-id job-a \
      --target-segment-bytes $((shard * 2 + shard / 2)) --expected-fragments 0-23 --max-merges 2 --json)
n=$(/usr/bin/python3 -c 'import json,sys; print(len(json.load(sys.stdin)["segments"]))' <<<"$out")
[ "$n" = 3 ] && ok "six shards under a budget of 2.5 shards make three segments" || bad "segments: $out"
stage_job "$T/one" job-b IVF_FLAT 32 1
"$S" finalize --dataset "$T/one" --index idx --column emb --staging-id job-b >/dev/null || bad "finalize one"
# Same data and seed: same quantizer, so the two indexes must agree row for row.
if cmp -s "$T/many/_indices/_staging/job-a/quantizer" "$T/one/_indices/_staging/job-b/quantizer" &&
   [ "$(search_ids "$T/many" 32)" = "$(search_ids "$T/one" 32)" ]; then
  ok "three segments answer exactly like one segment of the same rows (nprobe = nlist)"
else
  bad "segmented and single-segment answers differ"
fi
[ "$(recall "$T/many" 32)" = 1.0000 ] && ok "exhaustive IVF_FLAT over segments equals brute force" || bad "exhaustive recall"
again=$("$S" finalize --dataset "$T/many" --index idx --column emb --staging-id job-a --json)
/usr/bin/python3 -c 'import json,sys; o=json.load(sys.stdin); assert o["already"] and o["catalog_version"]==1' <<<"$again" &&
  ok "finalizing the same job again is a no-op returning version 1" || bad "second finalize: $again"
[ "$(ls "$T/many/_indices/_catalog" | grep -c '^v.*\.avro$')" = 1 ] && ok "one catalog version on disk" || bad "versions"

# SQ and PQ through segments clear the recall floors at nprobe 4 of 32.
for t in IVF_SQ:0.85 IVF_PQ:0.70; do
  type=${t%%:*} floor=${t##*:}
  stage_job "$T/$type" job-c "$type" 32 4
  "$S" finalize --dataset "$T/$type" --index idx --column emb --staging-id job-c \
    --target-segment-bytes 1 >/dev/null || bad "finalize $type"
  r=$(recall "$T/$type" 4)
  awk -v r="$r" -v f="$floor" 'BEGIN { exit !(r >= f) }' && ok "$type over 4 segments: recall@10 $r >= $floor (nprobe 4/32)" ||
    bad "$type recall $r < $floor"
done

# A job whose shards do not cover the expected fragments commits nothing.
stage_job "$T/gap" job-d IVF_FLAT 16 4
rm "$T/gap/_indices/_staging/job-d/w2.sfshard"
if "$S" finalize --dataset "$T/gap" --index idx --column emb --staging-id job-d --expected-fragments 0-23 \
   >/dev/null 2>"$T/gap.err"; then bad "incomplete job committed"
elif grep -q '12-17' "$T/gap.err" && [ -z "$(ls "$T/gap/_indices/_catalog" 2>/dev/null | grep avro)" ]; then
  ok "missing fragments are listed and nothing is committed ($(head -c 120 "$T/gap.err"))"
else bad "incomplete job: $(cat "$T/gap.err")"; fi
echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
