/* event_json.c - see event_json.h. */
#include "event_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fragset.h"

/* ---- to JSON ---------------------------------------------------------------- */

static int add(json_t *o, const char *k, json_t *v) {
  return json_object_set_new(o, k, v);
}

static json_t *str_or_null(const char *s) {
  return s ? json_string(s) : json_null();
}

static json_t *bitmap_json(const roaring_bitmap_t *b) {
  if (!b) return json_null();
  char *s = sf_fragset_format(b);
  json_t *j = s ? json_string(s) : NULL;
  free(s);
  return j;
}

static json_t *hex_json(const uint8_t *b, size_t n) {
  char *s = malloc(2 * n + 1);
  if (!s) return NULL;
  for (size_t i = 0; i < n; i++) snprintf(s + 2 * i, 3, "%02x", b[i]);
  s[2 * n] = 0;
  json_t *j = json_string(s);
  free(s);
  return j;
}

static json_t *staged_json(const sf_shard_staged *e) {
  json_t *o = json_object();
  char sum[24];
  snprintf(sum, sizeof sum, "0x%016" PRIx64, e->quantizer_checksum);
  int bad = !o || add(o, "event_id", str_or_null(e->event_id)) ||
            add(o, "dataset_uri", str_or_null(e->dataset_uri)) ||
            add(o, "index_name", str_or_null(e->index_name)) ||
            add(o, "column", str_or_null(e->column)) ||
            add(o, "staging_id", str_or_null(e->staging_id)) ||
            add(o, "shard_id", str_or_null(e->shard_id)) ||
            add(o, "shard_path", str_or_null(e->shard_path)) ||
            add(o, "shard_bytes", json_integer(e->shard_bytes)) ||
            add(o, "num_rows", json_integer(e->num_rows)) ||
            add(o, "fragments", bitmap_json(e->fragments)) ||
            add(o, "expected_fragments", bitmap_json(e->expected_fragments)) ||
            add(o, "index_type", json_string(sf_index_type_name(e->index_type))) ||
            add(o, "metric", json_string(sf_metric_name(e->metric))) ||
            add(o, "dim", json_integer(e->dim)) ||
            add(o, "num_partitions", json_integer(e->num_partitions)) ||
            add(o, "quantizer_checksum", json_string(sum)) ||
            add(o, "target_segment_bytes",
                e->has_target_segment_bytes ? json_integer(e->target_segment_bytes)
                                            : json_null()) ||
            add(o, "staged_at_ms", json_integer(e->staged_at_ms));
  if (bad) json_decref(o);
  return bad ? NULL : o;
}

static json_t *segment_json(const sf_segment_info *s) {
  json_t *o = json_object(), *ids = json_array();
  int bad = !o || !ids;
  for (size_t i = 0; !bad && i < s->num_shard_ids; i++)
    bad = json_array_append_new(ids, str_or_null(s->shard_ids[i]));
  bad = bad || add(o, "segment_id", str_or_null(s->segment_id)) ||
        add(o, "path", str_or_null(s->path)) || add(o, "bytes", json_integer(s->bytes)) ||
        add(o, "num_rows", json_integer(s->num_rows)) ||
        add(o, "fragments", bitmap_json(s->fragments)) ||
        add(o, "shard_ids", json_incref(ids));
  json_decref(ids);
  if (bad) json_decref(o);
  return bad ? NULL : o;
}

static json_t *committed_json(const sf_segments_committed *e) {
  json_t *o = json_object(), *segs = json_array();
  int bad = !o || !segs;
  for (size_t i = 0; !bad && i < e->num_segments; i++)
    bad = json_array_append_new(segs, segment_json(&e->segments[i]));
  bad = bad || add(o, "event_id", str_or_null(e->event_id)) ||
        add(o, "dataset_uri", str_or_null(e->dataset_uri)) ||
        add(o, "index_name", str_or_null(e->index_name)) ||
        add(o, "staging_id", str_or_null(e->staging_id)) ||
        add(o, "catalog_version", json_integer(e->catalog_version)) ||
        add(o, "segments", json_incref(segs)) ||
        add(o, "total_rows", json_integer(e->total_rows)) ||
        add(o, "num_shards", json_integer(e->num_shards)) ||
        add(o, "first_staged_at_ms", json_integer(e->first_staged_at_ms)) ||
        add(o, "committed_at_ms", json_integer(e->committed_at_ms));
  json_decref(segs);
  if (bad) json_decref(o);
  return bad ? NULL : o;
}

static json_t *rejected_json(const sf_shard_rejected *e) {
  json_t *o = json_object();
  int bad =
      !o || add(o, "reason", str_or_null(e->reason)) ||
      add(o, "message", str_or_null(e->message)) ||
      add(o, "staging_id", str_or_null(e->staging_id)) ||
      add(o, "shard_id", str_or_null(e->shard_id)) ||
      add(o, "source_topic", str_or_null(e->source_topic)) ||
      add(o, "source_partition", json_integer(e->source_partition)) ||
      add(o, "source_offset", json_integer(e->source_offset)) ||
      add(o, "original_value", hex_json(e->original_value, e->original_value_len)) ||
      add(o, "rejected_at_ms", json_integer(e->rejected_at_ms));
  if (bad) json_decref(o);
  return bad ? NULL : o;
}

json_t *sf_event_to_json(const sf_event *e) {
  switch (e->type) {
    case SF_EVENT_SHARD_STAGED:
      return staged_json(&e->u.staged);
    case SF_EVENT_SEGMENTS_COMMITTED:
      return committed_json(&e->u.committed);
    case SF_EVENT_SHARD_REJECTED:
      return rejected_json(&e->u.rejected);
  }
  return NULL;
}

/* ---- from JSON --------------------------------------------------------------- */

typedef struct {
  const json_t *obj;
  const char *ev;
  sf_err *err;
  sf_code rc;
} reader;

static const json_t *need(reader *r, const char *k, bool optional) {
  if (r->rc) return NULL;
  const json_t *v = json_object_get(r->obj, k);
  if (!v && !optional)
    r->rc = sf_err_set(r->err, SF_EINVAL, "%s: field '%s' is missing", r->ev, k);
  return v;
}

static void wrong(reader *r, const char *k, const char *expected) {
  if (!r->rc)
    r->rc =
        sf_err_set(r->err, SF_EINVAL, "%s: field '%s' must be %s", r->ev, k, expected);
}

static void oom(reader *r) {
  if (!r->rc)
    r->rc = sf_err_set(r->err, SF_ENOMEM, "out of memory reading %s JSON", r->ev);
}

static char *rd_str(reader *r, const char *k, bool nullable) {
  const json_t *v = need(r, k, nullable);
  if (!v || (nullable && json_is_null(v))) return NULL;
  if (!json_is_string(v)) {
    wrong(r, k, nullable ? "a string or null" : "a string");
    return NULL;
  }
  /* json_string_length counts embedded NULs (\u0000), which C strings cannot hold. */
  if (strlen(json_string_value(v)) != json_string_length(v)) {
    wrong(r, k, "a string without NUL characters");
    return NULL;
  }
  char *s = strdup(json_string_value(v));
  if (!s) oom(r);
  return s;
}

static int64_t rd_long(reader *r, const char *k, int64_t lo, int64_t hi) {
  const json_t *v = need(r, k, false);
  if (!v) return 0;
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
    wrong(r, k, hi == INT32_MAX ? "an integer that fits 32 bits" : "an integer");
    return 0;
  }
  return json_integer_value(v);
}

static roaring_bitmap_t *rd_bitmap(reader *r, const char *k) {
  const json_t *v = need(r, k, false);
  if (!v) return NULL;
  roaring_bitmap_t *b = NULL;
  char what[80];
  snprintf(what, sizeof what, "%s.%s", r->ev, k);
  if (json_is_string(v) && !*json_string_value(v)) {
    b = roaring_bitmap_create();
  } else if (json_is_string(v)) {
    r->rc = sf_fragset_parse(json_string_value(v), what, &b, r->err);
    return b;
  } else if (json_is_array(v)) {
    b = roaring_bitmap_create();
    for (size_t i = 0; b && i < json_array_size(v); i++) {
      const json_t *x = json_array_get(v, i);
      if (!json_is_integer(x) || json_integer_value(x) < 0 ||
          json_integer_value(x) > UINT32_MAX) {
        sf_fragset_free(b);
        wrong(r, k, "a range list such as \"0-63,70\" or an array of fragment numbers");
        return NULL;
      }
      roaring_bitmap_add(b, (uint32_t)json_integer_value(x));
    }
  } else {
    wrong(r, k, "a range list such as \"0-63,70\" or an array of fragment numbers");
    return NULL;
  }
  if (!b) oom(r);
  return b;
}

static uint64_t rd_checksum(reader *r, const char *k) {
  const json_t *v = need(r, k, false);
  if (!v) return 0;
  if (json_is_integer(v)) return (uint64_t)json_integer_value(v);
  const char *s = json_string_value(v);
  char *end;
  errno = 0;
  unsigned long long x = s ? strtoull(s, &end, 0) : 0;
  if (!s || !*s || *s == '-' || *end || errno) {
    wrong(r, k, "an integer or a hex string such as \"0x00ab12...\"");
    return 0;
  }
  return x;
}

static uint8_t *rd_hex(reader *r, const char *k, size_t *n) {
  const json_t *v = need(r, k, false);
  *n = 0;
  if (!v) return NULL;
  const char *s = json_string_value(v);
  size_t len = s ? strlen(s) : 1;
  if (!s || len % 2 || strspn(s, "0123456789abcdefABCDEF") != len) {
    wrong(r, k, "a string of hex digit pairs");
    return NULL;
  }
  uint8_t *b = malloc(len / 2 + 1);
  if (!b) {
    oom(r);
    return NULL;
  }
  for (size_t i = 0; i < len / 2; i++) {
    char two[3] = {s[2 * i], s[2 * i + 1], 0};
    b[i] = (uint8_t)strtoul(two, NULL, 16);
  }
  *n = len / 2;
  return b;
}

/* Refuses keys outside `allowed` (NULL-terminated). */
static void no_unknown(reader *r, const char *const *allowed) {
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)r->obj, key, val) {
    (void)val;
    size_t i = 0;
    while (allowed[i] && strcmp(allowed[i], key)) i++;
    if (!allowed[i] && !r->rc)
      r->rc = sf_err_set(r->err, SF_EINVAL, "%s: unknown field '%s'", r->ev, key);
  }
}

static void staged_from(reader *r, sf_shard_staged *e) {
  static const char *const fields[] = {"event_id",
                                       "dataset_uri",
                                       "index_name",
                                       "column",
                                       "staging_id",
                                       "shard_id",
                                       "shard_path",
                                       "shard_bytes",
                                       "num_rows",
                                       "fragments",
                                       "expected_fragments",
                                       "index_type",
                                       "metric",
                                       "dim",
                                       "num_partitions",
                                       "quantizer_checksum",
                                       "target_segment_bytes",
                                       "staged_at_ms",
                                       NULL};
  e->event_id = rd_str(r, "event_id", false);
  e->dataset_uri = rd_str(r, "dataset_uri", false);
  e->index_name = rd_str(r, "index_name", false);
  e->column = rd_str(r, "column", false);
  e->staging_id = rd_str(r, "staging_id", false);
  e->shard_id = rd_str(r, "shard_id", false);
  e->shard_path = rd_str(r, "shard_path", false);
  e->shard_bytes = rd_long(r, "shard_bytes", INT64_MIN, INT64_MAX);
  e->num_rows = rd_long(r, "num_rows", INT64_MIN, INT64_MAX);
  e->fragments = rd_bitmap(r, "fragments");
  e->expected_fragments = rd_bitmap(r, "expected_fragments");
  const json_t *t = need(r, "index_type", false), *m = need(r, "metric", false);
  if (t && !r->rc)
    r->rc = sf_index_type_parse(json_string_value(t), &e->index_type, r->err);
  if (m && !r->rc) r->rc = sf_metric_parse(json_string_value(m), &e->metric, r->err);
  e->dim = (int32_t)rd_long(r, "dim", INT32_MIN, INT32_MAX);
  e->num_partitions = (int32_t)rd_long(r, "num_partitions", INT32_MIN, INT32_MAX);
  e->quantizer_checksum = rd_checksum(r, "quantizer_checksum");
  const json_t *tsb = need(r, "target_segment_bytes", true);
  e->has_target_segment_bytes = tsb && !json_is_null(tsb);
  if (e->has_target_segment_bytes)
    e->target_segment_bytes = rd_long(r, "target_segment_bytes", INT64_MIN, INT64_MAX);
  e->staged_at_ms = rd_long(r, "staged_at_ms", INT64_MIN, INT64_MAX);
  no_unknown(r, fields);
}

static void segment_from(reader *r, sf_segment_info *s) {
  static const char *const fields[] = {"segment_id", "path",      "bytes", "num_rows",
                                       "fragments",  "shard_ids", NULL};
  s->segment_id = rd_str(r, "segment_id", false);
  s->path = rd_str(r, "path", false);
  s->bytes = rd_long(r, "bytes", INT64_MIN, INT64_MAX);
  s->num_rows = rd_long(r, "num_rows", INT64_MIN, INT64_MAX);
  s->fragments = rd_bitmap(r, "fragments");
  const json_t *ids = need(r, "shard_ids", false);
  if (ids && !json_is_array(ids)) wrong(r, "shard_ids", "an array of strings");
  size_t n = ids && !r->rc ? json_array_size(ids) : 0;
  if (n && !(s->shard_ids = calloc(n, sizeof *s->shard_ids))) oom(r);
  for (size_t i = 0; i < n && !r->rc; i++) {
    reader one = {json_pack("{sO}", "id", json_array_get(ids, i)), r->ev, r->err, 0};
    if (!one.obj) {
      oom(r);
      break;
    }
    s->shard_ids[i] = rd_str(&one, "id", false);
    s->num_shard_ids = i + 1;
    r->rc = one.rc;
    json_decref((json_t *)one.obj);
  }
  no_unknown(r, fields);
}

static void committed_from(reader *r, sf_segments_committed *e) {
  static const char *const fields[] = {
      "event_id",           "dataset_uri",     "index_name", "staging_id",
      "catalog_version",    "segments",        "total_rows", "num_shards",
      "first_staged_at_ms", "committed_at_ms", NULL};
  e->event_id = rd_str(r, "event_id", false);
  e->dataset_uri = rd_str(r, "dataset_uri", false);
  e->index_name = rd_str(r, "index_name", false);
  e->staging_id = rd_str(r, "staging_id", false);
  e->catalog_version = rd_long(r, "catalog_version", INT64_MIN, INT64_MAX);
  const json_t *segs = need(r, "segments", false);
  if (segs && !json_is_array(segs)) wrong(r, "segments", "an array of objects");
  size_t n = segs && !r->rc ? json_array_size(segs) : 0;
  if (n && !(e->segments = calloc(n, sizeof *e->segments))) oom(r);
  for (size_t i = 0; i < n && !r->rc; i++) {
    const json_t *item = json_array_get(segs, i);
    if (!json_is_object(item)) {
      wrong(r, "segments", "an array of objects");
      break;
    }
    reader one = {item, "SegmentInfo", r->err, 0};
    e->num_segments = i + 1;
    segment_from(&one, &e->segments[i]);
    r->rc = one.rc;
  }
  e->total_rows = rd_long(r, "total_rows", INT64_MIN, INT64_MAX);
  e->num_shards = (int32_t)rd_long(r, "num_shards", INT32_MIN, INT32_MAX);
  e->first_staged_at_ms = rd_long(r, "first_staged_at_ms", INT64_MIN, INT64_MAX);
  e->committed_at_ms = rd_long(r, "committed_at_ms", INT64_MIN, INT64_MAX);
  no_unknown(r, fields);
}

static void rejected_from(reader *r, sf_shard_rejected *e) {
  static const char *const fields[] = {"reason",         "message",
                                       "staging_id",     "shard_id",
                                       "source_topic",   "source_partition",
                                       "source_offset",  "original_value",
                                       "rejected_at_ms", NULL};
  e->reason = rd_str(r, "reason", false);
  e->message = rd_str(r, "message", false);
  e->staging_id = rd_str(r, "staging_id", true);
  e->shard_id = rd_str(r, "shard_id", true);
  e->source_topic = rd_str(r, "source_topic", false);
  e->source_partition = (int32_t)rd_long(r, "source_partition", INT32_MIN, INT32_MAX);
  e->source_offset = rd_long(r, "source_offset", INT64_MIN, INT64_MAX);
  e->original_value = rd_hex(r, "original_value", &e->original_value_len);
  e->rejected_at_ms = rd_long(r, "rejected_at_ms", INT64_MIN, INT64_MAX);
  no_unknown(r, fields);
}

sf_code sf_event_from_json(sf_event_type type, const json_t *obj, sf_event *out,
                           sf_err *err) {
  memset(out, 0, sizeof *out);
  out->type = type;
  if ((unsigned)type >= SF_EVENT_TYPE_COUNT)
    return sf_err_set(err, SF_EINVAL, "unknown event type %d", (int)type);
  reader r = {obj, sf_event_type_name(type), err, SF_OK};
  if (!json_is_object(obj))
    return sf_err_set(err, SF_EINVAL, "%s: the JSON must be an object of fields", r.ev);
  switch (type) {
    case SF_EVENT_SHARD_STAGED:
      staged_from(&r, &out->u.staged);
      break;
    case SF_EVENT_SEGMENTS_COMMITTED:
      committed_from(&r, &out->u.committed);
      break;
    case SF_EVENT_SHARD_REJECTED:
      rejected_from(&r, &out->u.rejected);
      break;
  }
  if (r.rc) sf_event_clear(out);
  return r.rc;
}
