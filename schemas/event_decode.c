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

#include "core/base/avrobin.h"
#include "schemas/event_decode_internal.h"

/* The bounded reader's plan for one writer schema of a hot record: for
 * each of the writer's fields, in its order, the table row it fills. The
 * table's rows that the writer lacks are optional (null). */
typedef struct {
  bool ok;
  uint8_t n;
  uint8_t row[SF_EVREC_MAX_FIELDS];
} fast_plan;

/* Per writer schema: the bounded reader's plan, and the avro-c state,
 * created on first use and reused. */
typedef struct {
  fast_plan fast;
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
  bool fast; /* the bounded reader reads the current ShardStaged */
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

/* Whether the bounded reader can read records written with `writer`
 * straight into the struct of `rec`: every writer field is a row of the
 * table with the same type (union shape included), and every row the
 * writer lacks is optional, so that its default (null) is the zeroed
 * struct's. Otherwise avro-c reads it, with schema resolution. */
static bool plan_for(const sf_evrec *rec, avro_schema_t writer, fast_plan *pl) {
  memset(pl, 0, sizeof *pl);
  size_t nf = avro_schema_record_size(writer);
  bool used[SF_EVREC_MAX_FIELDS] = {0};
  if (!rec->hot || nf > SF_EVREC_MAX_FIELDS) return false;
  for (size_t i = 0; i < nf; i++) {
    const char *name = avro_schema_record_field_name(writer, (int)i);
    avro_schema_t t = avro_schema_record_field_get_by_index(writer, (int)i);
    size_t k = 0;
    while (k < rec->nfields && strcmp(rec->fields[k].name, name)) k++;
    if (k == rec->nfields || used[k]) return false;
    const sf_evfield *f = &rec->fields[k];
    if (f->kind == SF_EVF_STRINGS || f->kind == SF_EVF_RECORDS) return false;
    if (f->flags & SF_EVF_OPTIONAL) {
      if (!is_avro_union(t) || avro_schema_union_size(t) != 2 ||
          !is_avro_null(avro_schema_union_branch(t, 0)))
        return false;
      t = avro_schema_union_branch(t, 1);
    }
    if (!sf_evf_matches(f, t)) return false;
    used[k] = true;
    pl->row[i] = (uint8_t)k;
  }
  for (size_t k = 0; k < rec->nfields; k++)
    if (!used[k] && !(rec->fields[k].flags & SF_EVF_OPTIONAL)) return false;
  pl->n = (uint8_t)nf;
  return pl->ok = true;
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
  for (size_t i = 0; !(flags & SF_DECODE_NO_FAST_PATH) && i < dec->nwriters; i++) {
    const sf_schema *s = sf_schema_set_at(set, i);
    plan_for(sf_evrec_of(s->type), s->avro, &dec->writers[i].fast);
  }
  dec->fast = dec->writers[sf_schema_current(set, SF_EVENT_SHARD_STAGED)->index].fast.ok;
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

bool sf_event_decoder_reads_fast(const sf_event_decoder *dec, const sf_schema *s) {
  return s->index < dec->nwriters && dec->writers[s->index].fast.ok;
}

#define TRY(x)                    \
  do {                            \
    sf_code rc_ = (x);            \
    if (rc_ != SF_OK) return rc_; \
  } while (0)

/* ---- the bounded reader ------------------------------------------------------ */

/* Reads a datum of a hot record in two passes: the structure of the whole
 * datum first (nothing allocated, scalars stored), then the conversion of
 * strings and bitmaps in table order, as the avro-c reader does. */
static sf_code fast_read(const sf_evrec *rec, const fast_plan *pl, const uint8_t *buf,
                         size_t len, void *e, sf_event_reason *reason, sf_err *err) {
  sf_avrobin r;
  sf_avrobin_init(&r, buf, len);
  struct {
    const uint8_t *p;
    size_t n;
  } blob[SF_EVREC_MAX_FIELDS];
  bool got[SF_EVREC_MAX_FIELDS] = {0};
  const sf_evfield *f = NULL; /* the field being read, for messages */
  /* Pass 1: structure only, nothing allocated. */
  for (size_t i = 0; i < pl->n; i++) {
    size_t k = pl->row[i];
    f = &rec->fields[k];
    if (f->flags & SF_EVF_OPTIONAL) {
      int64_t branch;
      if (sf_avrobin_long(&r, &branch)) goto truncated;
      if (branch != 0 && branch != 1) goto bad_index;
      if (f->kind != SF_EVF_STRING) *(bool *)((char *)e + f->aux) = branch == 1;
      if (branch == 0) continue;
    }
    int32_t x;
    switch (f->kind) {
      case SF_EVF_STRING:
      case SF_EVF_BITMAP:
      case SF_EVF_BYTES:
        if (sf_avrobin_blob(&r, &blob[k].p, &blob[k].n)) goto truncated;
        got[k] = true;
        break;
      case SF_EVF_LONG:
        if (sf_avrobin_long(&r, SF_EVF_AT(e, f, int64_t))) goto truncated;
        break;
      case SF_EVF_INT:
        if (sf_avrobin_int(&r, SF_EVF_AT(e, f, int32_t))) goto truncated;
        break;
      case SF_EVF_ENUM:
        if (sf_avrobin_int(&r, &x)) goto truncated;
        if (x < 0 || x >= f->sym->count) goto bad_index;
        *SF_EVF_AT(e, f, int) = x;
        break;
      default: /* arrays: never in a plan */
        goto truncated;
    }
  }
  if (r.p != r.end)
    return sf_event_reject(reason, SF_REASON_DECODE_ERROR, err,
                           "%s has %zu trailing bytes after the datum (%zu bytes)",
                           rec->name, (size_t)(r.end - r.p), (size_t)(r.p - r.start));
  /* Pass 2: conversion, in table order. */
  sf_evdec_conv c = {rec->name, reason, err};
  for (size_t k = 0; k < rec->nfields; k++) {
    if (!got[k]) continue;
    f = &rec->fields[k];
    if (f->kind == SF_EVF_STRING)
      TRY(sf_evdec_str(&c, f->name, (const char *)blob[k].p, blob[k].n,
                       SF_EVF_AT(e, f, char *)));
    else if (f->kind == SF_EVF_BITMAP)
      TRY(sf_evdec_bitmap(&c, f->name, blob[k].p, blob[k].n,
                          SF_EVF_AT(e, f, roaring_bitmap_t *)));
    else {
      *(size_t *)((char *)e + f->aux) = blob[k].n;
      TRY(sf_evdec_bytes(&c, f->name, blob[k].p, blob[k].n, SF_EVF_AT(e, f, uint8_t *)));
    }
  }
  return SF_OK;
truncated:
  return sf_event_reject(
      reason, SF_REASON_DECODE_ERROR, err,
      "%s datum is truncated or malformed in field '%s' at datum byte %zu of %zu",
      rec->name, f ? f->name : "", (size_t)(r.p - r.start), len);
bad_index:
  return sf_event_reject(
      reason, SF_REASON_DECODE_ERROR, err,
      "%s datum has an enum or union index out of range in field '%s' at datum byte "
      "%zu of %zu",
      rec->name, f->name, (size_t)(r.p - r.start), len);
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
        return sf_evdec_oom(reason, err, "a resolved value");
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
  const sf_evrec *rec = sf_evrec_of(s->type);
  if (s->index < dec->nwriters && dec->writers[s->index].fast.ok) {
    rc = fast_read(rec, &dec->writers[s->index].fast, d, n, sf_event_body(out), reason,
                   err);
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
    avro_value_t *value;
    TRY(read_with_avro(dec, s, d, n, &value, reason, err));
    sf_evdec_conv c = {rec->name, reason, err};
    rc =
        sf_evdec_read_avro(rec, c, value, dec->current_json[s->type], sf_event_body(out));
    /* Release the datum's strings now rather than at the next event: avro-c
     * keeps them where leak checkers cannot see them. */
    avro_value_reset(value);
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
