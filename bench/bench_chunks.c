/*
 * bench_chunks.c - what a search pays per chunk: rewrites one shard or
 * segment with every partition cut into chunks of ROWS rows (for each ROWS
 * given), searches each copy one query at a time, and prints queries/s, the
 * chunks scanned per query and the rate against the file as it was. It is
 * the measurement behind the join's thresholds (SF_SEG_JOIN_MIN_ROWS and
 * SF_SEG_JOIN_MAX_ROWS, docs/format.md "Joining small chunks").
 *
 *   bench_chunks QUANTIZER QUERIES.fvecs NPROBE RUNS FILE OUTDIR ROWS[,ROWS...]
 *
 * bench/bench_chunks.sh builds it, stages the data and runs it per index
 * type.
 * Rates are the median of RUNS passes over the queries, every file verified
 * first (as `segforge search` does), so no pass checks a CRC.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/format/segfile.h"
#include "core/search/search.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void die(const char *what, const sf_err *err) {
  fprintf(stderr, "bench_chunks: %s: %s\n", what, err->msg);
  exit(1);
}

/* Writes src to path with every partition in chunks of `rows` rows. */
static void rechunk(const sf_seg_reader *src, const char *path, uint32_t rows) {
  const sf_seg_params *p = sf_seg_get_params(src);
  sf_err err = {0};
  sf_seg_writer *w;
  if (sf_seg_writer_open(path, p, &w, &err)) die(path, &err);
  sf_seg_scratch *s = sf_seg_scratch_new();
  uint64_t cap = 0;
  sf_rowid *ids = NULL;
  uint8_t *codes = NULL;
  for (uint32_t l = 0; l < p->nlist; l++) {
    uint64_t n = sf_seg_partition_rows(src, l);
    if (n > cap) {
      cap = n;
      ids = realloc(ids, cap * sizeof *ids);
      codes = realloc(codes, cap * p->code_size);
      if (!ids || !codes) exit(1);
    }
    uint64_t at = 0;
    for (uint32_t c = 0; c < sf_seg_partition_num_chunks(src, l); c++) {
      sf_seg_chunk ch;
      if (sf_seg_read_chunk(src, l, c, s, &ch, &err)) die(sf_seg_path(src), &err);
      memcpy(ids + at, ch.ids, ch.nrows * sizeof *ids);
      memcpy(codes + at * p->code_size, ch.codes, (size_t)ch.nrows * p->code_size);
      at += ch.nrows;
    }
    for (uint64_t i = 0; i < n; i += rows) {
      uint32_t m = n - i < rows ? (uint32_t)(n - i) : rows;
      if (sf_seg_writer_add_chunk(w, l, ids + i, codes + i * p->code_size, m, &err))
        die(path, &err);
    }
  }
  if (sf_seg_writer_finish(w, sf_seg_fragments(src), &err)) die(path, &err);
  sf_seg_scratch_free(s);
  free(ids);
  free(codes);
}

/* One file under test: its search, chunks per query, and the rate of each
 * pass. */
typedef struct file {
  char path[4096];
  uint32_t rows; /* 0: the file as it is */
  sf_search *s;
  double chunks, *qps;
} file;

static void prepare(file *f, const sf_quant *q, const float *qs, uint64_t nq,
                    uint32_t dim, uint32_t nprobe, int runs) {
  sf_err err = {0};
  const char *path = f->path;
  if (sf_search_open(q, &path, 1, &f->s, &err) || sf_search_verify(f->s, &err))
    die(path, &err);
  sf_seg_reader *r;
  if (sf_seg_open(path, &r, &err)) die(path, &err);
  uint32_t *lists = malloc(nprobe * sizeof *lists);
  float *prep = malloc(dim * sizeof *prep);
  double n = 0;
  for (uint64_t i = 0; i < nq; i++) { /* chunks in the probed partitions */
    sf_quant_prepare(q, qs + i * dim, prep);
    uint32_t np = sf_quant_probe(q, prep, nprobe, lists);
    for (uint32_t k = 0; k < np; k++) n += sf_seg_partition_num_chunks(r, lists[k]);
  }
  f->chunks = n / (double)nq;
  f->qps = calloc((size_t)runs, sizeof *f->qps);
  free(lists);
  free(prep);
  sf_seg_close(r);
}

/* One pass over the queries: queries per second of this thread's CPU time
 * (the machine is shared: wall time would measure the neighbours). */
static double pass(file *f, const float *qs, uint64_t nq, uint32_t dim, uint32_t nprobe) {
  sf_err err = {0};
  sf_rowid ids[10];
  float scores[10];
  uint32_t got;
  double t0 = cpu_now();
  for (uint64_t i = 0; i < nq; i++)
    if (sf_search_query(f->s, qs + i * dim, 10, nprobe, ids, scores, &got, &err))
      die(f->path, &err);
  return (double)nq / (cpu_now() - t0);
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr,
            "usage: bench_chunks QUANTIZER QUERIES.fvecs NPROBE RUNS FILE OUTDIR "
            "ROWS[,ROWS...]\n");
    return 2;
  }
  sf_err err = {0};
  sf_quant *q = NULL;
  float *qs = NULL;
  uint64_t nq = 0;
  uint32_t dim = 0, nprobe = (uint32_t)atoi(argv[3]);
  int runs = atoi(argv[4]);
  if (sf_quant_load(argv[1], &q, &err)) die(argv[1], &err);
  if (sf_vec_load_f32(argv[2], 0, UINT64_MAX, (size_t)1 << 30, &qs, &nq, &dim, &err))
    die(argv[2], &err);
  if (nprobe < 1 || runs < 1) return 2;
  sf_seg_reader *src;
  if (sf_seg_open(argv[5], &src, &err)) die(argv[5], &err);
  file *fs = calloc(1, sizeof *fs);
  size_t nf = 1;
  snprintf(fs[0].path, sizeof fs[0].path, "%s", argv[5]);
  char *list = strdup(argv[7]);
  for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
    uint32_t rows = (uint32_t)atoi(tok);
    if (rows < 1 || rows > SF_SEG_MAX_CHUNK_ROWS) return 2;
    fs = realloc(fs, (nf + 1) * sizeof *fs);
    file *f = &fs[nf++];
    memset(f, 0, sizeof *f);
    f->rows = rows;
    if (snprintf(f->path, sizeof f->path, "%s/chunks-%u.sfseg", argv[6], rows) >=
        (int)sizeof f->path)
      return 2;
    rechunk(src, f->path, rows);
  }
  free(list);
  for (size_t i = 0; i < nf; i++) prepare(&fs[i], q, qs, nq, dim, nprobe, runs);
  /* Round robin, so that a busy moment of the machine hits every file. */
  for (int run = 0; run < runs; run++)
    for (size_t i = 0; i < nf; i++) fs[i].qps[run] = pass(&fs[i], qs, nq, dim, nprobe);
  printf("%s: %llu rows, nprobe %u, k 10, %llu queries; median of %d passes (CPU time)\n",
         argv[5], (unsigned long long)sf_seg_num_rows(src), nprobe,
         (unsigned long long)nq, runs);
  printf("%-14s %12s %10s %10s\n", "rows/chunk", "chunks/query", "queries/s", "vs file");
  double base = 0;
  for (size_t i = 0; i < nf; i++) {
    qsort(fs[i].qps, (size_t)runs, sizeof *fs[i].qps, cmp_double);
    double v = fs[i].qps[runs / 2];
    if (i == 0) base = v;
    char name[32];
    snprintf(name, sizeof name, i ? "%u" : "(as it is)", fs[i].rows);
    printf("%-14s %12.1f %10.0f %9.2fx\n", name, fs[i].chunks, v, v / base);
    sf_search_free(fs[i].s);
    free(fs[i].qps);
    if (i) remove(fs[i].path);
  }
  free(fs);
  sf_seg_close(src);
  sf_quant_free(q);
  free(qs);
  return 0;
}
