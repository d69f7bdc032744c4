/*
 * bench_lloyd.c - bounded Lloyd iterations (distance bounds, Hamerly 2010)
 * beside plain Lloyd at the same seed: median seconds of RUNS alternated
 * trainings, the fraction of rows the bounded one sent through the
 * assignment kernel, whether the centroids are the same bits, the fraction
 * of final labels that differ and both objectives. Cases: the coarse
 * quantizer's shape (k=256, dim 784) and PQ codebooks' (k=256, dsub 2..49, and
 * sub-vectors of 98..392), on Fashion-MNIST when a .fvecs path is given (sub-vectors of
 * its middle columns for the PQ shapes) and on generated clustered data.
 *
 *   bench_lloyd [RUNS] [ITERS] [FVECS]   (defaults 3, 20, none)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/vector/gen.h"
#include "core/vector/kmeans.h"
#include "core/vector/vecio.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int run_case(const char *name, const float *x, size_t n, uint32_t d, uint32_t k,
                    int runs, uint32_t iters) {
  float *c[2];
  uint32_t *lab[2];
  double t[2][99];
  sf_kmeans_stats st[2];
  for (int m = 0; m < 2; m++) {
    c[m] = malloc(sizeof(float) * k * d);
    lab[m] = malloc(sizeof(uint32_t) * n);
    if (!c[m] || !lab[m]) return 1;
  }
  for (int r = 0; r < runs; r++)
    for (int m = 0; m < 2; m++) {
      sf_kmeans_params p = {.k = k,
                            .iters = iters,
                            .seed = 7,
                            .random_init = d < 64,
                            .lloyd = m ? SF_KMEANS_BOUNDED : SF_KMEANS_PLAIN};
      double t0 = now();
      if (sf_kmeans_train(&p, x, n, d, c[m], &st[m], NULL)) return 1;
      t[m][r] = now() - t0;
    }
  for (int m = 0; m < 2; m++) {
    sf_kmeans_panel pn;
    if (sf_kmeans_panel_init(&pn, c[m], k, d, 0, NULL)) return 1;
    sf_kmeans_panel_assign(&pn, x, st[m].rows_used, lab[m], NULL);
    sf_kmeans_panel_free(&pn);
    qsort(t[m], runs, sizeof(double), cmp);
  }
  size_t diff = 0;
  for (size_t i = 0; i < st[0].rows_used; i++) diff += lab[0][i] != lab[1][i];
  double scanned =
      (double)st[1].rows_scanned / ((double)st[1].rows_used * st[1].iters_run);
  printf("%-22s %5u %4u %6u %9.3f %9.3f %7.2fx %8.3f %5s %9.6f %14.6g %14.6g\n", name, d,
         k, st[0].iters_run, t[0][runs / 2], t[1][runs / 2],
         t[1][runs / 2] / t[0][runs / 2], scanned,
         memcmp(c[0], c[1], sizeof(float) * k * d) ? "no" : "yes",
         (double)diff / st[0].rows_used, st[0].obj_final, st[1].obj_final);
  for (int m = 0; m < 2; m++) {
    free(c[m]);
    free(lab[m]);
  }
  return 0;
}

/* Columns [j0, j0 + ds) of n rows of dim d, as n rows of ds. */
static float *columns(const float *x, size_t n, uint32_t d, uint32_t j0, uint32_t ds) {
  float *s = malloc(sizeof(float) * n * ds);
  if (!s) return NULL;
  for (size_t i = 0; i < n; i++) memcpy(s + i * ds, x + i * d + j0, sizeof(float) * ds);
  return s;
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 3;
  uint32_t iters = argc > 2 ? (uint32_t)atoi(argv[2]) : 20;
  if (runs < 1 || runs > 99 || iters < 1) {
    fprintf(stderr, "usage: bench_lloyd [RUNS 1..99] [ITERS >= 1] [FVECS]\n");
    return 2;
  }
  printf("median seconds of %d alternated runs, one thread, %u iterations at most\n",
         runs, iters);
  printf("%-22s %5s %4s %6s %9s %9s %8s %8s %5s %9s %14s %14s\n", "case", "dim", "k",
         "iters", "plain_s", "bounded_s", "b/p", "scanned", "same", "lab_diff",
         "obj_plain", "obj_bounded");
  static const uint32_t dsubs[] = {2, 4, 8, 16, 49, 98, 196, 392};
  if (argc > 3) {
    float *x = NULL;
    uint64_t rows = 0;
    uint32_t d = 0;
    sf_err err = {0};
    if (sf_vec_load_f32(argv[3], 0, UINT64_MAX, (size_t)1 << 31, &x, &rows, &d, &err)) {
      fprintf(stderr, "bench_lloyd: %s\n", err.msg);
      return 1;
    }
    if (run_case("fmnist", x, rows, d, 256, runs, iters)) return 1;
    for (size_t i = 0; i < sizeof dsubs / sizeof *dsubs; i++) {
      if (dsubs[i] > d) continue;
      float *s = columns(x, rows, d, d / 2 - dsubs[i] / 2, dsubs[i]);
      char name[32];
      if (!s || snprintf(name, sizeof name, "fmnist-sub%u", dsubs[i]) >= (int)sizeof name)
        return 1;
      if (run_case(name, s, rows, dsubs[i], 256, runs, iters)) return 1;
      free(s);
    }
    free(x);
  }
  const size_t n = 65536;
  float *g = malloc(sizeof(float) * n * 784);
  if (!g) return 1;
  sf_gen_clustered(g, n, 784, 100, 0.3f, 1, 2);
  if (run_case("gen", g, n, 784, 256, runs, iters)) return 1;
  for (size_t i = 0; i < sizeof dsubs / sizeof *dsubs; i++) {
    sf_gen_clustered(g, n, dsubs[i], 100, 0.3f, 1, 2);
    char name[32];
    if (snprintf(name, sizeof name, "gen-sub%u", dsubs[i]) >= (int)sizeof name) return 1;
    if (run_case(name, g, n, dsubs[i], 256, runs, iters)) return 1;
  }
  free(g);
  return 0;
}
