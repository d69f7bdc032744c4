/* gen.c - see gen.h. */
#include "core/vector/gen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/rng.h"
#include "core/vector/distance.h"
#include "core/vector/topk.h"

void sf_gen_clustered(float *out, size_t n, uint32_t dim, uint32_t clusters, float sigma,
                      uint64_t centre_seed, uint64_t seed) {
  if (clusters == 0) clusters = 1;
  sf_rng rc, r;
  sf_rng_seed(&rc, centre_seed);
  sf_rng_seed(&r, seed);
  float *centres = malloc(sizeof(float) * clusters * dim);
  if (!centres) { /* fall back to one centre at the origin */
    for (size_t i = 0; i < n * dim; i++) out[i] = (float)(sf_rng_normal(&r) * sigma);
    return;
  }
  for (size_t i = 0; i < (size_t)clusters * dim; i++)
    centres[i] = (float)sf_rng_normal(&rc);
  for (size_t i = 0; i < n; i++) {
    const float *c = centres + sf_rng_below(&r, clusters) * dim;
    for (uint32_t j = 0; j < dim; j++)
      out[i * dim + j] = c[j] + (float)(sf_rng_normal(&r) * sigma);
  }
  free(centres);
}

void sf_normalize_rows(float *x, size_t n, uint32_t dim) {
  for (size_t i = 0; i < n; i++) {
    float *v = x + i * dim;
    float nrm = sqrtf(sf_dist_dot(v, v, dim));
    if (nrm > 0)
      for (uint32_t j = 0; j < dim; j++) v[j] /= nrm;
  }
}

sf_code sf_bruteforce_knn(const float *base, size_t n, const float *queries, size_t nq,
                          uint32_t dim, sf_metric metric, uint32_t k, int64_t *out_idx,
                          sf_err *err) {
  const float *b = base, *q = queries;
  float *bcopy = NULL, *qcopy = NULL;
  if (metric == SF_COSINE) {
    bcopy = malloc(sizeof(float) * n * dim);
    qcopy = malloc(sizeof(float) * nq * dim);
    if (!bcopy || !qcopy) goto nomem;
    memcpy(bcopy, base, sizeof(float) * n * dim);
    memcpy(qcopy, queries, sizeof(float) * nq * dim);
    sf_normalize_rows(bcopy, n, dim);
    sf_normalize_rows(qcopy, nq, dim);
    b = bcopy;
    q = qcopy;
  }
  sf_topk t;
  if (sf_topk_init(&t, k)) goto nomem;
  for (size_t i = 0; i < nq; i++) {
    sf_topk_reset(&t);
    const float *qi = q + i * dim;
    for (size_t j = 0; j < n; j++)
      sf_topk_push(&t, sf_dist_score(metric, qi, b + j * dim, dim), j);
    uint32_t got = sf_topk_sort(&t);
    for (uint32_t r = 0; r < k; r++) out_idx[i * k + r] = r < got ? (int64_t)t.id[r] : -1;
  }
  sf_topk_free(&t);
  free(bcopy);
  free(qcopy);
  return SF_OK;
nomem:
  free(bcopy);
  free(qcopy);
  return sf_err_set(err, SF_ENOMEM, "out of memory computing brute-force neighbours");
}
