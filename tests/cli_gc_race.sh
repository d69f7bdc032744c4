#!/usr/bin/env bash
# cli_gc_race.sh - `segforge gc` running in a loop never takes a file from
# under a commit: no version ever names a missing segment, every finalize
# succeeds, and search over the dataset works afterwards.
#   - 29 one-fragment jobs of one index finalized one after the other while
#     `gc --grace 0 --keep-versions 1` loops;
#   - the same with each commit held half a second before it takes the
#     catalog lock (SF_FAULT=catalog.pause_before_lock), which holds open
#     the window between a build and its commit;
#   - a build that crashed after finishing its segments, whose files are
#     older than gc's default grace, re-run (reusing them) while gc loops
#     with that default grace.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_gc_race
GC_PIDS=()
cleanup() {
  for p in "${GC_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -n "${SF_KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
G=$T/gen
"$S" gen --out "$G" --rows 2900 --dim 16 --queries 20 --clusters 20 --k 10 >/dev/null 2>&1 || { echo "FAIL gen"; exit 1; }
mkdir -p "$T/q"
"$S" train --vectors "$G/base.fvecs" --out "$T/q" --index-type IVF_FLAT --metric L2 --nlist 8 \
  --seed 5 >/dev/null 2>&1 || { echo "FAIL train"; exit 1; }

# stage DATASET JOB FRAGMENTS...: one shard per fragment, one quantizer for all.
stage() {
  local ds=$1 job=$2 f st
  st=$ds/_indices/_staging/$job
  shift 2
  mkdir -p "$st" && cp "$T/q/quantizer" "$st/"
  for f in "$@"; do
    "$S" stage --vectors "$G/base.fvecs" --staging "$st" --fragments "$f" \
      --rows-per-fragment 100 --shard-id "s$f" >/dev/null 2>&1 || bad "stage $job $f"
  done
}
# gc_start DATASET GC-ARGS...: gc in a loop until gc_stop.
gc_start() {
  local ds=$1
  shift
  rm -f "$T/stop"
  (while [ ! -e "$T/stop" ]; do "$S" gc --dataset "$ds" "$@" >>"$T/gc.out" 2>>"$T/gc.err"; done) &
  GC_PIDS+=($!)
}
gc_stop() {
  touch "$T/stop"
  for p in "${GC_PIDS[@]}"; do wait "$p"; done
  GC_PIDS=()
}
finalize() { # DATASET JOB [env...]
  local ds=$1 job=$2
  shift 2
  env "$@" "$S" finalize --dataset "$ds" --index idx --column emb --staging-id "$job" --json \
    >"$T/$job.json" 2>"$T/$job.err"
}
# Every segment of every version left on disk exists; prints what is missing.
missing() {
  /usr/bin/python3 - "$S" "$1" <<'EOF'
import json, os, subprocess, sys
s, ds = sys.argv[1], sys.argv[2]
cat = os.path.join(ds, "_indices", "_catalog")
for name in sorted(os.listdir(cat)):
    if not (name.startswith("v") and name.endswith(".avro") and len(name) == 26):
        continue
    p = subprocess.run([s, "inspect", "--dataset", ds, "--version", str(int(name[1:21])), "--json"],
                       capture_output=True)
    if p.returncode:
        print("%s: %s" % (name, p.stderr.decode().strip()))
        continue
    for ix in json.loads(p.stdout)["indexes"]:
        for seg in ix["segments"]:
            if not os.path.exists(os.path.join(ds, "_indices", seg["path"])):
                print("%s names %s" % (name, seg["path"]))
EOF
}
searches() {
  "$S" search --dataset "$1" --index idx --queries "$G/query.fvecs" --k 5 --nprobe 8 >/dev/null 2>"$T/search.err"
}
# check DATASET WHAT ROWS: the outcome of one scenario.
check() {
  local ds=$1 what=$2 want=$3 m rows
  m=$(missing "$ds")
  [ -z "$m" ] && ok "$what: every segment of every version exists" ||
    bad "$what: versions name missing segments: $(echo "$m" | wc -l) $(echo "$m" | head -3)"
  if searches "$ds"; then ok "$what: search over the dataset works"; else bad "$what: search: $(head -c 300 "$T/search.err")"; fi
  rows=$("$S" inspect --dataset "$ds" --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["indexes"][0]["num_rows"])')
  [ "$rows" = "$want" ] && ok "$what: the index holds all $want rows" || bad "$what: rows $rows, want $want"
}

# 1. 29 one-fragment jobs while gc --grace 0 loops.
A=$T/loop
for i in $(seq 0 28); do stage "$A" "job-$i" "$i"; done
gc_start "$A" --grace 0 --keep-versions 1
failed=0
for i in $(seq 0 28); do finalize "$A" "job-$i" || { failed=$((failed + 1)); echo "  job-$i: $(cat "$T/job-$i.err")"; }; done
gc_stop
[ $failed = 0 ] && ok "loop: 29 finalizes succeed while gc loops" || bad "loop: $failed finalizes failed"
check "$A" loop 2900

# 2. The same with every commit held before the lock.
B=$T/pause
for i in $(seq 0 7); do stage "$B" "job-$i" "$i"; done
gc_start "$B" --grace 0 --keep-versions 1
failed=0
for i in $(seq 0 7); do
  finalize "$B" "job-$i" SF_FAULT=catalog.pause_before_lock ||
    { failed=$((failed + 1)); echo "  job-$i: $(cat "$T/job-$i.err")"; }
done
gc_stop
[ $failed = 0 ] && ok "pause: 8 finalizes held before their commit succeed while gc loops" ||
  bad "pause: $failed finalizes failed"
check "$B" pause 800
grep -q "removed version" "$T/gc.out" && ok "gc did run meanwhile (it removed old versions)" ||
  bad "gc removed no version: the loop tested nothing"

# 3. A crashed build's finished segments, older than the default grace,
# reused by the re-run while gc loops with the default grace. gc starts once
# the re-run had time to reuse them and sits in its commit's pause; had it
# run first, the re-run would rebuild what gc removed, which is right too
# (test_finalize holds this order exactly).
C=$T/crashed
stage "$C" job-0 0 1 2
stage "$C" job-1 3 4 5
finalize "$C" job-0 || bad "crashed: first job: $(cat "$T/job-0.err")"
{ SF_FAULT=build.after_segment "$S" finalize --dataset "$C" --index idx --column emb \
    --staging-id job-1 --max-merges 1 >/dev/null; } 2>/dev/null # killed after one segment
n=$(ls "$C/_indices/segments" | grep -c '^job-1-.*\.sfseg$')
[ "$n" -ge 1 ] && ok "crashed: the killed build left $n finished segment(s)" || bad "crashed: no segment left"
touch -d '2 hours ago' "$C"/_indices/segments/job-1-*.sfseg
finalize "$C" job-1 SF_FAULT=catalog.pause_before_lock &
fin=$!
sleep 0.2
gc_start "$C" --keep-versions 1
wait $fin || bad "crashed: re-run: $(cat "$T/job-1.err")"
gc_stop
reused=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["reused"])' "$T/job-1.json" 2>/dev/null)
echo "info the re-run reused ${reused:-0} segment(s)"
old=$(find "$C/_indices/segments" -name 'job-1-*.sfseg' -mmin +60 | wc -l)
[ "$old" = 0 ] && ok "crashed: a reused segment's mtime is the re-run's, not the crash's" ||
  bad "crashed: $old segment(s) still two hours old"
check "$C" crashed 600
[ -z "$(ls -A "$C/_indices/_intents")" ] && ok "no intent is left behind" || bad "intents left: $(ls "$C/_indices/_intents")"
echo "$passes passed, $fails failed"
[ $fails -eq 0 ]
