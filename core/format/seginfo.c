/* seginfo.c - see seginfo.h. */
#include "core/format/seginfo.h"

#include <stdlib.h>
#include <string.h>

#include "core/base/error.h"
#include "core/base/fragset.h"

void sf_seginfo_clear(sf_seginfo *s) {
  if (!s) return;
  free(s->segment_id);
  free(s->path);
  if (s->fragments) sf_fragset_free(s->fragments);
  for (uint32_t i = 0; i < s->num_shards; i++) free(s->shard_ids[i]);
  free(s->shard_ids);
  memset(s, 0, sizeof *s);
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

sf_code sf_seginfo_copy(sf_seginfo *dst, const sf_seginfo *src, sf_err *err) {
  *dst = *src;
  dst->segment_id = dup_or_null(src->segment_id);
  dst->path = dup_or_null(src->path);
  dst->fragments = src->fragments ? roaring_bitmap_copy(src->fragments) : NULL;
  dst->shard_ids = src->num_shards ? calloc(src->num_shards, sizeof(char *)) : NULL;
  int ok = (!src->segment_id || dst->segment_id) && (!src->path || dst->path) &&
           (!src->fragments || dst->fragments) && (!src->num_shards || dst->shard_ids);
  for (uint32_t i = 0; ok && i < src->num_shards; i++)
    ok = (dst->shard_ids[i] = dup_or_null(src->shard_ids[i])) || !src->shard_ids[i];
  if (ok) return SF_OK;
  if (!dst->shard_ids) dst->num_shards = 0;
  sf_seginfo_clear(dst);
  return sf_err_set(err, SF_ENOMEM, "out of memory copying a segment description");
}
