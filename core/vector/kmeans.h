/*
 * kmeans.h - k-means clustering for the IVF coarse quantizer and the PQ
 * codebooks, and the blocked nearest-centroid kernel both spend their time in.
 *
 * Training (after FAISS's Clustering): a deterministic sample of at most
 * max_rows rows (default 256 per centroid), k-means++ seeding on a subsample
 * (or random distinct rows when k is too large for k-means++ to be cheap, or
 * when asked: PQ codebooks, see quantizer.c),
 * then Lloyd iterations with empty-cluster repair by splitting the largest
 * cluster. A seed gives bit-identical centroids: the only threads (the
 * caller's choice, nthreads) split the rows of the assignment step, whose
 * result does not depend on the split; the update sums in one thread.
 *
 * Spherical mode ranks by inner product and renormalises the centroids after
 * every update: the right clustering for unit vectors (COSINE) and for
 * inner-product search (DOT), where a centroid's norm must not decide which
 * rows it attracts.
 *
 * Assignment is ||x||^2 - 2 x.c + ||c||^2 with ||c||^2 precomputed, computed
 * for 4 rows against 16 centroids at a time from a centroid "panel" (16
 * centroids interleaved per dimension), so the inner loop is a pair of
 * 8-lane FMAs per row and centroids stay in cache; where the CPU has
 * AVX-512F, 8 rows against 32 centroids, one 16-lane FMA per row and block.
 * At dims up to 16 with k <= 256 (the PQ codebooks) an AVX-512 kernel takes
 * one row against every block instead, with the same bits.
 *
 * Bounded Lloyd iterations (L2 only, from SF_KMEANS_BOUNDS_MIN_DIM
 * dimensions up unless params ask otherwise): after the first pass, each
 * row keeps an upper bound on the distance to its centroid and a lower
 * bound per group of centroids (a 16-centroid panel block up to k=256, at
 * most 16 groups; Hamerly 2010, kept per group as in Yinyang k-means, Ding
 * et al. 2015), moved by the centroids' shifts after each update. Rows
 * whose bounds prove their centroid unchanged are not scanned; the others
 * are scanned against the groups their bounds do not rule out. A skip needs
 * a margin of twice the expanded form's rounding-error bound (itself
 * doubled for safety, with an absolute term for squares that underflow), so the kernel's
 * own near-ties are always decided by the kernel: the labels, hence the centroids, are
 * plain Lloyd's bit for bit, for any thread count. Fashion-MNIST (60,000 x 784, k=256, 20
 * iterations): 32% of the plain iterations' kernel work, 0.67x the time; below
 * SF_KMEANS_BOUNDS_MIN_DIM the per-row bookkeeping costs more than the
 * short scans it saves (docs/performance.md, bench/bench_lloyd.sh). Extra
 * memory: (2 + groups) floats per row, groups <= 16.
 */
#ifndef SF_KMEANS_H
#define SF_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/types.h"

#define SF_KMEANS_DEFAULT_MAX_PPC 256u /* rows sampled per centroid, as FAISS */
/* SF_KMEANS_AUTO bounds the Lloyd iterations from this dimension up: on
 * Fashion-MNIST sub-vectors (k=256, 20 iterations) bounded over plain took
 * 1.21x at dim 49, 0.95x at 98 (1.05x in another run), 0.76x at 196,
 * 0.64x at 392 and 0.67x at 784 (bench/bench_lloyd.sh). PQ codebooks
 * (dsub <= 49 here) stay plain. */
#define SF_KMEANS_BOUNDS_MIN_DIM 128u

typedef struct sf_kmeans_params {
  uint32_t k;        /* clusters; 1 <= k <= n */
  uint32_t iters;    /* Lloyd iterations after seeding (0: seeding only) */
  uint64_t seed;     /* seeds the sample, the init and the repairs */
  uint64_t max_rows; /* training-sample cap; 0 = k * SF_KMEANS_DEFAULT_MAX_PPC */
  int spherical;     /* rank by inner product and keep centroids unit length */
  int random_init;   /* seed with random distinct rows instead of k-means++ */
  uint32_t nthreads; /* assignment threads (0 or 1: the caller's thread only);
                        results are identical for any count */
  int lloyd;         /* SF_KMEANS_AUTO (0), _PLAIN or _BOUNDED: see below */
} sf_kmeans_params;

/* How the Lloyd iterations assign rows. Both give the same centroids. */
enum {
  SF_KMEANS_AUTO = 0, /* bounded where it pays (L2, dim >= SF_KMEANS_BOUNDS_MIN_DIM) */
  SF_KMEANS_PLAIN,    /* every row against every centroid, every iteration */
  SF_KMEANS_BOUNDED   /* distance bounds skip rows (L2 only; spherical runs plain) */
};

typedef struct sf_kmeans_stats {
  size_t rows_used;   /* rows in the training sample */
  uint32_t iters_run; /* Lloyd iterations run (stops early at a fixpoint) */
  uint32_t repairs;   /* empty clusters repaired, all iterations together */
  /* The objective, smaller is better: the sum of squared distances to the
   * nearest centroid (L2), or of negated inner products (spherical). */
  double obj_init;  /* right after seeding */
  double obj_final; /* with the final centroids */
  int bounded;      /* 1 if the bounded iterations ran */
  /* The Lloyd iterations' assignment work, in rows scanned against every
   * centroid, all iterations together: plain, rows_used * iters_run;
   * bounded, each scanned row counts the share of the centroids it met. */
  uint64_t rows_scanned;
} sf_kmeans_stats;

/* Clusters n rows of x (n*dim floats) into p->k centroids, written to
 * centroids[k*dim] (caller-owned). stats may be NULL. SF_EINVAL if k == 0,
 * k > n or dim == 0; SF_ENOMEM on allocation failure. */
sf_code sf_kmeans_train(const sf_kmeans_params *p, const float *x, size_t n, uint32_t dim,
                        float *centroids, sf_kmeans_stats *stats, sf_err *err);

/* The centroids laid out for the assignment kernel. Build once, reuse for
 * any number of rows; read-only after init, so threads may share one. */
typedef struct sf_kmeans_panel {
  uint32_t k, dim, nblk; /* nblk = ceil(k / 16) */
  int ip;                /* 1: score = -x.c; 0: score = ||x - c||^2 */
  float *data;           /* nblk * dim * 16: data[(b*dim + j)*16 + c] */
  float *bias;           /* nblk * 16: ||c||^2 (L2) or 0 (ip); +inf past k */
} sf_kmeans_panel;

/* Copies k centroids (k*dim floats) into p; frees with sf_kmeans_panel_free
 * (accepts a zeroed panel). ip selects inner-product ranking. */
sf_code sf_kmeans_panel_init(sf_kmeans_panel *p, const float *centroids, uint32_t k,
                             uint32_t dim, int ip, sf_err *err);
void sf_kmeans_panel_free(sf_kmeans_panel *p);

/* For each of n rows: label[i] = the nearest centroid (smallest score, ties
 * to the lower index); score[i] (if not NULL) = its score: squared distance
 * (clamped at 0) or negated inner product. Allocates nothing. */
void sf_kmeans_panel_assign(const sf_kmeans_panel *p, const float *x, size_t n,
                            uint32_t *label, float *score);

/* sf_kmeans_panel_assign by a named kernel, for tests and benchmarks:
 * "portable" always, "avx2" (4 rows x 16 centroids per pass) and "avx512"
 * (8 rows x 32 centroids, chosen by sf_kmeans_panel_assign where the CPU
 * has AVX-512F) where this CPU has them. second (may be NULL) receives
 * each row's second smallest score (its best again for a tie, +inf when
 * k == 1), what the bounded Lloyd iterations take their lower bounds from;
 * asking for it does not change the labels or scores. The AVX kernels give
 * the same labels, scores and seconds bit for bit. Returns -1, writing
 * nothing, when the kernel is not available here. */
int sf_kmeans_panel_assign_named(const char *impl, const sf_kmeans_panel *p,
                                 const float *x, size_t n, uint32_t *label, float *score,
                                 float *second);

/* The same, split over nthreads threads (created and joined inside the
 * call; 0 or 1 runs on the caller's thread). Labels and scores are the same
 * whatever the count. Falls back to one thread if threads cannot start. */
void sf_kmeans_panel_assign_mt(const sf_kmeans_panel *p, const float *x, size_t n,
                               uint32_t *label, float *score, uint32_t nthreads);

/* out[c] for every centroid c < k: the score of one row, up to a per-row
 * constant (for L2 it omits ||x||^2, which does not change the order). */
void sf_kmeans_panel_scores(const sf_kmeans_panel *p, const float *x, float *out);
/* sf_kmeans_panel_scores with one kernel by name, for tests and benchmarks:
 * "portable"; "avx2" (one block at a time), "avx2x2" (two), "avx512" (four)
 * where the CPU has them. Returns 0 (out untouched) when it does not. All
 * give the same bits but "portable". */
int sf_kmeans_panel_scores_named(const char *impl, const sf_kmeans_panel *p,
                                 const float *x, float *out);

/* Deterministic sample of m of n indices (Knuth's selection sampling):
 * idx[m] receives them in increasing order. m <= n. */
void sf_kmeans_sample(uint64_t seed, size_t n, size_t m, size_t *idx);

#endif
