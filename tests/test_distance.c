/*
 * test_distance.c - the distance kernels: the PQ table scan gives the same
 * sums by its scalar and AVX2 implementations, and both equal the one-code
 * lookup sf_dist_pq_lut, for any code width and count (tails included); the
 * IVF_SQ scans by both implementations equal a float64 reference; the FLAT
 * batch scores equal the one-row kernels bit for bit; the split PQ scan
 * gives the same bits from the terms it computed as from the tables.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/base/rng.h"
#include "core/vector/distance.h"
#include "tests/testutil.h"

static void check_scan(sf_dist_pq_scan_fn f, size_t m, size_t n, sf_rng *r) {
  float *table = malloc(sizeof(float) * m * 256), *out = malloc(sizeof(float) * (n + 1));
  uint8_t *codes = malloc(m * n + 8);
  assert_non_null(table);
  assert_non_null(out);
  assert_non_null(codes);
  for (size_t i = 0; i < m * 256; i++) table[i] = (float)sf_rng_uniform(r) * 4.0f - 1.0f;
  for (size_t i = 0; i < m * n; i++) codes[i] = (uint8_t)sf_rng_below(r, 256);
  out[n] = 12345.0f; /* a sentinel: the scan writes n scores, no more */
  f(table, codes, n, m, 0.25f, out);
  for (size_t i = 0; i < n; i++) {
    float want = 0.25f + sf_dist_pq_lut(table, codes + i * m, m);
    assert_true(fabsf(out[i] - want) <= 1e-5f * (float)m);
  }
  assert_true(out[n] == 12345.0f);
  free(table);
  free(out);
  free(codes);
}

static void test_pq_scan_by_scalar_and_avx2_equals_one_code_lookups_for_any_m_and_n(
    void **state) {
  (void)state;
  static const size_t ms[] = {1, 3, 4, 7, 8, 9, 16, 17, 32, 64, 98};
  static const size_t ns[] = {0, 1, 3, 4, 5, 8, 33, 257};
  sf_dist_pq_scan_fn scalar = sf_dist_pq_scan_named("scalar");
  sf_dist_pq_scan_fn avx2 = sf_dist_pq_scan_named("avx2");
  assert_non_null(scalar);
  assert_null(sf_dist_pq_scan_named("no-such-kernel"));
  if (!avx2) print_message("  this CPU has no AVX2: only the scalar kernel is checked\n");
  sf_rng r;
  sf_rng_seed(&r, 5);
  for (size_t a = 0; a < sizeof ms / sizeof *ms; a++)
    for (size_t b = 0; b < sizeof ns / sizeof *ns; b++) {
      check_scan(scalar, ms[a], ns[b], &r);
      if (avx2) check_scan(avx2, ms[a], ns[b], &r);
      check_scan(sf_dist_pq_scan, ms[a], ns[b], &r);
    }
}

/* A code's score must not depend on where it sits in a scan: a search scans
 * a partition chunk by chunk, and the same rows are split into chunks
 * differently by one shard, several, or a compaction's output. The scan that
 * searches use (and the split one) gives each code the bits it gets when
 * scanned alone, whatever n and offset. */
static void test_pq_scan_scores_a_code_alike_at_any_position(void **state) {
  (void)state;
  static const size_t ms[] = {1, 3, 4, 5, 8, 16, 17, 98};
  sf_rng r;
  sf_rng_seed(&r, 17);
  for (size_t a = 0; a < sizeof ms / sizeof *ms; a++) {
    const size_t m = ms[a], n = 11;
    float *table = malloc(sizeof(float) * m * 256),
          *pre = malloc(sizeof(float) * m * 256);
    float all[11], part[11], alone, s_all[11], s_alone;
    uint8_t *codes = malloc(m * n);
    assert_true(table && pre && codes);
    for (size_t i = 0; i < m * 256; i++) {
      table[i] = (float)sf_rng_uniform(&r) * 7.0f - 3.0f;
      pre[i] = (float)sf_rng_uniform(&r) * 5.0f - 2.0f;
    }
    for (size_t i = 0; i < m * n; i++) codes[i] = (uint8_t)sf_rng_below(&r, 256);
    sf_dist_pq_scan(table, codes, n, m, 0.5f, all);
    sf_dist_pq_scan_split(table, pre, 1.0f, codes, n, m, 0.5f, NULL, s_all);
    for (size_t off = 0; off < n; off++) {
      sf_dist_pq_scan(table, codes + off * m, 1, m, 0.5f, &alone);
      sf_dist_pq_scan_split(table, pre, 1.0f, codes + off * m, 1, m, 0.5f, NULL,
                            &s_alone);
      assert_memory_equal(&all[off], &alone, sizeof alone);
      assert_memory_equal(&s_all[off], &s_alone, sizeof alone);
      sf_dist_pq_scan(table, codes + off * m, n - off, m, 0.5f, part);
      assert_memory_equal(all + off, part, sizeof(float) * (n - off));
    }
    free(table);
    free(pre);
    free(codes);
  }
}

/* The split PQ scan: with pre it computes the codes' terms; given those
 * terms back it gives the same scores bit for bit (what a searcher that
 * keeps them relies on), for any m and n, tails included; terms of NULL are
 * accepted; and the scores are the one-table scan's over scale*pre + qt
 * within rounding. */
static void check_split(sf_dist_pq_split_fn f, size_t m, size_t n, float scale,
                        sf_rng *r) {
  float *qt = malloc(sizeof(float) * m * 256), *pre = malloc(sizeof(float) * m * 256);
  float *lut = malloc(sizeof(float) * m * 256), *terms = malloc(sizeof(float) * (n + 1));
  float *a = malloc(sizeof(float) * (n + 1)), *b = malloc(sizeof(float) * (n + 1));
  float *c = malloc(sizeof(float) * (n + 1)), *d = malloc(sizeof(float) * (n + 1));
  uint8_t *codes = malloc(m * n + 8);
  assert_true(qt && pre && lut && terms && a && b && c && d && codes);
  for (size_t i = 0; i < m * 256; i++) {
    qt[i] = (float)sf_rng_uniform(r) * 8.0f - 2.0f;
    pre[i] = (float)sf_rng_uniform(r) * 6.0f - 3.0f;
    lut[i] = scale * pre[i] + qt[i];
  }
  for (size_t i = 0; i < m * n; i++) codes[i] = (uint8_t)sf_rng_below(r, 256);
  a[n] = b[n] = terms[n] = -7.0f;
  f(qt, pre, scale, codes, n, m, 0.25f, terms, a);
  f(qt, NULL, scale, codes, n, m, 0.25f, terms, b);
  f(qt, pre, scale, codes, n, m, 0.25f, NULL, c);
  sf_dist_pq_scan_named("scalar")(lut, codes, n, m, 0.25f, d);
  assert_true(a[n] == -7.0f && b[n] == -7.0f && terms[n] == -7.0f); /* none past n */
  if (n) {
    assert_memory_equal(a, b, sizeof(float) * n);
    assert_memory_equal(a, c, sizeof(float) * n);
  }
  for (size_t i = 0; i < n; i++) {
    double want = 0, mag = 0;
    for (size_t j = 0; j < m; j++) {
      size_t e = j * 256 + codes[i * m + j];
      want += (double)scale * pre[e] + qt[e];
      mag += fabs(pre[e]) + fabs(qt[e]);
    }
    assert_true(fabs(a[i] - 0.25 - want) <= 1e-5 * (mag + 1));
    assert_true(fabs((double)a[i] - d[i]) <= 1e-5 * (mag + 1));
  }
  free(qt), free(pre), free(lut), free(terms), free(a), free(b), free(c), free(d);
  free(codes);
}

static void test_pq_split_scan_gives_the_same_bits_with_its_kept_terms(void **state) {
  (void)state;
  static const size_t ms[] = {1, 3, 4, 7, 8, 9, 16, 17, 32, 64, 98};
  static const size_t ns[] = {0, 1, 3, 4, 5, 8, 33, 257};
  sf_dist_pq_split_fn scalar = sf_dist_pq_split_named("scalar");
  assert_non_null(scalar);
  assert_null(sf_dist_pq_split_named("no-such-kernel"));
  sf_rng r;
  sf_rng_seed(&r, 9);
  for (size_t a = 0; a < sizeof ms / sizeof *ms; a++)
    for (size_t b = 0; b < sizeof ns / sizeof *ns; b++)
      for (int h = 0; h < 2; h++) {
        check_split(scalar, ms[a], ns[b], h ? 0.5f : 1.0f, &r);
        check_split(sf_dist_pq_scan_split, ms[a], ns[b], h ? 0.5f : 1.0f, &r);
      }
}

static const size_t SQ_DIMS[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100, 784};
static const size_t SQ_NS[] = {0, 1, 3, 4, 5, 7, 8, 9, 33};

/* Random u, v, w and codes; every kernel's output against float64 sums,
 * within 1e-5 of the sum of absolute terms, and not a score past n. */
static void check_sq(sf_dist_sq_l2_fn l2, sf_dist_sq_ip_fn ip, size_t dim, size_t n,
                     sf_rng *r) {
  float *u = malloc(sizeof(float) * dim), *v = malloc(sizeof(float) * dim);
  float *w = malloc(sizeof(float) * dim), *out = malloc(sizeof(float) * (n + 1));
  uint8_t *codes = malloc(dim * n + 1);
  assert_true(u && v && w && out && codes);
  for (size_t j = 0; j < dim; j++) {
    v[j] = (float)sf_rng_uniform(r) * 0.02f;
    if (j % 5 == 3) v[j] = 0; /* a constant dimension */
    u[j] = (float)sf_rng_uniform(r) * 6.0f - 1.0f;
    w[j] = (float)sf_rng_uniform(r) * 2.0f - 1.0f;
  }
  for (size_t i = 0; i < dim * n; i++) codes[i] = (uint8_t)sf_rng_below(r, 256);
  out[n] = 12345.0f;
  l2(u, v, codes, n, dim, 0.5f, out);
  for (size_t i = 0; i < n; i++) {
    double want = 0.5;
    for (size_t j = 0; j < dim; j++) {
      double e = (double)u[j] - (double)v[j] * codes[i * dim + j];
      want += e * e;
    }
    assert_true(fabs(out[i] - want) <= 1e-5 * want);
  }
  assert_true(out[n] == 12345.0f);
  ip(w, codes, n, dim, -2.0f, out);
  for (size_t i = 0; i < n; i++) {
    double want = -2.0, mag = 2.0;
    for (size_t j = 0; j < dim; j++) {
      want -= (double)w[j] * codes[i * dim + j];
      mag += fabs((double)w[j] * codes[i * dim + j]);
    }
    assert_true(fabs(out[i] - want) <= 1e-5 * mag);
  }
  assert_true(out[n] == 12345.0f);
  free(u);
  free(v);
  free(w);
  free(out);
  free(codes);
}

static void test_sq_scans_by_scalar_and_avx2_equal_float64_sums_for_any_dim_and_n(
    void **state) {
  (void)state;
  sf_dist_sq_l2_fn l2s = sf_dist_sq_l2_named("scalar"), l2a = sf_dist_sq_l2_named("avx2");
  sf_dist_sq_ip_fn ips = sf_dist_sq_ip_named("scalar"), ipa = sf_dist_sq_ip_named("avx2");
  assert_non_null(l2s);
  assert_non_null(ips);
  assert_null(sf_dist_sq_l2_named("no-such-kernel"));
  assert_null(sf_dist_sq_ip_named("no-such-kernel"));
  assert_true((l2a == NULL) == (ipa == NULL));
  if (!l2a)
    print_message("  this CPU has no AVX2: only the scalar SQ kernels are checked\n");
  sf_rng r;
  sf_rng_seed(&r, 7);
  for (size_t a = 0; a < sizeof SQ_DIMS / sizeof *SQ_DIMS; a++)
    for (size_t b = 0; b < sizeof SQ_NS / sizeof *SQ_NS; b++) {
      check_sq(l2s, ips, SQ_DIMS[a], SQ_NS[b], &r);
      if (l2a) check_sq(l2a, ipa, SQ_DIMS[a], SQ_NS[b], &r);
      check_sq(sf_dist_sq_l2_scan, sf_dist_sq_ip_scan, SQ_DIMS[a], SQ_NS[b], &r);
    }
}

/* The scalar and AVX2 SQ kernels rank the same codes alike: on 64 codes of
 * dim 784 their scores differ by float rounding only. */
static void test_sq_scalar_and_avx2_scores_agree_at_dim_784(void **state) {
  (void)state;
  sf_dist_sq_l2_fn l2s = sf_dist_sq_l2_named("scalar"), l2a = sf_dist_sq_l2_named("avx2");
  if (!l2a) {
    print_message("  this CPU has no AVX2: nothing to compare\n");
    return;
  }
  const size_t dim = 784, n = 64;
  float *u = malloc(sizeof(float) * dim), *v = malloc(sizeof(float) * dim);
  float *a = malloc(sizeof(float) * n), *b = malloc(sizeof(float) * n);
  uint8_t *codes = malloc(dim * n);
  assert_true(u && v && a && b && codes);
  sf_rng r;
  sf_rng_seed(&r, 8);
  for (size_t j = 0; j < dim; j++) {
    v[j] = (float)sf_rng_uniform(&r) * 0.01f + 0.001f;
    u[j] = (float)sf_rng_uniform(&r) * 2.56f * v[j] * 100.0f;
  }
  for (size_t i = 0; i < dim * n; i++) codes[i] = (uint8_t)sf_rng_below(&r, 256);
  l2s(u, v, codes, n, dim, 0, a);
  l2a(u, v, codes, n, dim, 0, b);
  for (size_t i = 0; i < n; i++) assert_true(fabsf(a[i] - b[i]) <= 1e-5f * a[i]);
  free(u);
  free(v);
  free(a);
  free(b);
  free(codes);
}

/* sf_dist_score_batch (4 rows per pass, prefetching) against the one-row
 * kernels: equal bit for bit, for every dim tail and row count. */
static void test_flat_batch_scores_equal_one_row_scores_bit_for_bit(void **state) {
  (void)state;
  sf_rng r;
  sf_rng_seed(&r, 9);
  for (size_t a = 0; a < sizeof SQ_DIMS / sizeof *SQ_DIMS; a++)
    for (size_t b = 0; b < sizeof SQ_NS / sizeof *SQ_NS; b++) {
      const size_t dim = SQ_DIMS[a], n = SQ_NS[b];
      float *q = malloc(sizeof(float) * dim), *x = malloc(sizeof(float) * (dim * n + 1));
      float *out = malloc(sizeof(float) * (n + 1));
      assert_true(q && x && out);
      for (size_t j = 0; j < dim; j++) q[j] = (float)sf_rng_uniform(&r) * 2.0f - 1.0f;
      for (size_t i = 0; i < dim * n; i++) x[i] = (float)sf_rng_uniform(&r) * 2.0f - 1.0f;
      out[n] = 12345.0f;
      sf_dist_score_batch(SF_L2, q, x, n, dim, out);
      for (size_t i = 0; i < n; i++)
        assert_true(out[i] == sf_dist_l2sq(q, x + i * dim, dim));
      sf_dist_score_batch(SF_DOT, q, x, n, dim, out);
      for (size_t i = 0; i < n; i++)
        assert_true(out[i] == -sf_dist_dot(q, x + i * dim, dim));
      assert_true(out[n] == 12345.0f);
      free(q);
      free(x);
      free(out);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(
          test_pq_scan_by_scalar_and_avx2_equals_one_code_lookups_for_any_m_and_n),
      cmocka_unit_test(
          test_sq_scans_by_scalar_and_avx2_equal_float64_sums_for_any_dim_and_n),
      cmocka_unit_test(test_sq_scalar_and_avx2_scores_agree_at_dim_784),
      cmocka_unit_test(test_pq_split_scan_gives_the_same_bits_with_its_kept_terms),
      cmocka_unit_test(test_pq_scan_scores_a_code_alike_at_any_position),
      cmocka_unit_test(test_flat_batch_scores_equal_one_row_scores_bit_for_bit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
