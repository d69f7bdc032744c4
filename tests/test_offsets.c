/* test_offsets.c - the watermark per partition: what may be committed after
 * every order of reads, completions and rebalances. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "consumer/offsets.h"

static sf_offsets *fresh(int32_t p, uint32_t *gen) {
  sf_offsets *o;
  sf_err err = {0};
  assert_int_equal(sf_offsets_new(&o, &err), SF_OK);
  assert_int_equal(sf_offsets_assign(o, p, gen, &err), SF_OK);
  return o;
}

static void track(sf_offsets *o, int32_t p, int64_t off) {
  sf_err err = {0};
  assert_int_equal(sf_offsets_track(o, p, off, &err), SF_OK);
}

static void a_partition_with_nothing_read_has_no_watermark(void **state) {
  uint32_t g;
  sf_offsets *o = fresh(0, &g);
  assert_true(g != 0);
  assert_int_equal(sf_offsets_watermark(o, 0), -1);
  assert_int_equal(sf_offsets_watermark(o, 1), -1); /* not assigned */
  int32_t p[4];
  int64_t w[4];
  assert_int_equal(sf_offsets_uncommitted(o, p, w, 4), 0);
  sf_offsets_free(o);
}

static void the_watermark_stays_at_the_oldest_pending_message(void **state) {
  uint32_t g;
  sf_offsets *o = fresh(0, &g);
  for (int64_t i = 10; i < 15; i++) track(o, 0, i);
  assert_int_equal(sf_offsets_watermark(o, 0), 10);
  assert_int_equal(sf_offsets_pending(o), 5);
  /* Later jobs finish first: the watermark must not move. */
  assert_int_equal(sf_offsets_done(o, 0, g, 12), 1);
  assert_int_equal(sf_offsets_done(o, 0, g, 14), 1);
  assert_int_equal(sf_offsets_watermark(o, 0), 10);
  assert_int_equal(sf_offsets_done(o, 0, g, 10), 1);
  assert_int_equal(sf_offsets_watermark(o, 0), 11);
  assert_int_equal(sf_offsets_done(o, 0, g, 11), 1);
  assert_int_equal(sf_offsets_watermark(o, 0), 13);
  assert_int_equal(sf_offsets_done(o, 0, g, 13), 1);
  assert_int_equal(sf_offsets_pending(o), 0);
  sf_offsets_free(o);
}

static void with_nothing_pending_the_watermark_is_one_past_the_newest_read(void **state) {
  uint32_t g;
  sf_offsets *o = fresh(3, &g);
  track(o, 3, 41);
  assert_int_equal(sf_offsets_done(o, 3, g, 41), 1);
  assert_int_equal(sf_offsets_watermark(o, 3), 42);
  track(o, 3, 50); /* a gap (compacted topic, transaction markers) */
  assert_int_equal(sf_offsets_watermark(o, 3), 50);
  sf_offsets_done(o, 3, g, 50);
  assert_int_equal(sf_offsets_watermark(o, 3), 51);
  sf_offsets_free(o);
}

static void done_twice_or_for_an_unknown_offset_changes_nothing(void **state) {
  uint32_t g;
  sf_offsets *o = fresh(0, &g);
  track(o, 0, 5);
  track(o, 0, 6);
  assert_int_equal(sf_offsets_done(o, 0, g, 6), 1);
  assert_int_equal(sf_offsets_done(o, 0, g, 6), 0);
  assert_int_equal(sf_offsets_done(o, 0, g, 7), 0);
  assert_int_equal(sf_offsets_done(o, 0, g, 4), 0);
  assert_int_equal(sf_offsets_done(o, 1, g, 5), 0);
  assert_int_equal(sf_offsets_pending(o), 1);
  assert_int_equal(sf_offsets_watermark(o, 0), 5);
  sf_offsets_free(o);
}

static void a_position_of_an_earlier_assignment_is_ignored(void **state) {
  uint32_t g1, g2;
  sf_err err = {0};
  sf_offsets *o = fresh(2, &g1);
  track(o, 2, 100);
  sf_offsets_revoke(o, 2);
  assert_int_equal(sf_offsets_generation(o, 2), 0);
  assert_int_equal(sf_offsets_pending(o), 0);
  assert_int_equal(sf_offsets_assign(o, 2, &g2, &err), SF_OK);
  assert_true(g2 != g1);
  track(o, 2, 100); /* the new owner read it again */
  /* The job dropped by the revoke ends late: it must not release it. */
  assert_int_equal(sf_offsets_done(o, 2, g1, 100), 0);
  assert_int_equal(sf_offsets_watermark(o, 2), 100);
  assert_int_equal(sf_offsets_done(o, 2, g2, 100), 1);
  assert_int_equal(sf_offsets_watermark(o, 2), 101);
  sf_offsets_free(o);
}

static void tracking_an_unassigned_partition_is_refused(void **state) {
  uint32_t g;
  sf_err err = {0};
  sf_offsets *o = fresh(0, &g);
  assert_int_equal(sf_offsets_track(o, 1, 5, &err), SF_EINVAL);
  assert_int_equal(sf_offsets_track(o, 0, -3, &err), SF_EINVAL);
  assert_int_equal(sf_offsets_assign(o, -1, &g, &err), SF_EINVAL);
  assert_int_equal(sf_offsets_assign(o, SF_OFFSETS_MAX_PARTITION + 1, &g, &err),
                   SF_EINVAL);
  sf_offsets_free(o);
}

static void partitions_are_independent(void **state) {
  uint32_t g0, g7;
  sf_err err = {0};
  sf_offsets *o = fresh(0, &g0);
  assert_int_equal(sf_offsets_assign(o, 7, &g7, &err), SF_OK);
  track(o, 0, 1);
  track(o, 7, 1000);
  track(o, 7, 1001);
  sf_offsets_done(o, 7, g7, 1000);
  assert_int_equal(sf_offsets_watermark(o, 0), 1);
  assert_int_equal(sf_offsets_watermark(o, 7), 1001);
  assert_int_equal(sf_offsets_pending_on(o, 0), 1);
  assert_int_equal(sf_offsets_pending_on(o, 7), 1);
  assert_int_equal(sf_offsets_done(o, 0, g7, 1), 0); /* wrong generation for 0 */
  sf_offsets_free(o);
}

static void only_watermarks_that_moved_are_reported_for_commit(void **state) {
  uint32_t g0, g1;
  sf_err err = {0};
  sf_offsets *o = fresh(0, &g0);
  assert_int_equal(sf_offsets_assign(o, 1, &g1, &err), SF_OK);
  track(o, 0, 0);
  track(o, 1, 0);
  int32_t p[4];
  int64_t w[4];
  size_t n = sf_offsets_uncommitted(o, p, w, 4);
  assert_int_equal(n, 2);
  assert_int_equal(w[0], 0);
  sf_offsets_committed(o, 0, 0);
  sf_offsets_committed(o, 1, 0);
  assert_int_equal(sf_offsets_uncommitted(o, p, w, 4), 0);
  sf_offsets_done(o, 1, g1, 0);
  n = sf_offsets_uncommitted(o, p, w, 4);
  assert_int_equal(n, 1);
  assert_int_equal(p[0], 1);
  assert_int_equal(w[0], 1);
  assert_int_equal(sf_offsets_uncommitted(o, p, w, 0), 0); /* respects max */
  sf_offsets_free(o);
}

static void a_seek_back_keeps_the_pending_set_in_order(void **state) {
  uint32_t g;
  sf_offsets *o = fresh(0, &g);
  track(o, 0, 10);
  track(o, 0, 20);
  sf_offsets_done(o, 0, g, 10);
  track(o, 0, 5); /* read again from an earlier offset */
  assert_int_equal(sf_offsets_watermark(o, 0), 5);
  track(o, 0, 20); /* already pending: counted once */
  assert_int_equal(sf_offsets_pending(o), 2);
  sf_offsets_done(o, 0, g, 5);
  assert_int_equal(sf_offsets_watermark(o, 0), 20);
  sf_offsets_done(o, 0, g, 20);
  assert_int_equal(sf_offsets_watermark(o, 0), 21);
  sf_offsets_free(o);
}

/* A long-lived job at the front while many others come and go: the result
 * must equal a brute-force model, and memory must follow the pending count. */
static void a_random_order_of_completions_matches_a_model(void **state) {
  uint32_t g;
  sf_offsets *o = fresh(0, &g);
  enum { N = 20000 };
  static unsigned char done[N];
  memset(done, 0, sizeof done);
  uint64_t rng = 0x9e3779b97f4a7c15ULL;
  int64_t next = 0;
  for (int step = 0; step < 200000; step++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    if (next < N && (rng % 3 != 0 || next == 0)) {
      track(o, 0, next++);
    } else {
      int64_t k = (int64_t)(rng >> 8) % next;
      if (k == 0 && step < 150000) continue; /* keep offset 0 pending a long time */
      int r = sf_offsets_done(o, 0, g, k);
      assert_int_equal(r, !done[k]);
      done[k] = 1;
    }
    int64_t want = next ? next : -1;
    for (int64_t i = 0; i < next; i++)
      if (!done[i]) {
        want = i;
        break;
      }
    if ((step & 255) == 0 || want != sf_offsets_watermark(o, 0))
      assert_int_equal(sf_offsets_watermark(o, 0), want);
  }
  sf_offsets_free(o);
}

/* The memory bound counts pending offsets, not arrays left at their
 * high-water mark once the offsets are done. */
static void pending_offsets_are_counted_for_the_memory_bound(void **state) {
  uint32_t gen;
  sf_offsets *o = fresh(0, &gen);
  for (int64_t i = 0; i < 1000; i++) track(o, 0, i);
  assert_int_equal(sf_offsets_bytes(o), 1000 * 32);
  for (int64_t i = 0; i < 1000; i += 2) sf_offsets_done(o, 0, gen, i);
  assert_int_equal(sf_offsets_bytes(o), 500 * 32);
  for (int64_t i = 1; i < 1000; i += 2) sf_offsets_done(o, 0, gen, i);
  assert_int_equal(sf_offsets_bytes(o), 0);
  sf_offsets_free(o);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_partition_with_nothing_read_has_no_watermark),
      cmocka_unit_test(the_watermark_stays_at_the_oldest_pending_message),
      cmocka_unit_test(with_nothing_pending_the_watermark_is_one_past_the_newest_read),
      cmocka_unit_test(done_twice_or_for_an_unknown_offset_changes_nothing),
      cmocka_unit_test(a_position_of_an_earlier_assignment_is_ignored),
      cmocka_unit_test(tracking_an_unassigned_partition_is_refused),
      cmocka_unit_test(partitions_are_independent),
      cmocka_unit_test(only_watermarks_that_moved_are_reported_for_commit),
      cmocka_unit_test(a_seek_back_keeps_the_pending_set_in_order),
      cmocka_unit_test(a_random_order_of_completions_matches_a_model),
      cmocka_unit_test(pending_offsets_are_counted_for_the_memory_bound),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
