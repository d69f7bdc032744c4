/* test_segfile.c - the shard/segment file format: what a writer writes a
 * reader reads back, a merge by verbatim copy yields the union of its
 * sources, and no damaged file is ever read silently or crashes the reader. */
#include <dirent.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* cmocka.h needs these before it */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/crc32c.h"
#include "core/base/fault.h"
#include "core/base/fragset.h"
#include "core/format/segfile.h"
#include "tests/le_bytes.h"
#include "tests/testutil.h"

/* ---- a deterministic data model ------------------------------------------
 * Row (fragment f, offset o) lives in partition part_of(id) and has the code
 * code_byte(id, j); partitions p with p % 7 == 3 stay empty. A file is right
 * when the sorted (partition, id) pairs read back equal the ones written and
 * every code matches. */

static uint64_t mix(uint64_t x) {
  x ^= x >> 33, x *= 0xff51afd7ed558ccdull, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}
static uint32_t part_of(sf_rowid id, uint32_t nlist) {
  uint32_t p = (uint32_t)(mix(id) % nlist);
  return p % 7 == 3 ? (p + 1) % nlist : p;
}
static uint8_t code_byte(sf_rowid id, uint32_t j) {
  return (uint8_t)mix(id * 131 + j);
}

typedef struct pair {
  uint32_t p;
  sf_rowid id;
} pair;

static int cmp_pair(const void *a, const void *b) {
  const pair *x = a, *y = b;
  if (x->p != y->p) return x->p < y->p ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

static sf_seg_params params(sf_index_type t, uint32_t dim, uint32_t nlist, uint32_t m) {
  sf_seg_params p = {
      SF_SEG_KIND_SHARD,    t, SF_L2, dim, nlist, sf_seg_code_size(t, dim, m), m,
      0x1234abcd5678ef01ull};
  return p;
}

/* Writes a shard over fragments frags[nf] (ascending) of `rows` rows each;
 * each partition's rows go out in up to three add_chunk calls. Appends the
 * written pairs to *exp (if not NULL). */
static void write_shard_of(const char *path, const sf_seg_params *sp,
                           const uint32_t *frags, uint32_t nf, uint32_t rows, pair **exp,
                           size_t *nexp) {
  const uint32_t nlist = sp->nlist, cs = sp->code_size;
  size_t total = (size_t)nf * rows;
  sf_rowid *ids = malloc((total ? total : 1) * sizeof *ids);
  uint8_t *codes = malloc((total ? total : 1) * cs);
  sf_seg_writer *w;
  sf_err err;
  assert_int_equal(sf_seg_writer_open(path, sp, &w, &err), SF_OK);
  for (uint32_t p = 0; p < nlist; p++) {
    uint32_t n = 0;
    for (uint32_t k = 0; k < nf; k++)
      for (uint32_t o = 0; o < rows; o++)
        if (part_of(SF_ROWID(frags[k], o), nlist) == p) ids[n++] = SF_ROWID(frags[k], o);
    for (uint32_t i = 0; i < n; i++)
      for (uint32_t j = 0; j < cs; j++) codes[(size_t)i * cs + j] = code_byte(ids[i], j);
    uint32_t done = 0, pieces = 1 + p % 3;
    for (uint32_t k = 0; k < pieces; k++) {
      uint32_t m = k + 1 == pieces ? n - done : n / pieces;
      assert_int_equal(
          sf_seg_writer_add_chunk(w, p, ids + done, codes + (size_t)done * cs, m, &err),
          SF_OK);
      done += m;
    }
    if (exp) {
      *exp = realloc(*exp, (*nexp + n + 1) * sizeof **exp);
      for (uint32_t i = 0; i < n; i++) (*exp)[(*nexp)++] = (pair){p, ids[i]};
    }
  }
  roaring_bitmap_t *b = roaring_bitmap_create();
  for (uint32_t k = 0; k < nf; k++) roaring_bitmap_add(b, frags[k]);
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_fragset_free(b);
  free(ids);
  free(codes);
}

/* write_shard_of over fragments [f0, f1). */
static void write_shard(const char *path, const sf_seg_params *sp, uint32_t f0,
                        uint32_t f1, uint32_t rows, pair **exp, size_t *nexp) {
  uint32_t frags[64] = {0};
  assert_true(f1 - f0 <= 64);
  for (uint32_t f = f0; f < f1; f++) frags[f - f0] = f;
  write_shard_of(path, sp, frags, f1 - f0, rows, exp, nexp);
}

/* Reads every chunk, checks codes and alignment, returns sorted pairs. */
static pair *read_all(const sf_seg_reader *r, size_t *n) {
  const sf_seg_params *sp = sf_seg_get_params(r);
  pair *v = malloc((sf_seg_num_rows(r) + 1) * sizeof *v);
  size_t k = 0;
  sf_seg_scratch *s = sf_seg_scratch_new();
  sf_err err;
  for (uint32_t p = 0; p < sp->nlist; p++) {
    uint64_t prow = 0;
    for (uint32_t c = 0; c < sf_seg_partition_num_chunks(r, p); c++) {
      sf_seg_chunk ch;
      assert_int_equal(sf_seg_read_chunk(r, p, c, s, &ch, &err), SF_OK);
      assert_int_equal((uintptr_t)ch.codes % 64, 0);
      assert_true(ch.nrows <= sf_seg_max_chunk_rows(r));
      for (uint32_t i = 0; i < ch.nrows; i++) {
        for (uint32_t j = 0; j < sp->code_size; j++)
          assert_int_equal(ch.codes[(size_t)i * sp->code_size + j],
                           code_byte(ch.ids[i], j));
        v[k++] = (pair){p, ch.ids[i]};
      }
      prow += ch.nrows;
    }
    assert_int_equal(prow, sf_seg_partition_rows(r, p));
  }
  assert_int_equal(k, sf_seg_num_rows(r));
  sf_seg_scratch_free(s);
  qsort(v, k, sizeof *v, cmp_pair);
  *n = k;
  return v;
}

static void assert_same_pairs(pair *a, size_t na, pair *b, size_t nb) {
  qsort(a, na, sizeof *a, cmp_pair);
  qsort(b, nb, sizeof *b, cmp_pair);
  assert_int_equal(na, nb);
  for (size_t i = 0; i < na; i++) { /* field by field: the struct has padding */
    assert_int_equal(a[i].p, b[i].p);
    assert_true(a[i].id == b[i].id);
  }
}

/* ---- round trips ---------------------------------------------------------- */

static void test_roundtrip_preserves_ids_and_codes_in_every_partition(void **state) {
  const char *dir = tu_tmpdir("seg_roundtrip"), *path = tu_path(dir, "a.sfs");
  sf_seg_params sp = params(SF_IVF_FLAT, 5, 37, 0); /* 20-byte codes: padding matters */
  pair *exp = NULL;
  size_t nexp = 0;
  write_shard(path, &sp, 3, 9, 200, &exp, &nexp);
  sf_seg_reader *r;
  sf_err err;
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  const sf_seg_params *gp = sf_seg_get_params(r);
  assert_true(gp->kind == sp.kind && gp->type == sp.type && gp->metric == sp.metric &&
              gp->dim == sp.dim && gp->nlist == sp.nlist &&
              gp->code_size == sp.code_size && gp->pq_m == sp.pq_m &&
              gp->quantizer_checksum == sp.quantizer_checksum);
  assert_int_equal(sf_seg_num_rows(r), 6 * 200);
  uint32_t major, minor, empty = 0;
  sf_seg_version(r, &major, &minor);
  assert_int_equal(major, SF_SEG_VERSION_MAJOR);
  for (uint32_t p = 0; p < sp.nlist; p++) {
    if (p % 7 == 3) {
      assert_int_equal(sf_seg_partition_rows(r, p), 0);
      assert_int_equal(sf_seg_partition_num_chunks(r, p), 0);
      empty++;
    }
  }
  assert_true(empty >= 5);
  roaring_bitmap_t *want = roaring_bitmap_from_range(3, 9, 1);
  assert_true(roaring_bitmap_equals(sf_seg_fragments(r), want));
  sf_fragset_free(want);
  size_t n;
  pair *got = read_all(r, &n);
  assert_same_pairs(got, n, exp, nexp);
  assert_int_equal(sf_seg_verify(r, &err), SF_OK);
  /* asking for a chunk that does not exist is an argument error */
  sf_seg_scratch *s = sf_seg_scratch_new();
  sf_seg_chunk ch;
  assert_int_equal(sf_seg_read_chunk(r, sp.nlist, 0, s, &ch, &err), SF_EINVAL);
  assert_int_equal(sf_seg_read_chunk(r, 3, 0, s, &ch, &err), SF_EINVAL); /* empty */
  assert_int_equal(sf_seg_partition_rows(r, sp.nlist), 0);
  sf_seg_scratch_free(s);
  sf_seg_close(r);
  free(got);
  free(exp);
}

static void test_a_file_with_no_rows_roundtrips(void **state) {
  const char *dir = tu_tmpdir("seg_empty"), *path = tu_path(dir, "e.sfs");
  sf_seg_params sp = params(SF_IVF_SQ, 8, 3, 0);
  write_shard(path, &sp, 0, 0, 0, NULL, NULL);
  sf_seg_reader *r;
  sf_err err;
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  assert_int_equal(sf_seg_num_rows(r), 0);
  assert_int_equal(sf_seg_partition_num_chunks(r, 2), 0);
  assert_true(roaring_bitmap_is_empty(sf_seg_fragments(r)));
  assert_int_equal(sf_seg_verify(r, &err), SF_OK);
  sf_seg_close(r);
}

static void test_a_chunk_larger_than_the_limit_is_split_on_write(void **state) {
  const char *dir = tu_tmpdir("seg_split"), *path = tu_path(dir, "s.sfs");
  sf_seg_params sp = params(SF_IVF_PQ, 16, 2, 4);
  const uint32_t n = 2 * SF_SEG_MAX_CHUNK_ROWS + 5;
  sf_rowid *ids = malloc(n * sizeof *ids);
  uint8_t *codes = malloc((size_t)n * 4);
  for (uint32_t i = 0; i < n; i++) {
    ids[i] = SF_ROWID(i / 100000, i % 100000);
    for (uint32_t j = 0; j < 4; j++) codes[i * 4 + j] = code_byte(ids[i], j);
  }
  sf_seg_writer *w;
  sf_err err;
  assert_int_equal(sf_seg_writer_open(path, &sp, &w, &err), SF_OK);
  assert_int_equal(sf_seg_writer_add_chunk(w, 1, ids, codes, n, &err), SF_OK);
  assert_int_equal(sf_seg_writer_rows(w), n);
  roaring_bitmap_t *b = roaring_bitmap_from_range(0, 3, 1);
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_seg_reader *r;
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  assert_int_equal(sf_seg_partition_num_chunks(r, 1), 3);
  assert_int_equal(sf_seg_max_chunk_rows(r), SF_SEG_MAX_CHUNK_ROWS);
  size_t got_n;
  pair *got = read_all(r, &got_n);
  assert_int_equal(got_n, n);
  for (uint32_t i = 0; i < n; i++) assert_true(got[i].id == ids[i]);
  assert_int_equal(sf_seg_verify(r, &err), SF_OK);
  sf_seg_close(r);
  sf_fragset_free(b);
  free(got);
  free(ids);
  free(codes);
}

/* ---- merge by verbatim copy ----------------------------------------------- */

static void merge_three(const char *tag) {
  const char *dir = tu_tmpdir(tag);
  char paths[3][4096], seg[4096];
  sf_seg_params sp = params(SF_IVF_SQ, 12, 23, 0);
  pair *exp = NULL;
  size_t nexp = 0;
  const uint32_t frag[4] = {0, 4, 7, 8}; /* shard i covers [frag[i], frag[i+1]) */
  sf_seg_reader *src[3];
  sf_err err;
  for (int i = 0; i < 3; i++) {
    snprintf(paths[i], sizeof paths[i], "%s",
             tu_path(dir, i == 0   ? "s0"
                          : i == 1 ? "s1"
                                   : "s2"));
    write_shard(paths[i], &sp, frag[i], frag[i + 1], 150 + 40 * i, &exp, &nexp);
    assert_int_equal(sf_seg_open(paths[i], &src[i], &err), SF_OK);
  }
  snprintf(seg, sizeof seg, "%s", tu_path(dir, "seg.sfseg"));
  sf_seg_params segp = sp;
  segp.kind = SF_SEG_KIND_SEGMENT;
  sf_seg_writer *w;
  assert_int_equal(sf_seg_writer_open(seg, &segp, &w, &err), SF_OK);
  roaring_bitmap_t *all = roaring_bitmap_create();
  for (uint32_t p = 0; p < sp.nlist; p++)
    for (int i = 0; i < 3; i++)
      assert_int_equal(sf_seg_writer_copy_partition(w, src[i], p, &err), SF_OK);
  for (int i = 0; i < 3; i++) roaring_bitmap_or_inplace(all, sf_seg_fragments(src[i]));
  assert_int_equal(sf_seg_writer_finish(w, all, &err), SF_OK);

  sf_seg_reader *r;
  assert_int_equal(sf_seg_open(seg, &r, &err), SF_OK);
  assert_int_equal(sf_seg_get_params(r)->kind, SF_SEG_KIND_SEGMENT);
  assert_true(roaring_bitmap_equals(sf_seg_fragments(r), all));
  uint64_t rows = 0;
  for (uint32_t p = 0; p < sp.nlist; p++) {
    uint32_t chunks = 0;
    for (int i = 0; i < 3; i++) chunks += sf_seg_partition_num_chunks(src[i], p);
    assert_int_equal(sf_seg_partition_num_chunks(r, p), chunks);
  }
  for (int i = 0; i < 3; i++) rows += sf_seg_num_rows(src[i]);
  assert_int_equal(sf_seg_num_rows(r), rows);
  size_t n;
  pair *got = read_all(r, &n);
  assert_same_pairs(got, n, exp, nexp);
  assert_int_equal(sf_seg_verify(r, &err), SF_OK);
  sf_seg_close(r);
  for (int i = 0; i < 3; i++) sf_seg_close(src[i]);
  sf_fragset_free(all);
  free(got);
  free(exp);
}

static void test_copy_partition_of_three_shards_yields_their_union(void **state) {
  merge_three("seg_merge");
}

static void test_copy_partition_without_copy_file_range_yields_the_same_union(
    void **state) {
  setenv("SF_FAULT", "segwrite.no_copy_file_range", 1);
  sf_fault_reload();
  merge_three("seg_merge_pwrite");
  unsetenv("SF_FAULT");
  sf_fault_reload();
}

static void test_copy_partition_refuses_a_source_with_other_parameters(void **state) {
  const char *dir = tu_tmpdir("seg_mismatch");
  sf_seg_params sp = params(SF_IVF_SQ, 8, 5, 0);
  write_shard(tu_path(dir, "a"), &sp, 0, 2, 50, NULL, NULL);
  sf_seg_reader *src;
  sf_err err;
  assert_int_equal(sf_seg_open(tu_path(dir, "a"), &src, &err), SF_OK);
  sf_seg_params other[4] = {sp, sp, sp, sp};
  other[0].quantizer_checksum ^= 1;
  other[1].metric = SF_DOT;
  other[2].nlist = 6;
  other[3].dim = other[3].code_size = 16;
  const char *field[4] = {"quantizer", "metric", "nlist", "dim"};
  for (int i = 0; i < 4; i++) {
    sf_seg_writer *w;
    other[i].kind = SF_SEG_KIND_SEGMENT;
    assert_int_equal(sf_seg_writer_open(tu_path(dir, "seg"), &other[i], &w, &err), SF_OK);
    assert_int_equal(sf_seg_writer_copy_partition(w, src, 0, &err), SF_EMISMATCH);
    assert_non_null(strstr(err.msg, field[i]));
    assert_non_null(strstr(err.msg, "/a"));
    /* the refusal changed nothing: the writer can still finish */
    roaring_bitmap_t *b = roaring_bitmap_create();
    assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
    sf_fragset_free(b);
  }
  sf_seg_close(src);
}

/* ---- joining small chunks ------------------------------------------------- */

/* Joins srcs[n] partition by partition into seg (kind SEGMENT, params of
 * srcs[0]) with opts o; the union of their bitmaps; *st the join's figures.
 * Returns the result opened. */
static sf_seg_reader *join_into(const char *seg, sf_seg_reader *const *srcs, size_t n,
                                const sf_seg_join_opts *o, sf_seg_join_stats *st) {
  sf_seg_params sp = *sf_seg_get_params(srcs[0]);
  sp.kind = SF_SEG_KIND_SEGMENT;
  sf_seg_writer *w;
  sf_err err;
  assert_int_equal(sf_seg_writer_open(seg, &sp, &w, &err), SF_OK);
  roaring_bitmap_t *all = roaring_bitmap_create();
  for (size_t k = 0; k < n; k++)
    roaring_bitmap_or_inplace(all, sf_seg_fragments(srcs[k]));
  for (uint32_t p = 0; p < sp.nlist; p++)
    if (sf_seg_writer_join_partition(w, (const sf_seg_reader *const *)srcs, n, p, o,
                                     &err))
      fail_msg("join partition %u: %s", p, err.msg);
  sf_seg_writer_join_stats(w, st);
  assert_int_equal(sf_seg_writer_finish(w, all, &err), SF_OK);
  sf_fragset_free(all);
  sf_seg_reader *r;
  assert_int_equal(sf_seg_open(seg, &r, &err), SF_OK);
  assert_int_equal(sf_seg_verify(r, &err), SF_OK);
  return r;
}

static uint64_t all_chunks(const sf_seg_reader *r) {
  uint64_t n = 0;
  for (uint32_t p = 0; p < sf_seg_get_params(r)->nlist; p++)
    n += sf_seg_partition_num_chunks(r, p);
  return n;
}

static void test_join_keeps_every_row_and_code_in_one_chunk_per_partition(void **state) {
  const char *dir = tu_tmpdir("seg_join");
  sf_seg_params sp = params(SF_IVF_SQ, 12, 23, 0);
  enum { JOBS = 8 };
  sf_seg_reader *src[JOBS];
  pair *exp = NULL;
  size_t nexp = 0;
  uint64_t chunks_in = 0, rows = 0;
  sf_err err;
  for (uint32_t j = 0; j < JOBS; j++) { /* one fragment per job, as incremental jobs */
    char name[16], path[4096];
    snprintf(name, sizeof name, "job%u", j);
    snprintf(path, sizeof path, "%s", tu_path(dir, name));
    write_shard(path, &sp, j, j + 1, 60, &exp, &nexp);
    assert_int_equal(sf_seg_open(path, &src[j], &err), SF_OK);
    chunks_in += all_chunks(src[j]);
    rows += sf_seg_num_rows(src[j]);
  }
  sf_seg_join_stats st;
  sf_seg_reader *r = join_into(tu_path(dir, "seg"), src, JOBS, NULL, &st);
  assert_int_equal(sf_seg_num_rows(r), rows);
  /* ids ascend across the jobs: each non-empty partition is one chunk */
  for (uint32_t p = 0; p < sp.nlist; p++)
    assert_int_equal(sf_seg_partition_num_chunks(r, p), sf_seg_partition_rows(r, p) > 0);
  assert_true(all_chunks(r) < chunks_in / 4);
  assert_int_equal(st.chunks_in, chunks_in);
  assert_int_equal(st.chunks_out, all_chunks(r));
  assert_int_equal(st.rows_joined, rows);
  size_t n;
  pair *got = read_all(r, &n); /* every code is its id's, byte for byte */
  assert_same_pairs(got, n, exp, nexp);
  free(got);
  free(exp);
  sf_seg_close(r);
  for (int j = 0; j < JOBS; j++) sf_seg_close(src[j]);
}

/* Adds to partition p one chunk per entry of sizes[], ids from *next on. */
static void add_chunks(sf_seg_writer *w, uint32_t p, const uint32_t *sizes, size_t n,
                       sf_rowid *next, uint32_t cs) {
  sf_rowid ids[64];
  uint8_t codes[64 * 16];
  sf_err err;
  for (size_t k = 0; k < n; k++) {
    assert_true(sizes[k] <= 64 && cs <= 16);
    for (uint32_t i = 0; i < sizes[k]; i++) {
      ids[i] = (*next)++;
      for (uint32_t j = 0; j < cs; j++) codes[i * cs + j] = code_byte(ids[i], j);
    }
    assert_int_equal(sf_seg_writer_add_chunk(w, p, ids, codes, sizes[k], &err), SF_OK);
  }
}

static void assert_chunk_rows(const sf_seg_reader *r, uint32_t p, const uint32_t *want,
                              uint32_t n) {
  assert_int_equal(sf_seg_partition_num_chunks(r, p), n);
  sf_seg_scratch *s = sf_seg_scratch_new();
  sf_err err;
  for (uint32_t c = 0; c < n; c++) {
    sf_seg_chunk ch;
    assert_int_equal(sf_seg_read_chunk(r, p, c, s, &ch, &err), SF_OK);
    assert_int_equal(ch.nrows, want[c]);
  }
  sf_seg_scratch_free(s);
}

static void test_join_starts_a_new_chunk_where_ids_fall_or_the_run_is_full(void **state) {
  const char *dir = tu_tmpdir("seg_join_runs");
  sf_seg_params sp = params(SF_IVF_PQ, 16, 2, 8);
  char xp[4096], yp[4096];
  snprintf(xp, sizeof xp, "%s", tu_path(dir, "x"));
  snprintf(yp, sizeof yp, "%s", tu_path(dir, "y"));
  sf_seg_writer *w;
  sf_err err;
  /* x (fragments 0 and 2): partition 0 holds chunks of 3, 3, 3, 3, 20 and
   * 2 rows of fragment 0; partition 1 2 rows of fragment 2. y (fragment 1):
   * partition 0 two chunks of 2 rows, above all of x's; partition 1 two
   * rows, below x's. */
  const uint32_t x0[] = {3, 3, 3, 3, 20, 2}, y0[] = {2, 2}, two[] = {2};
  sf_rowid next = SF_ROWID(0, 0);
  assert_int_equal(sf_seg_writer_open(xp, &sp, &w, &err), SF_OK);
  add_chunks(w, 0, x0, 6, &next, sp.code_size);
  next = SF_ROWID(2, 0);
  add_chunks(w, 1, two, 1, &next, sp.code_size);
  roaring_bitmap_t *b = roaring_bitmap_of(2, 0, 2);
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_fragset_free(b);
  next = SF_ROWID(1, 0);
  assert_int_equal(sf_seg_writer_open(yp, &sp, &w, &err), SF_OK);
  add_chunks(w, 0, y0, 2, &next, sp.code_size);
  next = SF_ROWID(1, 500);
  add_chunks(w, 1, two, 1, &next, sp.code_size);
  b = roaring_bitmap_of(1, 1);
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_fragset_free(b);
  sf_seg_reader *src[2];
  assert_int_equal(sf_seg_open(xp, &src[0], &err), SF_OK);
  assert_int_equal(sf_seg_open(yp, &src[1], &err), SF_OK);

  /* Runs of at most 8 rows; chunks of 4 rows or more are copied as they
   * are. Partition 0: {3,3} (a third 3 would pass 8), {3,3} ended by the
   * 20-row chunk, copied; then {2} of x and {2,2} of y. Partition 1: y's
   * ids fall below x's, so two chunks, each copied as it was. */
  sf_seg_join_opts o = {.max_rows = 8, .min_rows = 4};
  sf_seg_join_stats st;
  sf_seg_reader *r = join_into(tu_path(dir, "seg"), src, 2, &o, &st);
  const uint32_t want0[] = {6, 6, 20, 6}, want1[] = {2, 2};
  assert_chunk_rows(r, 0, want0, 4);
  assert_chunk_rows(r, 1, want1, 2);
  assert_int_equal(st.chunks_in, 10);
  assert_int_equal(st.chunks_out, 6);
  assert_int_equal(st.chunks_joined, 7);
  assert_int_equal(st.rows_joined, 18);
  size_t n;
  pair *got = read_all(r, &n);
  assert_int_equal(n, 42);
  free(got);
  sf_seg_close(r);

  /* Defaults: everything below 256 rows joins; partition 0 is one chunk. */
  r = join_into(tu_path(dir, "seg2"), src, 2, NULL, &st);
  const uint32_t all0[] = {38};
  assert_chunk_rows(r, 0, all0, 1);
  assert_chunk_rows(r, 1, want1, 2);
  sf_seg_close(r);
  for (int i = 0; i < 2; i++) sf_seg_close(src[i]);
}

static void test_join_of_interleaved_inputs_keeps_every_row(void **state) {
  const char *dir = tu_tmpdir("seg_join_interleaved");
  sf_seg_params sp = params(SF_IVF_FLAT, 3, 5, 0);
  const uint32_t fa[] = {0, 2, 4}, fb[] = {1, 3, 5};
  char ap[4096], bp[4096];
  snprintf(ap, sizeof ap, "%s", tu_path(dir, "a"));
  snprintf(bp, sizeof bp, "%s", tu_path(dir, "b"));
  pair *exp = NULL;
  size_t nexp = 0;
  write_shard_of(ap, &sp, fa, 3, 30, &exp, &nexp);
  write_shard_of(bp, &sp, fb, 3, 30, &exp, &nexp);
  sf_seg_reader *src[2];
  sf_err err;
  assert_int_equal(sf_seg_open(ap, &src[0], &err), SF_OK);
  assert_int_equal(sf_seg_open(bp, &src[1], &err), SF_OK);
  sf_seg_join_stats st;
  sf_seg_reader *r = join_into(tu_path(dir, "seg"), src, 2, NULL, &st);
  /* b's first id (fragment 1) is below a's last (fragment 4): a new chunk */
  for (uint32_t p = 0; p < sp.nlist; p++)
    assert_int_equal(
        sf_seg_partition_num_chunks(r, p),
        (sf_seg_partition_rows(src[0], p) > 0) + (sf_seg_partition_rows(src[1], p) > 0));
  size_t n;
  pair *got = read_all(r, &n);
  assert_same_pairs(got, n, exp, nexp);
  free(got);
  free(exp);
  sf_seg_close(r);
  for (int i = 0; i < 2; i++) sf_seg_close(src[i]);
}

static void test_join_refuses_a_corrupt_block_naming_the_file_and_goes_on(void **state) {
  const char *dir = tu_tmpdir("seg_join_corrupt");
  sf_seg_params sp = params(SF_IVF_SQ, 8, 5, 0);
  char ap[4096], bp[4096], seg[4096];
  snprintf(ap, sizeof ap, "%s", tu_path(dir, "a"));
  snprintf(bp, sizeof bp, "%s", tu_path(dir, "b"));
  snprintf(seg, sizeof seg, "%s", tu_path(dir, "seg"));
  write_shard(ap, &sp, 0, 1, 40, NULL, NULL);
  write_shard(bp, &sp, 1, 2, 40, NULL, NULL);
  /* b's first code byte: partition 0's first chunk starts at 64 */
  tu_flip_byte(bp, 64, 0x10);
  sf_seg_reader *src[2], *meta;
  sf_err err;
  assert_int_equal(sf_seg_open(ap, &src[0], &err), SF_OK);
  assert_int_equal(sf_seg_open(bp, &src[1], &err), SF_OK); /* blocks: checked on read */
  assert_true(sf_seg_partition_rows(src[1], 0) > 0);
  sf_seg_params segp = sp;
  segp.kind = SF_SEG_KIND_SEGMENT;
  sf_seg_writer *w;
  assert_int_equal(sf_seg_writer_open(seg, &segp, &w, &err), SF_OK);
  const sf_seg_reader *const *in = (const sf_seg_reader *const *)src;
  assert_int_equal(sf_seg_writer_join_partition(w, in, 2, 0, NULL, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, bp));
  assert_non_null(strstr(err.msg, "CRC32C"));
  /* a source opened for its metadata only cannot be joined */
  assert_int_equal(sf_seg_open_meta(ap, &meta, &err), SF_OK);
  assert_int_equal(sf_seg_writer_join_partition(w, (const sf_seg_reader *const *)&meta, 1,
                                                0, NULL, &err),
                   SF_EINVAL);
  assert_non_null(strstr(err.msg, "metadata only"));
  sf_seg_close(meta);
  /* the refusals wrote nothing: the writer goes on without b */
  assert_int_equal(sf_seg_writer_join_partition(w, in, 1, 0, NULL, &err), SF_OK);
  roaring_bitmap_t *b = roaring_bitmap_of(1, 0);
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_fragset_free(b);
  sf_seg_reader *r;
  assert_int_equal(sf_seg_open(seg, &r, &err), SF_OK);
  assert_int_equal(sf_seg_verify(r, &err), SF_OK);
  assert_int_equal(sf_seg_num_rows(r), sf_seg_partition_rows(src[0], 0));
  sf_seg_close(r);
  for (int i = 0; i < 2; i++) sf_seg_close(src[i]);
}

/* ---- writer contract ------------------------------------------------------ */

static size_t count_entries(const char *dir) {
  return tu_count_entries(dir, NULL, 0);
}

static void test_writer_rejects_bad_order_and_unsorted_ids_but_stays_usable(
    void **state) {
  const char *dir = tu_tmpdir("seg_order"), *path = tu_path(dir, "o.sfs");
  sf_seg_params sp = params(SF_IVF_SQ, 4, 4, 0);
  sf_seg_writer *w;
  sf_err err;
  assert_int_equal(sf_seg_writer_open(path, &sp, &w, &err), SF_OK);
  sf_rowid ids[3] = {5, 9, 12}, bad[3] = {5, 5, 6};
  uint8_t codes[12] = {0};
  assert_int_equal(sf_seg_writer_add_chunk(w, 2, ids, codes, 3, &err), SF_OK);
  assert_int_equal(sf_seg_writer_add_chunk(w, 1, ids, codes, 3, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "must not decrease"));
  assert_int_equal(sf_seg_writer_add_chunk(w, 4, ids, codes, 3, &err), SF_EINVAL);
  assert_int_equal(sf_seg_writer_add_chunk(w, 3, bad, codes, 3, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "ascending"));
  assert_int_equal(sf_seg_writer_add_chunk(w, 3, ids, codes, 3, &err), SF_OK);
  roaring_bitmap_t *b = roaring_bitmap_from_range(0, 1, 1);
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_fragset_free(b);
  sf_seg_reader *r;
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  assert_int_equal(sf_seg_num_rows(r), 6);
  sf_seg_close(r);
}

static void test_abort_and_failed_finish_leave_nothing_behind(void **state) {
  const char *dir = tu_tmpdir("seg_abort");
  char d[4096];
  snprintf(d, sizeof d, "%s", dir);
  sf_seg_params sp = params(SF_IVF_SQ, 4, 4, 0);
  sf_seg_writer *w;
  sf_err err;
  sf_rowid ids[1] = {1};
  uint8_t codes[4] = {1, 2, 3, 4};
  assert_int_equal(sf_seg_writer_open(tu_path(d, "x"), &sp, &w, &err), SF_OK);
  assert_int_equal(sf_seg_writer_add_chunk(w, 0, ids, codes, 1, &err), SF_OK);
  sf_seg_writer_abort(w);
  sf_seg_writer_abort(NULL);
  assert_int_equal(count_entries(d), 0);
  assert_int_equal(sf_seg_writer_open(tu_path(d, "x"), &sp, &w, &err), SF_OK);
  assert_int_equal(sf_seg_writer_finish(w, NULL, &err), SF_EINVAL);
  assert_int_equal(count_entries(d), 0);
}

static void test_writer_refuses_inconsistent_parameters(void **state) {
  const char *dir = tu_tmpdir("seg_params");
  sf_seg_params bad[5];
  for (int i = 0; i < 5; i++) bad[i] = params(SF_IVF_PQ, 16, 4, 4);
  bad[0].code_size = 5; /* PQ code size is m */
  bad[1].pq_m = 3;      /* does not divide dim */
  bad[2].nlist = SF_MAX_NLIST + 1;
  bad[3].dim = 0;
  bad[4].kind = (sf_seg_kind)7;
  for (int i = 0; i < 5; i++) {
    sf_seg_writer *w = (sf_seg_writer *)&w;
    sf_err err;
    assert_int_equal(sf_seg_writer_open(tu_path(dir, "p"), &bad[i], &w, &err), SF_EINVAL);
    assert_null(w);
    /* the code, not the message, is what callers without an sf_err get */
    assert_int_equal(sf_seg_writer_open(tu_path(dir, "p"), &bad[i], &w, NULL), SF_EINVAL);
  }
}

/* ---- concurrency ---------------------------------------------------------- */

typedef struct reader_job {
  const sf_seg_reader *r;
  uint64_t sum;
  int failures;
} reader_job;

static void *read_everything(void *arg) {
  reader_job *j = arg;
  sf_seg_scratch *s = sf_seg_scratch_new();
  for (int round = 0; round < 5; round++)
    for (uint32_t p = 0; p < sf_seg_get_params(j->r)->nlist; p++)
      for (uint32_t c = 0; c < sf_seg_partition_num_chunks(j->r, p); c++) {
        sf_seg_chunk ch;
        if (sf_seg_read_chunk(j->r, p, c, s, &ch, NULL)) {
          j->failures++;
          continue;
        }
        for (uint32_t i = 0; i < ch.nrows; i++) j->sum += ch.ids[i] ^ ch.codes[i];
      }
  sf_seg_scratch_free(s);
  return NULL;
}

static void test_threads_share_one_reader_with_their_own_scratch(void **state) {
  const char *dir = tu_tmpdir("seg_threads"), *path = tu_path(dir, "t.sfs");
  sf_seg_params sp = params(SF_IVF_SQ, 8, 16, 0);
  write_shard(path, &sp, 0, 4, 500, NULL, NULL);
  sf_seg_reader *r;
  sf_err err;
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  reader_job jobs[4] = {{r, 0, 0}, {r, 0, 0}, {r, 0, 0}, {r, 0, 0}};
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, read_everything, &jobs[i]);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(jobs[i].failures, 0);
    assert_true(jobs[i].sum == jobs[0].sum);
  }
  sf_seg_close(r);
}

/* ---- damage -----------------------------------------------------------------
 * Every byte of a file is covered by a CRC (header, footer, directory and
 * bitmap at open; data blocks when read) or must be zero padding (checked by
 * verify). So any flipped byte must give an error, and a count or offset made
 * huge behind a recomputed CRC must be stopped by its bound. */

/* Recomputes the header CRC, then the bitmap, directory and footer CRCs,
 * where the (possibly edited) footer still points inside the buffer. */
static void recrc(uint8_t *b, size_t n) {
  le_put32(b + 60, sf_crc32c(0, b, 60));
  uint8_t *f = b + n - 64;
  uint64_t boff = le_get64(f), blen = le_get64(f + 8), doff = le_get64(f + 16),
           dlen = le_get64(f + 24);
  if (boff <= n && blen <= n - boff) le_put32(f + 48, sf_crc32c(0, b + boff, blen));
  if (doff <= n && dlen <= n - doff) le_put32(f + 52, sf_crc32c(0, b + doff, dlen));
  le_put32(f + 60, sf_crc32c(0, f, 60));
}

/* Offsets inside a pristine small file. */
typedef struct layout {
  size_t bitmap_off, dir_off, chunk_tab;
  uint32_t nlist, code_size;
} layout;

static layout layout_of(const uint8_t *b, size_t n) {
  layout l;
  l.nlist = le_get32(b + 24);
  l.code_size = le_get32(b + 28);
  l.bitmap_off = le_get64(b + n - 64);
  l.dir_off = le_get64(b + n - 64 + 16);
  l.chunk_tab = l.dir_off + 16 + 4 * (size_t)l.nlist;
  return l;
}

/* A small shard: IVF_SQ dim 4, 4 partitions (3 is empty), 2 fragments. */
static const char *small_file(const char *tag) {
  static char path[4096];
  snprintf(path, sizeof path, "%s", tu_path(tu_tmpdir(tag), "small.sfs"));
  sf_seg_params sp = params(SF_IVF_SQ, 4, 4, 0);
  write_shard(path, &sp, 0, 2, 6, NULL, NULL);
  return path;
}

/* sf_seg_open, after checking that sf_seg_open_meta (pread, no mapping)
 * judges the file the same: the same code and the same message. */
static sf_code open_both(const char *path, sf_seg_reader **r, sf_err *err) {
  sf_seg_reader *m = NULL;
  sf_err merr = {0};
  sf_code mrc = sf_seg_open_meta(path, &m, &merr);
  sf_code rc = sf_seg_open(path, r, err);
  if (mrc != rc)
    fail_msg("%s: sf_seg_open says %s (%s) but sf_seg_open_meta %s (%s)", path,
             sf_code_name(rc), rc ? err->msg : "", sf_code_name(mrc),
             mrc ? merr.msg : "");
  if (rc && strcmp(err->msg, merr.msg))
    fail_msg("messages differ:\n  map:  %s\n  meta: %s", err->msg, merr.msg);
  if (!rc) {
    assert_int_equal(sf_seg_num_rows(m), sf_seg_num_rows(*r));
    assert_true(roaring_bitmap_equals(sf_seg_fragments(m), sf_seg_fragments(*r)));
  }
  sf_seg_close(m);
  return rc;
}

/* Opens, verifies and closes; *at_open tells where it failed. */
static sf_code open_and_verify(const char *path, sf_err *err, int *at_open) {
  sf_seg_reader *r;
  sf_code rc = open_both(path, &r, err);
  *at_open = rc != SF_OK;
  if (rc) return rc;
  rc = sf_seg_verify(r, err);
  sf_seg_close(r);
  return rc;
}

static void test_a_flipped_byte_at_every_offset_is_caught_and_names_the_file(
    void **state) {
  const char *path = small_file("seg_flip");
  size_t n;
  uint8_t *orig = tu_read_file(path, &n), *b = malloc(n);
  const layout l = layout_of(orig, n);
  size_t at_open = 0, at_verify = 0;
  for (size_t off = 0; off < n; off++) {
    for (int k = 0; k < 2; k++) {
      memcpy(b, orig, n);
      b[off] ^= k ? 0x80 : 0x01;
      tu_write_file(path, b, n);
      sf_err err;
      int failed_at_open;
      sf_code rc = open_and_verify(path, &err, &failed_at_open);
      if (rc == SF_OK) fail_msg("flipping byte %zu (of %zu) went unnoticed", off, n);
      if (rc != SF_ECORRUPT && rc != SF_EFORMAT)
        fail_msg("byte %zu: unexpected %s: %s", off, sf_code_name(rc), err.msg);
      if (!strstr(err.msg, "small.sfs"))
        fail_msg("byte %zu: message '%s' lacks the file", off, err.msg);
      if (failed_at_open) {
        at_open++;
      } else {
        /* only data bytes may get past open */
        assert_true(off >= 64 && off < l.bitmap_off);
        at_verify++;
      }
    }
  }
  assert_true(at_open > 0 && at_verify > 0);
  print_message("%zu flips of a %zu-byte file: %zu caught at open, %zu by verify\n",
                2 * n, n, at_open, at_verify);
  free(orig);
  free(b);
}

/* What verify refuses, a merge must refuse too: a flipped byte anywhere in
 * the data region of a source - chunk blocks or the zero padding between
 * partitions, which no copy carries over - fails the copy or the join of
 * the whole file, naming the file, so that compaction never swaps out (and
 * gc never deletes) a damaged segment as if it were sound. */
static void test_a_flipped_data_byte_fails_every_merge_of_the_file(void **state) {
  const char *path = small_file("seg_flip_merge");
  char out[4096];
  snprintf(out, sizeof out, "%s", tu_path(tu_tmpdir("seg_flip_merge"), "out.sfseg"));
  size_t n;
  uint8_t *orig = tu_read_file(path, &n), *b = malloc(n);
  const layout l = layout_of(orig, n);
  for (int join = 0; join < 2; join++) {
    for (size_t off = 64; off < l.bitmap_off; off++) {
      memcpy(b, orig, n);
      b[off] ^= 0x01;
      tu_write_file(path, b, n);
      sf_seg_reader *src;
      sf_err err;
      assert_int_equal(sf_seg_open(path, &src, &err), SF_OK); /* blocks: checked later */
      sf_seg_params sp = *sf_seg_get_params(src);
      sp.kind = SF_SEG_KIND_SEGMENT;
      sf_seg_writer *w;
      assert_int_equal(sf_seg_writer_open(out, &sp, &w, &err), SF_OK);
      sf_code rc = SF_OK;
      for (uint32_t p = 0; p < sp.nlist && !rc; p++)
        rc = join ? sf_seg_writer_join_partition(w, (const sf_seg_reader *const *)&src, 1,
                                                 p, NULL, &err)
                  : sf_seg_writer_copy_partition(w, src, p, &err);
      if (rc == SF_OK)
        fail_msg("%s: flipping data byte %zu (of %zu) went unnoticed",
                 join ? "join" : "copy", off, n);
      assert_int_equal(rc, SF_ECORRUPT);
      if (!strstr(err.msg, "small.sfs"))
        fail_msg("byte %zu: message '%s' lacks the file", off, err.msg);
      sf_seg_writer_abort(w);
      sf_seg_close(src);
    }
  }
  tu_write_file(path, orig, n);
  free(orig);
  free(b);
}

static void test_a_truncated_or_extended_file_is_rejected_at_open(void **state) {
  const char *path = small_file("seg_trunc");
  size_t n;
  uint8_t *orig = tu_read_file(path, &n);
  for (size_t len = 0; len < n; len++) {
    tu_write_file(path, orig, len);
    sf_seg_reader *r = NULL;
    sf_err err;
    sf_code rc = open_both(path, &r, &err);
    if (rc == SF_OK) fail_msg("a file cut to %zu of %zu bytes opened", len, n);
    assert_int_equal(rc, len < 8 ? SF_EFORMAT : SF_ECORRUPT);
    assert_non_null(strstr(err.msg, "small.sfs"));
    assert_null(r);
  }
  uint8_t *longer = calloc(1, n + 64);
  memcpy(longer, orig, n);
  for (size_t extra = 1; extra <= 64; extra += 63) {
    tu_write_file(path, longer, n + extra);
    sf_seg_reader *r;
    sf_err err;
    assert_int_equal(open_both(path, &r, &err), SF_ECORRUPT);
  }
  free(longer);
  free(orig);
}

typedef struct edit {
  const char *name;
  int where; /* 0 header, 1 footer, 2 directory head, 3 partition 0, 4 chunk 0 */
  size_t at;
  int width; /* 4 or 8 */
  uint64_t value;
  const char *expect; /* a phrase of the message */
} edit;

static void test_a_huge_count_behind_a_valid_crc_is_stopped_by_its_bound(void **state) {
  const char *path = small_file("seg_huge");
  size_t n;
  uint8_t *orig = tu_read_file(path, &n), *b = malloc(n);
  const layout l = layout_of(orig, n);
  const edit edits[] = {
      {"nlist", 0, 24, 4, UINT32_MAX, "nlist"},
      {"nlist at the limit", 0, 24, 4, SF_MAX_NLIST, "directory lists"},
      {"dim", 0, 20, 4, 1u << 31, "dim"},
      {"code_size", 0, 28, 4, UINT32_MAX, "code_size"},
      {"rows", 0, 48, 8, UINT64_MAX, "footer says"},
      {"bitmap length", 1, 8, 8, UINT64_MAX, "do not fit"},
      {"bitmap offset", 1, 0, 8, UINT64_MAX - 8, "do not fit"},
      {"directory length", 1, 24, 8, 1ull << 62, "do not fit"},
      {"file size", 1, 40, 8, UINT64_MAX, "footer says"},
      {"chunk count", 2, 8, 8, 1ull << 60, "cannot hold"},
      {"partition chunks", 3, 0, 4, UINT32_MAX, "claims"},
      {"chunk rows", 4, 8, 4, UINT32_MAX, "rows (must be"},
      {"chunk id bytes", 4, 12, 4, UINT32_MAX, "runs past"},
      {"chunk offset", 4, 0, 8, UINT64_MAX - 63, "runs past"},
      {"chunk offset", 4, 0, 8, 65, "misaligned"},
  };
  for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
    const edit *e = &edits[i];
    memcpy(b, orig, n);
    size_t base = e->where == 0   ? 0
                  : e->where == 1 ? n - 64
                  : e->where == 2 ? l.dir_off
                  : e->where == 3 ? l.dir_off + 16
                                  : l.chunk_tab;
    if (e->width == 4)
      le_put32(b + base + e->at, (uint32_t)e->value);
    else
      le_put64(b + base + e->at, e->value);
    recrc(b, n);
    tu_write_file(path, b, n);
    sf_seg_reader *r = NULL;
    sf_err err;
    sf_code rc = open_both(path, &r, &err);
    if (rc != SF_ECORRUPT)
      fail_msg("%s: got %s (%s)", e->name, sf_code_name(rc), err.msg);
    if (!strstr(err.msg, e->expect) || !strstr(err.msg, "small.sfs"))
      fail_msg("%s: message '%s' lacks '%s'", e->name, err.msg, e->expect);
    assert_null(r);
  }
  free(orig);
  free(b);
}

/* The zstd frame header's content size is checked against what the rows can
 * take before anything is decompressed, and must match what decompresses. */
static void test_a_row_id_frame_that_lies_about_its_size_is_rejected(void **state) {
  const char *path = small_file("seg_zstd");
  size_t n;
  uint8_t *orig = tu_read_file(path, &n), *b = malloc(n);
  const layout l = layout_of(orig, n);
  const uint8_t *e = orig + l.chunk_tab;
  const uint64_t off = le_get64(e);
  const uint32_t rows = le_get32(e + 8);
  const size_t blk = off + (size_t)rows * l.code_size;
  /* single-segment frame, 1-byte content size right after the descriptor */
  assert_int_equal(le_get32(orig + blk), 0xFD2FB528u);
  assert_int_equal(orig[blk + 4] & 0xE3, 0x20);
  const uint8_t sizes[3] = {255, (uint8_t)(rows - 1), (uint8_t)(orig[blk + 5] + 1)};
  const char *expect[3] = {"declares", "declares", "does not decompress"};
  for (int i = 0; i < 3; i++) {
    memcpy(b, orig, n);
    b[blk + 5] = sizes[i];
    le_put32(b + l.chunk_tab + 20, sf_crc32c(0, b + blk, le_get32(e + 12)));
    recrc(b, n);
    tu_write_file(path, b, n);
    sf_seg_reader *r;
    sf_err err;
    assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
    assert_int_equal(sf_seg_verify(r, &err), SF_ECORRUPT);
    if (!strstr(err.msg, expect[i])) fail_msg("size %u: '%s'", sizes[i], err.msg);
    assert_non_null(strstr(err.msg, "partition 0 chunk 0"));
    sf_seg_close(r);
  }
  free(orig);
  free(b);
}

static void test_another_kind_of_file_or_version_is_a_format_error(void **state) {
  const char *path = small_file("seg_format");
  size_t n;
  uint8_t *orig = tu_read_file(path, &n), *b = malloc(n);
  sf_seg_reader *r;
  sf_err err;
  tu_write_file(path, "{\"not\": \"a shard\"}\n", 19);
  assert_int_equal(open_both(path, &r, &err), SF_EFORMAT);
  assert_non_null(strstr(err.msg, "not a segforge shard or segment file"));
  memcpy(b, orig, n);
  b[8] = 2; /* major version 2, CRC recomputed */
  recrc(b, n);
  tu_write_file(path, b, n);
  assert_int_equal(open_both(path, &r, &err), SF_EFORMAT);
  assert_non_null(strstr(err.msg, "version 2.0 is not supported"));
  assert_null(strstr(err.msg, "corrupt"));
  memcpy(b, orig, n);
  b[12] = 1; /* a feature flag this reader does not know */
  recrc(b, n);
  tu_write_file(path, b, n);
  assert_int_equal(open_both(path, &r, &err), SF_EFORMAT);
  assert_non_null(strstr(err.msg, "flags 0x1"));
  assert_int_equal(open_both(tu_path(tu_tmpdir("seg_none"), "missing.sfs"), &r, &err),
                   SF_ENOTFOUND);
  assert_non_null(strstr(err.msg, "missing.sfs"));
  free(orig);
  free(b);
}

static void test_verify_reports_a_row_whose_fragment_the_bitmap_lacks(void **state) {
  const char *path = tu_path(tu_tmpdir("seg_frag"), "f.sfs");
  sf_seg_params sp = params(SF_IVF_SQ, 4, 2, 0);
  sf_seg_writer *w;
  sf_err err;
  sf_rowid ids[2] = {SF_ROWID(1, 0), SF_ROWID(2, 5)};
  uint8_t codes[8] = {0};
  assert_int_equal(sf_seg_writer_open(path, &sp, &w, &err), SF_OK);
  assert_int_equal(sf_seg_writer_add_chunk(w, 1, ids, codes, 2, &err), SF_OK);
  roaring_bitmap_t *b = roaring_bitmap_from_range(0, 2, 1); /* lacks 2 */
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_fragset_free(b);
  sf_seg_reader *r;
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  assert_int_equal(sf_seg_verify(r, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "row 5 of fragment 2"));
  sf_seg_close(r);
}

/* sf_seg_open_meta on files whose bitmap and directory lie inside its first
 * read from the end, and on one where they start before it (so it reads
 * them again, and the header on its own): every getter answers as for the
 * mapped reader, chunk reads are refused, and a FIFO is refused at once. */
static void test_open_meta_answers_like_open_without_mapping(void **state) {
  const char *dir = tu_tmpdir("seg_meta");
  struct {
    const char *name;
    uint32_t nlist, frags, rows;
  } files[] = {
      {"tiny.sfs", 4, 2, 6},          /* under the window: one read */
      {"big-data.sfs", 8, 40, 200},   /* large data, small tail */
      {"big-dir.sfs", 4096, 4, 1200}, /* ~100 KiB directory: a second read */
  };
  for (size_t k = 0; k < sizeof files / sizeof files[0]; k++) {
    const char *path = tu_path(dir, files[k].name);
    sf_seg_params sp = params(SF_IVF_FLAT, 16, files[k].nlist, 0);
    write_shard(path, &sp, 0, files[k].frags, files[k].rows, NULL, NULL);
    sf_seg_reader *a, *b;
    sf_err err;
    assert_int_equal(sf_seg_open(path, &a, &err), SF_OK);
    assert_int_equal(sf_seg_open_meta(path, &b, &err), SF_OK);
    assert_memory_equal(sf_seg_get_params(a), sf_seg_get_params(b),
                        sizeof(sf_seg_params));
    assert_int_equal(sf_seg_file_bytes(a), sf_seg_file_bytes(b));
    assert_int_equal(sf_seg_num_rows(a), sf_seg_num_rows(b));
    assert_int_equal(sf_seg_max_chunk_rows(a), sf_seg_max_chunk_rows(b));
    assert_true(roaring_bitmap_equals(sf_seg_fragments(a), sf_seg_fragments(b)));
    for (uint32_t p = 0; p < files[k].nlist; p++) {
      assert_int_equal(sf_seg_partition_rows(a, p), sf_seg_partition_rows(b, p));
      assert_int_equal(sf_seg_partition_num_chunks(a, p),
                       sf_seg_partition_num_chunks(b, p));
      assert_int_equal(sf_seg_partition_bytes(a, p), sf_seg_partition_bytes(b, p));
    }
    if (k == 2) assert_true(sf_seg_file_bytes(a) > 64 * 1024);
    sf_seg_scratch *s = sf_seg_scratch_new();
    sf_seg_chunk ch;
    assert_int_equal(sf_seg_read_chunk(b, 0, 0, s, &ch, &err), SF_EINVAL);
    assert_non_null(strstr(err.msg, "metadata only"));
    assert_int_equal(sf_seg_verify(b, &err), SF_EINVAL);
    assert_int_equal(sf_seg_verify(a, &err), SF_OK);
    sf_seg_scratch_free(s);
    sf_seg_close(a);
    sf_seg_close(b);
  }
  /* Bytes flipped across the big-dir file's bitmap, directory and footer,
   * before the window and inside it, are found the same way by both
   * readers (open_both compares code and message). */
  const char *path = tu_path(dir, "big-dir.sfs");
  size_t n;
  uint8_t *orig = tu_read_file(path, &n), *b = malloc(n);
  const layout l = layout_of(orig, n);
  assert_true(l.bitmap_off < n - 64 * 1024);
  for (size_t off = l.bitmap_off; off < n; off += 997) {
    memcpy(b, orig, n);
    b[off] ^= 0x10;
    tu_write_file(path, b, n);
    sf_seg_reader *r = NULL;
    sf_err err;
    assert_int_equal(open_both(path, &r, &err), SF_ECORRUPT);
  }
  free(orig);
  free(b);
  const char *fifo = tu_path(dir, "fifo.sfs");
  assert_int_equal(mkfifo(fifo, 0600), 0);
  sf_seg_reader *r = NULL;
  sf_err err;
  assert_int_equal(sf_seg_open_meta(fifo, &r, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "not a regular file"));
  assert_null(r);
  /* The mapping reader too: its open waited for a writer of the FIFO. */
  assert_int_equal(sf_seg_open(fifo, &r, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "fifo.sfs is a FIFO, not a regular file"));
  assert_null(r);
}

static void test_finish_new_never_replaces_a_file_that_appeared_meanwhile(void **state) {
  const char *dir = tu_tmpdir("seg_new");
  char path[4096];
  snprintf(path, sizeof path, "%s", tu_path(dir, "n.sfs"));
  sf_seg_params sp = params(SF_IVF_FLAT, 4, 2, 0);
  const sf_rowid ids[1] = {SF_ROWID(0, 0)};
  uint8_t codes[16] = {0};
  roaring_bitmap_t *b = roaring_bitmap_from_range(0, 1, 1);
  sf_seg_writer *w;
  sf_err err;
  assert_int_equal(sf_seg_writer_open(path, &sp, &w, &err), SF_OK);
  assert_int_equal(sf_seg_writer_add_chunk(w, 0, ids, codes, 1, &err), SF_OK);
  tu_write_file(path, "theirs", 6); /* another writer of the same name won */
  assert_int_equal(sf_seg_writer_finish_new(w, b, &err), SF_EEXIST);
  assert_non_null(strstr(err.msg, "n.sfs already exists"));
  size_t n;
  uint8_t *got = tu_read_file(path, &n);
  assert_true(n == 6 && !memcmp(got, "theirs", 6));
  free(got);
  DIR *d = opendir(dir); /* and no temporary is left */
  struct dirent *e;
  while ((e = readdir(d))) assert_null(strstr(e->d_name, ".tmp."));
  closedir(d);
  /* With the name free, it publishes like finish. */
  unlink(path);
  assert_int_equal(sf_seg_writer_open(path, &sp, &w, &err), SF_OK);
  assert_int_equal(sf_seg_writer_add_chunk(w, 0, ids, codes, 1, &err), SF_OK);
  assert_int_equal(sf_seg_writer_finish_new(w, b, &err), SF_OK);
  sf_seg_reader *r;
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  assert_int_equal(sf_seg_num_rows(r), 1);
  sf_seg_close(r);
  sf_fragset_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_preserves_ids_and_codes_in_every_partition),
      cmocka_unit_test(test_open_meta_answers_like_open_without_mapping),
      cmocka_unit_test(test_a_file_with_no_rows_roundtrips),
      cmocka_unit_test(test_a_chunk_larger_than_the_limit_is_split_on_write),
      cmocka_unit_test(test_copy_partition_of_three_shards_yields_their_union),
      cmocka_unit_test(test_copy_partition_without_copy_file_range_yields_the_same_union),
      cmocka_unit_test(test_copy_partition_refuses_a_source_with_other_parameters),
      cmocka_unit_test(test_join_keeps_every_row_and_code_in_one_chunk_per_partition),
      cmocka_unit_test(test_join_starts_a_new_chunk_where_ids_fall_or_the_run_is_full),
      cmocka_unit_test(test_join_of_interleaved_inputs_keeps_every_row),
      cmocka_unit_test(test_join_refuses_a_corrupt_block_naming_the_file_and_goes_on),
      cmocka_unit_test(test_writer_rejects_bad_order_and_unsorted_ids_but_stays_usable),
      cmocka_unit_test(test_abort_and_failed_finish_leave_nothing_behind),
      cmocka_unit_test(test_writer_refuses_inconsistent_parameters),
      cmocka_unit_test(test_threads_share_one_reader_with_their_own_scratch),
      cmocka_unit_test(test_a_flipped_byte_at_every_offset_is_caught_and_names_the_file),
      cmocka_unit_test(test_a_flipped_data_byte_fails_every_merge_of_the_file),
      cmocka_unit_test(test_a_truncated_or_extended_file_is_rejected_at_open),
      cmocka_unit_test(test_a_huge_count_behind_a_valid_crc_is_stopped_by_its_bound),
      cmocka_unit_test(test_a_row_id_frame_that_lies_about_its_size_is_rejected),
      cmocka_unit_test(test_another_kind_of_file_or_version_is_a_format_error),
      cmocka_unit_test(test_verify_reports_a_row_whose_fragment_the_bitmap_lacks),
      cmocka_unit_test(test_finish_new_never_replaces_a_file_that_appeared_meanwhile),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
