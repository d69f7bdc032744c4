#!/usr/bin/env bash
# Catalog commit benchmark: commit time (median, p99 of the last tenth of
# the commits before each checkpoint) and version file size after 100, 1,000
# and 10,000 one-segment jobs in one index, for this tree and for a
# reference revision (default: main) side by side, in two modes:
#   grow     every job adds a segment: the live segments grow with the jobs;
#   replace  every job replaces the last one's segment: one live segment,
#            only the job history grows.
#
#   bench/bench_catalog.sh [JOBS] [REF]     (defaults 10000 main)
#
# Builds bench/bench_catalog.c against the libraries of build-bench/ and of
# the reference (extracted with git archive into build-bench/ref/), and runs
# every dataset under build-bench/catalog/ (removed afterwards). Commits
# fsync, so the figures depend on the disk; compare the columns of one run.
# Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-10000}
ref=${2:-main}
b=build-bench
libs() { pkg-config --libs avro-c jansson libzstd libxxhash; }
build_bench() { # $1 source tree, $2 build dir, $3 output
  cmake -S "$1" -B "$2" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build "$2" -j2 --target segforge_core >/dev/null
  # shellcheck disable=SC2046
  cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I"$1" -I"$2" -o "$3" \
    bench/bench_catalog.c "$2/libsegforge_core.a" $(libs) -lroaring -lpthread -lm
}
mkdir -p "$b"
build_bench . "$b" "$b/bench_catalog"
rm -rf "$b/ref" && mkdir -p "$b/ref/src"
git archive "$ref" | tar -x -C "$b/ref/src"
build_bench "$b/ref/src" "$b/ref/build" "$b/bench_catalog_ref"

checkpoints=()
for n in 100 1000 10000 100000; do [ "$n" -le "$jobs" ] && checkpoints+=("$n"); done
out=$(mktemp -d)
for mode in grow replace; do
  for side in ref this; do
    exe="$b/bench_catalog"; [ "$side" = ref ] && exe="$b/bench_catalog_ref"
    d="$b/catalog/$side-$mode"
    rm -rf "$d" && mkdir -p "$d"
    "$exe" "$PWD/$d" "$jobs" "$mode" "${checkpoints[@]}" >"$out/$side-$mode.tsv"
    rm -rf "$d"
  done
done
echo "commit time: median / p99 of the last tenth of the commits before each point (ms);"
echo "version: the size of the version file written at that point (bytes)"
printf '%-8s %7s | %-26s | %-26s\n' mode jobs "$ref: median p99 version" "this: median p99 version"
for mode in grow replace; do
  paste "$out/ref-$mode.tsv" "$out/this-$mode.tsv" | tail -n +2 |
    awk -F'\t' '{printf "%-8s %7d | %7.2f %7.2f %10d | %7.2f %7.2f %10d\n",
                 $1, $2, $3, $4, $5, $8, $9, $10}'
done
rm -rf "$out"
