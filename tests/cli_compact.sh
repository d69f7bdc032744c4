#!/usr/bin/env bash
# cli_compact.sh - `segforge compact` on an index of many small incremental
# jobs (each staged against `train --from-dataset`): --dry-run writes
# nothing and says what the run will do; the run drops the segment count as
# the policy says, search answers the same ids (IVF_FLAT, nprobe = nlist)
# with the same recall; a second run finds nothing to do; gc then removes
# the swapped-out segments; a damaged committed quantizer is refused by
# `train --from-dataset`, naming the file, and so is an --out that is a file.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
set -u
S=${SEGFORGE:?set SEGFORGE to the segforge binary}
mkdir -p "${SF_TEST_TMP:-/tmp}"
T=$(mktemp -d "${SF_TEST_TMP:-/tmp}/cli_compact.XXXXXX") || { echo "FAIL mktemp"; exit 1; }
trap '[ -n "${SF_KEEP:-}" ] || rm -rf "$T"' EXIT
fails=0
ok() { echo "ok   $*"; }
bad() { echo "FAIL $*"; fails=$((fails + 1)); }
py() { /usr/bin/python3 -c "$@"; }
JOBS=24 RPF=200 NLIST=16
D=$T/data DS=$T/ds
"$S" gen --out "$D" --rows $((JOBS * RPF)) --dim 16 --queries 100 --clusters 50 --k 10 \
  >/dev/null 2>&1 || { echo "FAIL gen"; exit 1; }

# Job 0 trains the quantizer; every later job copies the committed one.
for ((j = 0; j < JOBS; j++)); do
  st=$DS/_indices/_staging/job-$j
  if [ $j = 0 ]; then
    "$S" train --vectors "$D/base.fvecs" --out "$st" --index-type IVF_FLAT --metric L2 \
      --nlist $NLIST --seed 3 >/dev/null 2>&1 || bad "train job-0"
  else
    "$S" train --from-dataset "$DS" --index idx --out "$st" >/dev/null || bad "train --from-dataset job-$j"
  fi
  "$S" stage --vectors "$D/base.fvecs" --staging "$st" --fragments $j --rows-per-fragment $RPF \
    --shard-id s0 >/dev/null 2>&1 || bad "stage job-$j"
  "$S" finalize --dataset "$DS" --index idx --column emb --staging-id job-$j >/dev/null 2>&1 ||
    bad "finalize job-$j"
done
segfiles() { find "$DS/_indices/segments" -name '*.sfseg' | wc -l; }
[ "$(segfiles)" = $JOBS ] && ok "$JOBS incremental jobs staged against the committed quantizer commit $JOBS segments" ||
  bad "segments after the jobs: $(segfiles)"

search_ids() {
  "$S" search --json --dataset "$DS" --index idx --queries "$D/query.fvecs" --k 10 --nprobe $NLIST |
    py 'import json,sys; [print(*r["ids"]) for r in json.load(sys.stdin)["results"]]'
}
recall() {
  "$S" search --dataset "$DS" --index idx --queries "$D/query.fvecs" --groundtruth "$D/gt.ivecs" \
    --rows-per-fragment $RPF --k 10 --nprobe 4 | sed -n 's/^recall@10 = //p'
}
ids0=$(search_ids) rec0=$(recall)
POLICY=(--segments-per-tier 4 --max-merge-at-once 4)
field() { py "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }

# --dry-run: nothing on disk changes.
before=$(find "$DS/_indices" -type f -printf '%p %s\n' | sort | md5sum)
dry=$("$S" compact --dataset "$DS" --index idx "${POLICY[@]}" --dry-run --json) || bad "compact --dry-run"
after=$(find "$DS/_indices" -type f -printf '%p %s\n' | sort | md5sum)
[ "$before" = "$after" ] && ok "--dry-run writes nothing" || bad "--dry-run changed files"
planned=$(field segments_after <<<"$dry") pmerges=$(field merges <<<"$dry")
[ "$pmerges" -gt 0 ] && [ "$planned" -lt $JOBS ] && ok "--dry-run plans $pmerges merges down to $planned segments" ||
  bad "dry run: $dry"

# The run.
out=$("$S" compact --dataset "$DS" --index idx "${POLICY[@]}" --max-merges 2 --json) || bad "compact"
got=$(field segments_after <<<"$out")
[ "$(field segments_before <<<"$out")" = $JOBS ] && [ "$got" = "$planned" ] &&
  ok "compact merges $JOBS segments down to $got, as the dry run said" || bad "compact: $out"
wa=$(field write_amplification <<<"$out")
py "import sys; sys.exit(0 if 1 < $wa < 10 else 1)" && ok "write amplification $wa" || bad "write amplification $wa"
[ "$(search_ids)" = "$ids0" ] && ok "search answers the same ids after compaction (nprobe = nlist)" ||
  bad "ids differ after compaction"
[ "$(recall)" = "$rec0" ] && ok "recall@10 at nprobe 4 is the same ($rec0)" || bad "recall $rec0 -> $(recall)"
again=$("$S" compact --dataset "$DS" --index idx "${POLICY[@]}")
case "$again" in *"$got -> $got segments in 0 merges"*) ok "a second run finds nothing to do" ;;
  *) bad "second run: $again" ;; esac
"$S" compact --dataset "$DS" --index nope >/dev/null 2>&1
[ $? = 1 ] && ok "an unknown index fails" || bad "unknown index"
"$S" compact --dataset "$DS" --index idx --floor-segment-bytes 2G --max-segment-bytes 1G >/dev/null 2>&1
[ $? = 2 ] && ok "a floor above the max is a usage error" || bad "floor above max"

# gc removes the swapped-out segments.
[ "$(segfiles)" -gt "$got" ] || bad "swapped-out segments stay until gc"
"$S" gc --dataset "$DS" --keep-versions 1 --grace 0 >/dev/null || bad "gc"
[ "$(segfiles)" = "$got" ] && ok "gc removes the swapped-out segments ($(segfiles) left)" ||
  bad "segment files after gc: $(segfiles), want $got"
[ "$(search_ids)" = "$ids0" ] || bad "ids differ after gc"

# An --out that exists as a file is refused, naming it and the fix.
: >"$T/a-file"
err=$("$S" train --from-dataset "$DS" --index idx --out "$T/a-file" 2>&1 >/dev/null)
rc=$?
case "$err" in *"$T/a-file exists and is not a directory"*"choose another staging root"*)
  [ $rc = 1 ] && ok "an --out that is a file is refused: $err" || bad "exit $rc" ;;
  *) bad "--out a file: exit $rc, $err" ;; esac

# A damaged committed quantizer is refused, naming the file.
q=$("$S" inspect --dataset "$DS" --json | py '
import json,sys
c=json.load(sys.stdin); print(c["indexes"][0]["quantizer_path"])')
case "$q" in /*) ;; *) q=$DS/_indices/$q ;; esac
py "
f=open('$q','r+b'); f.seek(40); b=f.read(1); f.seek(40); f.write(bytes([b[0]^0xff]))"
err=$("$S" train --from-dataset "$DS" --index idx --out "$T/new-root" 2>&1 >/dev/null)
rc=$?
case "$err" in *"$q"*) [ $rc = 1 ] && ok "a damaged committed quantizer is refused: $err" || bad "exit $rc" ;;
  *) bad "damaged quantizer: exit $rc, $err" ;; esac
[ ! -e "$T/new-root/quantizer" ] && ok "nothing is copied from a damaged quantizer" || bad "copied"

[ $fails -eq 0 ] && echo "all passed" || echo "$fails failed"
[ $fails -eq 0 ]
