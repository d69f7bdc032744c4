/*
 * merge_policy.c - see merge_policy.h.
 *
 * Modeled on Lucene's TieredMergePolicy.findMerges/doFindMerges/score (the
 * allowed-count loop, the too-large cut at half the maximum, the skew score
 * with floored sizes times total^0.05, the 1.5x growth guard of
 * LUCENE-10574); written here, not translated. Deletes (Lucene's pro-rated
 * sizes and its nonDelRatio factor), forced merges and Lucene's "one
 * maximal merge per call" are left out: segforge has no deleted rows yet, a
 * forced merge is a different request, and the caller bounds how many
 * merges it takes at once (max_merges).
 *
 * Both orders share the skeleton: sort once, classify each segment, then
 * pick one merge at a time until the segments left fit the allowed count.
 * They differ in what a candidate is. In size order (Lucene) it starts at a
 * segment and takes the next ones that still fit, skipping those that do
 * not ("packing"); Lucene then only looks at the longest run from each
 * start, which in size order already holds the best balanced choice. In
 * fragment order a candidate is a run of adjacent segments, so it stops at
 * the first segment that does not fit or may not be merged, and every length
 * from 2 to the merge factor is scored: a short run of small segments just
 * before a big one would otherwise never be seen. When no run qualifies but
 * the index is over its allowed count, the pick falls back to size order:
 * adjacency is kept wherever it costs nothing, never at the price of the
 * bound (docs/compaction.md shows how often each happens).
 */
#include "core/pipeline/merge_policy.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* A merge's result must be at least GROWTH_NUM/GROWTH_DEN times its largest
 * input (Lucene's 1.5: otherwise one big segment could be rewritten again
 * and again to absorb a little, O(n^2) bytes over time). */
#define GROWTH_NUM 3u
#define GROWTH_DEN 2u
/* Gently favour smaller merges (Lucene's exponent): enough to break near
 * ties, too little to prefer a badly skewed small merge to a balanced one. */
#define SIZE_EXPONENT 0.05

enum { USABLE = 0, MERGING, TOO_LARGE, PICKED };

static uint64_t sat_add(uint64_t a, uint64_t b) {
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint32_t merge_factor(const sf_mpolicy_params *p) {
  return p->max_merge_at_once < p->segments_per_tier ? p->max_merge_at_once
                                                     : p->segments_per_tier;
}

void sf_mpolicy_params_default(sf_mpolicy_params *p) {
  memset(p, 0, sizeof *p);
  p->floor_segment_bytes = SF_MPOLICY_DEFAULT_FLOOR_SEGMENT_BYTES;
  p->max_segment_bytes = SF_MPOLICY_DEFAULT_MAX_SEGMENT_BYTES;
  p->segments_per_tier = SF_MPOLICY_DEFAULT_SEGMENTS_PER_TIER;
  p->max_merge_at_once = SF_MPOLICY_DEFAULT_MAX_MERGE_AT_ONCE;
  p->order = SF_MPOLICY_ORDER_FRAGMENTS;
}

sf_code sf_mpolicy_params_check(const sf_mpolicy_params *p, sf_err *err) {
  if (!p) return sf_err_set(err, SF_EINVAL, "no merge policy parameters given");
  if (p->max_segment_bytes < 1 || p->max_segment_bytes > SF_MPOLICY_MAX_BYTES)
    return sf_err_set(err, SF_EINVAL,
                      "max segment bytes (--max-segment-bytes) is %" PRIu64
                      "; it must be 1..%" PRIu64 " (1P)",
                      p->max_segment_bytes, (uint64_t)SF_MPOLICY_MAX_BYTES);
  if (p->floor_segment_bytes < 1 || p->floor_segment_bytes > p->max_segment_bytes)
    return sf_err_set(err, SF_EINVAL,
                      "floor segment bytes (--floor-segment-bytes) is %" PRIu64
                      "; it must be 1..the max segment bytes (%" PRIu64 ")",
                      p->floor_segment_bytes, p->max_segment_bytes);
  if (p->segments_per_tier < 2 || p->segments_per_tier > SF_MPOLICY_MAX_FANIN)
    return sf_err_set(err, SF_EINVAL,
                      "segments per tier (--segments-per-tier) is %" PRIu32
                      "; it must be 2..%u",
                      p->segments_per_tier, SF_MPOLICY_MAX_FANIN);
  if (p->max_merge_at_once < 2 || p->max_merge_at_once > SF_MPOLICY_MAX_FANIN)
    return sf_err_set(err, SF_EINVAL,
                      "max merge at once (--max-merge-at-once) is %" PRIu32
                      "; it must be 2..%u",
                      p->max_merge_at_once, SF_MPOLICY_MAX_FANIN);
  if (p->order != SF_MPOLICY_ORDER_FRAGMENTS && p->order != SF_MPOLICY_ORDER_SIZE)
    return sf_err_set(err, SF_EINVAL,
                      "merge order is %d; it must be fragments (0) or size (1)",
                      (int)p->order);
  return SF_OK;
}

uint64_t sf_mpolicy_allowed_segments(const sf_mpolicy_params *p, uint64_t bytes,
                                     uint64_t min_segment_bytes) {
  const double max = (double)p->max_segment_bytes, tier = p->segments_per_tier;
  double level =
      (double)(min_segment_bytes > p->floor_segment_bytes ? min_segment_bytes
                                                          : p->floor_segment_bytes);
  if (level > max) level = max;
  /* The level grows by the merge factor (>= 2) up to max <= 2^50: at most
   * about 50 rounds. */
  double left = (double)bytes, allowed = 0;
  for (;;) {
    double count = left / level;
    if (count < tier || level >= max) {
      allowed += ceil(count);
      break;
    }
    allowed += tier;
    left -= tier * level;
    level = fmin(max, level * merge_factor(p));
  }
  if (allowed < tier) allowed = tier;
  return allowed >= 0x1p63 ? UINT64_MAX : (uint64_t)allowed;
}

/* The state of one call. */
typedef struct finder {
  const sf_mpolicy_params *p;
  const sf_mpolicy_segment *segs;
  size_t n;
  const sf_mpolicy_segment **by_frag; /* ORDER_FRAGMENTS: all, in fragment order */
  const sf_mpolicy_segment **by_size; /* all, largest first */
  unsigned char *state;               /* per input index */
  size_t *run;                        /* scratch: input indices of a candidate */
  size_t *best;                       /* the best candidate so far: input indices */
  size_t nbest;
  uint64_t best_bytes;
  double best_skew, best_score;
  /* ORDER_FRAGMENTS: the best run from each position of by_frag (len 0:
   * none), kept between picks; a pick only changes the runs that could
   * reach its segments, so each pick costs O(n) comparisons plus
   * O(factor^2) runs scored, not O(n * factor) runs. */
  struct start {
    double score, skew;
    uint64_t bytes;
    uint32_t len;
  } * starts;
  size_t *pos; /* per input index: its position in by_frag */
} finder;

/* ---- ordering ----------------------------------------------------------- */

static int cmp_id(const void *a, const void *b) {
  const sf_mpolicy_segment *x = *(const sf_mpolicy_segment *const *)a;
  const sf_mpolicy_segment *y = *(const sf_mpolicy_segment *const *)b;
  return strcmp(x->id, y->id);
}

static int cmp_fragments(const void *a, const void *b) {
  const sf_mpolicy_segment *x = *(const sf_mpolicy_segment *const *)a;
  const sf_mpolicy_segment *y = *(const sf_mpolicy_segment *const *)b;
  if (x->first_fragment != y->first_fragment)
    return x->first_fragment < y->first_fragment ? -1 : 1;
  return strcmp(x->id, y->id);
}

static int cmp_size(const void *a, const void *b) {
  const sf_mpolicy_segment *x = *(const sf_mpolicy_segment *const *)a;
  const sf_mpolicy_segment *y = *(const sf_mpolicy_segment *const *)b;
  if (x->bytes != y->bytes) return x->bytes > y->bytes ? -1 : 1; /* largest first */
  return strcmp(x->id, y->id);
}

/* Checks the segments and sorts pointers to them: by size, and (ORDER_FRAGMENTS)
 * by fragment. */
static sf_code order_segments(finder *f, sf_err *err) {
  const sf_mpolicy_segment *segs = f->segs, **ord = f->by_size;
  const size_t n = f->n;
  for (size_t i = 0; i < n; i++) {
    if (!segs[i].id || !*segs[i].id)
      return sf_err_set(err, SF_EINVAL, "segment %zu of the index has no id", i);
    if (segs[i].bytes > INT64_MAX)
      return sf_err_set(err, SF_EINVAL, "segment %s: %" PRIu64 " bytes is out of range",
                        segs[i].id, segs[i].bytes);
    ord[i] = &segs[i];
  }
  qsort(ord, n, sizeof *ord, cmp_id);
  for (size_t i = 1; i < n; i++)
    if (!strcmp(ord[i - 1]->id, ord[i]->id))
      return sf_err_set(err, SF_EINVAL, "segment id %s appears twice in the index",
                        ord[i]->id);
  if (f->by_frag) {
    memcpy(f->by_frag, ord, n * sizeof *ord);
    qsort(f->by_frag, n, sizeof *ord, cmp_fragments);
    for (size_t i = 1; i < n; i++)
      if (f->by_frag[i - 1]->first_fragment == f->by_frag[i]->first_fragment)
        return sf_err_set(err, SF_EINVAL,
                          "segments %s and %s both start at fragment %" PRIu32
                          ": the segments of an index must have disjoint fragments",
                          f->by_frag[i - 1]->id, f->by_frag[i]->id,
                          f->by_frag[i]->first_fragment);
  }
  qsort(ord, n, sizeof *ord, cmp_size);
  return SF_OK;
}

/* ---- candidates --------------------------------------------------------- */

static size_t idx_of(const finder *f, const sf_mpolicy_segment *s) {
  return (size_t)(s - f->segs);
}

static uint64_t floored(const finder *f, uint64_t bytes) {
  return bytes > f->p->floor_segment_bytes ? bytes : f->p->floor_segment_bytes;
}

/* Keeps run[k] as the best candidate when it scores lower. */
static void consider(finder *f, size_t k, uint64_t bytes, double skew) {
  double score = skew * pow((double)bytes, SIZE_EXPONENT);
  if (f->nbest && !(score < f->best_score)) return; /* ties: the earlier one */
  memcpy(f->best, f->run, k * sizeof *f->run);
  f->nbest = k;
  f->best_bytes = bytes;
  f->best_skew = skew;
  f->best_score = score;
}

/* Fragment order: the best run starting at position s of by_frag, of 2..factor
 * eligible segments adjacent in fragment order, that fits max_segment_bytes
 * and grows its largest input by half. Any segment that may not be merged
 * now (too large, held by a running merge, picked in this call) ends a run:
 * stepping over it would interleave fragment ranges. Of equal scores, the
 * shorter run. */
static void score_start(finder *f, size_t s) {
  const uint32_t factor = merge_factor(f->p);
  const uint64_t max = f->p->max_segment_bytes;
  struct start *st = &f->starts[s];
  st->len = 0;
  size_t first = idx_of(f, f->by_frag[s]);
  if (f->state[first] != USABLE) return;
  uint64_t bytes = f->segs[first].bytes, fl_sum = floored(f, bytes);
  uint64_t largest = bytes, fl_largest = fl_sum;
  for (size_t e = s + 1; e < f->n && e - s < factor; e++) {
    size_t i = idx_of(f, f->by_frag[e]);
    uint64_t b = f->segs[i].bytes;
    if (f->state[i] != USABLE || bytes + b > max) break; /* sums <= 2^50 */
    bytes += b;
    fl_sum += floored(f, b);
    if (b > largest) largest = b;
    if (floored(f, b) > fl_largest) fl_largest = floored(f, b);
    if (GROWTH_DEN * bytes < GROWTH_NUM * largest) continue;
    double skew = (double)fl_largest / (double)fl_sum;
    double score = skew * pow((double)bytes, SIZE_EXPONENT);
    if (st->len && !(score < st->score)) continue;
    *st = (struct start){
        .score = score, .skew = skew, .bytes = bytes, .len = (uint32_t)(e - s + 1)};
  }
}

/* Fragment order: the best run of all (the first of equal ones), from the
 * runs kept per start; `changed` lists the input indices picked since the
 * last call (NULL: score every start). */
static void find_contiguous(finder *f, const size_t *changed, size_t nchanged) {
  const size_t reach = merge_factor(f->p) - 1;
  if (!changed) {
    for (size_t s = 0; s < f->n; s++) score_start(f, s);
  } else {
    for (size_t k = 0; k < nchanged; k++) {
      size_t q = f->pos[changed[k]];
      for (size_t s = q > reach ? q - reach : 0; s <= q; s++) score_start(f, s);
    }
  }
  size_t best = SIZE_MAX;
  for (size_t s = 0; s < f->n; s++)
    if (f->starts[s].len &&
        (best == SIZE_MAX || f->starts[s].score < f->starts[best].score))
      best = s;
  if (best == SIZE_MAX) return;
  const struct start *st = &f->starts[best];
  for (uint32_t k = 0; k < st->len; k++) f->best[k] = idx_of(f, f->by_frag[best + k]);
  f->nbest = st->len;
  f->best_bytes = st->bytes;
  f->best_skew = st->skew;
  f->best_score = st->score;
}

/* Size order (Lucene): from each eligible segment, largest first, the next
 * eligible ones that still fit, up to the merge factor. */
static void find_packed(finder *f) {
  const uint32_t factor = merge_factor(f->p);
  const uint64_t max = f->p->max_segment_bytes;
  for (size_t s = 0; s < f->n; s++) {
    if (f->state[idx_of(f, f->by_size[s])] != USABLE) continue;
    uint64_t bytes = 0, fl_sum = 0;
    size_t k = 0;
    int too_large = 0;
    for (size_t e = s; e < f->n && k < factor; e++) {
      size_t i = idx_of(f, f->by_size[e]);
      if (f->state[i] != USABLE) continue;
      uint64_t b = f->segs[i].bytes;
      if (bytes + b > max) {
        too_large = 1; /* skip it: a smaller one further on may still fit */
        continue;
      }
      bytes += b;
      fl_sum += floored(f, b);
      f->run[k++] = i;
    }
    if (k < 2) continue;
    /* A run that hit the maximum is as large as merges get and will not be
     * merged again, so its skew does not matter (Lucene scores it as
     * perfectly balanced) and the growth guard does not apply. */
    uint64_t largest = f->by_size[s]->bytes;
    if (!too_large && GROWTH_DEN * bytes < GROWTH_NUM * largest) continue;
    /* Further starts only give shorter runs of smaller segments. */
    if (f->nbest && !too_large && k < factor) break;
    double skew = too_large ? 1.0 / factor : (double)floored(f, largest) / (double)fl_sum;
    consider(f, k, bytes, skew);
  }
}

/* ---- the plan ----------------------------------------------------------- */

void sf_mpolicy_plan_free(sf_mpolicy_plan *plan) {
  if (!plan) return;
  if (plan->merges && plan->nmerges) free((void *)plan->merges[0].segs);
  free(plan->merges);
  free(plan);
}

static sf_code oom(sf_err *err) {
  return sf_err_set(err, SF_ENOMEM, "out of memory choosing merges");
}

sf_code sf_mpolicy_find(const sf_mpolicy_params *p, const sf_mpolicy_segment *segs,
                        size_t n, size_t max_merges, sf_mpolicy_plan **out, sf_err *err) {
  *out = NULL;
  sf_code rc = sf_mpolicy_params_check(p, err);
  if (rc) return rc;
  if (n > SF_MPOLICY_MAX_SEGMENTS)
    return sf_err_set(err, SF_ELIMIT, "the index has %zu segments (at most %u)", n,
                      SF_MPOLICY_MAX_SEGMENTS);
  if (n && !segs) return sf_err_set(err, SF_EINVAL, "no segments given");
  const size_t cap = n ? n : 1;
  finder f = {.p = p, .segs = segs, .n = n};
  sf_mpolicy_plan *plan = calloc(1, sizeof *plan);
  size_t *pool = malloc(cap * sizeof *pool);
  f.by_size = malloc(cap * sizeof *f.by_size);
  if (p->order == SF_MPOLICY_ORDER_FRAGMENTS) {
    f.by_frag = malloc(cap * sizeof *f.by_frag);
    f.starts = malloc(cap * sizeof *f.starts);
    f.pos = malloc(cap * sizeof *f.pos);
  }
  f.state = malloc(cap);
  f.run = malloc(cap * sizeof *f.run);
  f.best = malloc(cap * sizeof *f.best);
  if (plan) plan->merges = calloc(cap / 2 + 1, sizeof *plan->merges); /* >= 2 segs each */
  if (!plan || !plan->merges || !pool || !f.by_size || !f.state || !f.run || !f.best ||
      (p->order == SF_MPOLICY_ORDER_FRAGMENTS && (!f.by_frag || !f.starts || !f.pos))) {
    rc = oom(err);
    goto done;
  }
  if ((rc = order_segments(&f, err))) goto done;
  if (f.by_frag)
    for (size_t s = 0; s < n; s++) f.pos[idx_of(&f, f.by_frag[s])] = s;

  /* Classify, and count what the allowed segment count is computed from:
   * the bytes of every segment not too large, running merges' inputs
   * included (they will still be there, merged), as Lucene does. */
  uint64_t min_bytes = UINT64_MAX;
  for (size_t i = 0; i < n; i++) {
    const sf_mpolicy_segment *s = &segs[i];
    if (s->bytes < min_bytes) min_bytes = s->bytes;
    if (s->merging) {
      f.state[i] = MERGING;
      plan->merging++;
    } else if (s->bytes > p->max_segment_bytes / 2) {
      f.state[i] = TOO_LARGE;
      plan->too_large++;
      continue;
    } else {
      f.state[i] = USABLE;
      plan->eligible++;
    }
    plan->counted_bytes = sat_add(plan->counted_bytes, s->bytes);
  }
  if (min_bytes == UINT64_MAX) min_bytes = 0;
  plan->allowed_segments = sf_mpolicy_allowed_segments(p, plan->counted_bytes, min_bytes);

  size_t left = plan->eligible, used = 0;
  while (left > plan->allowed_segments && (!max_merges || plan->nmerges < max_merges)) {
    f.nbest = 0;
    int contiguous = 0;
    if (f.by_frag) {
      /* The previous pick's segments, or NULL the first time. */
      const size_t *last = plan->nmerges ? plan->merges[plan->nmerges - 1].segs : NULL;
      find_contiguous(&f, last, last ? plan->merges[plan->nmerges - 1].nsegs : 0);
      contiguous = f.nbest > 0;
    }
    /* In fragment order, only when no adjacent run will do: the bound on
     * the segment count comes first (docs/compaction.md). */
    if (!f.nbest) find_packed(&f);
    if (!f.nbest) break; /* nothing passes the growth guard: leave it be */
    sf_mpolicy_merge *m = &plan->merges[plan->nmerges++];
    size_t *dst = pool + used;
    for (size_t k = 0; k < f.nbest; k++) {
      size_t i = f.best[k];
      dst[k] = i;
      f.state[i] = PICKED;
      m->num_rows = sat_add(m->num_rows, segs[i].num_rows);
    }
    m->segs = dst;
    m->nsegs = f.nbest;
    m->bytes = f.best_bytes;
    m->skew = f.best_skew;
    m->score = f.best_score;
    m->contiguous = contiguous;
    used += f.nbest;
    left -= f.nbest;
  }
  if (!plan->nmerges) free(pool); /* plan_free frees the pool through merges[0] */
  pool = NULL;
  *out = plan;
  plan = NULL;
done:
  free(pool);
  sf_mpolicy_plan_free(plan);
  free(f.by_size);
  free(f.by_frag);
  free(f.starts);
  free(f.pos);
  free(f.state);
  free(f.run);
  free(f.best);
  return rc;
}

/* ---- from a catalog version --------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

sf_code sf_mpolicy_find_index(const sf_mpolicy_params *p, const sf_catalog_index *ix,
                              const char *const *merging_ids, size_t nmerging,
                              size_t max_merges, sf_mpolicy_plan **out, sf_err *err) {
  *out = NULL;
  if (!ix) return sf_err_set(err, SF_EINVAL, "no index given");
  if (ix->nsegs > SF_MPOLICY_MAX_SEGMENTS)
    return sf_err_set(err, SF_ELIMIT, "index %s has %zu segments (at most %u)", ix->name,
                      ix->nsegs, SF_MPOLICY_MAX_SEGMENTS);
  if (nmerging && !merging_ids) return sf_err_set(err, SF_EINVAL, "no merging ids given");
  sf_mpolicy_segment *segs = malloc((ix->nsegs ? ix->nsegs : 1) * sizeof *segs);
  const char **held = malloc((nmerging ? nmerging : 1) * sizeof *held);
  sf_code rc = SF_OK;
  if (!segs || !held) {
    rc = oom(err);
    goto done;
  }
  for (size_t k = 0; k < nmerging; k++) {
    if (!merging_ids[k]) {
      rc = sf_err_set(err, SF_EINVAL, "merging id %zu is missing", k);
      goto done;
    }
    held[k] = merging_ids[k];
  }
  qsort(held, nmerging, sizeof *held, cmp_str);
  for (size_t i = 0; i < ix->nsegs; i++) {
    const sf_seginfo *s = &ix->segs[i].info;
    if (!s->fragments || roaring_bitmap_is_empty(s->fragments)) {
      rc = sf_err_set(err, SF_EINVAL, "index %s: segment %s covers no fragments",
                      ix->name, s->segment_id ? s->segment_id : "(no id)");
      goto done;
    }
    const char *key = s->segment_id;
    segs[i] = (sf_mpolicy_segment){
        .id = s->segment_id,
        .bytes = s->bytes,
        .num_rows = s->num_rows,
        .first_fragment = roaring_bitmap_minimum(s->fragments),
        .merging = key && bsearch(&key, held, nmerging, sizeof *held, cmp_str) != NULL,
    };
  }
  rc = sf_mpolicy_find(p, segs, ix->nsegs, max_merges, out, err);
  if (rc) sf_err_prefix(err, "index %s", ix->name);
done:
  free(segs);
  free(held);
  return rc;
}
