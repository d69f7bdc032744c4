/*
 * test_jobstatus.c - is a job done yet, from the dataset alone
 * (core/catalog/jobstatus.h): pending without a catalog or marker; failed
 * with the marker serve writes (its reason and message); a wait that times
 * out, one a probe ends, one canceled; and the refusals (a bad staging id,
 * a dataset that does not exist). Committed jobs: tests/py_serve_wait.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "consumer/intake.h"
#include "core/base/clock.h"
#include "core/catalog/jobstatus.h"
#include "testutil.h"

static void pending_then_failed_by_its_marker(void **state) {
  char ds[4096];
  snprintf(ds, sizeof ds, "%s", tu_tmpdir("jobstatus_marker"));
  sf_jobstatus st;
  sf_err err = {0};
  assert_int_equal(sf_jobstatus_get(ds, "job-1", NULL, &st, &err), SF_OK);
  assert_int_equal(st.state, SF_JOBSTATUS_PENDING);
  /* The marker as the processor writes it. */
  assert_int_equal(sf_intake_mark_failed(ds, "job-1", SF_REASON_FRAGMENT_OVERLAP,
                                         "shard 's1' overlaps", 1234, &err),
                   SF_OK);
  assert_int_equal(sf_jobstatus_get(ds, "job-1", "idx", &st, &err), SF_OK);
  assert_int_equal(st.state, SF_JOBSTATUS_FAILED);
  assert_string_equal(st.reason, "FRAGMENT_OVERLAP");
  assert_non_null(strstr(st.message, "shard 's1' overlaps"));
  assert_non_null(strstr(st.message, "_indices/_failed/job-1"));
  /* Another staging id of the same dataset is still pending. */
  assert_int_equal(sf_jobstatus_get(ds, "job-2", NULL, &st, &err), SF_OK);
  assert_int_equal(st.state, SF_JOBSTATUS_PENDING);
  assert_string_equal(sf_jobstatus_state_name(SF_JOBSTATUS_FAILED), "failed");
}

static sf_code probe_dead(void *ctx, int budget_ms, sf_jobstatus *st, sf_err *err) {
  int *calls = ctx;
  if (++*calls == 3) {
    st->state = SF_JOBSTATUS_DEAD_LETTER;
    snprintf(st->reason, sizeof st->reason, "MISSING_FILE");
  }
  return SF_OK;
}

static void waits_time_out_end_by_probe_or_cancel(void **state) {
  char ds[4096];
  snprintf(ds, sizeof ds, "%s", tu_tmpdir("jobstatus_wait"));
  sf_jobstatus st;
  sf_err err = {0};
  sf_jobstatus_wait_opts o = {.timeout_ms = 120, .interval_ms = 20};
  int64_t t0 = sf_clock_mono_ms();
  assert_int_equal(sf_jobstatus_wait(ds, "job-1", NULL, &o, &st, &err), SF_OK);
  int64_t took = sf_clock_mono_ms() - t0;
  assert_int_equal(st.state, SF_JOBSTATUS_TIMEOUT);
  assert_true(took >= 120 && took < 2000);
  assert_non_null(strstr(st.message, "within 120 ms"));
  int calls = 0;
  o = (sf_jobstatus_wait_opts){
      .interval_ms = 5, .probe = probe_dead, .probe_ctx = &calls};
  assert_int_equal(sf_jobstatus_wait(ds, "job-1", NULL, &o, &st, &err), SF_OK);
  assert_int_equal(st.state, SF_JOBSTATUS_DEAD_LETTER);
  assert_int_equal(calls, 3);
  atomic_int cancel = 1;
  o = (sf_jobstatus_wait_opts){.cancel = &cancel};
  assert_int_equal(sf_jobstatus_wait(ds, "job-1", NULL, &o, &st, &err), SF_ECANCELED);
}

static void bad_ids_and_missing_datasets_are_refused(void **state) {
  char ds[4096];
  snprintf(ds, sizeof ds, "%s", tu_tmpdir("jobstatus_bad"));
  sf_jobstatus st;
  sf_err err = {0};
  assert_int_equal(sf_jobstatus_get(ds, "../x", NULL, &st, &err), SF_EINVAL);
  assert_int_equal(sf_jobstatus_get(ds, "job", "a/b", &st, &err), SF_EINVAL);
  char none[4200];
  snprintf(none, sizeof none, "%s/none", ds);
  assert_int_equal(sf_jobstatus_get(none, "job", NULL, &st, &err), SF_ENOTFOUND);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(pending_then_failed_by_its_marker),
      cmocka_unit_test(waits_time_out_end_by_probe_or_cancel),
      cmocka_unit_test(bad_ids_and_missing_datasets_are_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
