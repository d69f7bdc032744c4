/* avrobin.c - see avrobin.h. */
#include "core/base/avrobin.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int sf_avrobin_long(sf_avrobin *r, int64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (r->p == r->end) return -1;
    uint8_t b = *r->p++;
    /* The 10th byte may carry only the top bit of the 64. */
    if (shift == 63 && b > 1) return -1;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
      return 0;
    }
  }
  return -1;
}

int sf_avrobin_int(sf_avrobin *r, int32_t *out) {
  const uint8_t *start = r->p;
  int64_t v;
  if (sf_avrobin_long(r, &v) || r->p - start > 5 || v < INT32_MIN || v > INT32_MAX)
    return -1;
  *out = (int32_t)v;
  return 0;
}

int sf_avrobin_blob(sf_avrobin *r, const uint8_t **data, size_t *len) {
  int64_t n;
  if (sf_avrobin_long(r, &n) || n < 0 || (uint64_t)n > (uint64_t)(r->end - r->p))
    return -1;
  *data = r->p;
  *len = (size_t)n;
  r->p += n;
  return 0;
}

/* ---- the scan -------------------------------------------------------------- */

typedef struct {
  sf_avrobin r;
  const char *field; /* innermost record field, for messages */
  sf_err *err;
} scan_ctx;

static sf_code fail(scan_ctx *c, const char *what) {
  size_t off = (size_t)(c->r.p - c->r.start), len = (size_t)(c->r.end - c->r.start);
  if (off > len) off = len;
  return sf_err_set(c->err, SF_EDECODE, "%s in field '%s' at datum byte %zu of %zu", what,
                    c->field ? c->field : "(top)", off, len);
}

static sf_code scan(scan_ctx *c, avro_schema_t s, int depth) {
  if (depth > 64) return fail(c, "schema nests deeper than 64 levels");
  int64_t l;
  int32_t i;
  const uint8_t *d;
  size_t n;
  switch (avro_typeof(s)) {
    case AVRO_NULL:
      return SF_OK;
    case AVRO_BOOLEAN:
      if (c->r.p == c->r.end) return fail(c, "datum ends inside a boolean");
      if (*c->r.p > 1) return fail(c, "boolean byte is neither 0 nor 1");
      c->r.p++;
      return SF_OK;
    case AVRO_INT32:
      return sf_avrobin_int(&c->r, &i) ? fail(c, "truncated or malformed int") : SF_OK;
    case AVRO_INT64:
      return sf_avrobin_long(&c->r, &l) ? fail(c, "truncated or malformed long") : SF_OK;
    case AVRO_FLOAT:
    case AVRO_DOUBLE: {
      size_t w = avro_typeof(s) == AVRO_FLOAT ? 4 : 8;
      if ((size_t)(c->r.end - c->r.p) < w) return fail(c, "datum ends inside a float");
      c->r.p += w;
      return SF_OK;
    }
    case AVRO_STRING:
    case AVRO_BYTES:
      return sf_avrobin_blob(&c->r, &d, &n)
                 ? fail(c, "string or bytes length is negative or runs past the end")
                 : SF_OK;
    case AVRO_FIXED: {
      int64_t w = avro_schema_fixed_size(s);
      if (w < 0 || w > c->r.end - c->r.p) return fail(c, "datum ends inside a fixed");
      c->r.p += w;
      return SF_OK;
    }
    case AVRO_ENUM:
      if (sf_avrobin_int(&c->r, &i)) return fail(c, "truncated or malformed enum index");
      if (i < 0 || i >= avro_schema_enum_number_of_symbols(s))
        return fail(c, "enum index is not a symbol of the schema");
      return SF_OK;
    case AVRO_UNION:
      if (sf_avrobin_long(&c->r, &l))
        return fail(c, "truncated or malformed union index");
      if (l < 0 || (uint64_t)l >= avro_schema_union_size(s))
        return fail(c, "union index is not a branch of the schema");
      return scan(c, avro_schema_union_branch(s, (int)l), depth + 1);
    case AVRO_RECORD: {
      const char *outer = c->field;
      size_t nf = avro_schema_record_size(s);
      for (size_t k = 0; k < nf; k++) {
        c->field = avro_schema_record_field_name(s, (int)k);
        sf_code rc = scan(c, avro_schema_record_field_get_by_index(s, (int)k), depth + 1);
        if (rc != SF_OK) return rc;
      }
      c->field = outer;
      return SF_OK;
    }
    case AVRO_ARRAY:
    case AVRO_MAP: {
      bool map = avro_typeof(s) == AVRO_MAP;
      avro_schema_t item = map ? avro_schema_map_values(s) : avro_schema_array_items(s);
      /* Every item of our schemas takes at least one byte, and any item count
       * beyond the datum's size is nonsense whatever the item type: this
       * bounds the loop even for arrays of null. */
      uint64_t total = 0, cap = (uint64_t)(c->r.end - c->r.start);
      for (;;) {
        if (sf_avrobin_long(&c->r, &l))
          return fail(c, "truncated or malformed block count");
        if (l == 0) return SF_OK;
        if (l < 0) { /* a negative count is followed by the block's byte size */
          int64_t bytes;
          if (l == INT64_MIN) return fail(c, "block count out of range");
          l = -l;
          if (sf_avrobin_long(&c->r, &bytes) || bytes < 0 || bytes > c->r.end - c->r.p)
            return fail(c, "block byte size is negative or runs past the end");
        }
        total += (uint64_t)l;
        if (total > cap) return fail(c, "item count exceeds what the bytes can hold");
        for (int64_t k = 0; k < l; k++) {
          if (map && sf_avrobin_blob(&c->r, &d, &n)) return fail(c, "truncated map key");
          sf_code rc = scan(c, item, depth + 1);
          if (rc != SF_OK) return rc;
        }
      }
    }
    case AVRO_LINK:
      return scan(c, avro_schema_link_target(s), depth + 1);
    default:
      return fail(c, "unsupported schema type");
  }
}

sf_code sf_avrobin_scan(avro_schema_t schema, const void *buf, size_t len, size_t *used,
                        sf_err *err) {
  scan_ctx c = {.err = err};
  sf_avrobin_init(&c.r, buf, len);
  sf_code rc = scan(&c, schema, 0);
  if (rc == SF_OK) *used = (size_t)(c.r.p - c.r.start);
  return rc;
}
