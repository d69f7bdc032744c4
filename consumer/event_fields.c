/*
 * event_fields.c - see event_fields.h.
 */
#include "event_fields.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fragset.h"

sf_code sf_evfield_oom(sf_event_reason *reason, sf_err *err, const char *what) {
  if (reason) *reason = SF_REASON_NONE;
  return sf_err_set(err, SF_ENOMEM, "out of memory decoding %s", what);
}

/* ---- conversion, shared by both readers ---------------------------------------- */

typedef struct {
  const char *ev; /* record name for messages */
  sf_event_reason *reason;
  sf_err *err;
} conv;

sf_code sf_evfield_str(sf_evfield_conv *c, const char *field, const char *s, size_t n,
                       char **out) {
  if (memchr(s, 0, n))
    return sf_event_reject(c->reason, SF_REASON_INVALID_FIELD, c->err,
                           "%s.%s contains a NUL byte at %zu", c->ev, field,
                           (size_t)((const char *)memchr(s, 0, n) - s));
  char *d = malloc(n + 1);
  if (!d) return sf_evfield_oom(c->reason, c->err, field);
  memcpy(d, s, n);
  d[n] = 0;
  *out = d;
  return SF_OK;
}

sf_code sf_evfield_bitmap(sf_evfield_conv *c, const char *field, const void *b, size_t n,
                          roaring_bitmap_t **out) {
  char what[96];
  snprintf(what, sizeof what, "%s.%s", c->ev, field);
  if (sf_fragset_decode(b, n, what, out, c->err) == SF_OK) return SF_OK;
  if (c->err && c->err->code == SF_ENOMEM)
    return sf_evfield_oom(c->reason, c->err, field);
  if (c->reason) *c->reason = SF_REASON_INVALID_FIELD;
  if (c->err) c->err->code = SF_EDECODE;
  return SF_EDECODE;
}

#define TRY(x)                    \
  do {                            \
    sf_code rc_ = (x);            \
    if (rc_ != SF_OK) return rc_; \
  } while (0)

/* ---- the avro-c reader ------------------------------------------------------- */

/* Reads fields by name from a record value. A field that an older writer
 * lacked is absent from the value (see sf_schema_reader_for) and is given
 * the default of the current schema, `rec_json`. */
typedef struct {
  sf_evfield_conv c;
  avro_value_t *rec;
  const json_t *rec_json;
} getter;

static avro_value_t *fld(getter *g, const char *name, avro_value_t *tmp) {
  return avro_value_get_by_name(g->rec, name, tmp, NULL) ? NULL : tmp;
}

static const json_t *dflt(getter *g, const char *name) {
  const json_t *fields = json_object_get(g->rec_json, "fields");
  for (size_t i = 0; i < json_array_size(fields); i++) {
    const json_t *f = json_array_get(fields, i);
    const char *n = json_string_value(json_object_get(f, "name"));
    if (n && !strcmp(n, name)) return json_object_get(f, "default");
  }
  return NULL;
}

/* The current-schema JSON of the record type of field `name` (through an
 * array), for nested defaults. */
static const json_t *nested_json(getter *g, const char *name) {
  const json_t *fields = json_object_get(g->rec_json, "fields");
  for (size_t i = 0; i < json_array_size(fields); i++) {
    const json_t *f = json_array_get(fields, i);
    const char *n = json_string_value(json_object_get(f, "name"));
    if (n && !strcmp(n, name)) {
      const json_t *t = json_object_get(f, "type");
      return json_object_get(t, "items") ? json_object_get(t, "items") : t;
    }
  }
  return NULL;
}

/* A field the current schema lacks: the code and the .avsc disagree. */
static sf_code missing(getter *g, const char *name) {
  return sf_event_reject(g->c.reason, SF_REASON_DECODE_ERROR, g->c.err,
                         "%s.%s cannot be read: %s", g->c.ev, name, avro_strerror());
}

static sf_code get_str(getter *g, const char *name, char **out) {
  avro_value_t v;
  const char *s;
  size_t n;
  const json_t *d;
  if (!fld(g, name, &v) && json_is_string(d = dflt(g, name)))
    return sf_evfield_str(&g->c, name, json_string_value(d), strlen(json_string_value(d)),
                          out);
  if (!fld(g, name, &v) || avro_value_get_string(&v, &s, &n)) return missing(g, name);
  return sf_evfield_str(&g->c, name, s, n ? n - 1 : 0, out); /* n counts avro-c's NUL */
}

static sf_code get_long(getter *g, const char *name, int64_t *out) {
  avro_value_t v;
  const json_t *d;
  if (!fld(g, name, &v) && json_is_integer(d = dflt(g, name))) {
    *out = json_integer_value(d);
    return SF_OK;
  }
  return fld(g, name, &v) && !avro_value_get_long(&v, out) ? SF_OK : missing(g, name);
}

static sf_code get_int(getter *g, const char *name, int32_t *out) {
  avro_value_t v;
  const json_t *d;
  if (!fld(g, name, &v) && json_is_integer(d = dflt(g, name))) {
    *out = (int32_t)json_integer_value(d);
    return SF_OK;
  }
  return fld(g, name, &v) && !avro_value_get_int(&v, out) ? SF_OK : missing(g, name);
}

static sf_code get_blob(getter *g, const char *name, const void **b, size_t *n) {
  avro_value_t v;
  return fld(g, name, &v) && !avro_value_get_bytes(&v, b, n) ? SF_OK : missing(g, name);
}

static sf_code get_bitmap(getter *g, const char *name, roaring_bitmap_t **out) {
  const void *b;
  size_t n;
  TRY(get_blob(g, name, &b, &n));
  return sf_evfield_bitmap(&g->c, name, b, n, out);
}

static sf_code get_symbol(getter *g, const char *name, const char **sym) {
  avro_value_t v;
  int i;
  const json_t *d;
  if (!fld(g, name, &v) && json_is_string(d = dflt(g, name))) {
    *sym = json_string_value(d);
    return SF_OK;
  }
  if (!fld(g, name, &v) || avro_value_get_enum(&v, &i)) return missing(g, name);
  *sym = avro_schema_enum_get(avro_value_get_schema(&v), i);
  return *sym ? SF_OK : missing(g, name);
}

/* An optional (union with null) field: *present says which branch. */
static sf_code get_optional(getter *g, const char *name, bool *present,
                            avro_value_t *branch) {
  avro_value_t v;
  if (!fld(g, name, &v) &&
      json_is_null(dflt(g, name))) { /* ["null", X] defaults to null */
    *present = false;
    return SF_OK;
  }
  if (!fld(g, name, &v) || avro_value_get_current_branch(&v, branch))
    return missing(g, name);
  *present = avro_value_get_type(branch) != AVRO_NULL;
  return SF_OK;
}

static sf_code read_staged(getter *g, sf_shard_staged *e) {
  const char *sym;
  TRY(get_str(g, "event_id", &e->event_id));
  TRY(get_str(g, "dataset_uri", &e->dataset_uri));
  TRY(get_str(g, "index_name", &e->index_name));
  TRY(get_str(g, "column", &e->column));
  TRY(get_str(g, "staging_id", &e->staging_id));
  TRY(get_str(g, "shard_id", &e->shard_id));
  TRY(get_str(g, "shard_path", &e->shard_path));
  TRY(get_long(g, "shard_bytes", &e->shard_bytes));
  TRY(get_long(g, "num_rows", &e->num_rows));
  TRY(get_bitmap(g, "fragments", &e->fragments));
  TRY(get_bitmap(g, "expected_fragments", &e->expected_fragments));
  TRY(get_symbol(g, "index_type", &sym));
  if (sf_index_type_parse(sym, &e->index_type, NULL)) return missing(g, "index_type");
  TRY(get_symbol(g, "metric", &sym));
  if (sf_metric_parse(sym, &e->metric, NULL)) return missing(g, "metric");
  TRY(get_int(g, "dim", &e->dim));
  TRY(get_int(g, "num_partitions", &e->num_partitions));
  TRY(get_long(g, "quantizer_checksum", (int64_t *)&e->quantizer_checksum));
  avro_value_t b;
  TRY(get_optional(g, "target_segment_bytes", &e->has_target_segment_bytes, &b));
  if (e->has_target_segment_bytes && avro_value_get_long(&b, &e->target_segment_bytes))
    return missing(g, "target_segment_bytes");
  return get_long(g, "staged_at_ms", &e->staged_at_ms);
}

static sf_code read_segment(getter *g, sf_segment_info *s) {
  TRY(get_str(g, "segment_id", &s->segment_id));
  TRY(get_str(g, "path", &s->path));
  TRY(get_long(g, "bytes", &s->bytes));
  TRY(get_long(g, "num_rows", &s->num_rows));
  TRY(get_bitmap(g, "fragments", &s->fragments));
  avro_value_t ids, item;
  size_t n;
  if (!fld(g, "shard_ids", &ids) || avro_value_get_size(&ids, &n))
    return missing(g, "shard_ids");
  if (n && !(s->shard_ids = calloc(n, sizeof *s->shard_ids)))
    return sf_evfield_oom(g->c.reason, g->c.err, "shard_ids");
  for (size_t i = 0; i < n; i++) {
    if (avro_value_get_by_index(&ids, i, &item, NULL)) return missing(g, "shard_ids");
    getter one = {g->c, &item, NULL};
    const char *str;
    size_t len;
    if (avro_value_get_string(&item, &str, &len)) return missing(&one, "shard_ids");
    TRY(sf_evfield_str(&g->c, "shard_ids[]", str, len ? len - 1 : 0, &s->shard_ids[i]));
    s->num_shard_ids = i + 1;
  }
  return SF_OK;
}

static sf_code read_committed(getter *g, sf_segments_committed *e) {
  TRY(get_str(g, "event_id", &e->event_id));
  TRY(get_str(g, "dataset_uri", &e->dataset_uri));
  TRY(get_str(g, "index_name", &e->index_name));
  TRY(get_str(g, "staging_id", &e->staging_id));
  TRY(get_long(g, "catalog_version", &e->catalog_version));
  avro_value_t arr, item;
  size_t n;
  if (!fld(g, "segments", &arr) || avro_value_get_size(&arr, &n))
    return missing(g, "segments");
  if (n && !(e->segments = calloc(n, sizeof *e->segments)))
    return sf_evfield_oom(g->c.reason, g->c.err, "segments");
  for (size_t i = 0; i < n; i++) {
    if (avro_value_get_by_index(&arr, i, &item, NULL)) return missing(g, "segments");
    getter one = {{"SegmentsCommitted.segments[]", g->c.reason, g->c.err},
                  &item,
                  nested_json(g, "segments")};
    e->num_segments = i + 1;
    TRY(read_segment(&one, &e->segments[i]));
  }
  TRY(get_long(g, "total_rows", &e->total_rows));
  TRY(get_int(g, "num_shards", &e->num_shards));
  TRY(get_long(g, "first_staged_at_ms", &e->first_staged_at_ms));
  return get_long(g, "committed_at_ms", &e->committed_at_ms);
}

static sf_code get_optional_str(getter *g, const char *name, char **out) {
  bool present;
  avro_value_t b;
  const char *s;
  size_t n;
  TRY(get_optional(g, name, &present, &b));
  if (!present) return SF_OK;
  if (avro_value_get_string(&b, &s, &n)) return missing(g, name);
  return sf_evfield_str(&g->c, name, s, n ? n - 1 : 0, out);
}

static sf_code read_rejected(getter *g, sf_shard_rejected *e) {
  TRY(get_str(g, "reason", &e->reason));
  TRY(get_str(g, "message", &e->message));
  TRY(get_optional_str(g, "staging_id", &e->staging_id));
  TRY(get_optional_str(g, "shard_id", &e->shard_id));
  TRY(get_str(g, "source_topic", &e->source_topic));
  TRY(get_int(g, "source_partition", &e->source_partition));
  TRY(get_long(g, "source_offset", &e->source_offset));
  const void *b;
  size_t n;
  TRY(get_blob(g, "original_value", &b, &n));
  if (n) {
    if (!(e->original_value = malloc(n)))
      return sf_evfield_oom(g->c.reason, g->c.err, "original_value");
    memcpy(e->original_value, b, n);
  }
  e->original_value_len = n;
  return get_long(g, "rejected_at_ms", &e->rejected_at_ms);
}

sf_code sf_evfield_read(sf_event_type type, sf_evfield_conv c, avro_value_t *rec,
                        const json_t *rec_json, sf_event *out) {
  getter g = {c, rec, rec_json};
  switch (type) {
    case SF_EVENT_SHARD_STAGED:
      return read_staged(&g, &out->u.staged);
    case SF_EVENT_SEGMENTS_COMMITTED:
      return read_committed(&g, &out->u.committed);
    default:
      return read_rejected(&g, &out->u.rejected);
  }
}