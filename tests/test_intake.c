/* test_intake.c - the intake checks of `segforge serve` (consumer/intake.h):
 * whatever an event names on disk, a path that cannot be resolved or opened
 * is the event's fault (a reason for the dead-letter topic), never an error
 * that stops the service, since a restart would read the same event again.
 * Each case builds the bad path for real in a scratch directory. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "consumer/intake.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "testutil.h"

typedef struct fx {
  char ds[3900];   /* the dataset */
  char root[4000]; /* its staging root of job "job" */
  sf_intake *in;
} fx;

static fx *fx_new(void) {
  fx *f = calloc(1, sizeof *f);
  snprintf(f->ds, sizeof f->ds, "%s", tu_tmpdir("intake"));
  snprintf(f->root, sizeof f->root, "%s/_indices", f->ds);
  assert_int_equal(mkdir(f->root, 0755), 0);
  snprintf(f->root, sizeof f->root, "%s/_indices/_staging", f->ds);
  assert_int_equal(mkdir(f->root, 0755), 0);
  snprintf(f->root, sizeof f->root, "%s/_indices/_staging/job", f->ds);
  assert_int_equal(mkdir(f->root, 0755), 0);
  sf_err err = {0};
  assert_int_equal(sf_intake_new(&f->in, NULL, 0, &err), SF_OK);
  return f;
}

static void fx_free(fx *f) {
  sf_intake_free(f->in);
  free(f);
}

static sf_shard_staged event(const char *dataset, const char *staging, const char *path) {
  sf_shard_staged e;
  memset(&e, 0, sizeof e);
  e.dataset_uri = (char *)dataset;
  e.staging_id = (char *)staging;
  e.shard_id = (char *)"s0";
  e.shard_path = (char *)path;
  return e;
}

/* The check hook on shard_path of job "job": its reason (NONE = not the
 * event's fault). */
static sf_event_reason check(fx *f, const char *shard_path) {
  sf_shard_staged e = event(f->ds, "job", shard_path);
  sf_event_reason reason = SF_REASON_NONE;
  sf_err err = {0};
  char *path = NULL;
  sf_code rc = sf_intake_check(f->in, f->ds, &e, &path, &reason, &err);
  free(path);
  assert_int_not_equal(rc, SF_OK);
  assert_true(err.msg[0] != '\0');
  return reason;
}

static sf_event_reason open_dataset(const char *dataset) {
  sf_shard_staged e = event(dataset, "job", "s0.sfshard");
  sf_event_reason reason = SF_REASON_NONE;
  sf_err err = {0};
  char *owned = NULL;
  const char *dir = sf_intake_dataset(NULL, &e, &owned, &reason, &err);
  sf_code rc = dir ? sf_intake_open(NULL, dir, &e, &reason, &err) : err.code;
  free(owned);
  assert_int_not_equal(rc, SF_OK);
  assert_true(err.msg[0] != '\0');
  return reason;
}

#define EXPECT_REASON(got, want) \
  assert_string_equal(sf_event_reason_name(got), sf_event_reason_name(want))

static void a_dataset_below_a_regular_file_is_missing(void **state) {
  fx *f = fx_new();
  char file[4200], bad[4300];
  snprintf(file, sizeof file, "%s/plain", f->ds);
  tu_write_file(file, "x", 1);
  snprintf(bad, sizeof bad, "%s/x", file); /* realpath: ENOTDIR */
  EXPECT_REASON(open_dataset(bad), SF_REASON_MISSING_FILE);
  snprintf(bad, sizeof bad, "file://%s/x", file);
  EXPECT_REASON(open_dataset(bad), SF_REASON_MISSING_FILE);
  fx_free(f);
}

static void a_dataset_path_with_a_too_long_name_is_an_invalid_field(void **state) {
  fx *f = fx_new();
  char bad[4400];
  int n = snprintf(bad, sizeof bad, "%s/", f->ds);
  memset(bad + n, 'd', 300); /* one component longer than NAME_MAX */
  bad[n + 300] = '\0';
  EXPECT_REASON(open_dataset(bad), SF_REASON_INVALID_FIELD);
  fx_free(f);
}

static void a_dataset_in_a_link_loop_is_refused(void **state) {
  fx *f = fx_new();
  char a[4200], b[4200], bad[4300];
  snprintf(a, sizeof a, "%s/loop-a", f->ds);
  snprintf(b, sizeof b, "%s/loop-b", f->ds);
  assert_int_equal(symlink(b, a), 0);
  assert_int_equal(symlink(a, b), 0);
  snprintf(bad, sizeof bad, "%s/ds", a);
  assert_int_not_equal(open_dataset(bad), SF_REASON_NONE);
  fx_free(f);
}

static void a_staging_root_that_cannot_be_resolved_is_the_events_fault(void **state) {
  fx *f = fx_new();
  /* The root is a link loop: realpath of it fails with ELOOP. */
  char a[4200], b[4200];
  snprintf(a, sizeof a, "%s/_indices/_staging/looped", f->ds);
  snprintf(b, sizeof b, "%s/_indices/_staging/looped2", f->ds);
  assert_int_equal(symlink(b, a), 0);
  assert_int_equal(symlink(a, b), 0);
  sf_shard_staged e = event(f->ds, "looped", "s0.sfshard");
  sf_event_reason reason = SF_REASON_NONE;
  sf_err err = {0};
  char *path = NULL;
  assert_int_not_equal(sf_intake_check(f->in, f->ds, &e, &path, &reason, &err), SF_OK);
  assert_int_not_equal(reason, SF_REASON_NONE);
  fx_free(f);
}

static void a_shard_path_component_longer_than_a_file_name_is_an_invalid_field(
    void **state) {
  fx *f = fx_new();
  char bad[400] = "sub/";
  memset(bad + 4, 's', 300);
  bad[304] = '\0';
  char sub[4200];
  snprintf(sub, sizeof sub, "%s/sub", f->root);
  assert_int_equal(mkdir(sub, 0755), 0);
  EXPECT_REASON(check(f, bad), SF_REASON_INVALID_FIELD);
  EXPECT_REASON(check(f, bad + 4), SF_REASON_INVALID_FIELD); /* one plain name */
  fx_free(f);
}

static void a_shard_path_naming_a_directory_is_a_corrupt_file(void **state) {
  fx *f = fx_new();
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/adir.sfshard", f->root);
  assert_int_equal(mkdir(dir, 0755), 0);
  EXPECT_REASON(check(f, "adir.sfshard"), SF_REASON_CORRUPT_FILE);
  fx_free(f);
}

static void a_shard_path_naming_a_fifo_is_refused_without_blocking(void **state) {
  fx *f = fx_new();
  char fifo[4200];
  snprintf(fifo, sizeof fifo, "%s/pipe.sfshard", f->root);
  assert_int_equal(mkfifo(fifo, 0644), 0);
  EXPECT_REASON(check(f, "pipe.sfshard"), SF_REASON_CORRUPT_FILE);
  fx_free(f);
}

static void a_shard_path_in_a_link_loop_is_refused(void **state) {
  fx *f = fx_new();
  char a[4200], b[4200];
  snprintf(a, sizeof a, "%s/la.sfshard", f->root);
  snprintf(b, sizeof b, "%s/lb.sfshard", f->root);
  assert_int_equal(symlink(b, a), 0);
  assert_int_equal(symlink(a, b), 0);
  assert_int_not_equal(check(f, "la.sfshard"), SF_REASON_NONE);
  fx_free(f);
}

static void a_shard_path_below_a_regular_file_is_missing(void **state) {
  fx *f = fx_new();
  char file[4200];
  snprintf(file, sizeof file, "%s/plain", f->root);
  tu_write_file(file, "x", 1);
  EXPECT_REASON(check(f, "plain/s0.sfshard"), SF_REASON_MISSING_FILE);
  fx_free(f);
}

static void an_unreadable_shard_file_is_the_events_fault(void **state) {
  if (geteuid() == 0) skip(); /* root reads everything */
  fx *f = fx_new();
  char file[4200];
  snprintf(file, sizeof file, "%s/locked.sfshard", f->root);
  tu_write_file(file, "x", 1);
  assert_int_equal(chmod(file, 0), 0);
  assert_int_not_equal(check(f, "locked.sfshard"), SF_REASON_NONE);
  fx_free(f);
}

static void a_shard_file_that_is_not_a_shard_is_a_corrupt_file(void **state) {
  fx *f = fx_new();
  char file[4200];
  snprintf(file, sizeof file, "%s/junk.sfshard", f->root);
  tu_write_file(file, "not a shard at all", 18);
  EXPECT_REASON(check(f, "junk.sfshard"), SF_REASON_CORRUPT_FILE);
  fx_free(f);
}

/* The open hook with dataset roots: its reason, and its message in msg. */
static sf_event_reason open_in_roots(sf_intake *in, const char *dataset, char *msg) {
  sf_shard_staged e = event(dataset, "job", "s0.sfshard");
  sf_event_reason reason = SF_REASON_NONE;
  sf_err err = {0};
  char *owned = NULL;
  const char *dir = sf_intake_dataset(in, &e, &owned, &reason, &err);
  sf_code rc = dir ? sf_intake_open(in, dir, &e, &reason, &err) : err.code;
  free(owned);
  snprintf(msg, SF_ERR_MSG_MAX, "%s", rc ? err.msg : "");
  return reason;
}

static void mkdirs(const char *base, const char *rel) {
  char p[4300];
  snprintf(p, sizeof p, "%s/%s", base, rel);
  sf_err err;
  assert_int_equal(sf_fs_mkdirs(p, &err), SF_OK);
}

static void linkto(const char *target, const char *base, const char *rel) {
  char p[4300];
  snprintf(p, sizeof p, "%s/%s", base, rel);
  assert_int_equal(symlink(target, p), 0);
}

/* With --dataset-root, a dataset outside the roots is refused, and so is
 * one inside whose _indices, staging or output directories are links that
 * lead out: the service would write or read there. A real directory
 * tree, and a root given as a prefix of another name, are told apart. */
static void with_roots_a_link_out_of_a_served_dataset_is_a_path_escape(void **state) {
  char base[3900], served[4000], outside[4000], ds[4100], msg[SF_ERR_MSG_MAX];
  snprintf(base, sizeof base, "%s", tu_tmpdir("intake_roots"));
  snprintf(served, sizeof served, "%s/served", base);
  snprintf(outside, sizeof outside, "%s/outside", base);
  mkdirs(base, "served");
  mkdirs(base, "outside/job");
  mkdirs(base, "outside/idx");
  mkdirs(base, "served2/d/_indices/_staging/job");
  const char *roots[] = {served};
  sf_intake *in;
  sf_err err;
  assert_int_equal(sf_intake_new(&in, roots, 1, &err), SF_OK);

  mkdirs(served, "ok/_indices/_staging/job"); /* all real: fine */
  snprintf(ds, sizeof ds, "%s/ok", served);
  EXPECT_REASON(open_in_roots(in, ds, msg), SF_REASON_NONE);

  snprintf(ds, sizeof ds, "%s/served2/d", base); /* a prefix is not a parent */
  EXPECT_REASON(open_in_roots(in, ds, msg), SF_REASON_PATH_ESCAPE);
  assert_non_null(strstr(msg, "--dataset-root"));

  linkto(outside, served, "lnk"); /* the dataset itself links out */
  snprintf(ds, sizeof ds, "%s/lnk", served);
  EXPECT_REASON(open_in_roots(in, ds, msg), SF_REASON_PATH_ESCAPE);

  mkdirs(served, "a");
  linkto(outside, served, "a/_indices"); /* _indices links out */
  snprintf(ds, sizeof ds, "%s/a", served);
  EXPECT_REASON(open_in_roots(in, ds, msg), SF_REASON_PATH_ESCAPE);
  assert_non_null(strstr(msg, "_indices is a link"));

  mkdirs(served, "b/_indices/_staging");
  char idx[4100];
  snprintf(idx, sizeof idx, "%s/idx", outside);
  linkto(idx, served, "b/_indices/segments"); /* where segments are written */
  snprintf(ds, sizeof ds, "%s/b", served);
  EXPECT_REASON(open_in_roots(in, ds, msg), SF_REASON_PATH_ESCAPE);
  assert_non_null(strstr(msg, "segments is a link"));

  mkdirs(served, "dangling/_indices");
  linkto("/nonexistent-target", served, "dangling/_indices/segments"); /* to nowhere */
  snprintf(ds, sizeof ds, "%s/dangling", served);
  EXPECT_REASON(open_in_roots(in, ds, msg), SF_REASON_PATH_ESCAPE);
  assert_non_null(strstr(msg, "does not exist"));

  mkdirs(served, "c/_indices/_staging");
  char job[4100];
  snprintf(job, sizeof job, "%s/job", outside);
  linkto(job, served, "c/_indices/_staging/job"); /* one job's staging root */
  snprintf(ds, sizeof ds, "%s/c", served);
  EXPECT_REASON(open_in_roots(in, ds, msg), SF_REASON_NONE);
  sf_shard_staged e = event(ds, "job", "s0.sfshard");
  sf_event_reason reason = SF_REASON_NONE;
  char *path = NULL;
  assert_int_not_equal(sf_intake_check(in, ds, &e, &path, &reason, &err), SF_OK);
  EXPECT_REASON(reason, SF_REASON_PATH_ESCAPE);
  assert_non_null(strstr(err.msg, "staging root"));
  assert_null(path);
  sf_intake_free(in);
}

/* The open hook with dataset roots (or none: in NULL) on the staging id
 * "job": its code, reason and message. */
static sf_code open_hook(sf_intake *in, const char *dir, sf_event_reason *reason,
                         char *msg) {
  sf_shard_staged e = event(dir, "job", "s0.sfshard");
  sf_err err = {0};
  *reason = SF_REASON_NONE;
  sf_code rc = sf_intake_open(in, dir, &e, reason, &err);
  snprintf(msg, SF_ERR_MSG_MAX, "%s", rc ? err.msg : "");
  return rc;
}

/* What the event does not name - the dataset's catalog, its failed
 * markers, its own directories - is the dataset's: when it cannot be read
 * the hook cannot tell what the event means, and says so without blaming
 * the event (reason NONE, not out of memory: the job table holds the
 * event until it reads). */
static void a_dataset_that_cannot_be_read_is_not_the_events_fault(void **state) {
  fx *f = fx_new();
  char *dir = realpath(f->ds, NULL), msg[SF_ERR_MSG_MAX], p[4300], name[32];
  sf_event_reason reason;
  assert_int_equal(open_hook(NULL, dir, &reason, msg), SF_OK); /* no catalog yet */

  mkdirs(dir, SF_CATALOG_DIR); /* a newest version that does not read */
  sf_catalog_version_name(1, name, sizeof name);
  snprintf(p, sizeof p, "%s/%s/%s", dir, SF_CATALOG_DIR, name);
  tu_write_file(p, "torn", 4);
  sf_code rc = open_hook(NULL, dir, &reason, msg);
  assert_true(rc == SF_ECORRUPT || rc == SF_EFORMAT);
  EXPECT_REASON(reason, SF_REASON_NONE);
  assert_non_null(strstr(msg, "newest catalog version"));
  assert_non_null(strstr(msg, name));
  assert_int_equal(unlink(p), 0);
  assert_int_equal(open_hook(NULL, dir, &reason, msg), SF_OK);

  mkdirs(dir, SF_INTAKE_FAILED_DIR); /* a failed marker that cannot be looked up */
  linkto("job", dir, SF_INTAKE_FAILED_DIR "/job");
  assert_int_equal(open_hook(NULL, dir, &reason, msg), SF_EIO);
  EXPECT_REASON(reason, SF_REASON_NONE);
  assert_non_null(strstr(msg, "cannot tell whether it failed"));
  snprintf(p, sizeof p, "%s/%s/job", dir, SF_INTAKE_FAILED_DIR);
  assert_int_equal(unlink(p), 0);

  const char *roots[] = {dir}; /* a directory of it that does not resolve */
  sf_intake *in;
  sf_err err;
  assert_int_equal(sf_intake_new(&in, roots, 1, &err), SF_OK);
  assert_int_equal(open_hook(in, dir, &reason, msg), SF_OK);
  linkto("segments", dir, SF_CATALOG_SEGMENTS_DIR);
  assert_int_equal(open_hook(in, dir, &reason, msg), SF_EIO);
  EXPECT_REASON(reason, SF_REASON_NONE);
  assert_non_null(strstr(msg, "segments"));
  sf_intake_free(in);
  free(dir);
  fx_free(f);
}

/* The key of an event's job: every spelling of the dataset gives the
 * canonical string, through the cache or without one. */
static void every_spelling_of_a_dataset_keys_one_job(void **state) {
  fx *f = fx_new();
  char *want = realpath(f->ds, NULL);
  char forms[4][4200];
  snprintf(forms[0], sizeof forms[0], "%s", f->ds);
  snprintf(forms[1], sizeof forms[1], "file://%s", f->ds);
  snprintf(forms[2], sizeof forms[2], "%s/", f->ds);
  snprintf(forms[3], sizeof forms[3], "%s/_indices/..", f->ds);
  for (int round = 0; round < 2; round++) /* the second from the cache */
    for (int i = 0; i < 4; i++) {
      sf_shard_staged e = event(forms[i], "job", "s0.sfshard");
      sf_event_reason reason = SF_REASON_NONE;
      sf_err err = {0};
      char *owned = NULL, *none = NULL;
      const char *ds = sf_intake_dataset(f->in, &e, &owned, &reason, &err);
      if (!ds) fail_msg("%s: %s", forms[i], err.msg);
      assert_string_equal(ds, want);
      assert_null(owned); /* borrowed from the cache */
      ds = sf_intake_dataset(NULL, &e, &none, &reason, &err);
      assert_string_equal(ds, want);
      assert_ptr_equal(ds, none); /* without a cache: the caller's */
      free(none);
    }
  char other[4200];
  snprintf(other, sizeof other, "file://elsewhere%s", f->ds);
  sf_shard_staged e = event(other, "job", "s0.sfshard");
  sf_event_reason reason = SF_REASON_NONE;
  sf_err err = {0};
  char *owned = NULL;
  assert_null(sf_intake_dataset(f->in, &e, &owned, &reason, &err));
  EXPECT_REASON(reason, SF_REASON_INVALID_FIELD);
  free(want);
  fx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_dataset_below_a_regular_file_is_missing),
      cmocka_unit_test(a_dataset_path_with_a_too_long_name_is_an_invalid_field),
      cmocka_unit_test(a_dataset_in_a_link_loop_is_refused),
      cmocka_unit_test(a_staging_root_that_cannot_be_resolved_is_the_events_fault),
      cmocka_unit_test(
          a_shard_path_component_longer_than_a_file_name_is_an_invalid_field),
      cmocka_unit_test(a_shard_path_naming_a_directory_is_a_corrupt_file),
      cmocka_unit_test(a_shard_path_naming_a_fifo_is_refused_without_blocking),
      cmocka_unit_test(a_shard_path_in_a_link_loop_is_refused),
      cmocka_unit_test(a_shard_path_below_a_regular_file_is_missing),
      cmocka_unit_test(an_unreadable_shard_file_is_the_events_fault),
      cmocka_unit_test(a_shard_file_that_is_not_a_shard_is_a_corrupt_file),
      cmocka_unit_test(with_roots_a_link_out_of_a_served_dataset_is_a_path_escape),
      cmocka_unit_test(every_spelling_of_a_dataset_keys_one_job),
      cmocka_unit_test(a_dataset_that_cannot_be_read_is_not_the_events_fault),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
