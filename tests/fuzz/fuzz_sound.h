/*
 * fuzz_sound.h - the oracle every fuzz target applies to a fragment bitmap
 * a decoder accepted: it must behave as the set of its own values. CRoaring
 * answers set operations from its containers' layout (sorted arrays,
 * disjoint runs, counted bitsets), so a bitmap whose bytes broke that layout
 * would, rebuilt from its values, compare unequal, count differently or
 * miss its own members. Aborts on a finding.
 */
#ifndef SF_FUZZ_SOUND_H
#define SF_FUZZ_SOUND_H

#include <roaring/roaring.h>
#include <stdio.h>
#include <stdlib.h>

static void fuzz_check_bitmap(const roaring_bitmap_t *b, const char *what) {
  if (!b) return;
  uint64_t n = roaring_bitmap_get_cardinality(b);
  if (n > (1u << 22)) return; /* keep each input fast */
  uint32_t *v = malloc((n ? n : 1) * sizeof *v);
  if (!v) return;
  roaring_bitmap_to_uint32_array(b, v);
  roaring_bitmap_t *r = roaring_bitmap_of_ptr(n, v);
  const char *bad = NULL;
  for (uint64_t i = 1; i < n && !bad; i++)
    if (v[i] <= v[i - 1]) bad = "its values are not strictly increasing";
  if (!bad && (!r || roaring_bitmap_get_cardinality(r) != n))
    bad = "its values hold a different count";
  if (!bad && !roaring_bitmap_equals(b, r)) bad = "it differs from the set of its values";
  if (!bad && roaring_bitmap_and_cardinality(b, r) != n)
    bad = "it intersects the set of its values wrongly";
  for (uint64_t i = 0; i < n && !bad; i += 1 + n / 64)
    if (!roaring_bitmap_contains(b, v[i])) bad = "it lacks one of its own values";
  if (bad) {
    fprintf(stderr, "%s: an accepted fragment bitmap is unsound: %s\n", what, bad);
    abort();
  }
  if (r) roaring_bitmap_free(r);
  free(v);
}

#endif
