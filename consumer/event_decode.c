/*
 * event_decode.c - see event_decode.h.
 *
 * Order of checks, the same in both readers so that they agree on the
 * reason for any input: (1) framing and schema lookup, (2) the structure of
 * the whole datum (lengths, varints, enum and union indexes, trailing
 * bytes) -> DECODE_ERROR, (3) conversion of fields in schema order (no NUL
 * in strings, bitmaps that deserialize) -> INVALID_FIELD, (4) field rules.
 */
#include "event_decode.h"

#include <avro.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/event_fields.h"
#include "core/base/avrobin.h"

/* avro-c state for one writer schema, created on first use and reused. */
typedef struct {
  bool ready;
  avro_value_iface_t *cls;      /* the current schema minus fields the writer lacks */
  avro_value_t value;           /* ... an instance: the getters read this */
  avro_value_iface_t *resolver; /* writer -> that schema */
  avro_value_t resolved;        /* read into this; it fills `value` */
} writer_state;

struct sf_event_decoder {
  const sf_schema_set *set;
  sf_framing framing;
  unsigned flags;
  bool fast; /* the hand-written ShardStaged reader matches the schema */
  const sf_schema *last;
  avro_reader_t reader;
  avro_value_iface_t *reader_iface[SF_EVENT_TYPE_COUNT];
  avro_value_t reader_value[SF_EVENT_TYPE_COUNT]; /* current-schema values */
  json_t *current_json[SF_EVENT_TYPE_COUNT];      /* for the fields' defaults */
  writer_state *writers;                          /* one per schema of the set */
  size_t nwriters;
};

/* ---- framing ---------------------------------------------------------------- */

sf_code sf_event_decode_header(const sf_schema_set *set, sf_framing framing,
                               const void *buf, size_t len, const sf_schema **schema,
                               size_t *header_len, sf_event_reason *reason, sf_err *err) {
  const uint8_t *b = buf;
  *schema = NULL;
  if (len == 0)
    return sf_event_reject(reason, SF_REASON_DECODE_ERROR, err,
                           "the event is empty (0 bytes)");
  bool single = len >= 2 && b[0] == 0xC3 && b[1] == 0x01, confluent = b[0] == 0x00;
  if (framing == SF_FRAMING_SINGLE && !single)
    return sf_event_reject(
        reason, SF_REASON_DECODE_ERROR, err,
        "the event does not start with the single-object marker C3 01 (first "
        "byte 0x%02x)%s",
        b[0], confluent ? "; it looks Confluent-framed: use --framing confluent" : "");
  if (framing == SF_FRAMING_CONFLUENT && !confluent)
    return sf_event_reject(
        reason, SF_REASON_DECODE_ERROR, err,
        "the event does not start with the Confluent magic byte 00 (first byte "
        "0x%02x)%s",
        b[0], single ? "; it looks single-object encoded: use --framing single" : "");
  if (single) {
    if (len < SF_SINGLE_OBJECT_HEADER)
      return sf_event_reject(
          reason, SF_REASON_DECODE_ERROR, err,
          "the event is %zu bytes, shorter than the 10-byte single-object header", len);
    uint64_t fp = 0;
    for (int i = 0; i < 8; i++) fp |= (uint64_t)b[2 + i] << (8 * i);
    *schema = sf_schema_by_fingerprint(set, fp);
    if (!*schema)
      return sf_event_reject(
          reason, SF_REASON_UNKNOWN_SCHEMA, err,
          "no registered schema has fingerprint %016llx: the writer used a schema "
          "this program does not know (register it as an older version, or "
          "upgrade)",
          (unsigned long long)fp);
    *header_len = SF_SINGLE_OBJECT_HEADER;
    return SF_OK;
  }
  if (confluent) {
    if (len < SF_CONFLUENT_HEADER)
      return sf_event_reject(
          reason, SF_REASON_DECODE_ERROR, err,
          "the event is %zu bytes, shorter than the 5-byte Confluent header", len);
    uint32_t id =
        (uint32_t)b[1] << 24 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | b[4];
    *schema = sf_schema_by_id(set, id);
    if (!*schema)
      return sf_event_reject(
          reason, SF_REASON_UNKNOWN_SCHEMA, err,
          "schema id %u is not configured: map it to an event type (e.g. "
          "--schema-id ShardStaged=%u)",
          id, id);
    *header_len = SF_CONFLUENT_HEADER;
    return SF_OK;
  }
  return sf_event_reject(
      reason, SF_REASON_DECODE_ERROR, err,
      "the event starts with 0x%02x%s: it is neither single-object encoded (C3 01) "
      "nor Confluent-framed (00)",
      b[0], len > 1 ? "" : " and has no more bytes");
}

/* ---- the decoder ------------------------------------------------------------ */

/* The field layout the hand-written reader expects, in schema order. */
static const struct {
  const char *name;
  avro_type_t type;
} staged_layout[] = {
    {"event_id", AVRO_STRING},
    {"dataset_uri", AVRO_STRING},
    {"index_name", AVRO_STRING},
    {"column", AVRO_STRING},
    {"staging_id", AVRO_STRING},
    {"shard_id", AVRO_STRING},
    {"shard_path", AVRO_STRING},
    {"shard_bytes", AVRO_INT64},
    {"num_rows", AVRO_INT64},
    {"fragments", AVRO_BYTES},
    {"expected_fragments", AVRO_BYTES},
    {"index_type", AVRO_ENUM},
    {"metric", AVRO_ENUM},
    {"dim", AVRO_INT32},
    {"num_partitions", AVRO_INT32},
    {"quantizer_checksum", AVRO_INT64},
    {"target_segment_bytes", AVRO_UNION},
    {"staged_at_ms", AVRO_INT64},
};
#define STAGED_NFIELDS (sizeof staged_layout / sizeof staged_layout[0])

static bool enum_matches(avro_schema_t s, const char *(*name)(int), int n) {
  if (!is_avro_enum(s) || avro_schema_enum_number_of_symbols(s) != n) return false;
  for (int i = 0; i < n; i++)
    if (strcmp(avro_schema_enum_get(s, i), name(i))) return false;
  return true;
}
static const char *type_sym(int i) {
  return sf_index_type_name((sf_index_type)i);
}
static const char *metric_sym(int i) {
  return sf_metric_name((sf_metric)i);
}

static bool fast_layout_ok(avro_schema_t s) {
  if (avro_schema_record_size(s) != STAGED_NFIELDS) return false;
  for (size_t i = 0; i < STAGED_NFIELDS; i++) {
    avro_schema_t f = avro_schema_record_field_get_by_index(s, (int)i);
    if (strcmp(avro_schema_record_field_name(s, (int)i), staged_layout[i].name) ||
        avro_typeof(f) != staged_layout[i].type)
      return false;
  }
  avro_schema_t u = avro_schema_record_field_get(s, "target_segment_bytes");
  return enum_matches(avro_schema_record_field_get(s, "index_type"), type_sym, 3) &&
         enum_matches(avro_schema_record_field_get(s, "metric"), metric_sym, 3) &&
         avro_schema_union_size(u) == 2 && is_avro_null(avro_schema_union_branch(u, 0)) &&
         is_avro_int64(avro_schema_union_branch(u, 1));
}

void sf_event_decoder_free(sf_event_decoder *dec) {
  if (!dec) return;
  for (size_t i = 0; dec->writers && i < dec->nwriters; i++) { /* NULL: calloc failed */
    writer_state *w = &dec->writers[i];
    if (w->resolved.self) avro_value_decref(&w->resolved);
    if (w->resolver) avro_value_iface_decref(w->resolver);
    if (w->value.self) avro_value_decref(&w->value);
    if (w->cls) avro_value_iface_decref(w->cls);
  }
  free(dec->writers);
  for (unsigned t = 0; t < SF_EVENT_TYPE_COUNT; t++) {
    if (dec->reader_value[t].self) avro_value_decref(&dec->reader_value[t]);
    if (dec->reader_iface[t]) avro_value_iface_decref(dec->reader_iface[t]);
    json_decref(dec->current_json[t]);
  }
  if (dec->reader) avro_reader_free(dec->reader);
  free(dec);
}

sf_code sf_event_decoder_new(const sf_schema_set *set, sf_framing framing, unsigned flags,
                             sf_event_decoder **out, sf_err *err) {
  *out = NULL;
  sf_event_decoder *dec = calloc(1, sizeof *dec);
  if (!dec) return sf_err_set(err, SF_ENOMEM, "out of memory creating an event decoder");
  dec->set = set;
  dec->framing = framing;
  dec->flags = flags;
  dec->nwriters = sf_schema_set_count(set);
  dec->writers = calloc(dec->nwriters, sizeof *dec->writers);
  static const char dummy;
  dec->reader = avro_reader_memory(&dummy, 0);
  if (!dec->writers || !dec->reader) goto fail;
  for (unsigned t = 0; t < SF_EVENT_TYPE_COUNT; t++) {
    const sf_schema *s = sf_schema_current(set, (sf_event_type)t);
    dec->reader_iface[t] = avro_generic_class_from_schema(s->avro);
    dec->current_json[t] = json_loads(s->json, 0, NULL);
    if (!dec->reader_iface[t] || !dec->current_json[t] ||
        avro_generic_value_new(dec->reader_iface[t], &dec->reader_value[t]))
      goto fail;
  }
  dec->fast = !(flags & SF_DECODE_NO_FAST_PATH) &&
              fast_layout_ok(sf_schema_current(set, SF_EVENT_SHARD_STAGED)->avro);
  *out = dec;
  return SF_OK;
fail:
  sf_event_decoder_free(dec);
  return sf_err_set(err, SF_ENOMEM, "cannot create an event decoder: %s",
                    avro_strerror());
}

const sf_schema *sf_event_decoder_last_schema(const sf_event_decoder *dec) {
  return dec->last;
}

bool sf_event_decoder_has_fast_path(const sf_event_decoder *dec) {
  return dec->fast;
}

#define TRY(x)                    \
  do {                            \
    sf_code rc_ = (x);            \
    if (rc_ != SF_OK) return rc_; \
  } while (0)

/* ---- the hand-written ShardStaged reader -------------------------------------- */

typedef struct {
  const uint8_t *p;
  size_t n;
} span;

static sf_code fast_staged(const uint8_t *buf, size_t len, sf_shard_staged *e,
                           sf_event_reason *reason, sf_err *err) {
  sf_avrobin r;
  sf_avrobin_init(&r, buf, len);
  span s[7], frag, expect;
  int32_t itype, metric;
  int64_t branch = 0;
  size_t k = 0; /* index into staged_layout, for messages */
  /* Pass 1: structure only, nothing allocated. */
  for (; k < 7; k++)
    if (sf_avrobin_blob(&r, &s[k].p, &s[k].n)) goto truncated;
  if (sf_avrobin_long(&r, &e->shard_bytes) || (++k, sf_avrobin_long(&r, &e->num_rows)) ||
      (++k, sf_avrobin_blob(&r, &frag.p, &frag.n)) ||
      (++k, sf_avrobin_blob(&r, &expect.p, &expect.n)) ||
      (++k, sf_avrobin_int(&r, &itype)))
    goto truncated;
  if (itype < 0 || itype > 2) goto bad_index;
  if (++k, sf_avrobin_int(&r, &metric)) goto truncated;
  if (metric < 0 || metric > 2) goto bad_index;
  if ((++k, sf_avrobin_int(&r, &e->dim)) ||
      (++k, sf_avrobin_int(&r, &e->num_partitions)) ||
      (++k, sf_avrobin_long(&r, (int64_t *)&e->quantizer_checksum)) ||
      (++k, sf_avrobin_long(&r, &branch)))
    goto truncated;
  if (branch != 0 && branch != 1) goto bad_index;
  e->has_target_segment_bytes = branch == 1;
  if (branch == 1 && sf_avrobin_long(&r, &e->target_segment_bytes)) goto truncated;
  if (++k, sf_avrobin_long(&r, &e->staged_at_ms)) goto truncated;
  if (r.p != r.end)
    return sf_event_reject(
        reason, SF_REASON_DECODE_ERROR, err,
        "ShardStaged has %zu trailing bytes after the datum (%zu bytes)",
        (size_t)(r.end - r.p), (size_t)(r.p - r.start));
  e->index_type = (sf_index_type)itype;
  e->metric = (sf_metric)metric;
  /* Pass 2: conversion, in schema order. */
  sf_evfield_conv c = {"ShardStaged", reason, err};
  char **strs[7] = {&e->event_id,   &e->dataset_uri, &e->index_name, &e->column,
                    &e->staging_id, &e->shard_id,    &e->shard_path};
  for (k = 0; k < 7; k++)
    TRY(sf_evfield_str(&c, staged_layout[k].name, (const char *)s[k].p, s[k].n, strs[k]));
  TRY(sf_evfield_bitmap(&c, "fragments", frag.p, frag.n, &e->fragments));
  TRY(sf_evfield_bitmap(&c, "expected_fragments", expect.p, expect.n,
                        &e->expected_fragments));
  return SF_OK;
truncated:
  return sf_event_reject(
      reason, SF_REASON_DECODE_ERROR, err,
      "ShardStaged datum is truncated or malformed in field '%s' at datum byte %zu "
      "of %zu",
      staged_layout[k].name, (size_t)(r.p - r.start), len);
bad_index:
  return sf_event_reject(
      reason, SF_REASON_DECODE_ERROR, err,
      "ShardStaged datum has an enum or union index out of range in field '%s' at "
      "datum byte %zu of %zu",
      staged_layout[k].name, (size_t)(r.p - r.start), len);
}

/* Reads the datum with avro-c; *value receives the record to take the fields
 * from: dec->reader_value[type] for the current schema, or for an older one
 * the value a resolved writer filled (see sf_schema_reader_for). */
static sf_code read_with_avro(sf_event_decoder *dec, const sf_schema *s, const uint8_t *d,
                              size_t n, avro_value_t **value, sf_event_reason *reason,
                              sf_err *err) {
  sf_event_type t = s->type;
  avro_value_t *target = &dec->reader_value[t];
  *value = target;
  if (s->index >= dec->nwriters)
    return sf_err_set(err, SF_EINVAL, "schema %s was added after the decoder was created",
                      s->origin);
  if (!s->current) {
    writer_state *w = &dec->writers[s->index];
    if (!w->ready) {
      avro_schema_t rs;
      sf_err why;
      if (sf_schema_reader_for(dec->set, s, &rs, &why) != SF_OK)
        return sf_event_reject(reason, SF_REASON_UNKNOWN_SCHEMA, err, "%s", why.msg);
      w->cls = avro_generic_class_from_schema(rs);
      w->resolver = w->cls ? avro_resolved_writer_new(s->avro, rs) : NULL;
      avro_schema_decref(rs);
      if (!w->resolver) {
        /* Not ready: drop the class too, or every later event of this
         * writer schema would leak one. */
        if (w->cls) avro_value_iface_decref(w->cls);
        w->cls = NULL;
        return sf_event_reject(reason, SF_REASON_UNKNOWN_SCHEMA, err,
                               "%s schema %s cannot be read as the current version: %s",
                               sf_event_type_name(t), s->origin, avro_strerror());
      }
      if (avro_generic_value_new(w->cls, &w->value) ||
          avro_resolved_writer_new_value(w->resolver, &w->resolved))
        return sf_evfield_oom(reason, err, "a resolved value");
      avro_resolved_writer_set_dest(&w->resolved, &w->value);
      w->ready = true;
    }
    *value = &w->value;
    target = &w->resolved;
  }
  avro_value_reset(*value);
  avro_reader_memory_set_source(dec->reader, (const char *)d, (int64_t)n);
  if (avro_value_read(dec->reader, target))
    return sf_event_reject(reason, SF_REASON_DECODE_ERROR, err,
                           "%s datum (schema %s) does not read: %s",
                           sf_event_type_name(t), s->origin, avro_strerror());
  return SF_OK;
}

static sf_code decode(sf_event_decoder *dec, const void *buf, size_t len,
                      bool staged_only, sf_event *out, sf_event_reason *reason,
                      sf_err *err) {
  const sf_schema *s;
  size_t hdr = 0, used; /* hdr is set on success; -O3 cannot tell */
  dec->last = NULL;
  TRY(sf_event_decode_header(dec->set, dec->framing, buf, len, &s, &hdr, reason, err));
  dec->last = s;
  if (staged_only && s->type != SF_EVENT_SHARD_STAGED)
    return sf_event_reject(
        reason, SF_REASON_UNKNOWN_SCHEMA, err,
        "the event is a %s (schema %s); this topic carries ShardStaged events",
        sf_event_type_name(s->type), s->origin);
  const uint8_t *d = (const uint8_t *)buf + hdr;
  size_t n = len - hdr;
  out->type = s->type;
  sf_code rc;
  if (dec->fast && s->current && s->type == SF_EVENT_SHARD_STAGED) {
    rc = fast_staged(d, n, &out->u.staged, reason, err);
  } else {
    sf_err scan_err;
    if (sf_avrobin_scan(s->avro, d, n, &used, &scan_err) != SF_OK)
      return sf_event_reject(reason, SF_REASON_DECODE_ERROR, err,
                             "%s datum is truncated or malformed: %s",
                             sf_event_type_name(s->type), scan_err.msg);
    if (used != n)
      return sf_event_reject(reason, SF_REASON_DECODE_ERROR, err,
                             "%s has %zu trailing bytes after the datum (%zu bytes)",
                             sf_event_type_name(s->type), n - used, used);
    avro_value_t *rec;
    TRY(read_with_avro(dec, s, d, n, &rec, reason, err));
    sf_evfield_conv c = {sf_event_type_name(s->type), reason, err};
    rc = sf_evfield_read(s->type, c, rec, dec->current_json[s->type], out);
    /* Release the datum's strings now rather than at the next event: avro-c
     * keeps them where leak checkers cannot see them. */
    avro_value_reset(rec);
  }
  if (rc != SF_OK || (dec->flags & SF_DECODE_NO_VALIDATE)) return rc;
  return sf_event_validate(out, reason, err);
}

sf_code sf_event_decode(sf_event_decoder *dec, const void *buf, size_t len, sf_event *out,
                        sf_event_reason *reason, sf_err *err) {
  memset(out, 0, sizeof *out);
  if (reason) *reason = SF_REASON_NONE;
  sf_code rc = decode(dec, buf, len, false, out, reason, err);
  if (rc != SF_OK) sf_event_clear(out);
  return rc;
}

sf_code sf_event_decode_shard_staged(sf_event_decoder *dec, const void *buf, size_t len,
                                     sf_shard_staged *out, sf_event_reason *reason,
                                     sf_err *err) {
  sf_event ev;
  memset(&ev, 0, sizeof ev);
  if (reason) *reason = SF_REASON_NONE;
  sf_code rc = decode(dec, buf, len, true, &ev, reason, err);
  if (rc != SF_OK) {
    sf_event_clear(&ev);
    memset(out, 0, sizeof *out);
    return rc;
  }
  *out = ev.u.staged;
  return SF_OK;
}
