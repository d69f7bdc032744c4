/*
 * merge_policy.h - which committed segments of one logical index to merge
 * (docs/compaction.md): a tiered policy modeled on Lucene's
 * TieredMergePolicy (lucene/core/src/java/org/apache/lucene/index/
 * TieredMergePolicy.java), written anew for IVF segments.
 *
 * The policy is a pure function from the segments of one index (plain data:
 * id, bytes, rows, lowest fragment, whether a merge already holds it) to the
 * merges it wants. It does no I/O and keeps no state, so the same input
 * always gives the same merges, whatever the order of the input array; the
 * caller (compaction) runs them by block copy and swaps them in with one
 * catalog version. It runs after every commit, so it is cheap: a sort, then
 * O(n * max_merge_at_once) per merge it returns.
 *
 * How it decides, as Lucene does:
 *   1. Segments over half of max_segment_bytes are "too large": left alone
 *      (a merge could at most double them) and not counted below.
 *   2. The allowed segment count follows from the bytes of the others:
 *      tiers of segments_per_tier segments whose size grows by the merge
 *      factor (min(max_merge_at_once, segments_per_tier)) from the floor
 *      (sf_mpolicy_allowed_segments).
 *   3. While more segments than allowed are left, the best-scoring candidate
 *      is picked and its segments set aside. A candidate is a run of 2 to
 *      merge-factor segments whose bytes stay within max_segment_bytes; its
 *      score (lower is better) is its skew - the largest input over the
 *      total, each size raised to the floor first - times total^0.05 to
 *      favour smaller merges gently. A candidate whose result would not be
 *      at least 1.5 times its largest input is never taken (Lucene's guard
 *      against rewriting a big segment again and again for little growth).
 *
 * Where segforge differs: by default a candidate is a run of segments
 * ADJACENT IN FRAGMENT ORDER (by lowest fragment id), so that a merged
 * segment covers a contiguous stretch of the index's fragments, as
 * Lucene's LogMergePolicy and Elasticsearch's time-series indices keep
 * (elastic/elasticsearch#92684). Incremental jobs append fragments in time
 * order; contiguous segments let a retention delete drop whole segments and
 * keep a fragment rewrite (which joins adjacent fragments) to the few
 * segments at its ends; search does not care either way. Only when no
 * adjacent run passes while the index is over its allowed count does it
 * take Lucene's choice instead (sf_mpolicy_merge.contiguous says which), so
 * the bound on the segment count holds as for Lucene. Lucene's own rule
 * alone is SF_MPOLICY_ORDER_SIZE, the reference the simulation
 * (bench/bench_merge_policy.c) compares with.
 */
#ifndef SF_MERGE_POLICY_H
#define SF_MERGE_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/catalog/catalog.h"

/* Limits, checked by sf_mpolicy_params_check and sf_mpolicy_find. */
#define SF_MPOLICY_MAX_BYTES (1ULL << 50)               /* floor and max segment bytes */
#define SF_MPOLICY_MAX_FANIN 1024u                      /* segments per tier, at once */
#define SF_MPOLICY_MAX_SEGMENTS SF_CATALOG_MAX_SEGMENTS /* input segments */

/* Defaults (docs/compaction.md says why). */
#define SF_MPOLICY_DEFAULT_FLOOR_SEGMENT_BYTES (16ULL << 20)
#define SF_MPOLICY_DEFAULT_MAX_SEGMENT_BYTES (1ULL << 30)
#define SF_MPOLICY_DEFAULT_SEGMENTS_PER_TIER 10u
#define SF_MPOLICY_DEFAULT_MAX_MERGE_AT_ONCE 10u

/* Which segments may be merged together. */
typedef enum sf_mpolicy_order {
  /* Runs of segments adjacent in fragment order (the default); size order
   * only when no such run will do. */
  SF_MPOLICY_ORDER_FRAGMENTS = 0,
  /* Runs of segments adjacent in size order, any fragments: Lucene's
   * TieredMergePolicy, kept as the reference the simulation compares with. */
  SF_MPOLICY_ORDER_SIZE = 1,
} sf_mpolicy_order;

typedef struct sf_mpolicy_params {
  /* Smaller segments count as this size when tiers are counted and merges
   * scored, so that many tiny segments are merged eagerly (1..max). */
  uint64_t floor_segment_bytes;
  /* No merge produces more bytes than this; segments over half of it are
   * left alone (1..SF_MPOLICY_MAX_BYTES). */
  uint64_t max_segment_bytes;
  /* Segments allowed per tier before a merge is wanted (2..1024). */
  uint32_t segments_per_tier;
  /* Segments one merge may read (2..1024). */
  uint32_t max_merge_at_once;
  sf_mpolicy_order order;
} sf_mpolicy_params;

/* The defaults above, SF_MPOLICY_ORDER_FRAGMENTS. */
void sf_mpolicy_params_default(sf_mpolicy_params *p);

/* SF_EINVAL naming the parameter (and the flag that sets it, such as
 * --segments-per-tier), its value and the range it must be in. */
sf_code sf_mpolicy_params_check(const sf_mpolicy_params *p, sf_err *err);

/* The allowed segment count for `bytes` in segments no larger than half of
 * max_segment_bytes, the smallest `min_segment_bytes`: segments_per_tier
 * per tier, tiers of floor * f^k bytes per segment (f the merge factor,
 * capped at max_segment_bytes, starting from the larger of the floor and
 * the smallest segment), and at least segments_per_tier. p must be valid. */
uint64_t sf_mpolicy_allowed_segments(const sf_mpolicy_params *p, uint64_t bytes,
                                     uint64_t min_segment_bytes);

/* One segment of the index, as the policy sees it. */
typedef struct sf_mpolicy_segment {
  const char *id;          /* unique, non-empty; orders ties (borrowed) */
  uint64_t bytes;          /* file size, at most INT64_MAX */
  uint64_t num_rows;       /* summed into merges; not otherwise used */
  uint32_t first_fragment; /* lowest fragment id: the order of ORDER_FRAGMENTS */
  /* 1: a running merge reads it. It is counted in the index's bytes but is
   * not merged again, and no run of adjacent segments spans it. */
  int merging;
} sf_mpolicy_segment;

/* A merge the policy wants. */
typedef struct sf_mpolicy_merge {
  /* Indices into the input array, in fragment order for a contiguous merge,
   * largest first otherwise; points into the plan. */
  const size_t *segs;
  size_t nsegs;
  uint64_t bytes;    /* sum of the inputs' bytes: what the merge writes */
  uint64_t num_rows; /* sum of the inputs' rows (saturating) */
  double skew;       /* largest / total, sizes raised to the floor */
  double score;      /* lower is better */
  /* ORDER_FRAGMENTS: 1 when the inputs are adjacent in fragment order; 0
   * for a merge in size order, taken because no adjacent run would do.
   * Always 0 in ORDER_SIZE. */
  int contiguous;
} sf_mpolicy_merge;

/* What the policy decided, and what it saw (for logs and metrics). */
typedef struct sf_mpolicy_plan {
  sf_mpolicy_merge *merges; /* best first; disjoint */
  size_t nmerges;
  uint64_t allowed_segments; /* sf_mpolicy_allowed_segments of what follows */
  uint64_t counted_bytes;    /* bytes of segments not too large (saturating) */
  size_t eligible;           /* segments that could be merged */
  size_t too_large;          /* over max_segment_bytes / 2: left alone */
  size_t merging;            /* held by running merges */
} sf_mpolicy_plan;

/* Decides the merges of one index's n segments (segs[n], n may be 0):
 * while more than the allowed count of eligible segments are left, the best
 * candidate (see the top of this file). At most max_merges merges (0: no
 * limit) - a caller that runs k merges at once asks for k. Deterministic:
 * ties go to the run that comes first in the policy's order, sizes then
 * ids breaking ties, so a permuted input gives the same merges (as ids).
 * SF_EINVAL for invalid parameters, a missing, empty or repeated id, bytes
 * over INT64_MAX, or (ORDER_FRAGMENTS) two segments with the same lowest
 * fragment, which the catalog's disjoint fragments rule out; SF_ELIMIT for
 * n over SF_MPOLICY_MAX_SEGMENTS; SF_ENOMEM. *out (always set on success,
 * with nmerges 0 when nothing is wanted) is freed by sf_mpolicy_plan_free. */
sf_code sf_mpolicy_find(const sf_mpolicy_params *p, const sf_mpolicy_segment *segs,
                        size_t n, size_t max_merges, sf_mpolicy_plan **out, sf_err *err);

/* The same for a logical index of a catalog version: its segments (ids,
 * bytes, rows, lowest fragment) in catalog order, so that the merges' segs
 * are indices into ix->segs. merging_ids[nmerging] name the segments that
 * running merges hold (ids not in the index are ignored). */
sf_code sf_mpolicy_find_index(const sf_mpolicy_params *p, const sf_catalog_index *ix,
                              const char *const *merging_ids, size_t nmerging,
                              size_t max_merges, sf_mpolicy_plan **out, sf_err *err);

/* Accepts NULL. */
void sf_mpolicy_plan_free(sf_mpolicy_plan *plan);

#endif
