/*
 * test_powerloss.c - a power cut at any fsync of the write paths (segment
 * build, the commit's quantizer copy, the catalog version) leaves a dataset
 * whose every catalog version reads and names intact files, never loses a
 * job that was reported committed, and on which the same work then
 * completes. After SQLite's crash tests (src/test6.c, test/crash*.test).
 *
 * The model is fault_sim.h's: a file's bytes are durable as of its last
 * fsync, a directory's entries as of the directory's last fsync; at the
 * power cut everything else is dropped, garbled or kept, per file and per
 * directory, under four policies:
 *   lose        - unsynced entries reverted, unsynced bytes dropped;
 *   garble      - unsynced entries kept, unsynced bytes garbled (metadata
 *                 reached the disk, data did not: a rename without the
 *                 fsync of its file shows here);
 *   keep-drop   - unsynced entries kept, unsynced bytes dropped (a file
 *                 never synced is empty);
 *   mixed       - each directory reverts or keeps at random, bytes garbled.
 *
 * Two scenarios, for each operation:
 *   A. power cut at the N-th fsync of one run (N = 1, 2, ... and once
 *      after the run returned);
 *   B. the process killed at the N-th fsync (its writes stay in the page
 *      cache, nothing durable is lost), then a second run, then the power
 *      cut once the second run returned: finished work the second run
 *      found and reused must have been made durable by it.
 * After each cut: the dataset checks (tests/dataset_fixture.h), a run that
 * returned success is still committed, and a fresh run succeeds and checks.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fragset.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"
#include "core/pipeline/build.h"
#include "core/pipeline/finalize.h"
#include "tests/dataset_fixture.h"
#include "tests/fault_sim.h"
#include "tests/testutil.h"

static dfx world;

static const fsim_pl_policy policies[] = {
    {FSIM_NAMES_REVERT, FSIM_DATA_DROP, 1, "lose"},
    {FSIM_NAMES_KEEP, FSIM_DATA_GARBLE, 2, "garble"},
    {FSIM_NAMES_KEEP, FSIM_DATA_DROP, 3, "keep-drop"},
    {FSIM_NAMES_MIXED, FSIM_DATA_GARBLE, 4, "mixed"},
};
#define NPOLICIES (sizeof policies / sizeof policies[0])

typedef struct op {
  const char *name;
  const char *staging_id;
  /* The work, on dataset ds. */
  sf_code (*run)(const struct op *o, const char *ds, sf_err *err);
  /* What a run that returned success guarantees after a power cut. */
  void (*durable)(const struct op *o, const char *ds, const char *when);
  /* What any power cut must leave, beyond the dataset check (may be NULL). */
  void (*intact)(const struct op *o, const char *ds, const char *when);
  char tmpl[4096];  /* the dataset before the work */
  sf_seginfo *segs; /* commit: the segments, built in the template */
  size_t nsegs;
  unsigned long cuts, runs;
} op;

/* ---- the operations ---------------------------------------------------------- */

static sf_code run_finalize(const op *o, const char *ds, sf_err *err) {
  roaring_bitmap_t *expect = roaring_bitmap_from_range(0, 6, 1);
  sf_finalize_req fr = {.dataset = ds,
                        .index_name = "idx",
                        .column = "emb",
                        .staging_id = o->staging_id,
                        .expected_fragments = expect,
                        .target_segment_bytes = 1, /* a segment per shard */
                        .index_type = -1,
                        .build = {.max_merges = 2}};
  sf_finalize_result res;
  sf_code rc = sf_finalize(&fr, &res, err);
  sf_finalize_result_clear(&res);
  sf_fragset_free(expect);
  return rc;
}

static void job_durable(const op *o, const char *ds, const char *when) {
  if (!dfx_committed(ds, o->staging_id))
    fail_msg(
        "%s: %s reported job %s committed, but after the power cut the newest "
        "version does not hold it",
        when, o->name, o->staging_id);
}

static sf_plan *plan_of(const char *ds, const char *staging_id) {
  char root[4200];
  snprintf(root, sizeof root, "%s/%s/%s", ds, SF_CATALOG_STAGING_DIR, staging_id);
  sf_plan_opts po = {
      .staging_id = staging_id, .target_segment_bytes = 1, .index_type = -1};
  sf_plan *p;
  sf_err err = {0};
  if (sf_plan_staging(root, &po, &p, &err)) fail_msg("plan: %s", err.msg);
  return p;
}

/* Every file under a segment's final name is whole: a name is published
 * only after the bytes behind it are durable. */
static void segments_intact(const op *o, const char *ds, const char *when) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/%s", ds, SF_CATALOG_SEGMENTS_DIR);
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t n = strlen(e->d_name), x = strlen(SF_PLAN_SEGMENT_EXT);
    if (n <= x || strcmp(e->d_name + n - x, SF_PLAN_SEGMENT_EXT)) continue;
    char path[4500];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    sf_seg_reader *r = NULL;
    sf_err err = {0};
    if (sf_seg_open(path, &r, &err) || sf_seg_verify(r, &err))
      fail_msg("%s: after %s, %s is damaged: %s", o->name, when, e->d_name, err.msg);
    sf_seg_close(r);
  }
  closedir(d);
}

/* After a build returned, each of its segments is there. */
static void segments_durable(const op *o, const char *ds, const char *when) {
  sf_plan *p = plan_of(ds, o->staging_id);
  for (size_t g = 0; g < p->num_segments; g++) {
    char *path = sf_build_segment_path(ds, p->segments[g].segment_id);
    struct stat st;
    if (stat(path, &st))
      fail_msg("%s: the build returned, but after %s its segment %s is gone", o->name,
               when, p->segments[g].segment_id);
    free(path);
  }
  sf_plan_free(p);
}

static sf_code run_build(const op *o, const char *ds, sf_err *err) {
  sf_plan *p = plan_of(ds, o->staging_id);
  sf_build_opts bo = {.max_merges = 2};
  sf_seginfo *segs = NULL;
  size_t n = 0;
  sf_code rc = sf_build_run(p, ds, &bo, &segs, &n, NULL, err);
  sf_build_results_free(segs, n);
  sf_plan_free(p);
  return rc;
}

static sf_code run_commit(const op *o, const char *ds, sf_err *err) {
  sf_catalog_commit_req r = {.dataset = ds,
                             .index_name = "idx",
                             .column = "emb",
                             .staging_id = o->staging_id,
                             .segs = o->segs,
                             .nsegs = o->nsegs};
  sf_catalog_commit_result res;
  return sf_catalog_commit(&r, &res, err);
}

/* ---- one power cut ---------------------------------------------------------- */

static void copy_template(const op *o, const char *dir, char *ds) {
  if (snprintf(ds, 4096, "%s/ds", dir) >= 4096) fail_msg("path too long: %s", dir);
  dfx_copy_tree(o->tmpl, ds);
}

/* Runs o on ds in a child recording to shadow, killed at the crash_at-th
 * sync (0: not). Returns 1 if the run returned success, 0 if it failed, -1
 * if it was killed. */
static int child_run(const op *o, const char *ds, const char *shadow,
                     unsigned long crash_at) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    fsim_sync_skip(0);
    fsim_pl_record(ds, shadow, crash_at);
    sf_err err = {0};
    sf_code rc = o->run(o, ds, &err);
    if (rc) fprintf(stderr, "%s (crash at sync %lu): %s\n", o->name, crash_at, err.msg);
    _exit(rc ? 1 : 0);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) return -1;
  if (!WIFEXITED(st)) fail_msg("%s: the run died of signal %d", o->name, WTERMSIG(st));
  return WEXITSTATUS(st) == 0;
}

/* Builds the tree of each policy's power cut and checks it. */
static void cut_and_check(op *o, const char *ds, const char *shadow, int returned_ok,
                          const char *when) {
  for (size_t i = 0; i < NPOLICIES; i++) {
    char out[4200], why[1024], what[256];
    snprintf(what, sizeof what, "%s, policy %s", when, policies[i].label);
    snprintf(out, sizeof out, "%s.cut", ds);
    fsim_pl_restore(ds, shadow, out, &policies[i]);
    if (dfx_check(out, why, sizeof why)) fail_msg("%s after %s: %s", o->name, what, why);
    if (o->intact) o->intact(o, out, what);
    if (returned_ok && o->durable) o->durable(o, out, what);
    sf_err err = {0};
    if (o->run(o, out, &err)) fail_msg("%s again after %s: %s", o->name, what, err.msg);
    if (dfx_check(out, why, sizeof why))
      fail_msg("%s again after %s: %s", o->name, what, why);
    if (o->durable) o->durable(o, out, what);
    dfx_rm_rf(out);
    o->cuts++;
  }
}

/* A fresh copy of the template dataset for one run: dir (scratch), ds in it,
 * and the shadow that holds the durable state of its files. */
static void fresh_copy(op *o, char dir[4096], char ds[4096], char shadow[4200]) {
  snprintf(dir, 4096, "%s", tu_tmpdir("pl"));
  copy_template(o, dir, ds);
  snprintf(shadow, 4200, "%s/shadow", dir);
  mkdir(shadow, 0755);
  fsim_pl_snapshot(ds, shadow);
}

/* Scenario A: a power cut at the n-th sync of one run, for every n. */
static unsigned long cut_during_one_run(op *o) {
  unsigned long n = 1;
  for (;; n++) {
    char dir[4096], ds[4096], shadow[4200], when[128];
    fresh_copy(o, dir, ds, shadow);
    int r = child_run(o, ds, shadow, n);
    o->runs++;
    if (r == 0) fail_msg("%s failed without a crash", o->name);
    snprintf(
        when, sizeof when,
        r < 0 ? "a power cut at sync %lu" : "a power cut after it returned (%lu syncs)",
        r < 0 ? n : n - 1);
    cut_and_check(o, ds, shadow, r > 0, when);
    dfx_rm_rf(dir);
    if (r > 0) break;
  }
  return n - 1;
}

/* Scenario B: killed at the n-th sync, run again, then the power cut. */
static void cut_after_a_rerun(op *o, unsigned long syncs) {
  for (unsigned long n = 1; n <= syncs; n++) {
    char dir[4096], ds[4096], shadow[4200], when[128];
    fresh_copy(o, dir, ds, shadow);
    if (child_run(o, ds, shadow, n) != -1)
      fail_msg("%s: no crash at sync %lu", o->name, n);
    int r = child_run(o, ds, shadow, 0);
    o->runs += 2;
    if (r != 1) fail_msg("%s: the run after a kill at sync %lu failed", o->name, n);
    snprintf(when, sizeof when, "a kill at sync %lu, a second run, and a power cut", n);
    cut_and_check(o, ds, shadow, 1, when);
    dfx_rm_rf(dir);
  }
}

static void run_all(op *o) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  unsigned long syncs = cut_during_one_run(o);
  cut_after_a_rerun(o, syncs);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  print_message("%-28s %2lu syncs, %3lu runs, %3lu power cuts checked (%.1f s)\n",
                o->name, syncs, o->runs, o->cuts,
                (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
  assert_true(syncs > 0);
}

/* ---- the tests -------------------------------------------------------------- */

static void make_template(op *o, const char *tag) {
  snprintf(o->tmpl, sizeof o->tmpl, "%s/ds", tu_tmpdir(tag));
  mkdir(o->tmpl, 0755);
  dfx_stage(&world, o->tmpl, "job", 0, 3);
}

static void test_a_power_cut_during_a_first_finalize_loses_nothing_committed(
    void **state) {
  op o = {.name = "finalize (first job)",
          .staging_id = "job",
          .run = run_finalize,
          .durable = job_durable,
          .intact = segments_intact};
  make_template(&o, "pl-first");
  run_all(&o);
}

static void test_a_power_cut_during_a_second_finalize_loses_nothing_committed(
    void **state) {
  op o = {.name = "finalize (second job)",
          .staging_id = "job",
          .run = run_finalize,
          .durable = job_durable,
          .intact = segments_intact};
  make_template(&o, "pl-second");
  /* An earlier job of the same index and quantizer is committed. */
  dfx_stage(&world, o.tmpl, "base", 8, 2);
  sf_finalize_req fr = {.dataset = o.tmpl,
                        .index_name = "idx",
                        .column = "emb",
                        .staging_id = "base",
                        .index_type = -1};
  sf_finalize_result res;
  sf_err err = {0};
  assert_int_equal(sf_finalize(&fr, &res, &err), SF_OK);
  sf_finalize_result_clear(&res);
  run_all(&o);
}

static void test_a_power_cut_during_a_commit_loses_nothing_committed(void **state) {
  op o = {
      .name = "commit", .staging_id = "job", .run = run_commit, .durable = job_durable};
  make_template(&o, "pl-commit");
  sf_plan *p = plan_of(o.tmpl, "job");
  sf_build_opts bo = {.max_merges = 1};
  sf_err err = {0};
  assert_int_equal(sf_build_run(p, o.tmpl, &bo, &o.segs, &o.nsegs, NULL, &err), SF_OK);
  sf_plan_free(p);
  run_all(&o);
  sf_build_results_free(o.segs, o.nsegs);
}

static void test_a_power_cut_during_a_build_leaves_segments_a_rerun_can_use(
    void **state) {
  op o = {.name = "build",
          .staging_id = "job",
          .run = run_build,
          .durable = segments_durable,
          .intact = segments_intact};
  make_template(&o, "pl-build");
  run_all(&o);
}

static int setup(void **state) {
  (void)state;
  dfx_init(&world, "pl-world");
  fsim_sync_skip(1); /* in this process; the recording children model syncs */
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_power_cut_during_a_first_finalize_loses_nothing_committed),
      cmocka_unit_test(test_a_power_cut_during_a_second_finalize_loses_nothing_committed),
      cmocka_unit_test(test_a_power_cut_during_a_commit_loses_nothing_committed),
      cmocka_unit_test(test_a_power_cut_during_a_build_leaves_segments_a_rerun_can_use),
  };
  dfx_scratch_in_memory();
  int failed = cmocka_run_group_tests(tests, setup, NULL);
  dfx_scratch_remove();
  return failed;
}
