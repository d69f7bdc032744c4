/*
 * event_fields.h - internal to the decoder (event_decode.c): turning read
 * Avro fields into the owned C fields of schemas/event.h, shared by the
 * hand-written ShardStaged reader and the avro-c reader so that both apply
 * the same conversions (no NUL in strings, bitmaps through the bounded
 * CRoaring call) with the same reasons and messages.
 */
#ifndef SF_EVENT_FIELDS_H
#define SF_EVENT_FIELDS_H

#include <avro.h>
#include <jansson.h>

#include "core/base/error.h"
#include "schemas/event.h"

typedef struct {
  const char *ev; /* record name for messages */
  sf_event_reason *reason;
  sf_err *err;
} sf_evfield_conv;

/* SF_ENOMEM with reason NONE: not the event's fault. */
sf_code sf_evfield_oom(sf_event_reason *reason, sf_err *err, const char *what);

/* n bytes at s as a malloc'd C string in *out (caller frees); INVALID_FIELD
 * when they hold a NUL. */
sf_code sf_evfield_str(sf_evfield_conv *c, const char *field, const char *s, size_t n,
                       char **out);
/* Portable roaring bytes as a bitmap in *out (caller frees); INVALID_FIELD
 * when they do not deserialize exactly. */
sf_code sf_evfield_bitmap(sf_evfield_conv *c, const char *field, const void *b, size_t n,
                          roaring_bitmap_t **out);

/* Fills out->u.<type> from a record value read by avro-c. Fields absent
 * from `rec` (an older writer lacked them) take their default from
 * `rec_json`, the current schema's JSON of the record. */
sf_code sf_evfield_read(sf_event_type type, sf_evfield_conv c, avro_value_t *rec,
                        const json_t *rec_json, sf_event *out);

#endif
