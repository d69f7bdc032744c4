/*
 * plan.h - the segment planner: which shards of a job are merged into which
 * segment, decided before any byte is copied.
 *
 * The planner is pure: it takes the job's shards as data (an array of
 * sf_plan_shard), so the same code serves `segforge plan/build/finalize`,
 * which scan a staging directory (sf_plan_scan_staging), and the stream
 * processor, which knows its shards from ShardStaged events.
 *
 * Before planning it validates the job as a whole, because a merge that
 * discovers a problem half-way has already spent the I/O:
 *   - every shard's type, metric, dim, nlist and quantizer checksum equal the
 *     reference (the quantizer, or else the first shard) - SF_EMISMATCH
 *     naming the shard and the field;
 *   - shard ids are unique and no fragment is in two shards - SF_EOVERLAP
 *     naming both shards and the shared fragments;
 *   - with expected fragments, the shards cover exactly that set -
 *     SF_EINCOMPLETE listing the missing fragments, or SF_EINVAL naming a
 *     shard with fragments outside it;
 *   - a requested index type equals the shards' type: a merge copies codes
 *     verbatim and cannot turn one type into another.
 *
 * The plan itself is deterministic (the design's rule): shards in order of
 * their lowest fragment id, packed greedily into consecutive groups whose
 * bytes stay within the budget; a shard larger than the budget is a group on
 * its own; no budget (0) means one segment per shard. Segment ids hash the
 * staging id and the sorted shard ids, so re-planning the same job after a
 * crash names the same files and the build can recognise finished work.
 */
#ifndef SF_PLAN_H
#define SF_PLAN_H

#include <jansson.h>
#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/format/segfile.h"
#include "core/vector/quantizer.h"

/* Staging files, as `segforge stage` writes them. */
#define SF_PLAN_SHARD_EXT ".sfshard"
#define SF_PLAN_QUANTIZER_NAME "quantizer"
/* Segment files: <dataset>/_indices/segments/<segment_id>.sfseg */
#define SF_PLAN_SEGMENTS_DIR "_indices/segments"
#define SF_PLAN_SEGMENT_EXT ".sfseg"

/* One shard as the planner sees it. As input to sf_plan_make everything is
 * borrowed; inside an sf_plan or from sf_plan_scan_staging everything is
 * owned (freed by sf_plan_free / sf_plan_shards_free). */
typedef struct sf_plan_shard {
  char *shard_id; /* unique within the job; names the shard in messages */
  char *path;     /* the shard file (absolute, or relative to the cwd) */
  uint64_t bytes; /* file size: what the budget counts */
  uint64_t num_rows;
  /* type, metric, dim, nlist and quantizer_checksum are checked; kind,
   * code_size and pq_m may be 0 when unknown (a shard known from an event). */
  sf_seg_params params;
  roaring_bitmap_t *fragments; /* non-empty */
} sf_plan_shard;

typedef struct sf_plan_opts {
  const char *staging_id; /* required: segment ids derive from it */
  /* The budget in bytes per segment; 0 = one segment per shard. */
  uint64_t target_segment_bytes;
  /* When set, the shards must cover exactly this set. */
  const roaring_bitmap_t *expected_fragments;
  /* The quantizer's parameters (sf_plan_params_from_quant); NULL compares
   * every shard with the first one in plan order instead. */
  const sf_seg_params *quantizer;
  /* A requested index type, or -1 for "whatever the shards are". */
  int index_type;
  /* The kind of file the inputs are: 0 or SF_SEG_KIND_SHARD (a job's
   * shards), or SF_SEG_KIND_SEGMENT (committed segments merged by a
   * compaction, core/pipeline/compact.h; the format is the same). The build refuses
   * an input file of another kind. */
  sf_seg_kind input_kind;
} sf_plan_opts;

/* A group of consecutive shards of the plan: shards[first, first + count). */
typedef struct sf_plan_segment {
  char *segment_id;
  size_t first, count;
  uint64_t bytes;              /* sum of its shards' bytes */
  uint64_t num_rows;           /* sum of its shards' rows */
  roaring_bitmap_t *fragments; /* union of its shards' fragments */
} sf_plan_segment;

/* A validated plan. Read-only for callers; freed by sf_plan_free. */
typedef struct sf_plan {
  char *staging_id;
  uint64_t target_segment_bytes;
  /* The job's parameters: the reference's, with kind = SF_SEG_KIND_SEGMENT. */
  sf_seg_params params;
  sf_seg_kind input_kind; /* what the "shards" are: shards or segments */
  sf_plan_shard *shards;  /* in plan order (lowest fragment first) */
  size_t num_shards;
  sf_plan_segment *segments;
  size_t num_segments;
  uint64_t total_bytes, total_rows;
  roaring_bitmap_t *fragments; /* union of all shards */
} sf_plan;

/* Validates shards[n] (see the top of this file) and plans them. The plan
 * copies what it keeps, so the input may be freed afterwards. *out is freed
 * by sf_plan_free. */
sf_code sf_plan_make(const sf_plan_shard *shards, size_t n, const sf_plan_opts *o,
                     sf_plan **out, sf_err *err);
/* Accepts NULL. */
void sf_plan_free(sf_plan *p);

/* The segment id of a group: "<staging id, filename-safe, at most 40
 * characters>-<16 hex digits of XXH3-64 over the staging id and the sorted
 * shard ids>". Independent of the order of shard_ids. *out is malloc'd
 * (caller frees). */
sf_code sf_plan_segment_id(const char *staging_id, const char *const *shard_ids, size_t n,
                           char **out, sf_err *err);

/* The parameters a quantizer imposes on its shards (kind = 0). */
void sf_plan_params_from_quant(const sf_quant *q, sf_seg_params *out);

/* Reads a staging root: every "*.sfshard" file in it (shard id = the name
 * without the extension, in name order), opened with sf_seg_open to read its
 * header, parameters and fragments; and, into *quantizer, the parameters of
 * "<root>/quantizer" (loaded with sf_quant_load). A file that does not open
 * is an error naming it. *shards (n entries) is freed by sf_plan_shards_free. */
sf_code sf_plan_scan_staging(const char *root, sf_plan_shard **shards, size_t *n,
                             sf_seg_params *quantizer, sf_err *err);
/* sf_plan_scan_staging, then sf_plan_make with the root's quantizer as the
 * reference. A NULL o->staging_id means the root's last path component
 * (roots are <dataset>/_indices/_staging/<staging_id>/). */
sf_code sf_plan_staging(const char *root, const sf_plan_opts *o, sf_plan **out,
                        sf_err *err);

/* Frees an owned array of n shards; accepts NULL. */
void sf_plan_shards_free(sf_plan_shard *shards, size_t n);

/* The plan as JSON: {"staging_id", "target_segment_bytes", "index_type",
 * "metric", "dim", "nlist", "quantizer_checksum" (16 hex digits),
 * "total_bytes", "total_rows", "fragments" (range list), "segments": [
 * {"segment_id", "bytes", "num_rows", "fragments", "shards": [{"shard_id",
 * "path", "bytes", "num_rows", "fragments"}]}]}. A new reference the caller
 * json_decref()s; NULL on allocation failure. */
json_t *sf_plan_to_json(const sf_plan *p);

#endif
