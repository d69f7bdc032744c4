/*
 * compact.h - the merge executor: committed segments of one index become
 * one segment, and one new catalog version swaps them out
 * (docs/catalog.md, "Compaction"). Which segments to merge is the merge
 * policy's choice; this is how a chosen merge is carried out, safely beside
 * commits, replaces, gc and other compactions.
 *
 * The merge is a build like a job's (core/pipeline/build.h): a plan whose inputs are
 * the segment files (the same format as shards), in order of their lowest
 * fragment, built partition by partition into a temporary file that is
 * fsynced and renamed. Every block is CRC-checked; code bytes are copied
 * unchanged, never re-encoded. Small chunks (one per incremental job and
 * partition) are joined into runs of ascending row ids, which decodes and
 * rewrites only their row-id blocks; large chunks are copied verbatim
 * (sf_seg_writer_join_partition, core/format/segfile.h).
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
#include "core/pipeline/merge_policy.h"

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

/* ---- compacting an index until the policy is done (compact_all.c) -------
 *
 * sf_compact_all runs the merge policy (merge_policy.h) on the newest
 * version of one index, runs the merges it asks for, at most max_merges at
 * once (one thread each, every build holding a slot of the build budget),
 * commits each, and repeats until the policy wants nothing.
 *
 * Rounds: each round reads the newest version, asks the policy for up to
 * max_merges merges, runs them all and waits for all of them before the
 * next round. A merge that finishes early leaves its slot idle until the
 * round ends; in exchange the merges of a round, and so the whole run, are
 * a function of the catalog alone, whatever the threads' timing: the same
 * index compacts to the same segments, and the reports come in the same
 * order (the policy's, best first).
 *
 * Racing compactors (another sf_compact_all, serve, a replace): a merge
 * whose input was swapped out first fails its commit with SF_ECONFLICT; its
 * work is discarded (the merged file is left to gc), it is reported with
 * status SF_ECONFLICT, and the next round re-reads the catalog. A merge
 * another compactor already committed is reported as done by it
 * (`already`). The run ends when the policy wants nothing of the newest
 * version, so each discarded merge means another compactor made progress;
 * max_fruitless_rounds rounds in a row that lost every merge end it with
 * SF_ECONFLICT (the other compactor is left to finish).
 *
 * The one loop of `segforge compact` and of serve's compaction thread:
 * serve runs it with one merge at a time on the process's build budget as
 * background builds (build.background), announces each merge from the
 * report callback, and ends a run early by returning non-zero from it.
 *
 * Dry run: nothing is written and no slot is taken. The rounds are
 * simulated on the newest version's segments, a merged segment counting
 * the sum of its inputs' bytes, rows and the lowest of their first
 * fragments; a real run's merged files differ from that sum by their
 * rebuilt directories, so its later rounds may differ slightly. */

/* One merge of a run, as reported. All pointers are borrowed for the
 * duration of the callback. */
typedef struct sf_compact_merge_report {
  unsigned round;            /* 1 for the first policy call */
  const char *const *inputs; /* the ids merged, in the policy's order */
  size_t ninputs;
  const char *output;     /* the merged segment's id */
  uint64_t bytes_read;    /* the inputs' bytes */
  uint64_t bytes_written; /* the merged file's bytes (dry run: bytes_read) */
  uint64_t num_rows;
  int contiguous;   /* the policy's sf_mpolicy_merge.contiguous */
  uint64_t version; /* the version that holds it; 0: dry run, discarded */
  int already;      /* another compactor committed this merge first */
  /* SF_OK; SF_ECONFLICT: discarded; another code: the merge failed (the
   * run then ends with it, after the round's reports). */
  sf_code status;
  const char *error; /* status != SF_OK: the merge's message; else NULL */
  double ms;         /* wall time of the merge and its commit */
  /* status == SF_OK and not a dry run: the merged segment as the catalog
   * lists it; else NULL. */
  const sf_seginfo *merged;
  int built; /* this run wrote the merged file (0: reused, or already) */
} sf_compact_merge_report;

/* Called from the calling thread, once per merge in the policy's order,
 * after the merges of its round have finished. Must not call back into
 * the run. Returns 0 to go on; non-zero ends the run after this round's
 * reports (sf_compact_all returns SF_OK with res->stopped set). */
typedef int (*sf_compact_report_fn)(void *ctx, const sf_compact_merge_report *m);

/* Called from the calling thread, once per merge in the policy's order,
 * before the merges of a round start (not in a dry run). Only round,
 * inputs, ninputs, output, bytes_read (the inputs' bytes as the catalog
 * lists them), num_rows and contiguous are set. */
typedef void (*sf_compact_start_fn)(void *ctx, const sf_compact_merge_report *m);

typedef struct sf_compact_all_req {
  const char *dataset;    /* directory or file:// URI */
  const char *index_name; /* the index to compact */
  sf_mpolicy_params policy;
  /* Merges at once (each one thread and one build slot); 0 = 1. */
  unsigned max_merges;
  /* The builds' options: budget (the process's; without one, the run makes
   * its own of max_merges slots), progress (called from the merge threads,
   * one call at a time per merge), cancel, remap_bytes. max_merges is
   * ignored: a merge is one segment. */
  sf_build_opts build;
  int dry_run;                 /* plan only: nothing is written */
  sf_compact_report_fn report; /* may be NULL */
  sf_compact_start_fn start;   /* may be NULL; gets report_ctx */
  void *report_ctx;
  /* Rounds in a row that lost every merge to other compactors before the
   * run gives up with SF_ECONFLICT; 0 = 64. */
  unsigned max_fruitless_rounds;
} sf_compact_all_req;

typedef struct sf_compact_all_result {
  uint64_t version_before, version_after; /* equal when nothing was committed */
  size_t segments_before, segments_after; /* the index's (dry run: simulated) */
  uint64_t bytes_before, bytes_after;     /* the index's segment bytes */
  size_t merges;                          /* committed (or planned) by this run */
  size_t discarded;                       /* lost to a racing compactor */
  size_t already;                         /* found committed by another */
  unsigned rounds;                        /* policy calls that wanted merges */
  int stopped;                            /* the report callback ended the run */
  uint64_t bytes_read, bytes_written;     /* by this run's committed merges */
  double ms;                              /* wall time of the run */
} sf_compact_all_result;

/* Compacts one index until the policy wants nothing (see above). Errors:
 * SF_ENOTFOUND (no catalog, no such index), SF_EINVAL (invalid policy
 * parameters, naming the flag), SF_ECANCELED (build.cancel was set),
 * SF_ECONFLICT (max_fruitless_rounds lost rounds in a row), and
 * the first error of a merge other than SF_ECONFLICT: merges committed
 * before it stay committed, and *res says what was done. */
sf_code sf_compact_all(const sf_compact_all_req *req, sf_compact_all_result *res,
                       sf_err *err);

#endif
