/*
 * worker_publish.c - a worker of a distributed build writes its shard from
 * vectors it holds in memory, with its own row ids, and announces it.
 *
 *   worker_publish DATASET STAGING_ID SHARD_ID FIRST LAST EXPECTED [BROKERS]
 *
 * e.g. worker_publish /data/ds job-7 w0 0 1 0-3 kafka1:9092
 *
 * The worker covers fragments FIRST..LAST of the job's EXPECTED fragments
 * (a range list such as "0-3"). Its rows are made up, each a function of
 * its row id as in train.c and searcher.c; a real worker would read them
 * from Parquet or Lance, with the row ids the dataset gives them (row id =
 * fragment << 32 | offset). Without BROKERS it stages and stops: a
 * finalizer (finalize.c) then needs no Kafka.
 *
 * Build against the installed library:
 *   cc worker_publish.c -o worker_publish $(pkg-config --cflags --libs segforge)
 */
#include <segforge.h>
#include <stdio.h>
#include <stdlib.h>

#define DIM 32
#define ROWS_PER_FRAGMENT 1000
#define BATCH 256

/* The vector of a row id: one of 16 clusters plus noise, from a hash. */
static void make_vector(uint64_t row_id, float *v) {
  uint64_t h = row_id * 0x9e3779b97f4a7c15ull + 1;
  unsigned cluster = (unsigned)((row_id * 2654435761u) >> 7) % 16;
  for (int j = 0; j < DIM; j++) {
    h ^= h >> 31, h *= 0xbf58476d1ce4e5b9ull, h ^= h >> 29;
    float noise = (float)(h >> 40) / (float)(1u << 24) - 0.5f;
    v[j] = (float)((cluster * 7 + j * 3) % 11) + noise;
  }
}

int main(int argc, char **argv) {
  if (argc < 7 || argc > 8) {
    fprintf(stderr,
            "usage: %s DATASET STAGING_ID SHARD_ID FIRST_FRAGMENT LAST_FRAGMENT "
            "EXPECTED_FRAGMENTS [BROKERS]\n",
            argv[0]);
    return 2;
  }
  const char *dataset = argv[1], *staging_id = argv[2], *shard_id = argv[3];
  unsigned first = (unsigned)strtoul(argv[4], NULL, 10);
  unsigned last = (unsigned)strtoul(argv[5], NULL, 10);
  sf_error err = {0};
  char *root = NULL;
  sf_shard_writer *w = NULL;
  sf_producer *producer = NULL;
  sf_options *event = NULL;
  int status = 1;
  char fragments[64];
  snprintf(fragments, sizeof fragments, "%u-%u", first, last);

  /* 1. The shard writer: it loads the job's quantizer from the staging
   *    root and refuses any row id outside the fragments it declares. */
  if (sf_staging_root(dataset, staging_id, &root, &err) ||
      sf_shard_writer_open(root, shard_id, fragments, NULL, &w, &err))
    goto fail;

  /* 2. Rows in batches, in any order; each call is checked as a whole (a
   *    NaN, a wrong dimension or a foreign row id adds nothing). */
  float x[BATCH * DIM];
  uint64_t ids[BATCH];
  size_t n = 0;
  for (unsigned f = first; f <= last; f++)
    for (unsigned off = 0; off < ROWS_PER_FRAGMENT; off++) {
      ids[n] = SF_ROW_ID(f, off);
      make_vector(ids[n], x + n * DIM);
      if (++n == BATCH || (f == last && off == ROWS_PER_FRAGMENT - 1)) {
        if (sf_shard_writer_add(w, x, ids, n, DIM, &err)) goto fail;
        n = 0;
      }
    }

  /* 3. The file appears atomically under <root>/<shard id>.sfshard. */
  if (sf_shard_writer_finish(w, &err)) goto fail;
  printf("staged %s: %llu rows, fragments %s, %llu bytes\n", sf_shard_writer_path(w),
         (unsigned long long)sf_shard_writer_rows(w), fragments,
         (unsigned long long)sf_shard_writer_bytes(w));

  /* 4. Announce it. Any librdkafka property goes in as a key/value pair
   *    (security.protocol, sasl.*, ...). The event's fields other than the
   *    shard's own (read from the file) come from the worker. */
  if (argc == 8) {
    const char *keys[] = {"bootstrap.servers", "client.id"};
    const char *values[] = {argv[7], "worker-example"};
    if (sf_producer_new(keys, values, 2, &producer, &err)) goto fail;
    if (!(event = sf_options_new())) goto out;
    if (sf_options_set(event, "dataset", dataset, &err) ||
        sf_options_set(event, "index", "emb_idx", &err) ||
        sf_options_set(event, "column", "emb", &err) ||
        sf_options_set(event, "staging_id", staging_id, &err) ||
        sf_options_set(event, "expected_fragments", argv[6], &err))
      goto fail;
    /* Blocks until the broker acknowledged it; publishing again after a
     * failure is safe (the event id depends only on the content). */
    sf_delivery_report dr;
    if (sf_producer_publish_shard(producer, sf_shard_writer_path(w), event, 30000, &dr,
                                  &err))
      goto fail;
    printf("published %s to partition %d at offset %lld\n", dr.event_id,
           (int)dr.partition, (long long)dr.offset);
  }
  status = 0;
  goto out;
fail:
  fprintf(stderr, "worker_publish: %s: %s\n", sf_status_name(err.code), err.message);
out:
  sf_options_free(event);
  sf_producer_free(producer, 5000);
  sf_shard_writer_free(w);
  sf_free(root);
  return status;
}
