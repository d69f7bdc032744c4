/*
 * event_decode.h - the decoding half of the event codec: bytes (from Kafka,
 * a file, a pipe) to the C structs of schemas/event.h, with every rule
 * checked at the edge.
 *
 * A decoder reads the framing (single-object C3 01 + fingerprint, or
 * Confluent 00 + id), finds the writer schema in the set, reads the datum,
 * resolves it into the current version of its type (older registered
 * versions included), and validates the fields. A rejected event gives
 * SF_EDECODE, a stable reason (DECODE_ERROR, UNKNOWN_SCHEMA, INVALID_FIELD,
 * PATH_ESCAPE) for the dead-letter topic, and a message that says what to
 * fix. Nothing in the bytes is trusted: lengths and counts are checked
 * against the bytes given before anything is allocated from them.
 *
 * Why the codec, framing included, lives in schemas/ and not with the
 * consumer and producer: decoding and encoding are walks of the field
 * tables (schemas/event.h, rows in event_fields.c), and neither framing needs a broker.
 * The single-object encoding is the Avro specification's; the Confluent header is a
 * schema-registry convention that files and pipes use too (`segforge events`). What is
 * Kafka-specific (topics, keys, delivery, offsets) stays in consumer/ and producer/,
 * which call this codec.
 *
 * Two readers, one contract. Records marked `hot` in their table (the
 * consumer's ShardStaged) are read by a bounded reader straight into the
 * struct, following a plan made per writer schema when the decoder is
 * created: every writer field a row of the table with the same type, every
 * row the writer lacks optional. So events of older versions that only
 * lack optional fields (ShardStaged.v1, before `producer`) stay on it.
 * Everything else is read by avro-c (generic values and resolved writers,
 * created once per schema and reused), walking the same table. The tests
 * and the fuzz target check that both readers agree on every input.
 *
 * A decoder is not thread-safe; create one per thread from a shared set.
 */
#ifndef SF_EVENT_DECODE_H
#define SF_EVENT_DECODE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/base/error.h"
#include "schemas/event.h"
#include "schemas/schema.h"

typedef struct sf_event_decoder sf_event_decoder;

#define SF_DECODE_NO_FAST_PATH 1u /* read every event with avro-c (tests, fuzzing) */
#define SF_DECODE_NO_VALIDATE 2u  /* skip the field rules (inspection tools only) */

/* `set` must outlive the decoder and gain no schemas after this call.
 * `framing` restricts what is accepted (SF_FRAMING_AUTO: either, told by the
 * first byte). Freed with sf_event_decoder_free. */
sf_code sf_event_decoder_new(const sf_schema_set *set, sf_framing framing, unsigned flags,
                             sf_event_decoder **out, sf_err *err);
void sf_event_decoder_free(sf_event_decoder *dec);

/* Decodes one event of any type into *out (which the caller clears with
 * sf_event_clear; on failure it is left cleared). *reason (may be NULL) is
 * set on every return: SF_REASON_NONE on success and on failures that are
 * not the event's fault (SF_ENOMEM). */
sf_code sf_event_decode(sf_event_decoder *dec, const void *buf, size_t len, sf_event *out,
                        sf_event_reason *reason, sf_err *err);

/* The same for a topic that carries only ShardStaged: another event type is
 * rejected with UNKNOWN_SCHEMA. *out is cleared by the caller. */
sf_code sf_event_decode_shard_staged(sf_event_decoder *dec, const void *buf, size_t len,
                                     sf_shard_staged *out, sf_event_reason *reason,
                                     sf_err *err);

/* Reads only the framing: the writer schema and the header size. */
sf_code sf_event_decode_header(const sf_schema_set *set, sf_framing framing,
                               const void *buf, size_t len, const sf_schema **schema,
                               size_t *header_len, sf_event_reason *reason, sf_err *err);

/* The writer schema of the last event decoded (even if it was rejected
 * after its header was read), or NULL. */
const sf_schema *sf_event_decoder_last_schema(const sf_event_decoder *dec);

/* Whether the bounded reader reads the current ShardStaged (tests). */
bool sf_event_decoder_has_fast_path(const sf_event_decoder *dec);
/* Whether the bounded reader reads events written with schema s (tests). */
bool sf_event_decoder_reads_fast(const sf_event_decoder *dec, const sf_schema *s);

#endif
