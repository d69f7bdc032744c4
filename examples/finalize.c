/*
 * finalize.c - the finalizer of a build: once the workers' shards cover the
 * job, plan the segments, look at the plan, build them (at most two at
 * once) and commit them as one new catalog version. Or, when `segforge
 * serve` finalizes the jobs announced on Kafka, wait for it to commit.
 *
 *   finalize DATASET STAGING_ID EXPECTED [TARGET_SEGMENT_BYTES]
 *   finalize --wait DATASET STAGING_ID TIMEOUT_MS
 *
 * e.g. finalize /data/ds job-7 0-3 256M
 *
 * Build against the installed library:
 *   cc finalize.c -o finalize $(pkg-config --cflags --libs segforge)
 */
#include <segforge.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int wait_for_serve(const char *dataset, const char *staging_id, int timeout_ms) {
  sf_error err = {0};
  uint64_t version = 0;
  if (sf_index_wait_committed(dataset, staging_id, timeout_ms, &version, &err)) {
    fprintf(stderr, "finalize: %s: %s\n", sf_status_name(err.code), err.message);
    return 1;
  }
  printf("job %s committed in catalog version %llu\n", staging_id,
         (unsigned long long)version);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && !strcmp(argv[1], "--wait"))
    return wait_for_serve(argv[2], argv[3], atoi(argv[4]));
  if (argc < 4 || argc > 5) {
    fprintf(stderr,
            "usage: %s DATASET STAGING_ID EXPECTED_FRAGMENTS [TARGET_SEGMENT_BYTES]\n"
            "       %s --wait DATASET STAGING_ID TIMEOUT_MS\n",
            argv[0], argv[0]);
    return 2;
  }
  sf_error err = {0};
  sf_options *opts = sf_options_new();
  sf_builder *b = NULL;
  int status = 1;
  if (!opts) return 1;

  /* 1. The builder's options: the index type the shards must be, the
   *    segment budget, the builds at once, the coverage required. */
  if (sf_options_set(opts, "expected_fragments", argv[3], &err) ||
      sf_options_set(opts, "max_concurrency", "2", &err) ||
      (argc == 5 && sf_options_set(opts, "target_segment_bytes", argv[4], &err)))
    goto fail;
  if (sf_builder_new(argv[1], "emb_idx", "emb", argv[2], opts, &b, &err)) goto fail;

  /* 2. The plan, before a byte is copied: refused when shards overlap,
   *    differ in parameters or leave fragments uncovered. */
  if (sf_builder_plan(b, &err)) goto fail;
  size_t n = sf_builder_num_segments(b);
  printf("plan: %zu segment(s)\n", n);
  for (size_t i = 0; i < n; i++) {
    char *frags = sf_builder_segment_fragments(b, i);
    printf("  %s: %zu shard(s), %llu rows, %llu bytes, fragments %s\n",
           sf_builder_segment_id(b, i), sf_builder_segment_num_shards(b, i),
           (unsigned long long)sf_builder_segment_rows(b, i),
           (unsigned long long)sf_builder_segment_bytes(b, i), frags ? frags : "?");
    sf_free(frags);
  }

  /* 3. Build every segment, two at once (sf_builder_build(b, i) builds one,
   *    e.g. on another machine), then commit them all in one version. */
  if (sf_builder_build_all(b, &err)) goto fail;
  uint64_t version = 0;
  int already = 0;
  if (sf_builder_commit(b, &version, &already, &err)) goto fail;
  printf("committed %s in catalog version %llu%s\n", argv[2], (unsigned long long)version,
         already ? " (before this run)" : "");
  status = 0;
  goto out;
fail:
  fprintf(stderr, "finalize: %s: %s\n", sf_status_name(err.code), err.message);
out:
  sf_builder_free(b);
  sf_options_free(opts);
  return status;
}
