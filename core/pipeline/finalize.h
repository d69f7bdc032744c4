/*
 * finalize.h - plan + build + commit of one job, the library call that
 * `segforge finalize` and the stream processor share (the counterpart of
 * Lance's IndexSegmentBuilder: plan -> build -> commit_existing_index_segments).
 *
 * Idempotent by construction: a job already in the catalog returns its
 * version and segments without building anything; a job whose segments
 * were built before a crash reuses them (segment ids derive from the
 * staging id and shard ids); the commit is a put-if-absent. So calling it
 * again after a failure at any point converges on one catalog version.
 */
#ifndef SF_FINALIZE_H
#define SF_FINALIZE_H

#include <roaring/roaring.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/format/seginfo.h"
#include "core/pipeline/build.h"
#include "core/pipeline/plan.h"

typedef struct sf_finalize_req {
  const char *dataset;    /* directory or file:// URI */
  const char *index_name; /* the logical index */
  const char *column;     /* the vector column */
  const char *staging_id; /* the job */
  /* The job's shards (from events); NULL = every *.sfshard of the staging
   * root <dataset>/_indices/_staging/<staging_id>/. Borrowed. */
  const sf_plan_shard *shards;
  size_t nshards;
  /* When set, the shards must cover exactly this set (borrowed). */
  const roaring_bitmap_t *expected_fragments;
  uint64_t target_segment_bytes; /* 0 = one segment per shard */
  int index_type;                /* requested type, or -1 */
  int replace;                   /* swap out covered segments of the index */
  sf_build_opts build;           /* max_merges, progress, cancel */
} sf_finalize_req;

/* Whose fault a failed sf_finalize is, so that a caller serving many jobs
 * (the stream processor) fails a job only for what is the job's own: its
 * shards, its quantizer, a commit the catalog refuses for the job's content.
 * Everything else - the catalog cannot be read, the commit lost every race,
 * an I/O or memory error, a cancel - is worth retrying and must not mark the
 * job failed. */
typedef enum sf_finalize_blame {
  SF_FINALIZE_OK = 0,    /* no failure */
  SF_FINALIZE_JOB,       /* the job's inputs: failing it is right */
  SF_FINALIZE_RETRYABLE, /* the environment or a race: retry later */
} sf_finalize_blame;

typedef struct sf_finalize_result {
  uint64_t version; /* the catalog version that holds the job */
  int already;      /* 1: committed before this call; nothing was built */
  sf_seginfo *segs; /* the job's segments (owned; sf_finalize_result_clear) */
  size_t nsegs;
  size_t num_shards;
  uint64_t total_rows;
  sf_build_stats build;    /* zero when already */
  sf_finalize_blame blame; /* set on failure too (the rest is cleared) */
} sf_finalize_result;

/* Plans, builds and commits the job. On failure nothing is committed and
 * no segment is left under a final name by this call, and res->blame says
 * whose fault it was. A commit refused because another committer (a second
 * owner after a rebalance) committed the same job meanwhile is no failure:
 * the catalog is read again and the job returned as `already`. */
sf_code sf_finalize(const sf_finalize_req *req, sf_finalize_result *res, sf_err *err);
void sf_finalize_result_clear(sf_finalize_result *res);

#endif
