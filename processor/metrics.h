/*
 * metrics.h - the stream processor's counters, gauges and histograms, in
 * Prometheus text exposition format (version 0.0.4), served over HTTP.
 *
 * The values live in a plain struct of atomics that the processor updates
 * from any thread with no lock, through the sf_metrics_* functions below
 * (the processor never writes a field itself); rendering reads them with
 * relaxed loads. A scrape is therefore not one consistent snapshot across
 * metrics (it never is in Prometheus), but each histogram's _count equals
 * its +Inf bucket, as the format requires, because both are computed from
 * the same bucket reads.
 *
 * Exported metrics (all prefixed "segforge_"):
 *   jobs_pending             gauge    jobs seen, not yet complete
 *   jobs_building            gauge    jobs whose segments are being built
 *   jobs_held                gauge    jobs held because their dataset fails
 *   job_retries_total        counter  attempts of held jobs after the first
 *   builds_running           gauge    segment builds running in the process
 *   builds_running_peak      gauge    most segment builds ever running at once
 *   build_slots              gauge    the bound on them (--max-merges)
 *   jobs_committed_total     counter  jobs committed to the catalog
 *   jobs_failed_total        counter  jobs failed (dead-lettered)
 *   events_received_total    counter  ShardStaged messages consumed
 *   events_rejected_total    counter  by {reason="DECODE_ERROR", ...}
 *   bytes_built_total        counter  bytes of segment files written
 *   consumer_paused          gauge    1 while partitions are paused
 *   build_duration_seconds   histogram  one job's plan + build + commit
 *   end_to_end_seconds       histogram  first staged_at_ms -> committed
 *   poll_loop_age_seconds    gauge    since the poll loop's last turn
 *   compactions_running      gauge    merges of committed segments running
 *   compactions_total        counter  by {result="committed"|"discarded"|"failed"}
 *   compaction_bytes_read_total     counter  input segment bytes merged
 *   compaction_bytes_written_total  counter  merged segment bytes written
 *   compaction_duration_seconds     histogram  one merge: build + commit
 *   jobs                     gauge    open jobs by {state="waiting"|"queued"|
 *                                     "building"|"committing"|"failed"|"held"}
 *   oldest_job_age_seconds   gauge    age of the oldest open job (0: none)
 *   consumer_lag             gauge    by {topic,partition}: the high watermark
 *                                     minus the group's committed offset
 *   consumer_read_lag        gauge    by {topic,partition}: minus the position read
 *   partitions_assigned      gauge    ShardStaged partitions this member owns
 *   build_info               gauge    1, with {version,commit}
 * and, unprefixed as Prometheus's client libraries name them, process_cpu_
 * seconds_total, process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds, process_max_fds, process_start_time_seconds (from
 * /proc/self at each scrape).
 *
 * Serving: sf_metrics_serve starts libmicrohttpd with its own listening
 * thread (MHD_USE_INTERNAL_POLLING_THREAD): that thread, created there and
 * joined by sf_metrics_server_stop, is the only one. It answers GET
 * /metrics, GET /healthz (see sf_metrics_health), GET /livez (the loop
 * turns), GET /readyz (see sf_metrics_ready), GET /jobs (the open jobs as
 * JSON, see sf_metrics_jobs_wanted) and GET / with a pointer to them;
 * anything else is 404/405.
 *
 * Three fields are not atomics: the text saying why the service is
 * degraded (held jobs, their datasets and errors), a string set by the poll
 * loop with sf_metrics_set_degraded and read by /healthz, under a spin lock
 * (an atomic_flag), both sides copying at most SF_METRICS_DEGRADED_MAX bytes
 * while they hold it; and two heap strings the poll loop hands over, the
 * lag samples (sf_metrics_set_lag) and the /jobs document
 * (sf_metrics_set_jobs), swapped under a second spin lock and copied by the
 * HTTP thread. sf_metrics_destroy frees those two.
 */
#ifndef SF_METRICS_H
#define SF_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "schemas/event.h"

/* Upper bounds (seconds) of the fixed histogram buckets; +Inf is implied. */
#define SF_METRICS_BUILD_BUCKETS \
  { 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600 }
#define SF_METRICS_E2E_BUCKETS \
  { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800 }
#define SF_METRICS_NBUCKETS 14

typedef struct sf_histogram {
  double bounds[SF_METRICS_NBUCKETS];                    /* set by sf_metrics_init */
  atomic_uint_least64_t bucket[SF_METRICS_NBUCKETS + 1]; /* not cumulative; last: +Inf */
  atomic_uint_least64_t sum_us; /* sum of observations, microseconds */
} sf_histogram;

/* The longest degraded text kept (longer is cut). */
#define SF_METRICS_DEGRADED_MAX 2048

typedef struct sf_metrics {
  atomic_int_least64_t jobs_pending;
  atomic_int_least64_t jobs_building;
  atomic_int_least64_t jobs_held;
  atomic_uint_least64_t job_retries;
  atomic_int_least64_t builds_running, builds_peak, build_slots;
  atomic_uint_least64_t jobs_committed;
  atomic_uint_least64_t jobs_failed;
  atomic_uint_least64_t events_received;
  atomic_uint_least64_t events_rejected[SF_REASON_COUNT]; /* by sf_event_reason */
  atomic_uint_least64_t bytes_built;
  atomic_int paused; /* 0 or 1 */
  /* Liveness: the poll loop stores the CLOCK_MONOTONIC time of each turn
   * (0 before the first) and its phase. */
  atomic_int_least64_t loop_turn_ms;
  atomic_int phase; /* sf_metrics_phase */
  sf_histogram build_seconds;
  sf_histogram e2e_seconds;
  /* Compaction in serve (processor/compactor.c). */
  atomic_int_least64_t compactions_running;
  atomic_uint_least64_t compactions[3]; /* sf_metrics_compaction_result */
  atomic_uint_least64_t compaction_bytes_read, compaction_bytes_written;
  sf_histogram compaction_seconds;
  atomic_flag degraded_lock;
  char degraded[SF_METRICS_DEGRADED_MAX]; /* "" = not degraded */
  /* Jobs by state (sf_metrics_job_state) and the oldest open job's arrival
   * (CLOCK_MONOTONIC ms; 0: none), refreshed by the poll loop. */
  atomic_int_least64_t job_states[6];
  atomic_int_least64_t oldest_job_ms;
  /* Readiness, from the consumer's statistics (sf_metrics_set_lag). */
  atomic_int_least64_t partitions_assigned;
  atomic_int caught_up;
  atomic_int_least64_t lag_at_ms; /* when the statistics came; 0: never */
  /* /jobs: a request counter the HTTP thread bumps, the one the poll loop
   * last answered, and the answer. */
  atomic_uint_least64_t jobs_asked, jobs_answered;
  atomic_flag text_lock;
  char *lag_text;  /* exposition lines of consumer_lag(_read); owned */
  char *jobs_json; /* the /jobs document; owned */
} sf_metrics;

/* The states of an open job as /jobs and segforge_jobs name them. */
typedef enum sf_metrics_job_state {
  SF_METRICS_JOB_WAITING = 0, /* waiting for shards */
  SF_METRICS_JOB_QUEUED,      /* complete, waiting for a finalize thread */
  SF_METRICS_JOB_BUILDING,    /* planning and building its segments */
  SF_METRICS_JOB_COMMITTING,  /* segments built: catalog commit, announcement */
  SF_METRICS_JOB_FAILED,      /* failed: marker and dead letters being sent */
  SF_METRICS_JOB_HELD,        /* its dataset fails: retried with backoff */
} sf_metrics_job_state;
/* "waiting", "queued", ... */
const char *sf_metrics_job_state_name(sf_metrics_job_state s);

typedef enum sf_metrics_phase {
  SF_METRICS_STARTING = 0, /* before the poll loop runs */
  SF_METRICS_SERVING,
  SF_METRICS_DRAINING, /* stopping: no new work */
} sf_metrics_phase;

/* A poll loop that has not turned for this long is stuck: /healthz says 503.
 * The loop turns at least every 100 ms when idle. */
#define SF_METRICS_STUCK_MS 30000

typedef enum sf_metrics_health_state {
  SF_HEALTH_OK = 0,   /* serving */
  SF_HEALTH_DEGRADED, /* serving, but some jobs are held: their datasets fail */
  SF_HEALTH_DOWN,     /* starting, draining or stuck */
} sf_metrics_health_state;

/* The verdict at monotonic time now_ms, and why (one or more lines, no
 * final newline) into why[n]: DOWN while starting, draining, or when the
 * loop has not turned within SF_METRICS_STUCK_MS; else DEGRADED while a
 * degraded text is set; else OK ("ok"). */
sf_metrics_health_state sf_metrics_health(sf_metrics *m, int64_t now_ms, char *why,
                                          size_t n);

/* Sets the text saying why the service is degraded; NULL or "" clears it.
 * From any thread (one writer at a time is expected: the poll loop). */
void sf_metrics_set_degraded(sf_metrics *m, const char *why);

/* Zeroes every value and sets the bucket bounds. The struct is caller
 * storage; sf_metrics_destroy frees the strings handed to it. */
void sf_metrics_init(sf_metrics *m);
/* Frees the lag text and the /jobs document; m may be initialised again. */
void sf_metrics_destroy(sf_metrics *m);

/* The gauges of jobs by state (counts[6], by sf_metrics_job_state) and the
 * arrival of the oldest open job (monotonic ms, 0: none). */
void sf_metrics_set_job_states(sf_metrics *m, const int64_t counts[6], int64_t oldest_ms);

/* The consumer's statistics, parsed by the poll loop: `text` (taken over,
 * malloc'd; NULL: none) holds the exposition lines of consumer_lag and
 * consumer_read_lag; `assigned` partitions, and whether each of them has
 * read up to its high watermark but at most SF_METRICS_READY_LAG messages. */
#define SF_METRICS_READY_LAG 100
void sf_metrics_set_lag(sf_metrics *m, char *text, int64_t assigned, bool caught_up,
                        int64_t now_ms);

/* /jobs: whether a request waits for the poll loop's answer (*ticket gets
 * what to pass to sf_metrics_set_jobs); then the loop hands the document
 * over (json malloc'd, taken over). The HTTP thread waits up to
 * SF_METRICS_JOBS_WAIT_MS for it and answers 503 past that. */
#define SF_METRICS_JOBS_WAIT_MS 5000
bool sf_metrics_jobs_wanted(sf_metrics *m, uint64_t *ticket);
void sf_metrics_set_jobs(sf_metrics *m, char *json, uint64_t ticket);

/* /readyz at now_ms: ready (true) when serving, some partition assigned,
 * and the consumer caught up (every assigned partition within
 * SF_METRICS_READY_LAG of its high watermark) in statistics at most
 * SF_METRICS_STALE_MS old; why[n] says which. */
#define SF_METRICS_STALE_MS 15000
bool sf_metrics_ready(sf_metrics *m, int64_t now_ms, char *why, size_t n);
/* /livez at now_ms: alive (true) unless the loop ran and has not turned for
 * SF_METRICS_STUCK_MS (starting and draining are alive). */
bool sf_metrics_live(sf_metrics *m, int64_t now_ms, char *why, size_t n);

/* Records one observation of `seconds` (negative counts as 0). */
void sf_metrics_observe(sf_histogram *h, double seconds);

/* Counts one rejected event (a reason out of range counts as NONE). */
void sf_metrics_reject(sf_metrics *m, sf_event_reason reason);

/* What the processor reports, from any thread. Each accepts m == NULL (no
 * metrics kept) and does nothing then. */
void sf_metrics_event_received(sf_metrics *m);
void sf_metrics_set_paused(sf_metrics *m, bool paused);
void sf_metrics_set_build_slots(sf_metrics *m, int64_t slots);
/* The gauges refreshed after each turn of the poll loop. */
void sf_metrics_set_load(sf_metrics *m, int64_t jobs_pending, int64_t jobs_building,
                         int64_t builds_running, int64_t builds_peak);
void sf_metrics_set_jobs_held(sf_metrics *m, int64_t held);
/* The liveness stamp: the CLOCK_MONOTONIC time of a poll loop turn. */
void sf_metrics_loop_turn(sf_metrics *m, int64_t now_ms);
void sf_metrics_set_phase(sf_metrics *m, sf_metrics_phase phase);
void sf_metrics_job_retried(sf_metrics *m);
void sf_metrics_job_failed(sf_metrics *m);
/* One committed job: its bytes built, its plan + build + commit time and,
 * when e2e_seconds >= 0, its end-to-end time. */
void sf_metrics_job_committed(sf_metrics *m, uint64_t bytes_built, double build_seconds,
                              double e2e_seconds);

/* How a merge in serve ended. */
typedef enum sf_metrics_compaction_result {
  SF_METRICS_COMPACTION_COMMITTED = 0, /* swapped in (or found swapped in) */
  SF_METRICS_COMPACTION_DISCARDED,     /* an input was swapped out first (ECONFLICT) */
  SF_METRICS_COMPACTION_FAILED, /* any other error; retried after the next commit */
} sf_metrics_compaction_result;
void sf_metrics_set_compactions_running(sf_metrics *m, int64_t running);
/* One merge ended: its result, bytes read and written, and its time. */
void sf_metrics_compaction_done(sf_metrics *m, sf_metrics_compaction_result r,
                                uint64_t bytes_read, uint64_t bytes_written,
                                double seconds);

/* The exposition text in a malloc'd NUL-terminated string (caller frees);
 * *len (may be NULL) gets its length. NULL when out of memory. */
char *sf_metrics_render(const sf_metrics *m, size_t *len);

typedef struct sf_metrics_server sf_metrics_server;

/* Serves m on addr, "HOST:PORT" (an IPv4 address or "localhost";
 * "[v6]:PORT" for IPv6; PORT 0 picks a free one, see
 * sf_metrics_server_port). m must outlive the server. *out is freed by
 * sf_metrics_server_stop. Errors: SF_EINVAL (bad address), SF_EIO (the
 * port could not be bound, with the reason). */
sf_code sf_metrics_serve(sf_metrics *m, const char *addr, sf_metrics_server **out,
                         sf_err *err);

/* The port the server listens on. */
unsigned sf_metrics_server_port(const sf_metrics_server *s);

/* Stops the listening thread, closes the socket, frees s; accepts NULL. */
void sf_metrics_server_stop(sf_metrics_server *s);

#endif
