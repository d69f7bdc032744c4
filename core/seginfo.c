/* seginfo.c - see seginfo.h. */
#include "seginfo.h"

#include <stdlib.h>
#include <string.h>

void sf_seginfo_clear(sf_seginfo *s) {
  if (!s) return;
  free(s->segment_id);
  free(s->path);
  if (s->fragments) roaring_bitmap_free(s->fragments);
  for (uint32_t i = 0; i < s->num_shards; i++) free(s->shard_ids[i]);
  free(s->shard_ids);
  memset(s, 0, sizeof *s);
}
