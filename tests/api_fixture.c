/* api_fixture.c - see api_fixture.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "tests/api_fixture.h"
#include "tests/testutil.h"

/* splitmix64: a small generator of our own, so that the data do not
 * depend on the C library's rand(). */
static uint64_t next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static float uniform(uint64_t *s) {
  return (float)((next(s) >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

float *af_vectors(uint64_t n, uint32_t dim, uint32_t nc, uint64_t seed) {
  uint64_t s = seed;
  float *c = malloc((size_t)nc * dim * sizeof *c), *x = malloc(n * dim * sizeof *x);
  assert_non_null(c);
  assert_non_null(x);
  for (size_t i = 0; i < (size_t)nc * dim; i++) c[i] = uniform(&s) * 10.0f;
  for (uint64_t i = 0; i < n; i++) {
    uint32_t k = (uint32_t)(next(&s) % nc);
    for (uint32_t j = 0; j < dim; j++) x[i * dim + j] = c[k * dim + j] + uniform(&s);
  }
  free(c);
  return x;
}

uint64_t *af_row_ids(uint64_t n, uint32_t per, uint32_t first) {
  uint64_t *ids = malloc(n * sizeof *ids);
  assert_non_null(ids);
  for (uint64_t i = 0; i < n; i++) ids[i] = SF_ROW_ID(first + i / per, i % per);
  return ids;
}

sf_options *af_options(const char *kv, ...) {
  sf_options *o = sf_options_new();
  assert_non_null(o);
  va_list ap;
  va_start(ap, kv);
  for (const char *s = kv; s; s = va_arg(ap, const char *)) {
    char key[128];
    const char *eq = strchr(s, '=');
    assert_non_null(eq);
    assert_true((size_t)(eq - s) < sizeof key);
    memcpy(key, s, (size_t)(eq - s));
    key[eq - s] = '\0';
    sf_error err = {0};
    assert_int_equal(sf_options_set(o, key, eq + 1, &err), SF_STATUS_OK);
  }
  va_end(ap);
  return o;
}

void af_staged_dataset(const char *tag, const char *job, const float *x, uint64_t n,
                       uint32_t dim, sf_options *train, char **dataset, char **root) {
  sf_error err = {0};
  *dataset = strdup(tu_tmpdir(tag));
  assert_non_null(*dataset);
  int rc = sf_staging_root(*dataset, job, root, &err);
  if (rc) fail_msg("sf_staging_root: %s", err.message);
  rc = sf_train(x, n, dim, train, *root, &err);
  if (rc) fail_msg("sf_train: %s", err.message);
}

void af_assert_fails(int rc, const sf_error *err, int want, const char *needle) {
  if (rc != want || err->code != want)
    fail_msg("wanted %s, got %s (err %s): %s", sf_status_name(want), sf_status_name(rc),
             sf_status_name(err->code), err->message);
  if (needle && !strstr(err->message, needle))
    fail_msg("the message '%s' does not say '%s'", err->message, needle);
}
