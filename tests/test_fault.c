/* test_fault.c - the fault points: SF_FAULT arms the named points with
 * their action, a crash is a SIGKILL, a failure is SF_EIO naming the point,
 * and a misspelt entry is an error rather than a point that never fires. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fault.h"

static void set(const char *v) {
  if (v)
    setenv(SF_FAULT_ENV, v, 1);
  else
    unsetenv(SF_FAULT_ENV);
  sf_fault_reload();
}

static void test_without_sf_fault_no_point_is_armed(void **state) {
  set(NULL);
  sf_err err = {0};
  assert_int_equal(sf_fault_check_env(&err), SF_OK);
  assert_int_equal(sf_fault_get("catalog.before_link"), SF_FAULT_OFF);
  assert_int_equal(sf_fault_point("build.mid_segment", &err), SF_OK);
}

static void test_each_listed_point_gets_its_action_and_no_other_point_is_armed(
    void **state) {
  set("catalog.before_link=fail,build.after_segment,serve.after_commit=crash");
  sf_err err = {0};
  assert_int_equal(sf_fault_check_env(&err), SF_OK);
  assert_int_equal(sf_fault_get("catalog.before_link"), SF_FAULT_FAIL);
  assert_int_equal(sf_fault_get("build.after_segment"), SF_FAULT_CRASH);
  assert_int_equal(sf_fault_get("serve.after_commit"), SF_FAULT_CRASH);
  assert_int_equal(sf_fault_get("build.mid_segment"), SF_FAULT_OFF);
  assert_int_equal(sf_fault_get("catalog.after_link"), SF_FAULT_OFF);
  /* A name is matched whole, not as a substring of an entry. */
  set("catalog.before_link_x");
  assert_int_equal(sf_fault_get("catalog.before_link"), SF_FAULT_OFF);
  set(NULL);
}

static void test_a_failing_point_returns_eio_naming_the_point(void **state) {
  set("catalog.before_link=fail");
  sf_err err = {0};
  assert_int_equal(sf_fault_point("catalog.before_link", &err), SF_EIO);
  assert_non_null(strstr(err.msg, "catalog.before_link"));
  set(NULL);
}

static void test_a_crashing_point_kills_the_process_with_sigkill(void **state) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    set("build.mid_segment");
    (void)sf_fault_point("build.mid_segment", NULL);
    _exit(0); /* not reached when the point works */
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGKILL);
}

static void refused(const char *value, const char *says) {
  set(value);
  sf_err err = {0};
  assert_int_equal(sf_fault_check_env(&err), SF_EINVAL);
  if (!strstr(err.msg, says)) fail_msg("'%s' gave \"%s\"", value, err.msg);
}

static void test_a_misspelt_point_a_bad_action_or_an_unsupported_fail_is_refused(
    void **state) {
  refused("catalog.befor_link", "'catalog.befor_link': no such fault point");
  refused("build.mid_segment=boom", "must be crash or fail");
  refused("serve.after_commit=fail", "cannot fail");
  /* The good entries of a list with a bad one are still armed. */
  refused("build.mid_segment,nope", "'nope'");
  assert_int_equal(sf_fault_get("build.mid_segment"), SF_FAULT_CRASH);
  set(NULL);
}

static void test_a_point_named_twice_or_an_empty_entry_is_refused(void **state) {
  /* Either order: the first action stays armed, the second is refused. */
  refused("build.mid_segment,build.mid_segment=fail", "named twice");
  assert_int_equal(sf_fault_get("build.mid_segment"), SF_FAULT_CRASH);
  refused("build.mid_segment=fail,build.mid_segment", "named twice");
  assert_int_equal(sf_fault_get("build.mid_segment"), SF_FAULT_FAIL);
  refused(",", "empty entry");
  refused("build.mid_segment,", "empty entry");
  refused(",build.mid_segment", "empty entry");
  refused("build.mid_segment,,catalog.before_link", "empty entry");
  set(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_without_sf_fault_no_point_is_armed),
      cmocka_unit_test(
          test_each_listed_point_gets_its_action_and_no_other_point_is_armed),
      cmocka_unit_test(test_a_failing_point_returns_eio_naming_the_point),
      cmocka_unit_test(test_a_crashing_point_kills_the_process_with_sigkill),
      cmocka_unit_test(
          test_a_misspelt_point_a_bad_action_or_an_unsupported_fail_is_refused),
      cmocka_unit_test(test_a_point_named_twice_or_an_empty_entry_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
