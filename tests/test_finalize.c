/* test_finalize.c - sf_finalize says whose fault a failure is: the stream
 * processor fails a job (and marks its staging id failed for good) only for
 * what is the job's own, and retries what is the environment's. And gc
 * running in a loop beside it never takes a segment it is about to commit,
 * fresh or reused from a crashed run. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fault.h"
#include "core/base/fragset.h"
#include "core/catalog/catalog.h"
#include "core/catalog/gc.h"
#include "core/format/stage.h"
#include "core/pipeline/finalize.h"
#include "core/search/search.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"
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

static void an_unreadable_catalog_version_is_retryable_not_the_jobs_fault(void **state) {
  char ds[4000];
  snprintf(ds, sizeof ds, "%s", tu_tmpdir("finalize"));
  tu_mkdirs(ds, SF_CATALOG_DIR);
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
  tu_mkdirs(ds, SF_CATALOG_STAGING_DIR "/job");
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

/* ---- gc racing finalize -------------------------------------------------- */

#define DIM 8
#define RPF 50 /* rows per fragment */

/* A dataset whose jobs job-<j> hold `shards` one-fragment shards each (job
 * j has fragments j*shards ...), all with one quantizer. */
static void make_jobs(char *ds, size_t dslen, const char *tag, int jobs, int shards) {
  snprintf(ds, dslen, "%s", tu_tmpdir(tag));
  size_t n = (size_t)jobs * (size_t)shards * RPF;
  float *x = malloc(n * DIM * sizeof *x);
  assert_non_null(x);
  sf_gen_clustered(x, n, DIM, 8, 0.1f, 1, 2);
  sf_err err = {0};
  char vec[4200];
  snprintf(vec, sizeof vec, "%s/base.fvecs", ds);
  sf_vecwriter *w;
  assert_int_equal(sf_vecwriter_open(vec, DIM, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, x, n, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  sf_quant_params qp = {
      .type = SF_IVF_FLAT, .metric = SF_L2, .dim = DIM, .nlist = 4, .seed = 3};
  sf_quant *q;
  assert_int_equal(sf_quant_train(&qp, x, n, &q, &err), SF_OK);
  free(x);
  for (int j = 0; j < jobs; j++) {
    char rel[128], root[4300], qpath[4400];
    snprintf(rel, sizeof rel, "%s/job-%d", SF_CATALOG_STAGING_DIR, j);
    snprintf(root, sizeof root, "%s/%s", ds, rel);
    tu_mkdirs(ds, rel);
    snprintf(qpath, sizeof qpath, "%s/quantizer", root);
    assert_int_equal(sf_quant_save(q, qpath, &err), SF_OK);
    for (int k = 0; k < shards; k++) {
      char id[32];
      snprintf(id, sizeof id, "s%d", k);
      roaring_bitmap_t *frags = roaring_bitmap_of(1, (uint32_t)(j * shards + k));
      sf_stage_opts so = {.vectors = vec,
                          .staging_root = root,
                          .shard_id = id,
                          .fragments = frags,
                          .rows_per_fragment = RPF};
      sf_stage_result sr;
      sf_code rc = sf_stage_shard(&so, q, &sr, &err);
      if (rc) fprintf(stderr, "stage: %s\n", err.msg);
      assert_int_equal(rc, SF_OK);
      free(sr.path);
      roaring_bitmap_free(frags);
    }
  }
  sf_quant_free(q);
}

/* gc in a loop on its own thread (the library call, as a service embedding
 * both would run it), from `go` until `stop`. */
typedef struct gc_loop {
  const char *ds;
  sf_gc_opts o;
  atomic_int go, stop;
  int runs;
  size_t versions_removed;
  sf_code rc;
  sf_err err;
} gc_loop;

static void *gc_main(void *arg) {
  gc_loop *g = arg;
  while (!atomic_load(&g->go) && !atomic_load(&g->stop)) usleep(1000);
  while (!atomic_load(&g->stop) && !g->rc) {
    sf_gc_stats st;
    g->rc = sf_gc_run(g->ds, &g->o, NULL, NULL, &st, &g->err);
    g->versions_removed += st.removed[SF_GC_VERSION];
    g->runs++;
  }
  return NULL;
}

static sf_code finalize_job(const char *ds, int j, sf_build_progress_fn fn, void *ctx,
                            sf_finalize_result *res, sf_err *err) {
  char job[32];
  snprintf(job, sizeof job, "job-%d", j);
  sf_finalize_req req = {.dataset = ds,
                         .index_name = "idx",
                         .column = "emb",
                         .staging_id = job,
                         .index_type = -1,
                         .build = {.max_merges = 2, .progress = fn, .progress_ctx = ctx}};
  sf_code rc = sf_finalize(&req, res, err);
  if (rc) fprintf(stderr, "finalize %s: %s\n", job, err->msg);
  return rc;
}

/* Every segment of every version on disk opens, and the newest version
 * answers a query over all `rows` rows. */
static void assert_catalog_whole(const char *ds, uint64_t rows) {
  sf_err err = {0};
  uint64_t *v;
  size_t nv;
  assert_int_equal(sf_catalog_list_versions(ds, &v, &nv, &err), SF_OK);
  assert_true(nv >= 1);
  size_t missing = 0;
  for (size_t i = 0; i < nv; i++) {
    sf_catalog *c;
    assert_int_equal(sf_catalog_open_version(ds, v[i], &c, &err), SF_OK);
    const sf_catalog_index *ix = sf_catalog_find_index(c, "idx");
    assert_non_null(ix);
    for (size_t k = 0; k < ix->nsegs; k++) {
      char *p = sf_catalog_segment_path(c, &ix->segs[k]);
      struct stat st;
      if (stat(p, &st)) {
        fprintf(stderr, "version %llu names missing %s\n", (unsigned long long)v[i], p);
        missing++;
      }
      free(p);
    }
    sf_catalog_free(c);
  }
  free(v);
  assert_int_equal(missing, 0);
  sf_search *s;
  assert_int_equal(sf_search_open_dataset(ds, "idx", NULL, &s, &err), SF_OK);
  assert_int_equal(sf_search_rows(s), rows);
  float query[DIM] = {0};
  sf_rowid ids[5];
  float scores[5];
  uint32_t got;
  assert_int_equal(sf_search_query(s, query, 5, 4, ids, scores, &got, &err), SF_OK);
  assert_int_equal(got, 5);
  sf_search_free(s);
}

#define RACE_JOBS 6

/* Every commit is held half a second before it takes the catalog lock
 * (SF_FAULT=catalog.pause_before_lock), after its segments are built: gc,
 * looping with no grace and one kept version, has all that time to take
 * them, and must not. */
static void gc_in_a_loop_never_takes_a_segment_that_finalize_commits(void **state) {
  char ds[4000];
  make_jobs(ds, sizeof ds, "finalize-gc", RACE_JOBS, 1);
  gc_loop g = {.ds = ds, .o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = -1}};
  atomic_store(&g.go, 1);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, gc_main, &g), 0);
  setenv("SF_FAULT", "catalog.pause_before_lock", 1);
  sf_fault_reload();
  int failed = 0;
  for (int j = 0; j < RACE_JOBS; j++) {
    sf_finalize_result res;
    sf_err err = {0};
    if (finalize_job(ds, j, NULL, NULL, &res, &err)) failed++;
    sf_finalize_result_clear(&res);
  }
  unsetenv("SF_FAULT");
  sf_fault_reload();
  atomic_store(&g.stop, 1);
  pthread_join(t, NULL);
  if (g.rc) fprintf(stderr, "gc: %s\n", g.err.msg);
  assert_int_equal(g.rc, SF_OK);
  assert_true(g.runs > RACE_JOBS);
  assert_true(g.versions_removed >= RACE_JOBS - 1); /* it ran between the commits */
  assert_int_equal(failed, 0);
  assert_catalog_whole(ds, RACE_JOBS * RPF);
}

/* Sets go once every segment of the build is finished or reused: gc then
 * runs between the build and the commit. */
static void start_gc_when_built(void *ctx, const sf_build_progress *p) {
  gc_loop *g = ctx;
  if (p->segments_done == p->segments_total) atomic_store(&g->go, 1);
}

/* A build killed after its first segment leaves it finished under its final
 * name; hours later (older than gc's default grace, and no version names
 * it) the re-run reuses it. gc with the default grace, running between that
 * reuse and the commit, must keep it. */
static void a_reused_segment_older_than_the_grace_survives_gc_until_committed(
    void **state) {
  char ds[4000];
  make_jobs(ds, sizeof ds, "finalize-reuse", 1, 3);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("SF_FAULT", "build.after_segment", 1);
    sf_fault_reload();
    sf_finalize_req req = {.dataset = ds,
                           .index_name = "idx",
                           .column = "emb",
                           .staging_id = "job-0",
                           .index_type = -1,
                           .build = {.max_merges = 1}};
    sf_finalize_result res;
    sf_finalize(&req, &res, NULL);
    _exit(0); /* not reached: the fault point kills the process */
  }
  int wst;
  assert_int_equal(waitpid(pid, &wst, 0), pid);
  assert_true(WIFSIGNALED(wst));
  /* What the crash left: one finished segment, now made two hours old. */
  char segdir[4100];
  snprintf(segdir, sizeof segdir, "%s/%s", ds, SF_CATALOG_SEGMENTS_DIR);
  DIR *d = opendir(segdir);
  assert_non_null(d);
  int left = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strstr(e->d_name, ".sfseg") || strstr(e->d_name, ".tmp.")) continue;
    struct timeval tv[2];
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= 2 * 3600;
    tv[1] = tv[0];
    assert_int_equal(utimes(tu_path(segdir, e->d_name), tv), 0);
    left++;
  }
  closedir(d);
  assert_int_equal(left, 1);

  gc_loop g = {.ds = ds, .o = {.keep_versions = 1, .grace_ms = -1, .temp_age_ms = -1}};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, gc_main, &g), 0);
  setenv("SF_FAULT", "catalog.pause_before_lock", 1);
  sf_fault_reload();
  sf_finalize_result res;
  sf_err err = {0};
  sf_code rc = finalize_job(ds, 0, start_gc_when_built, &g, &res, &err);
  unsetenv("SF_FAULT");
  sf_fault_reload();
  atomic_store(&g.stop, 1);
  pthread_join(t, NULL);
  assert_int_equal(rc, SF_OK);
  assert_int_equal(res.build.reused, 1);
  sf_finalize_result_clear(&res);
  assert_int_equal(g.rc, SF_OK);
  assert_true(g.runs > 1); /* it ran inside the commit's pause */
  assert_catalog_whole(ds, 3 * RPF);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_unreadable_catalog_version_is_retryable_not_the_jobs_fault),
      cmocka_unit_test(a_job_without_its_quantizer_is_the_jobs_fault),
      cmocka_unit_test(a_missing_dataset_is_the_jobs_fault),
      cmocka_unit_test(gc_in_a_loop_never_takes_a_segment_that_finalize_commits),
      cmocka_unit_test(a_reused_segment_older_than_the_grace_survives_gc_until_committed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
