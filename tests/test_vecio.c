/* test_vecio.c - texmex vector files: exact roundtrips and clear errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/vector/vecio.h"
#include "tests/testutil.h"

static void write_fvecs(const char *path, const float *x, size_t n, uint32_t dim) {
  sf_vecwriter *w;
  sf_err err = {0};
  assert_int_equal(sf_vecwriter_open(path, dim, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, x, n, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
}

static void test_fvecs_roundtrip_is_exact_in_batches(void **state) {
  (void)state;
  const char *dir = tu_tmpdir("vecio");
  const char *p = tu_path(dir, "a.fvecs");
  float x[37 * 5];
  for (int i = 0; i < 37 * 5; i++) x[i] = (float)i * 0.25f - 3.0f;
  write_fvecs(p, x, 37, 5);
  size_t len;
  free(tu_read_file(p, &len));
  assert_int_equal(len, 37 * (4 + 5 * 4));
  sf_vecreader *r;
  sf_err err = {0};
  assert_int_equal(sf_vecreader_open(p, &r, &err), SF_OK);
  assert_int_equal(sf_vecreader_dim(r), 5);
  assert_int_equal(sf_vecreader_rows(r), 37);
  float y[37 * 5];
  size_t got = 0, n;
  while (!sf_vecreader_read_f32(r, y + got * 5, 8, &n, &err) && n) got += n;
  assert_int_equal(got, 37);
  assert_memory_equal(x, y, sizeof x);
  assert_int_equal(sf_vecreader_seek(r, 30, &err), SF_OK);
  assert_int_equal(sf_vecreader_read_f32(r, y, 100, &n, &err), SF_OK);
  assert_int_equal(n, 7);
  assert_memory_equal(y, x + 30 * 5, 7 * 5 * sizeof(float));
  sf_vecreader_free(r);
}

static void test_ivecs_and_bvecs_roundtrip(void **state) {
  (void)state;
  const char *dir = tu_tmpdir("vecio");
  const char *pi = tu_path(dir, "g.ivecs"), *pb = tu_path(dir, "b.bvecs");
  int32_t gi[12] = {0, -1, 7, 100000, 5, 6, 7, 8, 9, 10, 11, 1 << 30};
  sf_vecwriter *w;
  sf_err err = {0};
  assert_int_equal(sf_vecwriter_open(pi, 4, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_i32(w, gi, 3, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  sf_vecreader *r;
  int32_t go[12];
  size_t n;
  assert_int_equal(sf_vecreader_open(pi, &r, &err), SF_OK);
  assert_int_equal(sf_vecreader_read_i32(r, go, 3, &n, &err), SF_OK);
  assert_int_equal(n, 3);
  assert_memory_equal(gi, go, sizeof gi);
  sf_vecreader_free(r);

  float b[6] = {0, 1, 254.6f, 255, 300, -4};
  assert_int_equal(sf_vecwriter_open(pb, 3, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, b, 2, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  float bo[6];
  assert_int_equal(sf_vecreader_open(pb, &r, &err), SF_OK);
  assert_int_equal(sf_vecreader_read_f32(r, bo, 2, &n, &err), SF_OK);
  const float want[6] = {0, 1, 255, 255, 255, 0};
  assert_memory_equal(bo, want, sizeof want);
  sf_vecreader_free(r);
}

static void test_truncated_file_names_the_file_and_the_tail(void **state) {
  (void)state;
  const char *dir = tu_tmpdir("vecio");
  const char *p = tu_path(dir, "t.fvecs");
  float x[40] = {0};
  write_fvecs(p, x, 10, 4);
  tu_truncate(p, 10 * 20 - 3);
  sf_vecreader *r;
  sf_err err = {0};
  assert_int_equal(sf_vecreader_open(p, &r, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "t.fvecs"));
  assert_non_null(strstr(err.msg, "truncated tail of 17 bytes"));
}

static void test_inconsistent_dimension_names_the_row(void **state) {
  (void)state;
  const char *dir = tu_tmpdir("vecio");
  const char *p = tu_path(dir, "i.fvecs");
  float x[40] = {0};
  write_fvecs(p, x, 10, 4);
  tu_flip_byte(p, 3 * 20, 0x01); /* row 3's dimension 4 -> 5 */
  sf_vecreader *r;
  sf_err err = {0};
  assert_int_equal(sf_vecreader_open(p, &r, &err), SF_OK);
  float y[40];
  size_t n;
  assert_int_equal(sf_vecreader_read_f32(r, y, 10, &n, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "row 3 has dimension 5"));
  sf_vecreader_free(r);
}

static void test_huge_or_negative_dimension_is_refused_before_allocating(void **state) {
  (void)state;
  const char *dir = tu_tmpdir("vecio");
  const char *p = tu_path(dir, "h.fvecs");
  int32_t hdr[2] = {0x7fffffff, 0};
  tu_write_file(p, hdr, sizeof hdr);
  sf_vecreader *r;
  sf_err err = {0};
  assert_int_equal(sf_vecreader_open(p, &r, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "dimension 2147483647"));
  hdr[0] = -5;
  tu_write_file(p, hdr, sizeof hdr);
  assert_int_equal(sf_vecreader_open(p, &r, &err), SF_ECORRUPT);
}

static void test_nan_in_fvecs_is_refused_with_row_and_element(void **state) {
  (void)state;
  const char *dir = tu_tmpdir("vecio");
  const char *p = tu_path(dir, "n.fvecs");
  float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  x[6] = strtof("nan", NULL);
  write_fvecs(p, x, 2, 4);
  float *y;
  uint64_t rows;
  uint32_t dim;
  sf_err err = {0};
  assert_int_equal(sf_vec_load_f32(p, 0, UINT64_MAX, 1 << 20, &y, &rows, &dim, &err),
                   SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "row 1 element 2"));
}

static void test_unknown_extension_and_missing_file_are_clear(void **state) {
  (void)state;
  sf_vecreader *r;
  sf_err err = {0};
  assert_int_equal(sf_vecreader_open("x.csv", &r, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, ".fvecs"));
  assert_int_equal(sf_vecreader_open("/nonexistent/y.fvecs", &r, &err), SF_ENOTFOUND);
  assert_non_null(strstr(err.msg, "y.fvecs"));
}

static void test_load_refuses_more_than_its_memory_budget(void **state) {
  (void)state;
  const char *dir = tu_tmpdir("vecio");
  const char *p = tu_path(dir, "l.fvecs");
  float x[400] = {0};
  write_fvecs(p, x, 100, 4);
  float *y;
  uint64_t rows;
  uint32_t dim;
  sf_err err = {0};
  assert_int_equal(sf_vec_load_f32(p, 0, UINT64_MAX, 1000, &y, &rows, &dim, &err),
                   SF_ELIMIT);
  assert_int_equal(sf_vec_load_f32(p, 90, 50, 1 << 20, &y, &rows, &dim, &err), SF_OK);
  assert_int_equal(rows, 10);
  free(y);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fvecs_roundtrip_is_exact_in_batches),
      cmocka_unit_test(test_ivecs_and_bvecs_roundtrip),
      cmocka_unit_test(test_truncated_file_names_the_file_and_the_tail),
      cmocka_unit_test(test_inconsistent_dimension_names_the_row),
      cmocka_unit_test(test_huge_or_negative_dimension_is_refused_before_allocating),
      cmocka_unit_test(test_nan_in_fvecs_is_refused_with_row_and_element),
      cmocka_unit_test(test_unknown_extension_and_missing_file_are_clear),
      cmocka_unit_test(test_load_refuses_more_than_its_memory_budget),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
