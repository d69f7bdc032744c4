/*
 * event_json.h - the JSON form of events, for people and tools (`segforge
 * events`, inspection): field names as in the schemas, enums as their
 * symbols, fragment sets as range lists ("0-63,70"), the quantizer checksum
 * as a hex string ("0x00ab..."), original_value as lower-case hex, and a
 * union with null as null or the value.
 *
 * Input is strict, because a typo in a hand-written event should be an error
 * rather than a silently missing field: every field of the type must be
 * present (optional ones may be omitted or null) and unknown fields are
 * refused. Fragment sets may also be given as arrays of fragment numbers,
 * and the checksum as a JSON integer.
 */
#ifndef SF_EVENT_JSON_H
#define SF_EVENT_JSON_H

#include <jansson.h>

#include "core/base/error.h"
#include "schemas/event.h"

/* A new JSON object (caller json_decref's it), or NULL when out of memory. */
json_t *sf_event_to_json(const sf_event *e);

/* Fills *out (caller clears with sf_event_clear; left cleared on failure)
 * from a JSON object of the given type. SF_EINVAL names the field. The
 * field rules are not checked here; the encoder does that. */
sf_code sf_event_from_json(sf_event_type type, const json_t *obj, sf_event *out,
                           sf_err *err);

#endif
