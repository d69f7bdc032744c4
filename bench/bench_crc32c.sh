#!/usr/bin/env bash
# CRC-32C throughput: sf_crc32c (ISA-L's crc32_iscsi when the build finds
# libisal) beside segforge's own three interleaved hardware streams, the
# single stream they replaced, the table path, and zlib's CRC-32 as a
# library reference; python3-crc32c (Debian's, a software CRC-32C) is timed
# on 256 MiB too when installed. Medians of RUNS runs.
#
#   bench/bench_crc32c.sh [RUNS] [MiB_PER_RUN]   (defaults 5 1024)
#
# Builds bench/bench_crc32c.c against build-bench/ (the default -O2 build).
# Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j"$(nproc)" --target segforge_core >/dev/null
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -I"$b" -o "$b/bench_crc32c" \
  bench/bench_crc32c.c "$b/libsegforge_core.a" $(pkg-config --libs libisal 2>/dev/null) -lz -lpthread
"$b/bench_crc32c" "$@"
if /usr/bin/python3 -c 'import crc32c' 2>/dev/null; then
  /usr/bin/python3 - <<'PY'
import statistics, time
import crc32c
b = bytes(range(256)) * (1 << 20)  # 256 MiB
r = []
for _ in range(5):
    t = time.perf_counter(); crc32c.crc32c(b); r.append(len(b) / (time.perf_counter() - t) / 1e9)
print("python3-crc32c (Debian, hardware_based=%s) on one 256 MiB buffer: %.2f GB/s"
      % (crc32c.hardware_based, statistics.median(r)))
PY
fi
