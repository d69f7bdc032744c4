/*
 * catalog_compaction.c - sf_catalog_commit_compaction: merged segments swap
 * out their inputs in one new version, or nothing changes (catalog.h).
 *
 * It runs in the commit loop every commit shares (catalog_commit.c: shared
 * lock, the merged file checked under it, put-if-absent publication,
 * retries against the newest version). What is particular is the check
 * each attempt makes against that newest version: every input must still
 * be one of the index's segments. A merge is planned from some version N;
 * another compactor or a replace may have swapped an input out since, and
 * then the merge holds rows the index no longer has (or lacks rows it
 * has): publishing it would resurrect or duplicate them. So a missing input
 * refuses the commit, and the caller discards the merge. Because each
 * attempt re-checks after a lost race, two compactions of overlapping
 * inputs can never both succeed: the second sees the first's version.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/clock.h"
#include "core/base/fragset.h"
#include "core/catalog/catalog_internal.h"

#define FRAG_LIST_MAX 8 /* ranges shown in a refusal */

static sf_code check_request(const sf_catalog_compaction_req *r, sf_err *err) {
  sf_code rc;
  if (!r->dataset) return sf_err_set(err, SF_EINVAL, "no dataset given");
  if ((rc = sf_catalog_check_id("index name", r->index_name, err))) return rc;
  if (!r->merged) return sf_err_set(err, SF_EINVAL, "no merged segment given");
  if ((rc = sf_catalog_check_seginfo(r->merged, err))) {
    sf_err_prefix(err, "merged segment %s",
                  r->merged->segment_id ? r->merged->segment_id : "?");
    return rc;
  }
  if (!r->ninputs || !r->inputs)
    return sf_err_set(err, SF_EINVAL, "a compaction needs at least one input segment");
  if (r->ninputs > SF_CATALOG_MAX_SEGMENTS)
    return sf_err_set(err, SF_ELIMIT, "%zu input segments (at most %u)", r->ninputs,
                      SF_CATALOG_MAX_SEGMENTS);
  for (size_t i = 0; i < r->ninputs; i++) {
    if ((rc = sf_catalog_check_id("input segment id", r->inputs[i], err))) return rc;
    if (!strcmp(r->inputs[i], r->merged->segment_id))
      return sf_err_set(err, SF_EINVAL, "segment %s is both an input and the merge",
                        r->inputs[i]);
    for (size_t k = 0; k < i; k++)
      if (!strcmp(r->inputs[k], r->inputs[i]))
        return sf_err_set(err, SF_EINVAL, "input segment %s is given twice",
                          r->inputs[i]);
  }
  return SF_OK;
}

static ptrdiff_t find_seg(const sf_catalog_index *ix, const char *id) {
  for (size_t j = 0; j < ix->nsegs; j++)
    if (!strcmp(ix->segs[j].info.segment_id, id)) return (ptrdiff_t)j;
  return -1;
}

/* The merged segment must hold exactly its inputs' rows: the same
 * fragments, the same row count, the index's parameters. */
static sf_code check_merged(const sf_catalog_index *ix, const uint8_t *input,
                            const sf_seginfo *m, sf_err *err) {
  char av[32], bv[32];
  const char *field = sf_catalog_index_param_diff(ix, m, av, bv);
  if (field)
    return sf_err_set(err, SF_EMISMATCH,
                      "merged segment %s has %s %s but index %s has %s %s", m->segment_id,
                      field, bv, ix->name, field, av);
  roaring_bitmap_t *all = roaring_bitmap_create();
  if (!all) return sf_err_set(err, SF_ENOMEM, "out of memory");
  uint64_t rows = 0;
  for (size_t j = 0; j < ix->nsegs; j++) {
    if (!input[j]) continue;
    roaring_bitmap_or_inplace(all, ix->segs[j].info.fragments);
    rows += ix->segs[j].info.num_rows;
  }
  sf_code rc = SF_OK;
  if (!roaring_bitmap_equals(all, m->fragments)) {
    roaring_bitmap_t *x = roaring_bitmap_xor(all, m->fragments);
    char *l = x ? sf_fragset_format_short(x, FRAG_LIST_MAX) : NULL;
    rc = sf_err_set(err, SF_EMISMATCH,
                    "merged segment %s does not cover its inputs' fragments exactly: "
                    "they differ on %s",
                    m->segment_id, l ? l : "?");
    free(l);
    sf_fragset_free(x);
  } else if (rows != m->num_rows) {
    rc = sf_err_set(err, SF_EMISMATCH,
                    "merged segment %s holds %" PRIu64 " rows, its inputs %" PRIu64,
                    m->segment_id, m->num_rows, rows);
  }
  sf_fragset_free(all);
  return rc;
}

/* The merged segment's id and file must be new to the catalog. */
static sf_code check_new(const sf_catalog *c, const sf_seginfo *m, sf_err *err) {
  for (size_t i = 0; i < c->nix; i++)
    for (size_t j = 0; j < c->ix[i].nsegs; j++) {
      const sf_seginfo *e = &c->ix[i].segs[j].info;
      if (!strcmp(e->segment_id, m->segment_id) || !strcmp(e->path, m->path))
        return sf_err_set(err, SF_EEXIST,
                          "segment %s (%s) is already in the catalog, in index %s",
                          e->segment_id, e->path, c->ix[i].name);
    }
  return SF_OK;
}

/* Replaces the inputs (input[j] set) by the merged segment, at the place
 * of the first of them. */
static sf_code swap(sf_catalog_index *ix, const uint8_t *input, const sf_seginfo *m,
                    uint64_t v, sf_err *err) {
  size_t nin = 0;
  for (size_t j = 0; j < ix->nsegs; j++) nin += input[j];
  sf_catalog_segment *segs = calloc(ix->nsegs - nin + 1, sizeof *segs);
  if (!segs) return sf_err_set(err, SF_ENOMEM, "out of memory");
  size_t n = 0;
  int placed = 0;
  sf_code rc = SF_OK;
  for (size_t j = 0; j < ix->nsegs; j++) {
    if (!input[j]) {
      segs[n++] = ix->segs[j];
      continue;
    }
    sf_seginfo_clear(&ix->segs[j].info);
    free(ix->segs[j].staging_id);
    if (placed++ || rc) continue;
    sf_catalog_segment *s = &segs[n++];
    if ((rc = sf_catalog_seginfo_copy(&s->info, m, err))) continue;
    /* Its inputs' shard lists would make it grow with every merge. */
    for (uint32_t k = 0; k < s->info.num_shards; k++) free(s->info.shard_ids[k]);
    free(s->info.shard_ids);
    s->info.shard_ids = NULL;
    s->info.num_shards = 0;
    s->added_in = v;
    if (!(s->staging_id = strdup(m->segment_id)))
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  free(ix->segs);
  ix->segs = segs;
  ix->nsegs = n;
  return rc;
}

static sf_code compaction_attempt(void *ctx, const char *ds, sf_catalog *c,
                                  sf_catalog_outcome *out, sf_err *err) {
  const sf_catalog_compaction_req *r = ctx;
  (void)ds;
  sf_catalog_index *ix = NULL;
  for (size_t i = 0; i < c->nix && !ix; i++)
    if (!strcmp(c->ix[i].name, r->index_name)) ix = &c->ix[i];
  if (!ix)
    return sf_err_set(err, SF_ENOTFOUND,
                      "the catalog (version %" PRIu64 ") has no index %s to compact",
                      c->version, r->index_name);
  ptrdiff_t merged = find_seg(ix, r->merged->segment_id);
  uint8_t *input = calloc(ix->nsegs + 1, 1);
  if (!input) return sf_err_set(err, SF_ENOMEM, "out of memory");
  const char *gone = NULL;
  for (size_t i = 0; i < r->ninputs; i++) {
    ptrdiff_t j = find_seg(ix, r->inputs[i]);
    if (j < 0 && !gone) gone = r->inputs[i];
    if (j >= 0) input[j] = 1;
  }
  sf_code rc = SF_OK;
  size_t live = 0;
  for (size_t j = 0; j < ix->nsegs; j++) live += input[j];
  if (merged >= 0 && live == 0) {
    /* Published before (a re-run after a crash or a lost reply). */
    out->already = 1;
    out->version = ix->segs[merged].added_in;
  } else if (gone) {
    rc = sf_err_set(err, SF_ECONFLICT,
                    "segment %s is no longer in index %s (version %" PRIu64
                    "): another compaction or a replace swapped it out first; merge %s "
                    "is stale and must be discarded",
                    gone, r->index_name, c->version, r->merged->segment_id);
  } else if (!(rc = check_merged(ix, input, r->merged, err)) &&
             !(rc = check_new(c, r->merged, err))) {
    uint64_t v = c->version + 1;
    if (!(rc = swap(ix, input, r->merged, v, err))) {
      c->version = v;
      c->created_at_ms = (uint64_t)sf_clock_wall_ms();
    }
  }
  free(input);
  return rc;
}

sf_code sf_catalog_commit_compaction(const sf_catalog_compaction_req *r,
                                     sf_catalog_compaction_result *res, sf_err *err) {
  memset(res, 0, sizeof *res);
  sf_code rc = check_request(r, err);
  if (rc) return rc;
  sf_catalog_outcome o;
  char what[SF_CATALOG_MAX_ID + 32];
  snprintf(what, sizeof what, "compaction %s", r->merged->segment_id);
  rc = sf_catalog_commit_loop(r->dataset, r->merged, 1, compaction_attempt, (void *)r,
                              r->max_attempts, what, &o, err);
  res->version = o.version;
  res->already = o.already;
  res->attempts = o.attempts;
  return rc;
}
