/* event_encode.c - see event_encode.h. */
#include "event_encode.h"

#include <avro.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fragset.h"
#include "schemas/event.h"

struct sf_event_encoder {
  const sf_schema_set *set;
  sf_framing framing;
  unsigned flags;
  avro_value_iface_t *iface[SF_EVENT_TYPE_COUNT];
  avro_value_t value[SF_EVENT_TYPE_COUNT];
  avro_writer_t writer;
};

void sf_event_encoder_free(sf_event_encoder *enc) {
  if (!enc) return;
  for (unsigned t = 0; t < SF_EVENT_TYPE_COUNT; t++) {
    if (enc->value[t].self) avro_value_decref(&enc->value[t]);
    if (enc->iface[t]) avro_value_iface_decref(enc->iface[t]);
  }
  if (enc->writer) avro_writer_free(enc->writer);
  free(enc);
}

sf_code sf_event_encoder_new(const sf_schema_set *set, sf_framing framing, unsigned flags,
                             sf_event_encoder **out, sf_err *err) {
  *out = NULL;
  sf_event_encoder *enc = calloc(1, sizeof *enc);
  if (!enc) return sf_err_set(err, SF_ENOMEM, "out of memory creating an event encoder");
  enc->set = set;
  enc->framing = framing;
  enc->flags = flags;
  static char dummy;
  enc->writer = avro_writer_memory(&dummy, 0);
  if (!enc->writer) goto oom;
  for (unsigned t = 0; t < SF_EVENT_TYPE_COUNT; t++) {
    const sf_schema *s = sf_schema_current(set, (sf_event_type)t);
    enc->iface[t] = avro_generic_class_from_schema(s->avro);
    if (!enc->iface[t] || avro_generic_value_new(enc->iface[t], &enc->value[t])) goto oom;
  }
  *out = enc;
  return SF_OK;
oom:
  sf_event_encoder_free(enc);
  return sf_err_set(err, SF_ENOMEM, "cannot create an event encoder: %s",
                    avro_strerror());
}

/* ---- filling generic values ------------------------------------------------
 * Every setter names the field it failed on; a failure here means the code
 * and the current schema disagree (a field renamed in the .avsc), which the
 * round-trip tests catch. */

typedef struct {
  avro_value_t *rec;
  const char *ev;
  sf_err *err;
  int failed;
} filler;

static avro_value_t *field(filler *f, const char *name, avro_value_t *tmp) {
  if (f->failed) return NULL;
  if (avro_value_get_by_name(f->rec, name, tmp, NULL)) {
    f->failed = 1;
    sf_err_set(f->err, SF_EINVAL, "the current %s schema has no field '%s'", f->ev, name);
    return NULL;
  }
  return tmp;
}

static void failed(filler *f, const char *name) {
  if (f->failed) return;
  f->failed = 1;
  sf_err_set(f->err, SF_ENOMEM, "cannot set %s.%s: %s", f->ev, name, avro_strerror());
}

static void fill(filler *f, const sf_evrec *rec, const void *e);

static void set_bitmap(filler *f, avro_value_t *v, const char *name,
                       const roaring_bitmap_t *b) {
  if (f->failed) return;
  uint8_t *buf = NULL;
  size_t n = 0;
  if (b && sf_fragset_encode(b, &buf, &n, f->err) != SF_OK) {
    f->failed = 1;
    return;
  }
  if (avro_value_set_bytes(v, buf ? (void *)buf : (void *)"", n)) failed(f, name);
  free(buf);
}

/* Sets v, the value of field r of e (the union's branch for an optional one). */
static void set_value(filler *f, const sf_evfield *r, const void *e, avro_value_t *v) {
  static const char empty;
  int bad = 0;
  switch (r->kind) {
    case SF_EVF_STRING: {
      const char *s = *SF_EVF_CAT(e, r, char *);
      bad = avro_value_set_string(v, s ? s : "");
      break;
    }
    case SF_EVF_LONG:
      bad = avro_value_set_long(v, *SF_EVF_CAT(e, r, int64_t));
      break;
    case SF_EVF_INT:
      bad = avro_value_set_int(v, *SF_EVF_CAT(e, r, int32_t));
      break;
    case SF_EVF_ENUM:
      bad = avro_value_set_enum(v, *SF_EVF_CAT(e, r, int));
      break;
    case SF_EVF_BITMAP:
      set_bitmap(f, v, r->name, *SF_EVF_CAT(e, r, roaring_bitmap_t *));
      return;
    case SF_EVF_BYTES: {
      const void *b = *SF_EVF_CAT(e, r, void *);
      bad = avro_value_set_bytes(v, (void *)(b ? b : &empty),
                                 *(const size_t *)((const char *)e + r->aux));
      break;
    }
    case SF_EVF_STRINGS:
      for (size_t j = 0; j < sf_evf_count(e, r) && !bad; j++) {
        const char *s = (*SF_EVF_CAT(e, r, char **))[j];
        avro_value_t item;
        bad =
            avro_value_append(v, &item, NULL) || avro_value_set_string(&item, s ? s : "");
      }
      break;
    case SF_EVF_RECORDS:
      for (size_t j = 0; j < sf_evf_count(e, r) && !f->failed; j++) {
        avro_value_t item;
        if (avro_value_append(v, &item, NULL)) {
          failed(f, r->name);
          return;
        }
        filler g = {&item, r->items->name, f->err, 0};
        fill(&g, r->items, *SF_EVF_CAT(e, r, char *) + j * r->items->size);
        f->failed = g.failed;
      }
      return;
  }
  if (bad) failed(f, r->name);
}

/* Sets every field of rec from e, in table order. An optional field is a
 * ["null", X] union: branch 0 is null, branch 1 the value. */
static void fill(filler *f, const sf_evrec *rec, const void *e) {
  for (size_t i = 0; i < rec->nfields && !f->failed; i++) {
    const sf_evfield *r = &rec->fields[i];
    avro_value_t v, branch;
    if (!field(f, r->name, &v)) return;
    if (!(r->flags & SF_EVF_OPTIONAL)) {
      set_value(f, r, e, &v);
      continue;
    }
    bool present = sf_evf_present(e, r);
    if (avro_value_set_branch(&v, present ? 1 : 0, &branch) ||
        (!present && avro_value_set_null(&branch)))
      failed(f, r->name);
    else if (present)
      set_value(f, r, e, &branch);
  }
}

/* Frames and writes enc->value[type]. */
static sf_code emit(sf_event_encoder *enc, sf_event_type type, uint8_t **out, size_t *len,
                    sf_err *err) {
  const sf_schema *s = sf_schema_current(enc->set, type);
  uint32_t id = 0;
  bool has_id = sf_schema_id_of(enc->set, s, &id);
  sf_framing framing = enc->framing;
  if (framing == SF_FRAMING_AUTO)
    framing = has_id ? SF_FRAMING_CONFLUENT : SF_FRAMING_SINGLE;
  if (framing == SF_FRAMING_CONFLUENT && !has_id)
    return sf_err_set(err, SF_EINVAL,
                      "the Confluent framing needs a schema id for %s: configure one "
                      "(e.g. --schema-id %s=<id>)",
                      sf_event_type_name(type), sf_event_type_name(type));
  size_t hdr =
      framing == SF_FRAMING_CONFLUENT ? SF_CONFLUENT_HEADER : SF_SINGLE_OBJECT_HEADER;
  size_t size = 0;
  if (avro_value_sizeof(&enc->value[type], &size))
    return sf_err_set(err, SF_EINVAL, "cannot size the %s datum: %s",
                      sf_event_type_name(type), avro_strerror());
  uint8_t *buf = malloc(hdr + size);
  if (!buf)
    return sf_err_set(err, SF_ENOMEM, "out of memory encoding a %s event",
                      sf_event_type_name(type));
  if (framing == SF_FRAMING_CONFLUENT) {
    buf[0] = 0;
    for (int i = 0; i < 4; i++) buf[1 + i] = (uint8_t)(id >> (24 - 8 * i));
  } else {
    buf[0] = 0xC3;
    buf[1] = 0x01;
    for (int i = 0; i < 8; i++) buf[2 + i] = (uint8_t)(s->fingerprint >> (8 * i));
  }
  avro_writer_memory_set_dest(enc->writer, (const char *)buf + hdr, (int64_t)size);
  if (avro_value_write(enc->writer, &enc->value[type])) {
    free(buf);
    return sf_err_set(err, SF_EINVAL, "cannot write the %s datum: %s",
                      sf_event_type_name(type), avro_strerror());
  }
  *out = buf;
  *len = hdr + size;
  return SF_OK;
}

static sf_code encode(sf_event_encoder *enc, const sf_event *ev, uint8_t **out,
                      size_t *len, sf_err *err) {
  *out = NULL;
  *len = 0;
  if (!(enc->flags & SF_ENCODE_NO_VALIDATE)) {
    sf_code rc = sf_event_validate(ev, NULL, err);
    if (rc != SF_OK) return rc;
  }
  avro_value_t *v = &enc->value[ev->type];
  avro_value_reset(v); /* empties the arrays of the previous event */
  filler f = {v, sf_event_type_name(ev->type), err, 0};
  fill(&f, sf_evrec_of(ev->type), sf_event_body_const(ev));
  sf_code rc =
      f.failed ? (err ? err->code : SF_EINVAL) : emit(enc, ev->type, out, len, err);
  /* Release the copies of this event's strings and bitmaps now: avro-c keeps
   * them where leak checkers cannot see them, and nothing reuses them. */
  avro_value_reset(v);
  return rc;
}

/* The typed entry points wrap the struct in an sf_event by value: a shallow
 * copy whose pointers stay the caller's. */
sf_code sf_event_encode_shard_staged(sf_event_encoder *enc, const sf_shard_staged *e,
                                     uint8_t **out, size_t *len, sf_err *err) {
  sf_event ev = {.type = SF_EVENT_SHARD_STAGED, .u.staged = *e};
  return encode(enc, &ev, out, len, err);
}

sf_code sf_event_encode_segments_committed(sf_event_encoder *enc,
                                           const sf_segments_committed *e, uint8_t **out,
                                           size_t *len, sf_err *err) {
  sf_event ev = {.type = SF_EVENT_SEGMENTS_COMMITTED, .u.committed = *e};
  return encode(enc, &ev, out, len, err);
}

sf_code sf_event_encode_shard_rejected(sf_event_encoder *enc, const sf_shard_rejected *e,
                                       uint8_t **out, size_t *len, sf_err *err) {
  sf_event ev = {.type = SF_EVENT_SHARD_REJECTED, .u.rejected = *e};
  return encode(enc, &ev, out, len, err);
}

sf_code sf_event_encode_segments_compacted(sf_event_encoder *enc,
                                           const sf_segments_compacted *e, uint8_t **out,
                                           size_t *len, sf_err *err) {
  sf_event ev = {.type = SF_EVENT_SEGMENTS_COMPACTED, .u.compacted = *e};
  return encode(enc, &ev, out, len, err);
}

sf_code sf_event_encode(sf_event_encoder *enc, const sf_event *e, uint8_t **out,
                        size_t *len, sf_err *err) {
  if ((unsigned)e->type >= SF_EVENT_TYPE_COUNT)
    return sf_err_set(err, SF_EINVAL, "unknown event type %d", (int)e->type);
  return encode(enc, e, out, len, err);
}
