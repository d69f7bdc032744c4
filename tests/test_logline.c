/*
 * test_logline.c - a log line's fields and their rendering
 * (processor/logline.h): values from outside come back exactly.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "processor/logline.h"

static const char *logfmt(const sf_logline *l, char *buf, size_t n) {
  size_t need = sf_logline_logfmt(l->f, l->n, buf, n);
  assert_true(need < n);
  assert_int_equal(strlen(buf), need);
  return buf;
}

static void test_a_hostile_id_is_quoted_and_escaped_in_logfmt(void **state) {
  (void)state;
  sf_logline l;
  char buf[512];
  sf_logline_format(&l, "event=job_held staging_id=%s attempt=%d", "a\"b c=d\n", 3);
  assert_int_equal(l.n, 3);
  assert_string_equal(l.f[1].value, "a\"b c=d\n");
  assert_string_equal(logfmt(&l, buf, sizeof buf),
                      "event=job_held staging_id=\"a\\\"b c=d\\n\" attempt=3");
  /* Backslashes, '=', tabs and other control characters: quoted too. */
  sf_logline_format(&l, "a=%s b=%s c=%s d=%s e=%s", "x\\y", "k=v", "t\tu\r\x01\x7f", "",
                    "plain-id_7.0");
  assert_string_equal(
      logfmt(&l, buf, sizeof buf),
      "a=\"x\\\\y\" b=\"k=v\" c=\"t\\tu\\r\\u0001\\u007f\" d= e=plain-id_7.0");
}

static void test_invalid_utf8_is_ufffd_in_both_formats_and_valid_utf8_kept(void **state) {
  (void)state;
  sf_logline l;
  char buf[512];
  /* A stray continuation byte, a cut 3-byte sequence, an overlong '/', a
   * surrogate; then é and a 4-byte emoji. */
  sf_logline_format(&l, "v=%s w=%s",
                    "a\x80"
                    "b\xe2\x82"
                    "c\xc0\xaf"
                    "d\xed\xa0\x80",
                    "\xc3\xa9\xf0\x9f\x98\x80");
  assert_string_equal(
      logfmt(&l, buf, sizeof buf),
      "v=\"a\\ufffdb\\ufffd\\ufffdc\\ufffd\\ufffdd\\ufffd\\ufffd\\ufffd\" "
      "w=\xc3\xa9\xf0\x9f\x98\x80");
  assert_true(sf_logline_json(l.f, l.n, buf, sizeof buf) < sizeof buf);
  assert_string_equal(
      buf,
      "\"v\":\"a\\ufffdb\\ufffd\\ufffdc\\ufffd\\ufffdd\\ufffd\\ufffd\\ufffd\","
      "\"w\":\"\\u00e9\\ud83d\\ude00\"");
}

static void test_json_parses_back_to_the_exact_values(void **state) {
  (void)state;
  const char *hostile[] = {
      "a\"b c=d\n", "\\",  "\"", "=", " ", "\x01\x1f\x7f", "\xc3\xa9/\xe2\x98\x83",
      "007",        "-1.5"};
  for (size_t i = 0; i < sizeof hostile / sizeof *hostile; i++) {
    sf_logline l;
    sf_logline_format(&l, "event=x staging_id=%s n=%zu", hostile[i], i);
    char body[512], obj[600];
    assert_true(sf_logline_json(l.f, l.n, body, sizeof body) < sizeof body);
    assert_true(snprintf(obj, sizeof obj, "{%s}", body) < (int)sizeof obj);
    json_error_t je;
    json_t *o = json_loads(obj, 0, &je);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "staging_id")), hostile[i]);
    assert_true(json_is_integer(json_object_get(o, "n")));
    assert_int_equal(json_integer_value(json_object_get(o, "n")), i);
    json_decref(o);
  }
}

static void test_only_a_lone_numeric_conversion_is_a_number(void **state) {
  (void)state;
  sf_logline l;
  sf_logline_format(&l, "a=%d b=%s c=%.2f d=%d%s e=7 f=%llu g=\"%s and %d\" h=%.1f", 1,
                    "2", 3.0, 4, "x", 5ULL, "six", 7, (double)INFINITY);
  assert_int_equal(l.n, 8);
  int want[] = {1, 0, 1, 0, 0, 1, 0, 1};
  for (size_t i = 0; i < l.n; i++) assert_int_equal(l.f[i].number, want[i]);
  assert_string_equal(l.f[6].value, "six and 7");
  char buf[512];
  assert_true(sf_logline_json(l.f, l.n, buf, sizeof buf) < sizeof buf);
  /* inf is no JSON number: it is written as a string. */
  assert_string_equal(buf,
                      "\"a\":1,\"b\":\"2\",\"c\":3.00,\"d\":\"4x\",\"e\":\"7\",\"f\":5,"
                      "\"g\":\"six and 7\",\"h\":\"inf\"");
}

static void test_a_small_buffer_gets_the_length_and_a_terminated_prefix(void **state) {
  (void)state;
  sf_logline l;
  sf_logline_format(&l, "event=x id=%s", "a b");
  char buf[8];
  size_t need = sf_logline_logfmt(l.f, l.n, buf, sizeof buf);
  assert_int_equal(need, strlen("event=x id=\"a b\""));
  assert_string_equal(buf, "event=x");
  /* A value longer than the line's room is cut, and the line still renders. */
  char *big = malloc(3 * SF_LOGLINE_TEXT);
  assert_non_null(big);
  memset(big, '"', 3 * SF_LOGLINE_TEXT - 1);
  big[3 * SF_LOGLINE_TEXT - 1] = '\0';
  sf_logline_format(&l, "event=x id=%s after=%d", big, 1);
  assert_true(l.n >= 2);
  assert_string_equal(l.f[0].value, "x");
  assert_true(strlen(l.f[1].value) < SF_LOGLINE_TEXT);
  free(big);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_hostile_id_is_quoted_and_escaped_in_logfmt),
      cmocka_unit_test(test_invalid_utf8_is_ufffd_in_both_formats_and_valid_utf8_kept),
      cmocka_unit_test(test_json_parses_back_to_the_exact_values),
      cmocka_unit_test(test_only_a_lone_numeric_conversion_is_a_number),
      cmocka_unit_test(test_a_small_buffer_gets_the_length_and_a_terminated_prefix),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
