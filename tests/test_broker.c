/*
 * test_broker.c - the embedded broker (librdkafka's mock cluster) and the
 * blocking publisher on it: what the mock supports that the stream
 * processor relies on (consumer groups with committed offsets, idempotent
 * producer retries, pause/resume), its retention limit, and the
 * publisher's delivery wait (confirmation, timeout, concurrent senders).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "core/base/fragset.h"
#include "kafka/broker.h"
#include "kafka/kconf.h"
#include "producer/publisher.h"
#include "schemas/event_decode.h"

#define STAGED "segforge.shards.staged"

static sf_kconf *conf_for(const sf_broker *b) {
  sf_kconf *k = sf_kconf_new();
  assert_non_null(k);
  sf_err err = {0};
  assert_int_equal(sf_kconf_set(k, "bootstrap.servers", sf_broker_bootstraps(b), &err),
                   SF_OK);
  return k;
}

static sf_publisher *publisher_for(const sf_broker *b) {
  sf_kconf *k = conf_for(b);
  sf_publisher *p = NULL;
  sf_err err = {0};
  assert_int_equal(sf_publisher_new(k, SF_FRAMING_AUTO, &p, &err), SF_OK);
  sf_kconf_free(k);
  return p;
}

static void print_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  fprintf(stderr, "%s %s: %s\n", rd_kafka_name(rk), fac, buf);
}

static rd_kafka_t *consumer_for(const sf_broker *b, const char *group) {
  sf_kconf *k = conf_for(b);
  sf_err err = {0};
  if (getenv("SF_TEST_KDEBUG")) { /* e.g. cgrp,fetch: the client's logs on stderr */
    assert_int_equal(sf_kconf_set(k, "debug", getenv("SF_TEST_KDEBUG"), &err), SF_OK);
    sf_kconf_set_logger(k, print_log);
  }
  assert_int_equal(sf_kconf_set(k, "group.id", group, &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "auto.offset.reset", "earliest", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "enable.auto.commit", "false", &err), SF_OK);
  /* The mock group waits session.timeout.ms - 1 s after the last member
   * leaves before it takes a new one (45 s with the default). */
  assert_int_equal(sf_kconf_set(k, "session.timeout.ms", "6000", &err), SF_OK);
  rd_kafka_conf_t *c = NULL;
  assert_int_equal(sf_kconf_build_err(k, &c, &err), SF_OK);
  sf_kconf_free(k);
  char es[512];
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, es, sizeof es);
  assert_non_null(rk);
  rd_kafka_poll_set_consumer(rk);
  return rk;
}

static void subscribe(rd_kafka_t *rk, const char *topic) {
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(l, topic, RD_KAFKA_PARTITION_UA);
  assert_int_equal(rd_kafka_subscribe(rk, l), 0);
  rd_kafka_topic_partition_list_destroy(l);
}

/* Consumes until n messages arrived or ms passed; returns the count and
 * stores the values' first bytes (as ints) in got[]. */
static int consume(rd_kafka_t *rk, int n, int ms, int *got) {
  int have = 0;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (have < n) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
    if (el >= ms) break;
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (!m) continue;
    if (!m->err && m->len >= sizeof(int)) {
      if (got) memcpy(&got[have], m->payload, sizeof(int));
      have++;
    }
    rd_kafka_message_destroy(m);
  }
  return have;
}

static void send_int(sf_publisher *p, const char *key, int v) {
  sf_err err = {0};
  assert_int_equal(sf_publisher_send(p, STAGED, key, strlen(key), (const uint8_t *)&v,
                                     sizeof v, 10000, &err),
                   SF_OK);
}

static void broker_starts_with_the_default_topics_on_loopback(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(3, &b, &err), SF_OK);
  assert_true(!strncmp(sf_broker_bootstraps(b), "127.0.0.1:", 10));
  rd_kafka_t *rk = consumer_for(b, "meta");
  const struct rd_kafka_metadata *md = NULL;
  assert_int_equal(rd_kafka_metadata(rk, 1, NULL, &md, 5000), 0);
  int seen = 0;
  for (int i = 0; i < md->topic_cnt; i++) {
    const char *n = md->topics[i].topic;
    if (!strcmp(n, STAGED) || !strcmp(n, "segforge.segments.committed") ||
        !strcmp(n, "segforge.shards.rejected")) {
      assert_int_equal(md->topics[i].partition_cnt, 3);
      seen++;
    }
  }
  assert_int_equal(seen, 3);
  rd_kafka_metadata_destroy(md);
  rd_kafka_destroy(rk);
  assert_int_equal(sf_broker_create_topic(b, STAGED, 1, &err), SF_EEXIST);
  assert_int_equal(sf_broker_create_topic(b, "bad name", 1, &err), SF_EINVAL);
  assert_int_equal(sf_broker_create_topic(b, "other", 2, &err), SF_OK);
  sf_broker_stop(b);
  assert_int_equal(sf_broker_start(0, &b, &err), SF_EINVAL);
  assert_null(b);
}

static void send_returns_after_delivery_with_partition_and_offset(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(4, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  int32_t part = -1;
  for (int i = 0; i < 5; i++) {
    sf_delivery dr;
    int v = i;
    assert_int_equal(sf_publisher_send_dr(p, STAGED, "job-1", 5, (const uint8_t *)&v,
                                          sizeof v, 10000, &dr, &err),
                     SF_OK);
    assert_int_equal(dr.err, 0);
    assert_false(dr.timed_out);
    if (i == 0) part = dr.partition;
    assert_int_equal(dr.partition, part); /* one key, one partition */
    assert_int_equal(dr.offset, i);
  }
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

static void idempotent_retries_after_broker_errors_write_each_message_once(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(1, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  send_int(p, "k", 100); /* producer id acquired, connection up */
  /* The next three Produce requests fail with retriable errors. */
  rd_kafka_mock_push_request_errors(sf_broker_mock(b), 0 /* Produce */, 3,
                                    RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
                                    RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
                                    RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND);
  for (int i = 0; i < 5; i++) send_int(p, "k", i);
  rd_kafka_t *c = consumer_for(b, "idem");
  subscribe(c, STAGED);
  int got[16];
  assert_int_equal(consume(c, 16, 4000, got), 6);
  assert_int_equal(got[0], 100);
  for (int i = 0; i < 5; i++) assert_int_equal(got[1 + i], i);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

static void a_group_member_resumes_from_the_offsets_committed_before_it(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(2, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  for (int i = 0; i < 4; i++) send_int(p, i % 2 ? "a" : "b", i);
  rd_kafka_t *c = consumer_for(b, "group-1");
  subscribe(c, STAGED);
  assert_int_equal(consume(c, 4, 8000, NULL), 4);
  assert_int_equal(rd_kafka_commit(c, NULL, 0 /* sync */), 0);
  rd_kafka_topic_partition_list_t *as = NULL;
  assert_int_equal(rd_kafka_assignment(c, &as), 0);
  assert_int_equal(rd_kafka_committed(c, as, 5000), 0);
  int64_t sum = 0;
  for (int i = 0; i < as->cnt; i++) /* a partition that got nothing has none */
    if (as->elems[i].offset >= 0) sum += as->elems[i].offset;
  assert_int_equal(sum, 4); /* committed offsets cover the 4 messages */
  rd_kafka_topic_partition_list_destroy(as);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);

  for (int i = 10; i < 13; i++) send_int(p, i % 2 ? "a" : "b", i);
  c = consumer_for(b, "group-1");
  subscribe(c, STAGED);
  int got[8];
  assert_int_equal(consume(c, 3, 15000, got), 3); /* only what came after the commit */
  for (int i = 0; i < 3; i++) assert_true(got[i] >= 10);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

static void paused_partitions_deliver_nothing_until_resumed(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(1, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  send_int(p, "x", 1);
  rd_kafka_t *c = consumer_for(b, "pause");
  subscribe(c, STAGED);
  assert_int_equal(consume(c, 1, 8000, NULL), 1);
  rd_kafka_topic_partition_list_t *as = NULL;
  assert_int_equal(rd_kafka_assignment(c, &as), 0);
  assert_int_equal(as->cnt, 1);
  assert_int_equal(rd_kafka_pause_partitions(c, as), 0);
  for (int i = 2; i < 5; i++) send_int(p, "x", i);
  assert_int_equal(consume(c, 3, 1500, NULL), 0);
  assert_int_equal(rd_kafka_resume_partitions(c, as), 0);
  int got[3];
  assert_int_equal(consume(c, 3, 5000, got), 3);
  assert_int_equal(got[0], 2);
  rd_kafka_topic_partition_list_destroy(as);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

static void a_partition_keeps_only_about_5_mib_of_the_newest_messages(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(1, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  size_t n = 100 << 10;
  uint8_t *v = calloc(1, n);
  assert_non_null(v);
  for (int i = 0; i < 64; i++) /* 6.4 MiB, one message per batch */
    assert_int_equal(sf_publisher_send(p, STAGED, "big", 3, v, n, 10000, &err), SF_OK);
  free(v);
  int64_t lo = -1, hi = -1;
  assert_int_equal(
      rd_kafka_query_watermark_offsets(sf_publisher_handle(p), STAGED, 0, &lo, &hi, 5000),
      0);
  assert_int_equal(hi, 64);
  assert_true(lo > 0);        /* the oldest were dropped ... */
  assert_true(hi - lo <= 52); /* ... down to <= 5 MiB of 100 KiB messages */
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

static void send_gives_up_at_its_timeout_when_the_broker_is_down(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(1, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  send_int(p, "k", 1);
  rd_kafka_mock_broker_set_down(sf_broker_mock(b), 1);
  int v = 2;
  sf_delivery dr;
  assert_int_equal(sf_publisher_send_dr(p, STAGED, "k", 1, (const uint8_t *)&v, sizeof v,
                                        500, &dr, &err),
                   SF_EIO);
  assert_true(dr.timed_out);
  assert_non_null(strstr(err.msg, "outcome unknown"));
  /* Back up: the abandoned message is still delivered, and its report
   * (arriving after the sender left) frees its slot. */
  rd_kafka_mock_broker_set_up(sf_broker_mock(b), 1);
  v = 3;
  assert_int_equal(sf_publisher_send_dr(p, STAGED, "k", 1, (const uint8_t *)&v, sizeof v,
                                        15000, &dr, &err),
                   SF_OK);
  assert_int_equal(dr.offset, 2); /* after 1 and the abandoned 2, in order */
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A producer that is connected (serve's, created at start-up; stage's,
 * created before the shard is written) asks for the metadata of a topic it
 * first meets in a send only at its next one-second topic scan: the first
 * SegmentsCommitted of serve took some 800 ms. The publisher fetches it at
 * once. The send comes 1.1 s after the producer was created (connected by
 * then, the next scan 0.9 s away); a send is a few milliseconds on
 * loopback, so 400 ms is a generous bound that the scan cannot meet. */
static void a_first_send_does_not_wait_for_the_topic_scan(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(2, &b, &err), SF_OK);
  for (int round = 0; round < 2; round++) {
    sf_publisher *p = publisher_for(b);
    struct timespec connected = {1, 100 * 1000000};
    nanosleep(&connected, NULL);
    int v = round;
    double t0 = mono_ms();
    assert_int_equal(
        sf_publisher_send(p, STAGED, "k", 1, (const uint8_t *)&v, sizeof v, 10000, &err),
        SF_OK);
    double first = mono_ms() - t0;
    t0 = mono_ms();
    send_int(p, "k", 7);
    double second = mono_ms() - t0;
    fprintf(stderr, "first send %.1f ms, second %.1f ms\n", first, second);
    assert_true(first < 400);
    assert_int_equal(sf_publisher_free(p, 1000), 0);
  }
  sf_broker_stop(b);
}

static void prepare_fetches_the_topics_and_names_one_that_is_missing(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(1, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  const sf_event_type all[] = {SF_EVENT_SHARD_STAGED, SF_EVENT_SEGMENTS_COMMITTED,
                               SF_EVENT_SHARD_REJECTED};
  assert_int_equal(sf_publisher_prepare(p, all, 3, 5000, &err), SF_OK);
  double t0 = mono_ms();
  send_int(p, "k", 1);
  assert_true(mono_ms() - t0 < 400);
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  /* A topic the cluster says does not exist (a real cluster without
   * auto-creation; the mock creates any topic asked for, unless told). */
  rd_kafka_mock_topic_set_error(sf_broker_mock(b), "no.such.topic",
                                RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART);
  sf_kconf *k = conf_for(b);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_TOPIC_COMMITTED, "no.such.topic", &err),
                   SF_OK);
  assert_int_equal(sf_publisher_new(k, SF_FRAMING_AUTO, &p, &err), SF_OK);
  sf_kconf_free(k);
  const sf_event_type committed[] = {SF_EVENT_SEGMENTS_COMMITTED};
  assert_int_equal(sf_publisher_prepare(p, committed, 1, 5000, &err), SF_ENOTFOUND);
  assert_non_null(strstr(err.msg, "topic no.such.topic: "));
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  /* Brokers that do not answer: SF_EIO once the time is up. */
  p = publisher_for(b);
  rd_kafka_mock_broker_set_down(sf_broker_mock(b), 1);
  t0 = mono_ms();
  assert_int_equal(sf_publisher_prepare(p, committed, 1, 500, &err), SF_EIO);
  assert_true(mono_ms() - t0 < 5000);
  assert_non_null(strstr(err.msg, "segforge.segments.committed"));
  sf_publisher_free(p, 0);
  sf_broker_stop(b);
}

static void a_publisher_needs_brokers_and_reports_bad_properties(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_publisher *p = NULL;
  sf_err err = {0};
  assert_int_equal(sf_publisher_new(k, SF_FRAMING_AUTO, &p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "bootstrap.servers"));
  assert_null(p);
  assert_int_equal(sf_kconf_set(k, "bootstrap.servers", "127.0.0.1:1", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "acks", "1", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "enable.idempotence", "true", &err), SF_OK);
  assert_int_equal(sf_publisher_new(k, SF_FRAMING_AUTO, &p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "acks"));
  sf_kconf_free(k);
}

typedef struct {
  sf_publisher *p;
  int id, ok;
} sender_arg;

static void *sender(void *a) {
  sender_arg *s = a;
  char key[16];
  snprintf(key, sizeof key, "job-%d", s->id);
  for (int i = 0; i < 40; i++) {
    int v = s->id * 1000 + i;
    sf_delivery dr;
    if (sf_publisher_send_dr(s->p, STAGED, key, strlen(key), (const uint8_t *)&v,
                             sizeof v, 10000, &dr, NULL) == SF_OK)
      s->ok++;
  }
  return NULL;
}

static void concurrent_senders_all_get_their_own_confirmation(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(4, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  pthread_t th[8];
  sender_arg args[8];
  for (int i = 0; i < 8; i++) {
    args[i] = (sender_arg){.p = p, .id = i};
    assert_int_equal(pthread_create(&th[i], NULL, sender, &args[i]), 0);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].ok, 40);
  }
  rd_kafka_t *c = consumer_for(b, "many");
  subscribe(c, STAGED);
  assert_int_equal(consume(c, 320, 10000, NULL), 320);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

/* The first message of topic, decoded as any event, with its key. */
static void read_event(const sf_broker *b, const char *topic, sf_event *ev, char *key,
                       size_t ksize) {
  rd_kafka_t *c = consumer_for(b, topic);
  subscribe(c, topic);
  rd_kafka_message_t *m = NULL;
  for (int i = 0; i < 150 && !m; i++) {
    m = rd_kafka_consumer_poll(c, 100);
    if (m && m->err) {
      rd_kafka_message_destroy(m);
      m = NULL;
    }
  }
  assert_non_null(m);
  snprintf(key, ksize, "%.*s", (int)m->key_len, m->key ? (const char *)m->key : "");
  sf_schema_set *set = NULL;
  sf_event_decoder *dec = NULL;
  sf_err err = {0};
  assert_int_equal(sf_schema_set_new(&set, &err), SF_OK);
  assert_int_equal(sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &dec, &err), SF_OK);
  assert_int_equal(sf_event_decode(dec, m->payload, m->len, ev, NULL, &err), SF_OK);
  sf_event_decoder_free(dec);
  sf_schema_set_free(set);
  rd_kafka_message_destroy(m);
  rd_kafka_consumer_close(c);
  rd_kafka_destroy(c);
}

static void typed_helpers_encode_key_and_route_each_event_type(void **state) {
  sf_broker *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_broker_start(2, &b, &err), SF_OK);
  sf_publisher *p = publisher_for(b);
  assert_string_equal(sf_publisher_topic(p, SF_EVENT_SEGMENTS_COMMITTED),
                      "segforge.segments.committed");

  roaring_bitmap_t *frags = roaring_bitmap_from_range(0, 10, 1);
  char *shard_ids[] = {"w0", "w1"};
  sf_seginfo seg = {.segment_id = "job-9-s0",
                    .path = "segments/job-9-s0.sfseg",
                    .bytes = 4096,
                    .num_rows = 1000,
                    .fragments = frags,
                    .shard_ids = shard_ids,
                    .num_shards = 2};
  sf_segments_committed sc = {.event_id = "job-9@3",
                              .dataset_uri = "/data/ds",
                              .index_name = "idx",
                              .staging_id = "job-9",
                              .catalog_version = 3,
                              .segments = &seg,
                              .num_segments = 1,
                              .total_rows = 1000,
                              .num_shards = 2,
                              .first_staged_at_ms = 1,
                              .committed_at_ms = 2};
  sf_delivery dr;
  assert_int_equal(sf_publish_committed(p, NULL, &sc, 10000, &dr, &err), SF_OK);
  assert_int_equal(dr.offset, 0);
  sf_event ev = {0};
  char key[64];
  read_event(b, "segforge.segments.committed", &ev, key, sizeof key);
  assert_int_equal(ev.type, SF_EVENT_SEGMENTS_COMMITTED);
  assert_true(sf_segments_committed_equal(&ev.u.committed, &sc));
  assert_string_equal(key, "job-9");
  sf_event_clear(&ev);

  uint8_t orig[] = {0xde, 0xad};
  sf_shard_rejected rj = {.reason = "DECODE_ERROR",
                          .message = "truncated datum",
                          .source_topic = "segforge.shards.staged",
                          .source_partition = 1,
                          .source_offset = 7,
                          .original_value = orig,
                          .original_value_len = sizeof orig,
                          .rejected_at_ms = 3};
  assert_int_equal(sf_publish_rejected(p, NULL, &rj, 10000, NULL, &err), SF_OK);
  read_event(b, "segforge.shards.rejected", &ev, key, sizeof key);
  assert_int_equal(ev.type, SF_EVENT_SHARD_REJECTED);
  assert_true(sf_shard_rejected_equal(&ev.u.rejected, &rj));
  assert_string_equal(key, ""); /* no staging id: an empty key */
  sf_event_clear(&ev);

  /* An event that breaks a field rule is refused, and nothing is sent. */
  sc.index_name = "a/b";
  assert_int_equal(sf_publish_committed(p, NULL, &sc, 10000, &dr, &err), SF_EDECODE);
  assert_non_null(strstr(err.msg, "index_name"));
  int64_t lo, hi, total = 0;
  for (int part = 0; part < 2; part++) {
    assert_int_equal(
        rd_kafka_query_watermark_offsets(
            sf_publisher_handle(p), "segforge.segments.committed", part, &lo, &hi, 5000),
        0);
    total += hi;
  }
  assert_int_equal(total, 1);
  sf_fragset_free(frags);
  assert_int_equal(sf_publisher_free(p, 1000), 0);
  sf_broker_stop(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(broker_starts_with_the_default_topics_on_loopback),
      cmocka_unit_test(send_returns_after_delivery_with_partition_and_offset),
      cmocka_unit_test(idempotent_retries_after_broker_errors_write_each_message_once),
      cmocka_unit_test(a_group_member_resumes_from_the_offsets_committed_before_it),
      cmocka_unit_test(paused_partitions_deliver_nothing_until_resumed),
      cmocka_unit_test(a_partition_keeps_only_about_5_mib_of_the_newest_messages),
      cmocka_unit_test(send_gives_up_at_its_timeout_when_the_broker_is_down),
      cmocka_unit_test(a_publisher_needs_brokers_and_reports_bad_properties),
      cmocka_unit_test(a_first_send_does_not_wait_for_the_topic_scan),
      cmocka_unit_test(prepare_fetches_the_topics_and_names_one_that_is_missing),
      cmocka_unit_test(concurrent_senders_all_get_their_own_confirmation),
      cmocka_unit_test(typed_helpers_encode_key_and_route_each_event_type),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
