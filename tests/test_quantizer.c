/*
 * test_quantizer.c - the quantizer's specification, in memory: assignment,
 * probing, encoding and scanning agree with exact arithmetic where they
 * should, and an in-memory IVF index built on it reaches its recall targets
 * for every type and metric. (Training parameters and the file format are
 * in test_quantizer_file.c.)
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/base/rng.h"
#include "core/vector/distance.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "core/vector/topk.h"
#include "tests/testutil.h"

static const sf_metric METRICS[] = {SF_L2, SF_COSINE, SF_DOT};

/* Clustered data: 1000 generated clusters (more than the lists, so a list
 * holds several and probing matters), spread 0.5 around unit-variance
 * centres. For DOT the rows' norms are also spread over 0.5..1.5, so that
 * inner-product search differs from cosine search. */
#define GEN_CLUSTERS 1000
#define GEN_SIGMA 0.5f

static float *gen_for(sf_metric m, size_t n, uint32_t dim, uint64_t seed) {
  float *x = malloc(sizeof(float) * n * dim);
  assert_non_null(x);
  sf_gen_clustered(x, n, dim, GEN_CLUSTERS, GEN_SIGMA, 42, seed);
  if (m == SF_DOT) {
    sf_rng r;
    sf_rng_seed(&r, seed + 99);
    for (size_t i = 0; i < n; i++) {
      float f = 0.5f + (float)sf_rng_uniform(&r);
      for (uint32_t j = 0; j < dim; j++) x[i * dim + j] *= f;
    }
  }
  return x;
}

static float *gen(size_t n, uint32_t dim, uint64_t seed) {
  return gen_for(SF_L2, n, dim, seed);
}

static sf_quant *train(sf_index_type t, sf_metric m, uint32_t dim, uint32_t nlist,
                       uint32_t pq_m, const float *x, size_t n) {
  sf_quant_params p = {
      .type = t, .metric = m, .dim = dim, .nlist = nlist, .pq_m = pq_m, .seed = 7};
  sf_quant *q = NULL;
  sf_err err = {0};
  sf_code rc = sf_quant_train(&p, x, n, &q, &err);
  if (rc) fail_msg("train %s/%s: %s", sf_index_type_name(t), sf_metric_name(m), err.msg);
  return q;
}

/* ---- an in-memory IVF index: rows bucketed by list ------------------------ */

typedef struct mem_ivf {
  const sf_quant *q;
  size_t *start; /* nlist + 1: rows of list l are [start[l], start[l+1]) */
  uint8_t *codes;
  uint32_t *ids;
} mem_ivf;

static void ivf_build(mem_ivf *ix, const sf_quant *q, const float *x, size_t n) {
  const uint32_t d = sf_quant_dim(q), nl = sf_quant_nlist(q);
  const size_t cs = sf_quant_code_size(q);
  float *prep = malloc(sizeof(float) * n * d);
  uint32_t *lists = malloc(sizeof(uint32_t) * n);
  uint8_t *codes = malloc(cs * n);
  assert_true(prep && lists && codes);
  for (size_t i = 0; i < n; i++) sf_quant_prepare(q, x + i * d, prep + i * d);
  sf_quant_assign_batch(q, prep, n, lists);
  assert_int_equal(sf_quant_encode_batch(q, prep, n, lists, codes, NULL), SF_OK);
  ix->q = q;
  ix->start = calloc(nl + 1, sizeof(size_t));
  ix->codes = malloc(cs * n);
  ix->ids = malloc(sizeof(uint32_t) * n);
  assert_true(ix->start && ix->codes && ix->ids);
  for (size_t i = 0; i < n; i++) ix->start[lists[i] + 1]++;
  for (uint32_t l = 0; l < nl; l++) ix->start[l + 1] += ix->start[l];
  size_t *fill = malloc(sizeof(size_t) * nl);
  memcpy(fill, ix->start, sizeof(size_t) * nl);
  for (size_t i = 0; i < n; i++) {
    size_t at = fill[lists[i]]++;
    memcpy(ix->codes + at * cs, codes + i * cs, cs);
    ix->ids[at] = (uint32_t)i;
  }
  free(fill);
  free(prep);
  free(lists);
  free(codes);
}

static void ivf_free(mem_ivf *ix) {
  free(ix->start);
  free(ix->codes);
  free(ix->ids);
}

/* Mean recall@k of an nprobe search over nq queries against exact truth. */
static double ivf_recall(const mem_ivf *ix, const float *queries, size_t nq,
                         const int64_t *truth, uint32_t k, uint32_t nprobe) {
  const sf_quant *q = ix->q;
  const uint32_t d = sf_quant_dim(q);
  const size_t cs = sf_quant_code_size(q);
  sf_quant_scanner *s;
  assert_int_equal(sf_quant_scanner_new(q, &s, NULL), SF_OK);
  uint32_t *probe = malloc(sizeof(uint32_t) * nprobe);
  float *qv = malloc(sizeof(float) * d);
  float *scores = malloc(sizeof(float) * (ix->start[sf_quant_nlist(q)] + 1));
  sf_topk t;
  assert_int_equal(sf_topk_init(&t, k), 0);
  size_t hits = 0;
  for (size_t i = 0; i < nq; i++) {
    sf_quant_prepare(q, queries + i * d, qv);
    uint32_t np = sf_quant_probe(q, qv, nprobe, probe);
    sf_quant_scanner_set_query(s, qv);
    sf_topk_reset(&t);
    for (uint32_t p = 0; p < np; p++) {
      size_t a = ix->start[probe[p]], b = ix->start[probe[p] + 1];
      sf_quant_scanner_set_list(s, probe[p]);
      sf_quant_scanner_scan(s, ix->codes + a * cs, b - a, scores);
      for (size_t r = a; r < b; r++) sf_topk_push(&t, scores[r - a], ix->ids[r]);
    }
    uint32_t got = sf_topk_sort(&t);
    for (uint32_t r = 0; r < got; r++)
      for (uint32_t g = 0; g < k; g++)
        if ((int64_t)t.id[r] == truth[i * k + g]) hits++;
  }
  sf_topk_free(&t);
  free(probe);
  free(qv);
  free(scores);
  sf_quant_scanner_free(s);
  return (double)hits / ((double)nq * k);
}

/* ---- end to end ----------------------------------------------------------- */

#define E2E_N 20000
#define E2E_NQ 200
#define E2E_DIM 64
#define E2E_NLIST 128
#define E2E_K 10

static void e2e(sf_index_type type, uint32_t pq_m, uint32_t nprobe, double floor) {
  int64_t *truth = malloc(sizeof(int64_t) * E2E_NQ * E2E_K);
  for (size_t mi = 0; mi < 3; mi++) {
    sf_metric m = METRICS[mi];
    float *base = gen_for(m, E2E_N, E2E_DIM, 1), *qs = gen(E2E_NQ, E2E_DIM, 2);
    assert_int_equal(
        sf_bruteforce_knn(base, E2E_N, qs, E2E_NQ, E2E_DIM, m, E2E_K, truth, NULL),
        SF_OK);
    sf_quant *q = train(type, m, E2E_DIM, E2E_NLIST, pq_m, base, E2E_N);
    mem_ivf ix;
    ivf_build(&ix, q, base, E2E_N);
    double r = ivf_recall(&ix, qs, E2E_NQ, truth, E2E_K, nprobe);
    print_message(
        "  %-8s %-6s n %d dim %d nlist %d nprobe %u m %u: recall@10 %.3f (floor %.2f)\n",
        sf_index_type_name(type), sf_metric_name(m), E2E_N, E2E_DIM, E2E_NLIST, nprobe,
        pq_m, r, floor);
    assert_true(r >= floor);
    ivf_free(&ix);
    sf_quant_free(q);
    free(base);
    free(qs);
  }
  free(truth);
}

static void test_ivf_flat_search_reaches_095_recall_at_nprobe_8_for_every_metric(
    void **state) {
  (void)state;
  e2e(SF_IVF_FLAT, 0, 8, 0.95);
}

static void test_ivf_sq_search_reaches_085_recall_at_nprobe_8_for_every_metric(
    void **state) {
  (void)state;
  e2e(SF_IVF_SQ, 0, 8, 0.85);
}

static void test_ivf_pq_search_with_16_subquantizers_reaches_070_recall_at_nprobe_8(
    void **state) {
  (void)state;
  e2e(SF_IVF_PQ, 16, 8, 0.70);
}

/* With every list probed, IVF_FLAT is exact: the brute-force answer. */
static void test_ivf_flat_with_every_list_probed_returns_the_exact_neighbours(
    void **state) {
  (void)state;
  const size_t n = 3000, nq = 20;
  const uint32_t d = 24, k = 10;
  for (size_t mi = 0; mi < 3; mi++) {
    sf_metric m = METRICS[mi];
    float *base = gen_for(m, n, d, 3), *qs = gen(nq, d, 4);
    int64_t *truth = malloc(sizeof(int64_t) * nq * k);
    assert_int_equal(sf_bruteforce_knn(base, n, qs, nq, d, m, k, truth, NULL), SF_OK);
    sf_quant *q = train(SF_IVF_FLAT, m, d, 16, 0, base, n);
    mem_ivf ix;
    ivf_build(&ix, q, base, n);
    assert_true(ivf_recall(&ix, qs, nq, truth, k, 16) >= 0.999);
    ivf_free(&ix);
    sf_quant_free(q);
    free(truth);
    free(base);
    free(qs);
  }
}

/* ---- assignment, probing, scanning against exact arithmetic -------------- */

static float exact_score(sf_metric m, const float *a, const float *b, uint32_t d) {
  return m == SF_L2 ? sf_dist_l2sq(a, b, d) : -sf_dist_dot(a, b, d);
}

/* The coarse ranking: distance for L2, inner product with the unit-length
 * centroid direction for COSINE and DOT. */
static float coarse_score(const sf_quant *q, const float *x, uint32_t l) {
  const uint32_t d = sf_quant_dim(q);
  const float *c = sf_quant_centroids(q) + (size_t)l * d;
  if (sf_quant_metric(q) == SF_L2) return sf_dist_l2sq(x, c, d);
  float nrm = sqrtf(sf_dist_dot(c, c, d));
  return nrm > 0 ? -sf_dist_dot(x, c, d) / nrm : 0;
}

static void test_assignment_equals_the_brute_force_nearest_centroid(void **state) {
  (void)state;
  const size_t n = 4000;
  const uint32_t d = 20, nlist = 37; /* not a multiple of the kernel's 16 */
  for (size_t mi = 0; mi < 3; mi++) {
    sf_metric m = METRICS[mi];
    float *x = gen_for(m, n, d, 5);
    sf_quant *q = train(SF_IVF_FLAT, m, d, nlist, 0, x, n);
    uint32_t *lists = malloc(sizeof(uint32_t) * n);
    float *p = malloc(sizeof(float) * n * d);
    for (size_t i = 0; i < n; i++) sf_quant_prepare(q, x + i * d, p + i * d);
    sf_quant_assign_batch(q, p, n, lists);
    for (size_t i = 0; i < n; i++) {
      const float *v = p + i * d;
      float best = INFINITY;
      for (uint32_t l = 0; l < nlist; l++) best = fminf(best, coarse_score(q, v, l));
      float got = coarse_score(q, v, lists[i]);
      /* Equal up to the rounding of the expanded form the kernel uses. */
      assert_true(got <= best + 1e-4f * (fabsf(best) + 1));
      assert_int_equal(sf_quant_assign(q, v), lists[i]);
    }
    free(lists);
    free(p);
    free(x);
    sf_quant_free(q);
  }
}

static void test_probe_returns_the_nprobe_nearest_centroids_nearest_first(void **state) {
  (void)state;
  const size_t n = 3000;
  const uint32_t d = 16, nlist = 50;
  for (size_t mi = 0; mi < 3; mi++) {
    sf_metric m = METRICS[mi];
    float *x = gen_for(m, n, d, 6), *qs = gen(20, d, 7);
    sf_quant *q = train(SF_IVF_SQ, m, d, nlist, 0, x, n);
    uint32_t lists[64];
    float qv[16];
    for (size_t i = 0; i < 20; i++) {
      sf_quant_prepare(q, qs + i * d, qv);
      assert_int_equal(sf_quant_probe(q, qv, 10, lists), 10);
      assert_int_equal(lists[0], sf_quant_assign(q, qv));
      float worst_in = -INFINITY;
      for (uint32_t a = 0; a < 10; a++) {
        float s = coarse_score(q, qv, lists[a]);
        if (a) assert_true(s >= coarse_score(q, qv, lists[a - 1]) - 1e-4f);
        worst_in = fmaxf(worst_in, s);
      }
      for (uint32_t l = 0; l < nlist; l++) {
        int in = 0;
        for (uint32_t a = 0; a < 10; a++) in |= lists[a] == l;
        if (!in) assert_true(coarse_score(q, qv, l) >= worst_in - 1e-4f);
      }
      /* nprobe beyond nlist probes every list once. */
      assert_int_equal(sf_quant_probe(q, qv, 64, lists), nlist);
    }
    free(x);
    free(qs);
    sf_quant_free(q);
  }
}

static void test_ivf_flat_scanner_scores_equal_exact_scores(void **state) {
  (void)state;
  const size_t n = 500;
  const uint32_t d = 33;
  for (size_t mi = 0; mi < 3; mi++) {
    sf_metric m = METRICS[mi];
    float *x = gen_for(m, n, d, 8), *qs = gen(5, d, 9);
    sf_quant *q = train(SF_IVF_FLAT, m, d, 8, 0, x, n);
    assert_int_equal(sf_quant_code_size(q), 4 * d);
    float *p = malloc(sizeof(float) * n * d), *sc = malloc(sizeof(float) * n), qv[33];
    for (size_t i = 0; i < n; i++) sf_quant_prepare(q, x + i * d, p + i * d);
    sf_quant_scanner *s;
    assert_int_equal(sf_quant_scanner_new(q, &s, NULL), SF_OK);
    for (size_t i = 0; i < 5; i++) {
      sf_quant_prepare(q, qs + i * d, qv);
      sf_quant_scanner_set_query(s, qv);
      sf_quant_scanner_set_list(s, 3);
      sf_quant_scanner_scan(s, (const uint8_t *)p, n, sc);
      for (size_t r = 0; r < n; r++) {
        float e = exact_score(m, qv, p + r * d, d);
        assert_true(fabsf(sc[r] - e) <= 1e-5f * (fabsf(e) + 1));
      }
    }
    sf_quant_scanner_free(s);
    free(p);
    free(sc);
    free(x);
    free(qs);
    sf_quant_free(q);
  }
}

/* Re-ranking: 300 random candidates per query, each scored in its own list;
 * recall@10 of the scanner's top 10 against the exact top 10 of the same
 * candidates. */
static double rerank_recall(sf_index_type t, sf_metric m, uint32_t pq_m) {
  const size_t n = 6000, nq = 30, nc = 300;
  const uint32_t d = 32;
  float *x = gen_for(m, n, d, 10), *qs = gen(nq, d, 11);
  sf_quant *q = train(t, m, d, 32, pq_m, x, n);
  const size_t cs = sf_quant_code_size(q);
  float *p = malloc(sizeof(float) * n * d), qv[32];
  uint32_t *lists = malloc(sizeof(uint32_t) * n);
  uint8_t *codes = malloc(cs * n);
  for (size_t i = 0; i < n; i++) sf_quant_prepare(q, x + i * d, p + i * d);
  sf_quant_assign_batch(q, p, n, lists);
  assert_int_equal(sf_quant_encode_batch(q, p, n, lists, codes, NULL), SF_OK);
  sf_quant_scanner *s;
  assert_int_equal(sf_quant_scanner_new(q, &s, NULL), SF_OK);
  sf_topk ta, te;
  assert_int_equal(sf_topk_init(&ta, 10), 0);
  assert_int_equal(sf_topk_init(&te, 10), 0);
  sf_rng r;
  sf_rng_seed(&r, 12);
  size_t hits = 0;
  for (size_t i = 0; i < nq; i++) {
    sf_quant_prepare(q, qs + i * d, qv);
    sf_quant_scanner_set_query(s, qv);
    size_t start = sf_rng_below(&r, n);
    sf_topk_reset(&ta);
    sf_topk_reset(&te);
    for (size_t c = 0; c < nc; c++) {
      size_t row = (start + c * 19) % n; /* distinct: 19 is prime to n */
      float sc;
      sf_quant_scanner_set_list(s, lists[row]);
      sf_quant_scanner_scan(s, codes + row * cs, 1, &sc);
      sf_topk_push(&ta, sc, row);
      sf_topk_push(&te, exact_score(m, qv, p + row * d, d), row);
    }
    uint32_t na = sf_topk_sort(&ta), ne = sf_topk_sort(&te);
    for (uint32_t a = 0; a < na; a++)
      for (uint32_t b = 0; b < ne; b++) hits += ta.id[a] == te.id[b];
  }
  sf_topk_free(&ta);
  sf_topk_free(&te);
  sf_quant_scanner_free(s);
  free(p);
  free(lists);
  free(codes);
  free(x);
  free(qs);
  sf_quant_free(q);
  return (double)hits / (nq * 10.0);
}

static void test_sq_and_pq_scanner_scores_rank_candidates_like_exact_scores(
    void **state) {
  (void)state;
  for (size_t mi = 0; mi < 3; mi++) {
    double sq = rerank_recall(SF_IVF_SQ, METRICS[mi], 0);
    double pq = rerank_recall(SF_IVF_PQ, METRICS[mi], 16);
    print_message("  %-6s re-rank recall@10 of 300 candidates: SQ %.3f, PQ m=16 %.3f\n",
                  sf_metric_name(METRICS[mi]), sq, pq);
    assert_true(sq >= 0.90);
    assert_true(pq >= 0.60);
  }
}

static void test_pq_batch_encoding_equals_encoding_one_row_at_a_time(void **state) {
  (void)state;
  const size_t n = 1000;
  const uint32_t d = 24;
  float *x = gen(n, d, 13);
  sf_quant *q = train(SF_IVF_PQ, SF_L2, d, 8, 6, x, n);
  uint32_t *lists = malloc(sizeof(uint32_t) * n);
  uint8_t *a = malloc(6 * n), b[6];
  sf_quant_assign_batch(q, x, n, lists);
  assert_int_equal(sf_quant_encode_batch(q, x, n, lists, a, NULL), SF_OK);
  size_t same = 0;
  for (size_t i = 0; i < n; i++) {
    sf_quant_encode(q, x + i * d, lists[i], b);
    same += !memcmp(a + i * 6, b, 6);
  }
  /* The two paths round differently; a near tie may flip a rare code. */
  assert_true(same >= n * 99 / 100);
  free(lists);
  free(a);
  free(x);
  sf_quant_free(q);
}

/* The precomputed tables (per-list term held by the quantizer, per-query
 * term at set_query) change the arithmetic, not the scores: every code of
 * every probed list scores as with the per-list tables, within rounding. */
static void test_pq_scores_from_precomputed_tables_equal_per_list_tables(void **state) {
  (void)state;
  const size_t n = 4000, nq = 10;
  const uint32_t d = 48, nlist = 16;
  static const uint32_t ms[] = {6, 16, 48};
  for (size_t mi = 0; mi < 3; mi++)
    for (size_t pi = 0; pi < 3; pi++) {
      float *x = gen_for(METRICS[mi], n, d, 30 + pi), *qs = gen(nq, d, 31), qv[48];
      sf_quant *q = train(SF_IVF_PQ, METRICS[mi], d, nlist, ms[pi], x, n);
      const size_t cs = sf_quant_code_size(q);
      uint32_t *lists = malloc(sizeof(uint32_t) * n);
      uint8_t *codes = malloc(cs * n);
      float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
      for (size_t i = 0; i < n; i++) sf_quant_prepare(q, x + i * d, x + i * d);
      sf_quant_assign_batch(q, x, n, lists);
      assert_int_equal(sf_quant_encode_batch(q, x, n, lists, codes, NULL), SF_OK);
      sf_quant_scanner *pre, *per;
      assert_int_equal(sf_quant_scanner_new(q, &pre, NULL), SF_OK);
      assert_int_equal(
          sf_quant_scanner_new_ex(q, SF_QUANT_SCAN_NO_PRECOMPUTE, &per, NULL), SF_OK);
      double worst = 0;
      for (size_t i = 0; i < nq; i++) {
        sf_quant_prepare(q, qs + i * d, qv);
        sf_quant_scanner_set_query(pre, qv);
        sf_quant_scanner_set_query(per, qv);
        for (uint32_t l = 0; l < nlist; l++) {
          /* every code scored as if it were in list l: all tables are used */
          sf_quant_scanner_set_list(pre, l);
          sf_quant_scanner_set_list(per, l);
          sf_quant_scanner_scan(pre, codes, n, a);
          sf_quant_scanner_scan(per, codes, n, b);
          for (size_t r = 0; r < n; r++) {
            double e = fabs((double)a[r] - b[r]) / (1.0 + fabs((double)b[r]));
            if (e > worst) worst = e;
          }
        }
      }
      print_message("  %-6s m=%-2u largest relative difference %.2e\n",
                    sf_metric_name(METRICS[mi]), ms[pi], worst);
      assert_true(worst < 1e-4);
      sf_quant_scanner_free(pre);
      sf_quant_scanner_free(per);
      sf_quant_free(q);
      free(lists);
      free(codes);
      free(a);
      free(b);
      free(x);
      free(qs);
    }
}

static void test_prepare_normalises_for_cosine_and_copies_otherwise(void **state) {
  (void)state;
  float *x = gen(300, 8, 14), out[8];
  for (size_t mi = 0; mi < 3; mi++) {
    sf_quant *q = train(SF_IVF_FLAT, METRICS[mi], 8, 4, 0, x, 300);
    sf_quant_prepare(q, x, out);
    if (METRICS[mi] == SF_COSINE)
      assert_true(fabsf(sf_dist_dot(out, out, 8) - 1) < 1e-5f);
    else
      assert_memory_equal(out, x, sizeof out);
    sf_quant_free(q);
  }
  free(x);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_assignment_equals_the_brute_force_nearest_centroid),
      cmocka_unit_test(test_probe_returns_the_nprobe_nearest_centroids_nearest_first),
      cmocka_unit_test(test_ivf_flat_scanner_scores_equal_exact_scores),
      cmocka_unit_test(test_sq_and_pq_scanner_scores_rank_candidates_like_exact_scores),
      cmocka_unit_test(test_pq_batch_encoding_equals_encoding_one_row_at_a_time),
      cmocka_unit_test(test_pq_scores_from_precomputed_tables_equal_per_list_tables),
      cmocka_unit_test(test_prepare_normalises_for_cosine_and_copies_otherwise),
      cmocka_unit_test(test_ivf_flat_with_every_list_probed_returns_the_exact_neighbours),
      cmocka_unit_test(
          test_ivf_flat_search_reaches_095_recall_at_nprobe_8_for_every_metric),
      cmocka_unit_test(
          test_ivf_sq_search_reaches_085_recall_at_nprobe_8_for_every_metric),
      cmocka_unit_test(
          test_ivf_pq_search_with_16_subquantizers_reaches_070_recall_at_nprobe_8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
