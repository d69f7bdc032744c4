/*
 * test_events.c - the event codec: schema registry, canonical forms and
 * fingerprints, round trips in both framings, agreement of the two
 * ShardStaged readers, schema evolution, and the JSON form.
 * The corpus of bad events is in test_events_corpus.c; interop with an
 * independent Avro implementation in py_events_interop.py.
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
#include "schemas/canonical.h"
#include "schemas/event.h"
#include "schemas/event_decode.h"
#include "schemas/event_encode.h"
#include "schemas/event_json.h"
#include "schemas/schema.h"

static sf_schema_set *set;

static int setup(void **state) {
  (void)state;
  return sf_schema_set_new(&set, NULL) == SF_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  sf_schema_set_free(set);
  return 0;
}

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static uint64_t next(void) { /* splitmix64: deterministic across runs */
  uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static char *rand_id(const char *prefix) {
  char *s = malloc(300);
  int n = snprintf(s, 300, "%s-", prefix);
  size_t len = next() % 40;
  for (size_t i = 0; i < len; i++)
    s[n + i] = "abcdefghijklmnopqrstuvwxyz0123456789._-"[next() % 39];
  s[n + len] = 0;
  return s;
}

/* A valid ShardStaged with random content; cleared by the caller. */
static void rand_staged(sf_shard_staged *e) {
  memset(e, 0, sizeof *e);
  e->event_id = rand_id("ev");
  e->dataset_uri = strdup("file:///data/d\xc3\xa9j\xc3\xa0"); /* UTF-8 survives */
  e->index_name = rand_id("idx");
  e->column = strdup("embedding");
  e->staging_id = rand_id("job");
  e->shard_id = rand_id("shard");
  e->shard_path = rand_id("shards/s");
  e->shard_bytes = (int64_t)(next() >> 1);
  e->num_rows = (int64_t)(next() % 1000000000);
  e->expected_fragments = roaring_bitmap_create();
  e->fragments = roaring_bitmap_create();
  uint32_t base = (uint32_t)(next() % 100000), n = 1 + (uint32_t)(next() % 300);
  roaring_bitmap_add_range_closed(e->expected_fragments, base, base + 2 * n);
  for (uint32_t i = 0; i < n; i++)
    if (i == 0 || next() % 3) roaring_bitmap_add(e->fragments, base + i * 2);
  e->index_type = (sf_index_type)(next() % 3);
  e->metric = (sf_metric)(next() % 3);
  e->dim = 1 + (int32_t)(next() % SF_MAX_DIM);
  e->num_partitions = 1 + (int32_t)(next() % SF_MAX_NLIST);
  e->quantizer_checksum = next();
  e->has_target_segment_bytes = next() % 2;
  e->target_segment_bytes = e->has_target_segment_bytes ? 1 + (int64_t)(next() >> 2) : 0;
  e->staged_at_ms = (int64_t)(next() >> 20);
}

/* ---- schemas ------------------------------------------------------------------ */

static void crc64_avro_matches_the_specification_on_the_empty_string(void **state) {
  (void)state;
  assert_true(sf_canonical_crc64("", 0) == 0xc15d213aa4d7a795ULL);
}

static void canonical_form_strips_docs_orders_keys_and_uses_full_names(void **state) {
  (void)state;
  static const char in[] =
      "{\"doc\": \"d\", \"fields\": [{\"type\": {\"type\": \"int\"}, \"name\": \"a\", "
      "\"default\": 1}, {\"name\": \"b\", \"type\": {\"type\": \"fixed\", \"size\": 16, "
      "\"name\": \"F\", \"aliases\": [\"x\"]}}, {\"name\": \"c\", \"type\": [\"null\", "
      "\"F\"]}],"
      " \"name\": \"R\", \"namespace\": \"n.s\", \"type\": \"record\"}";
  char *out;
  assert_int_equal(sf_canonical_form_text(in, strlen(in), &out, NULL), SF_OK);
  assert_string_equal(
      out,
      "{\"name\":\"n.s.R\",\"type\":\"record\",\"fields\":[{\"name\":\"a\","
      "\"type\":\"int\"},{\"name\":\"b\",\"type\":{\"name\":\"n.s.F\",\"type\":"
      "\"fixed\",\"size\":16}},{\"name\":\"c\",\"type\":[\"null\",\"n.s.F\"]}]}");
  free(out);
}

static void the_three_event_schemas_are_registered_with_stable_fingerprints(
    void **state) {
  (void)state;
  /* Changing a published schema changes its fingerprint: do it on purpose,
   * keep the old file as <Record>.v<N>.avsc, and update these. */
  static const uint64_t want[SF_EVENT_TYPE_COUNT] = {
      0x9f39b107686cb053ULL, 0x91b3c827945df0beULL, 0xb71764e8699ec8c0ULL,
      0xaf30e3561ef24594ULL};
  for (unsigned t = 0; t < SF_EVENT_TYPE_COUNT; t++) {
    const sf_schema *s = sf_schema_current(set, (sf_event_type)t);
    assert_non_null(s);
    assert_true(s->current);
    assert_int_equal(s->type, t);
    assert_true(s->fingerprint == sf_canonical_crc64(s->canonical, strlen(s->canonical)));
    if (s->fingerprint != want[t])
      fail_msg("%s fingerprint is %016llx", s->origin,
               (unsigned long long)s->fingerprint);
    assert_ptr_equal(sf_schema_by_fingerprint(set, s->fingerprint), s);
  }
}

static void segment_info_is_inlined_where_segments_committed_first_uses_it(void **state) {
  (void)state;
  const sf_schema *s = sf_schema_current(set, SF_EVENT_SEGMENTS_COMMITTED);
  assert_non_null(strstr(
      s->canonical, "{\"name\":\"segforge.events.SegmentInfo\",\"type\":\"record\""));
}

static void schema_ids_map_by_type_and_refuse_a_second_owner(void **state) {
  (void)state;
  sf_schema_set *own;
  sf_err err;
  assert_int_equal(sf_schema_set_new(&own, NULL), SF_OK);
  assert_int_equal(sf_schema_set_parse_id(own, "ShardStaged=17", &err), SF_OK);
  assert_ptr_equal(sf_schema_by_id(own, 17),
                   sf_schema_current(own, SF_EVENT_SHARD_STAGED));
  assert_int_equal(sf_schema_set_parse_id(own, "ShardRejected=17", &err), SF_EEXIST);
  assert_int_equal(sf_schema_set_parse_id(own, "ShardStaged", &err), SF_EINVAL);
  assert_int_equal(sf_schema_set_parse_id(own, "Nope=3", &err), SF_EINVAL);
  assert_int_equal(sf_schema_set_parse_id(own, "ShardStaged=-1", &err), SF_EINVAL);
  sf_schema_set_free(own);
}

/* ---- round trips ---------------------------------------------------------------- */

static void shard_staged_round_trips_in_both_framings_and_both_readers(void **state) {
  (void)state;
  sf_schema_set *own;
  sf_event_encoder *single, *confluent;
  sf_event_decoder *fast, *slow;
  assert_int_equal(sf_schema_set_new(&own, NULL), SF_OK);
  assert_int_equal(sf_schema_set_parse_id(own, "ShardStaged=9", NULL), SF_OK);
  assert_int_equal(sf_event_encoder_new(own, SF_FRAMING_SINGLE, 0, &single, NULL), SF_OK);
  assert_int_equal(sf_event_encoder_new(own, SF_FRAMING_AUTO, 0, &confluent, NULL),
                   SF_OK);
  assert_int_equal(sf_event_decoder_new(own, SF_FRAMING_AUTO, 0, &fast, NULL), SF_OK);
  assert_int_equal(
      sf_event_decoder_new(own, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow, NULL),
      SF_OK);
  for (int i = 0; i < 300; i++) {
    sf_shard_staged e, got;
    rand_staged(&e);
    sf_event_encoder *encs[2] = {single, confluent};
    for (int k = 0; k < 2; k++) {
      uint8_t *b;
      size_t n;
      sf_err err;
      if (sf_event_encode_shard_staged(encs[k], &e, &b, &n, &err))
        fail_msg("%s", err.msg);
      assert_int_equal(b[0], k ? 0x00 : 0xC3);
      sf_event_decoder *decs[2] = {fast, slow};
      for (int d = 0; d < 2; d++) {
        sf_event_reason r;
        if (sf_event_decode_shard_staged(decs[d], b, n, &got, &r, &err))
          fail_msg("%s", err.msg);
        assert_true(sf_shard_staged_equal(&e, &got));
        sf_shard_staged_clear(&got);
      }
      free(b);
    }
    sf_shard_staged_clear(&e);
  }
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_event_encoder_free(single);
  sf_event_encoder_free(confluent);
  sf_schema_set_free(own);
}

static void commits_and_dead_letters_round_trip(void **state) {
  (void)state;
  sf_event_encoder *enc;
  sf_event_decoder *dec;
  assert_int_equal(sf_event_encoder_new(set, SF_FRAMING_AUTO, 0, &enc, NULL), SF_OK);
  assert_int_equal(sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &dec, NULL), SF_OK);
  char *ids_a[] = {"s-0", "s-1"}, *ids_b[] = {"s-2"};
  sf_seginfo segs[2] = {{.segment_id = "seg-a",
                         .path = "_indices/segments/seg-a.sfs",
                         .bytes = 100,
                         .num_rows = 10,
                         .shard_ids = ids_a,
                         .num_shards = 2},
                        {.segment_id = "seg-b",
                         .path = "_indices/segments/seg-b.sfs",
                         .bytes = 50,
                         .num_rows = 5,
                         .shard_ids = ids_b,
                         .num_shards = 1}};
  assert_int_equal(sf_fragset_parse("0-63", "t", &segs[0].fragments, NULL), SF_OK);
  assert_int_equal(sf_fragset_parse("64-70,99", "t", &segs[1].fragments, NULL), SF_OK);
  sf_segments_committed c = {"job@3", "file:///d", "idx", "job", 3,  segs,
                             2,       15,          3,     100,   200};
  sf_shard_rejected rj = {
      "PATH_ESCAPE",           "bad path", "job", NULL, "segforge.shards.staged", 4, 1234,
      (uint8_t *)"\xC3\x01zz", 4,          99,    NULL};
  uint8_t *b;
  size_t n;
  sf_event got;
  sf_err err;
  assert_int_equal(sf_event_encode_segments_committed(enc, &c, &b, &n, NULL), SF_OK);
  if (sf_event_decode(dec, b, n, &got, NULL, &err)) fail_msg("%s", err.msg);
  assert_int_equal(got.type, SF_EVENT_SEGMENTS_COMMITTED);
  assert_true(sf_segments_committed_equal(&c, &got.u.committed));
  sf_event_clear(&got);
  /* The encoder's reused value must not keep the previous event's array items. */
  c.num_segments = 1;
  free(b);
  assert_int_equal(sf_event_encode_segments_committed(enc, &c, &b, &n, NULL), SF_OK);
  assert_int_equal(sf_event_decode(dec, b, n, &got, NULL, NULL), SF_OK);
  assert_int_equal(got.u.committed.num_segments, 1);
  sf_event_clear(&got);
  free(b);
  assert_int_equal(sf_event_encode_shard_rejected(enc, &rj, &b, &n, NULL), SF_OK);
  assert_int_equal(sf_event_decode(dec, b, n, &got, NULL, NULL), SF_OK);
  assert_true(sf_shard_rejected_equal(&rj, &got.u.rejected));
  sf_event_clear(&got);
  /* A dead letter on the ShardStaged topic is refused by type. */
  sf_shard_staged st;
  sf_event_reason r;
  assert_int_equal(sf_event_decode_shard_staged(dec, b, n, &st, &r, &err), SF_EDECODE);
  assert_int_equal(r, SF_REASON_UNKNOWN_SCHEMA);
  free(b);
  sf_fragset_free(segs[0].fragments);
  sf_fragset_free(segs[1].fragments);
  sf_event_encoder_free(enc);
  sf_event_decoder_free(dec);
}

static void the_encoder_refuses_what_the_consumer_would_reject(void **state) {
  (void)state;
  sf_event_encoder *enc;
  assert_int_equal(sf_event_encoder_new(set, SF_FRAMING_AUTO, 0, &enc, NULL), SF_OK);
  sf_shard_staged e;
  rand_staged(&e);
  free(e.shard_path);
  e.shard_path = strdup("../escape.sfs");
  uint8_t *b = NULL;
  size_t n;
  sf_err err;
  assert_int_equal(sf_event_encode_shard_staged(enc, &e, &b, &n, &err), SF_EDECODE);
  assert_null(b);
  assert_non_null(strstr(err.msg, "shard_path"));
  sf_shard_staged_clear(&e);
  sf_event_encoder_free(enc);
  /* Confluent framing without an id is a configuration error, said so. */
  assert_int_equal(sf_event_encoder_new(set, SF_FRAMING_CONFLUENT, 0, &enc, NULL), SF_OK);
  rand_staged(&e);
  assert_int_equal(sf_event_encode_shard_staged(enc, &e, &b, &n, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "--schema-id"));
  sf_shard_staged_clear(&e);
  sf_event_encoder_free(enc);
}

/* Every truncation and many single-byte changes of valid events: the two
 * readers give the same code and reason, and the same event when both accept. */
static void both_readers_agree_on_damaged_events(void **state) {
  (void)state;
  sf_event_encoder *enc;
  sf_event_decoder *fast, *slow;
  assert_int_equal(sf_event_encoder_new(set, SF_FRAMING_AUTO, 0, &enc, NULL), SF_OK);
  assert_int_equal(sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &fast, NULL), SF_OK);
  assert_int_equal(
      sf_event_decoder_new(set, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow, NULL),
      SF_OK);
  size_t accepted = 0, rejected = 0;
  for (int i = 0; i < 40; i++) {
    sf_shard_staged e;
    rand_staged(&e);
    uint8_t *b;
    size_t n;
    assert_int_equal(sf_event_encode_shard_staged(enc, &e, &b, &n, NULL), SF_OK);
    sf_shard_staged_clear(&e);
    for (size_t k = 0; k < n + 400; k++) {
      size_t len = n;
      uint8_t saved = 0;
      size_t at = 0;
      if (k < n) {
        len = k; /* a truncation */
      } else {
        at = SF_SINGLE_OBJECT_HEADER + next() % (n - SF_SINGLE_OBJECT_HEADER);
        saved = b[at];
        b[at] = (uint8_t)next();
      }
      sf_shard_staged x, y;
      sf_event_reason rx, ry;
      sf_err ex, ey;
      sf_code cx = sf_event_decode_shard_staged(fast, b, len, &x, &rx, &ex);
      sf_code cy = sf_event_decode_shard_staged(slow, b, len, &y, &ry, &ey);
      if (cx != cy || rx != ry)
        fail_msg("readers disagree at %zu: fast %s %s '%s', avro-c %s %s '%s'", k,
                 sf_code_name(cx), sf_event_reason_name(rx), cx ? ex.msg : "",
                 sf_code_name(cy), sf_event_reason_name(ry), cy ? ey.msg : "");
      if (cx == SF_OK) {
        assert_true(sf_shard_staged_equal(&x, &y));
        accepted++;
      } else {
        rejected++;
      }
      sf_shard_staged_clear(&x);
      sf_shard_staged_clear(&y);
      if (k >= n) b[at] = saved;
    }
    free(b);
  }
  assert_true(accepted > 0 && rejected > 0);
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_event_encoder_free(enc);
}

/* ---- evolution ------------------------------------------------------------------- */

/* The current ShardStaged schema with one field removed (the text of an
 * older version that did not have it); caller frees. */
static char *schema_without(const char *field) {
  json_t *root = json_loads(sf_schema_current(set, SF_EVENT_SHARD_STAGED)->json, 0, NULL);
  json_t *fields = json_object_get(root, "fields");
  for (size_t i = 0; i < json_array_size(fields); i++)
    if (!strcmp(json_string_value(json_object_get(json_array_get(fields, i), "name")),
                field))
      json_array_remove(fields, i);
  char *s = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  return s;
}

static void events_of_an_older_version_resolve_into_the_current_one(void **state) {
  (void)state;
  sf_schema_set *own;
  const sf_schema *old;
  sf_err err;
  assert_int_equal(sf_schema_set_new(&own, NULL), SF_OK);
  char *v1 = schema_without("target_segment_bytes");
  if (sf_schema_set_add(own, v1, strlen(v1), "ShardStaged.v1.avsc", &old, &err))
    fail_msg("%s", err.msg);
  assert_false(old->current);
  assert_true(old->fingerprint !=
              sf_schema_current(own, SF_EVENT_SHARD_STAGED)->fingerprint);
  assert_int_equal(sf_schema_set_map_id(own, 5, old, NULL), SF_OK);
  /* Write an event as the old version would: avro-c projects a current
   * datum onto the old schema, and the old fingerprint frames it. */
  sf_event_encoder *enc;
  sf_event_decoder *dec;
  assert_int_equal(sf_event_encoder_new(own, SF_FRAMING_SINGLE, 0, &enc, NULL), SF_OK);
  assert_int_equal(sf_event_decoder_new(own, SF_FRAMING_AUTO, 0, &dec, NULL), SF_OK);
  sf_shard_staged e, got;
  rand_staged(&e);
  e.has_target_segment_bytes = true;
  e.target_segment_bytes = 777;
  uint8_t *b;
  size_t n;
  assert_int_equal(sf_event_encode_shard_staged(enc, &e, &b, &n, NULL), SF_OK);
  avro_value_iface_t *cur_cls =
      avro_generic_class_from_schema(sf_schema_current(own, SF_EVENT_SHARD_STAGED)->avro);
  avro_value_iface_t *old_cls = avro_generic_class_from_schema(old->avro);
  avro_value_iface_t *proj = avro_resolved_writer_new(
      sf_schema_current(own, SF_EVENT_SHARD_STAGED)->avro, old->avro);
  avro_value_t old_val, resolved;
  assert_int_equal(avro_generic_value_new(old_cls, &old_val), 0);
  assert_int_equal(avro_resolved_writer_new_value(proj, &resolved), 0);
  avro_resolved_writer_set_dest(&resolved, &old_val);
  avro_reader_t rd = avro_reader_memory((const char *)b + 10, (int64_t)n - 10);
  assert_int_equal(avro_value_read(rd, &resolved), 0);
  static uint8_t out[4096];
  for (int framing = 0; framing < 2; framing++) {
    size_t hdr = framing ? 5 : 10;
    if (framing)
      memcpy(out, "\x00\x00\x00\x00\x05", 5);
    else
      for (int i = 0; i < 8; i++)
        out[i + 2] = (uint8_t)(old->fingerprint >> (8 * i)), out[0] = 0xC3, out[1] = 1;
    avro_writer_t w = avro_writer_memory((const char *)out + hdr, sizeof out - hdr);
    assert_int_equal(avro_value_write(w, &old_val), 0);
    size_t len = hdr + (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    if (sf_event_decode_shard_staged(dec, out, len, &got, NULL, &err))
      fail_msg("%s", err.msg);
    assert_ptr_equal(sf_event_decoder_last_schema(dec), old);
    assert_false(got.has_target_segment_bytes); /* the default: null */
    e.has_target_segment_bytes = false;
    assert_true(sf_shard_staged_equal(&e, &got));
    e.has_target_segment_bytes = true;
    sf_shard_staged_clear(&got);
  }
  avro_reader_free(rd);
  avro_value_decref(&resolved);
  avro_value_decref(&old_val);
  avro_value_iface_decref(proj);
  avro_value_iface_decref(old_cls);
  avro_value_iface_decref(cur_cls);
  free(b);
  free(v1);
  sf_shard_staged_clear(&e);
  sf_event_encoder_free(enc);
  sf_event_decoder_free(dec);
  sf_schema_set_free(own);
}

static void a_version_the_current_schema_cannot_read_is_refused_when_added(void **state) {
  (void)state;
  sf_schema_set *own;
  sf_err err;
  assert_int_equal(sf_schema_set_new(&own, NULL), SF_OK);
  char *nodim = schema_without("dim"); /* dim has no default to fill in */
  assert_int_equal(sf_schema_set_add(own, nodim, strlen(nodim), "old.avsc", NULL, &err),
                   SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "default"));
  free(nodim);
  static const char other[] = "{\"type\":\"record\",\"name\":\"x.Y\",\"fields\":[]}";
  assert_int_equal(sf_schema_set_add(own, other, strlen(other), "y.avsc", NULL, &err),
                   SF_EINVAL);
  sf_schema_set_free(own);
}

/* ---- JSON ----------------------------------------------------------------------------
 */

static void json_round_trips_and_takes_fragments_as_range_lists_or_arrays(void **state) {
  (void)state;
  sf_event ev = {.type = SF_EVENT_SHARD_STAGED}, back;
  rand_staged(&ev.u.staged);
  json_t *j = sf_event_to_json(&ev);
  assert_non_null(j);
  assert_int_equal(sf_event_from_json(SF_EVENT_SHARD_STAGED, j, &back, NULL), SF_OK);
  assert_true(sf_shard_staged_equal(&ev.u.staged, &back.u.staged));
  sf_event_clear(&back);
  json_object_set_new(j, "fragments", json_pack("[iii]", 1, 2, 3));
  json_object_set_new(j, "expected_fragments", json_string("0-9,20"));
  assert_int_equal(sf_event_from_json(SF_EVENT_SHARD_STAGED, j, &back, NULL), SF_OK);
  char *f = sf_fragset_format(back.u.staged.fragments),
       *x = sf_fragset_format(back.u.staged.expected_fragments);
  assert_string_equal(f, "1-3");
  assert_string_equal(x, "0-9,20");
  free(f);
  free(x);
  sf_event_clear(&back);
  sf_err err;
  json_object_set_new(j, "shard_bytez", json_integer(1));
  assert_int_equal(sf_event_from_json(SF_EVENT_SHARD_STAGED, j, &back, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "shard_bytez"));
  json_object_del(j, "shard_bytez");
  json_object_del(j, "dim");
  assert_int_equal(sf_event_from_json(SF_EVENT_SHARD_STAGED, j, &back, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "'dim' is missing"));
  json_decref(j);
  sf_event_clear(&ev);
}

/* Two shards of one job agree on every job-level field; the first that
 * differs is named with both values, in the schema's field order. */
static void job_diff_names_the_first_job_level_field_that_differs(void **state) {
  sf_shard_staged a, b;
  sf_err err;
  rand_staged(&a);
  assert_int_equal(sf_shard_staged_copy(&b, &a, &err), SF_OK);
  char av[64], bv[64];
  /* Another shard of the same job: shard fields, ids and times may differ. */
  free(b.shard_id), b.shard_id = strdup("other-shard");
  free(b.event_id), b.event_id = strdup("other-event");
  b.num_rows++, b.staged_at_ms++, b.quantizer_checksum++;
  assert_null(sf_shard_staged_job_diff(&a, &b, av, bv, sizeof av));
  assert_false(sf_shard_staged_same_shard(&a, &b));
  /* A redelivery under a new event id and time is the same shard. */
  sf_shard_staged c;
  assert_int_equal(sf_shard_staged_copy(&c, &a, &err), SF_OK);
  free(c.event_id), c.event_id = strdup("retry");
  c.staged_at_ms += 1000;
  assert_true(sf_shard_staged_same_shard(&a, &c));
  c.num_rows++;
  assert_false(sf_shard_staged_same_shard(&a, &c));
  sf_shard_staged_clear(&c);

  b.has_target_segment_bytes = 1, b.target_segment_bytes = 12345;
  a.has_target_segment_bytes = 0;
  assert_string_equal(sf_shard_staged_job_diff(&a, &b, av, bv, sizeof av),
                      "target_segment_bytes");
  assert_string_equal(av, "null");
  assert_string_equal(bv, "12345");
  b.num_partitions = a.num_partitions + 1;
  assert_string_equal(sf_shard_staged_job_diff(&a, &b, av, bv, sizeof av),
                      "num_partitions");
  b.dim = a.dim + 1;
  assert_string_equal(sf_shard_staged_job_diff(&a, &b, av, bv, sizeof av), "dim");
  b.metric = (sf_metric)((a.metric + 1) % 3);
  assert_string_equal(sf_shard_staged_job_diff(&a, &b, av, bv, sizeof av), "metric");
  assert_string_equal(av, sf_metric_name(a.metric));
  assert_string_equal(bv, sf_metric_name(b.metric));
  free(b.index_name), b.index_name = strdup("another-index");
  assert_string_equal(sf_shard_staged_job_diff(&a, &b, av, bv, sizeof av), "index_name");
  assert_string_equal(bv, "another-index");
  free(b.dataset_uri), b.dataset_uri = strdup("/data/other");
  assert_string_equal(sf_shard_staged_job_diff(&a, &b, av, bv, sizeof av), "dataset_uri");
  assert_string_equal(bv, "/data/other");
  sf_shard_staged_clear(&a);
  sf_shard_staged_clear(&b);
}

/* Adding a field is the .avsc, one row of the field table and a test: the
 * table must list the current schema's fields, in order, with their types,
 * and a table that misses one must not pass for the schema. */
static void every_field_table_matches_its_current_schema(void **state) {
  (void)state;
  char why[256];
  for (unsigned t = 0; t < SF_EVENT_TYPE_COUNT; t++) {
    const sf_evrec *rec = sf_evrec_of((sf_event_type)t);
    if (!sf_evrec_matches(rec, sf_schema_current(set, (sf_event_type)t)->avro, why,
                          sizeof why))
      fail_msg("%s", why);
    sf_evrec short_rec = *rec;
    short_rec.nfields--;
    assert_false(sf_evrec_matches(
        &short_rec, sf_schema_current(set, (sf_event_type)t)->avro, why, sizeof why));
    assert_non_null(strstr(why, rec->name));
  }
}

/* producer is who published the event: part of the event, not of the
 * shard, so a retry from another process is a redelivery, not a conflict. */
static void a_shard_announced_again_by_another_producer_is_the_same_shard(void **state) {
  (void)state;
  sf_shard_staged a, c;
  sf_err err;
  char av[64], bv[64];
  rand_staged(&a);
  a.producer = strdup("worker-1.example/101");
  assert_int_equal(sf_shard_staged_copy(&c, &a, &err), SF_OK);
  assert_true(sf_shard_staged_equal(&a, &c));
  free(c.producer), c.producer = strdup("worker-2.example/202");
  assert_false(sf_shard_staged_equal(&a, &c));
  assert_true(sf_shard_staged_same_shard(&a, &c));
  assert_null(sf_shard_staged_job_diff(&a, &c, av, bv, sizeof av));
  assert_string_equal(sf_shard_staged_diff(&a, &c, SF_FIELD_DELIVERY, av, bv, sizeof av),
                      "producer");
  assert_string_equal(bv, "worker-2.example/202");
  assert_true(sf_shard_staged_digest(&a, SF_FIELD_JOB | SF_FIELD_SHARD) ==
              sf_shard_staged_digest(&c, SF_FIELD_JOB | SF_FIELD_SHARD));
  assert_true(sf_shard_staged_digest(&a, SF_FIELD_DELIVERY) !=
              sf_shard_staged_digest(&c, SF_FIELD_DELIVERY));
  free(c.producer), c.producer = NULL; /* a publisher that predates the field */
  assert_true(sf_shard_staged_same_shard(&a, &c));
  sf_shard_staged_clear(&a);
  sf_shard_staged_clear(&c);
}

/* The producer round-trips through both readers and JSON, null or set, and
 * an event of ShardStaged's first version (no producer) stays on the
 * bounded reader. */
static void the_producer_round_trips_and_version_one_stays_on_the_bounded_reader(
    void **state) {
  (void)state;
  sf_event_encoder *enc;
  sf_event_decoder *fast, *slow;
  assert_int_equal(sf_event_encoder_new(set, SF_FRAMING_SINGLE, 0, &enc, NULL), SF_OK);
  assert_int_equal(sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &fast, NULL), SF_OK);
  assert_int_equal(
      sf_event_decoder_new(set, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow, NULL),
      SF_OK);
  for (int k = 0; k < 2; k++) {
    sf_shard_staged e, x, y;
    sf_err err;
    rand_staged(&e);
    if (k) e.producer = strdup("host.example/4242");
    uint8_t *b;
    size_t n;
    assert_int_equal(sf_event_encode_shard_staged(enc, &e, &b, &n, NULL), SF_OK);
    if (sf_event_decode_shard_staged(fast, b, n, &x, NULL, &err)) fail_msg("%s", err.msg);
    if (sf_event_decode_shard_staged(slow, b, n, &y, NULL, &err)) fail_msg("%s", err.msg);
    assert_true(sf_shard_staged_equal(&e, &x) && sf_shard_staged_equal(&e, &y));
    sf_event ev = {.type = SF_EVENT_SHARD_STAGED, .u.staged = e}, back;
    json_t *j = sf_event_to_json(&ev);
    assert_non_null(j);
    assert_true(k ? json_is_string(json_object_get(j, "producer"))
                  : json_is_null(json_object_get(j, "producer")));
    assert_int_equal(sf_event_from_json(SF_EVENT_SHARD_STAGED, j, &back, NULL), SF_OK);
    assert_true(sf_shard_staged_equal(&e, &back.u.staged));
    json_decref(j);
    sf_event_clear(&back);
    free(b);
    sf_shard_staged_clear(&e);
    sf_shard_staged_clear(&x);
    sf_shard_staged_clear(&y);
  }
  const sf_schema *v1 = NULL;
  for (size_t i = 0; i < sf_schema_set_count(set); i++)
    if (!strcmp(sf_schema_set_at(set, i)->origin, "ShardStaged.v1.avsc"))
      v1 = sf_schema_set_at(set, i);
  assert_non_null(v1);
  assert_false(v1->current);
  assert_true(sf_event_decoder_has_fast_path(fast));
  assert_true(sf_event_decoder_reads_fast(fast, v1));
  assert_false(sf_event_decoder_reads_fast(slow, v1));
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_event_encoder_free(enc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(crc64_avro_matches_the_specification_on_the_empty_string),
      cmocka_unit_test(canonical_form_strips_docs_orders_keys_and_uses_full_names),
      cmocka_unit_test(the_three_event_schemas_are_registered_with_stable_fingerprints),
      cmocka_unit_test(segment_info_is_inlined_where_segments_committed_first_uses_it),
      cmocka_unit_test(schema_ids_map_by_type_and_refuse_a_second_owner),
      cmocka_unit_test(shard_staged_round_trips_in_both_framings_and_both_readers),
      cmocka_unit_test(commits_and_dead_letters_round_trip),
      cmocka_unit_test(the_encoder_refuses_what_the_consumer_would_reject),
      cmocka_unit_test(both_readers_agree_on_damaged_events),
      cmocka_unit_test(events_of_an_older_version_resolve_into_the_current_one),
      cmocka_unit_test(a_version_the_current_schema_cannot_read_is_refused_when_added),
      cmocka_unit_test(json_round_trips_and_takes_fragments_as_range_lists_or_arrays),
      cmocka_unit_test(job_diff_names_the_first_job_level_field_that_differs),
      cmocka_unit_test(every_field_table_matches_its_current_schema),
      cmocka_unit_test(a_shard_announced_again_by_another_producer_is_the_same_shard),
      cmocka_unit_test(
          the_producer_round_trips_and_version_one_stays_on_the_bounded_reader),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
