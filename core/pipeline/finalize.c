/*
 * finalize.c - see finalize.h.
 *
 * The order is the crash-safety argument: the catalog is consulted first
 * (a finished job returns at once), segments are built under deterministic
 * names (a re-run finds and reuses what a crashed run completed), and the
 * commit is the single put-if-absent that makes the job visible. A failure
 * anywhere before the commit leaves the previous catalog as it was.
 *
 * Between the plan and the build, the segment files the plan names are
 * declared in an intent (catalog.h), held until the commit is done, so that
 * gc keeps them - fresh or reused, whatever their age - while they are
 * built, checked and committed.
 */
#include "core/pipeline/finalize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/vector/quantizer.h"

void sf_finalize_result_clear(sf_finalize_result *res) {
  if (!res) return;
  for (size_t i = 0; i < res->nsegs; i++) sf_seginfo_clear(&res->segs[i]);
  free(res->segs);
  memset(res, 0, sizeof *res);
}

/* If the catalog already holds the job, fills res from it and returns 1. */
static int from_catalog(const char *dataset, const char *staging_id,
                        sf_finalize_result *res, sf_code *rc, sf_err *err) {
  sf_catalog *c = NULL;
  sf_err cerr = {0};
  *rc = SF_OK;
  if (sf_catalog_open_latest(dataset, &c, &cerr)) {
    if (cerr.code == SF_ENOTFOUND) return 0; /* no catalog yet */
    *rc = sf_err_set(err, cerr.code, "%s", cerr.msg);
    return 1;
  }
  /* The window or, for an older job, its archive chunk: a chunk that does
   * not read is an error like an unreadable version, never "not
   * committed" (which would build and commit the job again). */
  sf_catalog_job job;
  int found;
  if (sf_catalog_lookup_job(c, staging_id, &job, &found, &cerr)) {
    *rc = sf_err_set(err, cerr.code, "%s", cerr.msg);
    sf_catalog_free(c);
    return 1;
  }
  if (!found) {
    sf_catalog_free(c);
    return 0;
  }
  /* Reported as committed from here on: make sure it stays so. */
  if ((*rc = sf_catalog_sync(c, err))) {
    sf_catalog_job_clear(&job);
    sf_catalog_free(c);
    return 1;
  }
  res->version = job.version;
  res->already = 1;
  const sf_catalog_index *ix = sf_catalog_find_index(c, job.index_name);
  res->segs = calloc(job.nsegment_ids ? job.nsegment_ids : 1, sizeof *res->segs);
  if (!res->segs) *rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  /* The job's segments that the newest version still lists (a later
   * --replace or compaction may have swapped some out). */
  for (size_t i = 0; ix && !*rc && i < job.nsegment_ids; i++)
    for (size_t j = 0; j < ix->nsegs; j++) {
      const sf_seginfo *s = &ix->segs[j].info;
      if (strcmp(s->segment_id, job.segment_ids[i])) continue;
      if ((*rc = sf_seginfo_copy(&res->segs[res->nsegs], s, err))) break;
      res->total_rows += s->num_rows;
      res->num_shards += s->num_shards;
      res->nsegs++;
      break;
    }
  sf_catalog_job_clear(&job);
  sf_catalog_free(c);
  return 1;
}

/* Declares the plan's segment files as about to be committed (see the top
 * of this file). *in is ended by the caller. */
static sf_code declare(const char *dir, const sf_finalize_req *req, const sf_plan *plan,
                       sf_catalog_intent **in, sf_err *err) {
  size_t n = plan->num_segments;
  char **paths = calloc(n ? n : 1, sizeof *paths);
  char *owner = malloc(strlen(req->staging_id) + 32);
  sf_code rc = paths && owner ? SF_OK : sf_err_set(err, SF_ENOMEM, "out of memory");
  for (size_t i = 0; !rc && i < n; i++) {
    const char *id = plan->segments[i].segment_id;
    size_t len = strlen("segments/") + strlen(id) + strlen(SF_PLAN_SEGMENT_EXT) + 1;
    if (!(paths[i] = malloc(len)))
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    else
      snprintf(paths[i], len, "segments/%s%s", id, SF_PLAN_SEGMENT_EXT);
  }
  if (!rc) {
    sprintf(owner, "finalize %s", req->staging_id);
    rc = sf_catalog_intent_begin(dir, owner, (const char *const *)paths, n, in, err);
  }
  for (size_t i = 0; paths && i < n; i++) free(paths[i]);
  free(paths);
  free(owner);
  return rc;
}

/* Failures that no input of the job explains: worth a retry wherever they
 * come from. */
static int environmental(sf_code rc) {
  return rc == SF_EIO || rc == SF_ENOMEM || rc == SF_ECANCELED;
}

/* Whose fault a failed commit is. The catalog's own state (unreadable
 * versions, lost races, the segments just built gone) is not the job's;
 * a refusal of the job's content (overlap, other parameters, a staging id
 * committed with other segments) is. */
static sf_finalize_blame commit_blame(sf_code rc) {
  switch (rc) {
    case SF_EOVERLAP:
    case SF_EMISMATCH:
    case SF_ECHECKSUM:
    case SF_EEXIST:
    case SF_ELIMIT:
    case SF_EINVAL:
      return SF_FINALIZE_JOB;
    default: /* ECORRUPT/EFORMAT of a version, ECONFLICT, ENOTFOUND, EIO, ... */
      return SF_FINALIZE_RETRYABLE;
  }
}

sf_code sf_finalize(const sf_finalize_req *req, sf_finalize_result *res, sf_err *err) {
  memset(res, 0, sizeof *res);
  if (!req->dataset || !req->index_name || !req->column || !req->staging_id) {
    res->blame = SF_FINALIZE_JOB;
    return sf_err_set(err, SF_EINVAL,
                      "finalize needs a dataset, index name, column and staging id");
  }
  /* Before any I/O: the staging id names the staging root read below. */
  if (sf_catalog_check_id("index name", req->index_name, err) ||
      sf_catalog_check_id("staging id", req->staging_id, err)) {
    res->blame = SF_FINALIZE_JOB;
    return SF_EINVAL;
  }
  char *dir = NULL, *staging = NULL, *root = NULL, *qpath = NULL;
  sf_quant *q = NULL;
  sf_plan *plan = NULL;
  sf_catalog_intent *intent = NULL;
  sf_finalize_blame blame = SF_FINALIZE_JOB;
  sf_code rc = sf_catalog_resolve_dataset(req->dataset, &dir, err);
  if (rc) {
    res->blame = environmental(rc) ? SF_FINALIZE_RETRYABLE : SF_FINALIZE_JOB;
    return rc;
  }
  /* A catalog that cannot be read is no fault of this job (and would fail
   * every job of the dataset): retryable. */
  if (from_catalog(dir, req->staging_id, res, &rc, err)) {
    blame = SF_FINALIZE_RETRYABLE;
    goto out;
  }

  if (!(staging = sf_fs_join(dir, SF_CATALOG_STAGING_DIR)) ||
      !(root = sf_fs_join(staging, req->staging_id)) ||
      !(qpath = sf_fs_join(root, SF_PLAN_QUANTIZER_NAME))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = sf_quant_load(qpath, &q, err))) goto out;
  sf_seg_params qp;
  sf_plan_params_from_quant(q, &qp);
  sf_plan_opts po = {.staging_id = req->staging_id,
                     .target_segment_bytes = req->target_segment_bytes,
                     .expected_fragments = req->expected_fragments,
                     .quantizer = &qp,
                     .index_type = req->index_type};
  rc = req->shards ? sf_plan_make(req->shards, req->nshards, &po, &plan, err)
                   : sf_plan_staging(root, &po, &plan, err);
  if (rc) goto out;
  if ((rc = declare(dir, req, plan, &intent, err))) goto out; /* EIO: retryable */
  if ((rc = sf_build_run(plan, dir, &req->build, &res->segs, &res->nsegs, &res->build,
                         err)))
    goto out;
  sf_catalog_commit_req cr = {.dataset = dir,
                              .index_name = req->index_name,
                              .column = req->column,
                              .staging_id = req->staging_id,
                              .segs = res->segs,
                              .nsegs = res->nsegs,
                              .quantizer_path = qpath,
                              .replace = req->replace};
  sf_catalog_commit_result cres;
  if ((rc = sf_catalog_commit(&cr, &cres, err))) {
    blame = commit_blame(rc);
    /* Another committer of the same job (a second owner after a rebalance)
     * may have won: then the job is committed, which is all that counts. */
    sf_finalize_result held;
    sf_code hrc;
    sf_err herr = {0};
    memset(&held, 0, sizeof held);
    if (from_catalog(dir, req->staging_id, &held, &hrc, &herr) && !hrc) {
      sf_finalize_result_clear(res);
      *res = held;
      rc = SF_OK;
      sf_err_clear(err);
    } else {
      sf_finalize_result_clear(&held);
    }
    goto out;
  }
  res->version = cres.version;
  res->already = cres.already;
  res->num_shards = plan->num_shards;
  res->total_rows = plan->total_rows;
out:
  sf_catalog_intent_end(intent); /* committed, or given up: gc's rules again */
  if (rc) {
    sf_finalize_result_clear(res);
    res->blame = environmental(rc) ? SF_FINALIZE_RETRYABLE : blame;
  }
  sf_plan_free(plan);
  sf_quant_free(q);
  free(dir);
  free(staging);
  free(root);
  free(qpath);
  return rc;
}
