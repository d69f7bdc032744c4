/*
 * canonical.h - the schema algorithms avro-c 1.11 lacks, written from the
 * Avro specification ("Parsing Canonical Form for Schemas", "Schema
 * Fingerprints") over jansson trees, and checked against Python's avro in
 * tests/py_events_interop.py:
 *   - the Parsing Canonical Form ([PRIMITIVES], [FULLNAMES], [STRIP],
 *     [ORDER], [STRINGS], [INTEGERS], [WHITESPACE]);
 *   - CRC-64-AVRO, the 64-bit Rabin fingerprint of that form;
 *   - inlining of named records defined in other files, so that avro-c,
 *     which parses one self-contained schema at a time, can parse a schema
 *     that refers to SegmentInfo by name.
 */
#ifndef SF_CANONICAL_H
#define SF_CANONICAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

/* CRC-64-AVRO of len bytes (0xc15d213aa4d7a795 for none). */
uint64_t sf_canonical_crc64(const void *buf, size_t len);

/* The canonical form of a parsed schema as a malloc'd string (caller
 * frees). SF_EINVAL for a malformed schema (a named type without name,
 * fields or symbols, or defined twice). */
sf_code sf_canonical_form(json_t *schema, char **out, sf_err *err);
/* The same from JSON text. */
sf_code sf_canonical_form_text(const char *json, size_t len, char **out, sf_err *err);

/* Replaces, in document order, the first reference to each name that
 * `library` (full name -> definition) defines and the schema does not, by a
 * copy of the definition. *out is a new reference to the (possibly new)
 * root. SF_ENOMEM, or SF_EINVAL when the schema nests deeper than 64 or
 * defines more than 32 names. */
sf_code sf_canonical_inline(json_t *schema, json_t *library, json_t **out, sf_err *err);

/* Full name and namespace of a named type's definition object met inside
 * `enclosing_ns`. */
void sf_canonical_names(json_t *def, const char *enclosing_ns, char full[256],
                        char ns[256]);

#endif
