#!/usr/bin/env bash
# What a search pays per chunk (docs/format.md, "Joining small chunks"):
# stages ROWS rows of dim 64 (clustered, 1000 queries) as one shard per
# index type (IVF_SQ, IVF_PQ m 8, IVF_FLAT; nlist NLIST), then bench_chunks
# rewrites each shard with every partition cut into chunks of N rows, for
# each N of SIZES, and reports queries/s at nprobe 16 against the shard as
# staged (one chunk per partition), median of RUNS passes in CPU time.
#
#   bench/bench_chunks.sh [ROWS] [NLIST] [RUNS] [SIZES]
#                         (default 100000 256 9 1024,256,64,16,8,4,2,1)
#
# Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-100000} nlist=${2:-256} runs=${3:-9} sizes=${4:-1024,256,64,16,8,4,2,1}
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j2 --target segforge segforge_core >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -I"$b" -o "$b/bench_chunks" \
  bench/bench_chunks.c "$b/libsegforge_core.a" \
  $(pkg-config --libs libzstd libxxhash jansson avro-c libisal 2>/dev/null) -lroaring -lm -lpthread
sf=$b/segforge
work=$(mktemp -d "${TMPDIR:-/tmp}/sf-bench-chunks.XXXXXX")
trap 'rm -rf "$work"' EXIT
$sf gen --out "$work/data" --rows "$rows" --dim 64 --queries 1000 --clusters 1000 --k 10 \
  >/dev/null 2>&1
for t in IVF_SQ "IVF_PQ --pq-m 8" IVF_FLAT; do
  st=$work/${t%% *}
  # shellcheck disable=SC2086
  $sf train --vectors "$work/data/base.fvecs" --out "$st" --index-type $t --metric L2 \
    --nlist "$nlist" >/dev/null
  $sf stage --vectors "$work/data/base.fvecs" --staging "$st" --rows-per-fragment 500 \
    --fragments "0-$(((rows + 499) / 500 - 1))" --shard-id all >/dev/null
  echo "== $t"
  "$b/bench_chunks" "$st/quantizer" "$work/data/query.fvecs" 16 "$runs" "$st/all.sfshard" \
    "$work" "$sizes"
done
