/*
 * api_arrow.c - the shard writer's Arrow input, with arrays built by hand
 * after the C Data Interface specification: a struct of a
 * FixedSizeList<float32>[dim] and a uint64 column, or the two columns
 * apart; offsets at every level (sliced arrays), validity buffers with
 * nulls (refused) and without (NULL: accepted), wrong formats (refused,
 * naming them). What is accepted is checked by searching the finalized
 * index: IVF_FLAT at nprobe = nlist must give exactly the brute-force
 * answer over the rows meant, with their row ids.
 */
#include <math.h>
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

#define DIM 4
#define N 64
#define NLIST 4
#define JUNK 4 /* slots of junk (NaN, never read) before the data */

static void release_schema(struct ArrowSchema *s) {
  s->release = NULL;
}

static void release_array(struct ArrowArray *a) {
  a->release = NULL;
}

/* One hand-built batch: struct{v: FixedSizeList<float32>[DIM], row_id:
 * uint64} over buffers that start with JUNK slots of junk, so that every
 * offset that is not honoured reads a NaN (refused) or a wrong id. */
typedef struct {
  float values[(JUNK + N) * DIM];
  uint64_t ids[JUNK + N];
  struct ArrowSchema st, vec, val, id, *st_children[2], *vec_children[1];
  struct ArrowArray a_st, a_vec, a_val, a_id, *a_st_children[2], *a_vec_children[1];
  const void *b_st[1], *b_vec[1], *b_val[2], *b_id[2];
} batch;

static void schema(struct ArrowSchema *s, const char *format, const char *name,
                   int64_t n_children, struct ArrowSchema **children) {
  *s = (struct ArrowSchema){.format = format,
                            .name = name,
                            .flags = ARROW_FLAG_NULLABLE,
                            .n_children = n_children,
                            .children = children,
                            .release = release_schema};
}

static void array(struct ArrowArray *a, int64_t length, int64_t offset, int64_t n_buffers,
                  const void **buffers, int64_t n_children,
                  struct ArrowArray **children) {
  *a = (struct ArrowArray){.length = length,
                           .offset = offset,
                           .n_buffers = n_buffers,
                           .buffers = buffers,
                           .n_children = n_children,
                           .children = children,
                           .release = release_array};
}

/* The batch of rows x[0..N) with row ids ids[0..N) after JUNK slots of
 * junk: the row id array and the list array start at offset JUNK, except
 * that the list's offset and its child's compose (slot s of the list is
 * elements [s * DIM, (s + 1) * DIM) of the child, counted from the child's
 * own offset), so the list starts at JUNK - 2 and its child at 2 vectors.
 * The struct's offset is 0. */
static batch *make_batch(const float *x, const uint64_t *ids) {
  batch *b = calloc(1, sizeof *b);
  assert_non_null(b);
  for (int i = 0; i < JUNK * DIM; i++) b->values[i] = NAN;
  memcpy(b->values + JUNK * DIM, x, sizeof(float) * N * DIM);
  for (int i = 0; i < JUNK; i++) b->ids[i] = UINT64_MAX - (uint64_t)i;
  memcpy(b->ids + JUNK, ids, sizeof(uint64_t) * N);
  b->vec_children[0] = &b->val;
  b->st_children[0] = &b->vec;
  b->st_children[1] = &b->id;
  schema(&b->val, "f", "item", 0, NULL);
  schema(&b->vec, "+w:4", "v", 1, b->vec_children);
  schema(&b->id, "L", "row_id", 0, NULL);
  schema(&b->st, "+s", "", 2, b->st_children);
  b->b_val[1] = b->values;
  b->b_id[1] = b->ids;
  b->a_vec_children[0] = &b->a_val;
  b->a_st_children[0] = &b->a_vec;
  b->a_st_children[1] = &b->a_id;
  array(&b->a_val, (JUNK - 2 + N) * DIM, 2 * DIM, 2, b->b_val, 0, NULL);
  array(&b->a_vec, N, JUNK - 2, 1, b->b_vec, 1, b->a_vec_children);
  array(&b->a_id, N, JUNK, 2, b->b_id, 0, NULL);
  array(&b->a_st, N, 0, 1, b->b_st, 2, b->a_st_children);
  return b;
}

typedef struct {
  float *x;
  uint64_t *ids;
  char *dataset, *root;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->x = af_vectors(N, DIM, 4, 21);
  f->ids = af_row_ids(N, 16, 0); /* fragments 0-3 of 16 rows */
  sf_options *t = af_options("nlist=4", NULL);
  af_staged_dataset("api_arrow", "job", f->x, N, DIM, t, &f->dataset, &f->root);
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

static sf_shard_writer *writer(const fixture *f) {
  sf_error err = {0};
  sf_shard_writer *w = NULL;
  assert_int_equal(sf_shard_writer_open(f->root, "w", "0-3", NULL, &w, &err), 0);
  return w;
}

/* Finishes w, finalizes the job and checks the index holds exactly rows
 * [first, first + n) of the fixture with their row ids. */
static void assert_index_holds(const fixture *f, sf_shard_writer *w, int first, int n) {
  sf_error err = {0};
  assert_int_equal(sf_shard_writer_rows(w), n);
  assert_int_equal(sf_shard_writer_finish(w, &err), 0);
  sf_shard_writer_free(w);
  int rc = sf_index_finalize(f->dataset, "idx", "v", "job", NULL, NULL, &err);
  if (rc) fail_msg("finalize: %s", err.message);
  sf_index *ix = NULL;
  assert_int_equal(sf_index_open(f->dataset, "idx", &ix, &err), 0);
  assert_int_equal(sf_index_num_rows(ix), n);
  /* Every row of the fixture is a query; the answer over the index must
   * be brute force over the rows meant. */
  uint64_t got[N * 3], want[N * 3];
  float gd[N * 3], wd[N * 3];
  assert_int_equal(sf_index_search(ix, f->x, N, DIM, 3, NLIST, got, gd, &err), 0);
  assert_int_equal(sf_exact_search(f->x + first * DIM, f->ids + first, (uint64_t)n, f->x,
                                   N, DIM, "L2", 3, want, wd, &err),
                   0);
  for (int i = 0; i < N * 3; i++) {
    assert_int_equal(got[i], want[i]);
    assert_true(gd[i] == wd[i]);
  }
  sf_index_close(ix);
}

static void a_struct_array_adds_its_rows(void **state) {
  fixture *f = *state;
  batch *b = make_batch(f->x, f->ids);
  sf_error err = {0};
  sf_shard_writer *w = writer(f);
  /* No validity buffers at all (NULL): no nulls, as the specification says. */
  int rc = sf_shard_writer_add_arrow(w, &b->st, &b->a_st, NULL, NULL, &err);
  if (rc) fail_msg("add_arrow: %s", err.message);
  /* The caller still owns the arrays: nothing was released. */
  assert_non_null(b->a_st.release);
  assert_non_null(b->st.release);
  assert_index_holds(f, w, 0, N);
  free(b);
}

static void offsets_are_honoured_at_every_level(void **state) {
  fixture *f = *state;
  batch *b = make_batch(f->x, f->ids);
  sf_error err = {0};
  /* Slice rows [5, 25): the struct from 3 with the vector child 2 slots
   * further and the row id child 2 slots further, as a slice of a slice
   * leaves them; validity buffers whose only nulls lie outside the slice. */
  static const uint8_t vec_valid[(JUNK + N + 7) / 8 + 1] = {
      0xff & ~(1u << (JUNK - 2 + 0)) & ~(1u << (JUNK - 2 + 1)),
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff};
  b->a_st.offset = 3;
  b->a_st.length = 20;
  b->a_vec.offset = JUNK - 2 + 2;
  b->a_vec.length = N - 2;
  b->a_vec.null_count = 2;
  b->b_vec[0] = vec_valid;
  b->a_id.offset = JUNK + 2;
  b->a_id.length = N - 2;
  sf_shard_writer *w = writer(f);
  int rc = sf_shard_writer_add_arrow(w, &b->st, &b->a_st, "v", "row_id", &err);
  if (rc) fail_msg("add_arrow: %s", err.message);
  assert_index_holds(f, w, 5, 20);
  free(b);
}

static void two_sliced_columns_add_their_rows(void **state) {
  fixture *f = *state;
  batch *b = make_batch(f->x, f->ids);
  sf_error err = {0};
  /* Rows [7, 17) of both columns, each slice taken on its own. */
  b->a_vec.offset = JUNK - 2 + 7;
  b->a_vec.length = 10;
  b->a_id.offset = JUNK + 7;
  b->a_id.length = 10;
  sf_shard_writer *w = writer(f);
  int rc =
      sf_shard_writer_add_arrow_columns(w, &b->vec, &b->a_vec, &b->id, &b->a_id, &err);
  if (rc) fail_msg("add_arrow_columns: %s", err.message);
  assert_index_holds(f, w, 7, 10);
  free(b);
}

/* Adds b and expects `want` with `needle` in the message, nothing added. */
static void refused(const fixture *f, batch *b, int want, const char *needle) {
  sf_error err = {0};
  sf_shard_writer *w = writer(f);
  af_assert_fails(sf_shard_writer_add_arrow(w, &b->st, &b->a_st, NULL, NULL, &err), &err,
                  want, needle);
  assert_int_equal(sf_shard_writer_rows(w), 0);
  sf_shard_writer_free(w);
}

static void nulls_are_refused_naming_the_column_and_row(void **state) {
  fixture *f = *state;
  batch *b = make_batch(f->x, f->ids);
  uint8_t bits[(JUNK * DIM + N * DIM + 7) / 8];
  /* A null row id at row 9. */
  memset(bits, 0xff, sizeof bits);
  bits[(JUNK + 9) / 8] &= (uint8_t) ~(1u << ((JUNK + 9) % 8));
  b->b_id[0] = bits;
  b->a_id.null_count = 1;
  refused(f, b, SF_STATUS_INVALID, "column 'row_id' is null at row 9");
  /* null_count -1 ("not computed") reads the bitmap as well. */
  b->a_id.null_count = -1;
  refused(f, b, SF_STATUS_INVALID, "column 'row_id' is null at row 9");
  b->b_id[0] = NULL;
  b->a_id.null_count = 0;
  /* A null vector at row 9. */
  memset(bits, 0xff, sizeof bits);
  bits[(JUNK - 2 + 9) / 8] &= (uint8_t) ~(1u << ((JUNK - 2 + 9) % 8));
  b->b_vec[0] = bits;
  b->a_vec.null_count = 1;
  refused(f, b, SF_STATUS_INVALID, "column 'v' is null at row 9");
  b->b_vec[0] = NULL;
  b->a_vec.null_count = 0;
  /* A null element: row 2, element 3. */
  memset(bits, 0xff, sizeof bits);
  int e = 2 * DIM + (JUNK - 2 + 2) * DIM + 3;
  bits[e / 8] &= (uint8_t) ~(1u << (e % 8));
  b->b_val[0] = bits;
  b->a_val.null_count = 1;
  refused(f, b, SF_STATUS_INVALID, "column 'v' has a null element at row 2, element 3");
  b->b_val[0] = NULL;
  b->a_val.null_count = 0;
  /* A null struct row: row 0. */
  memset(bits, 0xff, sizeof bits);
  bits[0] = 0xfe;
  b->b_st[0] = bits;
  b->a_st.null_count = 1;
  refused(f, b, SF_STATUS_INVALID, "struct is null at row 0");
  free(b);
}

static void wrong_formats_are_refused_naming_them(void **state) {
  fixture *f = *state;
  batch *b = make_batch(f->x, f->ids);
  sf_error err = {0};
  b->val.format = "g"; /* float64 */
  refused(f, b, SF_STATUS_INVALID, "format '+w:4' of 'g'; vectors must be");
  b->val.format = "f";
  b->id.format = "l"; /* int64 */
  refused(f, b, SF_STATUS_INVALID, "no row id column");
  sf_shard_writer *w = writer(f);
  af_assert_fails(sf_shard_writer_add_arrow(w, &b->st, &b->a_st, "v", "row_id", &err),
                  &err, SF_STATUS_INVALID,
                  "column 'row_id' has format 'l'; row ids must be uint64");
  af_assert_fails(sf_shard_writer_add_arrow(w, &b->st, &b->a_st, "v", "rowid", &err),
                  &err, SF_STATUS_INVALID, "no field 'rowid'");
  sf_shard_writer_free(w);
  b->id.format = "L";
  b->vec.format = "+l"; /* a variable-size list */
  refused(f, b, SF_STATUS_INVALID, "no vector column");
  b->vec.format = "+w:8"; /* another dimension than the quantizer's 4 */
  b->a_vec.offset = 0;
  b->a_vec.length = N / 2 - 2;
  b->a_val.length = (N / 2 - 2) * 8;
  b->a_id.length = N / 2 - 2;
  b->a_st.length = N / 2 - 2;
  refused(f, b, SF_STATUS_MISMATCH, "dimension 8");
  free(b);
  b = make_batch(f->x, f->ids);
  b->st.format = "+m";
  refused(f, b, SF_STATUS_INVALID, "give a struct array");
  b->st.format = "+s";
  b->a_vec.release = NULL;
  refused(f, b, SF_STATUS_INVALID, "has been released");
  b->a_vec.release = release_array;
  b->a_val.length = (JUNK - 2 + N) * DIM - 1;
  refused(f, b, SF_STATUS_INVALID, "values for");
  b->a_val.length = (JUNK - 2 + N) * DIM;
  b->a_id.length = N - 1;
  refused(f, b, SF_STATUS_INVALID, "shorter than its parent");
  b->a_id.length = N;
  b->a_vec.n_buffers = 2;
  refused(f, b, SF_STATUS_INVALID, "has 2 buffers; its layout has 1");
  free(b);
  /* Two columns of different lengths. */
  b = make_batch(f->x, f->ids);
  b->a_id.length = N - 1;
  w = writer(f);
  af_assert_fails(
      sf_shard_writer_add_arrow_columns(w, &b->vec, &b->a_vec, &b->id, &b->a_id, &err),
      &err, SF_STATUS_INVALID, "64 rows but the row id array 63");
  assert_int_equal(sf_shard_writer_rows(w), 0);
  sf_shard_writer_free(w);
  free(b);
}

static void row_ids_outside_the_fragments_are_refused(void **state) {
  fixture *f = *state;
  batch *b = make_batch(f->x, f->ids);
  b->ids[JUNK + 30] = SF_ROW_ID(9, 1);
  refused(f, b, SF_STATUS_INVALID,
          "row 30 has row id 38654705665 (fragment 9, offset 1)");
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(a_struct_array_adds_its_rows, setup, teardown),
      cmocka_unit_test_setup_teardown(offsets_are_honoured_at_every_level, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(two_sliced_columns_add_their_rows, setup, teardown),
      cmocka_unit_test_setup_teardown(nulls_are_refused_naming_the_column_and_row, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(wrong_formats_are_refused_naming_them, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(row_ids_outside_the_fragments_are_refused, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
