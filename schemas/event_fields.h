/*
 * event_fields.h - one field table per event record: for each field its
 * name, Avro type, place in the C struct (offsetof), rule, whether it is
 * optional, and its role when events of one job are compared.
 *
 * The tables drive everything that used to map fields by hand: clear, copy,
 * equality, validation and the job comparison (event.c), Avro encoding
 * (event_encode.c), both decoders (event_decode.c, event_decode_avro.c) and
 * the JSON form (event_json.c). Adding a field to an event is therefore:
 * the field in schemas/<Record>.avsc, the member in the struct of
 * schemas/event.h, one row in event_fields.c, and a test. A test checks
 * that every table matches its current .avsc field by field, in order, so
 * a field added to one and not the other fails the build's tests.
 *
 * Optional fields are Avro unions ["null", T] with default null, and
 * nothing else: that is what lets old readers and writers interoperate
 * (docs/events.md, "Evolving a schema"). Their absence is NULL for strings
 * and a false `has` flag (at `aux`) for numbers.
 */
#ifndef SF_EVENT_FIELDS_H
#define SF_EVENT_FIELDS_H

#include <avro.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "schemas/event.h"

/* How a field is stored, and its Avro type. */
typedef enum sf_evf_kind {
  SF_EVF_STRING,  /* char *: Avro string */
  SF_EVF_LONG,    /* int64_t or uint64_t (its bits): Avro long */
  SF_EVF_INT,     /* int32_t: Avro int */
  SF_EVF_ENUM,    /* a C enum from 0: Avro enum, symbols from `sym` */
  SF_EVF_BITMAP,  /* roaring_bitmap_t *: Avro bytes, portable serialization */
  SF_EVF_BYTES,   /* uint8_t *, size_t length at `aux`: Avro bytes */
  SF_EVF_STRINGS, /* char **, count at `aux`: Avro array of string */
  SF_EVF_RECORDS, /* an array of `items->size` structs, count at `aux`: array of record */
} sf_evf_kind;

/* The rule validation holds a field to (see docs/events.md for each). */
typedef enum sf_evf_rule {
  SF_EVR_NONE,
  SF_EVR_ID,    /* printable ASCII without spaces, 1..SF_EVENT_ID_MAX bytes */
  SF_EVR_NAME,  /* an id that names a file: no '/', not "." or ".." */
  SF_EVR_TEXT,  /* UTF-8 without control characters, 1..`hi` bytes */
  SF_EVR_PATH,  /* TEXT, relative, and staying inside its root */
  SF_EVR_RANGE, /* lo <= value <= hi */
  SF_EVR_FRAGS, /* a non-empty fragment set */
  SF_EVR_KNOWN, /* an enum value with a symbol */
  SF_EVR_UTF8,  /* valid UTF-8 only: text copied from an event that may be bad */
  SF_EVR_CODE,  /* a reason code: upper-case letters and '_', 1..64 bytes */
} sf_evf_rule;

/* Flags of a row. */
#define SF_EVF_OPTIONAL 1u /* ["null", T] with default null */
#define SF_EVF_HEX 2u      /* JSON: a long as "0x%016llx" (the bits of a uint64) */

/* The symbols of an enum, in Avro order (value i is symbol i). */
typedef struct sf_evf_enum {
  int count;
  const char *(*name)(int v);
  sf_code (*parse)(const char *s, int *v, sf_err *err); /* for JSON input */
} sf_evf_enum;

typedef struct sf_evrec sf_evrec;

/* One field. */
typedef struct sf_evfield {
  const char *name; /* as in the .avsc and the JSON form */
  sf_evf_kind kind;
  unsigned flags;  /* SF_EVF_* */
  unsigned roles;  /* SF_FIELD_* of event.h (ShardStaged only) */
  size_t off;      /* offsetof the value */
  size_t aux;      /* offsetof: the `has` bool (optional numbers), length, count */
  size_t aux_size; /* sizeof the count of an array (4 or 8) */
  sf_evf_rule rule;
  int64_t lo, hi;           /* RANGE bounds; TEXT, PATH: hi is the max length */
  const char *why_nonempty; /* arrays: must have an item, and why (for the message) */
  const sf_evrec *items;    /* RECORDS: the items' table */
  const sf_evf_enum *sym;   /* ENUM */
  /* An extra rule checked after the field's own (e.g. one between fields),
   * with `ev` the record's name for messages. */
  sf_code (*check)(const void *rec, const char *ev, sf_event_reason *reason, sf_err *err);
} sf_evfield;

/* One record. */
struct sf_evrec {
  const char *name; /* "ShardStaged", ...; nested: "SegmentInfo" */
  size_t size;      /* sizeof its struct */
  const sf_evfield *fields;
  size_t nfields;
  /* Read by the bounded reader straight into the struct, without avro-c:
   * the consumer's hot path (ShardStaged). */
  bool hot;
};

#define SF_EVREC_MAX_FIELDS 32

extern const sf_evrec sf_evrec_shard_staged;
extern const sf_evrec sf_evrec_segment_info;
extern const sf_evrec sf_evrec_segments_committed;
extern const sf_evrec sf_evrec_shard_rejected;

/* The table of an event type (NULL for an unknown one). */
const sf_evrec *sf_evrec_of(sf_event_type t);
/* The struct of e's type inside e. */
void *sf_event_body(sf_event *e);
const void *sf_event_body_const(const sf_event *e);

/* Typed access to a field of the struct at e. */
#define SF_EVF_AT(e, f, T) ((T *)((char *)(e) + (f)->off))
#define SF_EVF_CAT(e, f, T) ((const T *)((const char *)(e) + (f)->off))
/* The count of an array field, and its setter. */
size_t sf_evf_count(const void *e, const sf_evfield *f);
void sf_evf_set_count(void *e, const sf_evfield *f, size_t n);
/* Whether an optional field holds a value (non-optional: true). */
bool sf_evf_present(const void *e, const sf_evfield *f);

/* The walks. Each is what its name says over every row of rec. */
void sf_evrec_clear(const sf_evrec *rec, void *e);
sf_code sf_evrec_copy(const sf_evrec *rec, void *dst, const void *src, sf_err *err);
/* Rows with a role in skip_roles are not compared. */
bool sf_evrec_equal(const sf_evrec *rec, const void *a, const void *b,
                    unsigned skip_roles);
const char *sf_evrec_diff(const sf_evrec *rec, const void *a, const void *b,
                          unsigned roles, char *av, char *bv, size_t n);
uint64_t sf_evrec_digest(const sf_evrec *rec, const void *e, unsigned roles);
/* `ev` names the record in messages ("ShardStaged", "SegmentsCommitted.segments[2]"). */
sf_code sf_evrec_validate(const sf_evrec *rec, const void *e, const char *ev,
                          sf_event_reason *reason, sf_err *err);

/* Whether the Avro record schema s has exactly rec's fields, in order,
 * with their types (enum symbols and nested records included). When not,
 * why (may be NULL) says where they part. */
bool sf_evrec_matches(const sf_evrec *rec, avro_schema_t s, char *why, size_t n);
/* The Avro type of one field's value (the union's branch for an optional
 * one) agrees with its row. */
bool sf_evf_matches(const sf_evfield *f, avro_schema_t value_schema);

#endif
