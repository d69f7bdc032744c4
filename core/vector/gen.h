/*
 * gen.h - generated data for demos, tests and benchmarks: vectors drawn
 * around random cluster centres (the shape real embeddings have, and the one
 * on which IVF recall means something), and the exact k nearest neighbours by
 * brute force, the ground truth every recall figure is measured against.
 */
#ifndef SF_GEN_H
#define SF_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/types.h"

/* Fills out[n*dim] with n vectors around `clusters` Gaussian centres (centre
 * spread 1.0, within-cluster spread `sigma`). The same seed gives the same
 * vectors; a query set should use a different seed but the same centres, so
 * `centre_seed` picks the centres and `seed` the points. */
void sf_gen_clustered(float *out, size_t n, uint32_t dim, uint32_t clusters, float sigma,
                      uint64_t centre_seed, uint64_t seed);

/* Normalises each of n rows to unit length in place (zero rows stay zero). */
void sf_normalize_rows(float *x, size_t n, uint32_t dim);

/* Exact k nearest neighbours of nq queries among n base vectors under
 * `metric` (COSINE normalises copies of both sides). out_idx[nq*k] receives
 * base row indices (nearest first; -1 where n < k). Single pass over the base
 * per block of queries. Returns SF_ENOMEM on allocation failure. */
sf_code sf_bruteforce_knn(const float *base, size_t n, const float *queries, size_t nq,
                          uint32_t dim, sf_metric metric, uint32_t k, int64_t *out_idx,
                          sf_err *err);

#endif
