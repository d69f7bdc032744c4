/*
 * quantizer.c - training, accessors, assignment and encoding (see
 * quantizer.h; the scanner is in quantizer_scan.c, the file format in
 * quantizer_io.c).
 *
 * Training, after FAISS's IndexIVF*::train:
 *  1. a deterministic sample of at most max_train_rows rows, prepared
 *     (normalised for COSINE);
 *  2. coarse k-means on it: plain L2 k-means for L2; spherical k-means for
 *     COSINE and DOT. For COSINE that is simply the right objective. For DOT
 *     the lists are searched by inner product with the centroids, and an
 *     inner-product assignment to centroids of unequal norms (FAISS's IP
 *     k-means, or L2 k-means then IP assignment) lets the longest centroids
 *     swallow many rows: on rows with norms spread 0.5..1.5 the largest list
 *     doubled and a search scanned 44% more rows for the same recall. Unit
 *     centroids split the rows by direction and keep the lists balanced.
 *     The centroids are then replaced by their lists' means
 *     (centroids_to_means): the same directions, but residuals as short as
 *     under L2, which took DOT IVF_PQ recall@10 from 0.38 to 0.72 (m=16).
 *  3. the residuals x - c(x) of the sample; IVF_SQ takes their
 *     per-dimension min/max, IVF_PQ trains m k-means of 256 on their slices.
 *     SQ on residuals rather than on the vectors spends the 256 levels on a
 *     list's spread instead of the whole data's: recall@10 0.985 vs 0.975
 *     (L2) and 0.968 vs 0.938 (COSINE) on the test data at nprobe 8.
 *     The PQ codebooks start from random distinct rows, as FAISS's do, not
 *     from k-means++: k-means++ seeds the far rows first, and the codes it
 *     spends on them stay there through the iterations, away from the dense
 *     regions where neighbours are told apart. On Fashion-MNIST (m=16,
 *     nprobe 16) recall@10 went from 0.5651-0.5657 (3 seeds) to
 *     0.5693-0.5708 (2 seeds), FAISS 1.8.0 AVX2 giving 0.5684-0.5765 (3).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/vector/distance.h"
#include "core/vector/quantizer_internal.h"
#include "core/vector/topk.h"

#define PQ_MAX_TRAIN (256u * SF_QUANT_PQ_KSUB) /* rows per codebook, as FAISS */
#define ENCODE_BLOCK 256                       /* rows per batch-encoding block */

sf_code sf_quant_params_check(const sf_quant_params *p, sf_err *err) {
  if ((unsigned)p->type > SF_IVF_PQ)
    return sf_err_set(err, SF_EINVAL,
                      "unknown index type %d: use IVF_FLAT, IVF_SQ or IVF_PQ",
                      (int)p->type);
  if ((unsigned)p->metric > SF_DOT)
    return sf_err_set(err, SF_EINVAL, "unknown metric %d: use L2, COSINE or DOT",
                      (int)p->metric);
  if (p->dim == 0 || p->dim > SF_MAX_DIM)
    return sf_err_set(err, SF_EINVAL, "dim must be between 1 and %u, got %u", SF_MAX_DIM,
                      p->dim);
  if (p->nlist == 0 || p->nlist > SF_MAX_NLIST)
    return sf_err_set(err, SF_EINVAL, "nlist must be between 1 and %u, got %u",
                      SF_MAX_NLIST, p->nlist);
  if (p->type == SF_IVF_PQ) {
    if (p->pq_m == 0 || p->pq_m > SF_MAX_PQ_M)
      return sf_err_set(err, SF_EINVAL, "IVF_PQ needs pq_m between 1 and %u, got %u",
                        SF_MAX_PQ_M, p->pq_m);
    if (p->dim % p->pq_m)
      return sf_err_set(err, SF_EINVAL,
                        "IVF_PQ needs dim divisible by pq_m: dim %u is not a multiple of "
                        "pq_m %u (pick a pq_m that divides %u)",
                        p->dim, p->pq_m, p->dim);
  } else if (p->pq_m) {
    return sf_err_set(err, SF_EINVAL, "pq_m applies to IVF_PQ only, got pq_m %u for %s",
                      p->pq_m, sf_index_type_name(p->type));
  }
  if (p->max_train_rows && p->max_train_rows < p->nlist)
    return sf_err_set(err, SF_EINVAL, "max_train_rows (%llu) must be at least nlist (%u)",
                      (unsigned long long)p->max_train_rows, p->nlist);
  if (p->max_train_rows && p->type == SF_IVF_PQ && p->max_train_rows < SF_QUANT_PQ_KSUB)
    return sf_err_set(err, SF_EINVAL,
                      "max_train_rows (%llu) must be at least %u for IVF_PQ",
                      (unsigned long long)p->max_train_rows, SF_QUANT_PQ_KSUB);
  return SF_OK;
}

sf_code sf_quant_alloc(sf_quant *q, sf_err *err) {
  const sf_quant_params *p = &q->p;
  q->centroids = calloc((size_t)p->nlist * p->dim, sizeof(float));
  int ok = q->centroids != NULL;
  if (p->type == SF_IVF_SQ) {
    q->sq_vmin = calloc(p->dim, sizeof(float));
    q->sq_vdiff = calloc(p->dim, sizeof(float));
    q->sq_step = calloc(p->dim, sizeof(float));
    q->sq_inv = calloc(p->dim, sizeof(float));
    ok = ok && q->sq_vmin && q->sq_vdiff && q->sq_step && q->sq_inv;
  } else if (p->type == SF_IVF_PQ) {
    q->dsub = p->dim / p->pq_m;
    q->pq_cb = calloc((size_t)SF_QUANT_PQ_KSUB * p->dim, sizeof(float));
    q->pq_panels = calloc(p->pq_m, sizeof(sf_kmeans_panel));
    ok = ok && q->pq_cb && q->pq_panels;
  }
  return ok ? SF_OK
            : sf_err_set(err, SF_ENOMEM,
                         "out of memory for a quantizer (nlist %u, dim %u)", p->nlist,
                         p->dim);
}

sf_code sf_quant_finish(sf_quant *q, sf_err *err) {
  const sf_quant_params *p = &q->p;
  /* Under COSINE and DOT the lists are ranked by direction: inner product
   * with the unit-length centroids (see centroids_to_means). */
  sf_code rc;
  if (p->metric == SF_L2) {
    rc = sf_kmeans_panel_init(&q->coarse, q->centroids, p->nlist, p->dim, 0, err);
  } else {
    float *unit = malloc(sizeof(float) * p->nlist * p->dim);
    if (!unit)
      return sf_err_set(err, SF_ENOMEM, "out of memory for %u centroids", p->nlist);
    memcpy(unit, q->centroids, sizeof(float) * p->nlist * p->dim);
    for (uint32_t c = 0; c < p->nlist; c++) {
      float *v = unit + (size_t)c * p->dim, nrm = sqrtf(sf_dist_dot(v, v, p->dim));
      for (uint32_t j = 0; nrm > 0 && j < p->dim; j++) v[j] /= nrm;
    }
    rc = sf_kmeans_panel_init(&q->coarse, unit, p->nlist, p->dim, 1, err);
    free(unit);
  }
  if (rc) return rc;
  if (p->type == SF_IVF_SQ)
    for (uint32_t j = 0; j < p->dim; j++) {
      q->sq_step[j] = q->sq_vdiff[j] / 256.0f;
      q->sq_inv[j] = q->sq_step[j] > 0 ? 1.0f / q->sq_step[j] : 0.0f;
    }
  if (p->type == SF_IVF_PQ)
    for (uint32_t j = 0; j < p->pq_m; j++) {
      const float *cb = q->pq_cb + (size_t)j * SF_QUANT_PQ_KSUB * q->dsub;
      rc = sf_kmeans_panel_init(&q->pq_panels[j], cb, SF_QUANT_PQ_KSUB, q->dsub, 0, err);
      if (rc) return rc;
    }
  uint8_t *buf;
  size_t len;
  rc = sf_quant_serialize(q, &buf, &len, err);
  if (rc) return rc;
  memcpy(&q->checksum, buf + len - 8, 8); /* the trailer, little-endian */
  free(buf);
  return SF_OK;
}

void sf_quant_free(sf_quant *q) {
  if (!q) return;
  sf_kmeans_panel_free(&q->coarse);
  if (q->pq_panels)
    for (uint32_t j = 0; j < q->p.pq_m; j++) sf_kmeans_panel_free(&q->pq_panels[j]);
  free(q->pq_panels);
  free(q->pq_cb);
  free(atomic_load_explicit(&q->pq_pre, memory_order_relaxed));
  free(q->centroids);
  free(q->sq_vmin);
  free(q->sq_vdiff);
  free(q->sq_step);
  free(q->sq_inv);
  free(q);
}

/* ---- training ------------------------------------------------------------- */

static void train_sq(sf_quant *q, const float *res, size_t n) {
  const uint32_t d = q->p.dim;
  for (uint32_t j = 0; j < d; j++) {
    q->sq_vmin[j] = INFINITY;
    q->sq_vdiff[j] = -INFINITY; /* holds vmax until the end */
  }
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < d; j++) {
      float v = res[i * d + j];
      if (v < q->sq_vmin[j]) q->sq_vmin[j] = v;
      if (v > q->sq_vdiff[j]) q->sq_vdiff[j] = v;
    }
  for (uint32_t j = 0; j < d; j++) q->sq_vdiff[j] -= q->sq_vmin[j];
}

static sf_code train_pq(sf_quant *q, const float *res, size_t n, sf_err *err) {
  const uint32_t d = q->p.dim, ds = q->dsub;
  float *sub = malloc(sizeof(float) * n * ds);
  if (!sub) return sf_err_set(err, SF_ENOMEM, "out of memory training PQ codebooks");
  sf_code rc = SF_OK;
  for (uint32_t j = 0; j < q->p.pq_m && !rc; j++) {
    for (size_t i = 0; i < n; i++)
      memcpy(sub + i * ds, res + i * d + (size_t)j * ds, sizeof(float) * ds);
    sf_kmeans_params kp = {.k = SF_QUANT_PQ_KSUB,
                           .iters = q->p.kmeans_iters,
                           .seed = q->p.seed + 1000003u * (j + 1),
                           .max_rows = PQ_MAX_TRAIN,
                           .random_init = 1,
                           .nthreads = q->p.nthreads};
    rc = sf_kmeans_train(&kp, sub, n, ds, q->pq_cb + (size_t)j * SF_QUANT_PQ_KSUB * ds,
                         NULL, err);
    if (rc) sf_err_prefix(err, "PQ codebook %u", j);
  }
  free(sub);
  return rc;
}

/* Spherical k-means leaves unit centroids: right for ranking lists by
 * direction, wrong as the base of residuals, which would then be as long as
 * the rows themselves (DOT) or needlessly long (COSINE). The mean of a
 * list's rows is the best base (it minimises the squared residuals) and
 * points the same way as the spherical centroid (whose update is the
 * normalised mean), so it is what gets stored; the coarse panel ranks by
 * the normalised means (see sf_quant_finish_). A list left empty keeps its
 * unit centroid. */
static sf_code centroids_to_means(sf_quant *q, const float *xs, size_t n,
                                  const uint32_t *label, sf_err *err) {
  const uint32_t d = q->p.dim, k = q->p.nlist;
  double *sum = calloc((size_t)k * d, sizeof(double));
  size_t *count = calloc(k, sizeof(size_t));
  if (!sum || !count) {
    free(sum);
    free(count);
    return sf_err_set(err, SF_ENOMEM, "out of memory averaging %u lists", k);
  }
  for (size_t i = 0; i < n; i++) {
    double *sm = sum + (size_t)label[i] * d;
    for (uint32_t j = 0; j < d; j++) sm[j] += xs[i * d + j];
    count[label[i]]++;
  }
  for (uint32_t c = 0; c < k; c++)
    for (uint32_t j = 0; count[c] && j < d; j++)
      q->centroids[(size_t)c * d + j] = (float)(sum[(size_t)c * d + j] / count[c]);
  free(sum);
  free(count);
  return SF_OK;
}

sf_code sf_quant_train(const sf_quant_params *params, const float *x, size_t n,
                       sf_quant **out, sf_err *err) {
  *out = NULL;
  sf_code rc = sf_quant_params_check(params, err);
  if (rc) return rc;
  if (n < params->nlist)
    return sf_err_set(err, SF_EINVAL,
                      "training %u lists needs at least %u vectors, got %zu: give more "
                      "vectors or lower nlist (about n/256 to n/32 is usual)",
                      params->nlist, params->nlist, n);
  if (params->type == SF_IVF_PQ && n < SF_QUANT_PQ_KSUB)
    return sf_err_set(err, SF_EINVAL,
                      "IVF_PQ training needs at least %u vectors (one per code), got %zu",
                      SF_QUANT_PQ_KSUB, n);
  sf_quant *q = calloc(1, sizeof *q);
  if (!q) return sf_err_set(err, SF_ENOMEM, "out of memory for a quantizer");
  q->p = *params;
  if (!q->p.kmeans_iters) q->p.kmeans_iters = SF_QUANT_DEFAULT_ITERS;
  const uint32_t d = q->p.dim;
  uint64_t cap = q->p.max_train_rows;
  if (!cap) {
    cap = (uint64_t)q->p.nlist * SF_KMEANS_DEFAULT_MAX_PPC;
    if (q->p.type == SF_IVF_PQ && cap < PQ_MAX_TRAIN) cap = PQ_MAX_TRAIN;
  }
  size_t m = n < cap ? n : (size_t)cap;
  q->train_rows = m;
  size_t *idx = malloc(sizeof(size_t) * m);
  float *xs = malloc(sizeof(float) * m * d);
  uint32_t *label = malloc(sizeof(uint32_t) * m);
  if (!idx || !xs || !label) {
    rc =
        sf_err_set(err, SF_ENOMEM, "out of memory for %zu training rows of dim %u", m, d);
    goto done;
  }
  if ((rc = sf_quant_alloc(q, err))) goto done;
  sf_kmeans_sample(q->p.seed ^ 0x5f71a7e5u, n, m, idx);
  for (size_t i = 0; i < m; i++) sf_quant_prepare(q, x + idx[i] * d, xs + i * d);
  sf_kmeans_params kp = {.k = q->p.nlist,
                         .iters = q->p.kmeans_iters,
                         .seed = q->p.seed,
                         .max_rows = m,
                         .spherical = q->p.metric != SF_L2,
                         .nthreads = q->p.nthreads};
  if ((rc = sf_kmeans_train(&kp, xs, m, d, q->centroids, NULL, err))) {
    sf_err_prefix(err, "coarse quantizer");
    goto done;
  }
  if (q->p.metric != SF_L2 || q->p.type != SF_IVF_FLAT) {
    sf_kmeans_panel panel;
    if ((rc = sf_kmeans_panel_init(&panel, q->centroids, q->p.nlist, d,
                                   q->p.metric != SF_L2, err)))
      goto done;
    sf_kmeans_panel_assign_mt(&panel, xs, m, label, NULL, q->p.nthreads);
    sf_kmeans_panel_free(&panel);
  }
  if (q->p.metric != SF_L2 && (rc = centroids_to_means(q, xs, m, label, err))) goto done;
  if (q->p.type != SF_IVF_FLAT) {
    for (size_t i = 0; i < m; i++) {
      const float *c = q->centroids + (size_t)label[i] * d;
      for (uint32_t j = 0; j < d; j++) xs[i * d + j] -= c[j];
    }
    if (q->p.type == SF_IVF_SQ)
      train_sq(q, xs, m);
    else if ((rc = train_pq(q, xs, m, err)))
      goto done;
  }
  rc = sf_quant_finish(q, err);
done:
  free(idx);
  free(xs);
  free(label);
  if (rc) {
    sf_quant_free(q);
    return rc;
  }
  *out = q;
  return SF_OK;
}

/* ---- accessors ------------------------------------------------------------ */

sf_index_type sf_quant_type(const sf_quant *q) {
  return q->p.type;
}
sf_metric sf_quant_metric(const sf_quant *q) {
  return q->p.metric;
}
uint32_t sf_quant_dim(const sf_quant *q) {
  return q->p.dim;
}
uint32_t sf_quant_nlist(const sf_quant *q) {
  return q->p.nlist;
}
uint32_t sf_quant_pq_m(const sf_quant *q) {
  return q->p.pq_m;
}
uint64_t sf_quant_checksum(const sf_quant *q) {
  return q->checksum;
}
const float *sf_quant_centroids(const sf_quant *q) {
  return q->centroids;
}

size_t sf_quant_code_size(const sf_quant *q) {
  switch (q->p.type) {
    case SF_IVF_FLAT:
      return (size_t)4 * q->p.dim;
    case SF_IVF_SQ:
      return q->p.dim;
    default:
      return q->p.pq_m;
  }
}

/* ---- assignment and encoding ---------------------------------------------- */

void sf_quant_prepare(const sf_quant *q, const float *x, float *out) {
  const uint32_t d = q->p.dim;
  if (out != x) memmove(out, x, sizeof(float) * d);
  if (q->p.metric == SF_COSINE) {
    float nrm = sqrtf(sf_dist_dot(out, out, d));
    if (nrm > 0)
      for (uint32_t j = 0; j < d; j++) out[j] /= nrm;
  }
}

uint32_t sf_quant_assign(const sf_quant *q, const float *prepared) {
  uint32_t l;
  sf_kmeans_panel_assign(&q->coarse, prepared, 1, &l, NULL);
  return l;
}

void sf_quant_assign_batch(const sf_quant *q, const float *prepared, size_t n,
                           uint32_t *lists) {
  sf_kmeans_panel_assign(&q->coarse, prepared, n, lists, NULL);
}

static void encode_sq(const sf_quant *q, const float *x, const float *c, uint8_t *code) {
  for (uint32_t j = 0; j < q->p.dim; j++) {
    float v = (x[j] - c[j] - q->sq_vmin[j]) * q->sq_inv[j];
    /* floor, clamped; NaN (from a hostile range) goes to 0, not to UB */
    code[j] = !(v > 0) ? 0 : v >= 255 ? 255 : (uint8_t)v;
  }
}

/* One row: the residual slice by slice (no allocation, so that encode
 * cannot fail); wide slices go through a plain loop. */
static void encode_pq_one(const sf_quant *q, const float *x, const float *c,
                          uint8_t *code) {
  const uint32_t ds = q->dsub;
  float r[64];
  for (uint32_t j = 0; j < q->p.pq_m; j++) {
    const float *xj = x + (size_t)j * ds, *cj = c + (size_t)j * ds;
    const float *cb = q->pq_cb + (size_t)j * SF_QUANT_PQ_KSUB * ds;
    if (ds <= 64)
      for (uint32_t t = 0; t < ds; t++) r[t] = xj[t] - cj[t];
    float best = INFINITY;
    uint32_t arg = 0;
    for (uint32_t k = 0; k < SF_QUANT_PQ_KSUB; k++) {
      const float *w = cb + (size_t)k * ds;
      float s = 0;
      if (ds <= 64) {
        s = sf_dist_l2sq(r, w, ds);
      } else {
        for (uint32_t t = 0; t < ds; t++) {
          float e = xj[t] - cj[t] - w[t];
          s += e * e;
        }
      }
      if (s < best) {
        best = s;
        arg = k;
      }
    }
    code[j] = (uint8_t)arg;
  }
}

void sf_quant_encode(const sf_quant *q, const float *prepared, uint32_t list,
                     uint8_t *code) {
  const uint32_t d = q->p.dim;
  const float *c = q->centroids + (size_t)list * d;
  if (q->p.type == SF_IVF_FLAT)
    memcpy(code, prepared, sizeof(float) * d); /* little-endian hosts only */
  else if (q->p.type == SF_IVF_SQ)
    encode_sq(q, prepared, c, code);
  else
    encode_pq_one(q, prepared, c, code);
}

/* Batch PQ: residuals of a block of rows, then one panel assignment per
 * codebook over the block's slices (the kernel that trains the codebooks). */
static sf_code encode_pq_batch(const sf_quant *q, const float *x, size_t n,
                               const uint32_t *lists, uint8_t *codes, sf_err *err) {
  const uint32_t d = q->p.dim, ds = q->dsub, m = q->p.pq_m;
  float *res = malloc(sizeof(float) * ENCODE_BLOCK * d);
  float *sub = malloc(sizeof(float) * ENCODE_BLOCK * ds);
  uint32_t *lab = malloc(sizeof(uint32_t) * ENCODE_BLOCK);
  if (!res || !sub || !lab) {
    free(res);
    free(sub);
    free(lab);
    return sf_err_set(err, SF_ENOMEM, "out of memory encoding PQ codes");
  }
  for (size_t i0 = 0; i0 < n; i0 += ENCODE_BLOCK) {
    size_t b = n - i0 < ENCODE_BLOCK ? n - i0 : ENCODE_BLOCK;
    for (size_t i = 0; i < b; i++) {
      const float *v = x + (i0 + i) * d, *c = q->centroids + (size_t)lists[i0 + i] * d;
      for (uint32_t j = 0; j < d; j++) res[i * d + j] = v[j] - c[j];
    }
    for (uint32_t j = 0; j < m; j++) {
      for (size_t i = 0; i < b; i++)
        memcpy(sub + i * ds, res + i * d + (size_t)j * ds, sizeof(float) * ds);
      sf_kmeans_panel_assign(&q->pq_panels[j], sub, b, lab, NULL);
      for (size_t i = 0; i < b; i++) codes[(i0 + i) * m + j] = (uint8_t)lab[i];
    }
  }
  free(res);
  free(sub);
  free(lab);
  return SF_OK;
}

sf_code sf_quant_encode_batch(const sf_quant *q, const float *prepared, size_t n,
                              const uint32_t *lists, uint8_t *codes, sf_err *err) {
  if (q->p.type == SF_IVF_PQ) return encode_pq_batch(q, prepared, n, lists, codes, err);
  const size_t cs = sf_quant_code_size(q);
  for (size_t i = 0; i < n; i++)
    sf_quant_encode(q, prepared + i * q->p.dim, lists[i], codes + i * cs);
  return SF_OK;
}

uint32_t sf_quant_probe(const sf_quant *q, const float *prepared_query, uint32_t nprobe,
                        uint32_t *lists) {
  const uint32_t k = nprobe < q->p.nlist ? nprobe : q->p.nlist;
  if (k == 0) return 0;
  float *s = malloc(sizeof(float) * q->p.nlist);
  sf_topk t;
  if (!s || sf_topk_init(&t, k)) {
    free(s);
    return 0;
  }
  sf_kmeans_panel_scores(&q->coarse, prepared_query, s);
  for (uint32_t i = 0; i < q->p.nlist; i++) sf_topk_push(&t, s[i], i);
  uint32_t got = sf_topk_sort(&t);
  for (uint32_t i = 0; i < got; i++) lists[i] = (uint32_t)t.id[i];
  sf_topk_free(&t);
  free(s);
  return got;
}
