/*
 * event_decode_internal.h - internal to the decoder (event_decode.c and
 * event_decode_avro.c): turning read Avro fields into the owned C fields of
 * schemas/event.h, shared by the bounded reader and the avro-c reader so
 * that both apply the same conversions (no NUL in strings, bitmaps through
 * the bounded CRoaring call) with the same reasons and messages.
 */
#ifndef SF_EVENT_DECODE_INTERNAL_H
#define SF_EVENT_DECODE_INTERNAL_H

#include <avro.h>
#include <jansson.h>

#include "core/base/error.h"
#include "schemas/event.h"

typedef struct {
  const char *ev; /* record name for messages */
  sf_event_reason *reason;
  sf_err *err;
} sf_evdec_conv;

/* SF_ENOMEM with reason NONE: not the event's fault. */
sf_code sf_evdec_oom(sf_event_reason *reason, sf_err *err, const char *what);

/* n bytes at s as a malloc'd C string in *out (caller frees); INVALID_FIELD
 * when they hold a NUL. */
sf_code sf_evdec_str(sf_evdec_conv *c, const char *field, const char *s, size_t n,
                     char **out);
/* Portable roaring bytes as a bitmap in *out (caller frees); INVALID_FIELD
 * when they do not deserialize exactly. */
sf_code sf_evdec_bitmap(sf_evdec_conv *c, const char *field, const void *b, size_t n,
                        roaring_bitmap_t **out);
/* n bytes at b as a malloc'd copy in *out (caller frees). */
sf_code sf_evdec_bytes(sf_evdec_conv *c, const char *field, const void *b, size_t n,
                       uint8_t **out);

/* Fills the struct `out` of table `rec`, field by field in table order,
 * from a record value read by avro-c. Fields absent from `value` (an older
 * writer lacked them) take their default from `rec_json`, the current
 * schema's JSON of the record. */
sf_code sf_evdec_read_avro(const sf_evrec *rec, sf_evdec_conv c, avro_value_t *value,
                           const json_t *rec_json, void *out);

#endif
