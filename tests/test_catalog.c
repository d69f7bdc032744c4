/* test_catalog.c - the catalog and its commit: versions, no-op recommits,
 * refusals that name what is wrong, --replace, damaged files, concurrent
 * committers and crashes at every step that matters. */
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
#include <sys/wait.h>
#include <unistd.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/base/fault.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/catalog/catalog_internal.h"
#include "core/vector/quantizer.h"
#include "tests/catalog_v1.h"
#include "tests/testutil.h"

/* A dataset with a trained quantizer (dim 4, nlist 2, IVF_FLAT, L2) kept at
 * <ds>/q and in the staging root of job "job0". */
typedef struct fx {
  char ds[4096];
  char qpath[4200];
  uint64_t cs;
} fx;

static uint64_t train_quantizer(const char *path, uint32_t dim, uint64_t seed) {
  sf_quant_params p = {
      .type = SF_IVF_FLAT, .metric = SF_L2, .dim = dim, .nlist = 2, .seed = seed};
  float x[64 * 8];
  for (int i = 0; i < 64 * 8; i++) x[i] = (float)((i * 7919 + (int)seed) % 101) / 10.0f;
  sf_quant *q;
  sf_err err = {0};
  assert_int_equal(sf_quant_train(&p, x, 64, &q, &err), SF_OK);
  assert_int_equal(sf_quant_save(q, path, &err), SF_OK);
  uint64_t cs = sf_quant_checksum(q);
  sf_quant_free(q);
  return cs;
}

static void fx_init(fx *f, const char *tag) {
  snprintf(f->ds, sizeof f->ds, "%s", tu_tmpdir(tag));
  snprintf(f->qpath, sizeof f->qpath, "%s/q", f->ds);
  f->cs = train_quantizer(f->qpath, 4, 1);
  char dir[4300];
  snprintf(dir, sizeof dir, "%s/_indices/segments", f->ds);
  assert_int_equal(sf_fs_mkdirs(dir, NULL), SF_OK);
}

/* A segment description of fragments `frags` and a dummy file of `bytes`
 * bytes at <ds>/_indices/segments/<id>.sfseg. */
static void make_seg(const fx *f, sf_seginfo *s, const char *id, const char *frags,
                     size_t bytes) {
  memset(s, 0, sizeof *s);
  char rel[512], path[4800];
  snprintf(rel, sizeof rel, "segments/%s.sfseg", id);
  snprintf(path, sizeof path, "%s/_indices/%s", f->ds, rel);
  uint8_t *buf = calloc(1, bytes + 1);
  tu_write_file(path, buf, bytes);
  free(buf);
  s->segment_id = strdup(id);
  s->path = strdup(rel);
  s->bytes = bytes;
  s->num_rows = bytes / 4;
  assert_int_equal(sf_fragset_parse(frags, "frags", &s->fragments, NULL), SF_OK);
  s->shard_ids = calloc(2, sizeof(char *));
  s->shard_ids[0] = strdup("shard-a");
  s->shard_ids[1] = strdup("shard-b");
  s->num_shards = 2;
  s->index_type = SF_IVF_FLAT;
  s->metric = SF_L2;
  s->dim = 4;
  s->nlist = 2;
  s->quantizer_checksum = f->cs;
}

static sf_code commit_n(const fx *f, const char *index, const char *job, sf_seginfo *segs,
                        size_t n, int replace, sf_catalog_commit_result *res,
                        sf_err *err) {
  sf_catalog_commit_req r = {.dataset = f->ds,
                             .index_name = index,
                             .column = "embedding",
                             .staging_id = job,
                             .segs = segs,
                             .nsegs = n,
                             .quantizer_path = f->qpath,
                             .replace = replace};
  return sf_catalog_commit(&r, res, err);
}

/* Commits one segment with fragments `frags` as job `job`; returns the code
 * and, if attempts is not NULL, how many tries the commit took. */
static sf_code commit1a(const fx *f, const char *index, const char *job, const char *seg,
                        const char *frags, unsigned *attempts, sf_err *err) {
  sf_seginfo s;
  make_seg(f, &s, seg, frags, 64);
  sf_catalog_commit_result res;
  sf_code rc = commit_n(f, index, job, &s, 1, 0, &res, err);
  if (attempts) *attempts = res.attempts;
  sf_seginfo_clear(&s);
  return rc;
}

static sf_code commit1(const fx *f, const char *index, const char *job, const char *seg,
                       const char *frags, sf_err *err) {
  return commit1a(f, index, job, seg, frags, NULL, err);
}

static uint64_t latest_version(const fx *f) {
  sf_catalog *c;
  sf_err err = {0};
  sf_code rc = sf_catalog_open_latest(f->ds, &c, &err);
  if (rc == SF_ENOTFOUND) return 0;
  assert_int_equal(rc, SF_OK);
  uint64_t v = sf_catalog_version(c);
  sf_catalog_free(c);
  return v;
}

static const char *catalog_file(const fx *f, uint64_t v) {
  static char path[4400];
  char name[32];
  sf_catalog_version_name(v, name, sizeof name);
  snprintf(path, sizeof path, "%s/%s/%s", f->ds, SF_CATALOG_DIR, name);
  return path;
}

static void test_a_commit_creates_version_one_with_every_field_and_keeps_the_quantizer(
    void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-basic");
  sf_err err = {0};
  assert_int_equal(latest_version(&f), 0);
  sf_seginfo s[2];
  make_seg(&f, &s[0], "seg-a", "0-9", 100);
  make_seg(&f, &s[1], "seg-b", "10-19,30", 200);
  sf_catalog_commit_result res;
  assert_int_equal(commit_n(&f, "idx", "job0", s, 2, 0, &res, &err), SF_OK);
  assert_int_equal(res.version, 1);
  assert_int_equal(res.already, 0);
  assert_int_equal(res.attempts, 1);

  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  assert_int_equal(sf_catalog_version(c), 1);
  assert_int_equal(sf_catalog_num_indexes(c), 1);
  const sf_catalog_index *ix = sf_catalog_find_index(c, "idx");
  assert_non_null(ix);
  assert_null(sf_catalog_find_index(c, "nope"));
  assert_string_equal(ix->column, "embedding");
  assert_int_equal(ix->index_type, SF_IVF_FLAT);
  assert_int_equal(ix->metric, SF_L2);
  assert_int_equal(ix->dim, 4);
  assert_int_equal(ix->nlist, 2);
  assert_true(ix->quantizer_checksum == f.cs);
  assert_int_equal(ix->nsegs, 2);
  const sf_catalog_segment *b = &ix->segs[1];
  assert_string_equal(b->info.segment_id, "seg-b");
  assert_string_equal(b->info.path, "segments/seg-b.sfseg");
  assert_int_equal(b->info.bytes, 200);
  assert_int_equal(b->info.num_rows, 50);
  assert_true(roaring_bitmap_equals(b->info.fragments, s[1].fragments));
  assert_int_equal(b->info.num_shards, 2);
  assert_string_equal(b->info.shard_ids[1], "shard-b");
  assert_string_equal(b->staging_id, "job0");
  assert_int_equal(b->added_in, 1);
  sf_catalog_job j;
  int found;
  assert_int_equal(sf_catalog_lookup_job(c, "job0", &j, &found, &err), SF_OK);
  assert_true(found);
  assert_int_equal(j.version, 1);
  assert_int_equal(j.nsegment_ids, 2);
  assert_string_equal(j.segment_ids[0], "seg-a");
  sf_catalog_job_clear(&j);

  /* Paths for search: absolute, and the quantizer really is there. */
  char **paths;
  size_t n;
  assert_int_equal(sf_catalog_segment_paths(c, ix, &paths, &n, &err), SF_OK);
  assert_int_equal(n, 2);
  assert_true(paths[0][0] == '/');
  struct stat st;
  assert_int_equal(stat(paths[1], &st), 0);
  assert_int_equal(st.st_size, 200);
  sf_catalog_paths_free(paths, n);
  char *qp = sf_catalog_quantizer_path(c, ix);
  uint64_t got;
  assert_int_equal(sf_quant_checksum_of_file(qp, &got, &err), SF_OK);
  assert_true(got == f.cs);
  free(qp);

  json_t *js = sf_catalog_describe_json(c, NULL);
  assert_non_null(js);
  json_t *seg = json_array_get(
      json_object_get(json_array_get(json_object_get(js, "indexes"), 0), "segments"), 1);
  assert_string_equal(json_string_value(json_object_get(seg, "fragments")), "10-19,30");
  json_decref(js);
  sf_catalog_free(c);
  sf_seginfo_clear(&s[0]);
  sf_seginfo_clear(&s[1]);
}

static void test_committing_the_same_job_twice_yields_one_version(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-twice");
  sf_err err = {0};
  sf_seginfo s;
  make_seg(&f, &s, "seg-a", "0-9", 64);
  sf_catalog_commit_result res;
  assert_int_equal(commit_n(&f, "idx", "job0", &s, 1, 0, &res, &err), SF_OK);
  assert_int_equal(commit1(&f, "idx", "job1", "seg-b", "20-29", &err), SF_OK);
  assert_int_equal(commit_n(&f, "idx", "job0", &s, 1, 0, &res, &err), SF_OK);
  assert_int_equal(res.already, 1);
  assert_int_equal(res.version, 1);
  assert_int_equal(latest_version(&f), 2);
  /* A no-op needs no quantizer: the staging root may be gone by then. */
  sf_catalog_commit_req r = {.dataset = f.ds,
                             .index_name = "idx",
                             .column = "embedding",
                             .staging_id = "job0",
                             .segs = &s,
                             .nsegs = 1,
                             .quantizer_path = "/nonexistent/q"};
  assert_int_equal(sf_catalog_commit(&r, &res, &err), SF_OK);
  assert_int_equal(res.already, 1);
  sf_seginfo_clear(&s);
  /* The same staging id with other segments is a conflict, not a no-op. */
  assert_int_equal(commit1(&f, "idx", "job0", "seg-z", "50", &err), SF_ECONFLICT);
  assert_non_null(strstr(err.msg, "job0"));
  assert_int_equal(latest_version(&f), 2);
}

static void test_an_overlapping_commit_is_refused_naming_the_segment_and_fragments(
    void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-overlap");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  assert_int_equal(commit1(&f, "idx", "job1", "seg-b", "5-6,9-12", &err), SF_EOVERLAP);
  assert_non_null(strstr(err.msg, "seg-a"));
  assert_non_null(strstr(err.msg, "seg-b"));
  assert_non_null(strstr(err.msg, "5-6,9"));
  assert_int_equal(latest_version(&f), 1);
  /* Other indexes are independent: the same fragments are fine there. */
  assert_int_equal(commit1(&f, "other", "job2", "seg-c", "0-9", &err), SF_OK);
  /* A segment id already in the catalog is refused, even without overlap. */
  sf_code rc = commit1(&f, "idx", "job3", "seg-a", "100", &err);
  if (rc != SF_EEXIST) fprintf(stderr, "%s\n", err.msg);
  assert_int_equal(rc, SF_EEXIST);
  assert_non_null(strstr(err.msg, "seg-a"));
  /* New segments of one job must be disjoint too. */
  sf_seginfo s[2];
  make_seg(&f, &s[0], "seg-x", "200-210", 64);
  make_seg(&f, &s[1], "seg-y", "210-220", 64);
  sf_catalog_commit_result res;
  assert_int_equal(commit_n(&f, "idx", "job4", s, 2, 0, &res, &err), SF_EOVERLAP);
  assert_non_null(strstr(err.msg, "210"));
  sf_seginfo_clear(&s[0]);
  sf_seginfo_clear(&s[1]);
  assert_int_equal(latest_version(&f), 2);
}

static void expect_mismatch(const fx *f, void (*edit)(sf_seginfo *), const char *field) {
  sf_seginfo s;
  sf_err err = {0};
  make_seg(f, &s, "seg-m", "500", 64);
  edit(&s);
  sf_catalog_commit_result res;
  assert_int_equal(commit_n(f, "idx", "job-m", &s, 1, 0, &res, &err), SF_EMISMATCH);
  assert_non_null(strstr(err.msg, field));
  sf_seginfo_clear(&s);
}
static void edit_metric(sf_seginfo *s) {
  s->metric = SF_COSINE;
}
static void edit_dim(sf_seginfo *s) {
  s->dim = 8;
}
static void edit_type(sf_seginfo *s) {
  s->index_type = SF_IVF_SQ;
}
static void edit_nlist(sf_seginfo *s) {
  s->nlist = 3;
}
static void edit_quantizer(sf_seginfo *s) {
  s->quantizer_checksum ^= 1;
}

static void test_a_parameter_mismatch_is_refused_naming_the_field(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-params");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  expect_mismatch(&f, edit_metric, "metric");
  expect_mismatch(&f, edit_dim, "dim");
  expect_mismatch(&f, edit_type, "index type");
  expect_mismatch(&f, edit_nlist, "nlist");
  expect_mismatch(&f, edit_quantizer, "quantizer");
  sf_seginfo s;
  make_seg(&f, &s, "seg-c", "600", 64);
  sf_catalog_commit_req r = {.dataset = f.ds,
                             .index_name = "idx",
                             .column = "other_col",
                             .staging_id = "job-c",
                             .segs = &s,
                             .nsegs = 1,
                             .quantizer_path = f.qpath};
  sf_catalog_commit_result res;
  assert_int_equal(sf_catalog_commit(&r, &res, &err), SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "column"));
  sf_seginfo_clear(&s);
  assert_int_equal(latest_version(&f), 1);
}

static void test_replace_swaps_covered_segments_and_refuses_partial_cover(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-replace");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  assert_int_equal(commit1(&f, "idx", "job1", "seg-b", "10-19", &err), SF_OK);
  assert_int_equal(commit1(&f, "idx", "job2", "seg-c", "20-29", &err), SF_OK);
  sf_seginfo s;
  sf_catalog_commit_result res;
  /* Covers seg-a whole but seg-b only in part: refused, naming seg-b. */
  make_seg(&f, &s, "seg-n", "0-14", 64);
  assert_int_equal(commit_n(&f, "idx", "job3", &s, 1, 1, &res, &err), SF_EOVERLAP);
  assert_non_null(strstr(err.msg, "seg-b"));
  assert_non_null(strstr(err.msg, "partly"));
  assert_non_null(strstr(err.msg, "15-19"));
  sf_seginfo_clear(&s);
  /* Covers seg-a and seg-b whole (and new fragments): both swapped out. */
  make_seg(&f, &s, "seg-n", "0-19,40", 64);
  assert_int_equal(commit_n(&f, "idx", "job3", &s, 1, 1, &res, &err), SF_OK);
  assert_int_equal(res.nreplaced, 2);
  assert_int_equal(res.version, 4);
  sf_seginfo_clear(&s);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  const sf_catalog_index *ix = sf_catalog_find_index(c, "idx");
  assert_int_equal(ix->nsegs, 2);
  assert_string_equal(ix->segs[0].info.segment_id, "seg-c");
  assert_string_equal(ix->segs[1].info.segment_id, "seg-n");
  /* The replaced jobs stay recorded, so re-committing them is still a no-op. */
  assert_int_equal(sf_catalog_num_jobs(c), 4);
  sf_catalog_free(c);
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  assert_int_equal(latest_version(&f), 4);
}

static void test_bad_requests_are_refused_before_anything_is_written(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-badreq");
  sf_err err = {0};
  sf_seginfo s;
  sf_catalog_commit_result res;
  make_seg(&f, &s, "seg-a", "0-9", 64);
  assert_int_equal(commit_n(&f, "idx", "a/b", &s, 1, 0, &res, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "staging id"));
  assert_int_equal(commit_n(&f, "..", "job", &s, 1, 0, &res, &err), SF_EINVAL);
  free(s.path);
  s.path = strdup("../../etc/passwd");
  assert_int_equal(commit_n(&f, "idx", "job", &s, 1, 0, &res, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "segments/"));
  free(s.path);
  s.path = strdup("segments/missing.sfseg");
  assert_int_equal(commit_n(&f, "idx", "job", &s, 1, 0, &res, &err), SF_ENOTFOUND);
  assert_non_null(strstr(err.msg, "missing.sfseg"));
  free(s.path);
  s.path = strdup("segments/seg-a.sfseg");
  s.bytes = 65;
  assert_int_equal(commit_n(&f, "idx", "job", &s, 1, 0, &res, &err), SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "65"));
  s.bytes = 64;
  /* The quantizer must exist and be the one the segments were built with. */
  char other[4300];
  snprintf(other, sizeof other, "%s/q2", f.ds);
  train_quantizer(other, 4, 2);
  sf_catalog_commit_req r = {.dataset = f.ds,
                             .index_name = "idx",
                             .column = "c",
                             .staging_id = "job",
                             .segs = &s,
                             .nsegs = 1,
                             .quantizer_path = other};
  assert_int_equal(sf_catalog_commit(&r, &res, &err), SF_ECHECKSUM);
  r.quantizer_path = NULL; /* the staging root's, which does not exist */
  assert_int_equal(sf_catalog_commit(&r, &res, &err), SF_ENOTFOUND);
  assert_non_null(strstr(err.msg, "_staging/job/quantizer"));
  assert_int_equal(latest_version(&f), 0);
  /* From the staging root it works. */
  char dir[4400];
  snprintf(dir, sizeof dir, "%s/_indices/_staging/job", f.ds);
  assert_int_equal(sf_fs_mkdirs(dir, NULL), SF_OK);
  size_t n;
  uint8_t *q = tu_read_file(f.qpath, &n);
  tu_write_file(tu_path(dir, "quantizer"), q, n);
  free(q);
  assert_int_equal(sf_catalog_commit(&r, &res, &err), SF_OK);
  sf_seginfo_clear(&s);
}

static void test_a_damaged_or_truncated_version_gives_a_clear_error(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-corrupt");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  assert_int_equal(commit1(&f, "idx", "job1", "seg-b", "10-19", &err), SF_OK);
  const char *p2 = catalog_file(&f, 2);
  size_t n;
  uint8_t *orig = tu_read_file(p2, &n);
  sf_catalog *c;
  tu_flip_byte(p2, n - 40, 0x10); /* inside the record */
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "checksum"));
  assert_non_null(strstr(err.msg, "v00000000000000000002.avro"));
  /* A commit on top of a damaged newest version refuses rather than build
   * on an older one. */
  assert_int_equal(commit1(&f, "idx", "job2", "seg-c", "20", &err), SF_ECORRUPT);
  tu_write_file(p2, orig, n);
  tu_truncate(p2, n - 20);
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "truncated"));
  tu_write_file(p2, "not avro at all", 15);
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_EFORMAT);
  tu_write_file(p2, orig, n);
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  sf_catalog_free(c);
  free(orig);
}

static void test_every_truncation_and_byte_flip_is_an_error_or_the_same_version(
    void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-flip");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9,70000", &err), SF_OK);
  size_t n;
  uint8_t *orig = tu_read_file(catalog_file(&f, 1), &n);
  sf_catalog ref = {0}, c;
  assert_int_equal(sf_catalog_decode(orig, n, "v1", &ref, &err), SF_OK);
  ref.dataset = strdup("/d");
  json_t *want = sf_catalog_describe_json(&ref, NULL);
  for (size_t len = 0; len < n; len++) {
    memset(&c, 0, sizeof c);
    assert_int_not_equal(sf_catalog_decode(orig, len, "cut", &c, &err), SF_OK);
  }
  size_t survived = 0;
  for (size_t i = 0; i < n; i++) {
    for (int bit = 0; bit < 8; bit += 3) {
      orig[i] ^= (uint8_t)(1u << bit);
      memset(&c, 0, sizeof c);
      if (sf_catalog_decode(orig, n, "flip", &c, &err) == SF_OK) {
        /* Only bytes no reader relies on (schema docs, the sync marker
         * value) may change without an error, and then nothing else did. */
        c.dataset = strdup("/d");
        json_t *got = sf_catalog_describe_json(&c, NULL);
        if (!json_equal(want, got)) {
          char *a = json_dumps(want, 0), *b = json_dumps(got, 0);
          fprintf(stderr, "flip at %zu bit %d:\n%s\n%s\n", i, bit, a, b);
          free(a);
          free(b);
        }
        assert_true(json_equal(want, got));
        json_decref(got);
        sf_catalog_clear(&c);
        survived++;
      }
      orig[i] ^= (uint8_t)(1u << bit);
    }
  }
  assert_true(survived < n); /* the record itself is always covered */
  json_decref(want);
  sf_catalog_clear(&ref);
  free(orig);
}

static void test_absurd_counts_and_lengths_in_the_framing_are_corrupt(void **state) {
  (void)state;
  sf_catalog c = {0};
  sf_err err = {0};
  /* Metadata count INT64_MIN, whose negation does not exist. */
  const uint8_t min[] = {'O',  'b',  'j',  1,    0xff, 0xff, 0xff,
                         0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
  assert_int_equal(sf_catalog_decode(min, sizeof min, "m", &c, &err), SF_ECORRUPT);
  /* A key claiming 2^62 bytes. */
  const uint8_t big[] = {'O',  'b',  'j',  1,    2,    0x80, 0x80, 0x80,
                         0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  assert_int_equal(sf_catalog_decode(big, sizeof big, "b", &c, &err), SF_ECORRUPT);
  /* A varint that never ends. */
  uint8_t run[40];
  memset(run, 0xff, sizeof run);
  memcpy(run, "Obj\x01", 4);
  assert_int_equal(sf_catalog_decode(run, sizeof run, "r", &c, &err), SF_ECORRUPT);
}

static size_t count_temps(const fx *f) {
  return tu_count_entries(tu_path(f->ds, SF_CATALOG_DIR), ".tmp.", 0);
}

/* Runs commit1 in a child with SF_FAULT=point; returns its status as a shell
 * shows it (137 for a SIGKILL, the fault points' crash). */
static int commit_with_fault(const fx *f, const char *point, const char *job,
                             const char *seg, const char *frags) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("SF_FAULT", point, 1);
    sf_fault_reload();
    sf_err err = {0};
    sf_code rc = commit1(f, "idx", job, seg, frags, &err);
    if (rc) fprintf(stderr, "child: %s\n", err.msg);
    _exit(rc ? 1 : 0);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st) || WIFSIGNALED(st));
  return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

static void test_a_crash_before_the_link_leaves_the_previous_version_intact(
    void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-fault");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  assert_int_equal(commit_with_fault(&f, "catalog.before_link", "job1", "seg-b", "10"),
                   137);
  assert_int_equal(latest_version(&f), 1);
  assert_int_equal(count_temps(&f), 1);
  /* A torn temporary file (a crash mid-write) is not a version either. */
  assert_int_equal(commit_with_fault(&f, "catalog.torn_temp", "job1", "seg-b", "10"),
                   137);
  assert_int_equal(latest_version(&f), 1);
  assert_int_equal(count_temps(&f), 2);
  uint64_t *v;
  size_t nv;
  assert_int_equal(sf_catalog_list_versions(f.ds, &v, &nv, &err), SF_OK);
  assert_int_equal(nv, 1);
  free(v);
  /* The job was not committed, so committing it again works. */
  assert_int_equal(commit1(&f, "idx", "job1", "seg-b", "10", &err), SF_OK);
  assert_int_equal(latest_version(&f), 2);
  /* A crash right after the link: the version is complete and holds the job. */
  assert_int_equal(commit_with_fault(&f, "catalog.after_link", "job2", "seg-c", "11"),
                   137);
  assert_int_equal(latest_version(&f), 3);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  int found;
  assert_int_equal(sf_catalog_lookup_job(c, "job2", NULL, &found, &err), SF_OK);
  assert_true(found);
  sf_catalog_free(c);
  /* A crash while keeping the quantizer leaves no version behind. */
  char qdir[4400];
  snprintf(qdir, sizeof qdir, "%s/%s/%016" PRIx64, f.ds, SF_CATALOG_QUANTIZERS_DIR, f.cs);
  assert_int_equal(unlink(qdir), 0);
  assert_int_equal(
      commit_with_fault(&f, "catalog.before_quantizer_rename", "job3", "seg-d", "12"),
      137);
  assert_int_equal(latest_version(&f), 3);
  assert_int_equal(commit1(&f, "idx", "job3", "seg-d", "12", &err), SF_OK);
  assert_int_equal(latest_version(&f), 4);
}

static void test_an_injected_failure_before_or_after_the_link_is_reported_and_retried(
    void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-fail");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  /* Failing before the link: nothing is published, the temporary is gone. */
  setenv("SF_FAULT", "catalog.before_link=fail", 1);
  sf_fault_reload();
  assert_int_equal(commit1(&f, "idx", "job1", "seg-b", "10", &err), SF_EIO);
  assert_non_null(strstr(err.msg, "catalog.before_link"));
  assert_int_equal(latest_version(&f), 1);
  assert_int_equal(count_temps(&f), 0);
  /* Failing after it: the version is published though the caller saw an
   * error, and the retry finds the job there. */
  setenv("SF_FAULT", "catalog.after_link=fail", 1);
  sf_fault_reload();
  assert_int_equal(commit1(&f, "idx", "job1", "seg-b", "10", &err), SF_EIO);
  assert_int_equal(latest_version(&f), 2);
  assert_int_equal(count_temps(&f), 0);
  unsetenv("SF_FAULT");
  sf_fault_reload();
  sf_seginfo s;
  make_seg(&f, &s, "seg-b", "10", 64);
  sf_catalog_commit_result res;
  assert_int_equal(commit_n(&f, "idx", "job1", &s, 1, 0, &res, &err), SF_OK);
  assert_int_equal(res.already, 1);
  assert_int_equal(res.version, 2);
  sf_seginfo_clear(&s);
}

#define RACERS 4
#define JOBS_EACH 4

static void test_concurrent_committers_all_succeed_in_distinct_versions(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-race");
  int gate[2];
  assert_int_equal(pipe(gate), 0);
  pid_t pids[RACERS];
  for (int i = 0; i < RACERS; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      char b;
      close(gate[1]);
      if (read(gate[0], &b, 1) < 0)
        _exit(2); /* returns 0 when the parent opens the gate */
      unsigned lost = 0, attempts;
      for (int j = 0; j < JOBS_EACH; j++) {
        char job[32], seg[32], frags[32];
        snprintf(job, sizeof job, "p%d-j%d", i, j);
        snprintf(seg, sizeof seg, "seg-%d-%d", i, j);
        snprintf(frags, sizeof frags, "%d-%d", i * 100 + j * 10, i * 100 + j * 10 + 5);
        sf_err err = {0};
        if (commit1a(&f, "idx", job, seg, frags, &attempts, &err)) {
          fprintf(stderr, "racer %d: %s\n", i, err.msg);
          _exit(255);
        }
        lost += attempts - 1;
      }
      _exit(lost < 254 ? (int)lost : 254); /* races lost, for the report */
    }
  }
  close(gate[0]);
  close(gate[1]); /* every racer starts now */
  int lost = 0;
  for (int i = 0; i < RACERS; i++) {
    int st;
    assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 255);
    lost += WEXITSTATUS(st);
  }
  print_message("%d races lost and retried\n", lost);
  uint64_t *v;
  size_t nv;
  sf_err err = {0};
  assert_int_equal(sf_catalog_list_versions(f.ds, &v, &nv, &err), SF_OK);
  assert_int_equal(nv, RACERS * JOBS_EACH);
  for (size_t i = 0; i < nv; i++) assert_int_equal(v[i], i + 1);
  free(v);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  assert_int_equal(sf_catalog_num_jobs(c), RACERS * JOBS_EACH);
  assert_int_equal(sf_catalog_find_index(c, "idx")->nsegs, RACERS * JOBS_EACH);
  /* Every version holds exactly its predecessor's jobs plus one. */
  for (uint64_t k = 1; k <= RACERS * JOBS_EACH; k++) {
    sf_catalog *ck;
    assert_int_equal(sf_catalog_open_version(f.ds, k, &ck, &err), SF_OK);
    assert_int_equal(sf_catalog_num_jobs(ck), k);
    sf_catalog_free(ck);
  }
  sf_catalog_free(c);
  assert_int_equal(count_temps(&f), 0);
}

/* gc holds the catalog lock exclusively while it deletes; a commit waiting
 * for the lock must look at its files after gc is done, not before: one
 * deleted in between is refused, never published. */
static void test_a_commit_checks_its_files_under_the_lock(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-lockcheck");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0-9", &err), SF_OK);
  char lockp[4400];
  snprintf(lockp, sizeof lockp, "%s/%s/%s", f.ds, SF_CATALOG_DIR, SF_CATALOG_LOCK_NAME);
  int fd = open(lockp, O_RDWR | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(flock(fd, LOCK_EX), 0); /* as gc holds it */
  sf_seginfo s;
  make_seg(&f, &s, "seg-b", "10-19", 64);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fd); /* the parent's copy alone holds the lock */
    sf_catalog_commit_result res;
    sf_code rc = commit_n(&f, "idx", "job1", &s, 1, 0, &res, &err);
    _exit(rc == SF_ENOTFOUND ? 0 : rc == SF_OK ? 1 : 2);
  }
  usleep(300 * 1000); /* the commit is waiting for the lock by now */
  int st;
  assert_int_equal(waitpid(pid, &st, WNOHANG), 0);
  char path[4400];
  snprintf(path, sizeof path, "%s/_indices/%s", f.ds, s.path);
  assert_int_equal(unlink(path), 0); /* gc removes the unreferenced file */
  close(fd);
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0); /* refused with NOTFOUND, not published */
  assert_int_equal(latest_version(&f), 1);
  sf_seginfo_clear(&s);
}

/* ---- the job archive ------------------------------------------------------- */

/* Commits job `job` with one segment `seg` over `frags`, keeping `window`
 * jobs in the version and at most `cmax` in a chunk. */
static sf_code commit_w(const fx *f, const char *job, const char *seg, const char *frags,
                        size_t window, size_t cmax, sf_catalog_commit_result *res,
                        sf_err *err) {
  sf_seginfo s;
  make_seg(f, &s, seg, frags, 64);
  sf_catalog_commit_req r = {.dataset = f->ds,
                             .index_name = "idx",
                             .column = "embedding",
                             .staging_id = job,
                             .segs = &s,
                             .nsegs = 1,
                             .quantizer_path = f->qpath,
                             .job_window = window,
                             .archive_chunk_jobs = cmax};
  sf_catalog_commit_result local;
  sf_code rc = sf_catalog_commit(&r, res ? res : &local, err);
  sf_seginfo_clear(&s);
  return rc;
}

/* The files in <ds>/<rel>, counted. */
static size_t count_dir(const fx *f, const char *rel) {
  return tu_count_entries(tu_path(f->ds, rel), NULL, 1);
}

static void assert_job(const sf_catalog *c, const char *id, uint64_t version,
                       const char *seg) {
  sf_catalog_job j;
  int found = 0;
  sf_err err = {0};
  sf_code rc = sf_catalog_lookup_job(c, id, &j, &found, &err);
  if (rc) fail_msg("lookup %s: %s", id, err.msg);
  if (!found) fail_msg("job %s not found", id);
  assert_string_equal(j.staging_id, id);
  assert_string_equal(j.index_name, "idx");
  assert_int_equal(j.version, version);
  assert_int_equal(j.nsegment_ids, 1);
  assert_string_equal(j.segment_ids[0], seg);
  sf_catalog_job_clear(&j);
}

#define ARCH_JOBS 60

static void test_old_jobs_move_to_the_archive_and_stay_recognised_exactly(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-archive");
  sf_err err = {0};
  char job[32], seg[32], frag[16];
  size_t chunk_files = 0;
  for (int i = 0; i < ARCH_JOBS; i++) {
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    snprintf(frag, sizeof frag, "%d", i);
    size_t before = count_dir(&f, SF_CATALOG_JOBS_DIR);
    sf_code rc = commit_w(&f, job, seg, frag, 4, 5, NULL, &err);
    if (rc) fail_msg("commit %s: %s", job, err.msg);
    /* A commit writes at most the chunks the jobs it moves out fall in
     * (4 / 2 + 1 of them), each maybe split in two: never the whole
     * history. */
    size_t after = count_dir(&f, SF_CATALOG_JOBS_DIR);
    assert_true(after - before <= 2 * (4 / 2 + 1));
    chunk_files = after;
  }
  assert_true(chunk_files > 1);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  size_t window = sf_catalog_num_jobs(c); /* 4, filling up to 6 */
  assert_true(window >= 4 && window <= 6);
  assert_int_equal(sf_catalog_num_jobs_total(c), ARCH_JOBS);
  assert_true(sf_catalog_num_archive_chunks(c) >= (ARCH_JOBS - 6) / 5);
  assert_string_equal(sf_catalog_job_at(c, window - 1)->staging_id, "job-59");
  /* Every job, the first as well as the last, with what it committed. */
  for (int i = 0; i < ARCH_JOBS; i++) {
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    assert_job(c, job, (uint64_t)i + 1, seg);
  }
  /* Exact: no id that was not committed is found, however close. */
  const char *never[] = {"job-60", "job-", "job-00", "Job-1", "job-1 ", "x"};
  uint8_t found[6];
  for (size_t i = 0; i < 6; i++) {
    int one = 1;
    assert_int_equal(sf_catalog_lookup_job(c, never[i], NULL, &one, &err), SF_OK);
    assert_false(one);
  }
  assert_int_equal(sf_catalog_lookup_jobs(c, never, 6, found, &err), SF_OK);
  for (size_t i = 0; i < 6; i++) assert_false(found[i]);
  const char *some[] = {"job-0", "nope", "job-59", "job-31"};
  uint8_t f4[4];
  assert_int_equal(sf_catalog_lookup_jobs(c, some, 4, f4, &err), SF_OK);
  assert_true(f4[0] && !f4[1] && f4[2] && f4[3]);
  json_t *js = sf_catalog_describe_json(c, NULL);
  assert_int_equal(json_integer_value(json_object_get(js, "jobs_total")), ARCH_JOBS);
  assert_int_equal(json_array_size(json_object_get(js, "jobs")), window);
  assert_int_equal(json_array_size(json_object_get(js, "job_archive")),
                   sf_catalog_num_archive_chunks(c));
  json_decref(js);
  sf_catalog_free(c);

  /* The first job committed again, long after it left the window: a no-op
   * returning its version; with other segments, a conflict. */
  sf_catalog_commit_result res;
  assert_int_equal(commit_w(&f, "job-0", "seg-0", "0", 4, 5, &res, &err), SF_OK);
  assert_true(res.already);
  assert_int_equal(res.version, 1);
  assert_int_equal(latest_version(&f), ARCH_JOBS);
  assert_int_equal(commit_w(&f, "job-0", "seg-x", "1000", 4, 5, &res, &err),
                   SF_ECONFLICT);
  assert_non_null(strstr(err.msg, "job-0"));
  assert_int_equal(latest_version(&f), ARCH_JOBS);
  /* A larger window keeps the newer records in full; a smaller one moves
   * more: either way every job is found. */
  assert_int_equal(commit_w(&f, "job-60", "seg-60", "60", 1, 3, NULL, &err), SF_OK);
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  assert_int_equal(sf_catalog_num_jobs(c), 1);
  assert_int_equal(sf_catalog_num_jobs_total(c), ARCH_JOBS + 1);
  for (int i = 0; i <= ARCH_JOBS; i++) {
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    assert_job(c, job, (uint64_t)i + 1, seg);
  }
  sf_catalog_free(c);
}

/* With one live segment (each job replaces the last), what a version holds
 * beyond it is the window and one reference per chunk: its size grows by
 * the references only, not by a record per job. */
static void test_a_version_grows_by_chunk_references_not_by_jobs(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-archive-size");
  sf_err err = {0};
  size_t size[81] = {0}, refs[81] = {0}, window[81] = {0};
  for (int i = 0; i < 80; i++) {
    char job[32], seg[32], frag[16];
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    snprintf(frag, sizeof frag, "0-%d", i);
    sf_seginfo s;
    make_seg(&f, &s, seg, frag, 64);
    sf_catalog_commit_req r = {.dataset = f.ds,
                               .index_name = "idx",
                               .column = "embedding",
                               .staging_id = job,
                               .segs = &s,
                               .nsegs = 1,
                               .quantizer_path = f.qpath,
                               .replace = 1,
                               .job_window = 4,
                               .archive_chunk_jobs = 5};
    sf_catalog_commit_result res;
    assert_int_equal(sf_catalog_commit(&r, &res, &err), SF_OK);
    sf_seginfo_clear(&s);
    struct stat st;
    assert_int_equal(stat(catalog_file(&f, (uint64_t)i + 1), &st), 0);
    size[i + 1] = (size_t)st.st_size;
    sf_catalog *c;
    assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
    refs[i + 1] = sf_catalog_num_archive_chunks(c);
    window[i + 1] = sf_catalog_num_jobs(c);
    assert_int_equal(sf_catalog_find_index(c, "idx")->nsegs, 1);
    sf_catalog_free(c);
  }
  /* A reference is about 50 bytes (a 37-byte name and three numbers); a
   * job record of the window under 40 here (its ids and numbers). */
  assert_true(refs[80] > refs[20]);
  size_t more_window = window[80] > window[20] ? window[80] - window[20] : 0;
  assert_true(size[80] <= size[20] + 56 * (refs[80] - refs[20]) + 40 * more_window);
}

static void test_a_chunk_that_does_not_read_is_an_error_never_a_new_job(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-archive-bad");
  sf_err err = {0};
  char job[32], seg[32], frag[16];
  for (int i = 0; i < 12; i++) {
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    snprintf(frag, sizeof frag, "%d", i);
    assert_int_equal(commit_w(&f, job, seg, frag, 2, 100, NULL, &err), SF_OK);
  }
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  assert_int_equal(sf_catalog_num_archive_chunks(c), 1); /* 10 jobs, one chunk */
  char path[4600];
  snprintf(path, sizeof path, "%s/%s/%s", f.ds, SF_CATALOG_JOBS_DIR,
           sf_catalog_archive_chunk_name(c, 0));
  size_t n;
  uint8_t *orig = tu_read_file(path, &n);
  int found = 1;
  /* A damaged chunk: corrupt, naming the file, for an id in it and for one
   * that never was (the chunk would have to say so). */
  tu_flip_byte(path, n - 30, 0x04);
  assert_int_equal(sf_catalog_lookup_job(c, "job-0", NULL, &found, &err), SF_ECORRUPT);
  assert_false(found);
  assert_non_null(strstr(err.msg, sf_catalog_archive_chunk_name(c, 0)));
  assert_int_equal(sf_catalog_lookup_job(c, "never", NULL, &found, &err), SF_ECORRUPT);
  /* Another chunk's (valid) bytes under this name: caught by the name. */
  sf_catalog_free(c);
  tu_write_file(path, orig, n);
  assert_int_equal(commit_w(&f, "job-0", "seg-0", "0", 2, 100, NULL, &err), SF_OK);
  /* A commit cannot decide the job is new without the chunk: refused, and
   * no version written. */
  uint64_t v = latest_version(&f);
  unlink(path);
  assert_int_equal(commit_w(&f, "job-0", "seg-0", "0", 2, 100, NULL, &err), SF_ENOTFOUND);
  assert_int_equal(commit_w(&f, "job-99", "seg-99", "99", 2, 100, NULL, &err),
                   SF_ENOTFOUND);
  assert_int_equal(latest_version(&f), v);
  tu_write_file(path, orig, n);
  assert_int_equal(commit_w(&f, "job-99", "seg-99", "99", 2, 100, NULL, &err), SF_OK);
  assert_int_equal(latest_version(&f), v + 1);
  free(orig);
}

/* Damages (mask 0x04) or restores every archive chunk file of c. */
static void chunks_damage(const fx *f, const sf_catalog *c, uint8_t **orig, size_t *len,
                          int damage) {
  for (size_t i = 0; i < sf_catalog_num_archive_chunks(c); i++) {
    char path[4600];
    snprintf(path, sizeof path, "%s/%s/%s", f->ds, SF_CATALOG_JOBS_DIR,
             sf_catalog_archive_chunk_name(c, i));
    if (damage)
      tu_flip_byte(path, len[i] - 30, 0x04);
    else
      tu_write_file(path, orig[i], len[i]);
  }
}

static void test_intake_lookups_reuse_the_chunks_read_last_and_only_those(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-archive-cache");
  sf_err err = {0};
  char job[32], seg[32], frag[16];
  enum { N = 40, NEVER = 200 };
  for (int i = 0; i < N; i++) {
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    snprintf(frag, sizeof frag, "%d", i);
    assert_int_equal(commit_w(&f, job, seg, frag, 2, 5, NULL, &err), SF_OK);
  }
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  size_t nch = sf_catalog_num_archive_chunks(c);
  assert_true(nch >= 4 && nch <= 64);
  uint8_t *orig[64];
  size_t len[64];
  for (size_t i = 0; i < nch; i++) {
    char path[4600];
    snprintf(path, sizeof path, "%s/%s/%s", f.ds, SF_CATALOG_JOBS_DIR,
             sf_catalog_archive_chunk_name(c, i));
    orig[i] = tu_read_file(path, &len[i]);
  }
  uint64_t hits, misses;
  size_t chunks, hashes;
  /* Every committed job and ids never committed answer exactly as the
   * uncached lookup does (twice: the second pass finds the hashes kept). */
  sf_catalog_chunk_cache_config(SF_CATALOG_CHUNK_CACHE_DEFAULT);
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < N + NEVER; i++) {
      snprintf(job, sizeof job, i < N ? "job-%d" : "never-%d", i);
      sf_catalog_job a, b;
      int fa = 0, fb = 0;
      assert_int_equal(sf_catalog_lookup_job_cached(c, job, &b, &fb, &err), SF_OK);
      assert_int_equal(sf_catalog_lookup_job(c, job, &a, &fa, &err), SF_OK);
      assert_int_equal(fa, i < N);
      assert_int_equal(fb, fa);
      if (fa) {
        assert_string_equal(b.staging_id, a.staging_id);
        assert_int_equal(b.version, a.version);
        assert_int_equal(b.nsegment_ids, 1);
        assert_string_equal(b.segment_ids[0], a.segment_ids[0]);
      }
      sf_catalog_job_clear(&a);
      sf_catalog_job_clear(&b);
    }
  sf_catalog_chunk_cache_stats(&hits, &misses, &chunks, &hashes);
  assert_int_equal(chunks, nch); /* every chunk was read, and kept */
  assert_int_equal(hashes, sf_catalog_num_jobs_total(c) - sf_catalog_num_jobs(c));
  assert_true(hits > 0); /* new ids answered by the hashes */

  /* With every chunk file damaged: a new id whose chunk's hashes are kept
   * is answered without a read; the uncached lookup (commits, gc) reads and
   * stops; so does a cached lookup of a committed job (its hash is there). */
  chunks_damage(&f, c, orig, len, 1);
  size_t answered = 0;
  for (int i = N; i < N + NEVER; i++) {
    snprintf(job, sizeof job, "never-%d", i);
    int found = 1;
    sf_code rc = sf_catalog_lookup_job(c, job, NULL, &found, &err);
    if (rc == SF_OK) continue; /* its hash falls under no chunk */
    assert_int_equal(rc, SF_ECORRUPT);
    found = 1;
    assert_int_equal(sf_catalog_lookup_job_cached(c, job, NULL, &found, &err), SF_OK);
    assert_false(found);
    answered++;
  }
  assert_true(answered > 0);
  int found = 0;
  assert_int_equal(sf_catalog_lookup_job_cached(c, "job-0", NULL, &found, &err),
                   SF_ECORRUPT);
  chunks_damage(&f, c, orig, len, 0);

  /* Bounded: with room for 6 hashes (chunks hold at most 5), reading every
   * chunk keeps one or two. */
  sf_catalog_chunk_cache_config(6);
  for (int i = 0; i < N; i++) {
    snprintf(job, sizeof job, "job-%d", i);
    assert_int_equal(sf_catalog_lookup_job(c, job, NULL, &found, &err), SF_OK);
    sf_catalog_chunk_cache_stats(&hits, &misses, &chunks, &hashes);
    assert_true(hashes <= 6 && chunks <= 2);
  }
  assert_true(chunks >= 1);
  /* No cache: nothing kept, every cached lookup reads. */
  sf_catalog_chunk_cache_config(0);
  for (int i = N; i < N + NEVER; i++) {
    snprintf(job, sizeof job, "never-%d", i);
    assert_int_equal(sf_catalog_lookup_job_cached(c, job, NULL, &found, &err), SF_OK);
  }
  sf_catalog_chunk_cache_stats(&hits, &misses, &chunks, &hashes);
  assert_true(hits == 0 && misses > 0 && chunks == 0 && hashes == 0);
  sf_catalog_chunk_cache_config(SF_CATALOG_CHUNK_CACHE_DEFAULT);
  for (size_t i = 0; i < nch; i++) free(orig[i]);
  sf_catalog_free(c);
}

static void test_a_chunk_swapped_for_another_is_refused_by_its_name(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-archive-name");
  sf_err err = {0};
  char job[32], seg[32], frag[16];
  for (int i = 0; i < 6; i++) {
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    snprintf(frag, sizeof frag, "%d", i);
    assert_int_equal(commit_w(&f, job, seg, frag, 2, 100, NULL, &err), SF_OK);
  }
  /* Version 5 names a chunk of 2 jobs, version 6 one of 4: put the older
   * (a complete, valid chunk) under the newer's name. */
  sf_catalog *c5, *c6;
  assert_int_equal(sf_catalog_open_version(f.ds, 5, &c5, &err), SF_OK);
  assert_int_equal(sf_catalog_open_version(f.ds, 6, &c6, &err), SF_OK);
  char p5[4600], p6[4600];
  snprintf(p5, sizeof p5, "%s/%s/%s", f.ds, SF_CATALOG_JOBS_DIR,
           sf_catalog_archive_chunk_name(c5, 0));
  snprintf(p6, sizeof p6, "%s/%s/%s", f.ds, SF_CATALOG_JOBS_DIR,
           sf_catalog_archive_chunk_name(c6, 0));
  assert_int_equal(rename(p5, p6), 0);
  int found;
  assert_int_equal(sf_catalog_lookup_job(c6, "job-0", NULL, &found, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "not of its name"));
  sf_catalog_free(c5);
  sf_catalog_free(c6);
}

static void test_a_format_1_version_opens_and_its_next_commit_converts_it(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-v1");
  char dir[4400], path[4600];
  snprintf(dir, sizeof dir, "%s/%s", f.ds, SF_CATALOG_DIR);
  assert_int_equal(sf_fs_mkdirs(dir, NULL), SF_OK);
  snprintf(path, sizeof path, "%s/v00000000000000000003.avro", dir);
  tu_write_file(path, v1_catalog, v1_catalog_len);
  snprintf(path, sizeof path, "%s/v1q", f.ds);
  tu_write_file(path, v1_quantizer, v1_quantizer_len);
  uint64_t cs;
  sf_err err = {0};
  assert_int_equal(sf_quant_checksum_of_file(path, &cs, &err), SF_OK);
  sf_catalog *c;
  sf_code rc = sf_catalog_open_latest(f.ds, &c, &err);
  if (rc) fail_msg("open: %s", err.msg);
  assert_int_equal(sf_catalog_version(c), 3);
  assert_int_equal(sf_catalog_num_jobs(c), 3);
  assert_int_equal(sf_catalog_num_archive_chunks(c), 0);
  assert_int_equal(sf_catalog_find_index(c, "idx")->nsegs, 2);
  assert_job(c, "old-1", 1, "seg-1");
  assert_job(c, "old-3", 3, "seg-3");
  sf_catalog_free(c);

  /* The next commit writes format 2; with a window of 1 the three old jobs
   * go to the archive, and are found there. */
  sf_seginfo s;
  make_seg(&f, &s, "seg-4", "20-29", 64);
  s.quantizer_checksum = cs;
  sf_catalog_commit_req r = {.dataset = f.ds,
                             .index_name = "idx",
                             .column = "embedding",
                             .staging_id = "new-4",
                             .segs = &s,
                             .nsegs = 1,
                             .quantizer_path = path,
                             .job_window = 1};
  sf_catalog_commit_result res;
  rc = sf_catalog_commit(&r, &res, &err);
  if (rc) fail_msg("commit: %s", err.msg);
  assert_int_equal(res.version, 4);
  size_t n;
  uint8_t *v4 = tu_read_file(catalog_file(&f, 4), &n);
  sf_catalog dec = {0};
  assert_int_equal(sf_catalog_decode(v4, n, "v4", &dec, &err), SF_OK);
  assert_int_equal(dec.format, 2);
  sf_catalog_clear(&dec);
  free(v4);
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  assert_int_equal(sf_catalog_num_jobs(c), 1);
  assert_int_equal(sf_catalog_num_jobs_total(c), 4);
  assert_true(sf_catalog_num_archive_chunks(c) >= 1);
  assert_job(c, "old-1", 1, "seg-1");
  assert_job(c, "old-2", 2, "seg-2");
  assert_job(c, "old-3", 3, "seg-3");
  assert_job(c, "new-4", 4, "seg-4");
  sf_catalog_free(c);
  /* An old job committed again is still a no-op. */
  sf_seginfo_clear(&s);
  make_seg(&f, &s, "seg-1", "0-9", 64);
  s.quantizer_checksum = cs;
  r.staging_id = "old-1";
  assert_int_equal(sf_catalog_commit(&r, &res, &err), SF_OK);
  assert_true(res.already);
  assert_int_equal(res.version, 1);
  sf_seginfo_clear(&s);
  /* The format 1 version itself still opens. */
  assert_int_equal(sf_catalog_open_version(f.ds, 3, &c, &err), SF_OK);
  sf_catalog_free(c);
}

/* ---- the compaction commit ------------------------------------------------- */

static sf_code compact_commit(const fx *f, const char **inputs, size_t n, const char *id,
                              const char *frags, uint64_t rows,
                              sf_catalog_compaction_result *res, sf_err *err) {
  sf_seginfo m;
  make_seg(f, &m, id, frags, 64);
  m.num_rows = rows;
  sf_catalog_compaction_req r = {.dataset = f->ds,
                                 .index_name = "idx",
                                 .inputs = inputs,
                                 .ninputs = n,
                                 .merged = &m};
  sf_code rc = sf_catalog_commit_compaction(&r, res, err);
  sf_seginfo_clear(&m);
  return rc;
}

static void test_a_compaction_swaps_exactly_its_inputs_or_nothing(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-compact");
  sf_err err = {0};
  char job[32], seg[32], frag[16];
  for (int i = 0; i < 8; i++) { /* 16 rows each (64-byte dummies) */
    snprintf(job, sizeof job, "job-%d", i);
    snprintf(seg, sizeof seg, "seg-%d", i);
    snprintf(frag, sizeof frag, "%d", i);
    assert_int_equal(commit_w(&f, job, seg, frag, 2, 3, NULL, &err), SF_OK);
  }
  sf_catalog_compaction_result res;
  const char *in[] = {"seg-2", "seg-3", "seg-4"};
  /* What the merge must hold is checked against the inputs. */
  assert_int_equal(compact_commit(&f, in, 3, "m1", "2-3", 48, &res, &err), SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "4"));
  assert_int_equal(compact_commit(&f, in, 3, "m1", "2-4", 47, &res, &err), SF_EMISMATCH);
  assert_int_equal(compact_commit(&f, in, 3, "seg-7", "2-4", 48, &res, &err), SF_EEXIST);
  const char *dup[] = {"seg-2", "seg-2"};
  assert_int_equal(compact_commit(&f, dup, 2, "m1", "2", 32, &res, &err), SF_EINVAL);
  assert_int_equal(latest_version(&f), 8);
  /* The merge replaces exactly its inputs, where the first of them was. */
  assert_int_equal(compact_commit(&f, in, 3, "m1", "2-4", 48, &res, &err), SF_OK);
  assert_int_equal(res.version, 9);
  assert_false(res.already);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  const sf_catalog_index *ix = sf_catalog_find_index(c, "idx");
  const char *want[] = {"seg-0", "seg-1", "m1", "seg-5", "seg-6", "seg-7"};
  assert_int_equal(ix->nsegs, 6);
  for (size_t i = 0; i < 6; i++)
    assert_string_equal(ix->segs[i].info.segment_id, want[i]);
  assert_string_equal(ix->segs[2].staging_id, "m1");
  assert_int_equal(ix->segs[2].info.num_shards, 0);
  assert_int_equal(ix->segs[2].added_in, 9);
  assert_int_equal(sf_catalog_num_jobs_total(c), 8); /* no job added */
  /* Jobs whose segments the merge swapped out, in the archive or the
   * window, are still committed as they were. */
  assert_job(c, "job-2", 3, "seg-2");
  assert_job(c, "job-7", 8, "seg-7");
  sf_catalog_free(c);
  /* Again: done before. */
  assert_int_equal(compact_commit(&f, in, 3, "m1", "2-4", 48, &res, &err), SF_OK);
  assert_true(res.already);
  assert_int_equal(res.version, 9);
  /* A merge of an input another merge took first is stale. */
  const char *late[] = {"seg-4", "seg-5"};
  assert_int_equal(compact_commit(&f, late, 2, "m2", "4-5", 32, &res, &err),
                   SF_ECONFLICT);
  assert_non_null(strstr(err.msg, "seg-4"));
  assert_int_equal(latest_version(&f), 9);
  /* Redelivered jobs after the compaction: no-ops. */
  sf_catalog_commit_result cres;
  assert_int_equal(commit_w(&f, "job-3", "seg-3", "3", 2, 3, &cres, &err), SF_OK);
  assert_true(cres.already);
  assert_int_equal(cres.version, 4);
  assert_int_equal(latest_version(&f), 9);
}

static void test_version_names_parse_only_exactly(void **state) {
  (void)state;
  uint64_t v;
  char name[32];
  sf_catalog_version_name(42, name, sizeof name);
  assert_string_equal(name, "v00000000000000000042.avro");
  assert_int_equal(sf_catalog_parse_version_name(name, &v), 1);
  assert_int_equal(v, 42);
  assert_int_equal(
      sf_catalog_parse_version_name("v00000000000000000042.avro.tmp.1.2", &v), 0);
  assert_int_equal(sf_catalog_parse_version_name("v00000000000000000000.avro", &v), 0);
  assert_int_equal(sf_catalog_parse_version_name("v0000000000000000004x.avro", &v), 0);
  assert_int_equal(sf_catalog_parse_version_name("LOCK", &v), 0);
}

static void test_a_file_uri_names_the_same_dataset(void **state) {
  (void)state;
  fx f;
  fx_init(&f, "cat-uri");
  sf_err err = {0};
  assert_int_equal(commit1(&f, "idx", "job0", "seg-a", "0", &err), SF_OK);
  char uri[4200];
  snprintf(uri, sizeof uri, "file://%s", f.ds);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(uri, &c, &err), SF_OK);
  assert_int_equal(sf_catalog_version(c), 1);
  sf_catalog_free(c);
  assert_int_equal(sf_catalog_open_latest("s3://bucket/ds", &c, &err), SF_EINVAL);
  assert_int_equal(sf_catalog_open_latest("file://relative", &c, &err), SF_EINVAL);
}

/* Every spelling of one directory resolves to one string: the key of its
 * jobs, the dataset gc and finalize open, the one SegmentsCommitted names. */
static void every_spelling_of_a_dataset_resolves_to_one_canonical_form(void **state) {
  (void)state;
  char base[4096], ds[4200], link[4200], spaced[4200];
  snprintf(base, sizeof base, "%s", tu_tmpdir("cat-canon"));
  snprintf(ds, sizeof ds, "%s/ds", base);
  snprintf(spaced, sizeof spaced, "%s/my ds%%", base);
  snprintf(link, sizeof link, "%s/link", base);
  assert_int_equal(sf_fs_mkdirs(ds, NULL), SF_OK);
  assert_int_equal(sf_fs_mkdirs(spaced, NULL), SF_OK);
  assert_int_equal(symlink("ds", link), 0);
  char *want = realpath(ds, NULL);
  assert_non_null(want);
  const char *forms[] = {"%s/ds",          "%s/ds/",          "%s//ds//",
                         "%s/./ds/.",      "%s/ds/../ds",     "file://%s/ds",
                         "file://%s/ds/",  "FILE://%s/ds",    "file://localhost%s/ds",
                         "file:%s/ds",     "file://%s/d%%73", "%s/link",
                         "file://%s/link/"};
  for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
    char spelled[9000], *dir = NULL;
    sf_err err = {0};
    snprintf(spelled, sizeof spelled, forms[i], base);
    if (sf_catalog_resolve_dataset(spelled, &dir, &err))
      fail_msg("%s: %s", spelled, err.msg);
    if (strcmp(dir, want)) fail_msg("%s gives %s, not %s", spelled, dir, want);
    free(dir);
  }
  /* percent-escapes are decoded in URIs only; a path is taken as it is */
  char uri[9000], *dir = NULL;
  snprintf(uri, sizeof uri, "file://%s/my%%20ds%%25", base);
  assert_int_equal(sf_catalog_resolve_dataset(uri, &dir, NULL), SF_OK);
  char *want2 = realpath(spaced, NULL);
  assert_string_equal(dir, want2);
  free(dir);
  assert_int_equal(sf_catalog_resolve_dataset(spaced, &dir, NULL), SF_OK);
  assert_string_equal(dir, want2);
  free(dir);
  free(want2);
  free(want);
  const char *bad[] = {"file://otherhost%s/ds", "file://%s/ds?x=1", "file://%s/ds#f",
                       "file://%s/d%%7",        "file://%s/d%%00",  "file:ds",
                       "hdfs://%s/ds"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char spelled[9000];
    sf_err err = {0};
    snprintf(spelled, sizeof spelled, bad[i], base);
    if (sf_catalog_resolve_dataset(spelled, &dir, &err) != SF_EINVAL)
      fail_msg("%s was accepted or failed otherwise: %s", spelled, err.msg);
    assert_null(dir);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(
          test_a_commit_creates_version_one_with_every_field_and_keeps_the_quantizer),
      cmocka_unit_test(test_committing_the_same_job_twice_yields_one_version),
      cmocka_unit_test(
          test_an_overlapping_commit_is_refused_naming_the_segment_and_fragments),
      cmocka_unit_test(test_a_parameter_mismatch_is_refused_naming_the_field),
      cmocka_unit_test(test_replace_swaps_covered_segments_and_refuses_partial_cover),
      cmocka_unit_test(test_bad_requests_are_refused_before_anything_is_written),
      cmocka_unit_test(test_a_damaged_or_truncated_version_gives_a_clear_error),
      cmocka_unit_test(
          test_every_truncation_and_byte_flip_is_an_error_or_the_same_version),
      cmocka_unit_test(test_absurd_counts_and_lengths_in_the_framing_are_corrupt),
      cmocka_unit_test(test_a_crash_before_the_link_leaves_the_previous_version_intact),
      cmocka_unit_test(
          test_an_injected_failure_before_or_after_the_link_is_reported_and_retried),
      cmocka_unit_test(test_concurrent_committers_all_succeed_in_distinct_versions),
      cmocka_unit_test(test_a_commit_checks_its_files_under_the_lock),
      cmocka_unit_test(test_old_jobs_move_to_the_archive_and_stay_recognised_exactly),
      cmocka_unit_test(test_a_version_grows_by_chunk_references_not_by_jobs),
      cmocka_unit_test(test_a_chunk_that_does_not_read_is_an_error_never_a_new_job),
      cmocka_unit_test(test_intake_lookups_reuse_the_chunks_read_last_and_only_those),
      cmocka_unit_test(test_a_chunk_swapped_for_another_is_refused_by_its_name),
      cmocka_unit_test(test_a_format_1_version_opens_and_its_next_commit_converts_it),
      cmocka_unit_test(test_a_compaction_swaps_exactly_its_inputs_or_nothing),
      cmocka_unit_test(test_version_names_parse_only_exactly),
      cmocka_unit_test(test_a_file_uri_names_the_same_dataset),
      cmocka_unit_test(every_spelling_of_a_dataset_resolves_to_one_canonical_form),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
