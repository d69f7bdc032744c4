/*
 * test_kmeans.c - k-means and its assignment kernel: the kernel finds the
 * brute-force nearest centroid for every shape (dims that are not a
 * multiple of 8, k not a multiple of 16, a tail of rows) by every kernel,
 * the AVX2 and AVX-512 ones bit for bit alike, random seeds are distinct
 * points, training improves
 * on its seeding, is bit-for-bit deterministic for a seed, samples within
 * its cap, and leaves no cluster empty.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/vector/distance.h"
#include "core/vector/gen.h"
#include "core/vector/kmeans.h"

static float *gen(size_t n, uint32_t dim, uint32_t clusters, uint64_t seed) {
  float *x = malloc(sizeof(float) * n * dim);
  assert_non_null(x);
  sf_gen_clustered(x, n, dim, clusters, 0.3f, 11, seed);
  return x;
}

static void test_panel_assignment_equals_brute_force_for_every_shape(void **state) {
  (void)state;
  const uint32_t dims[] = {1, 2, 3, 7, 16, 33, 128};
  const uint32_t ks[] = {1, 5, 16, 17, 100};
  const size_t n = 203; /* not a multiple of the 4-row groups or the tile */
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
      for (int ip = 0; ip < 2; ip++) {
        uint32_t d = dims[di], k = ks[ki];
        float *x = gen(n, d, 10, 1), *c = gen(k, d, 10, 2);
        sf_kmeans_panel p;
        assert_int_equal(sf_kmeans_panel_init(&p, c, k, d, ip, NULL), SF_OK);
        uint32_t *lab = malloc(sizeof(uint32_t) * n);
        float *sc = malloc(sizeof(float) * n), *all = malloc(sizeof(float) * k);
        sf_kmeans_panel_assign(&p, x, n, lab, sc);
        for (size_t i = 0; i < n; i++) {
          const float *v = x + i * d;
          float best = INFINITY;
          for (uint32_t j = 0; j < k; j++)
            best = fminf(best, ip ? -sf_dist_dot(v, c + (size_t)j * d, d)
                                  : sf_dist_l2sq(v, c + (size_t)j * d, d));
          float got = ip ? -sf_dist_dot(v, c + (size_t)lab[i] * d, d)
                         : sf_dist_l2sq(v, c + (size_t)lab[i] * d, d);
          float tol = 1e-4f * (fabsf(best) + sf_dist_dot(v, v, d) + 1);
          assert_true(lab[i] < k);
          assert_true(got <= best + tol);
          assert_true(fabsf(sc[i] - best) <= tol);
          /* The one-row scores order the centroids the same way. */
          sf_kmeans_panel_scores(&p, v, all);
          for (uint32_t j = 0; j < k; j++) assert_true(all[j] >= all[lab[i]] - tol);
        }
        sf_kmeans_panel_free(&p);
        free(lab);
        free(sc);
        free(all);
        free(x);
        free(c);
      }
}

/* Every kernel this CPU has (portable, AVX2, AVX-512) finds the nearest
 * centroid, ties to the lower index; AVX2 and AVX-512 give the same labels
 * and scores bit for bit, so training does not depend on which one ran. */
static void test_assignment_kernels_agree_and_the_avx_ones_bit_for_bit(void **state) {
  (void)state;
  const uint32_t dims[] = {1, 3, 16, 33, 784};
  const uint32_t ks[] = {1, 17, 33, 48, 100, 256};
  const size_t n = 203;
  static const char *const impls[] = {"portable", "avx2", "avx512"};
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
      for (int ip = 0; ip < 2; ip++) {
        const uint32_t d = dims[di], k = ks[ki];
        float *x = gen(n, d, 10, 3), *c = gen(k, d, 10, 4);
        /* Duplicates of centroid 0 in later blocks: ties. */
        for (uint32_t j = 20; j < k; j += 13)
          memcpy(c + (size_t)j * d, c, sizeof(float) * d);
        memcpy(x, c, sizeof(float) * d); /* row 0 sits on centroid 0 */
        sf_kmeans_panel p;
        assert_int_equal(sf_kmeans_panel_init(&p, c, k, d, ip, NULL), SF_OK);
        uint32_t *lab[3];
        float *sc[3];
        int have[3];
        for (int m = 0; m < 3; m++) {
          lab[m] = malloc(sizeof(uint32_t) * n);
          sc[m] = malloc(sizeof(float) * n);
          assert_true(lab[m] && sc[m]);
          have[m] = sf_kmeans_panel_assign_named(impls[m], &p, x, n, lab[m], sc[m]) == 0;
        }
        assert_true(have[0]);
        assert_int_equal(sf_kmeans_panel_assign_named("none", &p, x, n, lab[0], sc[0]),
                         -1);
        for (int m = 0; m < 3; m++) {
          if (!have[m]) continue;
          if (!ip) assert_int_equal(lab[m][0], 0);
          for (size_t i = 0; i < n; i++) {
            const float *v = x + i * d;
            float best = INFINITY;
            for (uint32_t j = 0; j < k; j++)
              best = fminf(best, ip ? -sf_dist_dot(v, c + (size_t)j * d, d)
                                    : sf_dist_l2sq(v, c + (size_t)j * d, d));
            float got = ip ? -sf_dist_dot(v, c + (size_t)lab[m][i] * d, d)
                           : sf_dist_l2sq(v, c + (size_t)lab[m][i] * d, d);
            float tol = 1e-4f * (fabsf(best) + sf_dist_dot(v, v, d) + 1);
            assert_true(lab[m][i] < k);
            assert_true(got <= best + tol);
            /* a duplicate of centroid 0 never wins over it */
            assert_false(lab[m][i] >= 20 && (lab[m][i] - 20) % 13 == 0);
          }
        }
        if (have[1] && have[2]) {
          assert_memory_equal(lab[1], lab[2], sizeof(uint32_t) * n);
          assert_memory_equal(sc[1], sc[2], sizeof(float) * n);
        }
        for (int m = 0; m < 3; m++) {
          free(lab[m]);
          free(sc[m]);
        }
        sf_kmeans_panel_free(&p);
        free(x);
        free(c);
      }
}

/* The panel scores of one row (the PQ tables and the coarse probe): every
 * kernel within rounding of the portable one, and the AVX ones, one, two or
 * four blocks at a time, bit for bit alike, for dims odd and even, k not a
 * multiple of 16 (a partial last block) and block counts that leave a
 * remainder for the grouped kernels. */
static void test_panel_score_kernels_agree_bit_for_bit(void **state) {
  (void)state;
  const uint32_t dims[] = {1, 2, 7, 8, 49, 784};
  const uint32_t ks[] = {1, 16, 17, 40, 100, 256};
  static const char *const impls[] = {"portable", "avx2", "avx2x2", "avx512"};
  for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
      for (int ip = 0; ip < 2; ip++) {
        const uint32_t d = dims[di], k = ks[ki];
        float *x = gen(1, d, 1, 5), *c = gen(k, d, 10, 6);
        sf_kmeans_panel p;
        assert_int_equal(sf_kmeans_panel_init(&p, c, k, d, ip, NULL), SF_OK);
        float *out[4], *dflt = malloc(sizeof(float) * (k + 1));
        int have[4];
        assert_non_null(dflt);
        dflt[k] = 12345.f;
        sf_kmeans_panel_scores(&p, x, dflt);
        assert_true(dflt[k] == 12345.f); /* nothing written past k */
        for (int m = 0; m < 4; m++) {
          out[m] = malloc(sizeof(float) * k);
          assert_non_null(out[m]);
          have[m] = sf_kmeans_panel_scores_named(impls[m], &p, x, out[m]);
        }
        assert_true(have[0]);
        assert_false(sf_kmeans_panel_scores_named("none", &p, x, out[0]));
        for (uint32_t j = 0; j < k; j++) {
          const float *cj = c + (size_t)j * d;
          float want =
              ip ? -sf_dist_dot(x, cj, d) : sf_dist_l2sq(x, cj, d) - sf_dist_dot(x, x, d);
          float tol = 1e-4f * (sf_dist_dot(x, x, d) + sf_dist_dot(cj, cj, d) + 1);
          for (int m = 0; m < 4; m++)
            if (have[m]) assert_true(fabsf(out[m][j] - want) <= tol);
        }
        for (int m = 2; m < 4; m++)
          if (have[1] && have[m]) assert_memory_equal(out[1], out[m], sizeof(float) * k);
        if (have[1]) assert_memory_equal(out[1], dflt, sizeof(float) * k);
        for (int m = 0; m < 4; m++) free(out[m]);
        free(dflt);
        sf_kmeans_panel_free(&p);
        free(x);
        free(c);
      }
}

static void test_training_improves_on_its_seeding_in_both_modes(void **state) {
  (void)state;
  float *x = gen(5000, 24, 40, 3);
  float *c = malloc(sizeof(float) * 64 * 24);
  for (int sph = 0; sph < 2; sph++) {
    sf_kmeans_params p = {.k = 64, .iters = 15, .seed = 1, .spherical = sph};
    sf_kmeans_stats st;
    assert_int_equal(sf_kmeans_train(&p, x, 5000, 24, c, &st, NULL), SF_OK);
    assert_true(st.iters_run >= 1);
    assert_true(st.obj_final < st.obj_init);
    assert_int_equal(st.rows_used, 5000);
    if (sph)
      for (uint32_t j = 0; j < 64; j++) {
        float n2 = sf_dist_dot(c + j * 24, c + j * 24, 24);
        assert_true(fabsf(n2 - 1) < 1e-4f);
      }
  }
  free(c);
  free(x);
}

static void test_training_is_bit_identical_for_a_seed_at_any_thread_count(void **state) {
  (void)state;
  float *x = gen(4000, 10, 30, 4);
  float *a = malloc(sizeof(float) * 50 * 10), *b = malloc(sizeof(float) * 50 * 10);
  sf_kmeans_params p = {.k = 50, .iters = 10, .seed = 99, .max_rows = 2000};
  assert_int_equal(sf_kmeans_train(&p, x, 4000, 10, a, NULL, NULL), SF_OK);
  assert_int_equal(sf_kmeans_train(&p, x, 4000, 10, b, NULL, NULL), SF_OK);
  assert_memory_equal(a, b, sizeof(float) * 50 * 10);
  p.nthreads = 3; /* threads split the assignment only: same bits */
  assert_int_equal(sf_kmeans_train(&p, x, 4000, 10, b, NULL, NULL), SF_OK);
  assert_memory_equal(a, b, sizeof(float) * 50 * 10);
  p.nthreads = 0;
  p.seed = 100;
  assert_int_equal(sf_kmeans_train(&p, x, 4000, 10, b, NULL, NULL), SF_OK);
  assert_memory_not_equal(a, b, sizeof(float) * 50 * 10);
  free(a);
  free(b);
  free(x);
}

static void test_the_training_sample_is_capped_at_max_rows_or_256_per_centroid(
    void **state) {
  (void)state;
  float *x = gen(6000, 4, 10, 5), c[8 * 4];
  sf_kmeans_stats st;
  sf_kmeans_params p = {.k = 8, .iters = 2, .seed = 1};
  assert_int_equal(sf_kmeans_train(&p, x, 6000, 4, c, &st, NULL), SF_OK);
  assert_int_equal(st.rows_used, 8 * SF_KMEANS_DEFAULT_MAX_PPC);
  p.max_rows = 1000;
  assert_int_equal(sf_kmeans_train(&p, x, 6000, 4, c, &st, NULL), SF_OK);
  assert_int_equal(st.rows_used, 1000);
  free(x);
}

static void test_sampling_is_deterministic_sorted_and_distinct(void **state) {
  (void)state;
  size_t a[500], b[500];
  sf_kmeans_sample(7, 100000, 500, a);
  sf_kmeans_sample(7, 100000, 500, b);
  assert_memory_equal(a, b, sizeof a);
  for (size_t i = 1; i < 500; i++) assert_true(a[i] > a[i - 1]);
  assert_true(a[499] < 100000);
  sf_kmeans_sample(7, 500, 500, a); /* all of them */
  for (size_t i = 0; i < 500; i++) assert_int_equal(a[i], i);
}

/* Rows in 3 tight clumps and k = 24: most seeds share a clump, and clusters
 * that lose all their rows must be refilled by splitting the largest. */
static void test_no_cluster_is_left_empty_when_rows_are_clumped(void **state) {
  (void)state;
  const size_t n = 3000;
  const uint32_t d = 6, k = 24;
  float *x = malloc(sizeof(float) * n * d), c[24 * 6];
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < d; j++)
      x[i * d + j] = (float)(i % 3) * 10 + (float)((i * 7 + j * 13) % 17) * 0.01f;
  sf_kmeans_params p = {.k = k, .iters = 20, .seed = 5};
  sf_kmeans_stats st;
  assert_int_equal(sf_kmeans_train(&p, x, n, d, c, &st, NULL), SF_OK);
  sf_kmeans_panel pn;
  assert_int_equal(sf_kmeans_panel_init(&pn, c, k, d, 0, NULL), SF_OK);
  uint32_t *lab = malloc(sizeof(uint32_t) * n);
  size_t count[24] = {0};
  sf_kmeans_panel_assign(&pn, x, n, lab, NULL);
  for (size_t i = 0; i < n; i++) count[lab[i]]++;
  for (uint32_t j = 0; j < k; j++) assert_true(count[j] > 0);
  sf_kmeans_panel_free(&pn);
  free(lab);
  free(x);
}

/* Random seeds are distinct points, not just distinct rows: 2,000 rows
 * holding 400 values (each 5 times) give 256 distinct seeds, where 256
 * random rows would repeat about 60 values; with too few distinct values
 * (100 for 256 seeds) training still succeeds and no cluster stays empty
 * beyond what the values allow. */
static void test_random_seeds_are_distinct_points_when_rows_repeat(void **state) {
  (void)state;
  const size_t n = 2000;
  const uint32_t d = 4, k = 256;
  float *x = malloc(sizeof(float) * n * d), *c = malloc(sizeof(float) * k * d);
  assert_true(x && c);
  static const uint32_t distincts[] = {400, 100};
  for (size_t t = 0; t < 2; t++) {
    const uint32_t distinct = distincts[t];
    for (size_t i = 0; i < n; i++)
      for (uint32_t j = 0; j < d; j++)
        x[i * d + j] = (float)((i % distinct) * 4 + j) * 0.25f;
    sf_kmeans_params p = {.k = k, .iters = 0, .seed = 3, .random_init = 1};
    assert_int_equal(sf_kmeans_train(&p, x, n, d, c, NULL, NULL), SF_OK);
    uint32_t same = 0;
    for (uint32_t a = 0; a < k; a++)
      for (uint32_t b = a + 1; b < k; b++)
        same += !memcmp(c + (size_t)a * d, c + (size_t)b * d, sizeof(float) * d);
    if (distinct >= k)
      assert_int_equal(same, 0);
    else
      assert_true(same >= k - distinct); /* the pigeonholes, no fewer */
  }
  free(x);
  free(c);
}

static void test_more_clusters_than_rows_is_refused_with_the_fix(void **state) {
  (void)state;
  float x[10 * 2] = {0}, c[20 * 2];
  sf_kmeans_params p = {.k = 20, .iters = 1};
  sf_err err = {0};
  assert_int_equal(sf_kmeans_train(&p, x, 10, 2, c, NULL, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "fewer clusters"));
  p.k = 0;
  assert_int_equal(sf_kmeans_train(&p, x, 10, 2, c, NULL, &err), SF_EINVAL);
}

/* Identical rows: nothing to split, yet training must end cleanly. */
static void test_identical_rows_train_without_error(void **state) {
  (void)state;
  float x[100 * 3], c[5 * 3];
  for (int i = 0; i < 300; i++) x[i] = 1.5f;
  sf_kmeans_params p = {.k = 5, .iters = 5, .seed = 1};
  assert_int_equal(sf_kmeans_train(&p, x, 100, 3, c, NULL, NULL), SF_OK);
  for (int i = 0; i < 15; i++) assert_true(isfinite(c[i]));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_panel_assignment_equals_brute_force_for_every_shape),
      cmocka_unit_test(test_assignment_kernels_agree_and_the_avx_ones_bit_for_bit),
      cmocka_unit_test(test_panel_score_kernels_agree_bit_for_bit),
      cmocka_unit_test(test_training_improves_on_its_seeding_in_both_modes),
      cmocka_unit_test(test_training_is_bit_identical_for_a_seed_at_any_thread_count),
      cmocka_unit_test(
          test_the_training_sample_is_capped_at_max_rows_or_256_per_centroid),
      cmocka_unit_test(test_sampling_is_deterministic_sorted_and_distinct),
      cmocka_unit_test(test_no_cluster_is_left_empty_when_rows_are_clumped),
      cmocka_unit_test(test_random_seeds_are_distinct_points_when_rows_repeat),
      cmocka_unit_test(test_more_clusters_than_rows_is_refused_with_the_fix),
      cmocka_unit_test(test_identical_rows_train_without_error),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
