/*
 * bench_events.c - decode + validate throughput of ShardStaged events on one
 * core, the consumer's hot path: framing, schema lookup, the datum, both
 * fragment bitmaps through the bounded CRoaring call, every field rule, and
 * freeing the struct. Target: >= 200k events/s.
 *
 * Printed side by side: the bounded, table-driven reader (what the consumer
 * uses) and avro-c's generic reader with a reused value (the reference, and
 * what older schema versions with other fields go through). Medians of several runs.
 *
 *   bench_events [EVENTS] [RUNS] [SECONDS_PER_RUN]   (defaults 20000 5 1.0)
 *
 * Built and run by bench/bench_events.sh; never part of the tests.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "schemas/event_decode.h"
#include "schemas/event_encode.h"
#include "schemas/schema.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Events shaped like a real build: 1024 fragments, 64 per shard. */
static void make(sf_shard_staged *e, int i) {
  char buf[128];
  memset(e, 0, sizeof *e);
  snprintf(buf, sizeof buf, "job-20240601-%04d/shard-%05d", i / 16, i);
  e->event_id = strdup(buf);
  e->dataset_uri = strdup("file:///mnt/datasets/wiki-embeddings.lance");
  e->index_name = strdup("embedding_idx");
  e->column = strdup("embedding");
  snprintf(buf, sizeof buf, "job-20240601-%04d", i / 16);
  e->staging_id = strdup(buf);
  snprintf(buf, sizeof buf, "shard-%05d", i);
  e->shard_id = strdup(buf);
  snprintf(buf, sizeof buf, "shards/shard-%05d.sfshard", i);
  e->shard_path = strdup(buf);
  e->shard_bytes = 512LL << 20;
  e->num_rows = 1 << 20;
  e->fragments = roaring_bitmap_create();
  e->expected_fragments = roaring_bitmap_create();
  roaring_bitmap_add_range_closed(e->fragments, (uint32_t)(i % 16) * 64,
                                  (uint32_t)(i % 16) * 64 + 63);
  roaring_bitmap_add_range_closed(e->expected_fragments, 0, 1023);
  roaring_bitmap_run_optimize(e->fragments);
  roaring_bitmap_run_optimize(e->expected_fragments);
  e->index_type = SF_IVF_PQ;
  e->metric = SF_L2;
  e->dim = 768;
  e->num_partitions = 4096;
  e->quantizer_checksum = 0x1234567890abcdefULL;
  e->staged_at_ms = 1717200000000LL + i;
}

static double run(sf_event_decoder *dec, uint8_t **msg, size_t *len, int n, double secs) {
  long done = 0;
  double t0 = now(), t;
  do {
    for (int i = 0; i < n; i++) {
      sf_shard_staged e;
      sf_err err;
      if (sf_event_decode_shard_staged(dec, msg[i], len[i], &e, NULL, &err)) {
        fprintf(stderr, "bench_events: %s\n", err.msg);
        exit(1);
      }
      sf_shard_staged_clear(&e);
    }
    done += n;
  } while ((t = now() - t0) < secs);
  return (double)done / t;
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000, runs = argc > 2 ? atoi(argv[2]) : 5;
  double secs = argc > 3 ? atof(argv[3]) : 1.0;
  if (n < 1 || runs < 1 || runs > 99 || !(secs > 0)) {
    fprintf(stderr, "usage: bench_events [EVENTS] [RUNS] [SECONDS_PER_RUN]\n");
    return 2;
  }
  sf_err err;
  sf_schema_set *set;
  sf_event_encoder *enc;
  sf_event_decoder *fast, *slow;
  if (sf_schema_set_new(&set, &err) ||
      sf_event_encoder_new(set, SF_FRAMING_SINGLE, 0, &enc, &err) ||
      sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &fast, &err) ||
      sf_event_decoder_new(set, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow, &err)) {
    fprintf(stderr, "bench_events: %s\n", err.msg);
    return 1;
  }
  uint8_t **msg = calloc((size_t)n, sizeof *msg);
  size_t *len = calloc((size_t)n, sizeof *len), total = 0;
  for (int i = 0; i < n; i++) {
    sf_shard_staged e;
    make(&e, i);
    if (sf_event_encode_shard_staged(enc, &e, &msg[i], &len[i], &err)) {
      fprintf(stderr, "bench_events: %s\n", err.msg);
      return 1;
    }
    total += len[i];
    sf_shard_staged_clear(&e);
  }
  printf(
      "ShardStaged decode + validate, one core: %d distinct events of %zu bytes on "
      "average, %d runs of %.1f s\n",
      n, total / (size_t)n, runs, secs);
  double f[99], s[99];
  for (int r = 0; r < runs; r++) {
    f[r] = run(fast, msg, len, n, secs);
    s[r] = run(slow, msg, len, n, secs);
    printf(
        "  run %d: bounded reader      %9.0f events/s   avro-c generic reader %9.0f "
        "events/s\n",
        r + 1, f[r], s[r]);
  }
  qsort(f, (size_t)runs, sizeof f[0], cmp);
  qsort(s, (size_t)runs, sizeof s[0], cmp);
  printf(
      "median:   bounded reader      %9.0f events/s   avro-c generic reader %9.0f "
      "events/s"
      "   (target >= 200000)\n",
      f[runs / 2], s[runs / 2]);
  for (int i = 0; i < n; i++) free(msg[i]);
  free(msg);
  free(len);
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_event_encoder_free(enc);
  sf_schema_set_free(set);
  return 0;
}
