/*
 * build.h - the bounded build pipeline: turns a plan (core/pipeline/plan.h) into
 * segment files, with at most `max_merges` segment builds at once.
 *
 * Threads: sf_build_run starts min(max_merges, segments) POSIX threads and
 * joins every one of them before it returns; no thread outlives the call.
 * Each thread takes the next unbuilt segment of the plan and builds it
 * partition by partition: for each partition, every shard's compressed
 * chunks are copied verbatim with sf_seg_writer_copy_partition, which
 * verifies every block's CRC on the way. A compaction (a plan whose inputs
 * are segments) uses sf_seg_writer_join_partition instead, which joins the
 * inputs' small chunks into runs (decoding only their row ids; codes are
 * copied unchanged) and copies large chunks verbatim. No code is decoded and
 * no file is read whole, so memory is bounded by max_merges x (one writer's
 * buffers, a join's run included + one directory per open shard + the mapped
 * pages read since the last remap, see remap_bytes), whatever the size of
 * the index.
 *
 * Crash safety: a segment is written under a temporary name, fsynced,
 * renamed to <dataset>/_indices/segments/<segment_id>.sfseg and the
 * directory fsynced (the segfile writer's order). A segment that already
 * exists under its final name, has the plan's parameters and fragments and
 * the sum of its shards' rows in every partition is finished work from an
 * earlier run: it is reused, not rebuilt, and its mtime is set to now, so
 * that gc's grace period for unreferenced segments counts from the reuse. A
 * file under the final name that does not pass is replaced. (A build that
 * will commit declares its segments to gc first: catalog.h, "intents".)
 *
 * Failure: the first failing build sets a cancel flag that every other
 * build checks between partitions; they discard their temporary files, so a
 * failed run leaves no partial segment under a final name (segments that
 * were finished before the failure stay: they are complete, and the next run
 * reuses them). The first real error is returned.
 *
 * One bound for the whole process: a caller that runs several builds at
 * once (the stream processor finalizing several jobs; compaction beside
 * them) shares one sf_build_budget between them, passed in sf_build_opts.
 * Every segment build then holds one of its slots from before it opens its
 * shards until its file is renamed in place (or discarded), so at most
 * `slots` builds run in the whole process, whatever the number of calls
 * and of their threads. A thread holds one slot at a time and waits for it
 * holding nothing, so sharing a budget cannot deadlock; a waiting thread
 * gives up when its run is canceled or failed. Without a budget a call is
 * bounded by its own max_merges, as before.
 *
 * Fault points (core/base/fault.h, SF_FAULT): build.mid_segment (half the
 * partitions of a segment are copied; crash or fail), build.after_segment
 * (the first segment is renamed in place; crash) and build.slow_partition
 * (no crash: every build sleeps 50 ms after each partition it copies, so
 * that tests can watch builds overlap).
 */
#ifndef SF_BUILD_H
#define SF_BUILD_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/format/seginfo.h"
#include "core/pipeline/plan.h"

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

/* A process-wide bound on segment builds at once, shared by every build
 * that is given it (see the top of this file). Thread-safe. */
typedef struct sf_build_budget sf_build_budget;

/* A budget of `slots` (>= 1) builds at once; *out is freed by
 * sf_build_budget_free. Errors: SF_EINVAL (no slots), SF_ENOMEM. */
sf_code sf_build_budget_new(unsigned slots, sf_build_budget **out, sf_err *err);
/* Accepts NULL. No slot may be held or awaited any more. */
void sf_build_budget_free(sf_build_budget *b);

/* Takes one slot, waiting for it first come, first served. While it waits
 * it calls stop(ctx) (may be NULL) at least every 50 ms, under the budget's
 * lock (it must be quick and must not use the budget), and gives up with
 * SF_ECANCELED when that returns non-zero. SF_OK: the caller holds a slot
 * and must give it back with sf_build_budget_release. A thread must not
 * wait for a second slot while it holds one. */
sf_code sf_build_budget_acquire(sf_build_budget *b, int (*stop)(void *ctx), void *ctx);
/* The same for a background build (compaction beside jobs): it queues
 * behind every foreground waiter, so it gets a slot only when no
 * foreground build waits for one. */
sf_code sf_build_budget_acquire_background(sf_build_budget *b, int (*stop)(void *ctx),
                                           void *ctx);
/* For a background build that holds a slot, at a point where it may pause
 * (between partitions): when a foreground build waits, hands the slot to it
 * (*yielded = 1, may be NULL) and waits, holding nothing, to get one back
 * behind the foreground waiters. SF_OK: the caller holds a slot again (or
 * never gave it up). SF_ECANCELED: stop said so while it waited; the
 * caller holds NO slot then and must not release one. */
sf_code sf_build_budget_yield(sf_build_budget *b, int (*stop)(void *ctx), void *ctx,
                              int *yielded);
/* Gives a slot back (to the oldest waiter, if any; foreground first). */
void sf_build_budget_release(sf_build_budget *b);

typedef struct sf_build_budget_stats {
  unsigned slots;    /* the bound */
  unsigned running;  /* slots held now: builds running in the process */
  unsigned peak;     /* most slots held at once since the budget was made */
  size_t waiting;    /* threads waiting for a slot now */
  uint64_t acquired; /* slots taken in total */
  uint64_t yields;   /* slots background builds handed to foreground ones */
} sf_build_budget_stats;

/* A consistent snapshot, from any thread. */
void sf_build_budget_get_stats(sf_build_budget *b, sf_build_budget_stats *s);

typedef struct sf_build_opts {
  /* Threads this call starts, each running one segment build at a time;
   * 0 = the number of online cores. Without a budget this is the bound on
   * the call's builds at once. */
  unsigned max_merges;
  /* Optional: the process-wide budget every build of this call takes a
   * slot of (borrowed; must outlive the call). */
  sf_build_budget *budget;
  sf_build_progress_fn progress; /* may be NULL */
  void *progress_ctx;
  /* Optional: set to non-zero by the caller (e.g. on shutdown) to stop the
   * build between partitions; the run then returns SF_ECANCELED. */
  atomic_int *cancel;
  /* Bytes a build copies before it remaps its shards, which releases the
   * pages the CRC checks read from its resident set; 0 = 8 MiB. Peak RSS is
   * about max_merges x (this + one partition of its shards) + fixed costs. */
  uint64_t remap_bytes;
  /* With a budget: the builds of this call are background work (compaction
   * in serve). They take slots with sf_build_budget_acquire_background and
   * yield their slot between partitions whenever a foreground build waits
   * (sf_build_budget_yield), so that a job's build waits behind one of them
   * for at most one partition copy. A yielded build keeps its open files
   * and writer buffers while it waits: memory beyond the slots' bound by
   * one writer per yielded build (its mapped pages are remapped away). */
  int background;
} sf_build_opts;

typedef struct sf_build_stats {
  size_t built, reused;       /* segments written by this run / found finished */
  unsigned threads;           /* threads started */
  unsigned peak_running;      /* most builds observed running at once */
  uint64_t bytes_copied;      /* partition bytes copied by this run */
  size_t temporaries_removed; /* left by crashed runs of these segments */
  /* Compactions (inputs of kind SEGMENT) join small chunks: the inputs'
   * chunks read and the chunks written for them. Zero for a job's build,
   * which copies every chunk as it is. */
  uint64_t chunks_in, chunks_out;
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
