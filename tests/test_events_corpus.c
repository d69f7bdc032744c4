/*
 * test_events_corpus.c - the corpus of bad events: each kind of broken
 * ShardStaged (and a few of the other types) with the reason the consumer
 * must dead-letter it with and a word its message must contain.
 *
 * The bytes are generated here by a small Avro writer of the test's own
 * (zig-zag varints and length-prefixed blobs, from the specification), not
 * by the code under test, so a field can be given any bytes at all. It
 * writes ShardStaged's first published version (ShardStaged.v1.avsc, the 18
 * fields before `producer`), which the bounded reader reads through its
 * plan for that writer schema. Every case runs through both readers (the
 * bounded one and avro-c's), which must agree.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fragset.h"
#include "schemas/event_decode.h"
#include "schemas/event_encode.h"
#include "schemas/schema.h"

enum {
  F_EVENT_ID,
  F_DATASET_URI,
  F_INDEX_NAME,
  F_COLUMN,
  F_STAGING_ID,
  F_SHARD_ID,
  F_SHARD_PATH,
  F_SHARD_BYTES,
  F_NUM_ROWS,
  F_FRAGMENTS,
  F_EXPECTED,
  F_INDEX_TYPE,
  F_METRIC,
  F_DIM,
  F_NUM_PARTITIONS,
  F_CHECKSUM,
  F_TARGET,
  F_STAGED_AT,
  F_COUNT
};

typedef enum { KEEP, STR, LONG, RAW, RANGES } change;

typedef struct {
  const char *what; /* the behaviour, as a sentence */
  sf_event_reason reason;
  const char *needle; /* a word the message must contain */
  int field;
  change kind;
  const char *s;      /* STR: the blob; RAW: the field's bytes; RANGES: a range list */
  size_t n;           /* length of s for STR/RAW (0: strlen) */
  int64_t v;          /* LONG */
  const char *header; /* replaces the framing header when set */
  size_t header_n;
  size_t cut;       /* bytes cut off the end */
  size_t keep;      /* when set, the message is cut to this many bytes */
  int empty;        /* the message has no bytes at all */
  const char *tail; /* bytes appended */
} bad_case;

/* ---- a tiny independent Avro writer ------------------------------------------ */

typedef struct {
  uint8_t b[1 << 16];
  size_t n;
} obuf;

static void put(obuf *o, const void *p, size_t n) {
  assert_true(o->n + n <= sizeof o->b);
  memcpy(o->b + o->n, p, n);
  o->n += n;
}

static void put_long(obuf *o, int64_t v) {
  uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
  do {
    uint8_t c = z & 0x7f;
    z >>= 7;
    if (z) c |= 0x80;
    put(o, &c, 1);
  } while (z);
}

static void put_blob(obuf *o, const void *p, size_t n) {
  put_long(o, (int64_t)n);
  put(o, p, n);
}

static void put_bitmap(obuf *o, const char *ranges) {
  roaring_bitmap_t *b;
  uint8_t *bytes;
  size_t n;
  assert_int_equal(sf_fragset_parse(ranges, "test", &b, NULL), SF_OK);
  assert_int_equal(sf_fragset_encode(b, &bytes, &n, NULL), SF_OK);
  put_blob(o, bytes, n);
  free(bytes);
  sf_fragset_free(b);
}

/* Writes the good event with one field changed as the case says. */
static void build(const sf_schema_set *set, const bad_case *c, obuf *o) {
  static const char *const strs[7] = {"ev-1",        "file:///data/ds", "embedding_idx",
                                      "embedding",   "job-7",           "shard-3",
                                      "shards/3.sfs"};
  const int64_t longs[F_COUNT] = {[F_SHARD_BYTES] = 4096, [F_NUM_ROWS] = 100,
                                  [F_INDEX_TYPE] = 2,     [F_METRIC] = 1,
                                  [F_DIM] = 128,          [F_NUM_PARTITIONS] = 256,
                                  [F_CHECKSUM] = -12345,  [F_STAGED_AT] = 1700000000000};
  o->n = 0;
  if (c->header) {
    put(o, c->header, c->header_n);
  } else {
    uint64_t fp = 0; /* the datum is ShardStaged's first published version */
    for (size_t i = 0; i < sf_schema_set_count(set); i++)
      if (!strcmp(sf_schema_set_at(set, i)->origin, "ShardStaged.v1.avsc"))
        fp = sf_schema_set_at(set, i)->fingerprint;
    uint8_t h[10] = {0xC3, 0x01};
    for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(fp >> (8 * i));
    put(o, h, sizeof h);
  }
  for (int f = 0; f < F_COUNT; f++) {
    if (c->field == f && c->kind == RAW) {
      put(o, c->s, c->n ? c->n : strlen(c->s));
      continue;
    }
    if (c->field == f && c->kind == STR && !c->s) { /* n bytes of 'x' */
      static char xs[SF_EVENT_ID_MAX * 2];
      memset(xs, 'x', sizeof xs);
      assert_true(c->n <= sizeof xs);
      put_blob(o, xs, c->n);
      continue;
    }
    if (c->field == f && c->kind == STR) {
      put_blob(o, c->s, c->n ? c->n : strlen(c->s));
      continue;
    }
    if (c->field == f && c->kind == RANGES) {
      put_bitmap(o, c->s);
      continue;
    }
    int64_t v = c->field == f && c->kind == LONG ? c->v : longs[f];
    if (f < 7)
      put_blob(o, strs[f], strlen(strs[f]));
    else if (f == F_FRAGMENTS)
      put_bitmap(o, "0-15");
    else if (f == F_EXPECTED)
      put_bitmap(o, "0-127");
    else if (f == F_TARGET && c->field == f && c->kind == LONG)
      put_long(o, 1), put_long(o, v);
    else if (f == F_TARGET)
      put_long(o, 0); /* null */
    else
      put_long(o, v);
  }
  assert_true(c->cut <= o->n);
  o->n -= c->cut;
  if (c->keep) o->n = c->keep;
  if (c->empty) o->n = 0;
  if (c->tail) put(o, c->tail, strlen(c->tail));
}

#define S(x) .s = x, .n = sizeof(x) - 1
#define H(x) .header = x, .header_n = sizeof(x) - 1

static const bad_case cases[] = {
    {"an empty message is a decode error", SF_REASON_DECODE_ERROR, "empty", -1, KEEP,
     .empty = 1},
    {"JSON sent by mistake is a decode error", SF_REASON_DECODE_ERROR, "neither", -1,
     KEEP, H("{\"event_id\"")},
    {"a single-object header cut short is a decode error", SF_REASON_DECODE_ERROR,
     "header", -1, KEEP, H("\xC3\x01\x12\x34"), .keep = 4},
    {"an unknown fingerprint is an unknown schema", SF_REASON_UNKNOWN_SCHEMA,
     "fingerprint", -1, KEEP, H("\xC3\x01\x01\x02\x03\x04\x05\x06\x07\x08")},
    {"an unconfigured Confluent id is an unknown schema", SF_REASON_UNKNOWN_SCHEMA,
     "schema id 42", -1, KEEP, H("\x00\x00\x00\x00\x2a")},
    {"a Confluent header cut short is a decode error", SF_REASON_DECODE_ERROR,
     "Confluent", -1, KEEP, H("\x00\x00\x01"), .keep = 3},
    {"a datum cut inside a string is a decode error", SF_REASON_DECODE_ERROR,
     "dataset_uri", -1, KEEP, .keep = 20},
    {"a datum cut in its last field is a decode error", SF_REASON_DECODE_ERROR,
     "staged_at_ms", -1, KEEP, .cut = 1},
    {"a byte after the datum is a decode error", SF_REASON_DECODE_ERROR, "trailing", -1,
     KEEP, .tail = "x"},
    {"a negative string length is a decode error", SF_REASON_DECODE_ERROR, "event_id",
     F_EVENT_ID, RAW, S("\x03")},
    {"a string longer than the message is a decode error", SF_REASON_DECODE_ERROR,
     "dataset_uri", F_DATASET_URI, RAW, S("\x80\x80\x80\x80\x80\x80\x01")},
    {"a varint longer than ten bytes is a decode error", SF_REASON_DECODE_ERROR,
     "shard_bytes", F_SHARD_BYTES, RAW,
     S("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")},
    {"an int beyond 32 bits is a decode error", SF_REASON_DECODE_ERROR, "dim", F_DIM,
     LONG, .v = 1LL << 33},
    {"an enum index past the symbols is a decode error", SF_REASON_DECODE_ERROR,
     "index_type", F_INDEX_TYPE, LONG, .v = 3},
    {"a negative enum index is a decode error", SF_REASON_DECODE_ERROR, "metric",
     F_METRIC, LONG, .v = -1},
    {"a union branch that does not exist is a decode error", SF_REASON_DECODE_ERROR,
     "target_segment_bytes", F_TARGET, RAW, S("\x04")},
    {"an empty event id is an invalid field", SF_REASON_INVALID_FIELD, "event_id",
     F_EVENT_ID, STR, S("")},
    {"an empty staging id is an invalid field", SF_REASON_INVALID_FIELD, "staging_id",
     F_STAGING_ID, STR, S("")},
    {"a staging id with a slash is an invalid field", SF_REASON_INVALID_FIELD,
     "staging_id", F_STAGING_ID, STR, S("a/b")},
    {"a shard id with a NUL byte is an invalid field", SF_REASON_INVALID_FIELD,
     "shard_id", F_SHARD_ID, STR, S("sh\0rd")},
    {"a shard id of 257 bytes is an invalid field", SF_REASON_INVALID_FIELD, "shard_id",
     F_SHARD_ID, STR, .n = 257 /* bytes of 'x' */},
    {"a staging id of 256 bytes (longer than a file name) is an invalid field",
     SF_REASON_INVALID_FIELD, "staging_id", F_STAGING_ID, STR, .n = 256},
    {"a shard id with a space is an invalid field", SF_REASON_INVALID_FIELD, "shard_id",
     F_SHARD_ID, STR, S("shard 3")},
    {"an index name of '..' is an invalid field", SF_REASON_INVALID_FIELD, "index_name",
     F_INDEX_NAME, STR, S("..")},
    {"a dataset URI that is not UTF-8 is an invalid field", SF_REASON_INVALID_FIELD,
     "UTF-8", F_DATASET_URI, STR, S("file:///d\xff")},
    {"a negative shard size is an invalid field", SF_REASON_INVALID_FIELD, "shard_bytes",
     F_SHARD_BYTES, LONG, .v = -1},
    {"a negative row count is an invalid field", SF_REASON_INVALID_FIELD, "num_rows",
     F_NUM_ROWS, LONG, .v = -5},
    {"a dimension of 0 is an invalid field", SF_REASON_INVALID_FIELD, "dim", F_DIM, LONG,
     .v = 0},
    {"a dimension above 65536 is an invalid field", SF_REASON_INVALID_FIELD, "dim", F_DIM,
     LONG, .v = 65537},
    {"zero partitions is an invalid field", SF_REASON_INVALID_FIELD, "num_partitions",
     F_NUM_PARTITIONS, LONG, .v = 0},
    {"more partitions than SF_MAX_NLIST is an invalid field", SF_REASON_INVALID_FIELD,
     "num_partitions", F_NUM_PARTITIONS, LONG, .v = (1 << 20) + 1},
    {"a zero segment budget is an invalid field", SF_REASON_INVALID_FIELD,
     "target_segment_bytes", F_TARGET, LONG, .v = 0},
    {"a negative staging time is an invalid field", SF_REASON_INVALID_FIELD,
     "staged_at_ms", F_STAGED_AT, LONG, .v = -1},
    {"fragment bytes that are not a roaring bitmap are an invalid field",
     SF_REASON_INVALID_FIELD, "fragments", F_FRAGMENTS, STR, S("not a bitmap")},
    {"a roaring bitmap with a trailing byte is an invalid field", SF_REASON_INVALID_FIELD,
     "fragments", F_FRAGMENTS, STR,
     S("\x3a\x30\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x05\x00!")},
    {"a bitmap header claiming a million containers is an invalid field",
     SF_REASON_INVALID_FIELD, "expected_fragments", F_EXPECTED, STR,
     S("\x3a\x30\x00\x00\x40\x42\x0f\x00")},
    {"an array container of unsorted fragments (5, 1, 3) is an invalid field",
     SF_REASON_INVALID_FIELD, "not strictly increasing", F_FRAGMENTS, STR,
     S("\x3a\x30\x00\x00\x01\x00\x00\x00\x00\x00\x02\x00\x10\x00\x00\x00\x05\x00"
       "\x01\x00\x03\x00")},
    {"a run container whose runs overlap is an invalid field", SF_REASON_INVALID_FIELD,
     "overlap", F_EXPECTED, STR,
     S("\x3b\x30\x00\x00\x01\x00\x00\x0b\x00\x02\x00\x00\x00\x07\x00\x04\x00\x03\x00")},
    {"empty fragment bytes are an invalid field", SF_REASON_INVALID_FIELD, "fragments",
     F_FRAGMENTS, STR, S("")},
    {"an empty fragment set is an invalid field", SF_REASON_INVALID_FIELD, "empty",
     F_FRAGMENTS, STR, S("\x3a\x30\x00\x00\x00\x00\x00\x00")},
    {"fragments outside the expected ones are an invalid field", SF_REASON_INVALID_FIELD,
     "expected_fragments", F_FRAGMENTS, RANGES, .s = "100-200"},
    {"an absolute shard path escapes", SF_REASON_PATH_ESCAPE, "absolute", F_SHARD_PATH,
     STR, S("/etc/passwd")},
    {"a shard path climbing with '..' escapes", SF_REASON_PATH_ESCAPE, "..", F_SHARD_PATH,
     STR, S("a/../../x.sfs")},
    {"a shard path of '..' alone escapes", SF_REASON_PATH_ESCAPE, "..", F_SHARD_PATH, STR,
     S("..")},
    {"a shard path with an empty component is an invalid field", SF_REASON_INVALID_FIELD,
     "empty component", F_SHARD_PATH, STR, S("a//b.sfs")},
    {"a shard path ending in '/' is an invalid field", SF_REASON_INVALID_FIELD,
     "empty component", F_SHARD_PATH, STR, S("shards/")},
    {"an empty shard path is an invalid field", SF_REASON_INVALID_FIELD, "shard_path",
     F_SHARD_PATH, STR, S("")},
};

static void the_corpus_has_at_least_twenty_kinds(void **state) {
  (void)state;
  assert_true(sizeof cases / sizeof cases[0] >= 20);
}

static void every_bad_event_gives_its_reason_in_both_readers(void **state) {
  (void)state;
  sf_schema_set *set;
  sf_event_decoder *fast, *slow;
  assert_int_equal(sf_schema_set_new(&set, NULL), SF_OK);
  assert_int_equal(sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &fast, NULL), SF_OK);
  assert_int_equal(
      sf_event_decoder_new(set, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow, NULL),
      SF_OK);
  assert_true(sf_event_decoder_has_fast_path(fast));
  static obuf o;
  /* The unchanged event decodes: the corpus tests what it changes. */
  bad_case good = {.what = "", .field = -1};
  build(set, &good, &o);
  sf_shard_staged e;
  sf_event_reason r;
  sf_err err;
  assert_int_equal(sf_event_decode_shard_staged(fast, o.b, o.n, &e, &r, &err), SF_OK);
  sf_shard_staged_clear(&e);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const bad_case *c = &cases[i];
    build(set, c, &o);
    sf_event_decoder *decs[2] = {fast, slow};
    for (int d = 0; d < 2; d++) {
      sf_code rc = sf_event_decode_shard_staged(decs[d], o.b, o.n, &e, &r, &err);
      if (rc != SF_EDECODE || r != c->reason || !strstr(err.msg, c->needle))
        fail_msg("%s [%s reader]: got %s %s '%s', want %s mentioning '%s'", c->what,
                 d ? "avro-c" : "fast", sf_code_name(rc), sf_event_reason_name(r),
                 rc ? err.msg : "", sf_event_reason_name(c->reason), c->needle);
      assert_null(e.event_id); /* nothing left to free on failure */
    }
  }
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_schema_set_free(set);
}

/* The other event types, built through the encoder with validation off. */
static void bad_commits_and_dead_letters_are_invalid_fields(void **state) {
  (void)state;
  sf_schema_set *set;
  sf_event_encoder *enc;
  sf_event_decoder *dec;
  assert_int_equal(sf_schema_set_new(&set, NULL), SF_OK);
  assert_int_equal(
      sf_event_encoder_new(set, SF_FRAMING_AUTO, SF_ENCODE_NO_VALIDATE, &enc, NULL),
      SF_OK);
  assert_int_equal(sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &dec, NULL), SF_OK);
  char *ids[1] = {"shard-1"};
  sf_seginfo seg = {.segment_id = "seg-1",
                    .path = "_indices/segments/seg-1.sfs",
                    .bytes = 10,
                    .num_rows = 10,
                    .shard_ids = ids,
                    .num_shards = 1};
  assert_int_equal(sf_fragset_parse("0-3", "t", &seg.fragments, NULL), SF_OK);
  sf_event ev = {
      .type = SF_EVENT_SEGMENTS_COMMITTED,
      .u.committed = {"job@1", "file:///d", "idx", "job", 1, &seg, 1, 10, 1, 5, 6}};
  uint8_t *b;
  size_t n;
  sf_event out;
  sf_event_reason r;
  sf_err err;
  /* A commit without segments. */
  ev.u.committed.num_segments = 0;
  assert_int_equal(sf_event_encode(enc, &ev, &b, &n, NULL), SF_OK);
  assert_int_equal(sf_event_decode(dec, b, n, &out, &r, &err), SF_EDECODE);
  assert_int_equal(r, SF_REASON_INVALID_FIELD);
  assert_non_null(strstr(err.msg, "segments"));
  free(b);
  /* A segment that merges no shard. */
  ev.u.committed.num_segments = 1;
  seg.num_shards = 0;
  assert_int_equal(sf_event_encode(enc, &ev, &b, &n, NULL), SF_OK);
  assert_int_equal(sf_event_decode(dec, b, n, &out, &r, &err), SF_EDECODE);
  assert_int_equal(r, SF_REASON_INVALID_FIELD);
  assert_non_null(strstr(err.msg, "shard_ids"));
  free(b);
  sf_fragset_free(seg.fragments);
  /* A dead letter whose reason is not a code. */
  sf_shard_rejected rej = {"bad reason",   "m", NULL, NULL, "t", 0, 1,
                           (uint8_t *)"x", 1,   7,    NULL};
  assert_int_equal(sf_event_encode_shard_rejected(enc, &rej, &b, &n, NULL), SF_OK);
  assert_int_equal(sf_event_decode(dec, b, n, &out, &r, &err), SF_EDECODE);
  assert_int_equal(r, SF_REASON_INVALID_FIELD);
  assert_non_null(strstr(err.msg, "reason"));
  free(b);
  sf_event_decoder_free(dec);
  sf_event_encoder_free(enc);
  sf_schema_set_free(set);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(the_corpus_has_at_least_twenty_kinds),
      cmocka_unit_test(every_bad_event_gives_its_reason_in_both_readers),
      cmocka_unit_test(bad_commits_and_dead_letters_are_invalid_fields),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
