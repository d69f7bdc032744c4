#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every
# test three ways: a normal -Werror build, the same tests under
# AddressSanitizer + UndefinedBehaviorSanitizer, and each libFuzzer target for
# a short run (SF_FUZZ_SECONDS, default 20). It also checks that the -O3
# (Release) build compiles with -Werror. The layer check runs first (and
# again as a ctest): it needs no build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
echo "== layers (scripts/check_layers.sh)"
bash scripts/check_layers.sh
echo "== formatting (scripts/check_format.sh)"
bash scripts/check_format.sh
jobs=$(nproc)
fuzz_seconds=${SF_FUZZ_SECONDS:-20}

echo "== build (gcc, -Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
echo "== tests"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)

echo "== build (gcc -O3, -Werror; compiles only: -O3 inlines more and so warns more)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-release -j"$jobs"

echo "== build (AddressSanitizer + UndefinedBehaviorSanitizer)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSF_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
echo "== tests under sanitizers"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd build-asan && ctest --output-on-failure -j"$jobs" --timeout 1800)

echo "== fuzz targets (clang libFuzzer, ${fuzz_seconds}s each)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSF_FUZZ=ON >/dev/null
shopt -s nullglob
n=0
for src in tests/fuzz/fuzz_*.c; do
  name=$(basename "$src" .c)
  cmake --build build-fuzz -j"$jobs" --target "$name"
  corpus="build-fuzz/corpus-$name"
  mkdir -p "$corpus"
  # Targets that can write valid seed files do so first (nothing binary is
  # committed); the others start from an empty corpus.
  if grep -q SF_FUZZ_WRITE_SEEDS "$src"; then
    SF_FUZZ_WRITE_SEEDS="$corpus" "build-fuzz/$name" >/dev/null 2>&1 || true
  fi
  if ! "build-fuzz/$name" -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 \
      -print_final_stats=1 -artifact_prefix="build-fuzz/$name-" "$corpus" \
      >"build-fuzz/$name.log" 2>&1; then
    tail -40 "build-fuzz/$name.log" >&2
    echo "fuzz: $name found a crash (see build-fuzz/$name-*)" >&2
    exit 1
  fi
  echo "$name: $(grep -o 'stat::number_of_executed_units: [0-9]*' "build-fuzz/$name.log") in ${fuzz_seconds}s, no finding"
  n=$((n + 1))
done
echo "fuzz: $n targets ran without a finding"
echo "all tests passed"
