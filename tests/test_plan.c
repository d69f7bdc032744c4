/* test_plan.c - the planner: every validation rule, the greedy grouping and
 * deterministic segment ids. Shards are given as data, except where the
 * staging-directory scan itself is under test. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cmocka.h needs these before it */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/format/segfile.h"
#include "core/pipeline/plan.h"
#include "core/vector/quantizer.h"
#include "tests/testutil.h"

#define MAXS 16

/* A job described as data: shard i has id names[i], `bytes[i]` bytes and
 * the fragments of the range list frags[i]. */
typedef struct {
  sf_plan_shard s[MAXS];
  size_t n;
} job;

static sf_seg_params params(void) {
  sf_seg_params p = {.kind = SF_SEG_KIND_SHARD,
                     .type = SF_IVF_SQ,
                     .metric = SF_L2,
                     .dim = 8,
                     .nlist = 16,
                     .code_size = 8,
                     .quantizer_checksum = 0x5eedULL};
  return p;
}

static void add(job *j, const char *id, uint64_t bytes, const char *frags) {
  sf_plan_shard *s = &j->s[j->n++];
  memset(s, 0, sizeof *s);
  s->shard_id = strdup(id);
  char path[64];
  snprintf(path, sizeof path, "staging/%s.sfshard", id);
  s->path = strdup(path);
  s->bytes = bytes;
  s->num_rows = bytes / 10;
  s->params = params();
  sf_err err = {0};
  assert_int_equal(sf_fragset_parse(frags, "test", &s->fragments, &err), SF_OK);
}

static void job_free(job *j) {
  for (size_t i = 0; i < j->n; i++) {
    free(j->s[i].shard_id);
    free(j->s[i].path);
    sf_fragset_free(j->s[i].fragments);
  }
  j->n = 0;
}

static sf_plan *plan_ok(job *j, uint64_t budget) {
  sf_plan_opts o = {
      .staging_id = "build-7", .target_segment_bytes = budget, .index_type = -1};
  sf_plan *p = NULL;
  sf_err err = {0};
  sf_code rc = sf_plan_make(j->s, j->n, &o, &p, &err);
  if (rc) fail_msg("plan failed: %s", err.msg);
  return p;
}

/* "a,b|c" : the shard ids of each segment, in plan order. */
static void expect_groups(const sf_plan *p, const char *want) {
  char got[512] = "";
  for (size_t g = 0; g < p->num_segments; g++) {
    if (g) strcat(got, "|");
    for (size_t k = 0; k < p->segments[g].count; k++) {
      if (k) strcat(got, ",");
      strcat(got, p->shards[p->segments[g].first + k].shard_id);
    }
  }
  assert_string_equal(got, want);
}

typedef struct {
  const char *id;
  uint64_t bytes;
  const char *frags;
} shard_spec;

/* Plans a job of the shards in s (up to one with a NULL id) under budget
 * and checks that they group as `groups` (expect_groups). */
static void expect_plan(const shard_spec *s, uint64_t budget, const char *groups) {
  job j = {0};
  for (; s->id; s++) add(&j, s->id, s->bytes, s->frags);
  sf_plan *p = plan_ok(&j, budget);
  expect_groups(p, groups);
  sf_plan_free(p);
  job_free(&j);
}

static void test_a_budget_packs_shards_greedily_in_order_of_lowest_fragment(
    void **state) {
  (void)state;
  job j = {0};
  /* Given out of order: the plan order is by lowest fragment. */
  add(&j, "d", 50, "30-39");
  add(&j, "a", 30, "0-9");
  add(&j, "f", 60, "50-59");
  add(&j, "c", 30, "20-29");
  add(&j, "b", 30, "10-19");
  add(&j, "e", 10, "40-49");
  sf_plan *p = plan_ok(&j, 100);
  expect_groups(p, "a,b,c|d,e|f");
  assert_int_equal(p->segments[0].bytes, 90);
  assert_int_equal(p->segments[1].bytes, 60);
  assert_int_equal(p->segments[2].bytes, 60);
  char *f = sf_fragset_format(p->segments[0].fragments);
  assert_string_equal(f, "0-29");
  free(f);
  assert_int_equal(p->total_bytes, 210);
  assert_int_equal(p->total_rows, 21);
  assert_int_equal(p->segments[1].num_rows, 6);
  assert_int_equal(p->params.kind, SF_SEG_KIND_SEGMENT);
  sf_plan_free(p);
  job_free(&j);
}

static void test_a_group_may_fill_the_budget_exactly(void **state) {
  (void)state;
  expect_plan((const shard_spec[]){{"a", 40, "0"}, {"b", 60, "1"}, {"c", 1, "2"}, {0}},
              100, "a,b|c");
}

static void test_a_shard_larger_than_the_budget_is_a_segment_alone(void **state) {
  (void)state;
  expect_plan((const shard_spec[]){{"a", 40, "0-1"},
                                   {"big", 150, "2-3"},
                                   {"c", 40, "4"},
                                   {"d", 40, "5"},
                                   {"huge", 1000, "6"},
                                   {"e", 40, "7"},
                                   {0}},
              100, "a|big|c,d|huge|e");
}

static void test_no_budget_means_one_segment_per_shard(void **state) {
  (void)state;
  expect_plan((const shard_spec[]){{"b", 1, "5"}, {"a", 1, "2-4"}, {"c", 1, "9-10"}, {0}},
              0, "a|b|c");
}

static void test_segment_ids_are_deterministic_readable_and_order_independent(
    void **state) {
  (void)state;
  job j = {0}, k = {0};
  add(&j, "a", 10, "0");
  add(&j, "b", 10, "1");
  add(&j, "c", 10, "2");
  add(&k, "c", 10, "2");
  add(&k, "a", 10, "0");
  add(&k, "b", 10, "1");
  sf_plan *p = plan_ok(&j, 20), *q = plan_ok(&k, 20);
  assert_int_equal(p->num_segments, 2);
  assert_int_equal(q->num_segments, 2);
  for (size_t g = 0; g < 2; g++)
    assert_string_equal(p->segments[g].segment_id, q->segments[g].segment_id);
  assert_string_not_equal(p->segments[0].segment_id, p->segments[1].segment_id);
  assert_memory_equal(p->segments[0].segment_id, "build-7-", 8);
  assert_int_equal(strlen(p->segments[0].segment_id), 8 + 16);

  /* The id is a function of the set of shard ids, and of the staging id. */
  const char *ab[] = {"a", "b"}, *ba[] = {"b", "a"}, *abc[] = {"ab", "c"},
             *a_bc[] = {"a", "bc"};
  char *x, *y;
  sf_err err = {0};
  assert_int_equal(sf_plan_segment_id("build-7", ab, 2, &x, &err), SF_OK);
  assert_int_equal(sf_plan_segment_id("build-7", ba, 2, &y, &err), SF_OK);
  assert_string_equal(x, y);
  assert_string_equal(x, p->segments[0].segment_id);
  free(y);
  assert_int_equal(sf_plan_segment_id("build-8", ab, 2, &y, &err), SF_OK);
  assert_string_not_equal(x, y);
  free(x);
  free(y);
  assert_int_equal(sf_plan_segment_id("s", abc, 2, &x, &err), SF_OK);
  assert_int_equal(sf_plan_segment_id("s", a_bc, 2, &y, &err), SF_OK);
  assert_string_not_equal(x, y);
  free(x);
  free(y);
  sf_plan_free(p);
  sf_plan_free(q);
  job_free(&j);
  job_free(&k);
}

static void test_segment_ids_are_safe_file_names_whatever_the_staging_id(void **state) {
  (void)state;
  const char *ids[] = {"s1"};
  char *x;
  sf_err err = {0};
  assert_int_equal(sf_plan_segment_id("../../etc/x y\n", ids, 1, &x, &err), SF_OK);
  assert_null(strchr(x, '/'));
  assert_null(strchr(x, ' '));
  assert_int_not_equal(x[0], '.');
  free(x);
  assert_int_equal(sf_plan_segment_id("0123456789012345678901234567890123456789-and-more",
                                      ids, 1, &x, &err),
                   SF_OK);
  assert_int_equal(strlen(x), 40 + 1 + 16);
  free(x);
}

static sf_code plan_err(job *j, const sf_plan_opts *o, sf_err *err) {
  sf_plan *p = (sf_plan *)0x1;
  sf_code rc = sf_plan_make(j->s, j->n, o, &p, err);
  assert_null(p);
  return rc;
}

static void test_overlapping_fragments_are_refused_naming_the_shards_and_fragments(
    void **state) {
  (void)state;
  job j = {0};
  add(&j, "w1", 10, "0-9");
  add(&j, "w2", 10, "10-19");
  add(&j, "w3", 10, "15-16,18,25-30");
  sf_plan_opts o = {.staging_id = "s", .index_type = -1};
  sf_err err = {0};
  assert_int_equal(plan_err(&j, &o, &err), SF_EOVERLAP);
  assert_non_null(strstr(err.msg, "'w2'"));
  assert_non_null(strstr(err.msg, "'w3'"));
  assert_non_null(strstr(err.msg, "15-16,18"));
  job_free(&j);
}

static void test_duplicate_or_empty_shards_and_empty_jobs_are_refused(void **state) {
  (void)state;
  job j = {0};
  add(&j, "w1", 10, "0");
  add(&j, "w1", 10, "1");
  sf_plan_opts o = {.staging_id = "s", .index_type = -1};
  sf_err err = {0};
  assert_int_equal(plan_err(&j, &o, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "'w1' is given twice"));
  roaring_bitmap_clear(j.s[1].fragments);
  free(j.s[1].shard_id);
  j.s[1].shard_id = strdup("w2");
  assert_int_equal(plan_err(&j, &o, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "'w2'"));
  assert_non_null(strstr(err.msg, "no fragments"));
  job_free(&j);
  assert_int_equal(plan_err(&j, &o, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "no shards"));
  add(&j, "w1", 10, "0");
  o.staging_id = "";
  assert_int_equal(plan_err(&j, &o, &err), SF_EINVAL);
  job_free(&j);
}

static void test_missing_expected_fragments_are_listed_by_number(void **state) {
  (void)state;
  job j = {0};
  add(&j, "w1", 10, "0-9");
  add(&j, "w2", 10, "12-60");
  add(&j, "w3", 10, "62-63");
  roaring_bitmap_t *want;
  sf_err err = {0};
  assert_int_equal(sf_fragset_parse("0-63,70", "t", &want, &err), SF_OK);
  sf_plan_opts o = {.staging_id = "s", .expected_fragments = want, .index_type = -1};
  assert_int_equal(plan_err(&j, &o, &err), SF_EINCOMPLETE);
  assert_non_null(strstr(err.msg, "missing: 10-11,61,70"));
  assert_non_null(strstr(err.msg, "61 of 65"));
  /* Covered exactly: plans. */
  sf_fragset_free(want);
  assert_int_equal(sf_fragset_parse("0-9,12-60,62-63", "t", &want, &err), SF_OK);
  o.expected_fragments = want;
  sf_plan *p;
  assert_int_equal(sf_plan_make(j.s, j.n, &o, &p, &err), SF_OK);
  sf_plan_free(p);
  sf_fragset_free(want);
  job_free(&j);
}

static void test_fragments_outside_the_expected_set_are_refused_naming_the_shard(
    void **state) {
  (void)state;
  job j = {0};
  add(&j, "w1", 10, "0-9");
  add(&j, "w2", 10, "10-12");
  roaring_bitmap_t *want;
  sf_err err = {0};
  assert_int_equal(sf_fragset_parse("0-10", "t", &want, &err), SF_OK);
  sf_plan_opts o = {.staging_id = "s", .expected_fragments = want, .index_type = -1};
  assert_int_equal(plan_err(&j, &o, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "'w2'"));
  assert_non_null(strstr(err.msg, "11-12"));
  sf_fragset_free(want);
  job_free(&j);
}

static void test_a_parameter_mismatch_is_refused_naming_the_shard_and_the_field(
    void **state) {
  (void)state;
  sf_seg_params q = params();
  q.kind = 0;
  sf_plan_opts o = {.staging_id = "s", .quantizer = &q, .index_type = -1};
  sf_err err = {0};
  static const char *const fields[] = {"dim", "nlist", "metric", "index type",
                                       "quantizer checksum"};
  for (size_t f = 0; f < 5; f++) {
    job j = {0};
    add(&j, "w1", 10, "0");
    add(&j, "w2", 10, "1");
    sf_seg_params *p = &j.s[1].params;
    switch (f) {
      case 0:
        p->dim = 16, p->code_size = 16;
        break;
      case 1:
        p->nlist = 32;
        break;
      case 2:
        p->metric = SF_DOT;
        break;
      case 3:
        p->type = SF_IVF_FLAT, p->code_size = 32;
        break;
      case 4:
        p->quantizer_checksum = 0xbad;
        break;
    }
    assert_int_equal(plan_err(&j, &o, &err), SF_EMISMATCH);
    assert_non_null(strstr(err.msg, "shard 'w2'"));
    assert_non_null(strstr(err.msg, fields[f]));
    assert_non_null(strstr(err.msg, "the quantizer"));
    /* Without a quantizer the first shard in plan order is the reference. */
    o.quantizer = NULL;
    assert_int_equal(plan_err(&j, &o, &err), SF_EMISMATCH);
    assert_non_null(strstr(err.msg, "shard 'w2'"));
    assert_non_null(strstr(err.msg, "shard 'w1' has"));
    o.quantizer = &q;
    job_free(&j);
  }
}

static void test_a_requested_index_type_the_shards_cannot_become_is_refused(
    void **state) {
  (void)state;
  job j = {0};
  add(&j, "w1", 10, "0");
  sf_plan_opts o = {.staging_id = "s", .index_type = SF_IVF_PQ};
  sf_err err = {0};
  assert_int_equal(plan_err(&j, &o, &err), SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "IVF_PQ was requested"));
  assert_non_null(strstr(err.msg, "IVF_SQ"));
  o.index_type = SF_IVF_SQ;
  sf_plan *p;
  assert_int_equal(sf_plan_make(j.s, j.n, &o, &p, &err), SF_OK);
  sf_plan_free(p);
  job_free(&j);
}

static void test_the_plan_as_json_lists_segments_and_their_shards(void **state) {
  (void)state;
  job j = {0};
  add(&j, "a", 10, "0-3");
  add(&j, "b", 10, "4");
  sf_plan *p = plan_ok(&j, 100);
  json_t *o = sf_plan_to_json(p);
  assert_non_null(o);
  assert_string_equal(json_string_value(json_object_get(o, "index_type")), "IVF_SQ");
  assert_string_equal(json_string_value(json_object_get(o, "fragments")), "0-4");
  assert_string_equal(json_string_value(json_object_get(o, "quantizer_checksum")),
                      "0000000000005eed");
  json_t *segs = json_object_get(o, "segments");
  assert_int_equal(json_array_size(segs), 1);
  json_t *sh = json_object_get(json_array_get(segs, 0), "shards");
  assert_int_equal(json_array_size(sh), 2);
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(sh, 1), "shard_id")), "b");
  json_decref(o);
  sf_plan_free(p);
  job_free(&j);
}

/* ---- staging directories ------------------------------------------------- */

static void write_shard(const char *path, const sf_seg_params *p, const char *frags) {
  sf_err err = {0};
  roaring_bitmap_t *b;
  assert_int_equal(sf_fragset_parse(frags, "t", &b, &err), SF_OK);
  sf_seg_writer *w;
  assert_int_equal(sf_seg_writer_open(path, p, &w, &err), SF_OK);
  uint32_t f = roaring_bitmap_minimum(b);
  sf_rowid ids[3] = {SF_ROWID(f, 0), SF_ROWID(f, 1), SF_ROWID(f, 2)};
  uint8_t codes[3 * 64] = {0};
  assert_int_equal(sf_seg_writer_add_chunk(w, 0, ids, codes, 3, &err), SF_OK);
  assert_int_equal(sf_seg_writer_finish(w, b, &err), SF_OK);
  sf_fragset_free(b);
}

static void test_a_staging_root_is_read_and_planned_against_its_quantizer(void **state) {
  (void)state;
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", tu_path(tu_tmpdir("plan"), "job-42"));
  sf_err err = {0};
  assert_int_equal(sf_fs_mkdirs(dir, &err), SF_OK);
  float x[64 * 8];
  for (int i = 0; i < 64 * 8; i++) x[i] = (float)((i * 7919) % 101) / 101.0f;
  sf_quant_params qp = {
      .type = SF_IVF_SQ, .metric = SF_L2, .dim = 8, .nlist = 4, .seed = 1};
  sf_quant *q;
  assert_int_equal(sf_quant_train(&qp, x, 64, &q, &err), SF_OK);
  assert_int_equal(sf_quant_save(q, tu_path(dir, "quantizer"), &err), SF_OK);
  sf_seg_params p;
  sf_plan_params_from_quant(q, &p);
  p.kind = SF_SEG_KIND_SHARD;
  sf_quant_free(q);
  write_shard(tu_path(dir, "w2.sfshard"), &p, "8-15");
  write_shard(tu_path(dir, "w1.sfshard"), &p, "0-7");
  tu_write_file(tu_path(dir, "w3.sfshard.tmp.1.0"), "junk", 4); /* not a shard */

  sf_plan *plan;
  sf_plan_opts o = {.index_type = -1};
  assert_int_equal(sf_plan_staging(dir, &o, &plan, &err), SF_OK);
  assert_string_equal(plan->staging_id, "job-42");
  expect_groups(plan, "w1|w2");
  assert_int_equal(plan->total_rows, 6);
  assert_non_null(strstr(plan->shards[0].path, "w1.sfshard"));
  sf_plan_free(plan);

  /* A shard from another quantizer is named. */
  p.quantizer_checksum ^= 1;
  write_shard(tu_path(dir, "w3.sfshard"), &p, "16");
  assert_int_equal(sf_plan_staging(dir, &o, &plan, &err), SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "shard 'w3'"));
  assert_non_null(strstr(err.msg, "quantizer checksum"));
  /* A corrupt shard file is named. */
  tu_write_file(tu_path(dir, "w3.sfshard"), "SFSG\r\n\x1a\n too short", 18);
  assert_int_not_equal(sf_plan_staging(dir, &o, &plan, &err), SF_OK);
  assert_non_null(strstr(err.msg, "w3.sfshard"));
  /* No quantizer: named. */
  assert_int_not_equal(sf_plan_staging(tu_tmpdir("plan-empty"), &o, &plan, &err), SF_OK);
  assert_non_null(strstr(err.msg, "quantizer"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_a_budget_packs_shards_greedily_in_order_of_lowest_fragment),
      cmocka_unit_test(test_a_group_may_fill_the_budget_exactly),
      cmocka_unit_test(test_a_shard_larger_than_the_budget_is_a_segment_alone),
      cmocka_unit_test(test_no_budget_means_one_segment_per_shard),
      cmocka_unit_test(test_segment_ids_are_deterministic_readable_and_order_independent),
      cmocka_unit_test(test_segment_ids_are_safe_file_names_whatever_the_staging_id),
      cmocka_unit_test(
          test_overlapping_fragments_are_refused_naming_the_shards_and_fragments),
      cmocka_unit_test(test_duplicate_or_empty_shards_and_empty_jobs_are_refused),
      cmocka_unit_test(test_missing_expected_fragments_are_listed_by_number),
      cmocka_unit_test(
          test_fragments_outside_the_expected_set_are_refused_naming_the_shard),
      cmocka_unit_test(
          test_a_parameter_mismatch_is_refused_naming_the_shard_and_the_field),
      cmocka_unit_test(test_a_requested_index_type_the_shards_cannot_become_is_refused),
      cmocka_unit_test(test_the_plan_as_json_lists_segments_and_their_shards),
      cmocka_unit_test(test_a_staging_root_is_read_and_planned_against_its_quantizer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
