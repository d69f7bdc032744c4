/* test_gc.c - gc removes exactly what no kept catalog version needs. */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/catalog/gc.h"
#include "core/vector/quantizer.h"
#include "tests/testutil.h"

typedef struct fx {
  char ds[4096];
  char qpath[4200];
  uint64_t cs;
} fx;

static const char *P(const fx *f, const char *rel) {
  static char b[4][4700];
  static int k;
  char *p = b[k++ & 3];
  snprintf(p, 4700, "%s/%s", f->ds, rel);
  return p;
}

static int exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0;
}

static void touch(const char *p, size_t bytes, int hours_old) {
  char *dir = sf_fs_dirname(p);
  assert_int_equal(sf_fs_mkdirs(dir, NULL), SF_OK);
  free(dir);
  uint8_t buf[256] = {0};
  tu_write_file(p, buf, bytes < sizeof buf ? bytes : sizeof buf);
  if (hours_old) {
    struct timeval tv[2];
    gettimeofday(&tv[0], NULL);
    tv[0].tv_sec -= hours_old * 3600;
    tv[1] = tv[0];
    assert_int_equal(utimes(p, tv), 0);
  }
}

static void fx_init(fx *f, const char *tag) {
  snprintf(f->ds, sizeof f->ds, "%s", tu_tmpdir(tag));
  snprintf(f->qpath, sizeof f->qpath, "%s/q", f->ds);
  sf_quant_params p = {
      .type = SF_IVF_FLAT, .metric = SF_L2, .dim = 4, .nlist = 2, .seed = 1};
  float x[64 * 4];
  for (int i = 0; i < 64 * 4; i++) x[i] = (float)(i % 13);
  sf_quant *q;
  assert_int_equal(sf_quant_train(&p, x, 64, &q, NULL), SF_OK);
  assert_int_equal(sf_quant_save(q, f->qpath, NULL), SF_OK);
  f->cs = sf_quant_checksum(q);
  sf_quant_free(q);
}

/* Commits segment `seg` (a 64-byte dummy file) over `frags` as job `job`,
 * with a staging root holding the quantizer and a shard. */
/* Commits segment seg (fragments frags) of job to index idx, with its
 * shard and segment files in place; r brings the request's other fields. */
static void commit_req(const fx *f, const char *job, const char *seg, const char *frags,
                       sf_catalog_commit_req r) {
  char rel[512];
  snprintf(rel, sizeof rel, "_indices/_staging/%s/shard-0.sfshard", job);
  touch(P(f, rel), 100, 0);
  snprintf(rel, sizeof rel, "_indices/segments/%s.sfseg", seg);
  touch(P(f, rel), 64, 0);
  sf_seginfo s = {.bytes = 64,
                  .num_rows = 16,
                  .index_type = SF_IVF_FLAT,
                  .metric = SF_L2,
                  .dim = 4,
                  .nlist = 2,
                  .quantizer_checksum = f->cs};
  char path[512];
  snprintf(path, sizeof path, "segments/%s.sfseg", seg);
  s.segment_id = (char *)seg;
  s.path = path;
  assert_int_equal(sf_fragset_parse(frags, "frags", &s.fragments, NULL), SF_OK);
  r.dataset = f->ds;
  r.index_name = "idx";
  r.column = "emb";
  r.staging_id = job;
  r.segs = &s;
  r.nsegs = 1;
  sf_catalog_commit_result res;
  sf_err err = {0};
  sf_code rc = sf_catalog_commit(&r, &res, &err);
  if (rc) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, SF_OK);
  sf_fragset_free(s.fragments);
}

/* commit_req() with the quantizer copied into the staging root. */
static void commit(const fx *f, const char *job, const char *seg, const char *frags,
                   int replace) {
  char rel[512];
  snprintf(rel, sizeof rel, "_indices/_staging/%s/quantizer", job);
  touch(P(f, rel), 0, 0); /* with the staging root */
  size_t n;
  uint8_t *q = tu_read_file(f->qpath, &n);
  tu_write_file(P(f, rel), q, n);
  free(q);
  commit_req(f, job, seg, frags, (sf_catalog_commit_req){.replace = replace});
}

/* commit_req(), keeping `window` jobs in a version and at most 3 in a chunk
 * of the job archive. */
static void commit_w(const fx *f, const char *job, const char *seg, const char *frags,
                     size_t window) {
  commit_req(
      f, job, seg, frags,
      (sf_catalog_commit_req){
          .quantizer_path = f->qpath, .job_window = window, .archive_chunk_jobs = 3});
}

static size_t count_in(const fx *f, const char *rel) {
  return tu_count_entries(P(f, rel), NULL, 1);
}

#define ARCH_JOBS 15

static void test_gc_keeps_the_chunks_kept_versions_name_and_knows_archived_jobs(
    void **state) {
  (void)state;
  fx f;
  fx_init(&f, "gc-archive");
  for (int i = 0; i < ARCH_JOBS; i++) {
    char job[32], seg[32], frag[16];
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    snprintf(frag, sizeof frag, "%d", i);
    commit_w(&f, job, seg, frag, 2);
  }
  touch(P(&f, "_indices/_staging/pending/shard-0.sfshard"), 100, 0);
  size_t chunks_before = count_in(&f, SF_CATALOG_JOBS_DIR);
  sf_err err = {0};
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  size_t live = sf_catalog_num_archive_chunks(c);
  assert_true(live >= 2);
  assert_true(chunks_before > live); /* superseded chunks of older versions */
  sf_catalog_free(c);

  /* Three versions kept: their chunks stay. */
  sf_gc_opts o = {.keep_versions = 3, .grace_ms = 0, .temp_age_ms = -1};
  sf_gc_stats st;
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  for (uint64_t v = ARCH_JOBS - 2; v <= ARCH_JOBS; v++) {
    assert_int_equal(sf_catalog_open_version(f.ds, v, &c, &err), SF_OK);
    for (size_t i = 0; i < sf_catalog_num_archive_chunks(c); i++) {
      char rel[256];
      snprintf(rel, sizeof rel, "%s/%s", SF_CATALOG_JOBS_DIR,
               sf_catalog_archive_chunk_name(c, i));
      assert_true(exists(P(&f, rel)));
    }
    sf_catalog_free(c);
  }
  /* Staging roots of every committed job went, archived or not; the
   * pending one stayed. */
  assert_int_equal(st.removed[SF_GC_STAGING], ARCH_JOBS);
  assert_true(exists(P(&f, "_indices/_staging/pending")));
  assert_true(st.removed[SF_GC_ARCHIVE] > 0);

  /* One version kept: exactly its chunks stay, and every job is found. */
  o.keep_versions = 1;
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(count_in(&f, SF_CATALOG_JOBS_DIR), live);
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  for (int i = 0; i < ARCH_JOBS; i++) {
    char job[32];
    snprintf(job, sizeof job, "job-%d", i);
    int found = 0;
    assert_int_equal(sf_catalog_lookup_job(c, job, NULL, &found, &err), SF_OK);
    assert_true(found);
  }

  /* A chunk that does not read stops gc before it deletes anything, when
   * it must ask the chunk about a staging root. */
  for (size_t i = 0; i < live; i++) {
    char rel[256];
    snprintf(rel, sizeof rel, "%s/%s", SF_CATALOG_JOBS_DIR,
             sf_catalog_archive_chunk_name(c, i));
    size_t len;
    free(tu_read_file(P(&f, rel), &len));
    tu_flip_byte(P(&f, rel), len - 30, 0x01); /* in the record */
  }
  sf_catalog_free(c);
  for (int i = 0; i < 20; i++) {
    char rel[256];
    snprintf(rel, sizeof rel, "_indices/_staging/probe-%d/shard-0.sfshard", i);
    touch(P(&f, rel), 10, 0);
  }
  touch(P(&f, "_indices/segments/orphan.sfseg"), 10, 2);
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "job archive"));
  assert_true(exists(P(&f, "_indices/segments/orphan.sfseg")));
  assert_true(exists(P(&f, "_indices/_staging/pending")));
}

/* Three versions: seg-a, + seg-b, then seg-n replacing both; plus the
 * leftovers gc must judge. */
static void scene(fx *f, const char *tag) {
  fx_init(f, tag);
  commit(f, "job0", "seg-a", "0-9", 0);
  commit(f, "job1", "seg-b", "10-19", 0);
  commit(f, "job2", "seg-n", "0-19", 1);
  touch(P(f, "_indices/_staging/pending/shard-0.sfshard"), 100, 5);
  touch(P(f, "_indices/segments/fresh-orphan.sfseg"), 10, 0);
  touch(P(f, "_indices/segments/old-orphan.sfseg"), 10, 2);
  touch(P(f, "_indices/segments/x.sfseg.tmp.1.2"), 10, 2);
  touch(P(f, "_indices/segments/y.sfseg.tmp.1.3"), 10, 0);
  touch(P(f, "_indices/quantizers/00000000deadbeef"), 10, 2);
  touch(P(f, "_indices/_catalog/v00000000000000000009.avro.tmp.7.1"), 10, 2);
}

typedef struct seen {
  char lines[64][600];
  size_t n;
} seen;

static void record(void *ctx, sf_gc_kind kind, const char *path, uint64_t bytes) {
  seen *s = ctx;
  (void)bytes;
  if (s->n < 64) snprintf(s->lines[s->n++], 600, "%s %s", sf_gc_kind_name(kind), path);
}

static void test_gc_keeps_what_kept_versions_need_and_removes_the_rest(void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-keep1");
  char qname[64];
  snprintf(qname, sizeof qname, "_indices/quantizers/%016" PRIx64, f.cs);
  sf_gc_opts o = {.keep_versions = 1, .grace_ms = -1, .temp_age_ms = -1};
  sf_gc_stats st;
  seen s = {0};
  sf_err err = {0};
  assert_int_equal(sf_gc_run(f.ds, &o, record, &s, &st, &err), SF_OK);
  assert_int_equal(st.newest, 3);
  assert_int_equal(st.oldest_kept, 3);
  assert_int_equal(st.removed[SF_GC_VERSION], 2);
  assert_int_equal(st.removed[SF_GC_STAGING], 3);
  assert_int_equal(st.removed[SF_GC_SEGMENT], 3); /* seg-a, seg-b, old-orphan */
  assert_int_equal(st.removed[SF_GC_QUANTIZER], 1);
  assert_int_equal(st.removed[SF_GC_TEMP], 2);
  /* Versions go first, oldest first. */
  assert_non_null(strstr(s.lines[0], "version"));
  assert_non_null(strstr(s.lines[0], "v00000000000000000001.avro"));
  /* What the kept version needs is all there, and it still opens. */
  assert_true(exists(P(&f, "_indices/segments/seg-n.sfseg")));
  assert_true(exists(P(&f, qname)));
  assert_true(exists(P(&f, "_indices/_catalog/v00000000000000000003.avro")));
  assert_true(exists(P(&f, "_indices/_catalog/LOCK")));
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  sf_catalog_free(c);
  /* Removed: old versions, committed staging roots, swapped-out and stale
   * segments, the unreferenced quantizer, old temporaries. */
  assert_false(exists(P(&f, "_indices/_catalog/v00000000000000000001.avro")));
  assert_false(exists(P(&f, "_indices/_staging/job0")));
  assert_false(exists(P(&f, "_indices/segments/seg-a.sfseg")));
  assert_false(exists(P(&f, "_indices/segments/seg-b.sfseg")));
  assert_false(exists(P(&f, "_indices/segments/old-orphan.sfseg")));
  assert_false(exists(P(&f, "_indices/quantizers/00000000deadbeef")));
  assert_false(exists(P(&f, "_indices/segments/x.sfseg.tmp.1.2")));
  assert_false(exists(P(&f, "_indices/_catalog/v00000000000000000009.avro.tmp.7.1")));
  /* Kept: a job not committed, a fresh orphan (a build about to commit?),
   * a fresh temporary (a writer at work). */
  assert_true(exists(P(&f, "_indices/_staging/pending/shard-0.sfshard")));
  assert_true(exists(P(&f, "_indices/segments/fresh-orphan.sfseg")));
  assert_true(exists(P(&f, "_indices/segments/y.sfseg.tmp.1.3")));
  /* A second run finds nothing more. */
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(st.bytes, 0);
}

static void test_a_dry_run_reports_the_same_and_deletes_nothing(void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-dry");
  sf_gc_opts o = {.keep_versions = 1, .dry_run = 1, .grace_ms = -1, .temp_age_ms = -1};
  sf_gc_stats dry, real;
  seen a = {0}, b = {0};
  sf_err err = {0};
  assert_int_equal(sf_gc_run(f.ds, &o, record, &a, &dry, &err), SF_OK);
  assert_true(exists(P(&f, "_indices/_catalog/v00000000000000000001.avro")));
  assert_true(exists(P(&f, "_indices/_staging/job0/shard-0.sfshard")));
  assert_true(exists(P(&f, "_indices/segments/seg-a.sfseg")));
  o.dry_run = 0;
  assert_int_equal(sf_gc_run(f.ds, &o, record, &b, &real, &err), SF_OK);
  assert_int_equal(a.n, b.n);
  for (size_t i = 0; i < a.n; i++) assert_string_equal(a.lines[i], b.lines[i]);
  assert_true(dry.bytes == real.bytes && real.bytes > 0);
}

static void test_keeping_more_versions_keeps_their_segments(void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-keep2");
  sf_gc_opts o = {.keep_versions = 2, .grace_ms = 0, .temp_age_ms = -1};
  sf_gc_stats st;
  sf_err err = {0};
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(st.oldest_kept, 2);
  assert_int_equal(st.removed[SF_GC_VERSION], 1);
  /* Version 2 lists seg-a and seg-b: both stay, and version 2 still opens. */
  assert_true(exists(P(&f, "_indices/segments/seg-a.sfseg")));
  assert_true(exists(P(&f, "_indices/segments/seg-b.sfseg")));
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_version(f.ds, 2, &c, &err), SF_OK);
  sf_catalog_free(c);
  /* With no grace, every unreferenced file goes, fresh or not. */
  assert_false(exists(P(&f, "_indices/segments/fresh-orphan.sfseg")));
}

static void test_the_newest_version_is_never_deleted(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "gc-newest");
  commit(&f, "job0", "seg-a", "0-9", 0);
  sf_gc_opts o = {.keep_versions = 0, .grace_ms = 0, .temp_age_ms = 0};
  sf_gc_stats st;
  sf_err err = {0};
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(st.removed[SF_GC_VERSION], 0);
  assert_int_equal(st.removed[SF_GC_SEGMENT], 0);
  assert_true(exists(P(&f, "_indices/_catalog/v00000000000000000001.avro")));
  assert_true(exists(P(&f, "_indices/segments/seg-a.sfseg")));
}

static void test_a_damaged_kept_version_stops_gc_before_it_deletes_anything(
    void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-damaged");
  tu_truncate(P(&f, "_indices/_catalog/v00000000000000000003.avro"), 100);
  sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = 0};
  sf_gc_stats st;
  sf_err err = {0};
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "version 3"));
  assert_int_equal(st.bytes, 0);
  assert_true(exists(P(&f, "_indices/_catalog/v00000000000000000001.avro")));
  assert_true(exists(P(&f, "_indices/segments/old-orphan.sfseg")));
}

static void test_a_dataset_without_indices_is_fine(void **state) {
  (void)state;
  const char *ds = tu_tmpdir("gc-empty");
  sf_gc_opts o = {.grace_ms = -1, .temp_age_ms = -1};
  sf_gc_stats st;
  sf_err err = {0};
  assert_int_equal(sf_gc_run(ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(st.newest, 0);
  assert_int_equal(sf_gc_run("/nonexistent/dataset", &o, NULL, NULL, &st, &err),
                   SF_ENOTFOUND);
}

static void test_gc_waits_for_a_commit_in_progress(void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-lock");
  /* Hold the lock as a committer does. */
  int fd = open(P(&f, "_indices/_catalog/LOCK"), O_RDWR | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(flock(fd, LOCK_SH), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fd); /* the parent's copy alone holds the lock */
    sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = 0};
    _exit(sf_gc_run(f.ds, &o, NULL, NULL, NULL, NULL) == SF_OK ? 0 : 1);
  }
  usleep(200 * 1000);
  int st;
  assert_int_equal(waitpid(pid, &st, WNOHANG), 0); /* still waiting */
  assert_true(exists(P(&f, "_indices/_catalog/v00000000000000000001.avro")));
  close(fd); /* the commit is done */
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  assert_false(exists(P(&f, "_indices/_catalog/v00000000000000000001.avro")));
}

/* ---- intents --------------------------------------------------------------- */

static size_t count_intents(const fx *f) {
  return tu_count_entries(P(f, SF_CATALOG_INTENTS_DIR), NULL, 1);
}

static void test_gc_keeps_what_a_live_intent_names_until_it_ends(void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-intent");
  /* A build in progress: one segment finished long ago (reused), one being
   * written, and a second build in the same process. */
  touch(P(&f, "_indices/segments/reused.sfseg"), 10, 5);
  touch(P(&f, "_indices/segments/writing.sfseg.tmp.1.2.3.4"), 10, 5);
  touch(P(&f, "_indices/segments/other.sfseg"), 10, 0);
  const char *a[] = {"segments/reused.sfseg", "segments/writing.sfseg"};
  const char *b[] = {"segments/other.sfseg"};
  sf_catalog_intent *ia, *ib;
  sf_err err = {0};
  assert_int_equal(sf_catalog_intent_begin(f.ds, "finalize job-a", a, 2, &ia, &err),
                   SF_OK);
  assert_int_equal(sf_catalog_intent_begin(f.ds, "finalize job-b", b, 1, &ib, &err),
                   SF_OK);
  assert_int_equal(count_intents(&f), 2);
  sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = 0};
  sf_gc_stats st;
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(st.removed[SF_GC_INTENT], 0);
  assert_true(exists(P(&f, "_indices/segments/reused.sfseg")));
  assert_true(exists(P(&f, "_indices/segments/writing.sfseg.tmp.1.2.3.4")));
  assert_true(exists(P(&f, "_indices/segments/other.sfseg")));
  assert_false(exists(P(&f, "_indices/segments/fresh-orphan.sfseg"))); /* nobody's */
  /* One build gives up: its file is an orphan again; the other's stays. */
  sf_catalog_intent_end(ia);
  assert_int_equal(count_intents(&f), 1);
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_false(exists(P(&f, "_indices/segments/reused.sfseg")));
  assert_false(exists(P(&f, "_indices/segments/writing.sfseg.tmp.1.2.3.4")));
  assert_true(exists(P(&f, "_indices/segments/other.sfseg")));
  sf_catalog_intent_end(ib);
  assert_int_equal(count_intents(&f), 0);
  sf_catalog_intent_end(NULL);
}

static void test_the_intent_of_a_dead_builder_is_removed_and_protects_nothing(
    void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-intent-dead");
  touch(P(&f, "_indices/segments/dead.sfseg"), 10, 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) { /* declares, then dies without ending it */
    const char *a[] = {"segments/dead.sfseg"};
    sf_catalog_intent *in;
    _exit(sf_catalog_intent_begin(f.ds, "finalize dead", a, 1, &in, NULL) == SF_OK ? 0
                                                                                   : 1);
  }
  int wst;
  assert_int_equal(waitpid(pid, &wst, 0), pid);
  assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
  assert_int_equal(count_intents(&f), 1);
  /* A dry run reports it and keeps it. */
  sf_gc_opts o = {.keep_versions = 1, .dry_run = 1, .grace_ms = 0, .temp_age_ms = -1};
  sf_gc_stats st;
  seen s = {0};
  sf_err err = {0};
  assert_int_equal(sf_gc_run(f.ds, &o, record, &s, &st, &err), SF_OK);
  assert_int_equal(st.removed[SF_GC_INTENT], 1);
  assert_non_null(strstr(s.lines[s.n - 1], "intent "));
  assert_int_equal(count_intents(&f), 1);
  o.dry_run = 0;
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(st.removed[SF_GC_INTENT], 1);
  assert_int_equal(count_intents(&f), 0);
  assert_false(exists(P(&f, "_indices/segments/dead.sfseg")));
}

static void test_a_live_intent_that_does_not_read_stops_gc_before_it_deletes(
    void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-intent-bad");
  const char *bad[] = {"not an intent\n",
                       "segforge intent 1\nowner x\nsegments/../../etc\n",
                       "segforge intent 1\nowner x\nsegments/cut-short"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    touch(P(&f, SF_CATALOG_INTENTS_DIR "/i.bad"), 0, 0);
    tu_write_file(P(&f, SF_CATALOG_INTENTS_DIR "/i.bad"), bad[i], strlen(bad[i]));
    int fd = open(P(&f, SF_CATALOG_INTENTS_DIR "/i.bad"), O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0); /* a live holder */
    sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = 0};
    sf_gc_stats st;
    sf_err err = {0};
    assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_ECORRUPT);
    assert_non_null(strstr(err.msg, "i.bad"));
    assert_int_equal(st.bytes, 0);
    assert_true(exists(P(&f, "_indices/segments/old-orphan.sfseg")));
    close(fd);
  }
  /* Nobody holds it any more: stale, removed like any other. */
  sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = 0};
  sf_gc_stats st;
  sf_err err = {0};
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_int_equal(st.removed[SF_GC_INTENT], 1);
  assert_false(exists(P(&f, "_indices/segments/old-orphan.sfseg")));
}

static void test_an_intent_is_made_after_gc_is_done_never_during(void **state) {
  (void)state;
  fx f;
  scene(&f, "gc-intent-order");
  int fd = open(P(&f, "_indices/_catalog/LOCK"), O_RDWR | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(flock(fd, LOCK_EX), 0); /* as gc holds it */
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fd);
    const char *a[] = {"segments/x.sfseg"};
    sf_catalog_intent *in;
    if (sf_catalog_intent_begin(f.ds, "finalize order", a, 1, &in, NULL)) _exit(1);
    sf_catalog_intent_end(in);
    _exit(0);
  }
  usleep(200 * 1000);
  int wst;
  assert_int_equal(waitpid(pid, &wst, WNOHANG), 0); /* waiting for gc */
  assert_int_equal(count_intents(&f), 0);
  close(fd);
  assert_int_equal(waitpid(pid, &wst, 0), pid);
  assert_true(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
}

static void test_bad_intents_are_refused_when_made(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "gc-intent-refuse");
  sf_catalog_intent *in = (sf_catalog_intent *)&f;
  sf_err err = {0};
  const char *p1[] = {"quantizers/x"};
  assert_int_equal(sf_catalog_intent_begin(f.ds, "o", p1, 1, &in, &err), SF_EINVAL);
  assert_null(in);
  const char *p2[] = {"segments/a.sfseg"};
  assert_int_equal(sf_catalog_intent_begin(f.ds, "two\nlines", p2, 1, &in, &err),
                   SF_EINVAL);
  assert_int_equal(count_intents(&f), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gc_keeps_what_kept_versions_need_and_removes_the_rest),
      cmocka_unit_test(test_a_dry_run_reports_the_same_and_deletes_nothing),
      cmocka_unit_test(test_keeping_more_versions_keeps_their_segments),
      cmocka_unit_test(test_the_newest_version_is_never_deleted),
      cmocka_unit_test(test_a_damaged_kept_version_stops_gc_before_it_deletes_anything),
      cmocka_unit_test(test_a_dataset_without_indices_is_fine),
      cmocka_unit_test(test_gc_waits_for_a_commit_in_progress),
      cmocka_unit_test(test_gc_keeps_what_a_live_intent_names_until_it_ends),
      cmocka_unit_test(test_the_intent_of_a_dead_builder_is_removed_and_protects_nothing),
      cmocka_unit_test(test_a_live_intent_that_does_not_read_stops_gc_before_it_deletes),
      cmocka_unit_test(test_an_intent_is_made_after_gc_is_done_never_during),
      cmocka_unit_test(test_bad_intents_are_refused_when_made),
      cmocka_unit_test(
          test_gc_keeps_the_chunks_kept_versions_name_and_knows_archived_jobs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
