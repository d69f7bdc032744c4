/*
 * bench_kmeans.c - k-means assignment by segforge's panel kernel
 * (core/vector/kmeans.c: 4 rows x 16 centroids of FMAs with AVX2, 8 rows x
 * 32 centroids with AVX-512, the running minimum kept in registers) beside OpenBLAS's
 * sgemm (its serial build, one thread) in tiles of 256 rows followed by the same
 * selection (smallest ||c||^2 - 2<x,c>, ties to the lower index): FAISS's assignment
 * step. For each dimension and k: median seconds of RUNS alternated runs over N rows.
 *
 *   bench_kmeans [RUNS] [N]   (defaults 5 and 32768)
 */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/vector/gen.h"
#include "core/vector/kmeans.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

#define TILE 256

/* FAISS's way: dot products of a tile of rows with every centroid, then a
 * pass for the nearest. ip holds TILE * k floats. */
static void assign_sgemm(const float *x, size_t n, const float *c, const float *norms,
                         uint32_t k, uint32_t d, float *ip, uint32_t *label) {
  for (size_t i0 = 0; i0 < n; i0 += TILE) {
    size_t rows = n - i0 < TILE ? n - i0 : TILE;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)k, (int)d, 1.0f,
                x + i0 * d, (int)d, c, (int)d, 0.0f, ip, (int)k);
    for (size_t r = 0; r < rows; r++) {
      float best = INFINITY;
      uint32_t arg = 0;
      for (uint32_t j = 0; j < k; j++) {
        float s = norms[j] - 2.0f * ip[r * k + j];
        if (s < best) best = s, arg = j;
      }
      label[i0 + r] = arg;
    }
  }
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 5;
  size_t n = argc > 2 ? (size_t)atol(argv[2]) : 32768;
  if (runs < 1 || runs > 99 || n < 256) {
    fprintf(stderr, "usage: bench_kmeans [RUNS 1-99] [N >= 256]\n");
    return 2;
  }
  static const uint32_t dims[] = {16, 64, 128, 256, 512, 784};
  static const uint32_t ks[] = {16, 64, 256, 1024};
  uint32_t *label = malloc(sizeof(uint32_t) * n), *label2 = malloc(sizeof(uint32_t) * n);
  if (!label || !label2) return 1;
  printf("median seconds of %d runs, %zu rows, one thread\n", runs, n);
  printf("%-5s %-5s %10s %10s %14s %s\n", "dim", "k", "panel_s", "sgemm_s", "panel/sgemm",
         "labels");
  for (size_t di = 0; di < sizeof dims / sizeof *dims; di++)
    for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
      const uint32_t d = dims[di], k = ks[ki];
      float *x = malloc(sizeof(float) * n * d), *c = malloc(sizeof(float) * k * d);
      if (!x || !c) return 1;
      sf_gen_clustered(x, n, d, 100, 0.3f, 1, 2);
      memcpy(c, x, sizeof(float) * k * d);
      float *ip = malloc(sizeof(float) * TILE * k), *norms = malloc(sizeof(float) * k);
      if (!ip || !norms) return 1;
      for (uint32_t j = 0; j < k; j++) {
        double s = 0;
        for (uint32_t t = 0; t < d; t++) s += (double)c[j * d + t] * c[j * d + t];
        norms[j] = (float)s;
      }
      sf_kmeans_panel p;
      if (sf_kmeans_panel_init(&p, c, k, d, 0, NULL)) return 1;
      double tp[99], tb[99];
      for (int r = 0; r < runs; r++) {
        double t0 = now();
        sf_kmeans_panel_assign(&p, x, n, label, NULL);
        tp[r] = now() - t0;
        t0 = now();
        assign_sgemm(x, n, c, norms, k, d, ip, label2);
        tb[r] = now() - t0;
      }
      size_t same = 0;
      for (size_t i = 0; i < n; i++) same += label[i] == label2[i];
      qsort(tp, runs, sizeof *tp, cmp);
      qsort(tb, runs, sizeof *tb, cmp);
      printf("%-5u %-5u %10.4f %10.4f %13.2fx %.4f same\n", d, k, tp[runs / 2],
             tb[runs / 2], tb[runs / 2] / tp[runs / 2], (double)same / n);
      sf_kmeans_panel_free(&p);
      free(ip);
      free(norms);
      free(x);
      free(c);
    }
  free(label);
  free(label2);
  return 0;
}
