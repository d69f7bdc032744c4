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
 * reduces the 16 lanes at the end, so the hot loop has no branches). */
static void assign4_portable(const sf_kmeans_panel *p, const float *const xr[4],
                             uint32_t b0, uint32_t b1, float *best, uint32_t *blk) {
  const float f = p->ip ? -1.0f : -2.0f;
  float out[4 * BLK];
  for (uint32_t b = b0; b < b1; b++) {
    dots4_portable(xr[0], xr[1], xr[2], xr[3], p->data + (size_t)b * p->dim * BLK, p->dim,
                   out);
    const float *bias = p->bias + (size_t)b * BLK;
    for (int l = 0; l < 4 * BLK; l++) {
      float v = bias[l % BLK] + f * out[l];
      if (v < best[l]) {
        best[l] = v;
        blk[l] = b;
      }
    }
  }
}

#ifdef SF_KM_X86
/* Folds 8 lanes of dot products into the running minimum at best/blk. */
#define SF_KM_FOLD(acc, off, bias)                                                  \
  do {                                                                              \
    __m256 sc_ = _mm256_fmadd_ps(f, acc, bias);                                     \
    __m256 bs_ = _mm256_loadu_ps(best + (off));                                     \
    __m256 lt_ = _mm256_cmp_ps(sc_, bs_, _CMP_LT_OQ);                               \
    __m256i ag_ = _mm256_loadu_si256((const __m256i *)(const void *)(blk + (off))); \
    _mm256_storeu_ps(best + (off), _mm256_blendv_ps(bs_, sc_, lt_));                \
    _mm256_storeu_si256((__m256i *)(void *)(blk + (off)),                           \
                        _mm256_blendv_epi8(ag_, bi, _mm256_castps_si256(lt_)));     \
  } while (0)

/* Eight independent accumulators (named, so they live in registers) hide
 * the FMA latency; the running minimum stays in L1 and is folded once per
 * block with compare-and-blend. */
__attribute__((target("avx2,fma"))) static void assign4_avx2(const sf_kmeans_panel *p,
                                                             const float *const xr[4],
                                                             uint32_t b0, uint32_t b1,
                                                             float *best, uint32_t *blk) {
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
  } while (0)

/* AVX-512: 8 rows against 2 blocks (32 centroids) per pass, 16 FMAs on 16
 * accumulators per dimension, so a panel line read from cache serves 8
 * rows. Every lane sums the same products in the same order as
 * assign4_avx2's, and blocks fold in the same order, so the labels and
 * scores are bit for bit those of the AVX2 kernel. */
__attribute__((target("avx512f,fma"))) static void assign8_avx512(
    const sf_kmeans_panel *p, const float *const xr[8], uint32_t b0, uint32_t b1,
    float *best, uint32_t *blk) {
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
  for (; b < b1; b++) { /* an odd last block */
    const float *pa = p->data + (size_t)b * dim * BLK;
    __m512 a[8];
    for (int r = 0; r < 8; r++) a[r] = _mm512_setzero_ps();
    for (uint32_t j = 0; j < dim; j++) {
      const __m512 u = _mm512_loadu_ps(pa + (size_t)j * BLK);
      for (int r = 0; r < 8; r++)
        a[r] = _mm512_fmadd_ps(_mm512_set1_ps(xr[r][j]), u, a[r]);
    }
    const __m512 ba = _mm512_loadu_ps(p->bias + (size_t)b * BLK);
    const __m512i ia = _mm512_set1_epi32((int)b);
    for (int r = 0; r < 8; r++) SF_KM_FOLD16(a[r], r * BLK, ba, ia);
  }
}
#undef SF_KM_FOLD16
#endif

typedef void (*assign4_fn)(const sf_kmeans_panel *, const float *const[4], uint32_t,
                           uint32_t, float *, uint32_t *);
typedef void (*assign8_fn)(const sf_kmeans_panel *, const float *const[8], uint32_t,
                           uint32_t, float *, uint32_t *);

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

static void assign_with(assign4_fn assign4, assign8_fn assign8, const sf_kmeans_panel *p,
                        const float *x, size_t n, uint32_t *label, float *score) {
  const size_t d = p->dim, grp = assign8 ? 8 : 4;
  const size_t blk_bytes = sizeof(float) * BLK * d;
  const uint32_t chunk =
      blk_bytes >= CHUNK_BYTES ? 1 : (uint32_t)(CHUNK_BYTES / blk_bytes);
  float best[TILE_ROWS * BLK];
  uint32_t blk[TILE_ROWS * BLK];
  for (size_t i0 = 0; i0 < n; i0 += TILE_ROWS) {
    size_t rows = n - i0 < TILE_ROWS ? n - i0 : TILE_ROWS;
    for (size_t l = 0; l < rows * BLK + 8 * BLK && l < TILE_ROWS * BLK; l++) {
      best[l] = INFINITY;
      blk[l] = 0;
    }
    for (uint32_t b0 = 0; b0 < p->nblk; b0 += chunk) {
      uint32_t b1 = p->nblk - b0 < chunk ? p->nblk : b0 + chunk;
      for (size_t g = 0; g < rows; g += grp) {
        /* A short last group repeats a row; its extra lanes are not read. */
        const float *xr[8];
        for (size_t q = 0; q < grp; q++)
          xr[q] = x + (i0 + (g + q < rows ? g + q : g)) * d;
        if (assign8)
          assign8(p, xr, b0, b1, best + g * BLK, blk + g * BLK);
        else
          assign4(p, xr, b0, b1, best + g * BLK, blk + g * BLK);
      }
    }
    for (size_t r = 0; r < rows; r++) {
      /* Lanes hold disjoint centroids; ties go to the lower index. Two
       * branch-free passes: the minimum, then the lowest index holding it. */
      const float *bv = best + r * BLK;
      float s = bv[0];
      for (uint32_t t = 1; t < BLK; t++) s = bv[t] < s ? bv[t] : s;
      uint32_t arg = UINT32_MAX;
      for (uint32_t t = 0; t < BLK; t++) {
        uint32_t c = blk[r * BLK + t] * BLK + t;
        arg = bv[t] == s && c < arg ? c : arg;
      }
      if (arg >= p->k) arg = 0; /* only when every score was NaN */
      label[i0 + r] = arg;
      if (score) {
        const float *xi = x + (i0 + r) * d;
        if (!p->ip) {
          s += sf_dist_dot(xi, xi, d);
          if (s < 0) s = 0; /* rounding of the expanded form */
        }
        score[i0 + r] = s;
      }
    }
  }
}

void sf_kmeans_panel_assign(const sf_kmeans_panel *p, const float *x, size_t n,
                            uint32_t *label, float *score) {
  assign_with(pick_assign4(), pick_assign8(), p, x, n, label, score);
}

int sf_kmeans_panel_assign_named(const char *impl, const sf_kmeans_panel *p,
                                 const float *x, size_t n, uint32_t *label,
                                 float *score) {
  if (!strcmp(impl, "portable")) {
    assign_with(assign4_portable, NULL, p, x, n, label, score);
    return 0;
  }
#ifdef SF_KM_X86
  __builtin_cpu_init();
  int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!strcmp(impl, "avx2") && avx2) {
    assign_with(assign4_avx2, NULL, p, x, n, label, score);
    return 0;
  }
  if (!strcmp(impl, "avx512") && avx2 && pick_assign8()) {
    assign_with(assign4_avx2, pick_assign8(), p, x, n, label, score);
    return 0;
  }
#endif
  return -1;
}

typedef struct assign_job {
  const sf_kmeans_panel *p;
  const float *x;
  size_t n;
  uint32_t *label;
  float *score;
} assign_job;

static void *assign_thread(void *arg) {
  assign_job *j = arg;
  sf_kmeans_panel_assign(j->p, j->x, j->n, j->label, j->score);
  return NULL;
}

#define MT_MAX_THREADS 256
#define MT_MIN_ROWS 256 /* fewer rows per thread is not worth a thread */

void sf_kmeans_panel_assign_mt(const sf_kmeans_panel *p, const float *x, size_t n,
                               uint32_t *label, float *score, uint32_t nthreads) {
  size_t t = nthreads > MT_MAX_THREADS ? MT_MAX_THREADS : nthreads;
  if (t > n / MT_MIN_ROWS) t = n / MT_MIN_ROWS;
  if (t <= 1) {
    sf_kmeans_panel_assign(p, x, n, label, score);
    return;
  }
  pthread_t tid[MT_MAX_THREADS];
  assign_job job[MT_MAX_THREADS];
  size_t started = 0, per = (n + t - 1) / t;
  for (size_t i = 0; i < t; i++) {
    size_t a = i * per, b = a + per < n ? a + per : n;
    job[i] = (assign_job){p, x + a * p->dim, b - a, label + a, score ? score + a : NULL};
    /* The last part runs here; a thread that fails to start runs here too. */
    if (i + 1 == t || pthread_create(&tid[started], NULL, assign_thread, &job[i]))
      assign_thread(&job[i]);
    else
      started++;
  }
  for (size_t i = 0; i < started; i++) pthread_join(tid[i], NULL);
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

/* Lloyd iterations on the sample xs[n]; c holds the seeds on entry. */
static sf_code lloyd(const sf_kmeans_params *p, const float *xs, size_t n, uint32_t dim,
                     float *c, sf_kmeans_stats *st, sf_err *err) {
  const uint32_t k = p->k;
  void (*add_row)(double *, const float *, uint32_t) = add_row_portable;
#ifdef SF_KM_X86
  if (pick_assign4() == assign4_avx2) add_row = add_row_avx2;
#endif
  sf_rng rr;
  sf_rng_seed(&rr, p->seed ^ 0x9e3779b97f4a7c15ull);
  sf_kmeans_panel panel;
  sf_code rc = sf_kmeans_panel_init(&panel, c, k, dim, p->spherical, err);
  if (rc) return rc;
  uint32_t *label = malloc(sizeof(uint32_t) * n), *prev = malloc(sizeof(uint32_t) * n);
  float *score = malloc(sizeof(float) * n);
  double *sum = malloc(sizeof(double) * k * dim);
  size_t *count = malloc(sizeof(size_t) * k);
  if (!label || !prev || !score || !sum || !count) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory training k-means (k=%u, %zu rows)", k,
                    n);
    goto done;
  }
  sf_kmeans_panel_assign_mt(&panel, xs, n, label, score, p->nthreads);
  st->obj_init = st->obj_final = objective(score, n);
  for (uint32_t it = 0; it < p->iters; it++) {
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
      if (p->spherical) normalize(cc, dim);
    }
    st->repairs += repair_empty(c, count, k, dim, p->spherical, n, &rr);
    panel_fill(&panel, c);
    memcpy(prev, label, sizeof(uint32_t) * n);
    sf_kmeans_panel_assign_mt(&panel, xs, n, label, score, p->nthreads);
    st->obj_final = objective(score, n);
    st->iters_run = it + 1;
    if (!memcmp(prev, label, sizeof(uint32_t) * n)) break; /* a fixpoint */
  }
done:
  sf_kmeans_panel_free(&panel);
  free(label);
  free(prev);
  free(score);
  free(sum);
  free(count);
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
