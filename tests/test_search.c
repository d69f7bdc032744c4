/*
 * test_search.c - the vector core end to end through files: generated
 * clustered data is trained on, staged into shard files by fragments, and
 * searched; answers are checked against brute force.
 */
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
#include "core/base/fsutil.h"
#include "core/format/stage.h"
#include "core/search/search.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"
#include "tests/testutil.h"

#define N 12000u
#define NQ 200u
#define DIM 32u
#define RPF 1000u /* rows per fragment: 12 fragments */
#define K 10u

typedef struct {
  char dir[4096];
  float *base, *queries;
  sf_quant *q;
} fixture;

/* Generates data, writes base.fvecs and trains a quantizer into dir. */
static void setup_index(fixture *f, sf_index_type type, sf_metric metric, uint32_t nlist,
                        uint32_t pq_m) {
  snprintf(f->dir, sizeof f->dir, "%s", tu_tmpdir("search"));
  f->base = malloc(sizeof(float) * N * DIM);
  f->queries = malloc(sizeof(float) * NQ * DIM);
  assert_non_null(f->base);
  assert_non_null(f->queries);
  sf_gen_clustered(f->base, N, DIM, 200, 0.4f, 7, 8);
  sf_gen_clustered(f->queries, NQ, DIM, 200, 0.4f, 7, 9);
  sf_err err = {0};
  sf_vecwriter *w;
  assert_int_equal(sf_vecwriter_open(tu_path(f->dir, "base.fvecs"), DIM, &w, &err),
                   SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, f->base, N, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  sf_quant_params p = {.type = type,
                       .metric = metric,
                       .dim = DIM,
                       .nlist = nlist,
                       .pq_m = pq_m,
                       .seed = 1};
  assert_int_equal(sf_quant_train(&p, f->base, N, &f->q, &err), SF_OK);
  assert_int_equal(sf_quant_save(f->q, tu_path(f->dir, "quantizer"), &err), SF_OK);
}

static void teardown_index(fixture *f) {
  sf_quant_free(f->q);
  free(f->base);
  free(f->queries);
}

static uint32_t last_passes; /* encoding passes of the last stage() */

/* Stages fragments [a, b] as shard `id`; returns the path (static slot). */
static const char *stage(fixture *f, const char *id, uint32_t a, uint32_t b) {
  roaring_bitmap_t *fr = roaring_bitmap_create();
  roaring_bitmap_add_range_closed(fr, a, b);
  sf_stage_opts o = {.vectors = tu_path(f->dir, "base.fvecs"),
                     .staging_root = f->dir,
                     .shard_id = id,
                     .fragments = fr,
                     .rows_per_fragment = RPF,
                     .memory_budget = 64 << 10 /* forces several passes */};
  sf_stage_result res;
  sf_err err = {0};
  sf_code rc = sf_stage_shard(&o, f->q, &res, &err);
  if (rc) fail_msg("stage: %s", err.msg);
  last_passes = res.passes;
  sf_fragset_free(fr);
  static char paths[8][4096];
  static int next;
  char *p = paths[next++ & 7];
  snprintf(p, 4096, "%s", res.path);
  free(res.path);
  return p;
}

/* Runs every query; fills ids[NQ*K]. */
static void run(fixture *f, const char *const *paths, size_t n, uint32_t nprobe,
                sf_rowid *ids) {
  sf_search *s;
  sf_err err = {0};
  if (sf_search_open(f->q, paths, n, &s, &err)) fail_msg("open: %s", err.msg);
  assert_int_equal(sf_search_rows(s), N);
  assert_int_equal(sf_search_verify(s, &err), SF_OK);
  float scores[K];
  for (uint32_t i = 0; i < NQ; i++) {
    uint32_t got;
    assert_int_equal(sf_search_query(s, f->queries + i * DIM, K, nprobe, ids + i * K,
                                     scores, &got, &err),
                     SF_OK);
    assert_int_equal(got, K);
    for (uint32_t r = 1; r < K; r++) assert_true(scores[r - 1] <= scores[r]);
  }
  sf_search_free(s);
}

static void brute(fixture *f, sf_metric metric, sf_rowid *ids) {
  int64_t *idx = malloc(sizeof(int64_t) * NQ * K);
  sf_err err = {0};
  assert_int_equal(
      sf_bruteforce_knn(f->base, N, f->queries, NQ, DIM, metric, K, idx, &err), SF_OK);
  for (uint32_t i = 0; i < NQ * K; i++)
    ids[i] = SF_ROWID((uint64_t)idx[i] / RPF, (uint64_t)idx[i] % RPF);
  free(idx);
}

static double recall(const sf_rowid *got, const sf_rowid *want) {
  double hits = 0;
  for (uint32_t i = 0; i < NQ; i++)
    for (uint32_t r = 0; r < K; r++)
      for (uint32_t j = 0; j < K; j++)
        if (got[i * K + r] == want[i * K + j]) {
          hits++;
          break;
        }
  return hits / (NQ * K);
}

static void flat_exhaustive_equals_brute_force(sf_metric metric) {
  fixture f;
  setup_index(&f, SF_IVF_FLAT, metric, 32, 0);
  const char *paths[4] = {stage(&f, "a", 0, 2), stage(&f, "b", 3, 5),
                          stage(&f, "c", 6, 8), stage(&f, "d", 9, 11)};
  assert_true(last_passes > 1); /* the 64 KiB budget split the encoding */
  sf_rowid *got = malloc(sizeof(sf_rowid) * NQ * K),
           *want = malloc(sizeof(sf_rowid) * NQ * K);
  run(&f, paths, 4, 32, got);
  brute(&f, metric, want);
  assert_memory_equal(got, want, sizeof(sf_rowid) * NQ * K);
  free(got);
  free(want);
  teardown_index(&f);
}

static void test_ivf_flat_with_nprobe_nlist_returns_exactly_brute_force_l2(void **st) {
  (void)st;
  flat_exhaustive_equals_brute_force(SF_L2);
}
static void test_ivf_flat_with_nprobe_nlist_returns_exactly_brute_force_cosine(
    void **st) {
  (void)st;
  flat_exhaustive_equals_brute_force(SF_COSINE);
}
static void test_ivf_flat_with_nprobe_nlist_returns_exactly_brute_force_dot(void **st) {
  (void)st;
  flat_exhaustive_equals_brute_force(SF_DOT);
}

/* recall@10 at nprobe 4 of 64 lists, against brute force, over 3 shards. */
static void recall_reaches(sf_index_type type, sf_metric metric, uint32_t pq_m,
                           double floor) {
  fixture f;
  setup_index(&f, type, metric, 64, pq_m);
  const char *paths[3] = {stage(&f, "s0", 0, 3), stage(&f, "s1", 4, 7),
                          stage(&f, "s2", 8, 11)};
  sf_rowid *got = malloc(sizeof(sf_rowid) * NQ * K),
           *want = malloc(sizeof(sf_rowid) * NQ * K);
  run(&f, paths, 3, 4, got);
  brute(&f, metric, want);
  double r = recall(got, want);
  print_message("%s %s nprobe=4/64 m=%u: recall@10 = %.4f (floor %.2f)\n",
                sf_index_type_name(type), sf_metric_name(metric), pq_m, r, floor);
  assert_true(r >= floor);
  free(got);
  free(want);
  teardown_index(&f);
}

static void test_recall_at_10_flat_reaches_0_95_for_every_metric(void **st) {
  (void)st;
  recall_reaches(SF_IVF_FLAT, SF_L2, 0, 0.95);
  recall_reaches(SF_IVF_FLAT, SF_COSINE, 0, 0.95);
  recall_reaches(SF_IVF_FLAT, SF_DOT, 0, 0.95);
}
static void test_recall_at_10_sq_reaches_0_85_for_every_metric(void **st) {
  (void)st;
  recall_reaches(SF_IVF_SQ, SF_L2, 0, 0.85);
  recall_reaches(SF_IVF_SQ, SF_COSINE, 0, 0.85);
  recall_reaches(SF_IVF_SQ, SF_DOT, 0, 0.85);
}
static void test_recall_at_10_pq_reaches_0_70_for_every_metric(void **st) {
  (void)st;
  recall_reaches(SF_IVF_PQ, SF_L2, 16, 0.70);
  recall_reaches(SF_IVF_PQ, SF_COSINE, 16, 0.70);
  recall_reaches(SF_IVF_PQ, SF_DOT, 16, 0.70);
}

/* Four shards answer exactly like one shard of the same rows, per type. */
static void four_shards_equal_one(sf_index_type type, sf_metric metric, uint32_t pq_m) {
  fixture f;
  setup_index(&f, type, metric, 64, pq_m);
  const char *four[4] = {stage(&f, "p0", 0, 2), stage(&f, "p1", 3, 5),
                         stage(&f, "p2", 6, 8), stage(&f, "p3", 9, 11)};
  const char *one[1] = {stage(&f, "all", 0, 11)};
  sf_rowid *a = malloc(sizeof(sf_rowid) * NQ * K), *b = malloc(sizeof(sf_rowid) * NQ * K);
  run(&f, four, 4, 6, a);
  run(&f, one, 1, 6, b);
  assert_memory_equal(a, b, sizeof(sf_rowid) * NQ * K);
  free(a);
  free(b);
  teardown_index(&f);
}

static void test_four_shards_answer_exactly_like_one_shard_of_the_same_rows(void **st) {
  (void)st;
  four_shards_equal_one(SF_IVF_FLAT, SF_L2, 0);
  four_shards_equal_one(SF_IVF_SQ, SF_COSINE, 0);
  four_shards_equal_one(SF_IVF_PQ, SF_DOT, 8);
}

/* IVF_PQ under L2 and COSINE: a searcher keeps each scanned partition's
 * terms (search.h). A query answered cold (first), warm (again after every
 * query) and by a second searcher that met the queries in reverse order
 * gets the same ids and the same score bits; a four-file search keeps terms
 * per file. */
static void pq_kept_terms_change_no_bit(sf_metric metric) {
  fixture f;
  setup_index(&f, SF_IVF_PQ, metric, 64, 8);
  const char *one[1] = {stage(&f, "all", 0, 11)};
  const char *four[4] = {stage(&f, "p0", 0, 2), stage(&f, "p1", 3, 5),
                         stage(&f, "p2", 6, 8), stage(&f, "p3", 9, 11)};
  for (int files = 1; files <= 4; files += 3) {
    const char *const *paths = files == 1 ? one : four;
    sf_search *s1, *s2;
    sf_err err = {0};
    assert_int_equal(sf_search_open(f.q, paths, (size_t)files, &s1, &err), SF_OK);
    assert_int_equal(sf_search_open(f.q, paths, (size_t)files, &s2, &err), SF_OK);
    static sf_rowid ids[3][NQ * K];
    static float sc[3][NQ * K];
    uint32_t got;
    for (int pass = 0; pass < 2; pass++)
      for (uint32_t i = 0; i < NQ; i++) {
        assert_int_equal(sf_search_query(s1, f.queries + i * DIM, K, 8, ids[pass] + i * K,
                                         sc[pass] + i * K, &got, &err),
                         SF_OK);
        assert_int_equal(got, K);
      }
    for (uint32_t i = NQ; i-- > 0;) {
      assert_int_equal(sf_search_query(s2, f.queries + i * DIM, K, 8, ids[2] + i * K,
                                       sc[2] + i * K, &got, &err),
                       SF_OK);
      assert_int_equal(got, K);
    }
    for (int v = 1; v < 3; v++) {
      assert_memory_equal(ids[0], ids[v], sizeof ids[0]);
      assert_memory_equal(sc[0], sc[v], sizeof sc[0]);
    }
    sf_search_free(s1);
    sf_search_free(s2);
  }
  teardown_index(&f);
}

static void test_pq_kept_terms_change_no_bit_of_any_answer(void **st) {
  (void)st;
  pq_kept_terms_change_no_bit(SF_L2);
  pq_kept_terms_change_no_bit(SF_COSINE);
}

static void test_overlapping_shards_are_refused_naming_the_fragments(void **st) {
  (void)st;
  fixture f;
  setup_index(&f, SF_IVF_FLAT, SF_L2, 16, 0);
  const char *paths[2] = {stage(&f, "x", 0, 5), stage(&f, "y", 5, 7)};
  sf_search *s;
  sf_err err = {0};
  assert_int_equal(sf_search_open(f.q, paths, 2, &s, &err), SF_EOVERLAP);
  assert_non_null(strstr(err.msg, "fragments 5"));
  assert_non_null(strstr(err.msg, "y.sfshard"));
  teardown_index(&f);
}

static void test_a_shard_of_another_quantizer_is_refused(void **st) {
  (void)st;
  fixture f, g;
  setup_index(&f, SF_IVF_FLAT, SF_L2, 16, 0);
  setup_index(&g, SF_IVF_FLAT, SF_L2, 16, 0);
  /* Same data, other seed: another quantizer. */
  sf_quant_free(g.q);
  sf_quant_params p = {
      .type = SF_IVF_FLAT, .metric = SF_L2, .dim = DIM, .nlist = 16, .seed = 99};
  sf_err err = {0};
  assert_int_equal(sf_quant_train(&p, g.base, N, &g.q, &err), SF_OK);
  const char *paths[1] = {stage(&f, "x", 0, 1)};
  sf_search *s;
  assert_int_equal(sf_search_open(g.q, paths, 1, &s, &err), SF_ECHECKSUM);
  assert_non_null(strstr(err.msg, "x.sfshard"));
  teardown_index(&f);
  teardown_index(&g);
}

static void test_a_fragment_past_the_end_of_the_file_is_refused(void **st) {
  (void)st;
  fixture f;
  setup_index(&f, SF_IVF_FLAT, SF_L2, 16, 0);
  roaring_bitmap_t *fr = roaring_bitmap_from_range(11, 13, 1);
  sf_stage_opts o = {.vectors = tu_path(f.dir, "base.fvecs"),
                     .staging_root = f.dir,
                     .shard_id = "z",
                     .fragments = fr,
                     .rows_per_fragment = RPF};
  sf_stage_result res;
  sf_err err = {0};
  assert_int_equal(sf_stage_shard(&o, f.q, &res, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "fragment 12 starts at row 12000"));
  sf_fragset_free(fr);
  teardown_index(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ivf_flat_with_nprobe_nlist_returns_exactly_brute_force_l2),
      cmocka_unit_test(
          test_ivf_flat_with_nprobe_nlist_returns_exactly_brute_force_cosine),
      cmocka_unit_test(test_ivf_flat_with_nprobe_nlist_returns_exactly_brute_force_dot),
      cmocka_unit_test(test_recall_at_10_flat_reaches_0_95_for_every_metric),
      cmocka_unit_test(test_recall_at_10_sq_reaches_0_85_for_every_metric),
      cmocka_unit_test(test_recall_at_10_pq_reaches_0_70_for_every_metric),
      cmocka_unit_test(test_four_shards_answer_exactly_like_one_shard_of_the_same_rows),
      cmocka_unit_test(test_pq_kept_terms_change_no_bit_of_any_answer),
      cmocka_unit_test(test_overlapping_shards_are_refused_naming_the_fragments),
      cmocka_unit_test(test_a_shard_of_another_quantizer_is_refused),
      cmocka_unit_test(test_a_fragment_past_the_end_of_the_file_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
