/* test_event_reject.c - every rejection message can travel in a dead letter:
 * whatever outside bytes it quotes, the message is valid UTF-8, so the
 * ShardRejected carrying it validates (and can be published). */
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
#include "schemas/event.h"

static sf_shard_staged good(void) {
  sf_shard_staged e;
  memset(&e, 0, sizeof e);
  e.event_id = strdup("e1");
  e.dataset_uri = strdup("/data/ds");
  e.index_name = strdup("idx");
  e.column = strdup("emb");
  e.staging_id = strdup("job");
  e.shard_id = strdup("s0");
  e.shard_path = strdup("s0.sfshard");
  sf_fragset_parse("0-3", "fragments", &e.fragments, NULL);
  sf_fragset_parse("0-3", "expected", &e.expected_fragments, NULL);
  e.dim = 8;
  e.num_partitions = 4;
  return e;
}

/* The rejection's message in a ShardRejected, validated as the publisher
 * would before sending it. */
static void assert_publishable(const char *msg) {
  sf_shard_rejected r = {.reason = (char *)"INVALID_FIELD",
                         .message = (char *)msg,
                         .source_topic = (char *)"t",
                         .source_partition = 0,
                         .source_offset = 0};
  sf_err err = {0};
  assert_int_equal(sf_shard_rejected_validate(&r, NULL, &err), SF_OK);
}

static void an_id_with_a_byte_ff_gives_a_valid_utf8_message(void **state) {
  sf_shard_staged e = good();
  free(e.staging_id);
  e.staging_id = strdup(
      "job\xff"
      "x");
  sf_event_reason reason = SF_REASON_NONE;
  sf_err err = {0};
  assert_int_equal(sf_shard_staged_validate(&e, &reason, &err), SF_EDECODE);
  assert_int_equal(reason, SF_REASON_INVALID_FIELD);
  assert_true(sf_event_text_ok(err.msg));
  assert_non_null(strstr(err.msg, "job\\xffx"));
  assert_publishable(err.msg);
  sf_shard_staged_clear(&e);
}

static void a_quote_cut_inside_a_character_gives_a_valid_utf8_message(void **state) {
  sf_shard_staged e = good();
  char id[80];
  memset(id, 'a', 63);
  strcpy(id + 63, "\xc3\xa9tail"); /* '%.64s' keeps only the first byte of the e-acute */
  free(e.shard_id);
  e.shard_id = strdup(id);
  sf_err err = {0};
  assert_int_equal(sf_shard_staged_validate(&e, NULL, &err), SF_EDECODE);
  assert_true(sf_event_text_ok(err.msg));
  assert_publishable(err.msg);
  sf_shard_staged_clear(&e);
}

static void escaping_keeps_valid_text_and_escapes_the_rest(void **state) {
  char out[64];
  assert_string_equal(sf_event_escape_text(out, sizeof out, "caf\xc3\xa9 ok"),
                      "caf\xc3\xa9 ok");
  assert_string_equal(sf_event_escape_text(out, sizeof out, "a\xff\x01z"),
                      "a\\xff\\x01z");
  assert_string_equal(sf_event_escape_text(out, sizeof out, "\xed\xa0\x80"),
                      "\\xed\\xa0\\x80"); /* a surrogate is not UTF-8 */
  assert_string_equal(sf_event_escape_text(out, sizeof out, NULL), "");
}

static void escaping_never_cuts_a_character_or_an_escape(void **state) {
  char out[5];
  assert_string_equal(sf_event_escape_text(out, sizeof out, "abc\xc3\xa9"), "abc");
  assert_string_equal(sf_event_escape_text(out, sizeof out, "a\xff"), "a");
  assert_true(sf_event_text_ok(out));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(an_id_with_a_byte_ff_gives_a_valid_utf8_message),
      cmocka_unit_test(a_quote_cut_inside_a_character_gives_a_valid_utf8_message),
      cmocka_unit_test(escaping_keeps_valid_text_and_escapes_the_rest),
      cmocka_unit_test(escaping_never_cuts_a_character_or_an_escape),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
