#!/usr/bin/env bash
# cli_corrupt_advice.sh - a damaged committed segment is reported with the
# remedy that fits how it was made, which the catalog knows: a job's
# segment names its job and, while the job's staging root is there, says it
# can be rebuilt from the shards (after gc: a backup only); a segment merged
# by compaction never sends the reader to shards (its inputs go with gc),
# only to a backup. Checked through `segforge search --dataset` (which
# verifies every file) and `segforge compact` (which reads its inputs).
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
set -u
S=${SEGFORGE:?set SEGFORGE to the segforge binary}
mkdir -p "${SF_TEST_TMP:-/tmp}"
T=$(mktemp -d "${SF_TEST_TMP:-/tmp}/cli_corrupt_advice.XXXXXX") || { echo "FAIL mktemp"; exit 1; }
trap '[ -n "${SF_KEEP:-}" ] || rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
py() { /usr/bin/python3 -c "$@"; }
JOBS=7 RPF=200 NLIST=8
D=$T/data DS=$T/ds
"$S" gen --out "$D" --rows $((JOBS * RPF)) --dim 8 --queries 10 --clusters 20 --k 10 \
  >/dev/null 2>&1 || { echo "FAIL gen"; exit 1; }
for ((j = 0; j < JOBS; j++)); do
  st=$DS/_indices/_staging/job-$j
  if [ $j = 0 ]; then
    "$S" train --vectors "$D/base.fvecs" --out "$st" --index-type IVF_FLAT --metric L2 \
      --nlist $NLIST --seed 3 >/dev/null 2>&1 || bad "train job-0"
  else
    "$S" train --from-dataset "$DS" --index idx --out "$st" >/dev/null || bad "train job-$j"
  fi
  "$S" stage --vectors "$D/base.fvecs" --staging "$st" --fragments $j --rows-per-fragment $RPF \
    --shard-id s0 >/dev/null 2>&1 || bad "stage job-$j"
  [ $j -lt 4 ] || continue # jobs 4 to 6 commit later
  "$S" finalize --dataset "$DS" --index idx --column emb --staging-id job-$j >/dev/null 2>&1 ||
    bad "finalize job-$j"
done

# seg KIND: the path of a committed segment, a job's (KIND=job) or a
# merged one (KIND=merged), and its committing staging id.
seg() {
  "$S" inspect --dataset "$DS" --json | py "
import json, sys
c = json.load(sys.stdin)
for s in c['indexes'][0]['segments']:
    if bool(s['shard_ids']) == ('$1' == 'job'):
        print('$DS/_indices/' + s['path'], s['staging_id'])
        break"
}
# flip FILE: one byte in the middle of the file, inside a checksummed block.
flip() {
  py "
import os
p = '$1'; n = os.path.getsize(p) // 2
with open(p, 'r+b') as f:
    f.seek(n); b = f.read(1); f.seek(n); f.write(bytes([b[0] ^ 0x5a]))"
}
search_err() {
  "$S" search --dataset "$DS" --index idx --queries "$D/query.fvecs" --k 5 --nprobe $NLIST \
    2>&1 >/dev/null
}

# A job's segment, its staging root still there.
read -r path sid <<<"$(seg job)"
cp "$path" "$T/backup.sfseg"
flip "$path"
err=$(search_err)
case "$err" in
  *"$(basename "$path"): "*"(file corrupt; segment "*" of index idx, catalog version 4, was committed by job $sid: restore the file from a backup, or rebuild it from the job's shards, still in its staging root"*)
    ok "a job's segment: its job, the catalog version, a backup or its staged shards" ;;
  *) bad "a job's segment: $err" ;;
esac
case "$err" in *"rebuild the segment from its shards"*) bad "the old advice: $err" ;; esac
cp "$T/backup.sfseg" "$path"

# Merged by compaction.
"$S" compact --dataset "$DS" --index idx --segments-per-tier 2 --max-merge-at-once 2 \
  --floor-segment-bytes 1M >/dev/null 2>&1 || bad "compact"
read -r mpath msid <<<"$(seg merged)"
[ -n "$mpath" ] && ok "compaction merged segments ($msid)" || bad "no merged segment"
v=$("$S" inspect --dataset "$DS" --json | py 'import json,sys; print(json.load(sys.stdin)["version"])')
cp "$mpath" "$T/backup.sfseg"
flip "$mpath"
err=$(search_err)
case "$err" in
  *"(file corrupt; segment $msid of index idx, catalog version $v, was merged by a compaction (version "*"); its inputs are not kept once gc runs: restore the file from a backup)"*)
    ok "a merged segment: restore from a backup, no shards named" ;;
  *) bad "a merged segment: $err" ;;
esac
case "$err" in *"shards"*) bad "a merged segment is not sent to shards: $err" ;; esac

# compact reading a damaged input says the same: two more jobs, then one
# merge of every segment.
for j in 4 5; do
  "$S" finalize --dataset "$DS" --index idx --column emb --staging-id job-$j >/dev/null 2>&1 ||
    bad "finalize job-$j"
done
err=$("$S" compact --dataset "$DS" --index idx --segments-per-tier 2 --max-merge-at-once 4 \
  --floor-segment-bytes 1G --max-segment-bytes 2G 2>&1 >/dev/null)
case "$err" in
  *"was merged by a compaction"*"restore the file from a backup"*) ok "compact names the damaged input the same way" ;;
  *) bad "compact over a damaged input: $err" ;;
esac
cp "$T/backup.sfseg" "$mpath"

# After gc, a job's staging root is gone: a backup only.
"$S" finalize --dataset "$DS" --index idx --column emb --staging-id job-6 >/dev/null 2>&1 ||
  bad "finalize job-6"
"$S" gc --dataset "$DS" --keep-versions 1 --grace 0 >/dev/null 2>&1 || bad "gc"
read -r path sid <<<"$(seg job)"
if [ -n "$path" ] && [ ! -d "$DS/_indices/_staging/$sid" ]; then
  flip "$path"
  err=$(search_err)
  case "$err" in
    *"was committed by job $sid: restore the file from a backup (gc has removed the job's staging root and its shards)"*)
      ok "after gc, a job's segment: a backup only" ;;
    *) bad "after gc: $err" ;;
  esac
else
  bad "a job's segment whose staging root gc removed (${path:-none}, $sid)"
fi

[ $fails = 0 ] && echo "all checks passed" || echo "$fails check(s) failed"
exit $((fails > 0))
