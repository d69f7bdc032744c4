#!/usr/bin/env bash
# Event decoding benchmark: ShardStaged decode + validate on one core, the
# consumer's bounded (table-driven) reader beside avro-c's generic reader (the
# reference). Target: >= 200k events/s. Medians of RUNS runs.
#
#   bench/bench_events.sh [EVENTS] [RUNS] [SECONDS_PER_RUN]   (defaults 20000 5 1.0)
#
# Builds bench/bench_events.c against the libraries of build-bench/ (the
# default -O2 build). Run on demand; never part of the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
b=build-bench
cmake -S . -B "$b" >/dev/null
cmake --build "$b" -j"$(nproc)" --target segforge_processor >/dev/null
# shellcheck disable=SC2046
cc -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -I. -I"$b" -o "$b/bench_events" \
  bench/bench_events.c "$b/libsegforge_consumer.a" "$b/libsegforge_producer.a" \
  "$b/libsegforge_kafka.a" "$b/libsegforge_schemas.a" "$b/libsegforge_core.a" \
  $(pkg-config --libs avro-c jansson rdkafka libzstd libxxhash) -lroaring -lpthread -lm
"$b/bench_events" "$@"
