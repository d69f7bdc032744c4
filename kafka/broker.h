/*
 * broker.h - the embedded Kafka broker: librdkafka's mock cluster, for
 * development, tests and `segforge serve` without --brokers.
 *
 * The mock cluster speaks the Kafka protocol on loopback TCP ports, so any
 * client (segforge's, kcat, python3-kafka, Java) can use it through the
 * bootstrap address. It keeps everything in memory: nothing survives
 * sf_broker_stop, and each partition keeps only its newest messages (see
 * docs/broker.md for the limits and what it supports). Production uses a
 * real Kafka cluster.
 *
 * Threads: librdkafka runs the cluster in its own threads (one thread for
 * the mock cluster's event loop, plus the internal threads of the
 * rd_kafka_t handle that owns it). They start in sf_broker_start and are
 * joined by sf_broker_stop; no other thread is created.
 *
 * Consumer groups work (joins, rebalances, committed offsets), with the
 * mock's timing: the first member of an empty group waits 3 s, and after
 * the last member leaves, a new one waits session.timeout.ms - 1 s (44 s
 * with librdkafka's default), so consumers of the embedded broker should
 * set session.timeout.ms=6000 (the smallest a real broker allows).
 *
 * An sf_broker may be used from any thread; start and stop must not race
 * with other calls on the same broker.
 */
#ifndef SF_BROKER_H
#define SF_BROKER_H

#include <stddef.h>

#include "core/base/error.h"

typedef struct sf_broker sf_broker;

/* Upper bound on partitions of one topic, and on topics of start_ex. */
#define SF_BROKER_MAX_PARTITIONS 1024u
#define SF_BROKER_MAX_TOPICS 64u

typedef struct sf_broker_opts {
  unsigned nbrokers;         /* brokers in the cluster; 0 = 1 */
  unsigned partitions;       /* partitions of each topic created; 0 = 1 */
  const char *const *topics; /* topics to create; NULL = the three defaults */
  size_t ntopics;
} sf_broker_opts;

/* Starts a cluster on 127.0.0.1 (ephemeral ports) with the default topics
 * (segforge.shards.staged, segforge.segments.committed,
 * segforge.shards.rejected, segforge.segments.compacted), each with `partitions`
 * partitions (1..1024). *out is freed by sf_broker_stop. Errors: SF_EINVAL (bad count),
 * SF_EIO (librdkafka could not create the cluster or a topic, its message quoted). */
sf_code sf_broker_start(unsigned partitions, sf_broker **out, sf_err *err);

/* The same with options: other topics, more brokers. */
sf_code sf_broker_start_ex(const sf_broker_opts *o, sf_broker **out, sf_err *err);

/* Creates one more topic (SF_EEXIST if it exists; SF_EINVAL for a bad name
 * or count). Topics are also auto-created by the cluster when a client asks
 * for one it does not know, with librdkafka's default partition count. */
sf_code sf_broker_create_topic(sf_broker *b, const char *topic, unsigned partitions,
                               sf_err *err);

/* The bootstrap servers, "127.0.0.1:PORT[,127.0.0.1:PORT...]"; owned by b. */
const char *sf_broker_bootstraps(const sf_broker *b);

/* The mock cluster itself, for tests that inject faults with
 * rdkafka_mock.h (rd_kafka_mock_push_request_errors, broker_set_down,
 * ...); owned by b. An experimental librdkafka API: production code does
 * not call it. */
struct rd_kafka_mock_cluster_s;
struct rd_kafka_mock_cluster_s *sf_broker_mock(sf_broker *b);

/* Stops the cluster (clients connected to it see their connections close)
 * and frees b; accepts NULL. */
void sf_broker_stop(sf_broker *b);

#endif
