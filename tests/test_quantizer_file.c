/*
 * test_quantizer_file.c - the quantizer's parameters, identity and file:
 * bad parameters are refused with a message naming the fix, training is
 * deterministic for a seed, a saved quantizer loads back with the same
 * checksum and behaviour, and a damaged or hostile file is refused with an
 * error naming the file, never a crash or a huge allocation.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "tests/testutil.h"

#define N 2000
#define DIM 16

static float *data(uint64_t seed) {
  float *x = malloc(sizeof(float) * N * DIM);
  assert_non_null(x);
  sf_gen_clustered(x, N, DIM, 40, 0.4f, 42, seed);
  return x;
}

static sf_quant_params params(sf_index_type t, sf_metric m) {
  sf_quant_params p = {.type = t,
                       .metric = m,
                       .dim = DIM,
                       .nlist = 16,
                       .pq_m = t == SF_IVF_PQ ? 4 : 0,
                       .seed = 3,
                       .kmeans_iters = 8};
  return p;
}

static sf_quant *train(sf_index_type t, sf_metric m, const float *x) {
  sf_quant_params p = params(t, m);
  sf_quant *q = NULL;
  sf_err err = {0};
  if (sf_quant_train(&p, x, N, &q, &err)) fail_msg("train: %s", err.msg);
  return q;
}

static void expect_train_error(const sf_quant_params *p, size_t n, const char *needle) {
  float *x = data(1);
  sf_quant *q = (sf_quant *)1;
  sf_err err = {0};
  assert_int_equal(sf_quant_train(p, x, n, &q, &err), SF_EINVAL);
  assert_null(q);
  if (!strstr(err.msg, needle)) fail_msg("message '%s' lacks '%s'", err.msg, needle);
  free(x);
}

static void test_bad_parameters_are_refused_with_a_message_naming_the_fix(void **state) {
  (void)state;
  sf_quant_params p = params(SF_IVF_PQ, SF_L2);
  p.pq_m = 5;
  expect_train_error(&p, N, "dim 16 is not a multiple of pq_m 5");
  p.pq_m = 0;
  expect_train_error(&p, N, "pq_m");
  p = params(SF_IVF_SQ, SF_L2);
  p.pq_m = 4;
  expect_train_error(&p, N, "IVF_PQ only");
  p = params(SF_IVF_FLAT, SF_L2);
  p.nlist = 0;
  expect_train_error(&p, N, "nlist");
  p.nlist = SF_MAX_NLIST + 1;
  expect_train_error(&p, N, "nlist");
  p = params(SF_IVF_FLAT, SF_L2);
  p.dim = 0;
  expect_train_error(&p, N, "dim");
  p = params(SF_IVF_FLAT, SF_L2);
  p.nlist = 100;
  expect_train_error(&p, 50, "lower nlist");
  p = params(SF_IVF_PQ, SF_L2);
  expect_train_error(&p, 200, "at least 256 vectors");
  p = params(SF_IVF_FLAT, SF_L2);
  p.max_train_rows = 4;
  expect_train_error(&p, N, "max_train_rows");
  p = params(SF_IVF_FLAT, SF_L2);
  p.metric = (sf_metric)7;
  expect_train_error(&p, N, "metric");
}

static void test_accessors_report_the_parameters_and_code_sizes(void **state) {
  (void)state;
  float *x = data(1);
  const sf_index_type types[] = {SF_IVF_FLAT, SF_IVF_SQ, SF_IVF_PQ};
  const size_t sizes[] = {4 * DIM, DIM, 4};
  for (int t = 0; t < 3; t++) {
    sf_quant *q = train(types[t], SF_COSINE, x);
    assert_int_equal(sf_quant_type(q), types[t]);
    assert_int_equal(sf_quant_metric(q), SF_COSINE);
    assert_int_equal(sf_quant_dim(q), DIM);
    assert_int_equal(sf_quant_nlist(q), 16);
    assert_int_equal(sf_quant_pq_m(q), types[t] == SF_IVF_PQ ? 4 : 0);
    assert_int_equal(sf_quant_code_size(q), sizes[t]);
    sf_quant_free(q);
  }
  free(x);
}

static void
test_training_is_deterministic_for_a_seed_and_thread_count_and_the_checksum_names_it(
    void **state) {
  (void)state;
  float *x = data(1);
  for (int t = SF_IVF_FLAT; t <= SF_IVF_PQ; t++) {
    sf_quant *a = train((sf_index_type)t, SF_L2, x),
             *b = train((sf_index_type)t, SF_L2, x);
    assert_true(sf_quant_checksum(a) == sf_quant_checksum(b));
    sf_quant_params pt = params((sf_index_type)t, SF_L2);
    pt.nthreads = 4; /* any thread count trains the same quantizer */
    sf_quant *mt;
    assert_int_equal(sf_quant_train(&pt, x, N, &mt, NULL), SF_OK);
    assert_true(sf_quant_checksum(a) == sf_quant_checksum(mt));
    sf_quant_free(mt);
    assert_memory_equal(sf_quant_centroids(a), sf_quant_centroids(b),
                        sizeof(float) * 16 * DIM);
    sf_quant_params p = params((sf_index_type)t, SF_L2);
    p.seed = 4;
    sf_quant *c;
    assert_int_equal(sf_quant_train(&p, x, N, &c, NULL), SF_OK);
    assert_true(sf_quant_checksum(a) != sf_quant_checksum(c));
    sf_quant_free(a);
    sf_quant_free(b);
    sf_quant_free(c);
  }
  free(x);
}

static void test_describe_json_gives_type_metric_sizes_and_checksum_in_hex(void **state) {
  (void)state;
  float *x = data(1);
  sf_quant *q = train(SF_IVF_PQ, SF_DOT, x);
  json_t *j = sf_quant_describe_json(q);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "type")), "IVF_PQ");
  assert_string_equal(json_string_value(json_object_get(j, "metric")), "DOT");
  assert_int_equal(json_integer_value(json_object_get(j, "dim")), DIM);
  assert_int_equal(json_integer_value(json_object_get(j, "nlist")), 16);
  assert_int_equal(json_integer_value(json_object_get(j, "pq_m")), 4);
  assert_int_equal(json_integer_value(json_object_get(j, "code_size")), 4);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)sf_quant_checksum(q));
  assert_string_equal(json_string_value(json_object_get(j, "checksum")), hex);
  json_decref(j);
  sf_quant_free(q);
  free(x);
}

/* Scores of a few queries over all rows, list by list: the behaviour a
 * round trip must keep. */
static void scores_of(const sf_quant *q, const float *x, float *out) {
  const uint32_t d = sf_quant_dim(q);
  const size_t cs = sf_quant_code_size(q);
  uint8_t *code = malloc(cs);
  sf_quant_scanner *s;
  assert_int_equal(sf_quant_scanner_new(q, &s, NULL), SF_OK);
  float qv[DIM], v[DIM];
  for (size_t i = 0; i < 4; i++) {
    sf_quant_prepare(q, x + (N - 1 - i) * d, qv);
    sf_quant_scanner_set_query(s, qv);
    for (size_t r = 0; r < 200; r++) {
      sf_quant_prepare(q, x + r * d, v);
      uint32_t l = sf_quant_assign(q, v);
      sf_quant_encode(q, v, l, code);
      sf_quant_scanner_set_list(s, l);
      sf_quant_scanner_scan(s, code, 1, &out[i * 200 + r]);
    }
  }
  sf_quant_scanner_free(s);
  free(code);
}

static void test_save_then_load_keeps_the_checksum_and_the_scores(void **state) {
  (void)state;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", tu_tmpdir("quant_roundtrip"));
  float *x = data(1), a[800], b[800];
  for (int t = SF_IVF_FLAT; t <= SF_IVF_PQ; t++)
    for (int m = SF_L2; m <= SF_DOT; m++) {
      sf_quant *q = train((sf_index_type)t, (sf_metric)m, x), *r = NULL;
      const char *path = tu_path(dir, "quantizer");
      sf_err err = {0};
      assert_int_equal(sf_quant_save(q, path, &err), SF_OK);
      assert_int_equal(sf_quant_load(path, &r, &err), SF_OK);
      assert_true(sf_quant_checksum(q) == sf_quant_checksum(r));
      uint64_t sum = 0;
      assert_int_equal(sf_quant_checksum_of_file(path, &sum, &err), SF_OK);
      assert_true(sum == sf_quant_checksum(q));
      scores_of(q, x, a);
      scores_of(r, x, b);
      assert_memory_equal(a, b, sizeof a);
      sf_quant_free(q);
      sf_quant_free(r);
    }
  free(x);
}

static sf_code load_err(const char *path, sf_err *err) {
  sf_quant *q = (sf_quant *)1;
  sf_code rc = sf_quant_load(path, &q, err);
  if (rc == SF_OK)
    sf_quant_free(q);
  else
    assert_null(q);
  return rc;
}

/* Every byte of the header and a spread of payload bytes: each flip must be
 * refused, as corrupt or of another format, naming the file. */
static void test_a_flipped_byte_anywhere_is_refused_naming_the_file(void **state) {
  (void)state;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", tu_tmpdir("quant_flip"));
  float *x = data(1);
  sf_quant *q = train(SF_IVF_SQ, SF_L2, x);
  const char *good = tu_path(dir, "good"), *bad = tu_path(dir, "bad");
  assert_int_equal(sf_quant_save(q, good, NULL), SF_OK);
  size_t len;
  uint8_t *orig = tu_read_file(good, &len);
  for (size_t off = 0; off < len; off += off < 80 ? 1 : 97) {
    tu_write_file(bad, orig, len);
    tu_flip_byte(bad, off, (uint8_t)(1u << (off % 8)));
    sf_err err = {0};
    sf_code rc = load_err(bad, &err);
    if (rc != SF_ECORRUPT && rc != SF_EFORMAT) fail_msg("offset %zu: code %d", off, rc);
    if (!strstr(err.msg, bad))
      fail_msg("offset %zu: '%s' does not name the file", off, err.msg);
  }
  free(orig);
  sf_quant_free(q);
  free(x);
}

static void test_a_truncated_or_extended_file_is_refused_as_corrupt(void **state) {
  (void)state;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", tu_tmpdir("quant_trunc"));
  float *x = data(1);
  sf_quant *q = train(SF_IVF_PQ, SF_COSINE, x);
  const char *path = tu_path(dir, "quantizer");
  assert_int_equal(sf_quant_save(q, path, NULL), SF_OK);
  size_t len;
  uint8_t *orig = tu_read_file(path, &len);
  const size_t cuts[] = {0, 5, 8, 40, 71, 72, len / 2, len - 1};
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    tu_write_file(path, orig, cuts[i]);
    sf_err err = {0};
    sf_code rc = load_err(path, &err);
    assert_true(rc == SF_ECORRUPT || rc == SF_EFORMAT);
    assert_non_null(strstr(err.msg, path));
  }
  uint8_t *longer = calloc(len + 3, 1);
  memcpy(longer, orig, len);
  tu_write_file(path, longer, len + 3);
  sf_err err = {0};
  assert_int_equal(load_err(path, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "trailing"));
  free(longer);
  free(orig);
  sf_quant_free(q);
  free(x);
}

/* A hostile header with a valid checksum: huge counts must be refused from
 * the header and the file size alone, before any allocation. */
static void test_huge_counts_in_a_header_with_a_valid_checksum_are_refused(void **state) {
  (void)state;
  float *x = data(1);
  sf_quant *q = train(SF_IVF_FLAT, SF_L2, x);
  uint8_t *buf;
  size_t len;
  assert_int_equal(sf_quant_serialize(q, &buf, &len, NULL), SF_OK);
  struct {
    size_t off;
    uint32_t val;
    uint64_t payload; /* if not 0, also written as the payload size */
    const char *needle;
  } cases[] = {
      /* nlist at the limit, payload size to match: a 256 MiB claim that only
       * the real file size exposes */
      {28, SF_MAX_NLIST, 4ull * SF_MAX_NLIST * DIM, "truncated"},
      {28, SF_MAX_NLIST, 0, "parameters imply"}, /* payload size disagrees */
      {28, 0xffffffffu, 0, "nlist"},             /* beyond the limit */
      {24, SF_MAX_DIM + 1, 0, "dim"},            /* beyond the limit */
      {16, 9, 0, "index type"},
      {32, 3, 0, "pq_m"},     /* pq_m on IVF_FLAT */
      {8, 2, 0, "version 2"}, /* a future version */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t *b = malloc(len);
    memcpy(b, buf, len);
    memcpy(b + cases[i].off, &cases[i].val, 4);
    if (cases[i].payload) memcpy(b + 56, &cases[i].payload, 8);
    uint64_t h = XXH3_64bits(b, len - 8);
    memcpy(b + len - 8, &h, 8);
    sf_quant *r = (sf_quant *)1;
    sf_err err = {0};
    sf_code rc = sf_quant_load_mem(b, len, "hostile.quant", &r, &err);
    assert_true(rc == SF_ECORRUPT || rc == SF_EFORMAT);
    assert_null(r);
    if (!strstr(err.msg, cases[i].needle) || !strstr(err.msg, "hostile.quant"))
      fail_msg("case %zu: '%s'", i, err.msg);
    free(b);
  }
  /* A NaN centroid behind a valid checksum is refused too. */
  uint8_t *b = malloc(len);
  memcpy(b, buf, len);
  float nan = NAN;
  memcpy(b + 64, &nan, 4);
  uint64_t h = XXH3_64bits(b, len - 8);
  memcpy(b + len - 8, &h, 8);
  sf_quant *r;
  sf_err err = {0};
  assert_int_equal(sf_quant_load_mem(b, len, "nan.quant", &r, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "NaN"));
  free(b);
  free(buf);
  sf_quant_free(q);
  free(x);
}

static void test_another_kind_of_file_or_a_missing_one_is_refused(void **state) {
  (void)state;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", tu_tmpdir("quant_kind"));
  const char *path = tu_path(dir, "not-a-quantizer");
  tu_write_file(path,
                "SFSEGMNT and more bytes than a header needs, surely more than 72 ......",
                72);
  sf_err err = {0};
  assert_int_equal(load_err(path, &err), SF_EFORMAT);
  assert_non_null(strstr(err.msg, "not a segforge quantizer"));
  assert_int_not_equal(load_err(tu_path(dir, "missing"), &err), SF_OK);
  assert_non_null(strstr(err.msg, "missing"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bad_parameters_are_refused_with_a_message_naming_the_fix),
      cmocka_unit_test(test_accessors_report_the_parameters_and_code_sizes),
      cmocka_unit_test(
          test_training_is_deterministic_for_a_seed_and_thread_count_and_the_checksum_names_it),
      cmocka_unit_test(test_describe_json_gives_type_metric_sizes_and_checksum_in_hex),
      cmocka_unit_test(test_save_then_load_keeps_the_checksum_and_the_scores),
      cmocka_unit_test(test_a_flipped_byte_anywhere_is_refused_naming_the_file),
      cmocka_unit_test(test_a_truncated_or_extended_file_is_refused_as_corrupt),
      cmocka_unit_test(test_huge_counts_in_a_header_with_a_valid_checksum_are_refused),
      cmocka_unit_test(test_another_kind_of_file_or_a_missing_one_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
