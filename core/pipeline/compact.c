/*
 * compact.c - see compact.h (the order of a merge and why it is safe).
 *
 * The build machinery is a job's: the inputs become the "shards" of a plan
 * of kind SF_SEG_KIND_SEGMENT, packed into one group (an unlimited budget),
 * whose id the planner derives from the staging id "compact" and the input
 * ids - the id sf_compact_segment_id gives.
 */
#include "core/pipeline/compact.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/pipeline/plan.h"

#define COMPACT_STAGING_ID "compact"

sf_code sf_compact_segment_id(const char *const *ids, size_t n, char **out, sf_err *err) {
  return sf_plan_segment_id(COMPACT_STAGING_ID, ids, n, out, err);
}

void sf_compact_result_clear(sf_compact_result *res) {
  if (!res) return;
  sf_seginfo_clear(&res->merged);
  memset(res, 0, sizeof *res);
}

static sf_code check_request(const sf_compact_req *r, sf_err *err) {
  if (!r->dataset || !r->index_name)
    return sf_err_set(err, SF_EINVAL, "a compaction needs a dataset and an index name");
  if (r->nsegments < 2 || !r->segment_ids)
    return sf_err_set(err, SF_EINVAL,
                      "a compaction merges at least two segments (%zu given)",
                      r->nsegments);
  for (size_t i = 0; i < r->nsegments; i++) {
    if (!r->segment_ids[i] || !*r->segment_ids[i])
      return sf_err_set(err, SF_EINVAL, "input segment #%zu has no id", i);
    for (size_t k = 0; k < i; k++)
      if (!strcmp(r->segment_ids[k], r->segment_ids[i]))
        return sf_err_set(err, SF_EINVAL, "input segment %s is given twice",
                          r->segment_ids[i]);
  }
  return SF_OK;
}

/* What the newest version says about the merge. */
typedef struct view {
  sf_catalog *c;
  const sf_catalog_index *ix;
  const sf_catalog_segment **in;    /* nsegments; NULL where an input is gone */
  const sf_catalog_segment *merged; /* the merge, when a version holds it */
  size_t missing;
} view;

static void view_clear(view *v) {
  sf_catalog_free(v->c);
  free(v->in);
  memset(v, 0, sizeof *v);
}

static sf_code read_view(const char *ds, const sf_compact_req *r, const char *merged_id,
                         view *v, sf_err *err) {
  memset(v, 0, sizeof *v);
  sf_code rc = sf_catalog_open_latest(ds, &v->c, err);
  if (rc) return rc;
  if (!(v->ix = sf_catalog_find_index(v->c, r->index_name)))
    return sf_err_set(err, SF_ENOTFOUND,
                      "the catalog (version %" PRIu64 ") has no index %s to compact",
                      sf_catalog_version(v->c), r->index_name);
  if (!(v->in = calloc(r->nsegments, sizeof *v->in)))
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (size_t j = 0; j < v->ix->nsegs; j++) {
    const sf_catalog_segment *s = &v->ix->segs[j];
    if (!strcmp(s->info.segment_id, merged_id)) v->merged = s;
    for (size_t i = 0; i < r->nsegments; i++)
      if (!strcmp(s->info.segment_id, r->segment_ids[i])) v->in[i] = s;
  }
  for (size_t i = 0; i < r->nsegments; i++) v->missing += !v->in[i];
  return SF_OK;
}

/* The merge is in the newest version and its inputs are not: done before. */
static int done_before(const view *v, const sf_compact_req *r) {
  return v->merged && v->missing == r->nsegments;
}

static sf_code stale(const view *v, const sf_compact_req *r, const char *merged_id,
                     sf_err *err) {
  for (size_t i = 0; i < r->nsegments; i++)
    if (!v->in[i])
      return sf_err_set(err, SF_ECONFLICT,
                        "segment %s is not in index %s (version %" PRIu64
                        "): another compaction or a replace swapped it out first; merge "
                        "%s is not made",
                        r->segment_ids[i], r->index_name, sf_catalog_version(v->c),
                        merged_id);
  return SF_OK;
}

static sf_code from_catalog(const view *v, sf_compact_result *res, sf_err *err) {
  res->already = 1;
  res->version = v->merged->added_in;
  return sf_seginfo_copy(&res->merged, &v->merged->info, err);
}

/* Declares the merged file and the inputs' files to gc (compact.h, step 2). */
static sf_code declare(const char *ds, const sf_compact_req *r, const view *v,
                       const char *merged_id, sf_catalog_intent **in, sf_err *err) {
  size_t n = r->nsegments + 1;
  const char **paths = calloc(n, sizeof *paths);
  char *out = malloc(strlen(merged_id) + sizeof "segments/" SF_PLAN_SEGMENT_EXT);
  char *owner = malloc(strlen(r->index_name) + strlen(merged_id) + 32);
  sf_code rc = SF_OK;
  if (!paths || !out || !owner) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  } else {
    sprintf(out, "segments/%s" SF_PLAN_SEGMENT_EXT, merged_id);
    sprintf(owner, "compact %s %s", r->index_name, merged_id);
    paths[0] = out;
    for (size_t i = 0; i < r->nsegments; i++) paths[i + 1] = v->in[i]->info.path;
    rc = sf_catalog_intent_begin(ds, owner, paths, n, in, err);
  }
  free(paths);
  free(out);
  free(owner);
  return rc;
}

/* The inputs as plan shards (owned; sf_plan_shards_free), read from their
 * files, which must be what the catalog lists. */
static sf_code inputs(const view *v, const sf_compact_req *r, sf_plan_shard **out,
                      sf_compact_result *res, sf_err *err) {
  sf_plan_shard *sh = calloc(r->nsegments, sizeof *sh);
  if (!sh) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_code rc = SF_OK;
  for (size_t i = 0; !rc && i < r->nsegments; i++) {
    const sf_catalog_segment *s = v->in[i];
    sf_seg_reader *rd = NULL;
    char *path = sf_catalog_segment_path(v->c, s);
    if (!path) {
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
      break;
    }
    if (!(rc = sf_seg_open_meta(path, &rd, err))) {
      const sf_seg_params *p = sf_seg_get_params(rd);
      if (p->kind != SF_SEG_KIND_SEGMENT ||
          !roaring_bitmap_equals(sf_seg_fragments(rd), s->info.fragments) ||
          sf_seg_num_rows(rd) != s->info.num_rows ||
          sf_seg_file_bytes(rd) != s->info.bytes)
        rc = sf_err_set(err, SF_ECORRUPT,
                        "segment %s: %s is not the file the catalog lists (its kind, "
                        "fragments, rows or size differ)",
                        s->info.segment_id, path);
      sh[i].params = *p;
      sh[i].bytes = sf_seg_file_bytes(rd);
      sh[i].num_rows = sf_seg_num_rows(rd);
      sh[i].fragments = roaring_bitmap_copy(sf_seg_fragments(rd));
      sh[i].shard_id = strdup(s->info.segment_id);
      sh[i].path = path;
      path = NULL;
      if (!rc && (!sh[i].fragments || !sh[i].shard_id))
        rc = sf_err_set(err, SF_ENOMEM, "out of memory");
      res->input_bytes += sh[i].bytes;
      res->input_rows += sh[i].num_rows;
    }
    sf_seg_close(rd);
    free(path);
  }
  if (rc) {
    sf_plan_shards_free(sh, r->nsegments);
    return rc;
  }
  *out = sh;
  return SF_OK;
}

/* Plans, builds and commits the merge of the inputs v lists. */
static sf_code merge(const char *ds, const sf_compact_req *r, const view *v,
                     const char *merged_id, sf_compact_result *res, sf_err *err) {
  sf_plan_shard *sh = NULL;
  sf_plan *plan = NULL;
  sf_seginfo *built = NULL;
  size_t nbuilt = 0;
  sf_code rc = inputs(v, r, &sh, res, err);
  if (rc) return rc;
  /* The plan orders the inputs by lowest fragment: a merge of consecutive
   * jobs then reads row ids in ascending order, and the build joins each
   * partition's small chunks into one. */
  sf_plan_opts po = {.staging_id = COMPACT_STAGING_ID,
                     .target_segment_bytes = UINT64_MAX, /* one group */
                     .index_type = -1,
                     .input_kind = SF_SEG_KIND_SEGMENT};
  if ((rc = sf_plan_make(sh, r->nsegments, &po, &plan, err))) goto out;
  if (plan->num_segments != 1 || strcmp(plan->segments[0].segment_id, merged_id)) {
    rc = sf_err_set(err, SF_EINVAL, "merge %s: the inputs do not fit one segment",
                    merged_id);
    goto out;
  }
  if ((rc = sf_build_run(plan, ds, &r->build, &built, &nbuilt, &res->build, err))) {
    sf_catalog_explain_corrupt(v->c, v->ix, err); /* an input that does not read */
    goto out;
  }
  sf_catalog_compaction_req cr = {.dataset = ds,
                                  .index_name = r->index_name,
                                  .inputs = r->segment_ids,
                                  .ninputs = r->nsegments,
                                  .merged = &built[0],
                                  .max_attempts = r->max_attempts};
  sf_catalog_compaction_result cres;
  if ((rc = sf_catalog_commit_compaction(&cr, &cres, err))) goto out;
  res->version = cres.version;
  res->already = cres.already;
  /* As the catalog lists it: no shard ids (catalog.h, "compaction"). */
  res->merged = built[0];
  memset(&built[0], 0, sizeof built[0]);
  for (uint32_t k = 0; k < res->merged.num_shards; k++) free(res->merged.shard_ids[k]);
  free(res->merged.shard_ids);
  res->merged.shard_ids = NULL;
  res->merged.num_shards = 0;
out:
  sf_build_results_free(built, nbuilt);
  sf_plan_free(plan);
  sf_plan_shards_free(sh, r->nsegments);
  return rc;
}

sf_code sf_compact_run(const sf_compact_req *r, sf_compact_result *res, sf_err *err) {
  memset(res, 0, sizeof *res);
  char *ds = NULL, *merged_id = NULL;
  sf_catalog_intent *intent = NULL;
  view v = {0};
  sf_code rc = check_request(r, err);
  if (rc || (rc = sf_catalog_resolve_dataset(r->dataset, &ds, err)) ||
      (rc = sf_compact_segment_id(r->segment_ids, r->nsegments, &merged_id, err)))
    goto out;
  /* 1. The inputs' paths, from the newest version. */
  if ((rc = read_view(ds, r, merged_id, &v, err))) goto out;
  if (done_before(&v, r)) {
    rc = from_catalog(&v, res, err);
    goto out;
  }
  if ((rc = stale(&v, r, merged_id, err))) goto out;
  /* 2. Declared to gc; 3. still there once declared. */
  if ((rc = declare(ds, r, &v, merged_id, &intent, err))) goto out;
  view_clear(&v);
  if ((rc = read_view(ds, r, merged_id, &v, err))) goto out;
  if (done_before(&v, r)) {
    rc = from_catalog(&v, res, err);
    goto out;
  }
  if ((rc = stale(&v, r, merged_id, err))) goto out;
  /* 4. and 5. */
  rc = merge(ds, r, &v, merged_id, res, err);
out:
  sf_catalog_intent_end(intent); /* committed, or given up: gc's rules again */
  view_clear(&v);
  if (rc) sf_compact_result_clear(res);
  free(ds);
  free(merged_id);
  return rc;
}
