/*
 * api_pipeline.c - the public C API end to end, through include/segforge.h
 * and libsegforge.so only: train from memory, write shards from memory with
 * explicit row ids, finalize or build step by step, search; answers are
 * checked against brute force, refusals by their status and message.
 */
#include <math.h>
#include <pthread.h>
#include <segforge.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "tests/api_fixture.h"
#include "tests/testutil.h"

#define DIM 16
#define PER 500 /* rows per fragment */
#define N (4 * PER)
#define NLIST 16
#define NQ 24
#define K 10

/* A job of four fragments: trained, then staged by two workers, w0 with
 * fragments 0-1 declared (its rows added in two calls, out of order) and
 * w1 with its fragments taken from its row ids. */
typedef struct {
  float *x;
  uint64_t *ids;
  char *dataset, *root;
} job;

static void stage_job_metric(job *j, const char *tag, const char *type, const char *extra,
                             const char *metric) {
  j->x = af_vectors(N, DIM, 12, 7);
  j->ids = af_row_ids(N, PER, 0);
  char nlist[32];
  snprintf(nlist, sizeof nlist, "nlist=%d", NLIST);
  sf_options *t = af_options(metric, nlist, type, extra, NULL);
  af_staged_dataset(tag, "job-1", j->x, N, DIM, t, &j->dataset, &j->root);
  sf_options_free(t);
  sf_error err = {0};
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(j->root, "w0", "0-1", NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_dim(w), DIM);
  /* The second half first: the writer orders rows itself. */
  assert_int_equal(sf_shard_writer_add(w, j->x + PER * DIM, j->ids + PER, PER, DIM, &err),
                   0);
  assert_int_equal(sf_shard_writer_add(w, j->x, j->ids, PER, DIM, &err), 0);
  assert_int_equal(sf_shard_writer_rows(w), 2 * PER);
  assert_null(sf_shard_writer_path(w));
  assert_int_equal(sf_shard_writer_finish(w, &err), 0);
  assert_non_null(strstr(sf_shard_writer_path(w), "/_indices/_staging/job-1/w0.sfshard"));
  assert_true(sf_shard_writer_bytes(w) > 0);
  sf_shard_writer_free(w);
  assert_int_equal(sf_shard_writer_open(j->root, "w1", NULL, NULL, &w, &err), 0);
  assert_int_equal(
      sf_shard_writer_add(w, j->x + 2 * PER * DIM, j->ids + 2 * PER, 2 * PER, DIM, &err),
      0);
  assert_int_equal(sf_shard_writer_finish(w, &err), 0);
  char *frags = sf_shard_writer_fragments(w);
  assert_string_equal(frags, "2-3");
  sf_free(frags);
  sf_shard_writer_free(w);
}

static void stage_job(job *j, const char *tag, const char *type, const char *extra) {
  stage_job_metric(j, tag, type, extra, "metric=L2");
}

static void free_job(job *j) {
  free(j->x);
  free(j->ids);
  free(j->dataset);
  free(j->root);
}

/* Searches ix with the queries and checks the answer equals brute force
 * over every row, ids and distances alike. */
static void assert_exact(sf_index *ix, const job *j, const float *q) {
  uint64_t got[NQ * K], want[NQ * K];
  float gd[NQ * K], wd[NQ * K];
  sf_error err = {0};
  int rc = sf_index_search(ix, q, NQ, DIM, K, NLIST, got, gd, &err);
  if (rc) fail_msg("search: %s", err.message);
  assert_int_equal(sf_exact_search(j->x, j->ids, N, q, NQ, DIM, "L2", K, want, wd, &err),
                   0);
  for (int i = 0; i < NQ * K; i++) {
    assert_int_equal(got[i], want[i]);
    assert_true(gd[i] == wd[i]);
  }
  assert_true(sf_recall(got, K, want, K, NQ, K) == 1.0);
}

static void version_and_status_names(void **state) {
  (void)state;
  char want[32];
  snprintf(want, sizeof want, "%d.%d.%d", SF_VERSION_MAJOR, SF_VERSION_MINOR,
           SF_VERSION_PATCH);
  assert_string_equal(sf_version(), want);
  assert_int_equal(sf_version_number(), SF_VERSION_NUMBER);
  assert_string_equal(sf_status_name(SF_STATUS_NOT_FOUND), "NOT_FOUND");
  assert_string_equal(sf_status_name(SF_STATUS_TIMEOUT), "TIMEOUT");
  assert_string_equal(sf_status_name(SF_STATUS_OVERLAP), "OVERLAP");
  assert_string_equal(sf_status_name(999), "UNKNOWN");
  assert_int_equal(SF_ROW_ID_FRAGMENT(SF_ROW_ID(7, 9)), 7);
  assert_int_equal(SF_ROW_ID_OFFSET(SF_ROW_ID(7, 9)), 9);
}

static void options_are_refused_by_name(void **state) {
  (void)state;
  float *x = af_vectors(100, 4, 2, 1);
  sf_error err = {0};
  const char *dir = tu_tmpdir("api_opts");
  sf_options *o = af_options("nlist=4", "nlsit=5", NULL);
  af_assert_fails(sf_train(x, 100, 4, o, dir, &err), &err, SF_STATUS_INVALID,
                  "option 'nlsit' is not one that sf_train reads");
  sf_options_free(o);
  o = af_options("nlist=four", NULL);
  af_assert_fails(sf_train(x, 100, 4, o, dir, &err), &err, SF_STATUS_INVALID,
                  "option nlist is 'four'");
  sf_options_free(o);
  o = af_options("nlist=4", "index_type=IVF_HNSW", NULL);
  af_assert_fails(sf_train(x, 100, 4, o, dir, &err), &err, SF_STATUS_INVALID, "IVF_HNSW");
  sf_options_free(o);
  o = af_options("index_type=IVF_PQ", "nlist=4", NULL);
  af_assert_fails(sf_train(x, 100, 4, o, dir, &err), &err, SF_STATUS_INVALID, "pq_m");
  sf_options_free(o);
  af_assert_fails(sf_train(x, 100, 4, NULL, dir, &err), &err, SF_STATUS_INVALID,
                  "nlist is required");
  x[5 * 4 + 2] = NAN;
  o = af_options("nlist=4", NULL);
  af_assert_fails(sf_train(x, 100, 4, o, dir, &err), &err, SF_STATUS_INVALID,
                  "training vector 5");
  sf_options_free(o);
  /* A size takes binary suffixes; a bad one says what is accepted. */
  o = af_options("target_segment_bytes=12Q", NULL);
  sf_builder *b = NULL;
  af_assert_fails(sf_builder_new(dir, "idx", "v", "job", o, &b, &err), &err,
                  SF_STATUS_INVALID, "K, M, G or T");
  assert_null(b);
  sf_options_free(o);
  free(x);
}

static void ivf_flat_at_full_nprobe_equals_brute_force(void **state) {
  (void)state;
  job j;
  stage_job(&j, "api_flat", "index_type=IVF_FLAT", NULL);
  sf_error err = {0};
  uint64_t version = 0;
  sf_options *o = af_options("expected_fragments=0-3", NULL);
  int rc = sf_index_finalize(j.dataset, "idx", "v", "job-1", o, &version, &err);
  if (rc) fail_msg("finalize: %s", err.message);
  assert_int_equal(version, 1);
  /* Finalizing again is a no-op that returns the same version. */
  version = 0;
  assert_int_equal(sf_index_finalize(j.dataset, "idx", "v", "job-1", o, &version, &err),
                   0);
  assert_int_equal(version, 1);
  sf_options_free(o);
  sf_index *ix = NULL;
  assert_int_equal(sf_index_open(j.dataset, "idx", &ix, &err), 0);
  assert_int_equal(sf_index_num_rows(ix), N);
  assert_int_equal(sf_index_dim(ix), DIM);
  assert_int_equal(sf_index_nlist(ix), NLIST);
  assert_int_equal(sf_index_version(ix), 1);
  assert_int_equal(sf_index_num_segments(ix), 2);
  assert_string_equal(sf_index_algorithm(ix), "IVF_FLAT");
  assert_string_equal(sf_index_metric(ix), "L2");
  float *q = af_vectors(NQ, DIM, 12, 99);
  assert_exact(ix, &j, q);
  /* Fewer rows than k: the slots beyond are empty. */
  uint64_t many[N + 5];
  float md[N + 5];
  assert_int_equal(sf_index_search(ix, q, 1, DIM, N + 5, NLIST, many, md, &err), 0);
  assert_true(many[N - 1] != SF_NO_ROW_ID);
  for (int i = N; i < N + 5; i++) {
    assert_true(many[i] == SF_NO_ROW_ID);
    assert_true(isinf(md[i]));
  }
  af_assert_fails(sf_index_search(ix, q, NQ, DIM + 1, K, 4, many, NULL, &err), &err,
                  SF_STATUS_MISMATCH, "dimension 17");
  q[3] = NAN;
  af_assert_fails(sf_index_search(ix, q, NQ, DIM, K, 4, many, NULL, &err), &err,
                  SF_STATUS_INVALID, "query 0");
  free(q);
  sf_index_close(ix);
  af_assert_fails(sf_index_open(j.dataset, "nope", &ix, &err), &err, SF_STATUS_NOT_FOUND,
                  "no index 'nope'");
  free_job(&j);
}

static void builder_plans_builds_one_and_all_then_commits(void **state) {
  (void)state;
  job j;
  stage_job(&j, "api_builder", "index_type=IVF_FLAT", NULL);
  sf_error err = {0};
  sf_builder *b = NULL;
  /* The review's P1: the index type is checked against the shards. */
  sf_options *o = af_options("index_type=IVF_PQ", NULL);
  assert_int_equal(sf_builder_new(j.dataset, "idx", "v", "job-1", o, &b, &err), 0);
  af_assert_fails(sf_builder_plan(b, &err), &err, SF_STATUS_MISMATCH, "IVF_PQ");
  assert_int_equal(sf_builder_num_segments(b), 0);
  sf_builder_free(b);
  sf_options_free(o);
  /* Coverage is checked when expected fragments are given. */
  o = af_options("expected_fragments=0-4", NULL);
  assert_int_equal(sf_builder_new(j.dataset, "idx", "v", "job-1", o, &b, &err), 0);
  af_assert_fails(sf_builder_plan(b, &err), &err, SF_STATUS_INCOMPLETE, "4");
  sf_builder_free(b);
  sf_options_free(o);

  o = af_options("index_type=IVF_FLAT", "expected_fragments=0-3", "max_concurrency=2",
                 "target_segment_bytes=0", NULL);
  assert_int_equal(sf_builder_new(j.dataset, "idx", "v", "job-1", o, &b, &err), 0);
  sf_options_free(o);
  af_assert_fails(sf_builder_build(b, 0, &err), &err, SF_STATUS_INVALID, "plan first");
  assert_int_equal(sf_builder_plan(b, &err), 0);
  /* No budget: one segment per shard, in fragment order. */
  assert_int_equal(sf_builder_num_segments(b), 2);
  uint64_t rows = 0;
  for (size_t i = 0; i < 2; i++) {
    assert_int_equal(sf_builder_segment_num_shards(b, i), 1);
    assert_non_null(strstr(sf_builder_segment_id(b, i), "job-1-"));
    assert_true(sf_builder_segment_bytes(b, i) > 0);
    rows += sf_builder_segment_rows(b, i);
    assert_int_equal(sf_builder_segment_built(b, i), 0);
  }
  assert_int_equal(rows, N);
  assert_string_equal(sf_builder_segment_shard(b, 0, 0), "w0");
  assert_string_equal(sf_builder_segment_shard(b, 1, 0), "w1");
  assert_null(sf_builder_segment_shard(b, 1, 1));
  char *f = sf_builder_segment_fragments(b, 1);
  assert_string_equal(f, "2-3");
  sf_free(f);
  char *json = sf_builder_plan_json(b);
  assert_non_null(strstr(json, "\"segments\""));
  sf_free(json);
  af_assert_fails(sf_builder_build(b, 2, &err), &err, SF_STATUS_INVALID, "2 segments");
  /* One segment, then the rest. */
  assert_int_equal(sf_builder_build(b, 1, &err), 0);
  assert_int_equal(sf_builder_segment_built(b, 1), 1);
  assert_int_equal(sf_builder_segment_built(b, 0), 0);
  assert_int_equal(sf_builder_build_all(b, &err), 0);
  assert_int_equal(sf_builder_segment_built(b, 0), 1);
  uint64_t version = 0;
  int already = -1;
  assert_int_equal(sf_builder_commit(b, &version, &already, &err), 0);
  assert_int_equal(version, 1);
  assert_int_equal(already, 0);
  sf_builder_free(b);

  /* A second builder of the same job (another process, say) finds the
   * segments and the commit done. */
  assert_int_equal(sf_builder_new(j.dataset, "idx", "v", "job-1", NULL, &b, &err), 0);
  assert_int_equal(sf_builder_plan(b, &err), 0);
  assert_int_equal(sf_builder_commit(b, &version, &already, &err), 0);
  assert_int_equal(version, 1);
  assert_int_equal(already, 1);
  sf_builder_free(b);

  assert_int_equal(sf_index_wait_committed(j.dataset, "job-1", 0, &version, &err), 0);
  assert_int_equal(version, 1);
  af_assert_fails(sf_index_wait_committed(j.dataset, "job-2", 150, &version, &err), &err,
                  SF_STATUS_TIMEOUT, "job-2");

  sf_index *ix = NULL;
  assert_int_equal(sf_index_open(j.dataset, "idx", &ix, &err), 0);
  float *q = af_vectors(NQ, DIM, 12, 5);
  assert_exact(ix, &j, q);
  free(q);
  sf_index_close(ix);
  free_job(&j);
}

static void bad_rows_are_refused_and_change_nothing(void **state) {
  (void)state;
  float *x = af_vectors(300, 8, 4, 3);
  uint64_t *ids = af_row_ids(300, 100, 0);
  char *dataset, *root;
  sf_options *t = af_options("nlist=4", NULL);
  af_staged_dataset("api_bad", "job", x, 300, 8, t, &dataset, &root);
  sf_options_free(t);
  sf_error err = {0};
  sf_shard_writer *w = NULL;
  af_assert_fails(sf_shard_writer_open(root, "../w", NULL, NULL, &w, &err), &err,
                  SF_STATUS_INVALID, "shard id");
  af_assert_fails(sf_shard_writer_open(root, "w", "0-x", NULL, &w, &err), &err,
                  SF_STATUS_INVALID, "fragments");
  af_assert_fails(sf_shard_writer_open(dataset, "w", NULL, NULL, &w, &err), &err,
                  SF_STATUS_NOT_FOUND, "sf_train");
  assert_int_equal(sf_shard_writer_open(root, "w", "0-1", NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, x, ids, 100, 8, &err), 0);
  /* Row 200 is fragment 2: outside the declared 0-1. */
  af_assert_fails(sf_shard_writer_add(w, x + 100 * 8, ids + 100, 200, 8, &err), &err,
                  SF_STATUS_INVALID,
                  "row 100 has row id 8589934592 (fragment 2, offset 0)");
  assert_int_equal(sf_shard_writer_rows(w), 100);
  x[120 * 8 + 6] = NAN;
  af_assert_fails(sf_shard_writer_add(w, x + 100 * 8, ids + 100, 100, 8, &err), &err,
                  SF_STATUS_INVALID, "row 20 (row id 4294967316) has a NaN");
  x[120 * 8 + 6] = INFINITY;
  af_assert_fails(sf_shard_writer_add(w, x + 100 * 8, ids + 100, 100, 8, &err), &err,
                  SF_STATUS_INVALID, "NaN or infinite");
  x[120 * 8 + 6] = 0;
  af_assert_fails(sf_shard_writer_add(w, x, ids, 100, 4, &err), &err, SF_STATUS_MISMATCH,
                  "dimension 4");
  assert_int_equal(sf_shard_writer_rows(w), 100);
  /* A row id given twice is found when the shard is written. */
  assert_int_equal(sf_shard_writer_add(w, x + 150 * 8, ids + 50, 1, 8, &err), 0);
  af_assert_fails(sf_shard_writer_finish(w, &err), &err, SF_STATUS_INVALID,
                  "row id 50 (fragment 0, offset 50) was added twice");
  af_assert_fails(sf_shard_writer_add(w, x, ids, 1, 8, &err), &err, SF_STATUS_INVALID,
                  "failed");
  sf_shard_writer_free(w);
  assert_int_equal(tu_count_entries(root, ".sfshard", 0), 0);
  /* A shard id is staged once, unless replaced on purpose. */
  assert_int_equal(sf_shard_writer_open(root, "w", NULL, NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, x, ids, 100, 8, &err), 0);
  assert_int_equal(sf_shard_writer_finish(w, &err), 0);
  sf_shard_writer_free(w);
  af_assert_fails(sf_shard_writer_open(root, "w", NULL, NULL, &w, &err), &err,
                  SF_STATUS_EXISTS, "staged already");
  sf_options *o = af_options("exclusive=0", NULL);
  assert_int_equal(sf_shard_writer_open(root, "w", NULL, o, &w, &err), 0);
  sf_options_free(o);
  /* An empty shard must declare what it covers. */
  af_assert_fails(sf_shard_writer_finish(w, &err), &err, SF_STATUS_INVALID, "no rows");
  sf_shard_writer_free(w);
  /* Without expected fragments any coverage goes; with them, a hole is
   * named. */
  o = af_options("expected_fragments=0-2", NULL);
  af_assert_fails(sf_index_finalize(dataset, "idx", "v", "job", o, NULL, &err), &err,
                  SF_STATUS_INCOMPLETE, "1-2");
  sf_options_free(o);
  free(x);
  free(ids);
  free(dataset);
  free(root);
}

typedef struct {
  sf_index *ix;
  const float *q;
  const uint64_t *want;
  const float *want_d;
  int first; /* the query this thread starts at: each meets them in its order */
  int mismatches, failures;
} searcher;

/* Searches every query one call at a time, starting at s->first, 20 times;
 * counts answers whose ids or distance bits differ from one thread's. */
static void *search_loop(void *arg) {
  searcher *s = arg;
  for (int round = 0; round < 20; round++)
    for (int n = 0; n < NQ; n++) {
      int i = (s->first + n) % NQ;
      uint64_t got[K];
      float d[K];
      sf_error err = {0};
      if (sf_index_search(s->ix, s->q + i * DIM, 1, DIM, K, 4, got, d, &err)) {
        s->failures++;
        continue;
      }
      s->mismatches += memcmp(got, s->want + i * K, sizeof got) != 0 ||
                       memcmp(d, s->want_d + i * K, sizeof d) != 0;
    }
  return NULL;
}

/* Six threads searching one index (a pool of searchers, each warmed by
 * other queries in another order: IVF_PQ searchers keep terms as they go)
 * agree with one thread's answer bit for bit. */
static void concurrent_searches_agree(const char *type, const char *extra,
                                      const char *metric) {
  job j;
  stage_job_metric(&j, "api_threads", type, extra, metric);
  sf_error err = {0};
  assert_int_equal(sf_index_finalize(j.dataset, "idx", "v", "job-1", NULL, NULL, &err),
                   0);
  sf_index *ix = NULL;
  assert_int_equal(sf_index_open(j.dataset, "idx", &ix, &err), 0);
  float *q = af_vectors(NQ, DIM, 12, 11);
  uint64_t want[NQ * K];
  float want_d[NQ * K];
  assert_int_equal(sf_index_search(ix, q, NQ, DIM, K, 4, want, want_d, &err), 0);
  enum { T = 6 };
  searcher s[T];
  pthread_t t[T];
  for (int i = 0; i < T; i++) {
    s[i] = (searcher){.ix = ix, .q = q, .want = want, .want_d = want_d, .first = i * 5};
    assert_int_equal(pthread_create(&t[i], NULL, search_loop, &s[i]), 0);
  }
  for (int i = 0; i < T; i++) {
    pthread_join(t[i], NULL);
    assert_int_equal(s[i].failures, 0);
    assert_int_equal(s[i].mismatches, 0);
  }
  /* The quantized index still finds most true neighbours at nprobe 4 of
   * 16 (recall measured 0.9+ for IVF_SQ; the bound leaves room for other
   * CPUs and for PQ's coarser codes). */
  uint64_t truth[NQ * K];
  assert_int_equal(
      sf_exact_search(j.x, j.ids, N, q, NQ, DIM, metric + 7, K, truth, NULL, &err), 0);
  double r = sf_recall(want, K, truth, K, NQ, K);
  assert_true(r >= (strstr(type, "PQ") ? 0.5 : 0.8));
  free(q);
  sf_index_close(ix);
  free_job(&j);
}

static void concurrent_searches_agree_with_one_thread(void **state) {
  (void)state;
  concurrent_searches_agree("index_type=IVF_SQ", NULL, "metric=L2");
  concurrent_searches_agree("index_type=IVF_PQ", "pq_m=8", "metric=L2");
  concurrent_searches_agree("index_type=IVF_PQ", "pq_m=8", "metric=COSINE");
  concurrent_searches_agree("index_type=IVF_PQ", "pq_m=4", "metric=DOT");
}

static void pq_recall_against_brute_force(void **state) {
  (void)state;
  job j;
  stage_job(&j, "api_pq", "index_type=IVF_PQ", "pq_m=8");
  sf_error err = {0};
  assert_int_equal(sf_index_finalize(j.dataset, "idx", "v", "job-1", NULL, NULL, &err),
                   0);
  sf_index *ix = NULL;
  assert_int_equal(sf_index_open(j.dataset, "idx", &ix, &err), 0);
  assert_string_equal(sf_index_algorithm(ix), "IVF_PQ");
  float *q = af_vectors(NQ, DIM, 12, 13);
  uint64_t got[NQ * K], truth[NQ * K];
  assert_int_equal(sf_index_search(ix, q, NQ, DIM, K, NLIST, got, NULL, &err), 0);
  assert_int_equal(sf_exact_search(j.x, j.ids, N, q, NQ, DIM, "L2", K, truth, NULL, &err),
                   0);
  double r = sf_recall(got, K, truth, K, NQ, K);
  assert_true(r >= 0.5);
  assert_true(sf_recall(got, K, truth, K, NQ, K + 1) == -1);
  free(q);
  sf_index_close(ix);
  free_job(&j);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(version_and_status_names),
      cmocka_unit_test(options_are_refused_by_name),
      cmocka_unit_test(ivf_flat_at_full_nprobe_equals_brute_force),
      cmocka_unit_test(builder_plans_builds_one_and_all_then_commits),
      cmocka_unit_test(bad_rows_are_refused_and_change_nothing),
      cmocka_unit_test(concurrent_searches_agree_with_one_thread),
      cmocka_unit_test(pq_recall_against_brute_force),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
