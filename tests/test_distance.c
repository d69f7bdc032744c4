/*
 * test_distance.c - the distance kernels: the PQ table scan gives the same
 * sums by its scalar and AVX2 implementations, and both equal the one-code
 * lookup sf_dist_pq_lut, for any code width and count (tails included).
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(
          test_pq_scan_by_scalar_and_avx2_equals_one_code_lookups_for_any_m_and_n),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
