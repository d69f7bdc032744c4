/*
 * worker_publish.c - a build worker announces the shard it wrote.
 *
 * A worker of a distributed build writes its shard into the build's staging
 * root (here with `segforge stage`, or with the core library's
 * sf_stage_shard), then tells segforge with a ShardStaged event. This
 * program does the second half with the worker API: everything about the
 * shard is read from its file; the worker adds what only it knows.
 *
 *   worker_publish BROKERS DATASET STAGING_ID SHARD_FILE SHARD_ID EXPECTED
 *
 * e.g. worker_publish 127.0.0.1:9092 /data/ds job-7 \
 *        /data/ds/_indices/_staging/job-7/w0.sfshard w0 0-9
 *
 * Build: it is built with the project (target example_worker_publish);
 * outside it, link libsegforge_producer, libsegforge_kafka,
 * libsegforge_schemas, libsegforge_core (in that order) and their
 * dependencies (librdkafka, avro-c, CRoaring, zstd, xxhash, jansson).
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/base/fragset.h"
#include "kafka/kconf.h"
#include "producer/publisher.h"
#include "producer/worker.h"

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(
        stderr,
        "usage: %s BROKERS DATASET STAGING_ID SHARD_FILE SHARD_ID EXPECTED_FRAGMENTS\n",
        argv[0]);
    return 2;
  }
  sf_err err = {0};
  sf_kconf *conf = NULL;
  sf_publisher *pub = NULL;
  roaring_bitmap_t *expected = NULL;
  sf_shard_staged ev = {0};
  int status = 1;

  /* 1. The Kafka client: any librdkafka property may be set here, or read
   *    with sf_kconf_load_file from a file shared with kcat. */
  conf = sf_kconf_new();
  if (!conf) goto out;
  if (sf_kconf_set(conf, "bootstrap.servers", argv[1], &err)) goto fail;
  if (sf_kconf_set(conf, "client.id", "worker-example", &err)) goto fail;
  if (sf_publisher_new(conf, SF_FRAMING_AUTO, &pub, &err)) goto fail;

  /* 2. The event: the job's expected fragments are the same in every
   *    event of the build. */
  if (sf_fragset_parse(argv[6], "EXPECTED_FRAGMENTS", &expected, &err)) goto fail;
  sf_worker_info info = {
      .dataset_uri = argv[2],
      .index_name = "embedding_idx",
      .column = "embedding",
      .staging_id = argv[3],
      .shard_id = argv[5],
      .expected_fragments = expected,
      /* .target_segment_bytes = 1 << 30,  a per-job segment budget */
  };
  if (sf_worker_fill_staged(&info, argv[4], &ev, &err)) goto fail;

  /* 3. Publish and wait for the broker's acknowledgement. A timeout means
   *    "unknown": publishing again is safe (same event_id). */
  sf_delivery dr;
  if (sf_worker_publish(pub, NULL, &ev, 30000, &dr, &err)) goto fail;
  printf("published %s (%lld rows, fragments ", ev.event_id, (long long)ev.num_rows);
  char *frags = sf_fragset_format(ev.fragments);
  printf("%s) to %s [%d] at offset %lld\n", frags ? frags : "?",
         sf_publisher_topic(pub, SF_EVENT_SHARD_STAGED), (int)dr.partition,
         (long long)dr.offset);
  free(frags);
  status = 0;
  goto out;
fail:
  fprintf(stderr, "worker_publish: %s: %s\n", sf_code_name(err.code), err.msg);
out:
  sf_shard_staged_clear(&ev);
  sf_fragset_free(expected);
  sf_publisher_free(pub, 5000);
  sf_kconf_free(conf);
  return status;
}
