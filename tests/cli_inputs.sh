#!/usr/bin/env bash
# cli_inputs.sh - every file segforge reads by name must be a regular file:
# a FIFO (which blocked open until a writer came) and a device such as
# /dev/zero (which was read without end) are refused at once, naming the
# file and what it is, by every command and flag that takes an input file.
# Configuration files are bounded too: a huge file or line is refused
# promptly, with the file, the line and the limit, in little memory.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_inputs

"$S" gen --out "$T/data" --rows 2000 --dim 8 --queries 5 --k 5 >/dev/null 2>&1 ||
  { echo "FAIL gen"; exit 1; }
DS=$T/ds
ST=$DS/_indices/_staging/job-1
mkdir -p "$ST"
"$S" train --vectors "$T/data/base.fvecs" --out "$ST" --index-type IVF_FLAT --metric L2 \
  --nlist 4 >/dev/null 2>&1 || bad "train"
"$S" stage --vectors "$T/data/base.fvecs" --staging "$ST" --fragments 0-3 \
  --rows-per-fragment 500 --shard-id w0 >/dev/null 2>&1 || bad "stage"
"$S" build --staging "$ST" --dataset "$DS" --json >"$T/job-1.json" 2>/dev/null || bad "build"

# Non-regular inputs, under names each flag accepts.
mkfifo "$T/in.fvecs" "$T/in.ivecs" "$T/in.conf" "$T/in.json" "$T/in.avsc" "$T/in.sfseg"
ln -s /dev/zero "$T/zero.fvecs"

# refused "what" PATTERN command...: exits 1 or 2 within 10 s (a blocked open
# or an endless read is killed by timeout: 124) and says PATTERN on stderr.
refused() {
  local what=$1 pattern=$2; shift 2
  timeout 10 "$@" </dev/null >/dev/null 2>"$T/err"
  local rc=$?
  if [ $rc -eq 1 ] || [ $rc -eq 2 ]; then ok "$what: refused (status $rc)"; else
    bad "$what: refused (status $rc)"; fi
  check "$what: says '$pattern'" grep -q -- "$pattern" "$T/err"
}
FIFO='is a FIFO, not a regular file'
CHR='is a character device, not a regular file'
refused "inspect FIFO" "in.sfseg $FIFO" "$S" inspect "$T/in.sfseg"
refused "inspect /dev/zero" "/dev/zero $CHR" "$S" inspect /dev/zero
refused "inspect a directory" "is a directory, not a regular file" "$S" inspect "$T"
refused "commit --segments-from FIFO" "segments-from: .*in.json $FIFO" \
  "$S" commit --dataset "$DS" --index emb_idx --column emb --staging-id job-2 \
  --segments-from "$T/in.json"
refused "commit --segments-from /dev/zero" "segments-from: /dev/zero $CHR" \
  "$S" commit --dataset "$DS" --index emb_idx --column emb --staging-id job-2 \
  --segments-from /dev/zero
refused "commit --quantizer FIFO" "in.sfseg $FIFO" \
  "$S" commit --dataset "$DS" --index emb_idx --column emb --staging-id job-1 \
  --segments-from "$T/job-1.json" --quantizer "$T/in.sfseg"
"$S" commit --dataset "$DS" --index emb_idx --column emb --staging-id job-1 \
  --segments-from "$T/job-1.json" >/dev/null 2>&1 || bad "commit"
refused "train --vectors FIFO" "in.fvecs $FIFO" \
  "$S" train --vectors "$T/in.fvecs" --out "$T/st2" --index-type IVF_FLAT --metric L2 --nlist 4
refused "train --vectors /dev/zero" "zero.fvecs $CHR" \
  "$S" train --vectors "$T/zero.fvecs" --out "$T/st2" --index-type IVF_FLAT --metric L2 --nlist 4
check "a refused train leaves no --out directory behind" test ! -e "$T/st2"
refused "train --vectors missing" "no-such.fvecs" \
  "$S" train --vectors "$T/no-such.fvecs" --out "$T/st3/a/b" --index-type IVF_FLAT --metric L2 \
  --nlist 4
check "...nor any of its parents" test ! -e "$T/st3"
refused "stage --vectors FIFO" "in.fvecs $FIFO" \
  "$S" stage --vectors "$T/in.fvecs" --staging "$ST" --fragments 4-5 \
  --rows-per-fragment 500 --shard-id w9
refused "search --queries FIFO" "in.fvecs $FIFO" \
  "$S" search --dataset "$DS" --index emb_idx --queries "$T/in.fvecs"
refused "search --groundtruth FIFO" "in.ivecs $FIFO" \
  "$S" search --dataset "$DS" --index emb_idx --queries "$T/data/query.fvecs" \
  --groundtruth "$T/in.ivecs" --rows-per-fragment 500
refused "search a FIFO as a shard" "in.sfseg $FIFO" \
  "$S" search --queries "$T/data/query.fvecs" --quantizer "$ST/quantizer" "$T/in.sfseg"
refused "events decode --writer-schema FIFO" "writer-schema: .*in.avsc $FIFO" \
  "$S" events decode --writer-schema "$T/in.avsc"
refused "serve --config FIFO" "configuration file: .*in.conf $FIFO" \
  "$S" serve --config "$T/in.conf"
refused "serve --config /dev/zero" "configuration file: /dev/zero $CHR" \
  "$S" serve --config /dev/zero
refused "stage --publish --config FIFO" "in.conf $FIFO" \
  "$S" stage --vectors "$T/data/base.fvecs" --staging "$ST" --fragments 4-5 \
  --rows-per-fragment 500 --shard-id w9 --publish --config "$T/in.conf" \
  --brokers 127.0.0.1:1 --dataset-uri "$DS" --index-name emb_idx --column emb \
  --staging-id job-1 --expected-fragments 0-5
check "and the refused stage wrote no shard" test ! -e "$ST/w9.sfshard"

# --- configuration files are bounded ------------------------------------------------
# A line past the limit: refused naming the file, the line and the limit, in
# little memory (reading it all first took memory in proportion to the line).
{ echo "# a comment"; printf 'client.id='; head -c 500000 /dev/zero | tr '\0' a; echo; } \
  >"$T/longline.conf"
/usr/bin/time -f '%M' -o "$T/rss" timeout 10 "$S" serve --config "$T/longline.conf" \
  >/dev/null 2>"$T/err"
check "a long line is refused" grep -q 'longline.conf:2: line of 500011 bytes (at most 70000)' "$T/err"
# A file past the limit (sparse: 4 GiB of nothing): refused from its size.
truncate -s 4G "$T/huge.conf"
/usr/bin/time -f '%M' -o "$T/rss2" timeout 10 "$S" serve --config "$T/huge.conf" \
  >/dev/null 2>"$T/err"
check "a huge file is refused" grep -q 'huge.conf is 4294967296 bytes long (at most 1048576)' "$T/err"
rss=$(tail -1 "$T/rss"); rss2=$(tail -1 "$T/rss2")
check "...each in under 64 MiB of memory ($rss KiB, $rss2 KiB)" \
  test "$rss" -lt 65536 -a "$rss2" -lt 65536

echo "$fails failure(s)"
test $fails -eq 0
