/*
 * event.h - the events of the design as plain C structs, the stable
 * reason codes of rejections, and the field rules every event must keep.
 *
 * The structs are what both directions of the codec speak: the consumer's
 * decoder (schemas/event_decode.h) fills them from bytes, the producer's
 * encoder (schemas/event_encode.h) writes them as bytes. Strings are owned,
 * NUL-terminated, valid UTF-8; fragment sets are CRoaring bitmaps owned by
 * the struct. A struct is caller storage: `_clear` frees what it owns and
 * zeroes it (NULL-safe, idempotent), `_copy` makes a deep copy.
 *
 * Validation (`sf_*_validate`) is shared by both directions so that the
 * producer cannot emit an event the consumer would reject. It returns
 * SF_EDECODE with a reason (INVALID_FIELD or PATH_ESCAPE) and a message that
 * names the field, the bad value and the rule.
 */
#ifndef SF_EVENT_H
#define SF_EVENT_H

#include <avro.h>
#include <roaring/roaring.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/base/types.h"
#include "core/format/seginfo.h"

typedef enum sf_event_type {
  SF_EVENT_SHARD_STAGED = 0,
  SF_EVENT_SEGMENTS_COMMITTED = 1,
  SF_EVENT_SHARD_REJECTED = 2,
  SF_EVENT_SEGMENTS_COMPACTED = 3,
} sf_event_type;
#define SF_EVENT_TYPE_COUNT 4

/* The record name ("ShardStaged", ...); its Avro full name is
 * "segforge.events." + that. */
const char *sf_event_type_name(sf_event_type t);
/* Parses a record name (case-insensitive, with or without the namespace). */
sf_code sf_event_type_parse(const char *s, sf_event_type *out, sf_err *err);

/* Why an event was rejected: the stable codes of the dead-letter topic.
 * SF_REASON_NONE means the failure is not the event's fault (e.g. out of
 * memory): the caller should retry rather than dead-letter it. */
typedef enum sf_event_reason {
  SF_REASON_NONE = 0,
  SF_REASON_DECODE_ERROR,       /* bad framing, truncated, trailing bytes, bad Avro */
  SF_REASON_UNKNOWN_SCHEMA,     /* fingerprint or schema id not registered here */
  SF_REASON_INVALID_FIELD,      /* a field breaks its rule (range, format, bitmap) */
  SF_REASON_PATH_ESCAPE,        /* shard_path is absolute or climbs out with ".." */
  SF_REASON_MISSING_FILE,       /* the shard file named by the event is absent */
  SF_REASON_CORRUPT_FILE,       /* the shard file's bytes break its format */
  SF_REASON_CHECKSUM_MISMATCH,  /* the shard's quantizer is not the job's */
  SF_REASON_PARAM_MISMATCH,     /* type, metric, dim or nlist differ from the job's */
  SF_REASON_FRAGMENT_OVERLAP,   /* a fragment is in two shards of the job */
  SF_REASON_DUPLICATE_CONFLICT, /* same shard_id, other content */
  SF_REASON_JOB_TIMEOUT,        /* the job was not complete within the timeout */
  SF_REASON_JOB_FAILED,         /* another event of the job failed it */
  SF_REASON_COMMIT_CONFLICT,    /* the commit lost to an incompatible one */
  SF_REASON_COMMITTED_CONFLICT, /* contradicts a job already committed */
  SF_REASON_COUNT
} sf_event_reason;

/* "DECODE_ERROR", "UNKNOWN_SCHEMA", ...; "NONE" for SF_REASON_NONE. */
const char *sf_event_reason_name(sf_event_reason r);
/* The reason named s, or SF_REASON_NONE when s names none. */
sf_event_reason sf_event_reason_parse(const char *s);

/* Limits of the field rules. */
/* Ids name files (a staging id is a directory and a marker, a segment id a
 * file), so they are held to NAME_MAX: a longer one would pass validation
 * and then fail every open with ENAMETOOLONG. */
#define SF_EVENT_ID_MAX 255    /* bytes of an id (event, staging, shard, ...) */
#define SF_EVENT_TEXT_MAX 4096 /* bytes of a URI, path or column name */

typedef struct sf_shard_staged {
  char *event_id;
  char *dataset_uri;
  char *index_name;
  char *column;
  char *staging_id;
  char *shard_id;
  char *shard_path; /* relative to the staging root */
  int64_t shard_bytes;
  int64_t num_rows;
  roaring_bitmap_t *fragments;
  roaring_bitmap_t *expected_fragments;
  sf_index_type index_type;
  sf_metric metric;
  int32_t dim;
  int32_t num_partitions;
  uint64_t quantizer_checksum;   /* an Avro long carrying the bits of a uint64 */
  bool has_target_segment_bytes; /* false: the union's null branch */
  int64_t target_segment_bytes;
  int64_t staged_at_ms;
  char *producer; /* "host/pid" of the publisher; NULL: the union's null branch */
} sf_shard_staged;

/* A SegmentsCommitted's segments are core's sf_seginfo (core/seginfo.h):
 * the event carries segment_id, path, bytes, num_rows, fragments and
 * shard_ids (num_shards of them); the index parameters it also holds are
 * the catalog's and are not part of the event (zero when decoded). */

typedef struct sf_segments_committed {
  char *event_id; /* <staging_id>@<catalog_version> */
  char *dataset_uri;
  char *index_name;
  char *staging_id;
  int64_t catalog_version;
  sf_seginfo *segments; /* num_segments owned entries */
  size_t num_segments;
  int64_t total_rows;
  int32_t num_shards;
  int64_t first_staged_at_ms;
  int64_t committed_at_ms;
} sf_segments_committed;

/* A compaction's announcement. Its added segments are core's sf_seginfo
 * too (segment_id, path, bytes, num_rows, fragments; no shard ids: a merged
 * segment's inputs are segments, listed once in removed_segment_ids). */
typedef struct sf_segments_compacted {
  char *event_id; /* <merged segment_id>@<catalog_version> */
  char *dataset_uri;
  char *index_name;
  int64_t catalog_version;
  char **removed_segment_ids; /* num_removed owned strings */
  size_t num_removed;
  sf_seginfo *added_segments; /* num_added owned entries */
  size_t num_added;
  int64_t total_rows;
  int64_t bytes_read;
  int64_t bytes_written;
  int64_t compacted_at_ms;
} sf_segments_compacted;

typedef struct sf_shard_rejected {
  char *reason; /* a stable code, see sf_event_reason_name */
  char *message;
  char *staging_id; /* NULL: the union's null branch */
  char *shard_id;   /* NULL: the union's null branch */
  char *source_topic;
  int32_t source_partition; /* -1 when not from Kafka */
  int64_t source_offset;    /* -1 when not from Kafka */
  uint8_t *original_value;  /* original_value_len owned bytes (may be NULL if 0) */
  size_t original_value_len;
  int64_t rejected_at_ms;
  char *producer; /* the rejected event's producer, when it decoded that far */
} sf_shard_rejected;

/* Any one event, as returned by the type-agnostic decoder. */
typedef struct sf_event {
  sf_event_type type;
  union {
    sf_shard_staged staged;
    sf_segments_committed committed;
    sf_shard_rejected rejected;
    sf_segments_compacted compacted;
  } u;
} sf_event;

void sf_shard_staged_clear(sf_shard_staged *e);
void sf_segments_committed_clear(sf_segments_committed *e);
void sf_shard_rejected_clear(sf_shard_rejected *e);
void sf_segments_compacted_clear(sf_segments_compacted *e);
void sf_event_clear(sf_event *e);

/* Deep copies into *dst (which is overwritten, not cleared first); on
 * failure *dst is left cleared. The caller clears dst. */
sf_code sf_shard_staged_copy(sf_shard_staged *dst, const sf_shard_staged *src,
                             sf_err *err);

/* The roles a ShardStaged field plays when events of one job are compared
 * (the `roles` of its row in schemas/event_fields.c). Every field has one
 * at most; staging_id, the job's key, has none. */
#define SF_FIELD_JOB 1u       /* the same in every shard of a job */
#define SF_FIELD_QUANTIZER 2u /* the job's quantizer: must match, with its own reason */
#define SF_FIELD_SHARD 4u     /* the shard's content: a redelivery repeats it */
#define SF_FIELD_DELIVERY 8u  /* this announcement's own (id, time, producer) */

/* True when every field is equal (bitmaps by content). A redelivery under
 * the same event id equals the first delivery; the same shard_id with other
 * content does not. */
bool sf_shard_staged_equal(const sf_shard_staged *a, const sf_shard_staged *b);
/* Equal apart from the SF_FIELD_DELIVERY fields (event_id, staged_at_ms,
 * producer): the same shard announced again (a worker's retry makes a new
 * event id, and may come from another process). */
bool sf_shard_staged_same_shard(const sf_shard_staged *a, const sf_shard_staged *b);
/* The first field, in schema order, among those whose role is in `roles`
 * in which a and b differ, with a's and b's values written into av and bv
 * (n bytes each, truncated; fragment sets as "another set" / "this one");
 * NULL when they agree. */
const char *sf_shard_staged_diff(const sf_shard_staged *a, const sf_shard_staged *b,
                                 unsigned roles, char *av, char *bv, size_t n);
/* sf_shard_staged_diff over the job-level fields (SF_FIELD_JOB: dataset_uri,
 * index_name, column, expected_fragments, index_type, metric, dim,
 * num_partitions, target_segment_bytes). The quantizer checksum is not
 * among them: it has its own reason code. */
const char *sf_shard_staged_job_diff(const sf_shard_staged *a, const sf_shard_staged *b,
                                     char *av, char *bv, size_t n);
/* A 64-bit digest of the fields whose role is in `roles` (strings, numbers
 * and the fragment sets' members), for remembering what a job held without
 * keeping its events. Not stable across versions: never store it. */
uint64_t sf_shard_staged_digest(const sf_shard_staged *e, unsigned roles);
bool sf_segments_committed_equal(const sf_segments_committed *a,
                                 const sf_segments_committed *b);
bool sf_shard_rejected_equal(const sf_shard_rejected *a, const sf_shard_rejected *b);
bool sf_segments_compacted_equal(const sf_segments_compacted *a,
                                 const sf_segments_compacted *b);

/* The field rules (see docs/events.md). On a breach: SF_EDECODE, *reason
 * (if not NULL) set to INVALID_FIELD or PATH_ESCAPE, and err names the field. */
sf_code sf_shard_staged_validate(const sf_shard_staged *e, sf_event_reason *reason,
                                 sf_err *err);
sf_code sf_segments_committed_validate(const sf_segments_committed *e,
                                       sf_event_reason *reason, sf_err *err);
sf_code sf_shard_rejected_validate(const sf_shard_rejected *e, sf_event_reason *reason,
                                   sf_err *err);
sf_code sf_segments_compacted_validate(const sf_segments_compacted *e,
                                       sf_event_reason *reason, sf_err *err);
sf_code sf_event_validate(const sf_event *e, sf_event_reason *reason, sf_err *err);

/* Sets *reason (if not NULL) to r and err (if not NULL) to SF_EDECODE with
 * the message; returns SF_EDECODE. Every rejection of an event goes
 * through here, so reason and code always travel together. */
sf_code sf_event_reject(sf_event_reason *reason, sf_event_reason r, sf_err *err,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Whether s is valid UTF-8 (strict, as Avro strings must be). NULL: false. */
bool sf_event_text_ok(const char *s);
/* The same for n bytes at s, whose length the caller knows. */
bool sf_event_utf8_ok(const char *s, size_t n);

/* src made fit for a ShardRejected message or a log: valid UTF-8 with
 * every invalid byte and control character written as \xNN; cut (never
 * inside a character) to size - 1 bytes. Returns dst. */
char *sf_event_escape_text(char *dst, size_t size, const char *src);

/* The path rule alone (relative, no "..", no empty or "." components), for
 * callers that build paths: SF_OK, or SF_EDECODE with the reason. */
sf_code sf_event_check_relpath(const char *field, const char *path,
                               sf_event_reason *reason, sf_err *err);

/* ---- The field tables ------------------------------------------------------
 *
 * One field table per event record (rows in event_fields.c): for each field
 * its name, Avro type, place in the C struct (offsetof), rule, whether it is
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
extern const sf_evrec sf_evrec_compacted_segment;
extern const sf_evrec sf_evrec_segments_compacted;

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
