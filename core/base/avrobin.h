/*
 * avrobin.h - bounded reading of Avro binary data: the primitives (zig-zag
 * varints, length-prefixed strings and bytes) and a scan of one datum
 * against a writer schema.
 *
 * Why this exists next to avro-c: avro-c trusts the lengths it reads (it
 * allocates a string's claimed length before checking that the bytes are
 * there) and cannot say where a datum ends. The scan walks the datum with
 * every length and count checked against the bytes left, every enum and
 * union index against the schema, and returns the datum's exact size, so
 * that (1) truncated and trailing bytes are told apart and (2) avro-c is
 * only handed bytes whose allocations are bounded by their own size.
 * The primitives also serve the bounded (table-driven) reader of the
 * consumer's hot path.
 */
#ifndef SF_AVROBIN_H
#define SF_AVROBIN_H

#include <avro.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

/* A cursor over caller-owned bytes. */
typedef struct sf_avrobin {
  const uint8_t *p;
  const uint8_t *end;
  const uint8_t *start; /* for offsets in messages */
} sf_avrobin;

static inline void sf_avrobin_init(sf_avrobin *r, const void *buf, size_t len) {
  r->p = r->start = (const uint8_t *)buf;
  r->end = r->p + len;
}

/* Each primitive returns 0, or -1 when the bytes end early or break the
 * encoding (a varint longer than 10 bytes, an int out of 32 bits, a negative
 * length); the cursor is then unspecified. */
int sf_avrobin_long(sf_avrobin *r, int64_t *out);
int sf_avrobin_int(sf_avrobin *r, int32_t *out);
/* A string or bytes: *data points into the buffer, *len <= bytes left. */
int sf_avrobin_blob(sf_avrobin *r, const uint8_t **data, size_t *len);

/* Scans one datum of `schema` at the start of buf. On success *used is its
 * size in bytes (trailing bytes are the caller's to judge). On failure
 * SF_EDECODE with a message naming the field and offset. */
sf_code sf_avrobin_scan(avro_schema_t schema, const void *buf, size_t len, size_t *used,
                        sf_err *err);

#endif
