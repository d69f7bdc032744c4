/*
 * bench_api.c - the public library's two hot paths beside their references:
 *  - staging: sf_shard_writer (rows from memory, explicit row ids) against
 *    `segforge stage` on the same rows from a texmex file;
 *  - search: sf_index_search from 1 thread and from T threads on one shared
 *    index handle (its pool of searchers), in queries per second.
 * Medians of RUNS runs. Run by bench/bench_api.sh; never part of the tests.
 *
 *   bench_api SEGFORGE DIR ROWS DIM RUNS THREADS
 */
#include <math.h>
#include <pthread.h>
#include <segforge.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PER 10000 /* rows per fragment */
#define NQ 2000
#define K 10
#define NPROBE 16

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, const sf_error *err) {
  fprintf(stderr, "bench_api: %s: %s\n", what, err ? err->message : "failed");
  exit(1);
}

static uint64_t rng(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static float *vectors(uint64_t n, uint32_t dim, uint64_t seed) {
  uint64_t s = seed;
  float *c = malloc(1000 * dim * sizeof *c), *x = malloc(n * dim * sizeof *x);
  if (!c || !x) die("out of memory", NULL);
  for (size_t i = 0; i < 1000u * dim; i++) c[i] = (float)(rng(&s) >> 40) / 16777216.0f;
  for (uint64_t i = 0; i < n; i++) {
    const float *ci = c + (rng(&s) % 1000) * dim;
    for (uint32_t j = 0; j < dim; j++)
      x[i * dim + j] = ci[j] + 0.05f * ((float)(rng(&s) >> 40) / 16777216.0f - 0.5f);
  }
  free(c);
  return x;
}

typedef struct {
  sf_index *ix;
  const float *q;
  uint64_t nq;
  uint32_t dim;
  uint64_t *ids;
} part;

static void *search_part(void *arg) {
  part *p = arg;
  sf_error err = {0};
  if (sf_index_search(p->ix, p->q, p->nq, p->dim, K, NPROBE, p->ids, NULL, &err))
    die("search", &err);
  return NULL;
}

static double qps(sf_index *ix, const float *q, uint32_t dim, int threads,
                  uint64_t *ids) {
  pthread_t t[64];
  part p[64];
  uint64_t per = NQ / (uint64_t)threads;
  double t0 = now();
  for (int i = 0; i < threads; i++) {
    p[i] = (part){ix, q + i * per * dim, per, dim, ids + i * per * K};
    pthread_create(&t[i], NULL, search_part, &p[i]);
  }
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  return (double)(per * (uint64_t)threads) / (now() - t0);
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s SEGFORGE DIR ROWS DIM RUNS THREADS\n", argv[0]);
    return 2;
  }
  const char *prog = argv[1], *dir = argv[2];
  uint64_t n = strtoull(argv[3], NULL, 10) / PER * PER;
  uint32_t dim = (uint32_t)atoi(argv[4]);
  int runs = atoi(argv[5]), threads = atoi(argv[6]);
  if (n == 0 || runs < 1 || runs > 64 || threads < 1 || threads > 64) return 2;
  sf_error err = {0};
  float *x = vectors(n, dim, 1);
  uint64_t *ids = malloc(n * sizeof *ids);
  for (uint64_t i = 0; i < n; i++) ids[i] = SF_ROW_ID(i / PER, i % PER);

  /* The same rows as a texmex file for `segforge stage`. */
  char path[4096], root[4096], cmd[16384], frags[64];
  snprintf(path, sizeof path, "%s/base.fvecs", dir);
  FILE *f = fopen(path, "wb");
  if (!f) die(path, NULL);
  for (uint64_t i = 0; i < n; i++) {
    int32_t d = (int32_t)dim;
    if (fwrite(&d, 4, 1, f) != 1 || fwrite(x + i * dim, 4, dim, f) != dim)
      die(path, NULL);
  }
  fclose(f);
  char *r = NULL;
  if (sf_staging_root(dir, "bench", &r, &err)) die("staging root", &err);
  snprintf(root, sizeof root, "%s", r);
  sf_free(r);
  sf_options *o = sf_options_new();
  if (sf_options_set(o, "index_type", "IVF_SQ", &err) ||
      sf_options_set(o, "nlist", "256", &err) || sf_train(x, n, dim, o, root, &err))
    die("train", &err);
  sf_options_free(o);
  snprintf(frags, sizeof frags, "0-%llu", (unsigned long long)(n / PER - 1));

  double lib[64], cli[64];
  sf_options *repl = sf_options_new();
  sf_options_set(repl, "exclusive", "0", &err);
  for (int i = 0; i < runs; i++) {
    double t0 = now();
    sf_shard_writer *w = NULL;
    if (sf_shard_writer_open(root, "lib", frags, repl, &w, &err)) die("open", &err);
    for (uint64_t at = 0; at < n; at += PER)
      if (sf_shard_writer_add(w, x + at * dim, ids + at, PER, dim, &err))
        die("add", &err);
    if (sf_shard_writer_finish(w, &err)) die("finish", &err);
    sf_shard_writer_free(w);
    lib[i] = now() - t0;
    int len = snprintf(cmd, sizeof cmd,
                       "'%s' stage --vectors '%s' --staging '%s' --rows-per-fragment %d "
                       "--fragments %s --shard-id cli --force >/dev/null",
                       prog, path, root, PER, frags);
    if (len < 0 || (size_t)len >= sizeof cmd) die("command too long", NULL);
    t0 = now();
    if (system(cmd)) die("segforge stage", NULL);
    cli[i] = now() - t0;
  }
  sf_options_free(repl);
  double ml = median(lib, runs), mc = median(cli, runs);
  printf("stage %llu rows x %u (IVF_SQ, nlist 256), median of %d:\n",
         (unsigned long long)n, dim, runs);
  printf("  sf_shard_writer (memory)   %8.3f s  %10.0f rows/s\n", ml, (double)n / ml);
  printf("  segforge stage (file)      %8.3f s  %10.0f rows/s\n", mc, (double)n / mc);
  printf("  ratio stage/writer         %8.2f\n", mc / ml);

  /* One shard of the two for the index: the library's. */
  snprintf(cmd, sizeof cmd, "%s/cli.sfshard", root);
  remove(cmd);
  if (sf_index_finalize(dir, "idx", "v", "bench", NULL, NULL, &err))
    die("finalize", &err);
  sf_index *ix = NULL;
  if (sf_index_open(dir, "idx", &ix, &err)) die("open index", &err);
  float *q = vectors(NQ, dim, 2);
  uint64_t *out = malloc((size_t)NQ * K * sizeof *out);
  double one[64], many[64];
  qps(ix, q, dim, threads, out); /* warm the pool and the page cache */
  for (int i = 0; i < runs; i++) {
    one[i] = qps(ix, q, dim, 1, out);
    many[i] = qps(ix, q, dim, threads, out);
  }
  double m1 = median(one, runs), mt = median(many, runs);
  printf("search %d queries, k %d, nprobe %d, median of %d:\n", NQ, K, NPROBE, runs);
  printf("  1 thread                   %10.0f queries/s\n", m1);
  printf("  %d threads, one index       %10.0f queries/s\n", threads, mt);
  printf("  ratio                      %8.2f\n", mt / m1);
  sf_index_close(ix);
  free(q);
  free(out);
  free(x);
  free(ids);
  return 0;
}
