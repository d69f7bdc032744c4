/*
 * bench_scan.c - how close a scan comes to the memory's limit. Measures the
 * single-thread read bandwidth of this machine (a sum over a buffer far
 * larger than the caches, 8 floats per instruction), then searches a shard
 * or segment one query at a time and reports, per nprobe, queries/s, the
 * code bytes scanned per query (rows scanned x code size) and what fraction
 * of the measured bandwidth that rate of bytes is.
 *
 *   bench_scan QUANTIZER QUERIES.fvecs NPROBE[,NPROBE...] FILE...
 */
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/search/search.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static volatile float sink;

/* Bytes per second of one thread summing n floats. */
__attribute__((target("avx2"))) static double read_rate(const float *b, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  double t0 = now();
  for (size_t i = 0; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(b + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(b + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_loadu_ps(b + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_loadu_ps(b + i + 24));
  }
  double dt = now() - t0;
  float o[8];
  _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  sink = o[0];
  return n * 4.0 / dt;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr,
            "usage: bench_scan QUANTIZER QUERIES.fvecs NPROBE[,NPROBE...] FILE...\n");
    return 2;
  }
  const size_t nbw = (size_t)1 << 28; /* 1 GiB of floats */
  float *buf = malloc(nbw * sizeof(float));
  if (!buf) return 1;
  for (size_t i = 0; i < nbw; i++) buf[i] = (float)(i & 1023);
  double bw[5];
  for (int r = 0; r < 5; r++) bw[r] = read_rate(buf, nbw);
  free(buf);
  double best = 0;
  for (int r = 0; r < 5; r++) best = bw[r] > best ? bw[r] : best;
  printf("memory read bandwidth, one thread: %.1f GB/s (best of 5 passes over 1 GiB)\n",
         best / 1e9);
  sf_err err = {0};
  sf_quant *q = NULL;
  sf_search *s = NULL;
  float *qs = NULL;
  uint64_t nq = 0;
  uint32_t dim = 0;
  if (sf_quant_load(argv[1], &q, &err) ||
      sf_vec_load_f32(argv[2], 0, UINT64_MAX, (size_t)1 << 30, &qs, &nq, &dim, &err) ||
      sf_search_open(q, (const char *const *)argv + 4, (size_t)argc - 4, &s, &err) ||
      sf_search_verify(s, &err)) {
    fprintf(stderr, "bench_scan: %s\n", err.msg);
    return 1;
  }
  const size_t cs = sf_quant_code_size(q);
  printf("%-7s %10s %14s %10s %13s\n", "nprobe", "queries/s", "bytes/query", "GB/s",
         "of bandwidth");
  char *list = strdup(argv[3]);
  for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
    uint32_t np = (uint32_t)atoi(tok), got;
    sf_rowid ids[10];
    float sc[10];
    uint64_t scanned = 0;
    double t0 = now();
    for (uint64_t i = 0; i < nq; i++) {
      if (sf_search_query(s, qs + i * dim, 10, np, ids, sc, &got, &err)) {
        fprintf(stderr, "bench_scan: %s\n", err.msg);
        return 1;
      }
      scanned += sf_search_last_scanned(s);
    }
    double dt = now() - t0, bpq = (double)scanned * cs / nq, rate = bpq * nq / dt;
    printf("%-7u %10.0f %14.0f %10.2f %12.1f%%\n", np, nq / dt, bpq, rate / 1e9,
           100 * rate / best);
  }
  free(list);
  free(qs);
  sf_search_free(s);
  sf_quant_free(q);
  return 0;
}
