#!/usr/bin/env bash
# cli_disk_full.sh - a full disk is reported with the system's reason. Every
# writer of segforge (catalog versions, segments, shards, quantizers, vector
# files) runs out of space on a small tmpfs and must say "No space left on
# device" naming the file, exit 1, and leave no temporary file behind.
# Needs root to mount the tmpfs; skipped (exit 0, "skip") otherwise.
# Env: SEGFORGE (the program), SF_TEST_TMP (scratch).
. "$(dirname "$0")/shell_helpers.sh"
scratch cli_disk_full
M=$T/full
cleanup() {
  mountpoint -q "$M" 2>/dev/null && { umount "$M" || umount -l "$M"; }
  [ -n "${SF_KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$M"
if [ "$(id -u)" != 0 ] || ! mount -t tmpfs -o size=64k tmpfs "$M" 2>/dev/null; then
  echo "skip: cannot mount a tmpfs here (needs root)"
  exit 0
fi
fill() { dd if=/dev/zero of="$M/fill.$1" bs=4k >/dev/null 2>&1; true; }
# expect_enospc "what" RC ERR-FILE FILE-PATTERN: exit 1, the reason and the
# file in the message, no temporary left.
expect_enospc() {
  local what=$1 rc=$2 errf=$3 file=$4
  check "$what: exits 1" test "$rc" -eq 1
  check "$what: says No space left on device" grep -q 'No space left on device' "$errf"
  check "$what: names the file" grep -q "cannot write $file" "$errf"
  check "$what: leaves no temporary file" test -z "$(find "$M" -name '*.tmp.*')"
  sed 's/^/     /' "$errf"
}

"$S" gen --out "$T/data" --rows 2000 --dim 8 --queries 5 --k 5 >/dev/null 2>&1 ||
  { echo "FAIL gen"; exit 1; }

# --- the catalog: the dataset on a roomy disk, its catalog directory on the full one
DS=$T/ds
ST=$DS/_indices/_staging/job-1
mkdir -p "$ST" "$M/catalog"
"$S" train --vectors "$T/data/base.fvecs" --out "$ST" --index-type IVF_FLAT --metric L2 \
  --nlist 4 >/dev/null 2>&1 || bad "train job-1"
"$S" stage --vectors "$T/data/base.fvecs" --staging "$ST" --fragments 0-3 \
  --rows-per-fragment 500 --shard-id w0 >/dev/null 2>&1 || bad "stage job-1"
"$S" build --staging "$ST" --dataset "$DS" --json >"$T/job-1.json" 2>/dev/null || bad "build job-1"
ln -s "$M/catalog" "$DS/_indices/_catalog"
fill catalog
"$S" commit --dataset "$DS" --index emb_idx --column emb --staging-id job-1 \
  --segments-from "$T/job-1.json" >/dev/null 2>"$T/err"
expect_enospc "a catalog version on a full disk" $? "$T/err" "$DS/_indices/_catalog/v0*1.avro.tmp."
check "and no version was published" test -z "$(ls "$M/catalog" | grep '^v.*\.avro$')"
"$S" finalize --dataset "$DS" --index emb_idx --column emb --staging-id job-1 >/dev/null 2>"$T/err"
expect_enospc "finalize's catalog version on a full disk" $? "$T/err" "$DS/_indices/_catalog/v0*1.avro.tmp."
rm -f "$M"/fill.*

# --- a vector file (stdio), a quantizer, a shard, a segment
fill gen
"$S" gen --out "$M/gen" --rows 1000 --dim 8 --queries 5 --k 5 >/dev/null 2>"$T/err"
expect_enospc "gen's vector files on a full disk" $? "$T/err" "$M/gen/base.fvecs.tmp."
rm -f "$M"/fill.*

mkdir -p "$M/st"
fill train
"$S" train --vectors "$T/data/base.fvecs" --out "$M/st" --index-type IVF_FLAT --metric L2 \
  --nlist 4 >/dev/null 2>"$T/err"
expect_enospc "a quantizer on a full disk" $? "$T/err" "$M/st/quantizer.tmp."
rm -f "$M"/fill.*

cp "$ST/quantizer" "$M/st/quantizer"
fill stage
"$S" stage --vectors "$T/data/base.fvecs" --staging "$M/st" --fragments 0-3 \
  --rows-per-fragment 500 --shard-id w1 >/dev/null 2>"$T/err"
expect_enospc "a shard on a full disk" $? "$T/err" "$M/st/w1.sfshard.tmp."
rm -f "$M"/fill.*

mkdir -p "$M/ds2"
fill build
"$S" build --staging "$ST" --dataset "$M/ds2" >/dev/null 2>"$T/err"
expect_enospc "a segment on a full disk" $? "$T/err" "$M/ds2/_indices/segments/job-1-[0-9a-f]*.sfseg.tmp."
rm -f "$M"/fill.*

[ "$fails" -eq 0 ] && echo "all passed" || echo "$fails failed"
[ "$fails" -eq 0 ]
