/*
 * publisher.h - one Kafka producer for everything segforge writes:
 * SegmentsCommitted, dead letters (ShardRejected), and the ShardStaged
 * announcements of workers and `segforge stage --publish`.
 *
 * Every send BLOCKS until librdkafka's delivery report for that message
 * arrives: the broker acknowledged it (with acks=all, every in-sync replica
 * has it), librdkafka gave up on it, or the caller's timeout ran out. That is
 * what the stream processor needs: it moves its consumer offsets only after
 * the events that depend on them are confirmed.
 *
 * Defaults, each applied only when the configuration does not set the key:
 *  - enable.idempotence=true: librdkafka's retries cannot duplicate or
 *    reorder a message within a partition;
 *  - acks=all (idempotence requires it; setting acks to anything else
 *    without setting enable.idempotence turns idempotence off);
 *  - partitioner=murmur2_random: the partition of a key is the one Java
 *    clients (Kafka's default partitioner) choose, so a job's events share a
 *    partition whichever language its workers are written in.
 *  - the delivery wait defaults to segforge.delivery.timeout.ms (30 s).
 *
 * Keys: the typed helpers key every event by its staging_id (UTF-8), as the
 * design requires; a rejection without a staging_id has an empty key.
 *
 * Threading and the delivery wait (no thread of its own): any number of
 * threads may send at once. Each send allocates a small delivery slot, the
 * message's opaque. A sender waits on the publisher's condition variable;
 * whoever finds nobody polling becomes the poller and calls rd_kafka_poll()
 * with the mutex released, which runs the delivery callback for any
 * sender's message; the callback fills that sender's slot and broadcasts.
 * When its own report has arrived the poller hands the role on. A sender
 * whose timeout runs out leaves its slot to the callback to free, so a late
 * report never touches freed memory. The event encoder (not thread-safe) is
 * used under a second mutex. Apart from librdkafka's own internal threads
 * (started by rd_kafka_new inside sf_publisher_new, joined by
 * sf_publisher_free), no thread is created.
 */
#ifndef SF_PUBLISHER_H
#define SF_PUBLISHER_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "kafka/kconf.h"
#include "schemas/event.h"
#include "schemas/schema.h"

typedef struct sf_publisher sf_publisher;

/* Where a message went, or why it did not. */
typedef struct sf_delivery {
  rd_kafka_resp_err_t err; /* RD_KAFKA_RESP_ERR_NO_ERROR when delivered */
  bool timed_out;          /* no report within the timeout: outcome unknown */
  int32_t partition;       /* -1 if unknown */
  int64_t offset;          /* -1 if unknown */
} sf_delivery;

/* Creates the producer from k (copied; librdkafka's keys go to the client,
 * segforge.schema.ids maps Confluent ids) with the defaults above; framing
 * is how events are encoded (SF_FRAMING_AUTO: Confluent for a type whose
 * schema id is configured, else single-object). Needs bootstrap.servers.
 * *out is freed by sf_publisher_free. Errors: SF_EINVAL (configuration, with
 * librdkafka's message and the key), SF_ENOMEM. */
sf_code sf_publisher_new(const sf_kconf *k, sf_framing framing, sf_publisher **out,
                         sf_err *err);

/* Waits up to timeout_ms for messages still in flight (sends that timed
 * out), then purges what is left and frees p; accepts NULL. Returns the
 * number of messages that were not delivered (0 = everything confirmed). */
int sf_publisher_free(sf_publisher *p, int timeout_ms);

/* Sends one message and waits for its delivery report. key may be NULL
 * (no key; key_len 0); key and value are copied before the call returns.
 * timeout_ms <= 0 uses the configured default. Returns SF_OK only when the
 * broker confirmed the message. Errors:
 *  - SF_EINVAL: empty topic name, or a message larger than the client's
 *    message.max.bytes, or one the broker refused as too large (never
 *    worth a retry);
 *  - SF_EIO: librdkafka reported the delivery failed (its error named), or
 *    no report came within the timeout ("outcome unknown": the message may
 *    still be delivered; resending is safe for consumers that de-duplicate
 *    on event_id, as the design requires), or the producer hit a fatal
 *    error (e.g. an idempotence sequence gap) and must be recreated. */
sf_code sf_publisher_send(sf_publisher *p, const char *topic, const void *key,
                          size_t key_len, const uint8_t *value, size_t len,
                          int timeout_ms, sf_err *err);

/* sf_publisher_send that also reports where the message went (or the
 * librdkafka error) in *dr (may be NULL). */
sf_code sf_publisher_send_dr(sf_publisher *p, const char *topic, const void *key,
                             size_t key_len, const uint8_t *value, size_t len,
                             int timeout_ms, sf_delivery *dr, sf_err *err);

/* What a message carries beside its value, for sends that must keep what
 * another message had (a dead letter keeps its event's key, headers and
 * timestamp) or carry context (a trace's traceparent header). */
typedef struct sf_publish_extra {
  int has_key;     /* 0: the default key (none, or the typed helper's) */
  const void *key; /* has_key: this key (NULL: no key) */
  size_t key_len;
  int64_t timestamp_ms;              /* 0: now (the producer's time) */
  const rd_kafka_headers_t *headers; /* copied; NULL: none */
} sf_publish_extra;

/* sf_publisher_send_dr with the extras (x may be NULL). */
sf_code sf_publisher_send_ex(sf_publisher *p, const char *topic, const uint8_t *value,
                             size_t len, const sf_publish_extra *x, int timeout_ms,
                             sf_delivery *dr, sf_err *err);

/* Typed helpers: validate and encode the event (schemas/event_encode.h,
 * in the publisher's framing), key it, send it, and wait. topic NULL uses
 * the configured topic for the type (segforge.topic.*, else the default).
 * dr may be NULL. An event that breaks a field rule gives SF_EDECODE naming
 * the field, and nothing is sent. */
sf_code sf_publish_committed(sf_publisher *p, const char *topic,
                             const sf_segments_committed *ev, int timeout_ms,
                             sf_delivery *dr, sf_err *err);
sf_code sf_publish_rejected(sf_publisher *p, const char *topic,
                            const sf_shard_rejected *ev, int timeout_ms, sf_delivery *dr,
                            sf_err *err);
/* The same with the extras (x may be NULL: as above). */
sf_code sf_publish_committed_ex(sf_publisher *p, const char *topic,
                                const sf_segments_committed *ev,
                                const sf_publish_extra *x, int timeout_ms,
                                sf_delivery *dr, sf_err *err);
sf_code sf_publish_rejected_ex(sf_publisher *p, const char *topic,
                               const sf_shard_rejected *ev, const sf_publish_extra *x,
                               int timeout_ms, sf_delivery *dr, sf_err *err);
/* A compaction's announcement, keyed by `key` (NULL: the index name); serve
 * keys it by the index's ownership key (docs/serve.md, "Compaction"), so that
 * the announcements of one index stay in order on one partition. */
sf_code sf_publish_compacted(sf_publisher *p, const char *topic,
                             const sf_segments_compacted *ev, const char *key,
                             int timeout_ms, sf_delivery *dr, sf_err *err);
sf_code sf_publish_staged(sf_publisher *p, const char *topic, const sf_shard_staged *ev,
                          int timeout_ms, sf_delivery *dr, sf_err *err);

/* Makes the producer ready to send the given types of event at once: asks
 * the brokers for the metadata of their topics (which auto-creates a topic
 * where the cluster allows it) and waits, up to timeout_ms in all (<= 0:
 * the delivery timeout), until each has partitions with leaders. Without it
 * the first send to a topic waits for librdkafka's next periodic topic scan
 * (up to a second) before it even asks for the topic's metadata. Only a
 * latency matter: sends work without it. Errors: SF_ENOTFOUND naming a topic
 * that does not exist (and is not auto-created), SF_EIO when the brokers do
 * not answer in time. */
sf_code sf_publisher_prepare(sf_publisher *p, const sf_event_type *types, size_t n,
                             int timeout_ms, sf_err *err);

/* Whether the producer hit a fatal error (e.g. an idempotence sequence
 * gap, librdkafka's RD_KAFKA_RESP_ERR__FATAL): no send can succeed on it
 * again, so retrying is pointless; the owner must recreate the producer or
 * exit so that a supervisor restarts it. When true, err (may be NULL) gets
 * SF_EIO with librdkafka's reason. */
bool sf_publisher_fatal(sf_publisher *p, sf_err *err);

/* The topic a type goes to by default (segforge.topic.* or the default
 * name); owned by p. */
const char *sf_publisher_topic(const sf_publisher *p, sf_event_type type);

/* For fault tests only (the processor calls it when the fault point
 * serve.producer_fatal is armed): makes the producer fail fatally, as an
 * idempotence sequence gap would; `why` is librdkafka's reason. */
void sf_publisher_inject_fatal(sf_publisher *p, const char *why);

/* The librdkafka handle, for its statistics and name only: do not poll it
 * or set callbacks on it. */
rd_kafka_t *sf_publisher_handle(sf_publisher *p);

#endif
