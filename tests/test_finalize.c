/* test_finalize.c - sf_finalize says whose fault a failure is: the stream
 * processor fails a job (and marks its staging id failed for good) only for
 * what is the job's own, and retries what is the environment's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/catalog.h"
#include "core/finalize.h"
#include "testutil.h"

static sf_finalize_blame finalize(const char *dataset, sf_code *rc) {
  sf_finalize_req req = {.dataset = dataset,
                         .index_name = "idx",
                         .column = "emb",
                         .staging_id = "job",
                         .index_type = -1};
  sf_finalize_result res;
  sf_err err = {0};
  *rc = sf_finalize(&req, &res, &err);
  assert_int_not_equal(*rc, SF_OK);
  assert_true(err.msg[0] != '\0');
  sf_finalize_blame b = res.blame;
  sf_finalize_result_clear(&res);
  return b;
}

static void mkdirs(const char *ds, const char *rel) {
  char p[4200];
  snprintf(p, sizeof p, "%s/%s", ds, rel);
  for (char *s = p + strlen(ds) + 1; (s = strchr(s, '/')); s++) {
    *s = '\0';
    mkdir(p, 0755);
    *s = '/';
  }
  mkdir(p, 0755);
}

static void an_unreadable_catalog_version_is_retryable_not_the_jobs_fault(void **state) {
  char ds[4000];
  snprintf(ds, sizeof ds, "%s", tu_tmpdir("finalize"));
  mkdirs(ds, SF_CATALOG_DIR);
  char name[64], rel[128];
  sf_catalog_version_name(1, name, sizeof name);
  snprintf(rel, sizeof rel, "%s/%s", SF_CATALOG_DIR, name);
  tu_write_file(tu_path(ds, rel), "garbage, not a catalog version", 30);
  sf_code rc;
  assert_int_equal(finalize(ds, &rc), SF_FINALIZE_RETRYABLE);
}

static void a_job_without_its_quantizer_is_the_jobs_fault(void **state) {
  char ds[4000];
  snprintf(ds, sizeof ds, "%s", tu_tmpdir("finalize"));
  mkdirs(ds, SF_CATALOG_STAGING_DIR "/job");
  sf_code rc;
  assert_int_equal(finalize(ds, &rc), SF_FINALIZE_JOB);
  assert_int_equal(rc, SF_ENOTFOUND);
}

static void a_missing_dataset_is_the_jobs_fault(void **state) {
  char ds[4100];
  snprintf(ds, sizeof ds, "%s/nope", tu_tmpdir("finalize"));
  sf_code rc;
  assert_int_equal(finalize(ds, &rc), SF_FINALIZE_JOB);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_unreadable_catalog_version_is_retryable_not_the_jobs_fault),
      cmocka_unit_test(a_job_without_its_quantizer_is_the_jobs_fault),
      cmocka_unit_test(a_missing_dataset_is_the_jobs_fault),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
