/*
 * api_hostile.c - the public API used wrongly on purpose: NULL handles and
 * arguments, Arrow arrays whose lengths overflow or whose children are
 * missing, huge k, use after finish, a job finalized with fragments
 * missing. Every call must fail with its status and a message naming the
 * thing and the fix (in the API's words, not the command line's), and never
 * crash or touch memory it was not given.
 */
#include <dirent.h>
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

#define DIM 4
#define N 64
#define NLIST 4

typedef struct {
  float *x;
  uint64_t *ids;
  char *dataset, *root;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->x = af_vectors(N, DIM, 4, 5);
  f->ids = af_row_ids(N, 16, 0); /* fragments 0-3 of 16 rows */
  sf_options *t = af_options("nlist=4", NULL);
  af_staged_dataset("api_hostile", "job", f->x, N, DIM, t, &f->dataset, &f->root);
  sf_options_free(t);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  free(f->x);
  free(f->ids);
  free(f->dataset);
  free(f->root);
  free(f);
  return 0;
}

static void release_schema(struct ArrowSchema *s) {
  s->release = NULL;
}

static void release_array(struct ArrowArray *a) {
  a->release = NULL;
}

/* A FixedSizeList<float32>[DIM] array and a uint64 array over n rows of
 * caller buffers, with lengths the test may then falsify. */
typedef struct {
  struct ArrowSchema vec, val, id, *vec_children[1];
  struct ArrowArray a_vec, a_val, a_id, *a_vec_children[1];
  const void *b_vec[1], *b_val[2], *b_id[2];
} columns;

static void make_columns(columns *c, const float *x, const uint64_t *ids, int64_t n) {
  memset(c, 0, sizeof *c);
  c->vec_children[0] = &c->val;
  c->a_vec_children[0] = &c->a_val;
  c->val = (struct ArrowSchema){.format = "f", .name = "item", .release = release_schema};
  c->vec = (struct ArrowSchema){.format = "+w:4",
                                .name = "v",
                                .n_children = 1,
                                .children = c->vec_children,
                                .release = release_schema};
  c->id =
      (struct ArrowSchema){.format = "L", .name = "row_id", .release = release_schema};
  c->b_val[1] = x;
  c->b_id[1] = ids;
  c->a_val = (struct ArrowArray){
      .length = n * DIM, .n_buffers = 2, .buffers = c->b_val, .release = release_array};
  c->a_vec = (struct ArrowArray){.length = n,
                                 .n_buffers = 1,
                                 .buffers = c->b_vec,
                                 .n_children = 1,
                                 .children = c->a_vec_children,
                                 .release = release_array};
  c->a_id = (struct ArrowArray){
      .length = n, .n_buffers = 2, .buffers = c->b_id, .release = release_array};
}

static int add_columns(sf_shard_writer *w, columns *c, sf_error *err) {
  return sf_shard_writer_add_arrow_columns(w, &c->vec, &c->a_vec, &c->id, &c->a_id, err);
}

/* Lengths whose products with the dimension or sums with the offsets pass
 * INT64_MAX must be refused, not wrapped around into a small count that
 * passes the bounds checks while the rows read run past the buffers. */
static void arrow_lengths_that_overflow_are_refused(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(f->root, "w", "0-3", NULL, &w, &err), 0);
  columns c;
  /* 2^62 vectors of 4 floats: 2^64 values, 0 once wrapped. */
  make_columns(&c, f->x, f->ids, N);
  c.a_vec.length = c.a_id.length = INT64_C(1) << 62;
  af_assert_fails(add_columns(w, &c, &err), &err, SF_STATUS_INVALID, "vector array");
  /* The offsets' sum with the length passes INT64_MAX. */
  make_columns(&c, f->x, f->ids, N);
  c.a_vec.offset = c.a_id.offset = INT64_MAX - 1;
  af_assert_fails(add_columns(w, &c, &err), &err, SF_STATUS_INVALID, "vector array");
  make_columns(&c, f->x, f->ids, N);
  c.a_val.offset = INT64_MAX - 8;
  af_assert_fails(add_columns(w, &c, &err), &err, SF_STATUS_INVALID, "vector array");
  /* The child has fewer values than the list claims rows. */
  make_columns(&c, f->x, f->ids, N);
  c.a_val.length = N * DIM - 1;
  af_assert_fails(add_columns(w, &c, &err), &err, SF_STATUS_INVALID, "values for");
  assert_int_equal(sf_shard_writer_rows(w), 0);
  /* And the honest arrays are still taken. */
  make_columns(&c, f->x, f->ids, N);
  assert_int_equal(add_columns(w, &c, &err), SF_STATUS_OK);
  assert_int_equal(sf_shard_writer_rows(w), N);
  sf_shard_writer_free(w);
}

/* Buffers the specification allows but C cannot read in place (not
 * aligned to their type) are refused naming the column. */
static void arrow_unaligned_buffers_are_refused(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(f->root, "w", "0-3", NULL, &w, &err), 0);
  unsigned char *raw = malloc(N * DIM * sizeof(float) + N * sizeof(uint64_t) + 16);
  assert_non_null(raw);
  unsigned char *xs = raw + 1, *is = raw + 1 + N * DIM * sizeof(float) + 8;
  memcpy(xs, f->x, N * DIM * sizeof(float));
  memcpy(is, f->ids, N * sizeof(uint64_t));
  columns c;
  make_columns(&c, (const float *)(const void *)xs, f->ids, N);
  af_assert_fails(add_columns(w, &c, &err), &err, SF_STATUS_INVALID, "not aligned");
  make_columns(&c, f->x, (const uint64_t *)(const void *)is, N);
  af_assert_fails(add_columns(w, &c, &err), &err, SF_STATUS_INVALID, "row id array");
  assert_int_equal(sf_shard_writer_rows(w), 0);
  free(raw);
  sf_shard_writer_free(w);
}

/* A struct whose schema lists a child that the array leaves NULL, or a
 * NULL child in the schema, is refused naming it. */
static void arrow_null_children_are_refused(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(f->root, "w", "0-3", NULL, &w, &err), 0);
  columns c;
  make_columns(&c, f->x, f->ids, N);
  struct ArrowSchema *sch[2] = {&c.vec, &c.id};
  struct ArrowArray *arr[2] = {&c.a_vec, &c.a_id};
  const void *b_st[1] = {NULL};
  struct ArrowSchema st = {.format = "+s",
                           .name = "",
                           .n_children = 2,
                           .children = sch,
                           .release = release_schema};
  struct ArrowArray a_st = {.length = N,
                            .n_buffers = 1,
                            .buffers = b_st,
                            .n_children = 2,
                            .children = arr,
                            .release = release_array};
  arr[1] = NULL;
  af_assert_fails(sf_shard_writer_add_arrow(w, &st, &a_st, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "NULL child");
  arr[1] = &c.a_id;
  sch[0] = NULL;
  af_assert_fails(sf_shard_writer_add_arrow(w, &st, &a_st, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "vector");
  sch[0] = &c.vec;
  c.vec_children[0] = NULL;
  af_assert_fails(sf_shard_writer_add_arrow(w, &st, &a_st, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "FixedSizeList<float32>");
  c.vec_children[0] = &c.val;
  c.a_vec_children[0] = NULL;
  af_assert_fails(sf_shard_writer_add_arrow(w, &st, &a_st, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "NULL");
  c.a_vec_children[0] = &c.a_val;
  /* A struct longer than its children. */
  a_st.length = N + 1;
  af_assert_fails(sf_shard_writer_add_arrow(w, &st, &a_st, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "shorter than its parent");
  a_st.length = N;
  /* A child's offset that overflows once the struct's is added. */
  a_st.offset = 20;
  a_st.length = N - 20;
  c.a_id.offset = INT64_MAX - 10;
  c.a_id.length = 0;
  af_assert_fails(sf_shard_writer_add_arrow(w, &st, &a_st, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "overflow");
  c.a_id.offset = 0;
  c.a_id.length = N;
  a_st.offset = 0;
  a_st.length = N;
  assert_int_equal(sf_shard_writer_add_arrow(w, &st, &a_st, NULL, NULL, &err), 0);
  assert_int_equal(sf_shard_writer_rows(w), N);
  sf_shard_writer_free(w);
}

/* Calls on a NULL handle fail with INVALID (or return 0/NULL for getters)
 * instead of dereferencing it. */
static void null_handles_are_refused(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  uint64_t id = 0;
  float d = 0, q[DIM] = {0};
  af_assert_fails(sf_shard_writer_add(NULL, f->x, f->ids, 1, DIM, &err), &err,
                  SF_STATUS_INVALID, "NULL");
  af_assert_fails(sf_shard_writer_finish(NULL, &err), &err, SF_STATUS_INVALID, "NULL");
  af_assert_fails(sf_shard_writer_add_arrow(NULL, NULL, NULL, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "NULL");
  af_assert_fails(sf_builder_plan(NULL, &err), &err, SF_STATUS_INVALID, "NULL");
  af_assert_fails(sf_builder_build(NULL, 0, &err), &err, SF_STATUS_INVALID, NULL);
  af_assert_fails(sf_builder_build_all(NULL, &err), &err, SF_STATUS_INVALID, NULL);
  af_assert_fails(sf_builder_commit(NULL, NULL, NULL, &err), &err, SF_STATUS_INVALID,
                  NULL);
  af_assert_fails(sf_index_search(NULL, q, 1, DIM, 1, 1, &id, &d, &err), &err,
                  SF_STATUS_INVALID, "index");
  af_assert_fails(sf_producer_publish_shard(NULL, "x", NULL, 0, NULL, &err), &err,
                  SF_STATUS_INVALID, "producer");
  af_assert_fails(sf_index_open(NULL, "idx", &(sf_index *){NULL}, &err), &err,
                  SF_STATUS_INVALID, "dataset");
  af_assert_fails(sf_index_finalize(NULL, "idx", "v", "job", NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "dataset");
  af_assert_fails(sf_index_finalize(f->dataset, NULL, "v", "job", NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "index");
  af_assert_fails(sf_index_finalize(f->dataset, "idx", "v", NULL, NULL, NULL, &err), &err,
                  SF_STATUS_INVALID, "staging id");
  af_assert_fails(sf_index_wait_committed(NULL, "job", 0, NULL, &err), &err,
                  SF_STATUS_INVALID, "dataset");
  af_assert_fails(sf_train(NULL, 1, DIM, NULL, f->root, &err), &err, SF_STATUS_INVALID,
                  NULL);
  /* Getters of a NULL handle answer nothing. */
  assert_int_equal(sf_shard_writer_rows(NULL), 0);
  assert_null(sf_shard_writer_path(NULL));
  assert_null(sf_shard_writer_fragments(NULL));
  assert_int_equal(sf_builder_num_segments(NULL), 0);
  assert_null(sf_builder_segment_id(NULL, 0));
  assert_null(sf_builder_plan_json(NULL));
  assert_int_equal(sf_index_dim(NULL), 0);
  assert_null(sf_index_algorithm(NULL));
  assert_null(sf_options_get(NULL, "nlist"));
  assert_true(sf_recall(NULL, 1, NULL, 1, 1, 1) == -1);
  /* The err argument itself may be NULL. */
  assert_int_equal(sf_shard_writer_finish(NULL, NULL), SF_STATUS_INVALID);
}

/* A writer is done after finish: adding or finishing again is refused,
 * and a duplicate row id across two add calls fails finish without
 * leaving a file (or a temporary one) in the staging root. */
static void writer_misuse_leaves_nothing_behind(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(f->root, "dup", "0-3", NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, f->x, f->ids, 8, DIM, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, f->x + 8 * DIM, f->ids + 7, 1, DIM, &err), 0);
  af_assert_fails(sf_shard_writer_finish(w, &err), &err, SF_STATUS_INVALID,
                  "was added twice");
  af_assert_fails(sf_shard_writer_add(w, f->x, f->ids, 1, DIM, &err), &err,
                  SF_STATUS_INVALID, "failed");
  sf_shard_writer_free(w);
  /* Abandoned without finish. */
  assert_int_equal(sf_shard_writer_open(f->root, "gone", "0-3", NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, f->x, f->ids, N, DIM, &err), 0);
  sf_shard_writer_free(w);
  /* Two writers of one id: the second finish loses and cleans up. */
  sf_shard_writer *a = NULL, *b = NULL;
  assert_int_equal(sf_shard_writer_open(f->root, "race", "0-3", NULL, &a, &err), 0);
  assert_int_equal(sf_shard_writer_open(f->root, "race", "0-3", NULL, &b, &err), 0);
  assert_int_equal(sf_shard_writer_add(a, f->x, f->ids, N, DIM, &err), 0);
  assert_int_equal(sf_shard_writer_add(b, f->x, f->ids, N, DIM, &err), 0);
  assert_int_equal(sf_shard_writer_finish(a, &err), 0);
  af_assert_fails(sf_shard_writer_finish(b, &err), &err, SF_STATUS_EXISTS, "race");
  af_assert_fails(sf_shard_writer_finish(a, &err), &err, SF_STATUS_INVALID,
                  "finished already");
  sf_shard_writer_free(a);
  sf_shard_writer_free(b);
  /* The root holds the quantizer and race.sfshard, nothing else. */
  DIR *d = opendir(f->root);
  assert_non_null(d);
  int files = 0;
  for (struct dirent *e; (e = readdir(d));) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (strcmp(e->d_name, "quantizer") && strcmp(e->d_name, "race.sfshard"))
      fail_msg("the staging root holds '%s'", e->d_name);
    files++;
  }
  closedir(d);
  assert_int_equal(files, 2);
}

/* A job of its own in f's dataset: trained, one shard "h" of rows 0-31
 * (fragments 0-1). */
static void stage_small_job(const fixture *f, const char *job) {
  sf_error err = {0};
  char *root = NULL;
  assert_int_equal(sf_staging_root(f->dataset, job, &root, &err), 0);
  sf_options *t = af_options("nlist=4", NULL);
  assert_int_equal(sf_train(f->x, N, DIM, t, root, &err), 0);
  sf_options_free(t);
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(root, "h", "0-1", NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, f->x, f->ids, 32, DIM, &err), 0);
  assert_int_equal(sf_shard_writer_finish(w, &err), 0);
  sf_shard_writer_free(w);
  free(root);
}

static void assert_no_flag(const sf_error *err) {
  if (strstr(err->message, "--"))
    fail_msg("the message names a command-line flag: %s", err->message);
}

/* Errors of the finalizer speak in options, not in command-line flags. */
static void finalize_errors_name_options(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  stage_small_job(f, "short");
  sf_options *o = af_options("expected_fragments=0-5", NULL);
  af_assert_fails(sf_index_finalize(f->dataset, "idx", "v", "short", o, NULL, &err), &err,
                  SF_STATUS_INCOMPLETE, "expected_fragments");
  assert_no_flag(&err);
  sf_options_free(o);
  assert_int_equal(sf_index_finalize(f->dataset, "idx", "v", "short", NULL, NULL, &err),
                   0);
  /* A second job over the same fragments overlaps the first. */
  stage_small_job(f, "again");
  sf_builder *b = NULL;
  assert_int_equal(sf_builder_new(f->dataset, "idx", "v", "again", NULL, &b, &err), 0);
  assert_int_equal(sf_builder_plan(b, &err), 0);
  af_assert_fails(sf_builder_commit(b, NULL, NULL, &err), &err, SF_STATUS_OVERLAP,
                  "option replace");
  assert_no_flag(&err);
  sf_builder_free(b);
}

/* k far beyond the rows, nprobe beyond nlist: the answer is every row,
 * best first, then empty slots. */
static void huge_k_and_nprobe(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  char *dataset = strdup(tu_tmpdir("api_hostile_k"));
  char *root = NULL;
  assert_int_equal(sf_staging_root(dataset, "j", &root, &err), 0);
  sf_options *t = af_options("nlist=4", NULL);
  assert_int_equal(sf_train(f->x, N, DIM, t, root, &err), 0);
  sf_options_free(t);
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(root, "w", NULL, NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, f->x, f->ids, N, DIM, &err), 0);
  assert_int_equal(sf_shard_writer_finish(w, &err), 0);
  sf_shard_writer_free(w);
  assert_int_equal(sf_index_finalize(dataset, "idx", "v", "j", NULL, NULL, &err), 0);
  sf_index *ix = NULL;
  assert_int_equal(sf_index_open(dataset, "idx", &ix, &err), 0);
  /* k = 2^24: 128 MiB of ids, all but N of them empty slots. */
  const uint32_t k = 1u << 24;
  uint64_t *ids = malloc((size_t)k * sizeof *ids);
  assert_non_null(ids);
  assert_int_equal(sf_index_search(ix, f->x, 1, DIM, k, 1000, ids, NULL, &err), 0);
  assert_int_equal(ids[0], f->ids[0]);
  assert_int_not_equal(ids[N - 1], SF_NO_ROW_ID);
  assert_int_equal(ids[N], SF_NO_ROW_ID);
  assert_int_equal(ids[k - 1], SF_NO_ROW_ID);
  free(ids);
  sf_index_close(ix);
  free(root);
  free(dataset);
}

/* The brute force refuses what it cannot rank, naming it, rather than
 * answer without the row (an infinite base row) or with nothing (a NaN
 * query). */
static void exact_search_refuses_non_finite(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  float *base = malloc(N * DIM * sizeof *base);
  assert_non_null(base);
  memcpy(base, f->x, N * DIM * sizeof *base);
  float q[2 * DIM];
  memcpy(q, f->x, sizeof q);
  uint64_t ids[2 * 3];
  q[DIM + 2] = NAN;
  af_assert_fails(sf_exact_search(base, NULL, N, q, 2, DIM, "L2", 3, ids, NULL, &err),
                  &err, SF_STATUS_INVALID,
                  "query 1 has a NaN or infinite value at element 2");
  q[DIM + 2] = f->x[DIM + 2];
  base[5 * DIM] = INFINITY;
  af_assert_fails(sf_exact_search(base, NULL, N, q, 2, DIM, "L2", 3, ids, NULL, &err),
                  &err, SF_STATUS_INVALID,
                  "base row 5 has a NaN or infinite value at element 0");
  base[5 * DIM] = f->x[5 * DIM];
  assert_int_equal(sf_exact_search(base, NULL, N, q, 2, DIM, "L2", 3, ids, NULL, &err),
                   0);
  assert_int_equal(ids[0], 0);
  assert_int_equal(ids[3], 1);
  free(base);
}

typedef struct {
  sf_index *ix;
  const float *q;
  int failed, searched;
  sf_error err;
} racer;

static void *race_searches(void *arg) {
  racer *r = arg;
  uint64_t ids[256 * 4];
  for (int i = 0; i < 30 && !r->failed; i++) {
    if (sf_index_search(r->ix, r->q, 256, DIM, 4, NLIST, ids, NULL, &r->err))
      r->failed = 1;
    else
      r->searched++;
  }
  return NULL;
}

/* The files of an open index removed under it (as gc removes a superseded
 * version's): the searchers already open go on; a search that must open
 * another fails NOT_FOUND saying to open the index again. */
static void search_after_files_removed(void **state) {
  fixture *f = *state;
  sf_error err = {0};
  char *dataset = strdup(tu_tmpdir("api_hostile_gc"));
  char *root = NULL;
  assert_int_equal(sf_staging_root(dataset, "j", &root, &err), 0);
  const uint64_t n = 4096;
  float *x = af_vectors(n, DIM, 8, 3);
  uint64_t *ids = af_row_ids(n, 1024, 0);
  sf_options *t = af_options("nlist=4", NULL);
  assert_int_equal(sf_train(x, n, DIM, t, root, &err), 0);
  sf_options_free(t);
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(root, "w", NULL, NULL, &w, &err), 0);
  assert_int_equal(sf_shard_writer_add(w, x, ids, n, DIM, &err), 0);
  assert_int_equal(sf_shard_writer_finish(w, &err), 0);
  sf_shard_writer_free(w);
  assert_int_equal(sf_index_finalize(dataset, "idx", "v", "j", NULL, NULL, &err), 0);
  sf_index *ix = NULL;
  assert_int_equal(sf_index_open(dataset, "idx", &ix, &err), 0);
  const char *segs = tu_path(dataset, "_indices/segments");
  DIR *d = opendir(segs);
  assert_non_null(d);
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') assert_int_equal(remove(tu_path(segs, e->d_name)), 0);
  closedir(d);
  racer r[4];
  pthread_t th[4];
  for (int i = 0; i < 4; i++) {
    r[i] = (racer){.ix = ix, .q = x};
    assert_int_equal(pthread_create(&th[i], NULL, race_searches, &r[i]), 0);
  }
  int failed = 0, searched = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    searched += r[i].searched;
    if (!r[i].failed) continue;
    failed++;
    af_assert_fails(SF_STATUS_NOT_FOUND, &r[i].err, SF_STATUS_NOT_FOUND,
                    "open the index again");
  }
  /* The searcher opened with the index still reads the mapped files. */
  assert_true(searched > 0);
  assert_true(failed > 0);
  sf_index_close(ix);
  free(x);
  free(ids);
  free(root);
  free(dataset);
  (void)f;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(arrow_lengths_that_overflow_are_refused),
      cmocka_unit_test(arrow_null_children_are_refused),
      cmocka_unit_test(arrow_unaligned_buffers_are_refused),
      cmocka_unit_test(null_handles_are_refused),
      cmocka_unit_test(writer_misuse_leaves_nothing_behind),
      cmocka_unit_test(finalize_errors_name_options),
      cmocka_unit_test(huge_k_and_nprobe),
      cmocka_unit_test(exact_search_refuses_non_finite),
      cmocka_unit_test(search_after_files_removed),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
