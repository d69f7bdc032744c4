/*
 * distance.h - the distance kernels every scan spends its time in.
 *
 * Convention: every score is "smaller is closer", so one top-k structure
 * serves all metrics. L2 gives the squared distance; DOT and COSINE give the
 * negated inner product (COSINE vectors are normalised before they get here).
 *
 * The kernels pick an AVX2+FMA implementation at run time when the CPU has
 * it and fall back to portable C with several accumulators otherwise, so one
 * binary runs everywhere and is fast where it can be.
 */
#ifndef SF_DISTANCE_H
#define SF_DISTANCE_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/types.h"

float sf_dist_l2sq(const float *a, const float *b, size_t dim);
float sf_dist_dot(const float *a, const float *b, size_t dim);

/* The score of the metric: l2sq for L2, -dot for DOT and COSINE. */
static inline float sf_dist_score(sf_metric m, const float *a, const float *b,
                                  size_t dim) {
  return m == SF_L2 ? sf_dist_l2sq(a, b, dim) : -sf_dist_dot(a, b, dim);
}

/* out[i] = score(q, base + i*dim) for i < n. */
void sf_dist_score_batch(sf_metric m, const float *q, const float *base, size_t n,
                         size_t dim, float *out);

/* Sum of table[j*256 + codes[j]] for j < m: the PQ asymmetric distance from
 * a lookup table. */
float sf_dist_pq_lut(const float *table, const uint8_t *codes, size_t m);

/* out[i] = bias + sf_dist_pq_lut(table, codes + i*m, m) for n codes of m
 * bytes: the IVF_PQ scan. The AVX2 kernel gathers 8 table entries per
 * instruction and interleaves 4 codes; sums may differ from the scalar
 * kernel's in the last bits (another order of additions). */
void sf_dist_pq_scan(const float *table, const uint8_t *codes, size_t n, size_t m,
                     float bias, float *out);

typedef void (*sf_dist_pq_scan_fn)(const float *table, const uint8_t *codes, size_t n,
                                   size_t m, float bias, float *out);
/* One implementation of sf_dist_pq_scan by name, for tests and benchmarks:
 * "scalar" always; "avx2" when this CPU has AVX2, else NULL. */
sf_dist_pq_scan_fn sf_dist_pq_scan_named(const char *impl);

/* The IVF_PQ scan with the table split in two (the precomputed path of
 * quantizer_scan.c): qt, a term of the query, and pre, a term of the list,
 * both m * 256 floats. For code i (m bytes at codes + i*m):
 *   terms[i] = scale * sum_j pre[j*256 + c_ij]   (a constant of the code)
 *   out[i]   = bias + (terms[i] + sum_j qt[j*256 + c_ij])
 * With pre given, terms[i] is computed (and stored when terms is not NULL);
 * with pre NULL, terms[] holds values computed before. Either way a code's
 * score has the same bits: a caller may keep the terms of a list and skip
 * its pre lookups on later queries. scale is 1 or 0.5 (exact). */
void sf_dist_pq_scan_split(const float *qt, const float *pre, float scale,
                           const uint8_t *codes, size_t n, size_t m, float bias,
                           float *terms, float *out);
typedef void (*sf_dist_pq_split_fn)(const float *qt, const float *pre, float scale,
                                    const uint8_t *codes, size_t n, size_t m, float bias,
                                    float *terms, float *out);
/* One implementation by name: "scalar" always; others where available. */
sf_dist_pq_split_fn sf_dist_pq_split_named(const char *impl);

/* The IVF_SQ scans over n codes of dim bytes (code i at codes + i*dim).
 * L2: out[i] = bias + sum_j (u[j] - v[j]*c_ij)^2, the squared distance to a
 * decoded residual with u = the query's residual less the decoding offset
 * and v = the step of each dimension. Inner product: out[i] = bias -
 * sum_j w[j]*c_ij. The AVX2 kernels score 4 codes per pass, sharing the
 * loads of u, v and w, and convert 8 bytes to floats per instruction; sums
 * may differ from the scalar kernels' in the last bits (order of additions). */
void sf_dist_sq_l2_scan(const float *u, const float *v, const uint8_t *codes, size_t n,
                        size_t dim, float bias, float *out);
void sf_dist_sq_ip_scan(const float *w, const uint8_t *codes, size_t n, size_t dim,
                        float bias, float *out);

typedef void (*sf_dist_sq_l2_fn)(const float *u, const float *v, const uint8_t *codes,
                                 size_t n, size_t dim, float bias, float *out);
typedef void (*sf_dist_sq_ip_fn)(const float *w, const uint8_t *codes, size_t n,
                                 size_t dim, float bias, float *out);
/* One implementation by name, as sf_dist_pq_scan_named: "scalar" always,
 * "avx2" when this CPU has AVX2 and FMA, else NULL. */
sf_dist_sq_l2_fn sf_dist_sq_l2_named(const char *impl);
sf_dist_sq_ip_fn sf_dist_sq_ip_named(const char *impl);

/* "avx2" or "scalar": which kernels this process uses. */
const char *sf_dist_impl(void);

#endif
