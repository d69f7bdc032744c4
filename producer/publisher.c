/*
 * publisher.c - a blocking, thread-safe publish on one librdkafka producer.
 *
 * The delivery wait (see publisher.h) is a leader/follower scheme: no
 * thread of our own, and the delivery callback can only run inside
 * rd_kafka_poll, which one sender at a time calls with the mutex released.
 * Each message's opaque is a heap slot rather than a stack variable because
 * a sender may give up (timeout) before its report arrives; from then on
 * the slot belongs to the callback, which frees it. Abandoned slots are
 * also kept on a list so that sf_publisher_free can release those whose
 * reports never come (librdkafka does not report messages it drops in
 * rd_kafka_destroy).
 */
#include "producer/publisher.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/clock.h"
#include "schemas/event_encode.h"

#define DEFAULT_TIMEOUT_MS 30000
#define POLL_SLICE_MS 100

typedef struct slot {
  bool done, abandoned;
  sf_delivery dr;
  struct slot *prev, *next; /* on the abandoned list while abandoned */
} slot;

struct sf_publisher {
  rd_kafka_t *rk;
  pthread_mutex_t mu; /* guards polling, the slots' fields and last_error */
  pthread_cond_t cv;  /* a report arrived, or the poller role is free */
  bool polling;
  slot *abandoned;
  char last_error[256]; /* the client's last global error, for timeouts */

  pthread_mutex_t enc_mu; /* the encoder is not thread-safe */
  sf_schema_set *set;
  sf_event_encoder *enc;

  char *topic[SF_EVENT_TYPE_COUNT];
  /* A handle on each topic from the start: a topic the producer first meets
   * in a send has no metadata, and librdkafka asks for it only at its next
   * one-second topic scan, which the send then waits for. */
  rd_kafka_topic_t *rkt[SF_EVENT_TYPE_COUNT];
  atomic_bool ready[SF_EVENT_TYPE_COUNT]; /* its metadata was fetched */
  int timeout_ms;
};

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  sf_publisher *p = opaque;
  slot *s = m->_private;
  if (!s) return;
  pthread_mutex_lock(&p->mu);
  if (s->abandoned) {
    if (s->prev)
      s->prev->next = s->next;
    else
      p->abandoned = s->next;
    if (s->next) s->next->prev = s->prev;
    free(s);
  } else {
    s->dr.err = m->err;
    s->dr.partition = m->partition;
    s->dr.offset = m->err ? -1 : m->offset;
    s->done = true;
    pthread_cond_broadcast(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
}

/* Global client errors (brokers down, authentication, fatal idempotence
 * errors) carry no message; they are kept so that a sender that times out
 * can say why. */
static void error_cb(rd_kafka_t *rk, int e, const char *reason, void *opaque) {
  sf_publisher *p = opaque;
  pthread_mutex_lock(&p->mu);
  snprintf(p->last_error, sizeof p->last_error, "%s: %s",
           rd_kafka_err2name((rd_kafka_resp_err_t)e), reason);
  pthread_mutex_unlock(&p->mu);
}

static sf_code set_default(sf_kconf *k, const char *key, const char *val, sf_err *err) {
  if (sf_kconf_has(k, key)) return SF_OK;
  return sf_kconf_set(k, key, val, err);
}

static sf_code apply_schema_ids(sf_schema_set *set, const char *ids, sf_err *err) {
  char *copy = strdup(ids), *save = NULL;
  if (!copy) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_code rc = SF_OK;
  for (char *it = strtok_r(copy, ",", &save); it && !rc; it = strtok_r(NULL, ",", &save))
    rc = sf_schema_set_parse_id(set, it, err);
  free(copy);
  if (rc) sf_err_prefix(err, "%s", SF_KCONF_SCHEMA_IDS);
  return rc;
}

/* The client configuration with the publisher's defaults (see publisher.h)
 * on a copy of k, so the caller's configuration is left as it was. */
static sf_code producer_conf(const sf_kconf *k, sf_publisher *p, rd_kafka_conf_t **out,
                             sf_err *err) {
  sf_kconf *c = sf_kconf_dup(k);
  if (!c) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_code rc = SF_OK;
  if (!sf_kconf_has(c, "bootstrap.servers") && !sf_kconf_has(c, "metadata.broker.list")) {
    rc = sf_err_set(err, SF_EINVAL,
                    "no brokers: set bootstrap.servers (--brokers HOST:PORT or -X "
                    "bootstrap.servers=...)");
    goto out;
  }
  const char *acks = sf_kconf_get(c, "acks");
  if (!acks) acks = sf_kconf_get(c, "request.required.acks");
  bool acks_all = !acks || !strcmp(acks, "all") || !strcmp(acks, "-1");
  /* Idempotence needs acks=all: a user who lowered acks without a word on
   * idempotence gets what they asked for, not a startup error. */
  if (acks_all && (rc = set_default(c, "enable.idempotence", "true", err))) goto out;
  if (!acks && (rc = set_default(c, "acks", "all", err))) goto out;
  if ((rc = set_default(c, "partitioner", "murmur2_random", err))) goto out;
  if ((rc = sf_kconf_build_err(c, out, err))) goto out;
  rd_kafka_conf_set_dr_msg_cb(*out, dr_cb);
  rd_kafka_conf_set_error_cb(*out, error_cb);
  rd_kafka_conf_set_opaque(*out, p);
out:
  sf_kconf_free(c);
  return rc;
}

sf_code sf_publisher_new(const sf_kconf *k, sf_framing framing, sf_publisher **out,
                         sf_err *err) {
  *out = NULL;
  sf_publisher *p = calloc(1, sizeof *p);
  if (!p) return sf_err_set(err, SF_ENOMEM, "out of memory");
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_mutex_init(&p->enc_mu, NULL);
  p->timeout_ms = sf_kconf_get_ms(k, SF_KCONF_DELIVERY_TIMEOUT_MS, DEFAULT_TIMEOUT_MS);

  static const char *const keys[SF_EVENT_TYPE_COUNT] = {
      SF_KCONF_TOPIC_STAGED, SF_KCONF_TOPIC_COMMITTED, SF_KCONF_TOPIC_REJECTED,
      SF_KCONF_TOPIC_COMPACTED};
  static const char *const defs[SF_EVENT_TYPE_COUNT] = {
      SF_TOPIC_STAGED_DEFAULT, SF_TOPIC_COMMITTED_DEFAULT, SF_TOPIC_REJECTED_DEFAULT,
      SF_TOPIC_COMPACTED_DEFAULT};
  sf_code rc;
  for (int t = 0; t < SF_EVENT_TYPE_COUNT; t++)
    if (!(p->topic[t] = strdup(sf_kconf_get_or(k, keys[t], defs[t])))) {
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
      goto fail;
    }

  /* An explicit framing argument wins; AUTO defers to segforge.framing. */
  const char *fr = sf_kconf_get(k, SF_KCONF_FRAMING);
  if (framing == SF_FRAMING_AUTO && fr && (rc = sf_framing_parse(fr, &framing, err)))
    goto fail;
  if ((rc = sf_schema_set_new(&p->set, err))) goto fail;
  const char *ids = sf_kconf_get(k, SF_KCONF_SCHEMA_IDS);
  if (ids && (rc = apply_schema_ids(p->set, ids, err))) goto fail;
  if ((rc = sf_event_encoder_new(p->set, framing, 0, &p->enc, err))) goto fail;

  rd_kafka_conf_t *conf = NULL;
  if ((rc = producer_conf(k, p, &conf, err))) goto fail;
  char es[512];
  p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, es, sizeof es);
  if (!p->rk) {
    rd_kafka_conf_destroy(conf);
    rc = sf_err_set(err, SF_EINVAL, "cannot create the Kafka producer: %s", es);
    goto fail;
  }
  for (int t = 0; t < SF_EVENT_TYPE_COUNT; t++)
    if (!(p->rkt[t] = rd_kafka_topic_new(p->rk, p->topic[t], NULL))) {
      rc = sf_err_set(err, SF_EINVAL, "topic '%s': %s", p->topic[t],
                      rd_kafka_err2str(rd_kafka_last_error()));
      goto fail;
    }
  *out = p;
  return SF_OK;
fail:
  sf_publisher_free(p, 0);
  return rc;
}

int sf_publisher_free(sf_publisher *p, int timeout_ms) {
  if (!p) return 0;
  int left = 0;
  if (p->rk) {
    /* flush serves delivery reports (freeing abandoned slots) while it
     * waits; purge then turns what is left into reports we serve, so
     * nothing is retried into a destroyed handle. */
    rd_kafka_flush(p->rk, timeout_ms > 0 ? timeout_ms : 0);
    left = rd_kafka_outq_len(p->rk);
    if (left) {
      rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
      rd_kafka_flush(p->rk, 100);
    }
    for (int t = 0; t < SF_EVENT_TYPE_COUNT; t++)
      if (p->rkt[t]) rd_kafka_topic_destroy(p->rkt[t]);
    rd_kafka_destroy(p->rk);
  }
  for (slot *s = p->abandoned, *n; s; s = n) {
    n = s->next;
    free(s);
  }
  sf_event_encoder_free(p->enc);
  sf_schema_set_free(p->set);
  for (int t = 0; t < SF_EVENT_TYPE_COUNT; t++) free(p->topic[t]);
  pthread_mutex_destroy(&p->enc_mu);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p);
  return left;
}

/* The metadata of one topic: SF_OK once it has partitions with leaders. A
 * topic just auto-created (by this very request) has no leader for a
 * moment: asked again until the deadline. */
static sf_code prepare_topic(sf_publisher *p, int t, int64_t deadline, sf_err *err) {
  for (;;) {
    int64_t left = deadline - sf_clock_mono_ms();
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t e = left > 0
                                ? rd_kafka_metadata(p->rk, 0, p->rkt[t], &md, (int)left)
                                : RD_KAFKA_RESP_ERR__TIMED_OUT;
    if (e)
      return sf_err_set(err, SF_EIO, "cannot fetch the metadata of topic %s: %s (%s)",
                        p->topic[t], rd_kafka_err2str(e), rd_kafka_err2name(e));
    rd_kafka_resp_err_t te = RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    int ready = 0;
    if (md->topic_cnt == 1) {
      const rd_kafka_metadata_topic_t *mt = &md->topics[0];
      te = mt->err;
      ready = !te && mt->partition_cnt > 0;
      for (int i = 0; ready && i < mt->partition_cnt; i++)
        ready = mt->partitions[i].leader >= 0;
    }
    rd_kafka_metadata_destroy(md);
    if (ready) {
      atomic_store(&p->ready[t], true);
      return SF_OK;
    }
    if (te == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        te == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
      return sf_err_set(err, SF_ENOTFOUND, "topic %s: %s (%s)", p->topic[t],
                        rd_kafka_err2str(te), rd_kafka_err2name(te));
    if (deadline - sf_clock_mono_ms() <= 0)
      return sf_err_set(err, SF_EIO, "topic %s has no leader yet: %s (%s)", p->topic[t],
                        rd_kafka_err2str(te), rd_kafka_err2name(te));
    struct timespec pause = {0, 20 * 1000000};
    nanosleep(&pause, NULL);
  }
}

sf_code sf_publisher_prepare(sf_publisher *p, const sf_event_type *types, size_t n,
                             int timeout_ms, sf_err *err) {
  int64_t deadline = sf_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : p->timeout_ms);
  for (size_t i = 0; i < n; i++) {
    if ((unsigned)types[i] >= SF_EVENT_TYPE_COUNT)
      return sf_err_set(err, SF_EINVAL, "unknown event type %d", (int)types[i]);
    sf_code rc = prepare_topic(p, (int)types[i], deadline, err);
    if (rc) return rc;
  }
  return SF_OK;
}

/* One step of a wait, with p->mu held: become the poller and poll for up
 * to ms if nobody is polling, else wait up to ms for a broadcast. */
static void wait_step(sf_publisher *p, int64_t ms) {
  if (!p->polling) {
    p->polling = true;
    pthread_mutex_unlock(&p->mu);
    rd_kafka_poll(p->rk, (int)ms);
    pthread_mutex_lock(&p->mu);
    p->polling = false;
    pthread_cond_broadcast(&p->cv); /* hand the role on */
  } else {
    struct timespec ts = sf_clock_deadline(ms);
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
  }
}

/* Waits until s is done or the deadline passes, then hands s to the
 * callback. Called and returns with p->mu held. */
static void wait_slot(sf_publisher *p, slot *s, int64_t deadline) {
  while (!s->done) {
    int64_t left = deadline - sf_clock_mono_ms();
    if (left <= 0) {
      s->abandoned = true;
      s->next = p->abandoned;
      if (s->next) s->next->prev = s;
      p->abandoned = s;
      return;
    }
    wait_step(p, left < POLL_SLICE_MS ? left : POLL_SLICE_MS);
  }
}

/* Lets delivery reports drain when the local queue is full. */
static void drain_some(sf_publisher *p) {
  pthread_mutex_lock(&p->mu);
  wait_step(p, 10);
  pthread_mutex_unlock(&p->mu);
}

static sf_code delivery_error(sf_publisher *p, const char *topic, rd_kafka_resp_err_t e,
                              sf_err *err) {
  if (e == RD_KAFKA_RESP_ERR__FATAL) {
    char why[256];
    rd_kafka_resp_err_t fe = rd_kafka_fatal_error(p->rk, why, sizeof why);
    return sf_err_set(
        err, SF_EIO,
        "publishing to %s: the producer hit a fatal error (%s: %s) and must be "
        "recreated",
        topic, rd_kafka_err2name(fe), why);
  }
  /* Too large for the broker (its message.max.bytes, or the topic's
   * max.message.bytes): as final as too large for the client, so the same
   * code as the local refusal, which callers do not retry. */
  if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
    return sf_err_set(
        err, SF_EINVAL,
        "publishing to %s: the broker refused the message as larger than its "
        "message.max.bytes (or the topic's max.message.bytes)",
        topic);
  if (e == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ||
      e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
      e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
    char last[256];
    pthread_mutex_lock(&p->mu);
    snprintf(last, sizeof last, "%s", p->last_error);
    pthread_mutex_unlock(&p->mu);
    return sf_err_set(err, SF_EIO, "publishing to %s: %s (%s)%s%s", topic,
                      rd_kafka_err2str(e), rd_kafka_err2name(e),
                      *last ? "; last client error: " : "", last);
  }
  return sf_err_set(err, SF_EIO, "publishing to %s: %s (%s)", topic, rd_kafka_err2str(e),
                    rd_kafka_err2name(e));
}

sf_code sf_publisher_send_dr(sf_publisher *p, const char *topic, const void *key,
                             size_t key_len, const uint8_t *value, size_t len,
                             int timeout_ms, sf_delivery *dr, sf_err *err) {
  sf_publish_extra x = {.key = key, .key_len = key_len, .has_key = key != NULL};
  return sf_publisher_send_ex(p, topic, value, len, &x, timeout_ms, dr, err);
}

sf_code sf_publisher_send_ex(sf_publisher *p, const char *topic, const uint8_t *value,
                             size_t len, const sf_publish_extra *x, int timeout_ms,
                             sf_delivery *dr, sf_err *err) {
  const void *key = x && x->has_key ? x->key : NULL;
  size_t key_len = key ? x->key_len : 0;
  sf_delivery none = {.err = RD_KAFKA_RESP_ERR_NO_ERROR, .partition = -1, .offset = -1};
  if (dr) *dr = none;
  if (!topic || !*topic) return sf_err_set(err, SF_EINVAL, "publish: empty topic name");
  if (timeout_ms <= 0) timeout_ms = p->timeout_ms;
  int64_t deadline = sf_clock_mono_ms() + timeout_ms;
  /* A first send to one of the publisher's topics fetches its metadata
   * itself (one round trip) rather than wait for librdkafka's topic scan;
   * a failure here is reported by the send below, within the same deadline. */
  for (int t = 0; t < SF_EVENT_TYPE_COUNT; t++)
    if (!atomic_load(&p->ready[t]) && !strcmp(topic, p->topic[t])) {
      sf_err ignored = {0};
      prepare_topic(p, t, deadline, &ignored);
      break;
    }
  slot *s = calloc(1, sizeof *s);
  if (!s) return sf_err_set(err, SF_ENOMEM, "out of memory");
  s->dr = none;
  for (;;) {
    /* producev takes the headers over only when it succeeds. */
    rd_kafka_headers_t *h = x && x->headers ? rd_kafka_headers_copy(x->headers) : NULL;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        p->rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key ? key_len : 0),
        RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_TIMESTAMP(x && x->timestamp_ms > 0 ? x->timestamp_ms : 0),
        RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(s), RD_KAFKA_V_END);
    if (!e) break;
    if (h) rd_kafka_headers_destroy(h);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL && sf_clock_mono_ms() < deadline) {
      drain_some(p);
      continue;
    }
    free(s);
    if (dr) dr->err = e;
    if (e == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE)
      return sf_err_set(err, SF_EINVAL,
                        "publishing to %s: a message of %zu bytes is larger than the "
                        "producer's message.max.bytes",
                        topic, len);
    if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
      if (dr) dr->timed_out = true;
      return sf_err_set(err, SF_EIO,
                        "publishing to %s: the producer queue stayed full for %d ms",
                        topic, timeout_ms);
    }
    return delivery_error(p, topic, e, err);
  }
  pthread_mutex_lock(&p->mu);
  wait_slot(p, s, deadline);
  bool done = s->done;
  sf_delivery got = s->dr;
  char last[256];
  snprintf(last, sizeof last, "%s", p->last_error);
  pthread_mutex_unlock(&p->mu);
  if (!done) {
    /* s now belongs to the callback (or to sf_publisher_free). */
    if (dr) dr->timed_out = true;
    return sf_err_set(
        err, SF_EIO,
        "publishing to %s: no delivery report within %d ms; outcome unknown, "
        "the message may still be delivered%s%s",
        topic, timeout_ms, *last ? " (last client error: " : "", *last ? last : "");
  }
  free(s);
  if (dr) *dr = got;
  if (got.err) return delivery_error(p, topic, got.err, err);
  return SF_OK;
}

sf_code sf_publisher_send(sf_publisher *p, const char *topic, const void *key,
                          size_t key_len, const uint8_t *value, size_t len,
                          int timeout_ms, sf_err *err) {
  return sf_publisher_send_dr(p, topic, key, key_len, value, len, timeout_ms, NULL, err);
}

bool sf_publisher_fatal(sf_publisher *p, sf_err *err) {
  char why[256];
  rd_kafka_resp_err_t fe = rd_kafka_fatal_error(p->rk, why, sizeof why);
  if (!fe) return false;
  sf_err_set(err, SF_EIO,
             "the Kafka producer hit a fatal error (%s: %s); it cannot send again and "
             "must be recreated",
             rd_kafka_err2name(fe), why);
  return true;
}

const char *sf_publisher_topic(const sf_publisher *p, sf_event_type type) {
  return (unsigned)type < SF_EVENT_TYPE_COUNT ? p->topic[type] : NULL;
}

void sf_publisher_inject_fatal(sf_publisher *p, const char *why) {
  rd_kafka_test_fatal_error(p->rk, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, why);
}

rd_kafka_t *sf_publisher_handle(sf_publisher *p) {
  return p->rk;
}

/* Encodes ev under the encoder lock, then sends with no lock held. */
static sf_code publish_event_ex(sf_publisher *p, const char *topic, const sf_event *ev,
                                const char *key, const sf_publish_extra *extra,
                                int timeout_ms, sf_delivery *dr, sf_err *err) {
  if (dr) *dr = (sf_delivery){.partition = -1, .offset = -1};
  uint8_t *buf = NULL;
  size_t len = 0;
  pthread_mutex_lock(&p->enc_mu);
  sf_code rc = sf_event_encode(p->enc, ev, &buf, &len, err);
  pthread_mutex_unlock(&p->enc_mu);
  if (rc) return rc;
  if (!topic) topic = p->topic[ev->type];
  sf_publish_extra x = {
      .key = key, .key_len = key ? strlen(key) : 0, .has_key = key != NULL};
  if (extra) {
    x.timestamp_ms = extra->timestamp_ms;
    x.headers = extra->headers;
    if (extra->has_key) {
      x.key = extra->key;
      x.key_len = extra->key_len;
    }
  }
  rc = sf_publisher_send_ex(p, topic, buf, len, &x, timeout_ms, dr, err);
  free(buf);
  return rc;
}

static sf_code publish_event(sf_publisher *p, const char *topic, const sf_event *ev,
                             const char *key, int timeout_ms, sf_delivery *dr,
                             sf_err *err) {
  return publish_event_ex(p, topic, ev, key, NULL, timeout_ms, dr, err);
}

sf_code sf_publish_committed_ex(sf_publisher *p, const char *topic,
                                const sf_segments_committed *ev,
                                const sf_publish_extra *x, int timeout_ms,
                                sf_delivery *dr, sf_err *err) {
  sf_event e = {.type = SF_EVENT_SEGMENTS_COMMITTED, .u.committed = *ev};
  return publish_event_ex(p, topic, &e, ev->staging_id, x, timeout_ms, dr, err);
}

sf_code sf_publish_rejected_ex(sf_publisher *p, const char *topic,
                               const sf_shard_rejected *ev, const sf_publish_extra *x,
                               int timeout_ms, sf_delivery *dr, sf_err *err) {
  sf_event e = {.type = SF_EVENT_SHARD_REJECTED, .u.rejected = *ev};
  return publish_event_ex(p, topic, &e, ev->staging_id ? ev->staging_id : "", x,
                          timeout_ms, dr, err);
}

/* sf_event is a tagged union of the structs; the typed helpers wrap their
 * event in one by a shallow copy (nothing is freed through it). */
sf_code sf_publish_committed(sf_publisher *p, const char *topic,
                             const sf_segments_committed *ev, int timeout_ms,
                             sf_delivery *dr, sf_err *err) {
  sf_event e = {.type = SF_EVENT_SEGMENTS_COMMITTED, .u.committed = *ev};
  return publish_event(p, topic, &e, ev->staging_id, timeout_ms, dr, err);
}

sf_code sf_publish_rejected(sf_publisher *p, const char *topic,
                            const sf_shard_rejected *ev, int timeout_ms, sf_delivery *dr,
                            sf_err *err) {
  sf_event e = {.type = SF_EVENT_SHARD_REJECTED, .u.rejected = *ev};
  return publish_event(p, topic, &e, ev->staging_id ? ev->staging_id : "", timeout_ms, dr,
                       err);
}

sf_code sf_publish_compacted(sf_publisher *p, const char *topic,
                             const sf_segments_compacted *ev, const char *key,
                             int timeout_ms, sf_delivery *dr, sf_err *err) {
  sf_event e = {.type = SF_EVENT_SEGMENTS_COMPACTED, .u.compacted = *ev};
  return publish_event(p, topic, &e, key ? key : ev->index_name, timeout_ms, dr, err);
}

sf_code sf_publish_staged(sf_publisher *p, const char *topic, const sf_shard_staged *ev,
                          int timeout_ms, sf_delivery *dr, sf_err *err) {
  sf_event e = {.type = SF_EVENT_SHARD_STAGED, .u.staged = *ev};
  return publish_event(p, topic, &e, ev->staging_id, timeout_ms, dr, err);
}
