/*
 * seginfo.h - what a built segment is, as the planner, the build pipeline,
 * the catalog and the SegmentsCommitted event all see it. The plain struct
 * is the hand-off between core/build (which fills it) and core/catalog
 * (which records it); its fields mirror the design's SegmentInfo record.
 */
#ifndef SF_SEGINFO_H
#define SF_SEGINFO_H

#include <roaring/roaring.h>
#include <stdint.h>

#include "core/base/types.h"

typedef struct sf_seginfo {
  char *segment_id; /* derived from staging id + shard ids; owned */
  char *path;     /* relative to <dataset>/_indices/, e.g. "segments/<id>.sfseg"; owned */
  uint64_t bytes; /* file size */
  uint64_t num_rows;
  roaring_bitmap_t *fragments; /* owned */
  char **shard_ids;            /* owned array of owned strings */
  uint32_t num_shards;
  /* index parameters, equal for every segment of a logical index */
  sf_index_type index_type;
  sf_metric metric;
  uint32_t dim, nlist;
  uint64_t quantizer_checksum;
} sf_seginfo;

/* Deep-copies src into dst (whose previous contents are not freed); on
 * SF_ENOMEM dst is left zeroed. Free with sf_seginfo_clear. */
sf_code sf_seginfo_copy(sf_seginfo *dst, const sf_seginfo *src, sf_err *err);

/* Frees the members of s (not s itself); accepts NULL and zeroed structs. */
void sf_seginfo_clear(sf_seginfo *s);

#endif
