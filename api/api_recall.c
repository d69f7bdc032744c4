/* api_recall.c - brute force and recall@k, to check an index. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "core/base/types.h"
#include "core/vector/distance.h"
#include "core/vector/topk.h"

/* Unit-length copy of x (zero stays zero), for COSINE: computed as
 * sf_quant_prepare computes it, so that IVF_FLAT scores equal these. */
static void normalise(const float *x, float *out, uint32_t dim) {
  memmove(out, x, sizeof(float) * dim);
  float nrm = sqrtf(sf_dist_dot(out, out, dim));
  if (nrm > 0)
    for (uint32_t j = 0; j < dim; j++) out[j] /= nrm;
}

/* 1 and the first row and element of x (n x dim) that is not finite. */
static int first_bad(const float *x, uint64_t n, uint32_t dim, uint64_t *row,
                     uint32_t *col) {
  for (uint64_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < dim; j++)
      if (!isfinite(x[i * dim + j])) {
        *row = i;
        *col = j;
        return 1;
      }
  return 0;
}

int sf_exact_search(const float *base, const uint64_t *base_ids, uint64_t n,
                    const float *queries, uint64_t nq, uint32_t dim, const char *metric,
                    uint32_t k, uint64_t *ids, float *distances, sf_error *err) {
  sf_metric m;
  sf_err e = {0};
  if ((n && !base) || (nq && (!queries || !ids)) || dim == 0 || k == 0)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_exact_search needs base rows, queries, room for the ids, "
                       "dim >= 1 and k >= 1");
  if (sf_metric_parse(metric ? metric : "", &m, &e)) return sf_api_from_err(err, &e);
  /* A NaN or an infinity compares false with every bound: its row would
   * vanish from the truth, or its query find nothing, without a word. */
  int bad_row = 0;
  uint64_t row = 0;
  uint32_t col = 0;
  if ((bad_row = first_bad(base, n, dim, &row, &col)) ||
      first_bad(queries, nq, dim, &row, &col))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "%s %llu has a NaN or infinite value at element %u; the exact "
                       "search ranks finite values only",
                       bad_row ? "base row" : "query", (unsigned long long)row, col);
  const size_t block = 4096;
  float *scores = malloc(block * sizeof *scores);
  float *q = malloc((size_t)dim * sizeof *q);
  float *b = m == SF_COSINE ? malloc(block * dim * sizeof *b) : NULL;
  sf_topk top;
  int rc = SF_STATUS_OK, top_ok = 0;
  if (!scores || !q || (m == SF_COSINE && !b) || sf_topk_init(&top, k)) {
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    goto out;
  }
  top_ok = 1;
  for (uint64_t i = 0; i < nq; i++) {
    sf_topk_reset(&top);
    if (m == SF_COSINE)
      normalise(queries + i * dim, q, dim);
    else
      memcpy(q, queries + i * dim, dim * sizeof *q);
    for (uint64_t at = 0; at < n; at += block) {
      size_t cnt = n - at < block ? (size_t)(n - at) : block;
      const float *rows = base + at * dim;
      if (m == SF_COSINE) {
        for (size_t r = 0; r < cnt; r++) normalise(rows + r * dim, b + r * dim, dim);
        rows = b;
      }
      sf_dist_score_batch(m, q, rows, cnt, dim, scores);
      for (size_t r = 0; r < cnt; r++)
        if (scores[r] <= sf_topk_bound(&top))
          sf_topk_push(&top, scores[r], base_ids ? base_ids[at + r] : at + r);
    }
    uint32_t got = sf_topk_sort(&top);
    for (uint32_t j = 0; j < k; j++) {
      ids[i * k + j] = j < got ? top.id[j] : SF_NO_ROW_ID;
      if (distances) distances[i * k + j] = j < got ? top.score[j] : INFINITY;
    }
  }
out:
  if (top_ok) sf_topk_free(&top);
  free(scores);
  free(q);
  free(b);
  return rc;
}

double sf_recall(const uint64_t *found, uint32_t k_found, const uint64_t *truth,
                 uint32_t k_truth, uint64_t nq, uint32_t k) {
  if (!found || !truth || k == 0 || k > k_found || k > k_truth) return -1;
  uint64_t hit = 0, total = 0;
  for (uint64_t i = 0; i < nq; i++)
    for (uint32_t j = 0; j < k; j++) {
      uint64_t t = truth[i * k_truth + j];
      if (t == SF_NO_ROW_ID) continue;
      total++;
      for (uint32_t f = 0; f < k; f++)
        if (found[i * k_found + f] == t) {
          hit++;
          break;
        }
    }
  return total ? (double)hit / (double)total : 1.0;
}
