/*
 * fuzz_event.c - libFuzzer target for the event decoder.
 *
 * Every input is decoded twice, by the bounded reader that walks the field
 * tables (schemas/event.h, rows in event_fields.c) and by avro-c
 * (SF_DECODE_NO_FAST_PATH), which walks them too; the two must agree on the code and the
 * reason, and on the event when both accept it. An accepted event must also survive a
 * round trip through the encoder unchanged, and its fragment bitmaps must behave as the
 * sets of their values (fuzz_sound.h). Any disagreement aborts, so the fuzzer reports it
 * as a finding.
 *
 * The first byte picks the framing, so that mutations reach the datum
 * rather than dying on an unknown fingerprint: 0 takes the rest as a whole
 * message; 1..3 put the single-object header of ShardStaged,
 * SegmentsCommitted or ShardRejected before the rest; 4..6 a Confluent
 * header with ids 1..3, which are configured; 7..8 the single-object header
 * of the older registered version of ShardStaged or ShardRejected (v1,
 * before `producer`), which the bounded reader reads through its plan for
 * that writer and avro-c by schema resolution; 9 the single-object header
 * of SegmentsCompacted.
 *
 *   CC=clang cmake -S . -B build-fuzz -DSF_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_event && ./build-fuzz/fuzz_event
 * -max_total_time=30
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_sound.h"
#include "schemas/event_decode.h"
#include "schemas/event_encode.h"
#include "schemas/schema.h"

static sf_schema_set *set;
static const sf_schema *older[2]; /* ShardStaged.v1, ShardRejected.v1 */
static sf_event_decoder *fast, *slow;
static sf_event_encoder *enc;

static void die(const char *what, const sf_err *err) {
  fprintf(stderr, "fuzz_event: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
  abort();
}

/* Freed at exit so that the leak check at exit sees only real leaks: avro-c
 * values hold their buffers where LeakSanitizer cannot trace them. */
static void cleanup(void) {
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_event_encoder_free(enc);
  sf_schema_set_free(set);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  sf_err err;
  if (sf_schema_set_new(&set, &err) ||
      sf_schema_set_parse_id(set, "ShardStaged=1", &err) ||
      sf_schema_set_parse_id(set, "SegmentsCommitted=2", &err) ||
      sf_schema_set_parse_id(set, "ShardRejected=3", &err) ||
      sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &fast, &err) ||
      sf_event_decoder_new(set, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow, &err) ||
      sf_event_encoder_new(set, SF_FRAMING_SINGLE, 0, &enc, &err))
    die("setup", &err);
  for (size_t i = 0; i < sf_schema_set_count(set); i++) {
    const sf_schema *s = sf_schema_set_at(set, i);
    if (!s->current && s->type == SF_EVENT_SHARD_STAGED) older[0] = s;
    if (!s->current && s->type == SF_EVENT_SHARD_REJECTED) older[1] = s;
  }
  if (!older[0] || !older[1]) die("setup: the v1 schemas are not registered", NULL);
  atexit(cleanup);
  return 0;
}

static bool same(const sf_event *a, const sf_event *b) {
  if (a->type != b->type) return false;
  switch (a->type) {
    case SF_EVENT_SHARD_STAGED:
      return sf_shard_staged_equal(&a->u.staged, &b->u.staged);
    case SF_EVENT_SEGMENTS_COMMITTED:
      return sf_segments_committed_equal(&a->u.committed, &b->u.committed);
    case SF_EVENT_SHARD_REJECTED:
      return sf_shard_rejected_equal(&a->u.rejected, &b->u.rejected);
    case SF_EVENT_SEGMENTS_COMPACTED:
      return sf_segments_compacted_equal(&a->u.compacted, &b->u.compacted);
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1 << 16)) return 0;
  static uint8_t msg[(1 << 16) + 16];
  size_t n = 0;
  unsigned mode = data[0] % 10;
  if ((mode >= 1 && mode <= 3) || mode >= 7) {
    uint64_t fp =
        mode == 9   ? sf_schema_current(set, SF_EVENT_SEGMENTS_COMPACTED)->fingerprint
        : mode >= 7 ? older[mode - 7]->fingerprint
                    : sf_schema_current(set, (sf_event_type)(mode - 1))->fingerprint;
    msg[n++] = 0xC3;
    msg[n++] = 0x01;
    for (int i = 0; i < 8; i++) msg[n++] = (uint8_t)(fp >> (8 * i));
  } else if (mode >= 4 && mode <= 6) {
    memcpy(msg, "\x00\x00\x00\x00", 4);
    msg[4] = (uint8_t)(mode - 3);
    n = 5;
  }
  memcpy(msg + n, data + 1, size - 1);
  n += size - 1;

  sf_event x, y;
  sf_event_reason rx, ry;
  sf_err ex, ey;
  sf_code cx = sf_event_decode(fast, msg, n, &x, &rx, &ex);
  sf_code cy = sf_event_decode(slow, msg, n, &y, &ry, &ey);
  if (cx != cy || rx != ry) {
    fprintf(stderr, "fast: %s %s %s\navro-c: %s %s %s\n", sf_code_name(cx),
            sf_event_reason_name(rx), cx ? ex.msg : "", sf_code_name(cy),
            sf_event_reason_name(ry), cy ? ey.msg : "");
    die("the two readers disagree", NULL);
  }
  if (cx == SF_OK) {
    if (!same(&x, &y)) die("the two readers decode different events", NULL);
    if (x.type == SF_EVENT_SHARD_STAGED) {
      fuzz_check_bitmap(x.u.staged.fragments, "fuzz_event fragments");
      fuzz_check_bitmap(x.u.staged.expected_fragments, "fuzz_event expected_fragments");
    } else if (x.type == SF_EVENT_SEGMENTS_COMMITTED) {
      for (size_t i = 0; i < x.u.committed.num_segments; i++)
        fuzz_check_bitmap(x.u.committed.segments[i].fragments, "fuzz_event segment");
    }
    uint8_t *b;
    size_t len;
    sf_event z;
    sf_err e;
    if (sf_event_encode(enc, &x, &b, &len, &e))
      die("an accepted event does not re-encode", &e);
    if (sf_event_decode(fast, b, len, &z, NULL, &e))
      die("a re-encoded event does not decode", &e);
    if (!same(&x, &z)) die("an event changes in a round trip", NULL);
    sf_event_clear(&z);
    free(b);
  }
  sf_event_clear(&x);
  sf_event_clear(&y);
  return 0;
}
