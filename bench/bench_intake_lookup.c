/*
 * bench_intake_lookup.c - what serve's intake pays, per new job, to tell it
 * from a job committed earlier (consumer/intake.c): open the newest catalog
 * version and look the staging id up, in the window and then in the one
 * job-archive chunk its hash falls in. Commits JOBS one-segment jobs (the
 * default window and chunk size, so most are archived), then times LOOKUPS
 * such lookups of ids never committed (every one reads a chunk), with the
 * process's chunk cache off and on (sf_catalog_lookup_job_cached), and
 * prints the median and p99 of the lookup alone and of open + lookup.
 *
 *   bench_intake_lookup DIR JOBS LOOKUPS
 *
 * The segment files are 64-byte placeholders: a commit checks their size.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/vector/quantizer.h"

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what, const sf_err *err) {
  fprintf(stderr, "bench_intake_lookup: %s: %s\n", what,
          err ? err->msg : strerror(errno));
  exit(1);
}

static void report(const char *what, double *v, size_t n) {
  qsort(v, n, sizeof *v, cmp_double);
  size_t p99 = (size_t)((double)n * 0.99);
  printf("%-34s median %8.1f us   p99 %8.1f us\n", what, v[n / 2] * 1e3,
         v[p99 < n ? p99 : n - 1] * 1e3);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: bench_intake_lookup DIR JOBS LOOKUPS\n");
    return 2;
  }
  const char *ds = argv[1];
  long jobs = atol(argv[2]), lookups = atol(argv[3]);
  if (jobs < 1 || lookups < 1) {
    fprintf(stderr, "bench_intake_lookup: JOBS and LOOKUPS must be at least 1\n");
    return 2;
  }
  sf_err err = {0};
  char path[4096], qpath[4096];
  snprintf(path, sizeof path, "%s/_indices/segments", ds);
  if (sf_fs_mkdirs(path, &err)) die("mkdir", &err);
  sf_quant_params qp = {
      .type = SF_IVF_FLAT, .metric = SF_L2, .dim = 4, .nlist = 2, .seed = 1};
  float x[64 * 4];
  for (int i = 0; i < 64 * 4; i++) x[i] = (float)(i % 13);
  sf_quant *q;
  snprintf(qpath, sizeof qpath, "%s/quantizer", ds);
  if (sf_quant_train(&qp, x, 64, &q, &err) || sf_quant_save(q, qpath, &err))
    die("quantizer", &err);
  uint64_t cs = sf_quant_checksum(q);
  sf_quant_free(q);
  for (long i = 1; i <= jobs; i++) {
    char seg[64], rel[96], job[64];
    snprintf(seg, sizeof seg, "seg-%ld", i);
    snprintf(job, sizeof job, "job-%ld", i);
    snprintf(rel, sizeof rel, "segments/%s.sfseg", seg);
    snprintf(path, sizeof path, "%s/_indices/%s", ds, rel);
    FILE *fp = fopen(path, "wb");
    static const char zeros[64];
    if (!fp || fwrite(zeros, 1, 64, fp) != 64 || fclose(fp)) die(path, NULL);
    roaring_bitmap_t *fr = roaring_bitmap_create();
    roaring_bitmap_add(fr, (uint32_t)i);
    char *shard = "shard-0";
    sf_seginfo s = {.segment_id = seg,
                    .path = rel,
                    .bytes = 64,
                    .num_rows = 16,
                    .fragments = fr,
                    .shard_ids = &shard,
                    .num_shards = 1,
                    .index_type = SF_IVF_FLAT,
                    .metric = SF_L2,
                    .dim = 4,
                    .nlist = 2,
                    .quantizer_checksum = cs};
    sf_catalog_commit_req r = {.dataset = ds,
                               .index_name = "embedding_idx",
                               .column = "embedding",
                               .staging_id = job,
                               .segs = &s,
                               .nsegs = 1,
                               .quantizer_path = qpath};
    sf_catalog_commit_result res;
    if (sf_catalog_commit(&r, &res, &err)) die(job, &err);
    roaring_bitmap_free(fr);
  }
  sf_catalog *c;
  if (sf_catalog_open_latest(ds, &c, &err)) die("open", &err);
  printf(
      "%ld jobs committed: %zu in the window, %zu archive chunks; %ld lookups of new "
      "ids\n",
      jobs, sf_catalog_num_jobs(c), sf_catalog_num_archive_chunks(c), lookups);
  sf_catalog_free(c);
  double *look = calloc((size_t)lookups, sizeof *look);
  double *both = calloc((size_t)lookups, sizeof *both);
  if (!look || !both) die("out of memory", NULL);
  for (int cached = 0; cached < 2; cached++) {
    sf_catalog_chunk_cache_config(cached ? SF_CATALOG_CHUNK_CACHE_DEFAULT : 0);
    for (long i = 0; i < lookups; i++) {
      char job[64];
      snprintf(job, sizeof job, "new-job-%ld", i);
      int found = 0;
      double t0 = now_ms();
      if (sf_catalog_open_latest(ds, &c, &err)) die("open", &err);
      double t1 = now_ms();
      if (sf_catalog_lookup_job_cached(c, job, NULL, &found, &err)) die(job, &err);
      double t2 = now_ms();
      sf_catalog_free(c);
      if (found) die("a new id was found", NULL);
      look[i] = t2 - t1;
      both[i] = t2 - t0;
    }
    uint64_t hits, misses;
    size_t chunks, hashes;
    sf_catalog_chunk_cache_stats(&hits, &misses, &chunks, &hashes);
    printf("chunk cache %s (%" PRIu64 " answered by the hashes, %" PRIu64
           " chunk reads; %zu chunks, %zu hashes kept)\n",
           cached ? "on" : "off", hits, misses, chunks, hashes);
    report("  lookup", look, (size_t)lookups);
    report("  open newest version + lookup", both, (size_t)lookups);
  }
  free(look);
  free(both);
  return 0;
}
