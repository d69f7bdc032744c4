/*
 * processor.h - the stream processor behind `segforge serve`: a consumer in
 * a consumer group reading ShardStaged, the job table, finalize workers, and
 * the publisher writing SegmentsCommitted and dead letters (docs/serve.md).
 *
 * Threads, all started by sf_proc_run and joined before it returns:
 *  - the poll loop: the calling thread. It alone touches the consumer, the
 *    job table (consumer/jobs.h) and the offsets (consumer/offsets.h); it
 *    decodes each message, classifies it, commits offsets, pauses and
 *    resumes partitions, and handles rebalances (librdkafka calls the
 *    rebalance callback from inside its poll);
 *  - `workers` finalize threads: each takes a complete job, runs
 *    sf_finalize (plan + build + commit; core/pipeline/finalize.h), then publishes
 *    the job's SegmentsCommitted and waits for its delivery report. So at
 *    most `workers` jobs are finalized at once. Their segment builds share
 *    one sf_build_budget of `max_merges` slots (core/pipeline/build.h): at most
 *    `max_merges` segment builds run in the whole process, however they
 *    are spread over jobs (one job may use every slot when it is alone);
 *  - one dead-letter thread: writes the failed marker of a failed job and
 *    publishes ShardRejected events, waiting for each delivery report;
 *  - with `compact`, one compaction thread (processor_compact.c): after a
 *    commit of an index this member owns, it merges the index's committed
 *    segments as the merge policy wants, one merge at a time, as background
 *    builds of the same budget (they yield to job builds between
 *    partitions), and publishes SegmentsCompacted after each.
 * Workers hand results back through a queue and wake the poll loop; librdkafka
 * and the publisher run their own internal threads.
 *
 * Ordering, which is what makes a crash at any point safe:
 *   catalog version durable (sf_finalize) -> SegmentsCommitted delivered ->
 *   the job's offsets released -> offsets committed (every commit_interval_ms).
 *   failed marker durable -> every ShardRejected of the job delivered ->
 *   offsets released.
 * A restart re-reads every event whose work was not finished; sf_finalize
 * recognises a committed job (`already`) and the announcement is published
 * again with the same event_id, "<staging_id>@<catalog_version>".
 *
 * Held jobs: a failure that is its dataset's, not the job's nor the
 * process's (finalize blames the environment: EIO, ENOSPC, EROFS, an
 * unreadable catalog, a commit that lost every race; or a failed job's
 * marker cannot be written), holds the job instead of stopping the
 * service: it keeps its offsets (so its partition's committed offset stays
 * at its oldest event), it is retried after 1 s, then twice as long each
 * time up to retry_max_ms, and it is reported (a log line per failed
 * attempt, the jobs_held gauge, the job_retries counter, /healthz
 * "degraded" naming the dataset and the error) until it commits. The
 * same holds at intake, before a job exists: an event that the intake
 * checks cannot classify because its dataset does not read (an I/O error,
 * a newest catalog version that does not read) is kept by the job table,
 * its job's later events queued behind it, and the loop classifies them
 * again with the same backoff (consumer/jobs.h, "Held at intake"). Every
 * other job goes on meanwhile. Only the process's own faults stop the
 * service: out of memory in the poll loop, a fatal consumer or producer
 * error, an announcement that can never be published (a configuration
 * error).
 *
 * Back-pressure: when `workers + queue_depth` jobs are waiting or running, or
 * more than max_pending_events messages are pending, or max_pending_bytes of
 * original event bytes are held, the consumer pauses its partitions
 * (rd_kafka_pause_partitions) and resumes them once the finalize queue is
 * empty again and both memory bounds are under 90 %; nothing is buffered
 * without bound. Staging timeouts stand still while the pause is due to the
 * pipeline alone (it drains by itself, and the open jobs' shards wait unread
 * meanwhile); while memory is over its bounds they run, since only they can
 * free the memory that open jobs hold.
 *
 * Fault points (core/base/fault.h, SF_FAULT): serve.after_consume,
 * serve.after_commit, serve.after_publish (SIGKILL there), serve.producer_fatal,
 * and inside sf_finalize the build.* and catalog.* points (build.slow_partition
 * slows every segment build down instead: tests of the build bound).
 */
#ifndef SF_PROCESSOR_H
#define SF_PROCESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/pipeline/merge_policy.h"
#include "kafka/kconf.h"
#include "processor/logline.h"
#include "processor/metrics.h"

/* Log levels, as syslog's (librdkafka uses the same numbers). */
#define SF_PROC_LOG_ERR 3
#define SF_PROC_LOG_WARNING 4
#define SF_PROC_LOG_INFO 6
#define SF_PROC_LOG_DEBUG 7

/* One structured log line: its fields, "event" first, then key=value
 * pairs, without time or level (the callback adds what it wants). Values
 * are raw text, often from outside (ids, paths, error messages): the
 * callback renders them with sf_logline_logfmt or sf_logline_json
 * (processor/logline.h), which escape them. The fields live until the
 * callback returns. Called from any of the processor's threads, one line
 * per call; it must be thread-safe and quick. */
typedef void (*sf_proc_log_fn)(void *ctx, int level, const sf_log_field *fields,
                               size_t n);

/* The drain's default: with the exit's last steps (offset commit, leaving
 * the group, at most 5 s for deliveries in flight) it fits Kubernetes'
 * default 30 s termination grace (docs/serve.md, Shutdown). */
#define SF_PROC_DEFAULT_DRAIN_MS 20000

/* The consumer group used when the configuration sets no group.id. */
#define SF_PROC_DEFAULT_GROUP "segforge-finalizer"

typedef struct sf_proc_opts {
  /* Kafka: bootstrap.servers (required), group.id, any librdkafka property,
   * and segforge.topic.* / segforge.framing / segforge.schema.ids. Copied.
   * enable.auto.commit and enable.auto.offset.store must be unset or false:
   * the processor commits offsets itself. */
  const sf_kconf *kconf;
  /* The segment budget of jobs whose events carry none; 0 = one segment
   * per shard. */
  uint64_t target_segment_bytes;
  unsigned max_merges;        /* segment builds at once, all jobs together; 0 = 2 */
  unsigned workers;           /* finalize threads (jobs at once); 0 = max_merges */
  unsigned queue_depth;       /* complete jobs waiting for a worker before the
                                 consumer pauses; 0 = workers */
  size_t max_pending_events;  /* messages pending before a pause; 0 = 1000000 */
  size_t max_pending_bytes;   /* original event bytes held (open jobs, failed jobs,
                                 dead letters waiting) before a pause; 0 = 256 MiB */
  int64_t staging_timeout_ms; /* a job must be complete within; 0 = 600000 */
  /* The directories a job's dataset must lie in (itself or below, links
   * resolved); an event naming another is refused with PATH_ESCAPE. Each
   * must exist. Copied. None (n_dataset_roots == 0): any dataset the
   * process can write. */
  const char *const *dataset_roots;
  size_t n_dataset_roots;
  int commit_interval_ms;  /* offset commits at most this often; 0 = 100 */
  int delivery_timeout_ms; /* wait for a delivery report; 0 = the kconf's */
  int drain_timeout_ms; /* on stop, wait this long for jobs in flight; 0 = the default */
  /* The longest wait between two attempts of a held job (its dataset
   * fails; see the top of this file); the first wait is 1 s (or this, if
   * shorter), doubled each time. 0 = 300000 (5 min). */
  int64_t retry_max_ms;
  /* Background compaction after commits (docs/serve.md, "Compaction"):
   * 1 = on (serve's default), 0 = off. */
  int compact;
  /* The merge policy's parameters (copied); NULL = the defaults. */
  const sf_mpolicy_params *compact_policy;
  sf_proc_log_fn log; /* may be NULL */
  void *log_ctx;
  sf_metrics *metrics; /* may be NULL; must outlive the processor */
} sf_proc_opts;

typedef struct sf_proc sf_proc;

/* Checks the options and builds the consumer and the publisher (their
 * librdkafka threads start here). *out is freed by sf_proc_free. Errors:
 * SF_EINVAL naming the option or property, SF_ENOMEM. */
sf_code sf_proc_new(const sf_proc_opts *o, sf_proc **out, sf_err *err);

/* Subscribes and runs the poll loop in the calling thread until sf_proc_stop;
 * then drains (jobs in flight finish and are announced, offsets committed,
 * the group left) and returns SF_OK. Returns an error only for what a
 * restart must retry: a fault of the process itself (out of memory in the
 * loop, a fatal consumer or producer error; a job or an event whose
 * dataset fails is held instead, see above).
 * Call once. */
sf_code sf_proc_run(sf_proc *p, sf_err *err);

/* Asks the loop to stop. Async-signal-safe (it sets a flag the loop checks
 * at least every 100 ms), so a SIGTERM handler may call it. */
void sf_proc_stop(sf_proc *p);

/* Accepts NULL. Must not be called while sf_proc_run runs. */
void sf_proc_free(sf_proc *p);

typedef struct sf_proc_stats {
  uint64_t events;         /* ShardStaged messages read */
  uint64_t rejected;       /* dead letters delivered (events and failed jobs' events) */
  uint64_t jobs_committed; /* announced (including re-announcements) */
  uint64_t jobs_failed;
  uint64_t pauses; /* times the consumer paused */
  size_t jobs_open, jobs_inflight, pending_events;
  size_t jobs_held;     /* held: their dataset fails, retried with backoff */
  uint64_t compactions; /* merges committed by the compaction thread */
} sf_proc_stats;

/* A snapshot; may be called from any thread while the loop runs. */
void sf_proc_get_stats(sf_proc *p, sf_proc_stats *s);

#endif
