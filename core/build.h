/*
 * build.h - the bounded build pipeline: turns a plan (core/plan.h) into
 * segment files, with at most `max_merges` segment builds at once.
 *
 * Threads: sf_build_run starts min(max_merges, segments) POSIX threads and
 * joins every one of them before it returns; no thread outlives the call.
 * Each thread takes the next unbuilt segment of the plan and builds it
 * partition by partition: for each partition, every shard's compressed
 * chunks are copied verbatim with sf_seg_writer_copy_partition, which
 * verifies every block's CRC on the way. Nothing is decoded and no file is
 * read whole, so memory is bounded by max_merges x (one writer's buffers +
 * one directory per open shard + the mapped pages read since the last
 * remap, see remap_bytes), whatever the size of the index.
 *
 * Crash safety: a segment is written under a temporary name, fsynced,
 * renamed to <dataset>/_indices/segments/<segment_id>.sfseg and the
 * directory fsynced (the segfile writer's order). A segment that already
 * exists under its final name, has the plan's parameters and fragments and
 * the sum of its shards' rows in every partition is finished work from an
 * earlier run: it is reused, not rebuilt. A file under the final name that
 * does not pass is replaced.
 *
 * Failure: the first failing build sets a cancel flag that every other
 * build checks between partitions; they discard their temporary files, so a
 * failed run leaves no partial segment under a final name (segments that
 * were finished before the failure stay: they are complete, and the next run
 * reuses them). The first real error is returned.
 *
 * Fault points (core/fault.h, SF_FAULT): build.mid_segment (half the
 * partitions of a segment are copied; crash or fail) and build.after_segment
 * (the first segment is renamed in place; crash).
 */
#ifndef SF_BUILD_H
#define SF_BUILD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "plan.h"
#include "seginfo.h"

typedef struct sf_build_progress {
  uint64_t bytes_done, bytes_total; /* shard bytes copied (or reused) / planned */
  size_t segments_done, segments_total;
  size_t segments_reused;
  unsigned running; /* builds in progress at this moment */
} sf_build_progress;

/* Called from the build threads, one call at a time (under a lock), after
 * every partition of every build and when a segment finishes. It must be
 * quick and must not call back into the build. */
typedef void (*sf_build_progress_fn)(void *ctx, const sf_build_progress *p);

typedef struct sf_build_opts {
  unsigned max_merges; /* segment builds at once; 0 = the number of online cores */
  sf_build_progress_fn progress; /* may be NULL */
  void *progress_ctx;
  /* Optional: set to non-zero by the caller (e.g. on shutdown) to stop the
   * build between partitions; the run then returns SF_ECANCELED. */
  atomic_int *cancel;
  /* Bytes a build copies before it remaps its shards, which releases the
   * pages the CRC checks read from its resident set; 0 = 8 MiB. Peak RSS is
   * about max_merges x (this + one partition of its shards) + fixed costs. */
  uint64_t remap_bytes;
} sf_build_opts;

typedef struct sf_build_stats {
  size_t built, reused;       /* segments written by this run / found finished */
  unsigned threads;           /* threads started */
  unsigned peak_running;      /* most builds observed running at once */
  uint64_t bytes_copied;      /* partition bytes copied by this run */
  size_t temporaries_removed; /* left by crashed runs of these segments */
} sf_build_stats;

/* Builds every segment of `plan` under <dataset>/_indices/segments/ and
 * returns their descriptions in plan order: *out (*n entries, n ==
 * plan->num_segments) is freed by sf_build_results_free. `stats` may be
 * NULL. On failure *out is NULL and err names the segment and the shard. */
sf_code sf_build_run(const sf_plan *plan, const char *dataset, const sf_build_opts *o,
                     sf_seginfo **out, size_t *n, sf_build_stats *stats, sf_err *err);

/* Frees an array of n seginfos from sf_build_run; accepts NULL. */
void sf_build_results_free(sf_seginfo *s, size_t n);

/* The final path of a segment: "<dataset>/_indices/segments/<id>.sfseg",
 * malloc'd (caller frees); NULL on allocation failure. */
char *sf_build_segment_path(const char *dataset, const char *segment_id);

#endif
