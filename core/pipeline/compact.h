/*
 * compact.h - the merge executor: committed segments of one index become
 * one segment, and one new catalog version swaps them out
 * (docs/catalog.md, "Compaction"). Which segments to merge is the merge
 * policy's choice; this is how a chosen merge is carried out, safely beside
 * commits, replaces, gc and other compactions.
 *
 * The merge is a build like a job's (core/pipeline/build.h): a plan whose inputs are
 * the segment files (the same format as shards), built partition by
 * partition with every chunk copied verbatim and CRC-checked, nothing
 * decoded or re-encoded, into a temporary file that is fsynced and renamed.
 * It takes a slot of the process's build budget like any segment build, so
 * merges and job builds share one bound.
 *
 * The merged segment's id is "compact-<16 hex digits>", XXH3-64 of the
 * sorted input ids (sf_plan_segment_id with the staging id "compact"): a
 * crashed merge run again writes, or reuses, the same file.
 *
 * Order, and why it is safe:
 *   1. the newest version is read: the inputs must be segments of the index
 *      (their paths are known from it);
 *   2. an intent (catalog.h) declares the merged file and the input files:
 *      gc keeps them all from now on, even if a replace or another
 *      compaction swaps an input out of the catalog while it is read;
 *   3. the newest version is read again: an input swapped out before the
 *      intent existed may already be gone, so every input must still be
 *      there (else SF_ECONFLICT, nothing built);
 *   4. the build writes the merged segment (or reuses it from a crashed
 *      run);
 *   5. sf_catalog_commit_compaction publishes one version that swaps
 *      exactly the inputs for it, or refuses with SF_ECONFLICT when one of
 *      them was swapped out meanwhile: the merge is then stale and
 *      discarded;
 *   6. the intent ends: the inputs now belong to older versions only, and
 *      gc removes them with those versions; a discarded merge is an
 *      unreferenced file, removed by gc after its grace period.
 * A crash anywhere leaves the catalog as it was or with the merge
 * committed; running the same merge again completes it (or finds it done).
 */
#ifndef SF_COMPACT_H
#define SF_COMPACT_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/format/seginfo.h"
#include "core/pipeline/build.h"

typedef struct sf_compact_req {
  const char *dataset;    /* directory or file:// URI */
  const char *index_name; /* the index whose segments are merged */
  /* The segments to merge (borrowed): at least two distinct ids of the
   * index's segments in the newest version. */
  const char *const *segment_ids;
  size_t nsegments;
  /* The build's options: the process's budget (a merge takes one slot),
   * progress, cancel, remap_bytes. max_merges is irrelevant (one segment). */
  sf_build_opts build;
  unsigned max_attempts; /* the commit's lost races before SF_ECONFLICT; 0 = 32 */
} sf_compact_req;

typedef struct sf_compact_result {
  uint64_t version;     /* the version in which the merge replaced its inputs */
  int already;          /* 1: a version already held the merge; nothing was built */
  sf_seginfo merged;    /* the merged segment, as the catalog lists it (owned) */
  uint64_t input_bytes; /* the inputs' file sizes, summed */
  uint64_t input_rows;
  sf_build_stats build; /* zero when already */
} sf_compact_result;

/* The id of the merge of segment ids ids[n] (in any order), malloc'd
 * (caller frees): "compact-<16 hex digits>". */
sf_code sf_compact_segment_id(const char *const *ids, size_t n, char **out, sf_err *err);

/* Merges and commits (see the top of this file). Refusals and failures:
 *   SF_ECONFLICT - an input is not (or no longer) a segment of the index in
 *                  the newest version: another compaction or a replace took
 *                  it first; nothing is committed, and a merged file already
 *                  written is left to gc;
 *   SF_ENOTFOUND - no catalog, or no such index;
 *   SF_EINVAL    - fewer than two inputs, or an input given twice;
 *   SF_ECORRUPT  - an input file is not what the catalog says it is;
 *   the build's and the commit's errors otherwise (a corrupt block names
 *   the input file and the partition).
 * On failure *res is cleared. */
sf_code sf_compact_run(const sf_compact_req *req, sf_compact_result *res, sf_err *err);
/* Frees what res owns and zeroes it; accepts NULL. */
void sf_compact_result_clear(sf_compact_result *res);

#endif
