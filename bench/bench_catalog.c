/*
 * bench_catalog.c - what a commit costs as the jobs of one index pile up:
 * commits N one-segment jobs into one index of a fresh dataset and reports,
 * at checkpoints, the median and p99 time of the last tenth of the commits
 * before it and the size of the version file it wrote.
 *
 *   bench_catalog DIR JOBS MODE CHECKPOINT...
 *
 * MODE "grow": every job adds a segment over a new fragment, so the live
 * segments grow with the jobs. MODE "replace": job i commits one segment
 * over fragments 0..i with --replace, which swaps out the previous one, so
 * the index always has one segment and only the job history grows.
 *
 * It uses only the commit API that every catalog format has, so that
 * bench/bench_catalog.sh can build it against an older segforge and print
 * both side by side. The segment files are 64-byte placeholders: a commit
 * checks their size, not their content.
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
  fprintf(stderr, "bench_catalog: %s: %s\n", what, err ? err->msg : strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: bench_catalog DIR JOBS grow|replace CHECKPOINT...\n");
    return 2;
  }
  const char *ds = argv[1];
  long jobs = atol(argv[2]);
  int replace = !strcmp(argv[3], "replace");
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

  double *ms = calloc((size_t)jobs + 1, sizeof *ms);
  int next_cp = 4;
  printf("mode\tjobs\tmedian_ms\tp99_ms\tversion_bytes\n");
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
    if (replace)
      roaring_bitmap_add_range_closed(fr, 0, (uint32_t)i);
    else
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
                               .quantizer_path = qpath,
                               .replace = replace};
    sf_catalog_commit_result res;
    double t0 = now_ms();
    if (sf_catalog_commit(&r, &res, &err)) die(job, &err);
    ms[i] = now_ms() - t0;
    roaring_bitmap_free(fr);
    if (next_cp < argc && i == atol(argv[next_cp])) {
      long from = i - i / 10; /* the last tenth of the commits before it */
      size_t n = (size_t)(i - from);
      double *w = malloc(n * sizeof *w);
      memcpy(w, ms + from + 1, n * sizeof *w);
      qsort(w, n, sizeof *w, cmp_double);
      char name[32];
      sf_catalog_version_name(res.version, name, sizeof name);
      snprintf(path, sizeof path, "%s/_indices/_catalog/%s", ds, name);
      struct stat st;
      if (stat(path, &st)) die(path, NULL);
      printf("%s\t%ld\t%.3f\t%.3f\t%lld\n", argv[3], i, w[n / 2],
             w[(size_t)((double)n * 0.99) < n ? (size_t)((double)n * 0.99) : n - 1],
             (long long)st.st_size);
      fflush(stdout);
      free(w);
      next_cp++;
    }
  }
  free(ms);
  return 0;
}
