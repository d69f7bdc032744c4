/* test_merge_policy.c - the merge policy on synthetic indexes: when it merges
 * and when it does not, the limits every merge keeps, determinism, segments
 * held by running merges, the orders, the catalog wrapper, invalid input,
 * and a simulated stream of commits that must stay within the documented
 * bounds (docs/compaction.md). */
#include <inttypes.h>
#include <math.h>
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
#include "core/base/rng.h"
#include "core/pipeline/merge_policy.h"

#define K (1ULL << 10)
#define M (1ULL << 20)
#define MAXN 4096

/* An index as data: segment i is "s<i>" (zero-padded), at fragment
 * frag[i] (by default 10 * i, so input order is fragment order). */
typedef struct idx {
  sf_mpolicy_segment s[MAXN];
  char ids[MAXN][16];
  size_t n;
} idx;

static void add(idx *x, uint64_t bytes) {
  size_t i = x->n++;
  assert_true(i < MAXN);
  snprintf(x->ids[i], sizeof x->ids[i], "s%04zu", i);
  x->s[i] = (sf_mpolicy_segment){.id = x->ids[i],
                                 .bytes = bytes,
                                 .num_rows = bytes / 100,
                                 .first_fragment = (uint32_t)(10 * i)};
}

static sf_mpolicy_params params(sf_mpolicy_order order) {
  sf_mpolicy_params p;
  sf_mpolicy_params_default(&p);
  p.order = order;
  return p;
}

static sf_mpolicy_plan *find_ok(const sf_mpolicy_params *p, const idx *x,
                                size_t max_merges) {
  sf_mpolicy_plan *plan = NULL;
  sf_err err = {0};
  sf_code rc = sf_mpolicy_find(p, x->s, x->n, max_merges, &plan, &err);
  if (rc) fail_msg("sf_mpolicy_find failed: %s", err.msg);
  assert_non_null(plan);
  return plan;
}

/* "a,b|c" : the ids of each merge, in the plan's order. */
static void describe(const sf_mpolicy_plan *plan, const sf_mpolicy_segment *segs,
                     char *out, size_t size) {
  out[0] = 0;
  size_t len = 0;
  for (size_t m = 0; m < plan->nmerges; m++)
    for (size_t k = 0; k < plan->merges[m].nsegs; k++)
      len += (size_t)snprintf(out + len, size - len, "%s%s", k ? "," : (m ? "|" : ""),
                              segs[plan->merges[m].segs[k]].id);
  assert_true(len < size);
}

/* What every plan must hold: merges of 2..factor distinct eligible
 * segments, used once, whose bytes and rows are their inputs' sums and stay
 * within the max, each growing its largest input by half unless it reaches
 * past half the max. Returns the number of segments merged. */
static size_t check_plan(const sf_mpolicy_params *p, const sf_mpolicy_plan *plan,
                         const sf_mpolicy_segment *segs, size_t n) {
  uint32_t factor = p->max_merge_at_once < p->segments_per_tier ? p->max_merge_at_once
                                                                : p->segments_per_tier;
  unsigned char *used = calloc(n ? n : 1, 1);
  assert_non_null(used);
  size_t total = 0;
  for (size_t m = 0; m < plan->nmerges; m++) {
    const sf_mpolicy_merge *mg = &plan->merges[m];
    assert_in_range(mg->nsegs, 2, factor);
    uint64_t bytes = 0, rows = 0, largest = 0;
    for (size_t k = 0; k < mg->nsegs; k++) {
      size_t i = mg->segs[k];
      assert_true(i < n);
      assert_false(used[i]);
      used[i] = 1;
      assert_false(segs[i].merging);
      assert_true(segs[i].bytes <= p->max_segment_bytes / 2);
      bytes += segs[i].bytes;
      rows += segs[i].num_rows;
      if (segs[i].bytes > largest) largest = segs[i].bytes;
    }
    assert_int_equal(mg->bytes, bytes);
    assert_int_equal(mg->num_rows, rows);
    assert_true(bytes <= p->max_segment_bytes);
    assert_true(2 * bytes >= 3 * largest || bytes > p->max_segment_bytes / 2);
    assert_true(mg->skew > 0 && mg->skew <= 1);
    total += mg->nsegs;
  }
  free(used);
  return total;
}

/* 1 when the merge's inputs are consecutive among segs in fragment order. */
static int adjacent(const sf_mpolicy_merge *mg, const sf_mpolicy_segment *segs,
                    size_t n) {
  uint32_t lo = UINT32_MAX, hi = 0;
  for (size_t k = 0; k < mg->nsegs; k++) {
    uint32_t f = segs[mg->segs[k]].first_fragment;
    if (f < lo) lo = f;
    if (f > hi) hi = f;
    if (k && segs[mg->segs[k - 1]].first_fragment >= f) return 0; /* listed in order */
  }
  size_t within = 0;
  for (size_t i = 0; i < n; i++)
    if (segs[i].first_fragment >= lo && segs[i].first_fragment <= hi) within++;
  return within == mg->nsegs;
}

static void test_no_merge_while_the_count_is_within_the_allowed_count(void **state) {
  (void)state;
  for (int o = 0; o < 2; o++) {
    sf_mpolicy_params p = params(o);
    idx *x = calloc(1, sizeof *x);
    /* 10 segments of 1M: below the floor, one tier of 10 is allowed. */
    for (int i = 0; i < 10; i++) add(x, 1 * M);
    sf_mpolicy_plan *plan = find_ok(&p, x, 0);
    assert_int_equal(plan->allowed_segments, 10);
    assert_int_equal(plan->eligible, 10);
    assert_int_equal(plan->nmerges, 0);
    sf_mpolicy_plan_free(plan);
    /* The eleventh brings a merge: of up to ten of them, not fewer than two. */
    add(x, 1 * M);
    plan = find_ok(&p, x, 0);
    assert_int_equal(plan->nmerges, 1);
    assert_int_equal(plan->merges[0].nsegs, 10);
    assert_int_equal(plan->merges[0].bytes, 10 * M);
    assert_int_equal(plan->merges[0].num_rows, 10 * (M / 100));
    /* All floored to the same size: perfectly balanced. */
    assert_true(fabs(plan->merges[0].skew - 0.1) < 1e-12);
    /* Equal candidates: the first in order (fragment order, or ids). */
    char got[256];
    describe(plan, x->s, got, sizeof got);
    assert_string_equal(got,
                        "s0000,s0001,s0002,s0003,s0004,s0005,s0006,s0007,s0008,s0009");
    check_plan(&p, plan, x->s, x->n);
    sf_mpolicy_plan_free(plan);
    free(x);
  }
}

static void test_the_allowed_count_grows_by_tiers_from_the_floor(void **state) {
  (void)state;
  sf_mpolicy_params p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  p.floor_segment_bytes = 1;
  p.max_segment_bytes = 1000;
  /* Tiers of 10 at 1, 10 and 100 bytes, then 3000 bytes at the max. */
  assert_int_equal(sf_mpolicy_allowed_segments(&p, 10 + 100 + 1000 + 3000, 1), 33);
  /* Never fewer than segments_per_tier. */
  assert_int_equal(sf_mpolicy_allowed_segments(&p, 0, 0), 10);
  assert_int_equal(sf_mpolicy_allowed_segments(&p, 3, 1), 10);
  /* The smallest segment raises the first tier. */
  assert_int_equal(sf_mpolicy_allowed_segments(&p, 100 + 1000 + 3000, 10), 23);
  /* The merge factor is the smaller of the two parameters. */
  p.max_merge_at_once = 2;
  p.segments_per_tier = 4;
  /* Tiers of 4 at 1, 2, 4, ..., 512 bytes (4 * 1023 bytes), then 1000 at
   * the max. */
  assert_int_equal(sf_mpolicy_allowed_segments(&p, 4 * 1023 + 1000, 1), 10 * 4 + 1);
  /* Huge totals saturate instead of wrapping. */
  p.floor_segment_bytes = 1;
  p.max_segment_bytes = 1;
  assert_int_equal(sf_mpolicy_allowed_segments(&p, UINT64_MAX, 1), UINT64_MAX);
}

static void test_many_small_segments_merge_in_groups_of_at_most_the_merge_factor(
    void **state) {
  (void)state;
  for (int o = 0; o < 2; o++)
    for (uint32_t at_once = 3; at_once <= 12; at_once += 9) {
      sf_mpolicy_params p = params(o);
      p.max_merge_at_once = at_once; /* 3: below segments_per_tier, which then wins */
      idx *x = calloc(1, sizeof *x);
      for (int i = 0; i < 200; i++) add(x, 64 * K + (uint64_t)(i % 7) * K);
      sf_mpolicy_plan *plan = find_ok(&p, x, 0);
      size_t merged = check_plan(&p, plan, x->s, x->n);
      uint32_t factor = at_once < 10 ? at_once : 10;
      /* It merges until what is left fits the allowed count (10). */
      assert_true(x->n - merged <= plan->allowed_segments);
      assert_true(plan->nmerges >= (x->n - plan->allowed_segments) / factor);
      assert_int_equal(plan->merges[0].nsegs,
                       factor); /* all floored alike: the longest */
      sf_mpolicy_plan_free(plan);
      /* A caller that runs one merge at a time asks for one. */
      plan = find_ok(&p, x, 1);
      assert_int_equal(plan->nmerges, 1);
      sf_mpolicy_plan_free(plan);
      free(x);
    }
}

static void test_no_merge_exceeds_the_max_segment_bytes(void **state) {
  (void)state;
  sf_rng r;
  sf_rng_seed(&r, 7);
  for (int round = 0; round < 200; round++) {
    sf_mpolicy_params p = params(round % 2);
    p.floor_segment_bytes = 1 * M;
    p.max_segment_bytes = 100 * M;
    p.segments_per_tier = 2 + (uint32_t)sf_rng_below(&r, 9);
    p.max_merge_at_once = 2 + (uint32_t)sf_rng_below(&r, 30);
    idx *x = calloc(1, sizeof *x);
    size_t n = 1 + sf_rng_below(&r, 300);
    for (size_t i = 0; i < n; i++) add(x, 1 + sf_rng_below(&r, 60 * M));
    sf_mpolicy_plan *plan = find_ok(&p, x, 0);
    check_plan(&p, plan, x->s, x->n); /* <= max, sums, growth, factor */
    sf_mpolicy_plan_free(plan);
    free(x);
  }
}

static void test_segments_over_half_the_max_are_left_alone(void **state) {
  (void)state;
  for (int o = 0; o < 2; o++) {
    sf_mpolicy_params p = params(o);
    p.max_segment_bytes = 100 * M;
    idx *x = calloc(1, sizeof *x);
    for (int i = 0; i < 30; i++) {
      add(x, 50 * M + 1); /* just over half: too large */
      add(x, 2 * M);
    }
    sf_mpolicy_plan *plan = find_ok(&p, x, 0);
    assert_int_equal(plan->too_large, 30);
    assert_int_equal(plan->eligible, 30);
    assert_int_equal(plan->counted_bytes, 30 * 2 * M);
    assert_true(plan->nmerges > 0);
    check_plan(&p, plan, x->s, x->n); /* none of them in a merge */
    sf_mpolicy_plan_free(plan);
    /* Exactly half is not too large. */
    x->n = 0;
    for (int i = 0; i < 11; i++) add(x, 50 * M);
    plan = find_ok(&p, x, 0);
    assert_int_equal(plan->too_large, 0);
    sf_mpolicy_plan_free(plan);
    free(x);
  }
}

static void test_a_merge_that_would_not_grow_its_largest_input_by_half_is_never_taken(
    void **state) {
  (void)state;
  for (int o = 0; o < 2; o++) {
    sf_mpolicy_params p = params(o);
    p.floor_segment_bytes = 100;
    p.max_segment_bytes = 1000;
    p.segments_per_tier = 2;
    p.max_merge_at_once = 2;
    /* Every pair fails the guard (400+100 < 600, 100+30 < 150, ...), so
     * although 5 segments are over the allowed 4, nothing is merged: merging
     * anyway would rewrite the big ones again and again for little. */
    idx *x = calloc(1, sizeof *x);
    uint64_t sizes[] = {400, 100, 30, 9, 2};
    for (int i = 0; i < 5; i++) add(x, sizes[i]);
    sf_mpolicy_plan *plan = find_ok(&p, x, 0);
    assert_int_equal(plan->allowed_segments, 4);
    assert_int_equal(plan->eligible, 5);
    assert_int_equal(plan->nmerges, 0);
    sf_mpolicy_plan_free(plan);
    /* With two small ones alike, those two merge, and the big one stays. */
    x->n = 0;
    uint64_t sizes2[] = {400, 1, 1, 1, 1};
    for (int i = 0; i < 5; i++) add(x, sizes2[i]);
    plan = find_ok(&p, x, 0);
    assert_int_equal(plan->nmerges, 1);
    assert_int_equal(plan->merges[0].bytes, 2);
    check_plan(&p, plan, x->s, x->n);
    sf_mpolicy_plan_free(plan);
    free(x);
  }
}

static void test_balanced_merges_are_preferred(void **state) {
  (void)state;
  for (int o = 0; o < 2; o++) {
    sf_mpolicy_params p = params(o);
    p.floor_segment_bytes = 1 * K;
    /* One of 100M, ten of 10M and ten of 30M (none floored), over the
     * allowed 14: ten alike score best (skew 1/10). */
    idx *x = calloc(1, sizeof *x);
    add(x, 100 * M);
    for (int i = 0; i < 10; i++) add(x, 10 * M);
    for (int i = 0; i < 10; i++) add(x, 30 * M);
    sf_mpolicy_plan *plan = find_ok(&p, x, 0);
    assert_int_equal(plan->allowed_segments, 14);
    assert_int_equal(plan->nmerges, 1);
    const sf_mpolicy_merge *mg = &plan->merges[0];
    assert_int_equal(mg->nsegs, 10);
    assert_true(fabs(mg->skew - 0.1) < 1e-12);
    /* Of the equally balanced runs, the smaller (total^0.05): the 10M ones. */
    assert_int_equal(mg->bytes, 100 * M);
    sf_mpolicy_plan_free(plan);
    free(x);
  }
}

/* Shuffles a copy of x (ids and all) and returns it. */
static idx *shuffled(const idx *x, sf_rng *r) {
  idx *y = calloc(1, sizeof *y);
  assert_non_null(y);
  size_t *perm = malloc(x->n * sizeof *perm);
  for (size_t i = 0; i < x->n; i++) perm[i] = i;
  for (size_t i = x->n; i > 1; i--) {
    size_t j = sf_rng_below(r, i), t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
  for (size_t i = 0; i < x->n; i++) {
    memcpy(y->ids[i], x->ids[perm[i]], sizeof y->ids[i]);
    y->s[i] = x->s[perm[i]];
    y->s[i].id = y->ids[i];
  }
  y->n = x->n;
  free(perm);
  return y;
}

static void test_the_same_segments_in_any_order_give_the_same_merges(void **state) {
  (void)state;
  sf_rng r;
  sf_rng_seed(&r, 42);
  for (int o = 0; o < 2; o++)
    for (int round = 0; round < 20; round++) {
      sf_mpolicy_params p = params(o);
      p.floor_segment_bytes = 4 * M;
      p.max_segment_bytes = 256 * M;
      idx *x = calloc(1, sizeof *x);
      size_t n = 20 + sf_rng_below(&r, 200);
      for (size_t i = 0; i < n; i++)
        /* Many equal sizes, so that ties must be broken the same way. */
        add(x, (1 + sf_rng_below(&r, 4)) * (sf_rng_below(&r, 2) ? M : 64 * K));
      static char want[1 << 16], got[1 << 16];
      sf_mpolicy_plan *plan = find_ok(&p, x, 0);
      assert_true(plan->nmerges > 0);
      describe(plan, x->s, want, sizeof want);
      sf_mpolicy_plan_free(plan);
      plan = find_ok(&p, x, 0); /* again: the same */
      describe(plan, x->s, got, sizeof got);
      assert_string_equal(got, want);
      sf_mpolicy_plan_free(plan);
      for (int t = 0; t < 5; t++) {
        idx *y = shuffled(x, &r);
        plan = find_ok(&p, y, 0);
        describe(plan, y->s, got, sizeof got);
        assert_string_equal(got, want);
        sf_mpolicy_plan_free(plan);
        free(y);
      }
      free(x);
    }
}

static void test_segments_held_by_a_running_merge_are_neither_merged_nor_spanned(
    void **state) {
  (void)state;
  for (int o = 0; o < 2; o++) {
    sf_mpolicy_params p = params(o);
    idx *x = calloc(1, sizeof *x);
    for (int i = 0; i < 40; i++) add(x, 1 * M);
    for (int i = 5; i < 40; i += 6) x->s[i].merging = 1; /* 6 of them */
    sf_mpolicy_plan *plan = find_ok(&p, x, 0);
    assert_int_equal(plan->merging, 6);
    assert_int_equal(plan->eligible, 34);
    /* Their bytes still count: they will be there, merged. */
    assert_int_equal(plan->counted_bytes, 40 * M);
    assert_true(plan->nmerges > 0);
    check_plan(&p, plan, x->s, x->n); /* asserts none is held */
    if (o == SF_MPOLICY_ORDER_FRAGMENTS)
      for (size_t m = 0; m < plan->nmerges; m++) {
        /* Runs lie between held segments: at most 5 long. */
        assert_true(plan->merges[m].contiguous);
        assert_true(adjacent(&plan->merges[m], x->s, x->n));
        assert_true(plan->merges[m].nsegs <= 5);
      }
    sf_mpolicy_plan_free(plan);
    free(x);
  }
}

static void test_fragment_order_merges_only_adjacent_segments(void **state) {
  (void)state;
  /* Alternating sizes in fragment order: size order would merge all the
   * small ones together, across the others; fragment order may not. */
  idx *x = calloc(1, sizeof *x);
  for (int i = 0; i < 60; i++) add(x, i % 2 ? 8 * M : 1 * M);
  sf_mpolicy_params p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  sf_mpolicy_plan *plan = find_ok(&p, x, 0);
  assert_true(plan->nmerges > 0);
  check_plan(&p, plan, x->s, x->n);
  for (size_t m = 0; m < plan->nmerges; m++) {
    assert_true(plan->merges[m].contiguous);
    assert_true(adjacent(&plan->merges[m], x->s, x->n));
  }
  sf_mpolicy_plan_free(plan);
  p.order = SF_MPOLICY_ORDER_SIZE;
  plan = find_ok(&p, x, 1);
  assert_int_equal(plan->nmerges, 1);
  assert_false(adjacent(&plan->merges[0], x->s, x->n));
  assert_false(plan->merges[0].contiguous);
  sf_mpolicy_plan_free(plan);
  free(x);
}

static void test_fragment_order_falls_back_to_size_order_when_no_adjacent_run_will_do(
    void **state) {
  (void)state;
  /* Small segments each fenced in by segments too large to merge: no two are
   * adjacent, yet 12 small ones are over the allowed 10. Rather than miss
   * the bound, the policy merges them out of order. */
  sf_mpolicy_params p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  p.max_segment_bytes = 64 * M;
  idx *x = calloc(1, sizeof *x);
  for (int i = 0; i < 12; i++) {
    add(x, 40 * M);
    add(x, 1 * M);
  }
  sf_mpolicy_plan *plan = find_ok(&p, x, 0);
  assert_int_equal(plan->too_large, 12);
  assert_int_equal(plan->nmerges, 1);
  assert_int_equal(plan->merges[0].nsegs, 10);
  assert_false(plan->merges[0].contiguous);
  check_plan(&p, plan, x->s, x->n);
  sf_mpolicy_plan_free(plan);
  free(x);
}

static void test_empty_single_and_oversized_indexes_want_no_merge(void **state) {
  (void)state;
  for (int o = 0; o < 2; o++) {
    sf_mpolicy_params p = params(o);
    idx *x = calloc(1, sizeof *x);
    sf_mpolicy_plan *plan = NULL;
    sf_err err = {0};
    assert_int_equal(sf_mpolicy_find(&p, NULL, 0, 0, &plan, &err), SF_OK);
    assert_int_equal(plan->nmerges, 0);
    assert_int_equal(plan->eligible, 0);
    assert_int_equal(plan->allowed_segments, 10);
    sf_mpolicy_plan_free(plan);
    add(x, 1);
    plan = find_ok(&p, x, 0);
    assert_int_equal(plan->nmerges, 0);
    sf_mpolicy_plan_free(plan);
    /* Zero-byte segments are segments too. */
    x->n = 0;
    for (int i = 0; i < 11; i++) add(x, 0);
    plan = find_ok(&p, x, 0);
    assert_int_equal(plan->nmerges, 1);
    check_plan(&p, plan, x->s, x->n);
    sf_mpolicy_plan_free(plan);
    /* All too large, or as large as a catalog allows: nothing to do. */
    x->n = 0;
    for (int i = 0; i < 500; i++) add(x, i % 2 ? (uint64_t)INT64_MAX : 600 * M);
    plan = find_ok(&p, x, 0);
    assert_int_equal(plan->too_large, 500);
    assert_int_equal(plan->nmerges, 0);
    sf_mpolicy_plan_free(plan);
    sf_mpolicy_plan_free(NULL);
    free(x);
  }
}

static void expect_invalid(const sf_mpolicy_params *p, const char *needle) {
  sf_err err = {0};
  assert_int_equal(sf_mpolicy_params_check(p, &err), SF_EINVAL);
  if (!strstr(err.msg, needle)) fail_msg("'%s' does not name '%s'", err.msg, needle);
  /* find refuses the same parameters. */
  sf_mpolicy_plan *plan = (sf_mpolicy_plan *)&err;
  sf_mpolicy_segment s = {.id = "a", .bytes = 1};
  assert_int_equal(sf_mpolicy_find(p, &s, 1, 0, &plan, NULL), SF_EINVAL);
  assert_null(plan);
}

static void test_invalid_parameters_are_refused_naming_the_flag(void **state) {
  (void)state;
  sf_mpolicy_params p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  sf_err err = {0};
  assert_int_equal(sf_mpolicy_params_check(&p, &err), SF_OK);
  p.floor_segment_bytes = 0;
  expect_invalid(&p, "--floor-segment-bytes");
  p.floor_segment_bytes = p.max_segment_bytes + 1;
  expect_invalid(&p, "--floor-segment-bytes");
  p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  p.max_segment_bytes = 0;
  expect_invalid(&p, "--max-segment-bytes");
  p.max_segment_bytes = SF_MPOLICY_MAX_BYTES + 1;
  expect_invalid(&p, "--max-segment-bytes");
  p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  p.segments_per_tier = 1;
  expect_invalid(&p, "--segments-per-tier");
  p.segments_per_tier = SF_MPOLICY_MAX_FANIN + 1;
  expect_invalid(&p, "--segments-per-tier");
  p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  p.max_merge_at_once = 1;
  expect_invalid(&p, "--max-merge-at-once");
  p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  p.order = (sf_mpolicy_order)7;
  expect_invalid(&p, "order");
  assert_int_equal(sf_mpolicy_params_check(NULL, &err), SF_EINVAL);
  /* The edges are fine. */
  p = params(SF_MPOLICY_ORDER_SIZE);
  p.floor_segment_bytes = p.max_segment_bytes = SF_MPOLICY_MAX_BYTES;
  p.segments_per_tier = p.max_merge_at_once = 2;
  assert_int_equal(sf_mpolicy_params_check(&p, &err), SF_OK);
}

static void expect_bad_segments(const sf_mpolicy_params *p, const idx *x, sf_code code,
                                const char *needle) {
  sf_mpolicy_plan *plan = NULL;
  sf_err err = {0};
  assert_int_equal(sf_mpolicy_find(p, x->s, x->n, 0, &plan, &err), code);
  assert_null(plan);
  if (!strstr(err.msg, needle)) fail_msg("'%s' does not name '%s'", err.msg, needle);
}

static void test_invalid_segments_are_refused_naming_them(void **state) {
  (void)state;
  sf_mpolicy_params p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  idx *x = calloc(1, sizeof *x);
  add(x, 1);
  add(x, 2);
  add(x, 3);
  strcpy(x->ids[2], "s0001");
  expect_bad_segments(&p, x, SF_EINVAL, "s0001 appears twice");
  strcpy(x->ids[2], "s0002");
  x->s[2].first_fragment = x->s[1].first_fragment;
  expect_bad_segments(&p, x, SF_EINVAL, "both start at fragment 10");
  /* Size order does not look at fragments. */
  p.order = SF_MPOLICY_ORDER_SIZE;
  sf_mpolicy_plan *plan = find_ok(&p, x, 0);
  sf_mpolicy_plan_free(plan);
  x->s[1].id = "";
  expect_bad_segments(&p, x, SF_EINVAL, "segment 1");
  x->s[1].id = NULL;
  expect_bad_segments(&p, x, SF_EINVAL, "no id");
  x->s[1].id = x->ids[1];
  x->s[0].bytes = (uint64_t)INT64_MAX + 1;
  expect_bad_segments(&p, x, SF_EINVAL, "s0000");
  x->s[0].bytes = 1;
  sf_err err = {0};
  assert_int_equal(sf_mpolicy_find(&p, NULL, 3, 0, &plan, &err), SF_EINVAL);
  assert_int_equal(sf_mpolicy_find(&p, x->s, SF_MPOLICY_MAX_SEGMENTS + 1, 0, &plan, &err),
                   SF_ELIMIT);
  free(x);
}

/* A catalog version's index, in memory as sf_catalog_open_* returns it. */
static void test_a_catalog_index_is_read_in_catalog_order(void **state) {
  (void)state;
  enum { N = 14 };
  sf_catalog_segment segs[N];
  char names[N][16];
  memset(segs, 0, sizeof segs);
  for (int i = 0; i < N; i++) {
    /* Catalog order differs from fragment order: reversed. */
    snprintf(names[i], sizeof names[i], "seg-%02d", i);
    segs[i].info.segment_id = names[i];
    segs[i].info.bytes = 1 * M;
    segs[i].info.num_rows = 1000;
    uint32_t lo = (uint32_t)(100 * (N - i));
    segs[i].info.fragments = roaring_bitmap_from_range(lo, lo + 10, 1);
  }
  sf_catalog_index ix = {.name = "emb_idx", .segs = segs, .nsegs = N};
  sf_mpolicy_params p = params(SF_MPOLICY_ORDER_FRAGMENTS);
  const char *held[] = {"seg-03", "not-in-the-index"};
  sf_mpolicy_plan *plan = NULL;
  sf_err err = {0};
  assert_int_equal(sf_mpolicy_find_index(&p, &ix, held, 2, 0, &plan, &err), SF_OK);
  assert_int_equal(plan->merging, 1);
  assert_int_equal(plan->eligible, 13);
  assert_int_equal(plan->nmerges, 1);
  /* In fragment order, as indices into ix.segs: 13, 12, ... down to 4 (the
   * held seg-03 ends the run, which holds the 10 before it). */
  const sf_mpolicy_merge *mg = &plan->merges[0];
  assert_int_equal(mg->nsegs, 10);
  for (size_t k = 0; k < mg->nsegs; k++) assert_int_equal(mg->segs[k], 13 - k);
  assert_int_equal(mg->num_rows, 10000);
  sf_mpolicy_plan_free(plan);
  /* A segment without fragments cannot be placed. */
  roaring_bitmap_clear(segs[5].info.fragments);
  assert_int_equal(sf_mpolicy_find_index(&p, &ix, NULL, 0, 0, &plan, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "seg-05"));
  assert_non_null(strstr(err.msg, "emb_idx"));
  assert_null(plan);
  assert_int_equal(sf_mpolicy_find_index(&p, NULL, NULL, 0, 0, &plan, &err), SF_EINVAL);
  for (int i = 0; i < N; i++) sf_fragset_free(segs[i].info.fragments);
}

/* ---- a stream of commits ------------------------------------------------ */

typedef struct sim {
  sf_mpolicy_segment s[MAXN];
  char ids[MAXN][16];
  unsigned depth[MAXN];
  size_t n;
  long next;
  uint64_t ingested, written, largest;
  unsigned max_depth;
} sim;

static void sim_add(sim *m, uint64_t bytes, uint32_t frag, unsigned depth) {
  size_t i = m->n++;
  assert_true(i < MAXN);
  snprintf(m->ids[i], sizeof m->ids[i], "x%07ld", m->next++);
  m->s[i] = (sf_mpolicy_segment){
      .id = m->ids[i], .bytes = bytes, .num_rows = bytes / 64, .first_fragment = frag};
  m->depth[i] = depth;
  if (bytes > m->largest) m->largest = bytes;
}

/* Applies plan's merges to m: inputs go, one segment per merge comes. */
static void sim_apply(sim *m, const sf_mpolicy_plan *plan) {
  unsigned char gone[MAXN] = {0};
  uint64_t bytes[MAXN / 2];
  uint32_t frag[MAXN / 2];
  unsigned depth[MAXN / 2];
  for (size_t k = 0; k < plan->nmerges; k++) {
    const sf_mpolicy_merge *mg = &plan->merges[k];
    bytes[k] = 0, frag[k] = UINT32_MAX, depth[k] = 0;
    for (size_t j = 0; j < mg->nsegs; j++) {
      size_t i = mg->segs[j];
      gone[i] = 1;
      bytes[k] += m->s[i].bytes;
      if (m->s[i].first_fragment < frag[k]) frag[k] = m->s[i].first_fragment;
      if (m->depth[i] + 1 > depth[k]) depth[k] = m->depth[i] + 1;
    }
    m->written += bytes[k];
  }
  size_t w = 0;
  for (size_t i = 0; i < m->n; i++)
    if (!gone[i]) {
      memmove(m->ids[w], m->ids[i], sizeof m->ids[w]);
      m->s[w] = m->s[i];
      m->s[w].id = m->ids[w];
      m->depth[w] = m->depth[i];
      w++;
    }
  m->n = w;
  for (size_t k = 0; k < plan->nmerges; k++) {
    sim_add(m, bytes[k], frag[k], depth[k]);
    if (depth[k] > m->max_depth) m->max_depth = depth[k];
  }
}

static void test_a_stream_of_commits_stays_within_the_documented_bounds(void **state) {
  (void)state;
  for (int o = 0; o < 2; o++) {
    sf_mpolicy_params p = params(o);
    p.floor_segment_bytes = 256 * K;
    p.max_segment_bytes = 64 * M;
    sim *m = calloc(1, sizeof *m);
    sf_rng r;
    sf_rng_seed(&r, 2024);
    uint64_t smallest = UINT64_MAX;
    size_t max_count = 0, out_of_order = 0, merges = 0;
    for (uint32_t job = 0; job < 3000; job++) {
      /* Log-normal around 4K, and 1 in 200 a job of up to 40M. */
      double v = 4096 * exp(sf_rng_normal(&r));
      uint64_t bytes =
          sf_rng_below(&r, 200) ? (uint64_t)v + 1 : 1 + sf_rng_below(&r, 40 * M);
      if (bytes < smallest) smallest = bytes;
      sim_add(m, bytes, job, 0);
      m->ingested += bytes;
      m->written += bytes;
      sf_mpolicy_plan *plan;
      for (;;) {
        sf_err err = {0};
        assert_int_equal(sf_mpolicy_find(&p, m->s, m->n, 0, &plan, &err), SF_OK);
        check_plan(&p, plan, m->s, m->n);
        for (size_t k = 0; k < plan->nmerges; k++) {
          merges++;
          if (o == SF_MPOLICY_ORDER_FRAGMENTS) {
            if (plan->merges[k].contiguous)
              assert_true(adjacent(&plan->merges[k], m->s, m->n));
            else
              out_of_order++;
          }
        }
        if (!plan->nmerges) break;
        sim_apply(m, plan);
        sf_mpolicy_plan_free(plan);
      }
      /* The count bound: what the policy may merge fits its allowed count. */
      if (plan->eligible > plan->allowed_segments)
        fail_msg("after job %u: %zu eligible segments, %" PRIu64 " allowed", job,
                 plan->eligible, plan->allowed_segments);
      if (m->n > max_count) max_count = m->n;
      sf_mpolicy_plan_free(plan);
    }
    /* Write amplification within the hard bound; no byte rewritten more
     * often than a 1.5x growth per merge allows; nothing over the max. */
    double wa = (double)m->written / (double)m->ingested;
    double hard_rewrites =
        1 + log((double)p.max_segment_bytes / (2.0 * (double)smallest)) / log(1.5);
    assert_true(m->max_depth <= hard_rewrites);
    assert_true(wa <= 1 + hard_rewrites);
    assert_true(wa > 1.5); /* it did merge */
    assert_true(m->largest <= p.max_segment_bytes);
    assert_true(max_count < 60);
    assert_true(merges > 100);
    assert_true(out_of_order * 100 <= merges); /* adjacency is the rule */
    free(m);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_no_merge_while_the_count_is_within_the_allowed_count),
      cmocka_unit_test(test_the_allowed_count_grows_by_tiers_from_the_floor),
      cmocka_unit_test(
          test_many_small_segments_merge_in_groups_of_at_most_the_merge_factor),
      cmocka_unit_test(test_no_merge_exceeds_the_max_segment_bytes),
      cmocka_unit_test(test_segments_over_half_the_max_are_left_alone),
      cmocka_unit_test(
          test_a_merge_that_would_not_grow_its_largest_input_by_half_is_never_taken),
      cmocka_unit_test(test_balanced_merges_are_preferred),
      cmocka_unit_test(test_the_same_segments_in_any_order_give_the_same_merges),
      cmocka_unit_test(
          test_segments_held_by_a_running_merge_are_neither_merged_nor_spanned),
      cmocka_unit_test(test_fragment_order_merges_only_adjacent_segments),
      cmocka_unit_test(
          test_fragment_order_falls_back_to_size_order_when_no_adjacent_run_will_do),
      cmocka_unit_test(test_empty_single_and_oversized_indexes_want_no_merge),
      cmocka_unit_test(test_invalid_parameters_are_refused_naming_the_flag),
      cmocka_unit_test(test_invalid_segments_are_refused_naming_them),
      cmocka_unit_test(test_a_catalog_index_is_read_in_catalog_order),
      cmocka_unit_test(test_a_stream_of_commits_stays_within_the_documented_bounds),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
