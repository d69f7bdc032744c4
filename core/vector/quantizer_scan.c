/*
 * quantizer_scan.c - scoring codes against a query: the search hot path.
 *
 * The work per list is split so that scanning a code costs as little as
 * possible:
 *  - IVF_FLAT: the exact score of the metric on the stored vector.
 *  - IVF_SQ, decode-free. A code c decodes to r_j = vmin_j + (c_j + .5)s_j
 *    around the list's centroid, so for L2
 *        ||q - cent - r||^2 = sum_j (u_j - s_j c_j)^2
 *    with u_j = q_j - cent_j - vmin_j - .5 s_j computed at set_list (a
 *    dimension with s_j = 0 contributes u_j^2 whatever the code), and for
 *    inner products  <q, cent + r> = <q,cent> + K' + sum_j (q_j s_j) c_j,
 *    with the weights computed once per query. The kernels
 *    (sf_dist_sq_l2_scan, sf_dist_sq_ip_scan) convert 8 bytes to floats per
 *    instruction and run one FMA pair (L2) or one FMA (ip) per 8 dimensions,
 *    4 codes per pass.
 *  - IVF_PQ: a table of 256 partial scores per sub-quantizer, then m
 *    lookups per code (sf_dist_pq_scan). Under L2 the distance to the code
 *    w of list l expands to
 *        ||q - c_l||^2 + sum_j (||w_j||^2 - 2<q_j,w_j>) + sum_j 2<c_lj,w_j>
 *    The middle term is one table per query (set_query: 256*dim
 *    multiply-adds through the codebook panels), the last one a table per
 *    list that the quantizer holds (see quantizer.h for its cap). The two
 *    are not added into one table per list (m*256 additions, and a read of
 *    the list's 1 KiB per sub-quantizer from a table too large for the
 *    cache: a third of a query's time at m=98): the scan sums each code's
 *    lookups in both (sf_dist_pq_scan_split), and the last sum, the term
 *    sum_j 2<c_lj,w_j> of the code, does not depend on the query, so a
 *    caller may keep it (sf_quant_scanner_scan_terms; search.c keeps it
 *    per partition) and later scans look up the query's table alone.
 *    set_list costs dim multiply-adds for ||q - c_l||^2.
 *    Above the cap, the table is of the query's residual for the list,
 *    rebuilt at set_list (256*dim multiply-adds per list, FAISS's path
 *    without precomputed tables). Under inner products the table does not
 *    depend on the list: <q, cent + r> = <q,cent> + sum_j <q_j, cw_j>, so
 *    it is built once per query and set_list only computes <q,cent>.
 * COSINE rows and queries are unit length, so ranking by inner product is
 * ranking by L2 (||q - x||^2 = 2 - 2<q,x>), and IVF_SQ/IVF_PQ under COSINE
 * use the L2 path, reporting 0.5*||q - x^||^2 - 1, which is -<q,x^> when x^
 * has unit length. That matters: the inner-product path's error is
 * <q, r - r^> with the whole query, the L2 path's is 2<q - cent, r - r^>
 * with the query's residual, several times shorter; on clustered data
 * IVF_PQ recall@10 goes from about 0.4 to the L2 figure.
 * Every score is a full distance estimate (not relative to the list), so
 * scores from different lists of one query compare directly.
 */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/vector/distance.h"
#include "core/vector/quantizer_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SF_QS_X86 1
#endif

struct sf_quant_scanner {
  const sf_quant *q;
  float *query;     /* dim */
  float *t, *w;     /* IVF_SQ: u and v (L2) or w (ip); IVF_PQ: t is the residual */
  float *lut;       /* IVF_PQ: pq_m * 256, the table of the current list */
  float *qt;        /* IVF_PQ with pre: pq_m * 256, the query's term */
  const float *pre; /* IVF_PQ: the quantizer's per-list term, or NULL */
  const float *cur; /* IVF_PQ with pre: the current list's rows of pre */
  float scale;      /* IVF_PQ with pre: 1 (L2) or 0.5 (COSINE) */
  float qconst;     /* per-query constant (IVF_SQ under inner products) */
  float bias;       /* per-list constant added to every score */
};

/* ---- the scanner ---------------------------------------------------------- */

/* nlist * pq_m * 256 floats: pre[(l*m + j)*256 + k] = 2<c_lj, w_jk>,
 * from the panel scores ||w||^2 - 2<c_lj, w> of each codebook. */
static float *pq_precompute(const sf_quant *q) {
  const uint32_t m = q->p.pq_m, ds = q->dsub, d = q->p.dim;
  const size_t floats = (size_t)q->p.nlist * m * SF_QUANT_PQ_KSUB;
  float *pre = malloc(sizeof(float) * floats);
  if (!pre) return NULL;
  for (uint32_t l = 0; l < q->p.nlist; l++)
    for (uint32_t j = 0; j < m; j++) {
      const sf_kmeans_panel *pn = &q->pq_panels[j];
      float *row = pre + ((size_t)l * m + j) * SF_QUANT_PQ_KSUB;
      sf_kmeans_panel_scores(pn, q->centroids + (size_t)l * d + (size_t)j * ds, row);
      for (uint32_t k = 0; k < SF_QUANT_PQ_KSUB; k++) row[k] = pn->bias[k] - row[k];
    }
  return pre;
}

/* The quantizer's shared table, building it on first use (see
 * quantizer_impl.h); NULL when over the cap or out of memory. */
static const float *pq_shared_table(const sf_quant *q) {
  if ((size_t)q->p.nlist * q->p.pq_m * SF_QUANT_PQ_KSUB * sizeof(float) >
      SF_QUANT_PQ_PRECOMPUTE_MAX)
    return NULL;
  sf_quant *mq = (sf_quant *)q; /* a cache: allocated non-const, set once */
  float *pre = atomic_load_explicit(&mq->pq_pre, memory_order_acquire);
  if (pre) return pre;
  float *mine = pq_precompute(q), *none = NULL;
  if (!mine) return NULL;
  if (atomic_compare_exchange_strong_explicit(&mq->pq_pre, &none, mine,
                                              memory_order_acq_rel, memory_order_acquire))
    return mine;
  free(mine); /* another thread installed an identical table first */
  return none;
}

sf_code sf_quant_scanner_new_ex(const sf_quant *q, unsigned flags, sf_quant_scanner **out,
                                sf_err *err) {
  *out = NULL;
  sf_quant_scanner *s = calloc(1, sizeof *s);
  if (!s) return sf_err_set(err, SF_ENOMEM, "out of memory for a scanner");
  const size_t d = q->p.dim;
  s->q = q;
  s->query = calloc(d, sizeof(float));
  s->t = calloc(d, sizeof(float));
  s->w = calloc(d, sizeof(float));
  int ok = s->query && s->t && s->w;
  if (q->p.type == SF_IVF_PQ) {
    const size_t lut = (size_t)q->p.pq_m * SF_QUANT_PQ_KSUB;
    s->lut = calloc(lut, sizeof(float));
    ok = ok && s->lut;
    if (ok && q->p.metric != SF_DOT && !(flags & SF_QUANT_SCAN_NO_PRECOMPUTE)) {
      s->qt = calloc(lut, sizeof(float));
      s->pre = s->qt ? pq_shared_table(q) : NULL; /* NULL: the per-list path */
    }
  }
  if (!ok) {
    sf_quant_scanner_free(s);
    return sf_err_set(err, SF_ENOMEM, "out of memory for a scanner of dim %zu", d);
  }
  *out = s;
  return SF_OK;
}

sf_code sf_quant_scanner_new(const sf_quant *q, sf_quant_scanner **out, sf_err *err) {
  return sf_quant_scanner_new_ex(q, 0, out, err);
}

void sf_quant_scanner_free(sf_quant_scanner *s) {
  if (!s) return;
  free(s->query);
  free(s->t);
  free(s->w);
  free(s->lut);
  free(s->qt);
  free(s);
}

/* Fills lut[j*256 + k] with the score of slice j of v against code k:
 * -<v_j, w_k> (ip), scale * ||v_j - w_k||^2 (l2) or ||w_k||^2 - 2<v_j, w_k>
 * (norms: the per-query term of the precomputed path). The codebook panels
 * give ||w||^2 - 2<v_j, w> for 16 codes per pass. */
enum { PQ_IP, PQ_L2, PQ_NORMS };
static void pq_table(const sf_quant *q, const float *v, int kind, float scale,
                     float *lut) {
  const uint32_t ds = q->dsub;
  for (uint32_t j = 0; j < q->p.pq_m; j++) {
    const sf_kmeans_panel *pn = &q->pq_panels[j];
    const float *vj = v + (size_t)j * ds;
    float *row = lut + (size_t)j * SF_QUANT_PQ_KSUB;
    sf_kmeans_panel_scores(pn, vj, row);
    if (kind == PQ_IP) {
      for (uint32_t k = 0; k < SF_QUANT_PQ_KSUB; k++)
        row[k] = 0.5f * (row[k] - pn->bias[k]);
    } else if (kind == PQ_L2) {
      const float vv = sf_dist_dot(vj, vj, ds);
      for (uint32_t k = 0; k < SF_QUANT_PQ_KSUB; k++) {
        float e = vv + row[k];
        row[k] = scale * (e > 0 ? e : 0); /* rounding of the expanded form */
      }
    }
  }
}

void sf_quant_scanner_set_query(sf_quant_scanner *s, const float *prepared_query) {
  const sf_quant *q = s->q;
  const uint32_t d = q->p.dim;
  memcpy(s->query, prepared_query, sizeof(float) * d);
  s->bias = 0;
  if (q->p.metric !=
      SF_DOT) { /* the L2 path: all but PQ's query term depends on the list */
    if (s->pre) {
      pq_table(q, s->query, PQ_NORMS, 1.0f, s->qt);
      if (q->p.metric == SF_COSINE) /* the scale of set_list, exact */
        for (size_t k = 0; k < (size_t)q->p.pq_m * SF_QUANT_PQ_KSUB; k++)
          s->qt[k] *= 0.5f;
    }
    return;
  }
  if (q->p.type == SF_IVF_SQ) {
    double k = 0;
    for (uint32_t j = 0; j < d; j++) {
      s->w[j] = s->query[j] * q->sq_step[j];
      k += (double)s->query[j] * (q->sq_vmin[j] + 0.5 * q->sq_step[j]);
    }
    s->qconst = (float)k;
  } else if (q->p.type == SF_IVF_PQ) {
    pq_table(q, s->query, PQ_IP, 1.0f, s->lut);
  }
}

void sf_quant_scanner_set_list(sf_quant_scanner *s, uint32_t list) {
  const sf_quant *q = s->q;
  const uint32_t d = q->p.dim;
  const float *c = q->centroids + (size_t)list * d;
  if (q->p.type == SF_IVF_FLAT) return;
  if (q->p.metric == SF_DOT) {
    float qc = sf_dist_dot(s->query, c, d);
    s->bias = q->p.type == SF_IVF_SQ ? -(qc + s->qconst) : -qc;
    return;
  }
  /* score = scale * ||q - x^||^2 + offset: the distance for L2, and
   * -<q,x^> for unit vectors under COSINE (see the top of the file). */
  const float scale = q->p.metric == SF_COSINE ? 0.5f : 1.0f;
  const float offset = q->p.metric == SF_COSINE ? -1.0f : 0.0f;
  if (q->p.type == SF_IVF_SQ) {
    /* e_j = sqrt(scale) * (q_j - c_j - vmin_j - (code_j + .5) step_j) =
     * u_j - v_j code_j; a constant dimension (step 0) keeps e_j = u_j. */
    const float rs = sqrtf(scale);
    for (uint32_t j = 0; j < d; j++) {
      s->t[j] = rs * (s->query[j] - c[j] - q->sq_vmin[j] - 0.5f * q->sq_step[j]);
      s->w[j] = rs * q->sq_step[j];
    }
    s->bias = offset;
  } else if (s->pre) {
    s->cur = s->pre + (size_t)list * q->p.pq_m * SF_QUANT_PQ_KSUB;
    s->scale = scale;
    s->bias = scale * sf_dist_l2sq(s->query, c, d) + offset;
  } else {
    for (uint32_t j = 0; j < d; j++) s->t[j] = s->query[j] - c[j];
    pq_table(q, s->t, PQ_L2, scale, s->lut);
    s->bias = offset;
  }
}

void sf_quant_scanner_scan(const sf_quant_scanner *s, const uint8_t *codes, size_t n,
                           float *scores) {
  const sf_quant *q = s->q;
  const size_t d = q->p.dim;
  switch (q->p.type) {
    case SF_IVF_FLAT: {
      const float *v = (const float *)(const void *)codes;
      sf_dist_score_batch(q->p.metric, s->query, v, n, d, scores);
      break;
    }
    case SF_IVF_SQ:
      if (q->p.metric == SF_DOT)
        sf_dist_sq_ip_scan(s->w, codes, n, d, s->bias, scores);
      else
        sf_dist_sq_l2_scan(s->t, s->w, codes, n, d, s->bias, scores);
      break;
    default:
      if (s->pre)
        sf_dist_pq_scan_split(s->qt, s->cur, s->scale, codes, n, q->p.pq_m, s->bias, NULL,
                              scores);
      else
        sf_dist_pq_scan(s->lut, codes, n, q->p.pq_m, s->bias, scores);
  }
}

int sf_quant_scanner_has_terms(const sf_quant_scanner *s) {
  return s->pre != NULL;
}

void sf_quant_scanner_scan_terms(const sf_quant_scanner *s, const uint8_t *codes,
                                 size_t n, float *terms, int known, float *scores) {
  sf_dist_pq_scan_split(s->qt, known ? NULL : s->cur, s->scale, codes, n, s->q->p.pq_m,
                        s->bias, terms, scores);
}
