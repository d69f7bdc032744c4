#!/usr/bin/env bash
# The README's main command: installs what is missing, builds, and runs
# `segforge demo` (the whole path on generated data). Extra arguments go to
# the demo, e.g. `scripts/demo.sh --rows 200000 --index-type IVF_FLAT`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec build/segforge demo "$@"
