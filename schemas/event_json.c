/* event_json.c - see event_json.h. */
#include "event_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fragset.h"
#include "schemas/event.h"

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

static json_t *record_json(const sf_evrec *rec, const void *e);

static json_t *field_json(const sf_evfield *f, const void *e) {
  if (!sf_evf_present(e, f)) return json_null();
  switch (f->kind) {
    case SF_EVF_STRING:
      return str_or_null(*SF_EVF_CAT(e, f, char *));
    case SF_EVF_LONG:
      if (f->flags & SF_EVF_HEX) {
        char sum[24];
        snprintf(sum, sizeof sum, "0x%016" PRIx64, *SF_EVF_CAT(e, f, uint64_t));
        return json_string(sum);
      }
      return json_integer(*SF_EVF_CAT(e, f, int64_t));
    case SF_EVF_INT:
      return json_integer(*SF_EVF_CAT(e, f, int32_t));
    case SF_EVF_ENUM:
      return json_string(f->sym->name(*SF_EVF_CAT(e, f, int)));
    case SF_EVF_BITMAP:
      return bitmap_json(*SF_EVF_CAT(e, f, roaring_bitmap_t *));
    case SF_EVF_BYTES:
      return hex_json(*SF_EVF_CAT(e, f, uint8_t *),
                      *(const size_t *)((const char *)e + f->aux));
    case SF_EVF_STRINGS:
    case SF_EVF_RECORDS: {
      json_t *a = json_array();
      for (size_t i = 0; a && i < sf_evf_count(e, f); i++) {
        json_t *item =
            f->kind == SF_EVF_STRINGS
                ? str_or_null((*SF_EVF_CAT(e, f, char **))[i])
                : record_json(f->items, *SF_EVF_CAT(e, f, char *) + i * f->items->size);
        if (json_array_append_new(a, item)) {
          json_decref(a);
          return NULL;
        }
      }
      return a;
    }
  }
  return NULL;
}

/* The fields in table (schema) order. */
static json_t *record_json(const sf_evrec *rec, const void *e) {
  json_t *o = json_object();
  for (size_t i = 0; o && i < rec->nfields; i++)
    if (add(o, rec->fields[i].name, field_json(&rec->fields[i], e))) {
      json_decref(o);
      return NULL;
    }
  return o;
}

json_t *sf_event_to_json(const sf_event *e) {
  const sf_evrec *rec = sf_evrec_of(e->type);
  return rec ? record_json(rec, sf_event_body_const(e)) : NULL;
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

static char *str_of(reader *r, const char *k, const json_t *v, bool nullable) {
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

static char *rd_str(reader *r, const char *k, bool nullable) {
  const json_t *v = need(r, k, nullable);
  if (!v || (nullable && json_is_null(v))) return NULL;
  return str_of(r, k, v, nullable);
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

/* Refuses keys that are not fields of rec. */
static void no_unknown(reader *r, const sf_evrec *rec) {
  const char *key;
  json_t *val;
  json_object_foreach((json_t *)r->obj, key, val) {
    (void)val;
    size_t i = 0;
    while (i < rec->nfields && strcmp(rec->fields[i].name, key)) i++;
    if (i == rec->nfields && !r->rc)
      r->rc = sf_err_set(r->err, SF_EINVAL, "%s: unknown field '%s'", r->ev, key);
  }
}

static void record_from(reader *r, const sf_evrec *rec, void *e);

static void array_from(reader *r, const sf_evfield *f, void *e) {
  bool strings = f->kind == SF_EVF_STRINGS;
  const char *what = strings ? "an array of strings" : "an array of objects";
  const json_t *a = need(r, f->name, false);
  if (a && !json_is_array(a)) wrong(r, f->name, what);
  size_t n = a && !r->rc ? json_array_size(a) : 0,
         sz = strings ? sizeof(char *) : f->items->size;
  char *v = n ? calloc(n, sz) : NULL;
  if (n && !v) oom(r);
  *SF_EVF_AT(e, f, char *) = v;
  char item[96];
  snprintf(item, sizeof item, "%s[]", f->name);
  for (size_t i = 0; i < n && !r->rc; i++) {
    const json_t *x = json_array_get(a, i);
    sf_evf_set_count(e, f, i + 1);
    if (strings) {
      ((char **)v)[i] = str_of(r, item, x, false);
    } else if (!json_is_object(x)) {
      wrong(r, f->name, what);
    } else {
      reader one = {x, f->items->name, r->err, 0};
      record_from(&one, f->items, v + i * sz);
      r->rc = one.rc;
    }
  }
}

static void field_from(reader *r, const sf_evfield *f, void *e) {
  bool opt = f->flags & SF_EVF_OPTIONAL;
  if (opt && f->kind != SF_EVF_STRING) {
    const json_t *v = need(r, f->name, true);
    bool present = v && !json_is_null(v);
    *(bool *)((char *)e + f->aux) = present;
    if (!present) return;
  }
  switch (f->kind) {
    case SF_EVF_STRING:
      *SF_EVF_AT(e, f, char *) = rd_str(r, f->name, opt);
      return;
    case SF_EVF_LONG:
      if (f->flags & SF_EVF_HEX)
        *SF_EVF_AT(e, f, uint64_t) = rd_checksum(r, f->name);
      else
        *SF_EVF_AT(e, f, int64_t) = rd_long(r, f->name, INT64_MIN, INT64_MAX);
      return;
    case SF_EVF_INT:
      *SF_EVF_AT(e, f, int32_t) = (int32_t)rd_long(r, f->name, INT32_MIN, INT32_MAX);
      return;
    case SF_EVF_ENUM: {
      const json_t *v = need(r, f->name, false);
      if (v && !r->rc)
        r->rc = f->sym->parse(json_string_value(v), SF_EVF_AT(e, f, int), r->err);
      return;
    }
    case SF_EVF_BITMAP:
      *SF_EVF_AT(e, f, roaring_bitmap_t *) = rd_bitmap(r, f->name);
      return;
    case SF_EVF_BYTES:
      *SF_EVF_AT(e, f, uint8_t *) = rd_hex(r, f->name, (size_t *)((char *)e + f->aux));
      return;
    case SF_EVF_STRINGS:
    case SF_EVF_RECORDS:
      array_from(r, f, e);
      return;
  }
}

static void record_from(reader *r, const sf_evrec *rec, void *e) {
  for (size_t i = 0; i < rec->nfields; i++) field_from(r, &rec->fields[i], e);
  no_unknown(r, rec);
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
  record_from(&r, sf_evrec_of(type), sf_event_body(out));
  if (r.rc) sf_event_clear(out);
  return r.rc;
}
