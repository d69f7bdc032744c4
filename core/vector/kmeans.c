/*
 * kmeans.c - see kmeans.h.
 *
 * Costs, for a sample of n rows, k centroids, dim d:
 *  - each Lloyd iteration is one assignment (n*k*d multiply-adds, in the
 *    panel kernel) plus an O(n*d) update;
 *  - k-means++ seeding costs k passes over its rows, so it runs on a
 *    subsample of at most 16 rows per centroid and only while that stays
 *    under SEED_BUDGET multiply-adds; beyond that (k in the thousands) the
 *    seeds are k distinct random rows, which is what FAISS does always and
 *    which Lloyd iterations with many points per centroid forgive.
 */
#include "core/vector/kmeans.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/rng.h"
#include "core/vector/distance.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SF_KM_X86 1
#endif

#define BLK 16                    /* centroids per panel block */
#define SEED_ROWS_PER_CENTROID 16 /* k-means++ subsample size per centroid */
#define SEED_BUDGET (1ull << 31)  /* multiply-adds allowed for k-means++ */
#define SPLIT_EPS (1.0f / 1024)   /* relative perturbation of a split */

/* ---- the kernel: dot products of 4 rows with the 16 centroids of a block */

static void dots4_portable(const float *x0, const float *x1, const float *x2,
                           const float *x3, const float *pb, uint32_t dim, float *out) {
  float a0[BLK] = {0}, a1[BLK] = {0}, a2[BLK] = {0}, a3[BLK] = {0};
  for (uint32_t j = 0; j < dim; j++) {
    const float *c = pb + (size_t)j * BLK;
    float v0 = x0[j], v1 = x1[j], v2 = x2[j], v3 = x3[j];
    for (int t = 0; t < BLK; t++) {
      a0[t] += v0 * c[t];
      a1[t] += v1 * c[t];
      a2[t] += v2 * c[t];
      a3[t] += v3 * c[t];
    }
  }
  memcpy(out, a0, sizeof a0);
  memcpy(out + BLK, a1, sizeof a1);
  memcpy(out + 2 * BLK, a2, sizeof a2);
  memcpy(out + 3 * BLK, a3, sizeof a3);
}

/* The running minimum of 4 rows over blocks [b0, b1) of a panel, kept per
 * lane: best[q*16 + t] is the smallest score row q met in lane t so far,
 * blk[q*16 + t] the block it came from (the caller initialises them and
 * reduces the 16 lanes at the end, so the hot loop has no branches). When
 * sec is not NULL it also keeps each lane's second smallest score (for the
 * distance bounds of the bounded Lloyd iterations); best and blk get the
 * same values either way. */
static void assign4_portable(const sf_kmeans_panel *p, const float *const xr[4],
                             uint32_t b0, uint32_t b1, float *best, uint32_t *blk,
                             float *sec) {
  const float f = p->ip ? -1.0f : -2.0f;
  float out[4 * BLK];
  for (uint32_t b = b0; b < b1; b++) {
    dots4_portable(xr[0], xr[1], xr[2], xr[3], p->data + (size_t)b * p->dim * BLK, p->dim,
                   out);
    const float *bias = p->bias + (size_t)b * BLK;
    for (int l = 0; l < 4 * BLK; l++) {
      float v = bias[l % BLK] + f * out[l];
      if (sec) sec[l] = v < best[l] ? best[l] : (v < sec[l] ? v : sec[l]);
      if (v < best[l]) {
        best[l] = v;
        blk[l] = b;
      }
    }
  }
}

#ifdef SF_KM_X86
/* Folds 8 lanes of dot products into the running minimum at best/blk (and,
 * when TWO, the running second smallest at sec: the old best where the new
 * score wins, else the smaller of the two). */
#define SF_KM_FOLD(acc, off, bias)                                                  \
  do {                                                                              \
    __m256 sc_ = _mm256_fmadd_ps(f, acc, bias);                                     \
    __m256 bs_ = _mm256_loadu_ps(best + (off));                                     \
    __m256 lt_ = _mm256_cmp_ps(sc_, bs_, _CMP_LT_OQ);                               \
    __m256i ag_ = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (off))); \
    _mm256_storeu_ps(best + (off), _mm256_blendv_ps(bs_, sc_, lt_));                \
    _mm256_storeu_si256((__m256i *)(void *)(blk + (off)),                           \
                        _mm256_blendv_epi8(ag_, bi, _mm256_castps_si256(lt_)));     \
    if (TWO) {                                                                      \
      __m256 s_ = _mm256_min_ps(_mm256_loadu_ps(sec + (off)), sc_);                 \
      _mm256_storeu_ps(sec + (off), _mm256_blendv_ps(s_, bs_, lt_));                \
    }                                                                               \
  } while (0)

/* Eight independent accumulators (named, so they live in registers) hide
 * the FMA latency; the running minimum stays in L1 and is folded once per
 * block with compare-and-blend. TWO is a constant at each call, so the
 * kernel without the second smallest is the one it always was. */
__attribute__((target("avx2,fma"), always_inline)) static inline void assign4_avx2_body(
    const sf_kmeans_panel *p, const float *const xr[4], uint32_t b0, uint32_t b1,
    float *best, uint32_t *blk, float *sec, const int TWO) {
  const __m256 f = _mm256_set1_ps(p->ip ? -1.0f : -2.0f);
  const float *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3];
  const uint32_t dim = p->dim; /* a local, so the loop need not reload it */
  for (uint32_t b = b0; b < b1; b++) {
    const float *pb = p->data + (size_t)b * dim * BLK;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0;
    for (uint32_t j = 0; j < dim; j++) {
      const float *c = pb + (size_t)j * BLK;
      __m256 c0 = _mm256_loadu_ps(c), c1 = _mm256_loadu_ps(c + 8);
      __m256 v0 = _mm256_broadcast_ss(x0 + j), v1 = _mm256_broadcast_ss(x1 + j);
      __m256 v2 = _mm256_broadcast_ss(x2 + j), v3 = _mm256_broadcast_ss(x3 + j);
      a0 = _mm256_fmadd_ps(v0, c0, a0);
      a1 = _mm256_fmadd_ps(v0, c1, a1);
      a2 = _mm256_fmadd_ps(v1, c0, a2);
      a3 = _mm256_fmadd_ps(v1, c1, a3);
      a4 = _mm256_fmadd_ps(v2, c0, a4);
      a5 = _mm256_fmadd_ps(v2, c1, a5);
      a6 = _mm256_fmadd_ps(v3, c0, a6);
      a7 = _mm256_fmadd_ps(v3, c1, a7);
    }
    const __m256 bias0 = _mm256_loadu_ps(p->bias + (size_t)b * BLK);
    const __m256 bias1 = _mm256_loadu_ps(p->bias + (size_t)b * BLK + 8);
    const __m256i bi = _mm256_set1_epi32((int)b);
    SF_KM_FOLD(a0, 0, bias0);
    SF_KM_FOLD(a1, 8, bias1);
    SF_KM_FOLD(a2, 16, bias0);
    SF_KM_FOLD(a3, 24, bias1);
    SF_KM_FOLD(a4, 32, bias0);
    SF_KM_FOLD(a5, 40, bias1);
    SF_KM_FOLD(a6, 48, bias0);
    SF_KM_FOLD(a7, 56, bias1);
  }
}
#undef SF_KM_FOLD

__attribute__((target("avx2,fma"))) static void assign4_avx2(const sf_kmeans_panel *p,
                                                             const float *const xr[4],
                                                             uint32_t b0, uint32_t b1,
                                                             float *best, uint32_t *blk,
                                                             float *sec) {
  if (sec)
    assign4_avx2_body(p, xr, b0, b1, best, blk, sec, 1);
  else
    assign4_avx2_body(p, xr, b0, b1, best, blk, NULL, 0);
}
#endif

#ifdef SF_KM_X86
/* The same fold for 16 lanes (one block) in one register. */
#define SF_KM_FOLD16(acc, off, bias, bi)                                             \
  do {                                                                               \
    __m512 sc_ = _mm512_fmadd_ps(f, acc, bias);                                      \
    __m512 bs_ = _mm512_loadu_ps(best + (off));                                      \
    __mmask16 lt_ = _mm512_cmp_ps_mask(sc_, bs_, _CMP_LT_OQ);                        \
    _mm512_storeu_ps(best + (off), _mm512_mask_mov_ps(bs_, lt_, sc_));               \
    __m512i ag_ = _mm512_loadu_si512((const void *)(blk + (off)));                   \
    _mm512_storeu_si512((void *)(blk + (off)), _mm512_mask_mov_epi32(ag_, lt_, bi)); \
    if (TWO) {                                                                       \
      __m512 s_ = _mm512_min_ps(_mm512_loadu_ps(sec + (off)), sc_);                  \
      _mm512_storeu_ps(sec + (off), _mm512_mask_mov_ps(s_, lt_, bs_));               \
    }                                                                                \
  } while (0)

/* AVX-512: 8 rows against 2 blocks (32 centroids) per pass, 16 FMAs on 16
 * accumulators per dimension, so a panel line read from cache serves 8
 * rows. Every lane sums the same products in the same order as
 * assign4_avx2's, and blocks fold in the same order, so the labels and
 * scores are bit for bit those of the AVX2 kernel. */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
assign8_avx512_body(const sf_kmeans_panel *p, const float *const xr[8], uint32_t b0,
                    uint32_t b1, float *best, uint32_t *blk, float *sec, const int TWO) {
  const __m512 f = _mm512_set1_ps(p->ip ? -1.0f : -2.0f);
  const uint32_t dim = p->dim;
  uint32_t b = b0;
  for (; b + 2 <= b1; b += 2) {
    const float *pa = p->data + (size_t)b * dim * BLK, *pb = pa + (size_t)dim * BLK;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0, c0 = a0, c1 = a0, c2 = a0, c3 = a0, c4 = a0, c5 = a0, c6 = a0,
           c7 = a0;
    for (uint32_t j = 0; j < dim; j++) {
      const __m512 u = _mm512_loadu_ps(pa + (size_t)j * BLK);
      const __m512 w = _mm512_loadu_ps(pb + (size_t)j * BLK);
      __m512 v = _mm512_set1_ps(xr[0][j]);
      a0 = _mm512_fmadd_ps(v, u, a0);
      c0 = _mm512_fmadd_ps(v, w, c0);
      v = _mm512_set1_ps(xr[1][j]);
      a1 = _mm512_fmadd_ps(v, u, a1);
      c1 = _mm512_fmadd_ps(v, w, c1);
      v = _mm512_set1_ps(xr[2][j]);
      a2 = _mm512_fmadd_ps(v, u, a2);
      c2 = _mm512_fmadd_ps(v, w, c2);
      v = _mm512_set1_ps(xr[3][j]);
      a3 = _mm512_fmadd_ps(v, u, a3);
      c3 = _mm512_fmadd_ps(v, w, c3);
      v = _mm512_set1_ps(xr[4][j]);
      a4 = _mm512_fmadd_ps(v, u, a4);
      c4 = _mm512_fmadd_ps(v, w, c4);
      v = _mm512_set1_ps(xr[5][j]);
      a5 = _mm512_fmadd_ps(v, u, a5);
      c5 = _mm512_fmadd_ps(v, w, c5);
      v = _mm512_set1_ps(xr[6][j]);
      a6 = _mm512_fmadd_ps(v, u, a6);
      c6 = _mm512_fmadd_ps(v, w, c6);
      v = _mm512_set1_ps(xr[7][j]);
      a7 = _mm512_fmadd_ps(v, u, a7);
      c7 = _mm512_fmadd_ps(v, w, c7);
    }
    const __m512 ba = _mm512_loadu_ps(p->bias + (size_t)b * BLK);
    const __m512 bb = _mm512_loadu_ps(p->bias + (size_t)(b + 1) * BLK);
    const __m512i ia = _mm512_set1_epi32((int)b), ib = _mm512_set1_epi32((int)b + 1);
    SF_KM_FOLD16(a0, 0, ba, ia);
    SF_KM_FOLD16(c0, 0, bb, ib);
    SF_KM_FOLD16(a1, 16, ba, ia);
    SF_KM_FOLD16(c1, 16, bb, ib);
    SF_KM_FOLD16(a2, 32, ba, ia);
    SF_KM_FOLD16(c2, 32, bb, ib);
    SF_KM_FOLD16(a3, 48, ba, ia);
    SF_KM_FOLD16(c3, 48, bb, ib);
    SF_KM_FOLD16(a4, 64, ba, ia);
    SF_KM_FOLD16(c4, 64, bb, ib);
    SF_KM_FOLD16(a5, 80, ba, ia);
    SF_KM_FOLD16(c5, 80, bb, ib);
    SF_KM_FOLD16(a6, 96, ba, ia);
    SF_KM_FOLD16(c6, 96, bb, ib);
    SF_KM_FOLD16(a7, 112, ba, ia);
    SF_KM_FOLD16(c7, 112, bb, ib);
  }
  for (; b < b1; b++) { /* an odd last block (and the bounded scans' single blocks) */
    const float *pa = p->data + (size_t)b * dim * BLK;
    const float *x0 = xr[0], *x1 = xr[1], *x2 = xr[2], *x3 = xr[3], *x4 = xr[4],
                *x5 = xr[5], *x6 = xr[6], *x7 = xr[7];
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0,
           a7 = a0;
    for (uint32_t j = 0; j < dim; j++) {
      const __m512 u = _mm512_loadu_ps(pa + (size_t)j * BLK);
      a0 = _mm512_fmadd_ps(_mm512_set1_ps(x0[j]), u, a0);
      a1 = _mm512_fmadd_ps(_mm512_set1_ps(x1[j]), u, a1);
      a2 = _mm512_fmadd_ps(_mm512_set1_ps(x2[j]), u, a2);
      a3 = _mm512_fmadd_ps(_mm512_set1_ps(x3[j]), u, a3);
      a4 = _mm512_fmadd_ps(_mm512_set1_ps(x4[j]), u, a4);
      a5 = _mm512_fmadd_ps(_mm512_set1_ps(x5[j]), u, a5);
      a6 = _mm512_fmadd_ps(_mm512_set1_ps(x6[j]), u, a6);
      a7 = _mm512_fmadd_ps(_mm512_set1_ps(x7[j]), u, a7);
    }
    const __m512 ba = _mm512_loadu_ps(p->bias + (size_t)b * BLK);
    const __m512i ia = _mm512_set1_epi32((int)b);
    SF_KM_FOLD16(a0, 0, ba, ia);
    SF_KM_FOLD16(a1, 16, ba, ia);
    SF_KM_FOLD16(a2, 32, ba, ia);
    SF_KM_FOLD16(a3, 48, ba, ia);
    SF_KM_FOLD16(a4, 64, ba, ia);
    SF_KM_FOLD16(a5, 80, ba, ia);
    SF_KM_FOLD16(a6, 96, ba, ia);
    SF_KM_FOLD16(a7, 112, ba, ia);
  }
}
#undef SF_KM_FOLD16

/* Small dims (the PQ codebooks: 8 dimensions at m=98), k <= 256: one row at
 * a time against every block, 8 blocks per pass in registers. The blocked
 * kernel above spends more there on folding 16 lanes per block and row and
 * on the per-row selection than on its FMAs; here each row keeps its best
 * score and block per lane in two registers and the selection is a vector
 * reduction. Every lane computes what assign8_avx512's computes (FMAs from
 * 0 in dimension order, then f * acc + bias) and keeps the first block on
 * ties, so the labels and scores are the same bits (tested). Measured
 * against the blocked AVX-512 kernel on 60,000 rows, k=256: 0.25-0.4x of
 * its time at 1-4 dims, 0.5-0.6x at 8, 0.7-0.8x at 16, even at 24-32. */
#define SF_KM_SMALL_DIM 16
__attribute__((target("avx512f,fma"))) static void assign_small_avx512(
    const sf_kmeans_panel *p, const float *x, size_t n, uint32_t *label, float *score) {
  const __m512 f = _mm512_set1_ps(p->ip ? -1.0f : -2.0f);
  const uint32_t dim = p->dim, nblk = p->nblk;
  const size_t bs = (size_t)dim * BLK;
  const __m512i lane =
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (size_t i = 0; i < n; i++) {
    const float *xi = x + i * dim;
    __m512 best = _mm512_set1_ps(INFINITY);
    __m512i bidx = _mm512_setzero_si512();
#define SF_KM_SFOLD(a, bb)                                                           \
  do {                                                                               \
    __m512 sc_ = _mm512_fmadd_ps(f, a, _mm512_loadu_ps(p->bias + (size_t)(bb)*BLK)); \
    __mmask16 lt_ = _mm512_cmp_ps_mask(sc_, best, _CMP_LT_OQ);                       \
    best = _mm512_mask_mov_ps(best, lt_, sc_);                                       \
    bidx = _mm512_mask_mov_epi32(bidx, lt_, _mm512_set1_epi32((int)(bb)));           \
  } while (0)
    uint32_t b = 0;
    for (; b + 8 <= nblk; b += 8) {
      const float *p0 = p->data + (size_t)b * bs;
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0,
             a6 = a0, a7 = a0;
      for (uint32_t j = 0; j < dim; j++) {
        const __m512 v = _mm512_set1_ps(xi[j]);
        const float *q = p0 + (size_t)j * BLK;
        a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q), a0);
        a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + bs), a1);
        a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + 2 * bs), a2);
        a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + 3 * bs), a3);
        a4 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + 4 * bs), a4);
        a5 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + 5 * bs), a5);
        a6 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + 6 * bs), a6);
        a7 = _mm512_fmadd_ps(v, _mm512_loadu_ps(q + 7 * bs), a7);
      }
      SF_KM_SFOLD(a0, b);
      SF_KM_SFOLD(a1, b + 1);
      SF_KM_SFOLD(a2, b + 2);
      SF_KM_SFOLD(a3, b + 3);
      SF_KM_SFOLD(a4, b + 4);
      SF_KM_SFOLD(a5, b + 5);
      SF_KM_SFOLD(a6, b + 6);
      SF_KM_SFOLD(a7, b + 7);
    }
    for (; b < nblk; b++) {
      const float *p0 = p->data + (size_t)b * bs;
      __m512 a0 = _mm512_setzero_ps();
      for (uint32_t j = 0; j < dim; j++)
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(xi[j]), _mm512_loadu_ps(p0 + (size_t)j * BLK),
                             a0);
      SF_KM_SFOLD(a0, b);
    }
#undef SF_KM_SFOLD
    /* The smallest score, then the lowest centroid index holding it (each
     * lane holds the first block that reached its own minimum). */
    float s = _mm512_reduce_min_ps(best);
    __mmask16 eq = _mm512_cmp_ps_mask(best, _mm512_set1_ps(s), _CMP_EQ_OQ);
    __m512i c = _mm512_add_epi32(_mm512_slli_epi32(bidx, 4), lane);
    uint32_t arg = eq ? (uint32_t)_mm512_mask_reduce_min_epu32(eq, c) : UINT32_MAX;
    if (arg >= p->k) arg = 0; /* only when every score was NaN */
    label[i] = arg;
    if (score) {
      float v = s;
      if (!p->ip) {
        v += sf_dist_dot(xi, xi, dim);
        if (v < 0) v = 0; /* rounding of the expanded form */
      }
      score[i] = v;
    }
  }
}

__attribute__((target("avx512f,fma"))) static void assign8_avx512(
    const sf_kmeans_panel *p, const float *const xr[8], uint32_t b0, uint32_t b1,
    float *best, uint32_t *blk, float *sec) {
  if (sec)
    assign8_avx512_body(p, xr, b0, b1, best, blk, sec, 1);
  else
    assign8_avx512_body(p, xr, b0, b1, best, blk, NULL, 0);
}
#endif

typedef void (*assign4_fn)(const sf_kmeans_panel *, const float *const[4], uint32_t,
                           uint32_t, float *, uint32_t *, float *);
typedef void (*assign8_fn)(const sf_kmeans_panel *, const float *const[8], uint32_t,
                           uint32_t, float *, uint32_t *, float *);

/* Chosen once; every thread computes the same value, so the race is benign
 * (the same reasoning as distance.c). */
static assign4_fn pick_assign4(void) {
  static _Atomic(assign4_fn) chosen;
  assign4_fn f = atomic_load_explicit(&chosen, memory_order_relaxed);
  if (f) return f;
  f = assign4_portable;
#ifdef SF_KM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) f = assign4_avx2;
#endif
  atomic_store_explicit(&chosen, f, memory_order_relaxed);
  return f;
}

/* The 8-row kernel, or NULL where the CPU has no AVX-512F. */
static assign8_fn pick_assign8(void) {
#ifdef SF_KM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
    return assign8_avx512;
#endif
  return NULL;
}

/* ---- panel ---------------------------------------------------------------- */

static void panel_fill(sf_kmeans_panel *p, const float *c) {
  for (uint32_t b = 0; b < p->nblk; b++) {
    float *blk = p->data + (size_t)b * p->dim * BLK;
    for (uint32_t t = 0; t < BLK; t++) {
      uint32_t ci = b * BLK + t;
      if (ci >= p->k) {
        for (uint32_t j = 0; j < p->dim; j++) blk[(size_t)j * BLK + t] = 0;
        p->bias[ci] = INFINITY; /* a padding slot never wins */
        continue;
      }
      const float *v = c + (size_t)ci * p->dim;
      for (uint32_t j = 0; j < p->dim; j++) blk[(size_t)j * BLK + t] = v[j];
      p->bias[ci] = p->ip ? 0.0f : sf_dist_dot(v, v, p->dim);
    }
  }
}

sf_code sf_kmeans_panel_init(sf_kmeans_panel *p, const float *centroids, uint32_t k,
                             uint32_t dim, int ip, sf_err *err) {
  memset(p, 0, sizeof *p);
  if (k == 0 || dim == 0)
    return sf_err_set(err, SF_EINVAL, "a centroid panel needs k >= 1 and dim >= 1");
  p->k = k;
  p->dim = dim;
  p->ip = ip;
  p->nblk = (k + BLK - 1) / BLK;
  p->data = malloc(sizeof(float) * (size_t)p->nblk * BLK * dim);
  p->bias = malloc(sizeof(float) * (size_t)p->nblk * BLK);
  if (!p->data || !p->bias) {
    sf_kmeans_panel_free(p);
    return sf_err_set(err, SF_ENOMEM, "out of memory for %u centroids of dim %u", k, dim);
  }
  panel_fill(p, centroids);
  return SF_OK;
}

void sf_kmeans_panel_free(sf_kmeans_panel *p) {
  if (!p) return;
  free(p->data);
  free(p->bias);
  memset(p, 0, sizeof *p);
}

/* Rows go in tiles of TILE_ROWS and centroids in chunks of about
 * CHUNK_BYTES, so that a chunk of the panel is read from cache by every row
 * of a tile instead of streaming the whole panel from memory per 4 rows. */
#define TILE_ROWS 64
#define CHUNK_BYTES (128u << 10)

/* One tile of rows (positions i0..i0+rows of idx, or rows themselves when
 * idx is NULL) against blocks [blo, bhi): the per-lane running minimum (and
 * second smallest when sec is not NULL) that lanes_reduce then reduces. */
static void lanes_run(assign4_fn assign4, assign8_fn assign8, const sf_kmeans_panel *p,
                      const float *x, const uint32_t *idx, size_t i0, size_t rows,
                      uint32_t blo, uint32_t bhi, float *best, uint32_t *blk,
                      float *sec) {
  const size_t d = p->dim, grp = assign8 ? 8 : 4;
  const size_t blk_bytes = sizeof(float) * BLK * d;
  const uint32_t chunk =
      blk_bytes >= CHUNK_BYTES ? 1 : (uint32_t)(CHUNK_BYTES / blk_bytes);
  /* the rows, and the lanes a short last group of 8 writes */
  const size_t lanes = ((rows + grp - 1) / grp * grp) * BLK;
  for (size_t l = 0; l < lanes; l++) best[l] = INFINITY;
  for (size_t l = 0; l < lanes; l++) blk[l] = 0;
  if (sec)
    for (size_t l = 0; l < lanes; l++) sec[l] = INFINITY;
  for (uint32_t b0 = blo; b0 < bhi; b0 += chunk) {
    uint32_t b1 = bhi - b0 < chunk ? bhi : b0 + chunk;
    for (size_t g = 0; g < rows; g += grp) {
      /* A short last group repeats a row; its extra lanes are not read. */
      const float *xr[8];
      for (size_t q = 0; q < grp; q++) {
        size_t r = i0 + (g + q < rows ? g + q : g);
        xr[q] = x + (idx ? idx[r] : r) * d;
      }
      float *sp = sec ? sec + g * BLK : NULL;
      if (assign8)
        assign8(p, xr, b0, b1, best + g * BLK, blk + g * BLK, sp);
      else
        assign4(p, xr, b0, b1, best + g * BLK, blk + g * BLK, sp);
    }
  }
}

/* Row r of a tile: the smallest score, the lowest centroid holding it
 * (UINT32_MAX when every score was NaN) and, when sec is not NULL, the
 * second smallest (the winner's lane offers its second, the others their
 * best). Lanes hold disjoint centroids; ties go to the lower index. */
static float lanes_reduce(const float *best, const uint32_t *blk, const float *sec,
                          size_t r, uint32_t *arg_out, float *s2_out) {
  const float *bv = best + r * BLK;
  float s = bv[0];
  for (uint32_t t = 1; t < BLK; t++) s = bv[t] < s ? bv[t] : s;
  uint32_t arg = UINT32_MAX;
  for (uint32_t t = 0; t < BLK; t++) {
    uint32_t c = blk[r * BLK + t] * BLK + t;
    arg = bv[t] == s && c < arg ? c : arg;
  }
  if (sec) {
    const float *sv = sec + r * BLK;
    float s2 = INFINITY;
    for (uint32_t t = 0; t < BLK; t++) {
      float v = t == arg % BLK ? sv[t] : bv[t];
      s2 = v < s2 ? v : s2;
    }
    *s2_out = s2;
  }
  *arg_out = arg;
  return s;
}

/* Rows idx[0..n) of x (rows 0..n) when idx is NULL) against the panel;
 * a row's results go to its own index: label[i], score[i] and, when second
 * is not NULL, second[i], the second smallest score (the row's own score
 * for a tie; +inf when k == 1). A row's results do not depend on which
 * other rows share its pass, so any list and any split give the same. */
static void assign_rows(assign4_fn assign4, assign8_fn assign8, const sf_kmeans_panel *p,
                        const float *x, const uint32_t *idx, size_t n, uint32_t *label,
                        float *score, float *second) {
  const size_t d = p->dim;
#ifdef SF_KM_X86
  if (assign8 && !idx && !second && p->dim <= SF_KM_SMALL_DIM && p->nblk <= 16) {
    assign_small_avx512(p, x, n, label, score);
    return;
  }
#endif
  float best[TILE_ROWS * BLK], sec[TILE_ROWS * BLK];
  uint32_t blk[TILE_ROWS * BLK];
  float *secp = second ? sec : NULL;
  for (size_t i0 = 0; i0 < n; i0 += TILE_ROWS) {
    size_t rows = n - i0 < TILE_ROWS ? n - i0 : TILE_ROWS;
    lanes_run(assign4, assign8, p, x, idx, i0, rows, 0, p->nblk, best, blk, secp);
    for (size_t r = 0; r < rows; r++) {
      const size_t row = idx ? idx[i0 + r] : i0 + r;
      uint32_t arg;
      float s2 = INFINITY, s = lanes_reduce(best, blk, secp, r, &arg, &s2);
      if (arg >= p->k) arg = 0; /* only when every score was NaN */
      label[row] = arg;
      if (score || second) {
        float xx = 0;
        if (!p->ip) xx = sf_dist_dot(x + row * d, x + row * d, d);
        if (score) {
          float v = s + xx;
          score[row] = !p->ip && v < 0 ? 0 : v; /* rounding of the expanded form */
        }
        if (second) {
          float v = s2 + xx;
          second[row] = !p->ip && v < 0 ? 0 : v;
        }
      }
    }
  }
}

#ifdef SF_KM_X86
/* lanes_reduce in AVX-512 registers, for the bounded scans (where one
 * reduction serves one block): the same minimum, index and second. */
__attribute__((target("avx512f"))) static float lanes_reduce_avx512(
    const float *best, const uint32_t *blk, const float *sec, size_t r, uint32_t *arg_out,
    float *s2_out) {
  const __m512 bv = _mm512_loadu_ps(best + r * BLK);
  const float s = _mm512_reduce_min_ps(bv);
  const __mmask16 eq = _mm512_cmp_ps_mask(bv, _mm512_set1_ps(s), _CMP_EQ_OQ);
  const __m512i c = _mm512_add_epi32(
      _mm512_slli_epi32(_mm512_loadu_si512((const void *)(blk + r * BLK)), 4),
      _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  const uint32_t arg = eq ? _mm512_mask_reduce_min_epu32(eq, c) : UINT32_MAX;
  const __mmask16 own = arg == UINT32_MAX ? 0 : (__mmask16)(1u << (arg % BLK));
  *s2_out =
      _mm512_reduce_min_ps(_mm512_mask_mov_ps(bv, own, _mm512_loadu_ps(sec + r * BLK)));
  *arg_out = arg;
  return s;
}
#endif

/* Rows idx[0..n) against blocks [blo, bhi) only, results by position:
 * gbest[r] the smallest raw score (without ||x||^2), garg[r] its centroid
 * (lowest index of a tie; UINT32_MAX if all NaN), gsec[r] the second
 * smallest. The raw scores are the very values the whole-panel pass
 * compares. */
static void assign_blocks(const sf_kmeans_panel *p, const float *x, const uint32_t *idx,
                          size_t n, uint32_t blo, uint32_t bhi, float *gbest,
                          uint32_t *garg, float *gsec) {
  assign4_fn a4 = pick_assign4();
  assign8_fn a8 = pick_assign8();
  float (*reduce)(const float *, const uint32_t *, const float *, size_t, uint32_t *,
                  float *) = lanes_reduce;
#ifdef SF_KM_X86
  if (a8) reduce = lanes_reduce_avx512;
#endif
  float best[TILE_ROWS * BLK], sec[TILE_ROWS * BLK];
  uint32_t blk[TILE_ROWS * BLK];
  for (size_t i0 = 0; i0 < n; i0 += TILE_ROWS) {
    size_t rows = n - i0 < TILE_ROWS ? n - i0 : TILE_ROWS;
    lanes_run(a4, a8, p, x, idx, i0, rows, blo, bhi, best, blk, sec);
    for (size_t r = 0; r < rows; r++)
      gbest[i0 + r] = reduce(best, blk, sec, r, &garg[i0 + r], &gsec[i0 + r]);
  }
}

void sf_kmeans_panel_assign(const sf_kmeans_panel *p, const float *x, size_t n,
                            uint32_t *label, float *score) {
  assign_rows(pick_assign4(), pick_assign8(), p, x, NULL, n, label, score, NULL);
}

int sf_kmeans_panel_assign_named(const char *impl, const sf_kmeans_panel *p,
                                 const float *x, size_t n, uint32_t *label, float *score,
                                 float *second) {
  if (!strcmp(impl, "portable")) {
    assign_rows(assign4_portable, NULL, p, x, NULL, n, label, score, second);
    return 0;
  }
#ifdef SF_KM_X86
  __builtin_cpu_init();
  int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!strcmp(impl, "avx2") && avx2) {
    assign_rows(assign4_avx2, NULL, p, x, NULL, n, label, score, second);
    return 0;
  }
  if (!strcmp(impl, "avx512") && avx2 && pick_assign8()) {
    assign_rows(assign4_avx2, pick_assign8(), p, x, NULL, n, label, score, second);
    return 0;
  }
#endif
  return -1;
}

/* ---- threads: rows split in contiguous parts, one per thread ------------ */

typedef void (*part_fn)(void *ctx, size_t a, size_t b, size_t part);

typedef struct part_job {
  part_fn fn;
  void *ctx;
  size_t a, b, part;
} part_job;

static void *part_thread(void *arg) {
  part_job *j = arg;
  j->fn(j->ctx, j->a, j->b, j->part);
  return NULL;
}

#define MT_MAX_THREADS 256
#define MT_MIN_ROWS 256 /* fewer rows per thread is not worth a thread */

/* Runs fn over [0, n) in at most nthreads parts (created and joined here;
 * the last part, and any whose thread fails to start, on the caller's
 * thread). Returns the number of parts. */
static size_t run_parts(size_t n, uint32_t nthreads, part_fn fn, void *ctx) {
  size_t t = nthreads > MT_MAX_THREADS ? MT_MAX_THREADS : nthreads;
  if (t > n / MT_MIN_ROWS) t = n / MT_MIN_ROWS;
  if (t <= 1) {
    fn(ctx, 0, n, 0);
    return 1;
  }
  pthread_t tid[MT_MAX_THREADS];
  part_job job[MT_MAX_THREADS];
  size_t started = 0, per = (n + t - 1) / t;
  for (size_t i = 0; i < t; i++) {
    size_t a = i * per < n ? i * per : n, b = a + per < n ? a + per : n;
    job[i] = (part_job){fn, ctx, a, b, i};
    if (i + 1 == t || pthread_create(&tid[started], NULL, part_thread, &job[i]))
      part_thread(&job[i]);
    else
      started++;
  }
  for (size_t i = 0; i < started; i++) pthread_join(tid[i], NULL);
  return t;
}

typedef struct assign_ctx {
  const sf_kmeans_panel *p;
  const float *x;
  uint32_t *label;
  float *score, *second;
} assign_ctx;

static void assign_part(void *ctx, size_t a, size_t b, size_t part) {
  const assign_ctx *c = ctx;
  (void)part;
  assign_rows(pick_assign4(), pick_assign8(), c->p, c->x + a * c->p->dim, NULL, b - a,
              c->label + a, c->score ? c->score + a : NULL,
              c->second ? c->second + a : NULL);
}

static void assign_mt2(const sf_kmeans_panel *p, const float *x, size_t n,
                       uint32_t *label, float *score, float *second, uint32_t nthreads) {
  assign_ctx c = {p, x, label, score, second};
  run_parts(n, nthreads, assign_part, &c);
}

void sf_kmeans_panel_assign_mt(const sf_kmeans_panel *p, const float *x, size_t n,
                               uint32_t *label, float *score, uint32_t nthreads) {
  assign_mt2(p, x, n, label, score, NULL, nthreads);
}

/* One row against one block: out[16] = dot products. */
static void dots1_portable(const float *x, const float *pb, uint32_t dim, float *out) {
  float a[BLK] = {0};
  for (uint32_t j = 0; j < dim; j++)
    for (int t = 0; t < BLK; t++) a[t] += x[j] * pb[(size_t)j * BLK + t];
  memcpy(out, a, sizeof a);
}

#ifdef SF_KM_X86
__attribute__((target("avx2,fma"))) static void dots1_avx2(const float *x,
                                                           const float *pb, uint32_t dim,
                                                           float *out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
  uint32_t j = 0;
  for (; j + 2 <= dim; j += 2) { /* two dimensions at once: 4 chains */
    const float *c = pb + (size_t)j * BLK;
    __m256 v = _mm256_broadcast_ss(x + j), w = _mm256_broadcast_ss(x + j + 1);
    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c), a0);
    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c + 8), a1);
    b0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(c + 16), b0);
    b1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(c + 24), b1);
  }
  if (j < dim) {
    const float *c = pb + (size_t)j * BLK;
    __m256 v = _mm256_broadcast_ss(x + j);
    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c), a0);
    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(c + 8), a1);
  }
  _mm256_storeu_ps(out, _mm256_add_ps(a0, b0));
  _mm256_storeu_ps(out + 8, _mm256_add_ps(a1, b1));
}

/* Two blocks at once (8 chains instead of 4: dots1_avx2 waits on its FMAs'
 * latency), each lane summing as dots1_avx2 does, so the bits are its bits. */
__attribute__((target("avx2,fma"))) static void dots2_avx2(const float *x,
                                                           const float *pb, uint32_t dim,
                                                           float *out) {
  const float *pc = pb + (size_t)dim * BLK;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
  __m256 c0 = a0, c1 = a0, d0 = a0, d1 = a0;
  uint32_t j = 0;
  for (; j + 2 <= dim; j += 2) {
    const size_t o = (size_t)j * BLK;
    __m256 v = _mm256_broadcast_ss(x + j), w = _mm256_broadcast_ss(x + j + 1);
    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pb + o), a0);
    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pb + o + 8), a1);
    b0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(pb + o + 16), b0);
    b1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(pb + o + 24), b1);
    c0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pc + o), c0);
    c1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pc + o + 8), c1);
    d0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(pc + o + 16), d0);
    d1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(pc + o + 24), d1);
  }
  if (j < dim) {
    const size_t o = (size_t)j * BLK;
    __m256 v = _mm256_broadcast_ss(x + j);
    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pb + o), a0);
    a1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pb + o + 8), a1);
    c0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pc + o), c0);
    c1 = _mm256_fmadd_ps(v, _mm256_loadu_ps(pc + o + 8), c1);
  }
  _mm256_storeu_ps(out, _mm256_add_ps(a0, b0));
  _mm256_storeu_ps(out + 8, _mm256_add_ps(a1, b1));
  _mm256_storeu_ps(out + 16, _mm256_add_ps(c0, d0));
  _mm256_storeu_ps(out + 24, _mm256_add_ps(c1, d1));
}

/* AVX-512: four blocks at once, one 16-lane register per block and parity
 * of dimension; every lane adds what dots1_avx2's lane adds, in its order. */
__attribute__((target("avx512f,fma"))) static void dots4_avx512(const float *x,
                                                                const float *pb,
                                                                uint32_t dim,
                                                                float *out) {
  const size_t bs = (size_t)dim * BLK;
  const float *p0 = pb, *p1 = pb + bs, *p2 = p1 + bs, *p3 = p2 + bs;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  uint32_t j = 0;
  for (; j + 2 <= dim; j += 2) {
    const size_t o = (size_t)j * BLK;
    const __m512 v = _mm512_set1_ps(x[j]), w = _mm512_set1_ps(x[j + 1]);
    a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p0 + o), a0);
    a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p1 + o), a1);
    a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p2 + o), a2);
    a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p3 + o), a3);
    b0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(p0 + o + BLK), b0);
    b1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(p1 + o + BLK), b1);
    b2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(p2 + o + BLK), b2);
    b3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(p3 + o + BLK), b3);
  }
  if (j < dim) {
    const size_t o = (size_t)j * BLK;
    const __m512 v = _mm512_set1_ps(x[j]);
    a0 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p0 + o), a0);
    a1 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p1 + o), a1);
    a2 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p2 + o), a2);
    a3 = _mm512_fmadd_ps(v, _mm512_loadu_ps(p3 + o), a3);
  }
  _mm512_storeu_ps(out, _mm512_add_ps(a0, b0));
  _mm512_storeu_ps(out + BLK, _mm512_add_ps(a1, b1));
  _mm512_storeu_ps(out + 2 * BLK, _mm512_add_ps(a2, b2));
  _mm512_storeu_ps(out + 3 * BLK, _mm512_add_ps(a3, b3));
}
#endif

typedef void (*dots_fn)(const float *, const float *, uint32_t, float *);

/* The panel kernels of one query: dots1 for one block, dotsN for `group`
 * blocks at once (the same bits as dots1, block by block). */
typedef struct dots_kernels {
  dots_fn dots1, dotsn;
  uint32_t group;
} dots_kernels;

static dots_kernels pick_dots(void) {
  dots_kernels k = {dots1_portable, NULL, 1};
#ifdef SF_KM_X86
  if (pick_assign4() != assign4_portable) {
    k.dots1 = dots1_avx2;
    k.dotsn = dots2_avx2;
    k.group = 2;
    if (pick_assign8()) {
      k.dotsn = dots4_avx512;
      k.group = 4;
    }
  }
#endif
  return k;
}

static void panel_scores_with(const dots_kernels *kn, const sf_kmeans_panel *p,
                              const float *x, float *out) {
  const float f = p->ip ? -1.0f : -2.0f;
  float tmp[4 * BLK];
  uint32_t b = 0;
  while (b < p->nblk) {
    uint32_t g = kn->dotsn && b + kn->group <= p->nblk ? kn->group : 1;
    if (g > 1)
      kn->dotsn(x, p->data + (size_t)b * p->dim * BLK, p->dim, tmp);
    else
      kn->dots1(x, p->data + (size_t)b * p->dim * BLK, p->dim, tmp);
    for (uint32_t t = 0; t < g * BLK && b * BLK + t < p->k; t++)
      out[b * BLK + t] = p->bias[b * BLK + t] + f * tmp[t];
    b += g;
  }
}

void sf_kmeans_panel_scores(const sf_kmeans_panel *p, const float *x, float *out) {
  const dots_kernels kn = pick_dots();
  panel_scores_with(&kn, p, x, out);
}

int sf_kmeans_panel_scores_named(const char *impl, const sf_kmeans_panel *p,
                                 const float *x, float *out) {
  dots_kernels kn = {dots1_portable, NULL, 1};
  if (!strcmp(impl, "portable")) {
    /* as set */
#ifdef SF_KM_X86
  } else if (!strcmp(impl, "avx2") && pick_assign4() != assign4_portable) {
    kn = (dots_kernels){dots1_avx2, NULL, 1};
  } else if (!strcmp(impl, "avx2x2") && pick_assign4() != assign4_portable) {
    kn = (dots_kernels){dots1_avx2, dots2_avx2, 2};
  } else if (!strcmp(impl, "avx512") && pick_assign8()) {
    kn = (dots_kernels){dots1_avx2, dots4_avx512, 4};
#endif
  } else {
    return 0;
  }
  panel_scores_with(&kn, p, x, out);
  return 1;
}

/* ---- training ------------------------------------------------------------- */

void sf_kmeans_sample(uint64_t seed, size_t n, size_t m, size_t *idx) {
  sf_rng r;
  sf_rng_seed(&r, seed);
  size_t got = 0;
  for (size_t i = 0; i < n && got < m; i++)
    if (sf_rng_below(&r, n - i) < m - got) idx[got++] = i;
}

static void normalize(float *v, uint32_t dim) {
  float nrm = sqrtf(sf_dist_dot(v, v, dim));
  if (nrm > 0)
    for (uint32_t j = 0; j < dim; j++) v[j] /= nrm;
}

/* PQ sub-vectors have 1..8 dimensions, where the call through the kernel
 * pointer costs more than the arithmetic; k-means++ does k*n of these. */
static inline float l2_any(const float *a, const float *b, uint32_t dim) {
  if (dim >= 16) return sf_dist_l2sq(a, b, dim);
  float s = 0;
  for (uint32_t j = 0; j < dim; j++) {
    float t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

/* k-means++ (Arthur & Vassilvitskii): each next seed is a row drawn with
 * probability proportional to its squared distance to the nearest seed so
 * far, which spreads the seeds over the clusters. Needs n >= k. */
static sf_code seed_kmeanspp(sf_rng *r, const float *x, size_t n, uint32_t dim,
                             uint32_t k, float *c, sf_err *err) {
  double *d2 = malloc(sizeof(double) * n);
  if (!d2) return sf_err_set(err, SF_ENOMEM, "out of memory seeding k-means");
  size_t first = sf_rng_below(r, n);
  memcpy(c, x + first * dim, sizeof(float) * dim);
  double total = 0;
  for (size_t i = 0; i < n; i++) total += d2[i] = l2_any(x + i * dim, c, dim);
  for (uint32_t s = 1; s < k; s++) {
    size_t pick = 0;
    if (total > 0) {
      /* The last row with weight wins when rounding leaves u unreached. */
      double u = sf_rng_uniform(r) * total, acc = 0;
      for (size_t i = 0; i < n; i++) {
        if (d2[i] <= 0) continue;
        pick = i;
        if ((acc += d2[i]) > u) break;
      }
    } else {
      pick = sf_rng_below(r, n); /* all rows coincide with seeds */
    }
    float *cs = c + (size_t)s * dim;
    memcpy(cs, x + pick * dim, sizeof(float) * dim);
    total = 0;
    for (size_t i = 0; i < n; i++) {
      double v = l2_any(x + i * dim, cs, dim);
      if (v < d2[i]) d2[i] = v;
      total += d2[i];
    }
  }
  free(d2);
  return SF_OK;
}

/* Random rows are distinct rows, not distinct points: on PQ sub-vectors of
 * Fashion-MNIST's residuals (blank pixels), 256 random rows held 97-256
 * distinct values (median 218). A duplicated seed is an empty cluster after
 * the first assignment; this redraws it (4 draws per seed in all, at most),
 * and keeps it when the rows have too few distinct values. */
static void distinct_seeds(sf_rng *r, const float *x, size_t n, uint32_t dim, uint32_t k,
                           float *c) {
  size_t tries = 4 * (size_t)k;
  for (size_t i = 1; i < k; i++)
    for (;;) {
      size_t e = 0;
      while (e < i && memcmp(c + e * dim, c + i * dim, sizeof(float) * dim)) e++;
      if (e == i || !tries) break;
      tries--;
      memcpy(c + i * dim, x + sf_rng_below(r, n) * dim, sizeof(float) * dim);
    }
}

static sf_code seed(sf_rng *r, const float *x, size_t n, uint32_t dim, uint32_t k,
                    float *c, int random_init, sf_err *err) {
  size_t m = (size_t)k * SEED_ROWS_PER_CENTROID;
  if (m > n) m = n;
  if ((double)m * k * dim > (double)SEED_BUDGET) m = k; /* too big: random rows */
  if (random_init) m = k;
  size_t *idx = malloc(sizeof(size_t) * m);
  if (!idx) return sf_err_set(err, SF_ENOMEM, "out of memory seeding k-means");
  sf_kmeans_sample(sf_rng_next(r), n, m, idx);
  sf_code rc = SF_OK;
  if (m == k) {
    for (size_t i = 0; i < m; i++)
      memcpy(c + i * dim, x + idx[i] * dim, sizeof(float) * dim);
    if ((double)k * k * dim <= (double)SEED_BUDGET) distinct_seeds(r, x, n, dim, k, c);
  } else {
    float *sub = malloc(sizeof(float) * m * dim);
    if (sub) {
      for (size_t i = 0; i < m; i++)
        memcpy(sub + i * dim, x + idx[i] * dim, sizeof(float) * dim);
      rc = seed_kmeanspp(r, sub, m, dim, k, c, err);
      free(sub);
    } else {
      rc = sf_err_set(err, SF_ENOMEM, "out of memory seeding k-means");
    }
  }
  free(idx);
  return rc;
}

/* Gives every empty cluster half of another one: a copy of its centroid,
 * both nudged apart in opposite directions, so that the next assignment
 * splits that cluster's rows between them. As FAISS does, the cluster split
 * is drawn with probability (size - 1) / (n - k), not always the largest:
 * on PQ codebooks, where the random seeds leave tens of clusters empty,
 * always splitting the largest piled the repaired codes into the densest
 * region (Fashion-MNIST, m=98: recall@10 0.005 below FAISS's, now 0.001-0.002
 * with distinct_seeds). */
static uint32_t repair_empty(float *c, size_t *count, uint32_t k, uint32_t dim,
                             int spherical, size_t n, sf_rng *r) {
  uint32_t repaired = 0;
  for (uint32_t e = 0; e < k; e++) {
    if (count[e]) continue;
    uint32_t big = 0;
    for (uint32_t j = 1; j < k; j++)
      if (count[j] > count[big]) big = j;
    if (count[big] < 2) break; /* nothing left to split */
    if (n > k) /* FAISS's choice: cluster j with probability (size - 1) / (n - k) */
      for (uint32_t j = 0;; j = (j + 1) % k)
        if (sf_rng_uniform(r) < ((double)count[j] - 1.0) / (double)(n - k)) {
          big = j;
          break;
        }
    float *ce = c + (size_t)e * dim, *cb = c + (size_t)big * dim;
    for (uint32_t j = 0; j < dim; j++) {
      float v = cb[j];
      ce[j] = v * (j % 2 ? 1 - SPLIT_EPS : 1 + SPLIT_EPS);
      cb[j] = v * (j % 2 ? 1 + SPLIT_EPS : 1 - SPLIT_EPS);
    }
    if (spherical) {
      normalize(ce, dim);
      normalize(cb, dim);
    }
    count[e] = count[big] / 2;
    count[big] -= count[e];
    repaired++;
  }
  return repaired;
}

static double objective(const float *score, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += score[i];
  return s;
}

/* s[j] += v[j] in float64: the update's sums. Each element gets the same
 * additions in the same order either way, so both give the same bits. */
static void add_row_portable(double *s, const float *v, uint32_t dim) {
  for (uint32_t j = 0; j < dim; j++) s[j] += v[j];
}

#ifdef SF_KM_X86
__attribute__((target("avx2,fma"))) static void add_row_avx2(double *s, const float *v,
                                                             uint32_t dim) {
  uint32_t j = 0;
  for (; j + 8 <= dim; j += 8) {
    __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(v + j));
    __m256d b = _mm256_cvtps_pd(_mm_loadu_ps(v + j + 4));
    _mm256_storeu_pd(s + j, _mm256_add_pd(_mm256_loadu_pd(s + j), a));
    _mm256_storeu_pd(s + j + 4, _mm256_add_pd(_mm256_loadu_pd(s + j + 4), b));
  }
  for (; j < dim; j++) s[j] += v[j];
}
#endif

/* ---- bounded Lloyd iterations ---------------------------------------------
 *
 * Hamerly's bounds (2010, "Making k-means even faster") with the lower
 * bound kept per group of centroids, as Yinyang k-means does (Ding et al.
 * 2015); a group is a run of consecutive panel blocks (one block of 16 for
 * k <= 256, MAX_GROUPS groups at most). Per row: upper[i] >= the distance
 * (Euclidean, not squared) to its centroid; lower[i*ng + g] <= the distance
 * to every centroid of group g but the row's own. After an update moves
 * centroid c by delta[c], upper grows by its centroid's shift and each
 * group's lower bound shrinks by the group's largest shift; half[c] <= half
 * the distance from c to its nearest other centroid gives one more bound,
 * 2*half[a] - upper (triangle inequality). A row whose bounds prove that
 * the kernel would pick its centroid again is skipped; the others have
 * their upper bound tightened to the exact distance and are tested again;
 * the rest are scanned against their own group and the groups whose bound
 * fails, a list of rows per group so the kernel still batches 8 (AVX-512)
 * or 4 rows per pass. With a single bound (Hamerly alone) 77-79% of the
 * rows were still scanned at dim 784, k=256: one far-moving centroid
 * lowers every row's bound.
 *
 * Exactly the labels of plain Lloyd: the kernel ranks by the expanded form
 * ||x||^2 - 2 x.c + ||c||^2 in float, whose error (Higham's summation bound,
 * any order of the d products) is at most gamma0 * (||x|| + ||c||)^2 with
 * gamma0 = (d + 4) * 2^-24, the 4 for the bias, the fused multiply-add and
 * the added ||x||^2. That bound is relative and holds only without
 * underflow: where squares are subnormal (rows of about 1e-20 and below),
 * each product or FMA may also lose up to 2^-150 absolutely, at most 3d + 1
 * of them per score (the kernel's d, ||c||^2's d, ||x||^2's d and the
 * bias), so every score's error bound also carries abserr =
 * SLACK_MUL * (3d + 8) * 2^-149, as do the direct distances that tighten
 * and move the bounds (a shift whose squares underflowed to 0 is not taken
 * for no shift: only equal bits are). A row or group is skipped only when its bounds put
 * the other centroids more than twice that above its own in squared distance, so rounding
 * cannot make the kernel choose differently: no near-tie is ever decided by the bounds.
 * The slack used is SLACK_MUL * gamma0 (the bound is proven; the factor covers roundings
 * not counted; on Fashion-MNIST with a single Hamerly bound the slack took the rows
 * scanned from 0.774 to 0.788); bounds are rounded outward after every float operation. A
 * row's kernel scores do not depend on which rows or blocks share its pass, so the
 * labels, hence the sums and centroids, are plain Lloyd's bit for bit.
 *
 * Memory: upper, squared norms and the group lower bounds, (2 + ng) * n
 * floats (ng <= MAX_GROUPS) on top of plain Lloyd's; a copy of the
 * centroids and O(k) shifts and half-distances; per thread a tile of
 * BOUND_TILE rows' work (about 60 KiB). */

#define SLACK_MUL 2.0f
#define MAX_GROUPS 16
#define BOUND_TILE 256
/* The first iterations, where centroids move most and nearly every row is
 * scanned anyway, run whole-panel passes, the kernel's fastest path: 2 was
 * 3-4% faster than 0 or 1 at 10 iterations on Fashion-MNIST, even at 20. */
#define WHOLE_ITERS 2

static inline float round_up(float v) { /* v >= 0, or NaN */
  return v * (1.0f + 0x1p-21f);
}
static inline float round_dn(float v) { /* max(v, 0), rounded down */
  return v > 0 ? v * (1.0f - 0x1p-21f) : 0.0f;
}

typedef struct bound_ctx {
  const sf_kmeans_panel *p;
  const float *x, *c;       /* rows; centroids */
  uint32_t dim, k, ng, bpg; /* groups; blocks per group */
  const float *delta;       /* k shifts of the last update, rounded up */
  float gdelta[MAX_GROUPS]; /* the largest shift in each group */
  const float *half;        /* k: half the distance to the nearest other centroid */
  float cmax;               /* the largest centroid norm, rounded up */
  float gamma;              /* relative error bound of the kernel's scores */
  float abserr;             /* absolute error bound of a score from underflow */
  const float *xx;          /* squared row norms, as the kernel computes them */
  size_t n;                 /* rows */
  uint32_t *label;
  float *upper, *lower;
  double work[MT_MAX_THREADS]; /* rows scanned, in whole-panel rows */
  int changed[MT_MAX_THREADS];
} bound_ctx;

/* Twice the kernel's error bound for row i: the margin a skip needs. */
static inline double skip_margin(const bound_ctx *b, size_t i) {
  double r = sqrt((double)b->xx[i] * (1 + b->gamma) + b->abserr) + b->cmax;
  return 2.0 * (b->gamma * r * r * (1 + 1e-6) + b->abserr);
}

/* lo <= every other distance, u >= the own one: far enough apart? NaN
 * anywhere compares false, so such rows are scanned. */
static inline int apart(double lo, float u, double margin) {
  return lo * lo - (double)u * u > margin;
}

typedef struct bound_tile {
  uint32_t rows[BOUND_TILE], mask[BOUND_TILE], lst[BOUND_TILE], pos[BOUND_TILE];
  float gb[BOUND_TILE], gs[BOUND_TILE];
  uint32_t ga[BOUND_TILE];
  float tb[BOUND_TILE * MAX_GROUPS], ts[BOUND_TILE * MAX_GROUPS];
  uint32_t ta[BOUND_TILE * MAX_GROUPS];
} bound_tile;

/* Scans the tile's rows against their groups, then takes the winner and
 * the new bounds. Returns whether a label changed. */
static int tile_flush(bound_ctx *b, bound_tile *t, size_t m, double *work) {
  const uint32_t ng = b->ng;
  for (uint32_t g = 0; g < ng; g++) {
    size_t cnt = 0;
    for (size_t r = 0; r < m; r++)
      if (t->mask[r] >> g & 1) {
        t->lst[cnt] = t->rows[r];
        t->pos[cnt++] = (uint32_t)r;
      }
    if (!cnt) continue;
    uint32_t blo = g * b->bpg,
             bhi = blo + b->bpg < b->p->nblk ? blo + b->bpg : b->p->nblk;
    assign_blocks(b->p, b->x, t->lst, cnt, blo, bhi, t->gb, t->ga, t->gs);
    for (size_t q = 0; q < cnt; q++) {
      size_t o = (size_t)t->pos[q] * ng + g;
      t->tb[o] = t->gb[q];
      t->ta[o] = t->ga[q];
      t->ts[o] = t->gs[q];
    }
    *work += (double)cnt * (bhi - blo) / b->p->nblk;
  }
  int changed = 0;
  for (size_t r = 0; r < m; r++) {
    const size_t i = t->rows[r];
    const uint32_t mask = t->mask[r];
    float *tb = t->tb + r * ng, *ts = t->ts + r * ng;
    /* Groups not scanned cannot win. The smallest raw score, the lowest
     * index on a tie: groups are in index order, so the first group
     * holding the minimum wins (branch-free: the masks are random). */
    float s = INFINITY;
    for (uint32_t g = 0; g < ng; g++) {
      tb[g] = mask >> g & 1 ? tb[g] : INFINITY;
      s = tb[g] < s ? tb[g] : s;
    }
    uint32_t wg = ng;
    for (uint32_t g = ng; g-- > 0;) wg = tb[g] == s ? g : wg;
    uint32_t arg = wg < ng ? t->ta[r * ng + wg] : UINT32_MAX;
    if (arg >= b->k) arg = 0; /* not reached: non-finite rows are not here */
    changed |= b->label[i] != arg;
    b->label[i] = arg;
    const float xxi = b->xx[i], e = (float)(skip_margin(b, i) / 2);
    float sc = s + xxi;
    sc = sc < 0 ? 0 : sc;
    b->upper[i] = round_up(sqrtf(round_up(sc + e)));
    if (wg < ng) tb[wg] = ts[wg]; /* the winner's group: its second */
    float *lb = b->lower + i * ng;
    for (uint32_t g = 0; g < ng; g++) {
      float v = round_dn(sqrtf(round_dn(tb[g] + xxi - e)));
      lb[g] = mask >> g & 1 ? v : lb[g];
    }
  }
  return changed;
}

static void bound_part(void *ctx, size_t a0, size_t b0, size_t part) {
  bound_ctx *b = ctx;
  const uint32_t d = b->dim, ng = b->ng;
  bound_tile *t = malloc(sizeof *t);
  double work = 0;
  int changed = 0;
  size_t m = 0;
  for (size_t i = a0; i < b0; i++) {
    const uint32_t a = b->label[i];
    const double margin = skip_margin(b, i);
    float *lb = b->lower + i * ng;
    if (!t || !(margin < 1e30)) { /* non-finite rows (or no memory): whole panel */
      uint32_t row = (uint32_t)i;
      assign_rows(pick_assign4(), pick_assign8(), b->p, b->x, &row, 1, b->label, NULL,
                  NULL);
      changed |= a != b->label[i];
      b->upper[i] = INFINITY; /* scanned again next time */
      for (uint32_t g = 0; g < ng; g++) lb[g] = 0;
      work += 1;
      continue;
    }
    float u = round_up(b->upper[i] + b->delta[a]), l = INFINITY;
    for (uint32_t g = 0; g < ng; g++) {
      lb[g] = round_dn(lb[g] - b->gdelta[g]);
      l = lb[g] < l ? lb[g] : l;
    }
    double lo = 2.0 * b->half[a] - u;
    if (apart(lo > l ? lo : l, u, margin)) {
      b->upper[i] = u;
      continue;
    }
    float e = l2_any(b->x + i * d, b->c + (size_t)a * d, d); /* tighten */
    u = round_up(sqrtf(round_up(e * (1 + b->gamma) + b->abserr)));
    b->upper[i] = u;
    lo = 2.0 * b->half[a] - u;
    if (apart(lo > l ? lo : l, u, margin)) continue;
    uint32_t mask = 1u << (a / BLK / b->bpg);
    for (uint32_t g = 0; g < ng; g++)
      if (!apart(lo > lb[g] ? lo : lb[g], u, margin)) mask |= 1u << g;
    t->rows[m] = (uint32_t)i;
    t->mask[m++] = mask;
    if (m == BOUND_TILE) {
      changed |= tile_flush(b, t, m, &work);
      m = 0;
    }
  }
  if (m) changed |= tile_flush(b, t, m, &work);
  free(t);
  b->changed[part] = changed;
  b->work[part] = work;
}

/* Shifts of the centroids (c_old to c), the largest per group, the largest
 * norm and the half-distances to the nearest other centroid (the kernel run
 * on the centroids themselves: k*k*dim, small beside the n*k*dim it
 * saves). */
static void bound_centroids(bound_ctx *b, const float *c_old, float *delta, float *half,
                            uint32_t *lab, float *s1, float *s2) {
  const uint32_t d = b->dim, k = b->k;
  for (uint32_t g = 0; g < b->ng; g++) b->gdelta[g] = 0;
  float cmax = 0;
  for (uint32_t j = 0; j < k; j++) {
    const float *cj = b->c + (size_t)j * d;
    float e = c_old ? l2_any(cj, c_old + (size_t)j * d, d) : 0;
    /* e == 0 may be a shift whose squares underflowed: only equal bits
     * are no shift */
    int same = !c_old || !memcmp(cj, c_old + (size_t)j * d, sizeof(float) * d);
    delta[j] = same ? 0 : round_up(sqrtf(round_up(e * (1 + b->gamma) + b->abserr)));
    float *gd = &b->gdelta[j / BLK / b->bpg];
    if (!(delta[j] <= *gd)) *gd = delta[j]; /* NaN too: it then poisons the bounds */
    float nn = sqrtf(round_up(sf_dist_dot(cj, cj, d) * (1 + b->gamma) + b->abserr));
    if (!(nn <= cmax)) cmax = nn;
  }
  b->cmax = round_up(cmax);
  assign_rows(pick_assign4(), pick_assign8(), b->p, b->c, NULL, k, lab, s1, s2);
  for (uint32_t j = 0; j < k; j++) {
    /* The nearest other centroid scored at least the second smallest when
     * j won its own row, else at least the smallest. */
    float v = lab[j] == j ? s2[j] : s1[j];
    const float *cj = b->c + (size_t)j * d;
    float r =
        b->cmax + sqrtf(round_up(sf_dist_dot(cj, cj, d) * (1 + b->gamma) + b->abserr));
    float e = b->gamma * round_up(r * r) + b->abserr;
    half[j] = round_dn(sqrtf(round_dn(v - round_up(e))) * 0.5f);
  }
}

#ifdef SF_KM_X86
/* 16 floats a pass; the same additions per element, so the same bits. */
__attribute__((target("avx512f"))) static void add_row_avx512(double *s, const float *v,
                                                              uint32_t dim) {
  uint32_t j = 0;
  for (; j + 16 <= dim; j += 16) {
    __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(v + j));
    __m512d b = _mm512_cvtps_pd(_mm256_loadu_ps(v + j + 8));
    _mm512_storeu_pd(s + j, _mm512_add_pd(_mm512_loadu_pd(s + j), a));
    _mm512_storeu_pd(s + j + 8, _mm512_add_pd(_mm512_loadu_pd(s + j + 8), b));
  }
  for (; j < dim; j++) s[j] += v[j];
}
#endif

static void update_centroids(void (*add_row)(double *, const float *, uint32_t),
                             const float *xs, size_t n, uint32_t dim, uint32_t k,
                             const uint32_t *label, double *sum, size_t *count, float *c,
                             int spherical) {
  memset(sum, 0, sizeof(double) * k * dim);
  memset(count, 0, sizeof(size_t) * k);
  for (size_t i = 0; i < n; i++) {
    add_row(sum + (size_t)label[i] * dim, xs + i * dim, dim);
    count[label[i]]++;
  }
  for (uint32_t ci = 0; ci < k; ci++) {
    if (!count[ci]) continue;
    float *cc = c + (size_t)ci * dim;
    for (uint32_t j = 0; j < dim; j++)
      cc[j] = (float)(sum[(size_t)ci * dim + j] / count[ci]);
    if (spherical) normalize(cc, dim);
  }
}

/* A whole-panel pass (the kernel's fastest path) that gives every group
 * the bound of the second nearest centroid; score[n] receives the scores. */
static void full_pass(bound_ctx *bc, float *score, uint32_t nthreads) {
  const size_t n = bc->n;
  const uint32_t ng = bc->ng;
  assign_mt2(bc->p, bc->x, n, bc->label, score, bc->upper, nthreads);
  for (size_t i = 0; i < n; i++) {
    const float e = (float)(skip_margin(bc, i) / 2);
    float l = round_dn(sqrtf(round_dn(bc->upper[i] - e)));
    bc->upper[i] = round_up(sqrtf(round_up(score[i] + e)));
    for (uint32_t g = 0; g < ng; g++) bc->lower[i * ng + g] = l;
  }
}

static int use_bounds(const sf_kmeans_params *p, size_t n, uint32_t dim) {
  if (p->spherical || p->iters == 0 || n >= UINT32_MAX) return 0;
  if (p->lloyd == SF_KMEANS_BOUNDED) return 1;
  if (p->lloyd == SF_KMEANS_PLAIN) return 0;
  return dim >= SF_KMEANS_BOUNDS_MIN_DIM;
}

/* Lloyd iterations on the sample xs[n]; c holds the seeds on entry. */
static sf_code lloyd(const sf_kmeans_params *p, const float *xs, size_t n, uint32_t dim,
                     float *c, sf_kmeans_stats *st, sf_err *err) {
  const uint32_t k = p->k;
  const int bounded = use_bounds(p, n, dim);
  void (*add_row)(double *, const float *, uint32_t) = add_row_portable;
#ifdef SF_KM_X86
  if (pick_assign4() == assign4_avx2) add_row = add_row_avx2;
  if (pick_assign8()) add_row = add_row_avx512;
#endif
  sf_rng rr;
  sf_rng_seed(&rr, p->seed ^ 0x9e3779b97f4a7c15ull);
  sf_kmeans_panel panel;
  sf_code rc = sf_kmeans_panel_init(&panel, c, k, dim, p->spherical, err);
  if (rc) return rc;
  const uint32_t bpg = (panel.nblk + MAX_GROUPS - 1) / MAX_GROUPS,
                 ng = (panel.nblk + bpg - 1) / bpg;
  bound_ctx *bc = NULL;
  uint32_t *label = malloc(sizeof(uint32_t) * n), *prev = NULL;
  float *score = malloc(sizeof(float) * n);
  double *sum = malloc(sizeof(double) * k * dim);
  size_t *count = malloc(sizeof(size_t) * k);
  float *upper = NULL, *lower = NULL, *xx = NULL, *c_old = NULL, *kbuf = NULL;
  uint32_t *klab = NULL;
  if (bounded) {
    bc = calloc(1, sizeof *bc);
    upper = malloc(sizeof(float) * n);
    lower = malloc(sizeof(float) * n * ng);
    xx = malloc(sizeof(float) * n);
    c_old = malloc(sizeof(float) * k * dim);
    kbuf = malloc(sizeof(float) * 4 * (size_t)k);
    klab = malloc(sizeof(uint32_t) * k);
  }
  prev = malloc(sizeof(uint32_t) * n);
  if (!label || !score || !sum || !count || !prev ||
      (bounded && (!bc || !upper || !lower || !xx || !c_old || !kbuf || !klab))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory training k-means (k=%u, %zu rows)", k,
                    n);
    goto done;
  }
  st->bounded = bounded;
  if (bounded) {
    *bc = (bound_ctx){.p = &panel,
                      .x = xs,
                      .c = c,
                      .dim = dim,
                      .k = k,
                      .ng = ng,
                      .bpg = bpg,
                      .delta = kbuf,
                      .half = kbuf + k,
                      .gamma = SLACK_MUL * (float)(dim + 4) * 0x1p-24f,
                      .abserr = SLACK_MUL * (float)(3 * (uint64_t)dim + 8) * 0x1p-149f,
                      .xx = xx,
                      .n = n,
                      .label = label,
                      .upper = upper,
                      .lower = lower};
    for (size_t i = 0; i < n; i++) xx[i] = sf_dist_dot(xs + i * dim, xs + i * dim, dim);
    bound_centroids(bc, NULL, kbuf, kbuf + k, klab, kbuf + 2 * k, kbuf + 3 * k);
    full_pass(bc, score, p->nthreads);
  } else {
    sf_kmeans_panel_assign_mt(&panel, xs, n, label, score, p->nthreads);
  }
  st->obj_init = st->obj_final = objective(score, n);
  for (uint32_t it = 0; it < p->iters; it++) {
    if (bounded) memcpy(c_old, c, sizeof(float) * k * dim);
    update_centroids(add_row, xs, n, dim, k, label, sum, count, c, p->spherical);
    st->repairs += repair_empty(c, count, k, dim, p->spherical, n, &rr);
    panel_fill(&panel, c);
    int changed = 0;
    if (bounded) {
      bound_centroids(bc, c_old, kbuf, kbuf + k, klab, kbuf + 2 * k, kbuf + 3 * k);
      if (it < WHOLE_ITERS) {
        for (size_t i = 0; i < n; i++) prev[i] = label[i];
        full_pass(bc, score, p->nthreads);
        changed = memcmp(prev, label, sizeof(uint32_t) * n) != 0;
        st->rows_scanned += n;
        st->iters_run = it + 1;
        if (!changed) break;
        continue;
      }
      size_t parts = run_parts(n, p->nthreads, bound_part, bc);
      double work = 0;
      for (size_t t = 0; t < parts; t++) {
        changed |= bc->changed[t];
        work += bc->work[t];
      }
      st->rows_scanned += (uint64_t)(work + 0.5);
    } else {
      memcpy(prev, label, sizeof(uint32_t) * n);
      sf_kmeans_panel_assign_mt(&panel, xs, n, label, score, p->nthreads);
      st->obj_final = objective(score, n);
      st->rows_scanned += n;
      changed = memcmp(prev, label, sizeof(uint32_t) * n) != 0;
    }
    st->iters_run = it + 1;
    if (!changed) break; /* a fixpoint */
  }
  if (bounded && st->iters_run) { /* what the kernel's scores would sum to */
    double s = 0;
    for (size_t i = 0; i < n; i++)
      s += l2_any(xs + i * dim, c + (size_t)label[i] * dim, dim);
    st->obj_final = s;
  }
done:
  sf_kmeans_panel_free(&panel);
  free(label);
  free(prev);
  free(score);
  free(sum);
  free(count);
  free(bc);
  free(upper);
  free(lower);
  free(xx);
  free(c_old);
  free(kbuf);
  free(klab);
  return rc;
}

sf_code sf_kmeans_train(const sf_kmeans_params *p, const float *x, size_t n, uint32_t dim,
                        float *centroids, sf_kmeans_stats *stats, sf_err *err) {
  if (p->k == 0 || dim == 0)
    return sf_err_set(err, SF_EINVAL, "k-means needs k >= 1 and dim >= 1 (k=%u, dim=%u)",
                      p->k, dim);
  if (n < p->k)
    return sf_err_set(err, SF_EINVAL,
                      "k-means with k=%u needs at least %u training rows, got %zu: "
                      "give more vectors or ask for fewer clusters",
                      p->k, p->k, n);
  sf_kmeans_stats st_local;
  sf_kmeans_stats *st = stats ? stats : &st_local;
  memset(st, 0, sizeof *st);
  uint64_t cap = p->max_rows ? p->max_rows : (uint64_t)p->k * SF_KMEANS_DEFAULT_MAX_PPC;
  if (cap < p->k) cap = p->k;
  sf_rng r;
  sf_rng_seed(&r, p->seed);
  const float *xs = x;
  float *owned = NULL;
  if (n > cap) {
    /* The sample is a copy, so the iterations walk contiguous memory. */
    size_t m = (size_t)cap, *idx = malloc(sizeof(size_t) * m);
    owned = malloc(sizeof(float) * m * dim);
    if (!idx || !owned) {
      free(idx);
      free(owned);
      return sf_err_set(err, SF_ENOMEM, "out of memory sampling %zu training rows", m);
    }
    sf_kmeans_sample(sf_rng_next(&r), n, m, idx);
    for (size_t i = 0; i < m; i++)
      memcpy(owned + i * dim, x + idx[i] * dim, sizeof(float) * dim);
    free(idx);
    xs = owned;
    n = m;
  }
  st->rows_used = n;
  sf_code rc = seed(&r, xs, n, dim, p->k, centroids, p->random_init, err);
  if (!rc && p->spherical)
    for (uint32_t ci = 0; ci < p->k; ci++) normalize(centroids + (size_t)ci * dim, dim);
  if (!rc) rc = lloyd(p, xs, n, dim, centroids, st, err);
  free(owned);
  return rc;
}
