/*
 * broker.c - the embedded broker on librdkafka's mock cluster.
 *
 * rd_kafka_mock_cluster_new needs an rd_kafka_t for its bookkeeping; it is
 * a producer that never produces and has no bootstrap servers, so it never
 * connects anywhere. Its log lines are dropped (libraries never print): the
 * mock's own logging goes through it, and "no bootstrap.servers" warnings
 * would be noise.
 */
#include "kafka/broker.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sf_broker {
  rd_kafka_t *rk;
  rd_kafka_mock_cluster_t *mc;
  unsigned nbrokers;
  char **topics; /* names created by us, to refuse a second creation */
  size_t ntopics, cap;
};

static const char *const default_topics[] = {
    "segforge.shards.staged", "segforge.segments.committed", "segforge.shards.rejected",
    "segforge.segments.compacted"};

static void drop_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {}

static int valid_topic(const char *t) {
  size_t n = strlen(t);
  if (n == 0 || n > 249 || !strcmp(t, ".") || !strcmp(t, "..")) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = t[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

sf_code sf_broker_create_topic(sf_broker *b, const char *topic, unsigned partitions,
                               sf_err *err) {
  if (!topic || !valid_topic(topic))
    return sf_err_set(
        err, SF_EINVAL,
        "'%s' is not a Kafka topic name (1..249 of letters, digits, '.', '_', "
        "'-')",
        topic ? topic : "");
  if (partitions < 1 || partitions > SF_BROKER_MAX_PARTITIONS)
    return sf_err_set(err, SF_EINVAL, "topic %s: %u partitions (1..%u)", topic,
                      partitions, SF_BROKER_MAX_PARTITIONS);
  for (size_t i = 0; i < b->ntopics; i++)
    if (!strcmp(b->topics[i], topic))
      return sf_err_set(err, SF_EEXIST, "topic %s already exists", topic);
  if (b->ntopics == b->cap) {
    size_t cap = b->cap ? 2 * b->cap : 8;
    char **t = realloc(b->topics, cap * sizeof *t);
    if (!t) return sf_err_set(err, SF_ENOMEM, "out of memory");
    b->topics = t;
    b->cap = cap;
  }
  char *name = strdup(topic);
  if (!name) return sf_err_set(err, SF_ENOMEM, "out of memory");
  /* Every replica on a distinct broker, as on a real cluster; one broker
   * means no replication. */
  rd_kafka_resp_err_t e =
      rd_kafka_mock_topic_create(b->mc, topic, (int)partitions, (int)b->nbrokers);
  if (e) {
    free(name);
    return sf_err_set(
        err, e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS ? SF_EEXIST : SF_EIO,
        "creating topic %s on the embedded broker: %s", topic, rd_kafka_err2str(e));
  }
  b->topics[b->ntopics++] = name;
  return SF_OK;
}

sf_code sf_broker_start_ex(const sf_broker_opts *o, sf_broker **out, sf_err *err) {
  *out = NULL;
  unsigned nb = o->nbrokers ? o->nbrokers : 1;
  unsigned np = o->partitions ? o->partitions : 1;
  if (nb > 16) return sf_err_set(err, SF_EINVAL, "%u brokers (1..16)", nb);
  if (np > SF_BROKER_MAX_PARTITIONS)
    return sf_err_set(err, SF_EINVAL, "%u partitions (1..%u)", np,
                      SF_BROKER_MAX_PARTITIONS);
  if (o->ntopics > SF_BROKER_MAX_TOPICS)
    return sf_err_set(err, SF_EINVAL, "%zu topics (at most %u)", o->ntopics,
                      SF_BROKER_MAX_TOPICS);
  sf_broker *b = calloc(1, sizeof *b);
  if (!b) return sf_err_set(err, SF_ENOMEM, "out of memory");
  b->nbrokers = nb;
  char es[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (!conf) {
    free(b);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  rd_kafka_conf_set_log_cb(conf, drop_log);
  if (rd_kafka_conf_set(conf, "client.id", "segforge-broker", es, sizeof es)) {
    rd_kafka_conf_destroy(conf);
    free(b);
    return sf_err_set(err, SF_EIO, "embedded broker: %s", es);
  }
  b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
  if (!b->rk) {
    rd_kafka_conf_destroy(conf);
    free(b);
    return sf_err_set(err, SF_EIO, "embedded broker: cannot create the client handle: %s",
                      es);
  }
  b->mc = rd_kafka_mock_cluster_new(b->rk, (int)nb);
  if (!b->mc) {
    sf_broker_stop(b);
    return sf_err_set(
        err, SF_EIO,
        "embedded broker: librdkafka could not start the mock cluster (no free "
        "loopback port?)");
  }
  const char *const *topics = o->topics ? o->topics : default_topics;
  size_t nt = o->topics ? o->ntopics : sizeof default_topics / sizeof default_topics[0];
  for (size_t i = 0; i < nt; i++) {
    sf_code rc = sf_broker_create_topic(b, topics[i], np, err);
    if (rc) {
      sf_broker_stop(b);
      return rc;
    }
  }
  *out = b;
  return SF_OK;
}

sf_code sf_broker_start(unsigned partitions, sf_broker **out, sf_err *err) {
  if (partitions < 1 || partitions > SF_BROKER_MAX_PARTITIONS) {
    *out = NULL;
    return sf_err_set(err, SF_EINVAL, "%u partitions (1..%u)", partitions,
                      SF_BROKER_MAX_PARTITIONS);
  }
  sf_broker_opts o = {.nbrokers = 1, .partitions = partitions};
  return sf_broker_start_ex(&o, out, err);
}

const char *sf_broker_bootstraps(const sf_broker *b) {
  return rd_kafka_mock_cluster_bootstraps(b->mc);
}

rd_kafka_mock_cluster_t *sf_broker_mock(sf_broker *b) {
  return b->mc;
}

void sf_broker_stop(sf_broker *b) {
  if (!b) return;
  if (b->mc) rd_kafka_mock_cluster_destroy(b->mc);
  if (b->rk) rd_kafka_destroy(b->rk);
  for (size_t i = 0; i < b->ntopics; i++) free(b->topics[i]);
  free(b->topics);
  free(b);
}
