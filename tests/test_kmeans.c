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
        uint32_t *lab[3], *lab2 = malloc(sizeof(uint32_t) * n);
        float *sc[3], *sec[3], *sc2 = malloc(sizeof(float) * n);
        int have[3];
        assert_true(lab2 && sc2);
        for (int m = 0; m < 3; m++) {
          lab[m] = malloc(sizeof(uint32_t) * n);
          sc[m] = malloc(sizeof(float) * n);
          sec[m] = malloc(sizeof(float) * n);
          assert_true(lab[m] && sc[m] && sec[m]);
          have[m] = sf_kmeans_panel_assign_named(impls[m], &p, x, n, lab[m], sc[m],
                                                 sec[m]) == 0;
          if (!have[m]) continue;
          /* asking for the second changes neither labels nor scores */
          sf_kmeans_panel_assign_named(impls[m], &p, x, n, lab2, sc2, NULL);
          assert_memory_equal(lab2, lab[m], sizeof(uint32_t) * n);
          assert_memory_equal(sc2, sc[m], sizeof(float) * n);
        }
        assert_true(have[0]);
        assert_int_equal(
            sf_kmeans_panel_assign_named("none", &p, x, n, lab[0], sc[0], NULL), -1);
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
            /* the second smallest: brute force over the others */
            float second = INFINITY;
            for (uint32_t j = 0; j < k; j++)
              if (j != lab[m][i])
                second = fminf(second, ip ? -sf_dist_dot(v, c + (size_t)j * d, d)
                                          : sf_dist_l2sq(v, c + (size_t)j * d, d));
            if (k == 1)
              assert_true(isinf(sec[m][i]));
            else
              assert_true(fabsf(sec[m][i] - second) <= tol);
            assert_true(sec[m][i] >= sc[m][i]);
          }
        }
        if (have[1] && have[2]) {
          assert_memory_equal(lab[1], lab[2], sizeof(uint32_t) * n);
          assert_memory_equal(sc[1], sc[2], sizeof(float) * n);
          assert_memory_equal(sec[1], sec[2], sizeof(float) * n);
        }
        for (int m = 0; m < 3; m++) {
          free(lab[m]);
          free(sc[m]);
          free(sec[m]);
        }
        free(lab2);
        free(sc2);
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

/* Trains the same data both ways and checks the bounded iterations gave
 * plain Lloyd's centroids bit for bit while scanning fewer rows. */
static void bounded_equals_plain(const float *x, size_t n, uint32_t d, uint32_t k,
                                 uint32_t iters, int random_init, int expect_skips) {
  float *a = malloc(sizeof(float) * k * d), *b = malloc(sizeof(float) * k * d);
  assert_true(a && b);
  sf_kmeans_params p = {.k = k,
                        .iters = iters,
                        .seed = 5,
                        .random_init = random_init,
                        .lloyd = SF_KMEANS_PLAIN};
  sf_kmeans_stats sp, sb;
  assert_int_equal(sf_kmeans_train(&p, x, n, d, a, &sp, NULL), SF_OK);
  p.lloyd = SF_KMEANS_BOUNDED;
  assert_int_equal(sf_kmeans_train(&p, x, n, d, b, &sb, NULL), SF_OK);
  assert_int_equal(sp.bounded, 0);
  assert_int_equal(sb.bounded, 1);
  assert_int_equal(sp.iters_run, sb.iters_run);
  assert_int_equal(sp.repairs, sb.repairs);
  assert_memory_equal(a, b, sizeof(float) * k * d);
  assert_true(sp.obj_init == sb.obj_init); /* the same first pass */
  /* plain sums the kernel's expanded-form scores, bounded the direct
   * distances: equal within the expanded form's rounding, ~1e-7 ||x||^2 */
  double norms = 0;
  for (size_t i = 0; i < n; i++) norms += sf_dist_dot(x + i * d, x + i * d, d);
  assert_true(fabs(sp.obj_final - sb.obj_final) <= 1e-5 * norms + 1e-6);
  assert_int_equal(sp.rows_scanned, (uint64_t)sp.rows_used * sp.iters_run);
  /* the first 2 iterations scan every row; later ones skip some */
  if (expect_skips && sp.iters_run > 2) assert_true(sb.rows_scanned < sp.rows_scanned);
  free(a);
  free(b);
}

/* Clustered data, dims from PQ's to the coarse quantizer's, k below,
 * at and above one panel block per group (k=300: groups of 2 blocks). */
static void test_bounded_lloyd_gives_plain_lloyds_centroids_bit_for_bit(void **state) {
  (void)state;
  static const struct {
    size_t n;
    uint32_t d, k;
  } cs[] = {
      {4000, 2, 256}, {4000, 8, 64}, {6000, 33, 17}, {6000, 96, 300}, {4000, 784, 64}};
  for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
    float *x = gen(cs[t].n, cs[t].d, 50, 10 + t);
    if (cs[t].d == 784) /* overlapping clusters, or it converges at once */
      sf_gen_clustered(x, cs[t].n, cs[t].d, 50, 2.0f, 11, 10 + t);
    bounded_equals_plain(x, cs[t].n, cs[t].d, cs[t].k, 25, cs[t].d < 16, cs[t].d >= 8);
    free(x);
  }
}

/* Ties everywhere: rows in 3 clumps of repeated points, k=24 (empty
 * clusters repaired), and integer-valued rows with duplicates. Near-ties
 * are never decided by the bounds, so the result is still plain's. */
static void test_bounded_lloyd_matches_plain_on_ties_and_repairs(void **state) {
  (void)state;
  const size_t n = 3000;
  const uint32_t d = 6;
  float *x = malloc(sizeof(float) * n * d);
  assert_non_null(x);
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < d; j++)
      x[i * d + j] = (float)(i % 3) * 10 + (float)((i * 7 + j * 13) % 17) * 0.01f;
  bounded_equals_plain(x, n, d, 24, 20, 0, 0);
  for (size_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < d; j++) x[i * d + j] = (float)((i / 4 * 31 + j * 7) % 5);
  bounded_equals_plain(x, n, d, 16, 20, 1, 0);
  free(x);
}

/* Rows far from the origin: the expanded form's rounding (relative to
 * ||x||^2) is then as large as the gaps between centroids, so the kernel's
 * rounding decides many labels; the bounds must leave those rows to it.
 * (Dropping the slack altogether is caught by the ties test above.) */
static void test_bounded_lloyd_leaves_rounding_decided_rows_to_the_kernel(void **state) {
  (void)state;
  const size_t n = 4000;
  const uint32_t d = 16;
  float *x = gen(n, d, 40, 31);
  for (size_t i = 0; i < n * d; i++) x[i] = x[i] * 0.01f + 3000.0f;
  bounded_equals_plain(x, n, d, 32, 20, 1, 0);
  free(x);
}

/* Rows of about 1e-21 to 1e-22: their squares are subnormal floats, whose
 * rounding error is absolute (up to 2^-150 a product), not relative to
 * ||x||^2, so a margin of gamma * (||x|| + ||c||)^2 alone let the bounds
 * decide labels the kernel's underflow decided otherwise (plain and bounded
 * then ran a different number of iterations). */
static void test_bounded_lloyd_matches_plain_when_squares_underflow(void **state) {
  (void)state;
  static const uint32_t dims[] = {2, 7, 16, 33, 128};
  static const float scales[] = {1e-21f, 1e-22f};
  const size_t n = 3001;
  for (size_t si = 0; si < 2; si++)
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
      const uint32_t d = dims[di];
      float *x = gen(n, d, 23, 40 + di);
      for (size_t i = 0; i < n * d; i++) x[i] *= scales[si];
      bounded_equals_plain(x, n, d, 40, 20, 0, 0);
      free(x);
    }
}

static void test_bounded_lloyd_is_bit_identical_at_1_2_and_3_threads(void **state) {
  (void)state;
  const size_t n = 9000;
  const uint32_t d = 40, k = 48;
  float *x = gen(n, d, 30, 21);
  float *a = malloc(sizeof(float) * k * d), *b = malloc(sizeof(float) * k * d);
  assert_true(a && b);
  sf_kmeans_params p = {.k = k, .iters = 15, .seed = 3, .lloyd = SF_KMEANS_BOUNDED};
  sf_kmeans_stats s1, st;
  assert_int_equal(sf_kmeans_train(&p, x, n, d, a, &s1, NULL), SF_OK);
  for (uint32_t t = 2; t <= 3; t++) {
    p.nthreads = t;
    assert_int_equal(sf_kmeans_train(&p, x, n, d, b, &st, NULL), SF_OK);
    assert_memory_equal(a, b, sizeof(float) * k * d);
    assert_int_equal(st.iters_run, s1.iters_run);
    assert_int_equal(st.rows_scanned, s1.rows_scanned);
  }
  p.lloyd = SF_KMEANS_PLAIN; /* and it is plain's result */
  assert_int_equal(sf_kmeans_train(&p, x, n, d, b, NULL, NULL), SF_OK);
  assert_memory_equal(a, b, sizeof(float) * k * d);
  free(a);
  free(b);
  free(x);
}

/* Inner-product ranking has no triangle inequality on these scores: the
 * spherical mode runs plain Lloyd even when bounds are asked for, and the
 * automatic choice bounds L2 from SF_KMEANS_BOUNDS_MIN_DIM up only. */
static void test_spherical_mode_runs_plain_lloyd_and_auto_picks_by_dim(void **state) {
  (void)state;
  const size_t n = 3000;
  float *x = gen(n, 24, 20, 8);
  float c[32 * 24];
  sf_kmeans_params p = {
      .k = 32, .iters = 5, .seed = 1, .spherical = 1, .lloyd = SF_KMEANS_BOUNDED};
  sf_kmeans_stats st;
  assert_int_equal(sf_kmeans_train(&p, x, n, 24, c, &st, NULL), SF_OK);
  assert_int_equal(st.bounded, 0);
  p.spherical = 0;
  p.lloyd = SF_KMEANS_AUTO;
  assert_int_equal(sf_kmeans_train(&p, x, n, 24, c, &st, NULL), SF_OK);
  assert_int_equal(st.bounded, 24 >= SF_KMEANS_BOUNDS_MIN_DIM);
  assert_int_equal(sf_kmeans_train(&p, x, n, 1, c, &st, NULL), SF_OK);
  assert_int_equal(st.bounded, 1 >= SF_KMEANS_BOUNDS_MIN_DIM);
  free(x);
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
      cmocka_unit_test(test_bounded_lloyd_gives_plain_lloyds_centroids_bit_for_bit),
      cmocka_unit_test(test_bounded_lloyd_matches_plain_on_ties_and_repairs),
      cmocka_unit_test(test_bounded_lloyd_leaves_rounding_decided_rows_to_the_kernel),
      cmocka_unit_test(test_bounded_lloyd_matches_plain_when_squares_underflow),
      cmocka_unit_test(test_bounded_lloyd_is_bit_identical_at_1_2_and_3_threads),
      cmocka_unit_test(test_spherical_mode_runs_plain_lloyd_and_auto_picks_by_dim),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
