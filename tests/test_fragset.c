/* test_fragset.c - fragment sets: the one decoder of portable roaring bytes
 * from outside checks their content as well as their lengths, and every
 * reader of outside bytes (events, shard and segment files, catalog
 * versions) goes through it; range lists and formatting. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/crc32c.h"
#include "core/base/fragset.h"
#include "core/catalog/catalog_internal.h"
#include "core/format/segfile.h"
#include "schemas/event_decode.h"
#include "schemas/event_encode.h"
#include "schemas/schema.h"
#include "tests/le_bytes.h"
#include "testutil.h"

/* ---- portable bytes by hand ---------------------------------------------------
 * Written here from the format specification, not by CRoaring, so that any
 * content at all can be given. */

typedef struct bytes {
  uint8_t b[1 << 15];
  size_t n;
} bytes;

static void p16(bytes *o, uint32_t v) {
  o->b[o->n++] = (uint8_t)v;
  o->b[o->n++] = (uint8_t)(v >> 8);
}
static void p32(bytes *o, uint32_t v) {
  p16(o, v & 0xFFFF);
  p16(o, v >> 16);
}

/* One array container with key 0 holding vals[n] in the given order, in the
 * format without runs (cookie, count, key/cardinality, offset, values). */
static bytes array_of(const uint16_t *vals, uint32_t n) {
  bytes o = {.n = 0};
  p32(&o, 12346);
  p32(&o, 1);
  p16(&o, 0);
  p16(&o, n - 1);
  p32(&o, 16);
  for (uint32_t i = 0; i < n; i++) p16(&o, vals[i]);
  return o;
}

/* One run container with key 0, header cardinality card, runs as (start,
 * length - 1) pairs, in the format with runs (fewer than 4 containers: no
 * offsets). */
static bytes runs_of(uint32_t card, const uint16_t *pairs, uint32_t nruns) {
  bytes o = {.n = 0};
  p32(&o, 12347); /* one container: count - 1 = 0 in the high half */
  o.b[o.n++] = 1; /* container 0 is a run container */
  p16(&o, 0);
  p16(&o, card - 1);
  p16(&o, nruns);
  for (uint32_t i = 0; i < 2 * nruns; i++) p16(&o, pairs[i]);
  return o;
}

static sf_code decode(const bytes *o, roaring_bitmap_t **b, sf_err *err) {
  return sf_fragset_decode(o->b, o->n, "test bitmap", b, err);
}

static void expect_corrupt(const bytes *o, const char *needle) {
  roaring_bitmap_t *b = (roaring_bitmap_t *)1;
  sf_err err = {0};
  assert_int_equal(decode(o, &b, &err), SF_ECORRUPT);
  assert_null(b);
  if (!strstr(err.msg, needle)) fail_msg("'%s' lacks '%s'", err.msg, needle);
  assert_non_null(strstr(err.msg, "test bitmap"));
}

/* ---- content ------------------------------------------------------------------ */

static void an_unsorted_array_container_is_refused(void **state) {
  (void)state;
  /* The reported case: 22 bytes CRoaring deserializes, after which
   * intersecting with {1} answers "empty". */
  const uint16_t v[] = {5, 1, 3};
  bytes o = array_of(v, 3);
  assert_int_equal(o.n, 22);
  roaring_bitmap_t *raw = roaring_bitmap_portable_deserialize_safe((char *)o.b, o.n);
  if (raw) { /* what the library alone would let through */
    roaring_bitmap_t *one = roaring_bitmap_of(1, 1);
    assert_false(roaring_bitmap_intersect(raw, one));
    sf_fragset_free(one);
    sf_fragset_free(raw);
  }
  expect_corrupt(&o, "not strictly increasing");
}

static void an_array_container_with_a_repeated_value_is_refused(void **state) {
  (void)state;
  const uint16_t v[] = {1, 3, 3};
  bytes o = array_of(v, 3);
  expect_corrupt(&o, "not strictly increasing");
}

static void a_bitset_whose_bits_disagree_with_its_cardinality_is_refused(void **state) {
  (void)state;
  /* 5000 even values: a bitset container, serialized without runs */
  roaring_bitmap_t *b = roaring_bitmap_from_range(0, 10000, 2);
  uint8_t *enc;
  size_t n;
  assert_int_equal(sf_fragset_encode(b, &enc, &n, NULL), SF_OK);
  assert_int_equal(n, 16 + 8192);
  bytes o = {.n = n};
  memcpy(o.b, enc, n);
  roaring_bitmap_t *ok = NULL;
  assert_int_equal(decode(&o, &ok, NULL), SF_OK);
  assert_true(roaring_bitmap_equals(ok, b));
  sf_fragset_free(ok);
  o.b[16 + 8191] = 0x80; /* value 65535 set: 5001 bits, header says 5000 */
  expect_corrupt(&o, "bitset holds 5001");
  free(enc);
  sf_fragset_free(b);
}

static void run_containers_must_be_ordered_apart_and_add_up(void **state) {
  (void)state;
  const uint16_t good[] = {1, 2, 10, 0}; /* 1-3, 10 */
  bytes o = runs_of(4, good, 2);
  roaring_bitmap_t *b = NULL;
  assert_int_equal(decode(&o, &b, NULL), SF_OK);
  roaring_bitmap_t *want = roaring_bitmap_of(4, 1, 2, 3, 10);
  assert_true(roaring_bitmap_equals(b, want));
  sf_fragset_free(b);
  sf_fragset_free(want);

  const uint16_t overlap[] = {1, 4, 3, 0};
  o = runs_of(6, overlap, 2);
  expect_corrupt(&o, "overlap");
  const uint16_t touch[] = {1, 1, 3, 0}; /* 1-2 then 3: one run written as two */
  o = runs_of(3, touch, 2);
  expect_corrupt(&o, "touch");
  const uint16_t backwards[] = {10, 0, 1, 0};
  o = runs_of(2, backwards, 2);
  expect_corrupt(&o, "out of order");
  const uint16_t past[] = {65535, 1};
  o = runs_of(2, past, 1);
  expect_corrupt(&o, "passes 65535");
  o = runs_of(1, NULL, 0);
  expect_corrupt(&o, "without runs");
  o = runs_of(7, good, 2); /* the runs hold 4 */
  expect_corrupt(&o, "runs hold 4");
}

static void keys_must_increase_and_offsets_must_point_at_their_containers(void **state) {
  (void)state;
  bytes o = {.n = 0};
  p32(&o, 12346);
  p32(&o, 2);
  p16(&o, 1), p16(&o, 0); /* key 1, one value */
  p16(&o, 0), p16(&o, 0); /* key 0: out of order */
  p32(&o, 24), p32(&o, 26);
  p16(&o, 7), p16(&o, 7);
  expect_corrupt(&o, "keys are not strictly increasing");
  o.b[8] = 0, o.b[12] = 1; /* keys 0 then 1: valid */
  roaring_bitmap_t *b = NULL;
  assert_int_equal(decode(&o, &b, NULL), SF_OK);
  assert_int_equal(roaring_bitmap_get_cardinality(b), 2);
  assert_true(roaring_bitmap_contains(b, 65536 + 7));
  sf_fragset_free(b);
  o.b[20] = 25; /* the second offset points one byte off */
  expect_corrupt(&o, "offset says 25");
}

static void lengths_and_counts_are_checked_against_the_bytes(void **state) {
  (void)state;
  const uint16_t v[] = {1, 3, 5};
  bytes o = array_of(v, 3);
  bytes cut = o;
  cut.n = 21;
  expect_corrupt(&cut, "cut short");
  bytes more = o;
  more.b[more.n++] = 0;
  expect_corrupt(&more, "follow");
  bytes many = {.n = 0};
  p32(&many, 12346);
  p32(&many, 70000);
  expect_corrupt(&many, "at most 65536");
  bytes cookie = o;
  cookie.b[0] = 0x99;
  expect_corrupt(&cookie, "cookie");
  roaring_bitmap_t *b = NULL;
  assert_int_equal(sf_fragset_decode(o.b, 0, "test bitmap", &b, NULL), SF_ECORRUPT);
  assert_int_equal(sf_fragset_decode(o.b, 3, "test bitmap", &b, NULL), SF_ECORRUPT);
}

/* Whatever CRoaring writes, in every container kind and both cookies, with
 * and without offsets, decodes to the same set. */
static void every_bitmap_croaring_writes_is_accepted(void **state) {
  (void)state;
  roaring_bitmap_t *sets[6];
  sets[0] = roaring_bitmap_of(1, 7);
  sets[1] = roaring_bitmap_from_range(0, 100000, 1);
  roaring_bitmap_run_optimize(sets[1]);
  sets[2] = roaring_bitmap_from_range(3, 300000, 3); /* arrays and bitsets */
  sets[3] = roaring_bitmap_create();
  for (uint32_t k = 0; k < 6; k++) /* six containers, runs among them: offsets */
    roaring_bitmap_add_range_closed(sets[3], k << 16 | 10, k << 16 | (k % 2 ? 9000 : 20));
  roaring_bitmap_run_optimize(sets[3]);
  sets[4] = roaring_bitmap_create();
  sets[5] = roaring_bitmap_of(3, 0, 65535, UINT32_MAX);
  for (int i = 0; i < 6; i++) {
    uint8_t *enc;
    size_t n;
    assert_int_equal(sf_fragset_encode(sets[i], &enc, &n, NULL), SF_OK);
    roaring_bitmap_t *b = NULL;
    sf_err err = {0};
    if (sf_fragset_decode(enc, n, "set", &b, &err)) fail_msg("set %d: %s", i, err.msg);
    assert_true(roaring_bitmap_equals(b, sets[i]));
    sf_fragset_free(b);
    free(enc);
    sf_fragset_free(sets[i]);
  }
}

/* ---- every reader of outside bytes uses it -------------------------------------- */

static const uint8_t sorted135[6] = {1, 0, 3, 0, 5, 0}, unsorted[6] = {5, 0, 1, 0, 3, 0};

/* Replaces the one occurrence of the values 1, 3, 5 in buf by 5, 1, 3. */
static void unsort(uint8_t *buf, size_t n, size_t from) {
  size_t at = 0, hits = 0;
  for (size_t i = from; i + 6 <= n; i++)
    if (!memcmp(buf + i, sorted135, 6)) at = i, hits++;
  assert_int_equal(hits, 1);
  memcpy(buf + at, unsorted, 6);
}

static void a_shard_file_with_an_unsorted_bitmap_is_corrupt(void **state) {
  (void)state;
  const char *path = tu_path(tu_tmpdir("fragset-seg"), "s.sfs");
  sf_seg_params sp = {SF_SEG_KIND_SHARD, SF_IVF_FLAT, SF_L2, 4, 2, 16, 0, 0x1234};
  sf_seg_writer *w;
  sf_err err = {0};
  assert_int_equal(sf_seg_writer_open(path, &sp, &w, &err), SF_OK);
  roaring_bitmap_t *frags = roaring_bitmap_of(3, 1, 3, 5);
  assert_int_equal(sf_seg_writer_finish(w, frags, &err), SF_OK);
  sf_fragset_free(frags);
  size_t n;
  uint8_t *b = tu_read_file(path, &n);
  uint8_t *f = b + n - 64; /* the footer: bitmap at f[0..8), its length f[8..16) */
  size_t boff = le_get32(f), blen = le_get32(f + 8);
  unsort(b + boff, blen, 0);
  le_put32(f + 48, sf_crc32c(0, b + boff, blen)); /* every CRC made right again */
  le_put32(f + 60, sf_crc32c(0, f, 60));
  tu_write_file(path, b, n);
  free(b);
  sf_seg_reader *r = NULL;
  assert_int_equal(sf_seg_open_meta(path, &r, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "not strictly increasing"));
  assert_int_equal(sf_seg_open(path, &r, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, "s.sfs"));
}

static int64_t unzigzag(const uint8_t **p) {
  uint64_t v = 0;
  for (int s = 0;; s += 7) {
    uint8_t c = *(*p)++;
    v |= (uint64_t)(c & 0x7F) << s;
    if (!(c & 0x80)) break;
  }
  return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static void a_catalog_version_with_an_unsorted_bitmap_is_corrupt(void **state) {
  (void)state;
  char *shard_ids[] = {"w0"}, *segment_ids[] = {"seg-a"};
  sf_catalog_segment seg = {.info = {.segment_id = "seg-a",
                                     .path = "segments/seg-a.sfseg",
                                     .bytes = 100,
                                     .num_rows = 3,
                                     .fragments = roaring_bitmap_of(3, 1, 3, 5),
                                     .shard_ids = shard_ids,
                                     .num_shards = 1},
                            .staging_id = "job-1",
                            .added_in = 1};
  sf_catalog_index ix = {.name = "idx",
                         .column = "emb",
                         .index_type = SF_IVF_FLAT,
                         .metric = SF_L2,
                         .dim = 4,
                         .nlist = 2,
                         .segs = &seg,
                         .nsegs = 1};
  sf_catalog_job job = {.staging_id = "job-1",
                        .index_name = "idx",
                        .version = 1,
                        .segment_ids = segment_ids,
                        .nsegment_ids = 1};
  sf_catalog c = {
      .version = 1, .created_at_ms = 1, .ix = &ix, .nix = 1, .jobs = &job, .njobs = 1};
  char *buf = NULL;
  size_t n = 0;
  FILE *fp = open_memstream(&buf, &n);
  sf_err err = {0};
  if (sf_catalog_write(&c, fp, "mem", &err)) fail_msg("%s", err.msg);
  fclose(fp);
  sf_fragset_free(seg.info.fragments);
  sf_catalog back = {0};
  assert_int_equal(sf_catalog_decode((uint8_t *)buf, n, "v1", &back, &err), SF_OK);
  sf_catalog_clear(&back);
  /* The record follows the header (through the first sync marker) and two
   * varints (count, size); it ends with the XXH3-64 of its other bytes. */
  const uint8_t *sync = (uint8_t *)buf + n - 16, *p = NULL;
  for (size_t i = 0; i + 16 <= n; i++)
    if (!memcmp(buf + i, sync, 16)) {
      p = (uint8_t *)buf + i + 16;
      break;
    }
  assert_non_null(p);
  unzigzag(&p);
  size_t rlen = (size_t)unzigzag(&p);
  uint8_t *rec = (uint8_t *)p;
  unsort(rec, rlen, 0);
  uint64_t h = XXH3_64bits(rec, rlen - 8);
  for (int i = 0; i < 8; i++) rec[rlen - 8 + i] = (uint8_t)(h >> (8 * i));
  assert_int_equal(sf_catalog_decode((uint8_t *)buf, n, "v1", &back, &err), SF_ECORRUPT);
  if (!strstr(err.msg, "not strictly increasing")) fail_msg("%s", err.msg);
  free(buf);
}

static void an_event_with_an_unsorted_bitmap_is_an_invalid_field(void **state) {
  (void)state;
  sf_schema_set *set;
  sf_event_encoder *enc;
  sf_event_decoder *fast, *slow;
  sf_err err = {0};
  assert_int_equal(sf_schema_set_new(&set, &err), SF_OK);
  assert_int_equal(sf_event_encoder_new(set, SF_FRAMING_SINGLE, 0, &enc, &err), SF_OK);
  assert_int_equal(sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &fast, &err), SF_OK);
  assert_int_equal(
      sf_event_decoder_new(set, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow, &err),
      SF_OK);
  sf_event e = {.type = SF_EVENT_SHARD_STAGED};
  sf_shard_staged *s = &e.u.staged;
  s->event_id = "e1", s->dataset_uri = "/data/ds", s->index_name = "idx";
  s->column = "emb", s->staging_id = "job", s->shard_id = "w0", s->shard_path = "w0.sfs";
  s->shard_bytes = 10, s->num_rows = 3, s->index_type = SF_IVF_FLAT, s->metric = SF_L2;
  s->dim = 4, s->num_partitions = 2, s->staged_at_ms = 1;
  s->fragments = roaring_bitmap_of(3, 1, 3, 5);
  s->expected_fragments = roaring_bitmap_from_range(0, 10, 1);
  uint8_t *b;
  size_t n;
  assert_int_equal(sf_event_encode(enc, &e, &b, &n, &err), SF_OK);
  sf_fragset_free(s->fragments);
  sf_fragset_free(s->expected_fragments);
  unsort(b, n, 10);
  sf_event_decoder *decs[2] = {fast, slow};
  for (int i = 0; i < 2; i++) {
    sf_shard_staged got;
    memset(&got, 0, sizeof got);
    sf_event_reason reason = SF_REASON_NONE;
    assert_int_equal(sf_event_decode_shard_staged(decs[i], b, n, &got, &reason, &err),
                     SF_EDECODE);
    assert_int_equal(reason, SF_REASON_INVALID_FIELD);
    if (!strstr(err.msg, "fragments") || !strstr(err.msg, "not strictly increasing"))
      fail_msg("%s", err.msg);
    sf_shard_staged_clear(&got);
  }
  free(b);
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_event_encoder_free(enc);
  sf_schema_set_free(set);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_unsorted_array_container_is_refused),
      cmocka_unit_test(an_array_container_with_a_repeated_value_is_refused),
      cmocka_unit_test(a_bitset_whose_bits_disagree_with_its_cardinality_is_refused),
      cmocka_unit_test(run_containers_must_be_ordered_apart_and_add_up),
      cmocka_unit_test(keys_must_increase_and_offsets_must_point_at_their_containers),
      cmocka_unit_test(lengths_and_counts_are_checked_against_the_bytes),
      cmocka_unit_test(every_bitmap_croaring_writes_is_accepted),
      cmocka_unit_test(a_shard_file_with_an_unsorted_bitmap_is_corrupt),
      cmocka_unit_test(a_catalog_version_with_an_unsorted_bitmap_is_corrupt),
      cmocka_unit_test(an_event_with_an_unsorted_bitmap_is_an_invalid_field),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
