/*
 * event_decode_avro.c - the avro-c reader of the decoder, a walk of the
 * field table (see event_decode_internal.h), and the conversions both readers
 * share.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fragset.h"
#include "event_decode_internal.h"

sf_code sf_evdec_oom(sf_event_reason *reason, sf_err *err, const char *what) {
  if (reason) *reason = SF_REASON_NONE;
  return sf_err_set(err, SF_ENOMEM, "out of memory decoding %s", what);
}

/* ---- conversion, shared by both readers ---------------------------------------- */

sf_code sf_evdec_str(sf_evdec_conv *c, const char *field, const char *s, size_t n,
                     char **out) {
  if (memchr(s, 0, n))
    return sf_event_reject(c->reason, SF_REASON_INVALID_FIELD, c->err,
                           "%s.%s contains a NUL byte at %zu", c->ev, field,
                           (size_t)((const char *)memchr(s, 0, n) - s));
  char *d = malloc(n + 1);
  if (!d) return sf_evdec_oom(c->reason, c->err, field);
  memcpy(d, s, n);
  d[n] = 0;
  *out = d;
  return SF_OK;
}

sf_code sf_evdec_bitmap(sf_evdec_conv *c, const char *field, const void *b, size_t n,
                        roaring_bitmap_t **out) {
  char what[96];
  snprintf(what, sizeof what, "%s.%s", c->ev, field);
  if (sf_fragset_decode(b, n, what, out, c->err) == SF_OK) return SF_OK;
  if (c->err && c->err->code == SF_ENOMEM) return sf_evdec_oom(c->reason, c->err, field);
  if (c->reason) *c->reason = SF_REASON_INVALID_FIELD;
  if (c->err) c->err->code = SF_EDECODE;
  return SF_EDECODE;
}

sf_code sf_evdec_bytes(sf_evdec_conv *c, const char *field, const void *b, size_t n,
                       uint8_t **out) {
  *out = NULL;
  if (!n) return SF_OK;
  if (!(*out = malloc(n))) return sf_evdec_oom(c->reason, c->err, field);
  memcpy(*out, b, n);
  return SF_OK;
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
  sf_evdec_conv c;
  avro_value_t *rec;
  const json_t *rec_json;
} getter;

static avro_value_t *fld(getter *g, const char *name, avro_value_t *tmp) {
  return avro_value_get_by_name(g->rec, name, tmp, NULL) ? NULL : tmp;
}

/* The current schema's JSON of field `name`. */
static const json_t *field_json(getter *g, const char *name) {
  const json_t *fields = json_object_get(g->rec_json, "fields");
  for (size_t i = 0; i < json_array_size(fields); i++) {
    const json_t *f = json_array_get(fields, i);
    const char *n = json_string_value(json_object_get(f, "name"));
    if (n && !strcmp(n, name)) return f;
  }
  return NULL;
}

static const json_t *dflt(getter *g, const char *name) {
  return json_object_get(field_json(g, name), "default");
}

/* The current-schema JSON of the record type of field `name` (through an
 * array), for nested defaults. */
static const json_t *nested_json(getter *g, const char *name) {
  const json_t *t = json_object_get(field_json(g, name), "type");
  return json_object_get(t, "items") ? json_object_get(t, "items") : t;
}

/* A field the current schema lacks: the code and the .avsc disagree. */
static sf_code missing(getter *g, const char *name) {
  return sf_event_reject(g->c.reason, SF_REASON_DECODE_ERROR, g->c.err,
                         "%s.%s cannot be read: %s", g->c.ev, name, avro_strerror());
}

/* The value of field f: the field itself, or for an optional one the
 * union's branch (*present false for null). Absent from the writer: its
 * default, as `d` (NULL when there is none). */
static sf_code get_value(getter *g, const sf_evfield *f, avro_value_t *v, bool *present,
                         const json_t **d) {
  avro_value_t u;
  *present = true;
  *d = NULL;
  if (!fld(g, f->name, (f->flags & SF_EVF_OPTIONAL) ? &u : v)) {
    *d = dflt(g, f->name);
    if (!*d) return missing(g, f->name);
    *present = !json_is_null(*d); /* ["null", X] defaults to null */
    return SF_OK;
  }
  if (!(f->flags & SF_EVF_OPTIONAL)) return SF_OK;
  if (avro_value_get_current_branch(&u, v)) return missing(g, f->name);
  *present = avro_value_get_type(v) != AVRO_NULL;
  return SF_OK;
}

static sf_code get_string(getter *g, const char *name, avro_value_t *v, char **out) {
  const char *s;
  size_t n;
  if (avro_value_get_string(v, &s, &n)) return missing(g, name);
  return sf_evdec_str(&g->c, name, s, n ? n - 1 : 0, out); /* n counts avro-c's NUL */
}

static sf_code read_array(getter *g, const sf_evfield *f, avro_value_t *arr, void *out) {
  size_t n;
  avro_value_t item;
  if (avro_value_get_size(arr, &n)) return missing(g, f->name);
  size_t sz = f->kind == SF_EVF_STRINGS ? sizeof(char *) : f->items->size;
  char *v = n ? calloc(n, sz) : NULL;
  if (n && !v) return sf_evdec_oom(g->c.reason, g->c.err, f->name);
  *SF_EVF_AT(out, f, char *) = v;
  char ev[128], item_name[96];
  snprintf(ev, sizeof ev, "%s.%s[]", g->c.ev, f->name);
  snprintf(item_name, sizeof item_name, "%s[]", f->name);
  for (size_t i = 0; i < n; i++) {
    if (avro_value_get_by_index(arr, i, &item, NULL)) return missing(g, f->name);
    sf_evf_set_count(out, f, i + 1);
    if (f->kind == SF_EVF_STRINGS) {
      TRY(get_string(g, item_name, &item, (char **)v + i));
    } else {
      TRY(sf_evdec_read_avro(f->items, (sf_evdec_conv){ev, g->c.reason, g->c.err}, &item,
                             nested_json(g, f->name), v + i * sz));
    }
  }
  return SF_OK;
}

static sf_code read_field(getter *g, const sf_evfield *f, void *out) {
  avro_value_t v;
  bool present;
  const json_t *d;
  TRY(get_value(g, f, &v, &present, &d));
  if (f->flags & SF_EVF_OPTIONAL && f->kind != SF_EVF_STRING)
    *(bool *)((char *)out + f->aux) = present;
  if (!present) return SF_OK;
  switch (f->kind) {
    case SF_EVF_STRING:
      if (d && json_is_string(d))
        return sf_evdec_str(&g->c, f->name, json_string_value(d),
                            strlen(json_string_value(d)), SF_EVF_AT(out, f, char *));
      return d ? missing(g, f->name)
               : get_string(g, f->name, &v, SF_EVF_AT(out, f, char *));
    case SF_EVF_LONG:
      if (d) {
        if (!json_is_integer(d)) return missing(g, f->name);
        *SF_EVF_AT(out, f, int64_t) = json_integer_value(d);
        return SF_OK;
      }
      return avro_value_get_long(&v, SF_EVF_AT(out, f, int64_t)) ? missing(g, f->name)
                                                                 : SF_OK;
    case SF_EVF_INT:
      if (d) {
        if (!json_is_integer(d)) return missing(g, f->name);
        *SF_EVF_AT(out, f, int32_t) = (int32_t)json_integer_value(d);
        return SF_OK;
      }
      return avro_value_get_int(&v, SF_EVF_AT(out, f, int32_t)) ? missing(g, f->name)
                                                                : SF_OK;
    case SF_EVF_ENUM: {
      const char *sym = NULL;
      int i;
      if (d)
        sym = json_string_value(d);
      else if (!avro_value_get_enum(&v, &i))
        sym = avro_schema_enum_get(avro_value_get_schema(&v), i);
      if (!sym || f->sym->parse(sym, SF_EVF_AT(out, f, int), NULL))
        return missing(g, f->name);
      return SF_OK;
    }
    case SF_EVF_BITMAP:
    case SF_EVF_BYTES: {
      const void *b;
      size_t n;
      if (d || avro_value_get_bytes(&v, &b, &n)) return missing(g, f->name);
      if (f->kind == SF_EVF_BITMAP)
        return sf_evdec_bitmap(&g->c, f->name, b, n,
                               SF_EVF_AT(out, f, roaring_bitmap_t *));
      *(size_t *)((char *)out + f->aux) = n;
      return sf_evdec_bytes(&g->c, f->name, b, n, SF_EVF_AT(out, f, uint8_t *));
    }
    case SF_EVF_STRINGS:
    case SF_EVF_RECORDS:
      if (d) return missing(g, f->name);
      return read_array(g, f, &v, out);
  }
  return missing(g, f->name);
}

sf_code sf_evdec_read_avro(const sf_evrec *rec, sf_evdec_conv c, avro_value_t *value,
                           const json_t *rec_json, void *out) {
  getter g = {c, value, rec_json};
  for (size_t i = 0; i < rec->nfields; i++) TRY(read_field(&g, &rec->fields[i], out));
  return SF_OK;
}
