/*
 * test_search_pq.c - IVF_PQ search over hostile segment shapes: the same
 * rows laid out as one file, as one file per fragment in chunks of 1 to 9
 * rows (with a file of no rows and empty partitions), and as the segment a
 * compaction joins from those. A searcher keeps per-partition terms of the
 * codes (search.h); whatever the layout, the query order, and whether the
 * terms were kept (all, none, or only the files the budget fits), every
 * query gets the same ids and the same score bits. The scores also agree
 * with the per-list path (no precomputed table) within rounding, and under
 * DOT (which has no terms) bit for bit.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka needs <stdarg.h>, <stddef.h> and <setjmp.h> before it. */
#include <cmocka.h>

#include "core/base/fragset.h"
#include "core/base/rng.h"
#include "core/format/segfile.h"
#include "core/search/search.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "tests/testutil.h"

#define DIM 32u
#define NTRAIN 3000u
#define NQ 40u
#define K 10u
#define RPF 1000u /* rows per fragment */
#define MAXF 80u  /* fragments at most */
#define NFILES_MAX (MAXF + 1)

typedef struct shape {
  sf_metric metric;
  uint32_t nlist, m, rows, nprobe;
} shape;

typedef struct world {
  shape sh;
  char dir[4096];
  sf_quant *q;
  float *queries;
  uint32_t *list; /* rows */
  uint8_t *codes; /* rows * m */
  uint32_t nfrag;
  char one[4096], joined[4096];
  char many[NFILES_MAX][4096]; /* [0]: a file of no rows; then one per fragment */
  size_t nmany;
} world;

static sf_seg_params seg_params(const world *w, sf_seg_kind kind) {
  return (sf_seg_params){.kind = kind,
                         .type = SF_IVF_PQ,
                         .metric = w->sh.metric,
                         .dim = DIM,
                         .nlist = w->sh.nlist,
                         .code_size = w->sh.m,
                         .pq_m = w->sh.m,
                         .quantizer_checksum = sf_quant_checksum(w->q)};
}

static sf_rowid row_id(uint32_t r) {
  return SF_ROWID(r / RPF, r % RPF);
}

/* Writes rows [a, b) of partition p to wr in chunks of `chunk` rows (0: one
 * call, split by the writer at SF_SEG_MAX_CHUNK_ROWS) or of 1 to 9 rows. */
static void add_rows(world *w, sf_seg_writer *wr, uint32_t p, uint32_t a, uint32_t b,
                     int small, sf_rng *rng) {
  const uint32_t m = w->sh.m;
  uint32_t n = 0;
  for (uint32_t r = a; r < b; r++) n += w->list[r] == p;
  if (!n) return;
  sf_rowid *ids = malloc(sizeof *ids * n);
  uint8_t *codes = malloc((size_t)n * m);
  assert_true(ids && codes);
  n = 0;
  for (uint32_t r = a; r < b; r++)
    if (w->list[r] == p) {
      ids[n] = row_id(r);
      memcpy(codes + (size_t)n * m, w->codes + (size_t)r * m, m);
      n++;
    }
  sf_err err = {0};
  for (uint32_t i = 0; i < n;) {
    uint32_t c = small ? 1 + (uint32_t)sf_rng_below(rng, 9) : n;
    if (c > n - i) c = n - i;
    if (sf_seg_writer_add_chunk(wr, p, ids + i, codes + (size_t)i * m, c, &err))
      fail_msg("add_chunk: %s", err.msg);
    i += c;
  }
  free(ids);
  free(codes);
}

static void finish(sf_seg_writer *wr, uint32_t f0, uint32_t f1) {
  roaring_bitmap_t *fr = roaring_bitmap_create();
  if (f1 > f0) roaring_bitmap_add_range(fr, f0, f1);
  sf_err err = {0};
  if (sf_seg_writer_finish(wr, fr, &err)) fail_msg("finish: %s", err.msg);
  sf_fragset_free(fr);
}

static void build_world(world *w, shape sh) {
  memset(w, 0, sizeof *w);
  w->sh = sh;
  snprintf(w->dir, sizeof w->dir, "%s", tu_tmpdir("search_pq"));
  float *x = malloc(sizeof(float) * NTRAIN * DIM);
  w->queries = malloc(sizeof(float) * NQ * DIM);
  assert_true(x && w->queries);
  sf_gen_clustered(x, NTRAIN, DIM, 50, 0.4f, 7, 8);
  sf_gen_clustered(w->queries, NQ, DIM, 50, 0.4f, 7, 9);
  sf_quant_params p = {.type = SF_IVF_PQ,
                       .metric = sh.metric,
                       .dim = DIM,
                       .nlist = sh.nlist,
                       .pq_m = sh.m,
                       .seed = 1};
  sf_err err = {0};
  if (sf_quant_train(&p, x, NTRAIN, &w->q, &err)) fail_msg("train: %s", err.msg);
  free(x);
  /* Any byte is a code: random codes, in partitions chosen at random but
   * for every fifth one, which stays empty (with nlist 1, none). */
  w->list = malloc(sizeof(uint32_t) * sh.rows);
  w->codes = malloc((size_t)sh.rows * sh.m);
  assert_true(w->list && w->codes);
  sf_rng rng;
  sf_rng_seed(&rng, 5);
  for (uint32_t r = 0; r < sh.rows; r++) {
    uint32_t l = (uint32_t)sf_rng_below(&rng, sh.nlist);
    if (sh.nlist > 1 && l % 5 == 2) l = (l + 1) % sh.nlist;
    w->list[r] = l;
  }
  for (size_t i = 0; i < (size_t)sh.rows * sh.m; i++)
    w->codes[i] = (uint8_t)sf_rng_below(&rng, 256);
  w->nfrag = (sh.rows + RPF - 1) / RPF;
  assert_true(w->nfrag <= MAXF);

  sf_seg_params sp = seg_params(w, SF_SEG_KIND_SHARD);
  sf_seg_writer *wr;
  snprintf(w->one, sizeof w->one, "%s", tu_path(w->dir, "one.sfshard"));
  assert_int_equal(sf_seg_writer_open(w->one, &sp, &wr, &err), SF_OK);
  for (uint32_t l = 0; l < sh.nlist; l++) add_rows(w, wr, l, 0, sh.rows, 0, &rng);
  finish(wr, 0, w->nfrag);

  snprintf(w->many[0], sizeof w->many[0], "%s", tu_path(w->dir, "empty.sfshard"));
  assert_int_equal(sf_seg_writer_open(w->many[0], &sp, &wr, &err), SF_OK);
  finish(wr, 0, 0);
  w->nmany = 1;
  for (uint32_t f = 0; f < w->nfrag; f++) {
    char name[64];
    snprintf(name, sizeof name, "f%u.sfshard", f);
    char *path = w->many[w->nmany++];
    snprintf(path, 4096, "%s", tu_path(w->dir, name));
    assert_int_equal(sf_seg_writer_open(path, &sp, &wr, &err), SF_OK);
    uint32_t a = f * RPF, b = a + RPF < sh.rows ? a + RPF : sh.rows;
    for (uint32_t l = 0; l < sh.nlist; l++) add_rows(w, wr, l, a, b, 1, &rng);
    finish(wr, f, f + 1);
  }

  /* A compaction's output: the small chunks of every file joined. */
  sf_seg_reader *src[NFILES_MAX];
  for (size_t i = 0; i < w->nmany; i++)
    assert_int_equal(sf_seg_open(w->many[i], &src[i], &err), SF_OK);
  sf_seg_params gp = seg_params(w, SF_SEG_KIND_SEGMENT);
  snprintf(w->joined, sizeof w->joined, "%s", tu_path(w->dir, "joined.sfseg"));
  assert_int_equal(sf_seg_writer_open(w->joined, &gp, &wr, &err), SF_OK);
  for (uint32_t l = 0; l < sh.nlist; l++)
    if (sf_seg_writer_join_partition(wr, (const sf_seg_reader *const *)src, w->nmany, l,
                                     NULL, &err))
      fail_msg("join: %s", err.msg);
  sf_seg_join_stats st;
  sf_seg_writer_join_stats(wr, &st);
  assert_true(st.chunks_joined > 0);
  finish(wr, 0, w->nfrag);
  for (size_t i = 0; i < w->nmany; i++) sf_seg_close(src[i]);
}

static void free_world(world *w) {
  sf_quant_free(w->q);
  free(w->queries);
  free(w->list);
  free(w->codes);
}

typedef struct answer {
  sf_rowid ids[NQ * K];
  float sc[NQ * K];
  uint64_t scanned[NQ];
} answer;

/* Runs every query on s, in reverse order when `reverse`, into a. */
static void run(const world *w, sf_search *s, int reverse, answer *a) {
  sf_err err = {0};
  for (uint32_t j = 0; j < NQ; j++) {
    uint32_t i = reverse ? NQ - 1 - j : j, got;
    if (sf_search_query(s, w->queries + (size_t)i * DIM, K, w->sh.nprobe, a->ids + i * K,
                        a->sc + i * K, &got, &err))
      fail_msg("query: %s", err.msg);
    assert_int_equal(got, K);
    a->scanned[i] = sf_search_last_scanned(s);
  }
}

static sf_search *open_paths(const world *w, const char *const *paths, size_t n) {
  sf_search *s;
  sf_err err = {0};
  if (sf_search_open(w->q, paths, n, &s, &err)) fail_msg("open: %s", err.msg);
  return s;
}

static void assert_same(const answer *a, const answer *b, const char *what) {
  if (memcmp(a->ids, b->ids, sizeof a->ids) || memcmp(a->sc, b->sc, sizeof a->sc) ||
      memcmp(a->scanned, b->scanned, sizeof a->scanned))
    fail_msg(
        "%s: the answer differs from the one-file searcher's (ids %s, scores %s, "
        "rows scanned %s)",
        what, memcmp(a->ids, b->ids, sizeof a->ids) ? "differ" : "equal",
        memcmp(a->sc, b->sc, sizeof a->sc) ? "differ" : "equal",
        memcmp(a->scanned, b->scanned, sizeof a->scanned) ? "differ" : "equal");
}

/* The bytes a searcher charges for the terms of a file of `rows` rows. */
static size_t file_cost(const world *w, uint64_t rows) {
  return rows ? (size_t)rows * 4 + ((size_t)w->sh.nlist + 1) * 8 + w->sh.nlist : 0;
}

/* Every query's results scored by the per-list path (a scanner without the
 * precomputed table) over the rows of the probed lists: the searcher's
 * scores within rounding (DOT: the same path, so the same bits), and its
 * k-th score is the k-th best there. */
static void check_against_per_list_path(const world *w, const answer *a) {
  sf_quant_scanner *sc;
  assert_int_equal(sf_quant_scanner_new_ex(w->q, SF_QUANT_SCAN_NO_PRECOMPUTE, &sc, NULL),
                   SF_OK);
  assert_false(sf_quant_scanner_has_terms(sc));
  const uint32_t m = w->sh.m, rows = w->sh.rows;
  float *prep = malloc(sizeof(float) * DIM), *ref = malloc(sizeof(float) * rows);
  uint8_t *probed = malloc(rows);
  uint32_t *lists = malloc(sizeof(uint32_t) * w->sh.nlist);
  assert_true(prep && ref && probed && lists);
  for (uint32_t i = 0; i < NQ; i++) {
    sf_quant_prepare(w->q, w->queries + (size_t)i * DIM, prep);
    uint32_t np = sf_quant_probe(w->q, prep, w->sh.nprobe, lists);
    sf_quant_scanner_set_query(sc, prep);
    memset(probed, 0, rows);
    uint64_t nprobed = 0;
    for (uint32_t li = 0; li < np; li++) {
      sf_quant_scanner_set_list(sc, lists[li]);
      for (uint32_t r = 0; r < rows; r++)
        if (w->list[r] == lists[li]) {
          sf_quant_scanner_scan(sc, w->codes + (size_t)r * m, 1, &ref[r]);
          probed[r] = 1;
          nprobed++;
        }
    }
    assert_int_equal(a->scanned[i], nprobed);
    float worst_ref = -INFINITY;
    for (uint32_t t = 0; t < K; t++) {
      sf_rowid id = a->ids[i * K + t];
      uint32_t r = SF_ROWID_FRAG(id) * RPF + (uint32_t)id;
      assert_true(r < rows && probed[r]);
      float got = a->sc[i * K + t], want = ref[r];
      if (w->sh.metric == SF_DOT) {
        assert_memory_equal(&got, &want, sizeof got);
      } else if (fabsf(got - want) > 1e-4f * (1 + fabsf(want))) {
        fail_msg("query %u rank %u: score %.9g, the per-list path %.9g", i, t, got, want);
      }
      if (want > worst_ref) worst_ref = want;
    }
    /* Nothing the searcher left out is clearly better than its k-th. */
    uint32_t better = 0;
    for (uint32_t r = 0; r < rows; r++)
      if (probed[r] && ref[r] < worst_ref - 1e-4f * (1 + fabsf(worst_ref))) better++;
    assert_true(better < K);
  }
  free(prep), free(ref), free(probed), free(lists);
  sf_quant_scanner_free(sc);
}

static void check_shape(shape sh) {
  world *w = calloc(1, sizeof *w);
  answer *ref = malloc(sizeof *ref), *a = malloc(sizeof *a);
  assert_true(w && ref && a);
  build_world(w, sh);
  const int terms = sh.metric != SF_DOT;

  const char *one[1] = {w->one}, *joined[1] = {w->joined};
  const char *many[NFILES_MAX];
  for (size_t i = 0; i < w->nmany; i++) many[i] = w->many[i];

  /* One file: cold, then warm. */
  sf_search *s = open_paths(w, one, 1);
  run(w, s, 0, ref);
  assert_int_equal(sf_search_terms_bytes(s), terms ? file_cost(w, sh.rows) : 0);
  run(w, s, 0, a);
  assert_same(ref, a, "one file, warm");
  run(w, s, 1, a);
  assert_same(ref, a, "one file, warm, reversed");
  sf_search_set_terms_budget(s, 0);
  run(w, s, 1, a);
  assert_int_equal(sf_search_terms_bytes(s), 0);
  assert_same(ref, a, "one file, no terms kept");
  sf_search_free(s);

  /* One file per fragment, small chunks, a file of no rows first. */
  s = open_paths(w, many, w->nmany);
  run(w, s, 1, a);
  assert_same(ref, a, "many files, reversed");
  run(w, s, 0, a);
  assert_same(ref, a, "many files, warm");
  size_t all = 0;
  for (uint32_t f = 0; f < w->nfrag; f++)
    all += file_cost(w, f + 1 < w->nfrag ? RPF : sh.rows - f * RPF);
  assert_int_equal(sf_search_terms_bytes(s), terms ? all : 0);
  /* A budget that fits the first two files with rows and no other: any
   * file of r rows costs 4r more than the partition tables. */
  size_t two = file_cost(w, RPF) * 2;
  sf_search_set_terms_budget(s, two + file_cost(w, 1) - 4);
  run(w, s, 0, a);
  assert_same(ref, a, "many files, two kept");
  assert_int_equal(sf_search_terms_bytes(s), terms && w->nfrag > 2 ? two : 0);
  run(w, s, 1, a);
  assert_same(ref, a, "many files, two kept, warm");
  sf_search_set_terms_budget(s, 0);
  run(w, s, 0, a);
  assert_same(ref, a, "many files, none kept");
  sf_search_free(s);

  /* The joined segment. */
  s = open_paths(w, joined, 1);
  run(w, s, 1, a);
  assert_same(ref, a, "joined segment, reversed");
  run(w, s, 0, a);
  assert_same(ref, a, "joined segment, warm");
  sf_search_free(s);

  check_against_per_list_path(w, ref);

  free_world(w);
  free(w);
  free(ref);
  free(a);
}

static void test_layouts_and_kept_terms_change_no_answer_l2(void **st) {
  (void)st;
  check_shape((shape){SF_L2, 16, 8, 12000, 4}); /* dsub 4 */
  check_shape((shape){SF_L2, 1, 4, 12000, 1});  /* nlist 1: every row one partition */
  check_shape((shape){SF_L2, 8, 1, 9000, 3});   /* pq_m 1: dsub 32 */
  check_shape((shape){SF_L2, 8, 32, 9000, 3});  /* pq_m = dim: dsub 1 */
}

static void test_layouts_and_kept_terms_change_no_answer_cosine(void **st) {
  (void)st;
  check_shape((shape){SF_COSINE, 16, 16, 12000, 5}); /* dsub 2 */
  check_shape((shape){SF_COSINE, 8, 32, 9000, 8});   /* dsub 1, every list */
}

static void test_dot_takes_the_old_path_and_keeps_no_terms(void **st) {
  (void)st;
  check_shape((shape){SF_DOT, 16, 8, 12000, 4});
}

/* nlist 1 with more rows than a chunk holds: one chunk of the maximum
 * size and a smaller one in the one-file layout. */
static void test_a_chunk_of_the_maximum_size(void **st) {
  (void)st;
  check_shape((shape){SF_L2, 1, 8, SF_SEG_MAX_CHUNK_ROWS + 1500, 1});
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layouts_and_kept_terms_change_no_answer_l2),
      cmocka_unit_test(test_layouts_and_kept_terms_change_no_answer_cosine),
      cmocka_unit_test(test_dot_takes_the_old_path_and_keeps_no_terms),
      cmocka_unit_test(test_a_chunk_of_the_maximum_size),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
