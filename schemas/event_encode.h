/*
 * event_encode.h - the encoding half of the event codec: C structs to Avro
 * binary, framed as a single-object encoding (C3 01 + fingerprint) or, when
 * a Confluent schema id is configured for the type, the Confluent wire format
 * (00 + id). It lives in schemas/ with the decoder (see event_decode.h for
 * why); the producer's publisher calls it.
 *
 * The datum is written by avro-c's generic values, which an encoder creates
 * once per event type and reuses, filled by a walk of the record's field
 * table (schemas/event.h, rows in event_fields.c), so a call allocates only the output.
 * Every event is validated first (sf_*_validate), so a producer cannot publish an event
 * the consumer would dead-letter.
 *
 * An encoder is not thread-safe; create one per thread from a shared set.
 */
#ifndef SF_EVENT_ENCODE_H
#define SF_EVENT_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "schemas/event.h"
#include "schemas/schema.h"

typedef struct sf_event_encoder sf_event_encoder;

/* Skip validation: only tools that must produce bad events (tests, the
 * CLI's --no-validate) set it. */
#define SF_ENCODE_NO_VALIDATE 1u

/* `set` must outlive the encoder. Freed with sf_event_encoder_free. */
sf_code sf_event_encoder_new(const sf_schema_set *set, sf_framing framing, unsigned flags,
                             sf_event_encoder **out, sf_err *err);
void sf_event_encoder_free(sf_event_encoder *enc);

/* Each writes a malloc'd buffer to *out (caller frees) and its size to *len.
 * Errors: SF_EDECODE with the field rule that was broken, SF_EINVAL when the
 * framing asks for a Confluent id that is not configured, SF_ENOMEM. */
sf_code sf_event_encode_shard_staged(sf_event_encoder *enc, const sf_shard_staged *e,
                                     uint8_t **out, size_t *len, sf_err *err);
sf_code sf_event_encode_segments_committed(sf_event_encoder *enc,
                                           const sf_segments_committed *e, uint8_t **out,
                                           size_t *len, sf_err *err);
sf_code sf_event_encode_shard_rejected(sf_event_encoder *enc, const sf_shard_rejected *e,
                                       uint8_t **out, size_t *len, sf_err *err);
sf_code sf_event_encode_segments_compacted(sf_event_encoder *enc,
                                           const sf_segments_compacted *e, uint8_t **out,
                                           size_t *len, sf_err *err);
sf_code sf_event_encode(sf_event_encoder *enc, const sf_event *e, uint8_t **out,
                        size_t *len, sf_err *err);

#endif
