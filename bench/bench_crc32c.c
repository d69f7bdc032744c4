/*
 * bench_crc32c.c - throughput of the CRC-32C that guards every block of
 * shard and segment files (core/crc32c: ISA-L's crc32_iscsi when linked),
 * beside segforge's own three hardware streams, the single hardware stream
 * it replaced, its own table path, and zlib's CRC-32 (Debian's zlib, a
 * reference for what a well-kept library's software CRC costs). Prints one
 * line per buffer size with the median GB/s of RUNS runs of each.
 *
 *   bench_crc32c [RUNS] [MiB_PER_RUN]   (defaults 5 and 1024)
 */
#include <nmmintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "core/base/crc32c.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The previous hardware path: one stream, bound by the instruction's
 * latency. */
__attribute__((target("sse4.2"))) static uint32_t one_stream(uint32_t crc,
                                                             const void *buf,
                                                             size_t len) {
  const uint8_t *p = buf;
  uint64_t c = ~crc;
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
  return ~(uint32_t)c;
}

static uint32_t zlib_crc(uint32_t crc, const void *buf, size_t len) {
  return (uint32_t)crc32(crc, buf, (uInt)len);
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static volatile uint32_t sink;

/* GB/s of fn over `total` bytes in buffers of `size` bytes. */
static double rate(crc_fn fn, const uint8_t *buf, size_t size, size_t total) {
  size_t reps = total / size ? total / size : 1;
  uint32_t c = 0;
  double t0 = now();
  for (size_t i = 0; i < reps; i++) c = fn(c, buf, size);
  double dt = now() - t0;
  sink = c;
  return (double)reps * size / dt / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int runs = argc > 1 ? atoi(argv[1]) : 5;
  size_t total = (size_t)(argc > 2 ? atoi(argv[2]) : 1024) << 20;
  if (runs < 1 || runs > 99 || total == 0) {
    fprintf(stderr, "usage: bench_crc32c [RUNS 1-99] [MiB_PER_RUN]\n");
    return 2;
  }
  if (!sf_crc32c_hw_available()) {
    fprintf(stderr, "bench_crc32c: this CPU lacks SSE4.2\n");
    return 1;
  }
  const size_t sizes[] = {4096, 65536, 1 << 20, 64 << 20};
  uint8_t *buf = malloc(64 << 20);
  if (!buf) return 1;
  for (size_t i = 0; i < (64u << 20); i++) buf[i] = (uint8_t)(i * 2654435761u >> 13);
  struct {
    const char *name;
    crc_fn fn;
  } impl[] = {{"sf_crc32c (ISA-L)", sf_crc32c},
              {"segforge (3 streams)", sf_crc32c_hw},
              {"one hw stream", one_stream},
              {"segforge table path", sf_crc32c_sw},
              {"zlib crc32 (CRC-32)", zlib_crc}};
  const int n = sizeof impl / sizeof impl[0];
  printf("GB/s, medians of %d runs over %zu MiB each\n%-10s", runs, total >> 20,
         "buffer");
  for (int k = 0; k < n; k++) printf(" %24s", impl[k].name);
  printf("\n");
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    printf("%-10zu", sizes[s]);
    double med[8];
    for (int k = 0; k < n; k++) {
      double r[99];
      size_t t = k >= 3 ? total / 8 : total; /* the software paths are slower */
      for (int i = 0; i < runs; i++) r[i] = rate(impl[k].fn, buf, sizes[s], t);
      qsort(r, runs, sizeof r[0], cmp);
      med[k] = r[runs / 2];
      printf(" %24.2f", med[k]);
    }
    printf("   (sf_crc32c / 3 streams: %.2fx)\n", med[0] / med[1]);
  }
  free(buf);
  return 0;
}
