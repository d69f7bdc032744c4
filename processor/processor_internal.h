/*
 * processor_internal.h - the processor's internals, shared by processor.c (the
 * poll loop, rebalances, life cycle) and processor_tasks.c (the finalize
 * workers, the dead-letter thread, and the hand-offs between them and the
 * loop). Not a public header: see processor.h.
 */
#ifndef SF_PROCESSOR_INTERNAL_H
#define SF_PROCESSOR_INTERNAL_H

#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>

#include "consumer/intake.h"
#include "consumer/jobs.h"
#include "consumer/offsets.h"
#include "core/base/clock.h"
#include "core/pipeline/finalize.h"
#include "processor/processor.h"
#include "producer/publisher.h"
#include "schemas/event_decode.h"

/* What a thread is asked to do; or T_INTAKE, a job with events held at
 * intake (its dataset could not be read to classify them), which the loop
 * itself retries: such a task is only ever on the held list. */
enum { T_FINALIZE, T_DEAD_JOB, T_DEAD_EVENT, T_INTAKE };

/* The mark before a dataset_uri that could not be resolved, as the job
 * table's key of its held events (processor.c): no canonical dataset, an
 * absolute path, begins with it. */
#define PROC_UNRESOLVED '?'

typedef struct task {
  struct task *next; /* in a queue; for T_INTAKE, in the loop's list of due retries */
  int kind;
  sf_job *job;       /* T_FINALIZE, T_DEAD_JOB, T_INTAKE */
  atomic_int cancel; /* set by a revoke; sf_finalize checks it */
  /* T_FINALIZE, for /jobs: 0 queued, 1 building (set by the finalize
   * thread), 2 committing (its segments are built). */
  atomic_int phase;
  /* T_DEAD_EVENT: the rejection (owned fields) and where the event was. */
  sf_shard_rejected rej;
  sf_jobs_ref ref;
  /* Results. */
  sf_code rc;
  sf_err err;
  sf_finalize_blame blame; /* T_FINALIZE: whose fault a failure was */
  /* The failure is its dataset's (finalize blamed the environment: EIO,
   * ENOSPC, EROFS, an unreadable catalog; or the failed marker could not be
   * written): the job is held and retried, the service goes on. A failure
   * with this unset and no reason of the job's is the process's own. */
  int dataset_fault;
  int in_catalog; /* T_DEAD_JOB of a timeout: the catalog holds the job */
  int already;
  uint64_t version, rows, bytes_built;
  size_t nsegs;
  double finalize_ms, publish_ms;
  int64_t committed_at_ms;
  /* Held (see processor.h): set from its first dataset fault until it
   * commits, fails for its own reasons, or is dropped. */
  int held;     /* on the processor's held list */
  int waiting;  /* held and waiting for retry_at_ms (not in a queue) */
  int attempts; /* failed attempts so far (kept while a T_INTAKE is retried) */
  int64_t held_since_ms, retry_at_ms;
  sf_err held_err;            /* the last failure, for the health report */
  struct task *hprev, *hnext; /* the processor's list of held tasks */
} task;

typedef struct tqueue {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  task *head, *tail;
  size_t n;
  int quit; /* no more tasks will come: consumers exit when empty */
} tqueue;

struct sf_proc {
  sf_proc_opts o;
  sf_kconf *kconf; /* consumer's */
  rd_kafka_t *rk;
  rd_kafka_queue_t *cq;
  int cooperative;
  sf_publisher *pub;
  sf_schema_set *schemas;
  sf_event_decoder *dec;
  sf_jobs *jobs;
  sf_offsets *offs;
  sf_intake *intake; /* the job table's hooks' cache */
  const char *topic; /* ShardStaged; owned by kconf */
  /* The one bound on segment builds of the whole process (--max-merges),
   * shared by every job's sf_build_run. */
  sf_build_budget *budget;

  pthread_t *workers;
  unsigned nworkers_started;
  pthread_t dead_thread;
  int dead_started;
  tqueue work, dead, done;
  atomic_size_t ndone; /* tasks in `done`: lets the loop skip the lock */
  volatile sig_atomic_t stop;
  atomic_int quit; /* drain over: threads give up retrying */

  size_t inflight_finalize, inflight_dead;
  int paused;
  /* When staging timeouts stopped running (paused by the pipeline alone),
   * or 0 while they run. */
  int64_t frozen_since_ms;
  size_t dead_bytes; /* heap bytes of T_DEAD_EVENT tasks in flight */
  task *held_head;   /* held tasks, waiting or being retried */
  size_t nheld;
  int64_t next_retry_ms; /* earliest retry_at_ms of a waiting one; INT64_MAX: none */
  int64_t last_commit_ms;
  sf_code fatal;
  sf_err fatal_err;

  /* Compaction (processor_compact.c). The queue of indexes to compact and
   * its flags are under compact_mu. */
  sf_mpolicy_params compact_policy;
  pthread_t compact_thread;
  int compact_started;
  pthread_mutex_t compact_mu;
  pthread_cond_t compact_cv;
  struct compact_item *compact_head;
  int compact_quit;
  atomic_int compact_cancel;           /* stops a running merge between partitions */
  atomic_int compact_running;          /* a merge is running */
  atomic_int compact_partitions;       /* of the ShardStaged topic; 0 = ask the brokers */
  atomic_llong compact_meta_failed_ms; /* when asking them last failed; 0 = never */
  atomic_uint_least64_t n_compactions;

  /* The record of the message being read (processor_record.c), reused. */
  uint8_t *rec;
  size_t rec_cap;
  /* Status (processor_status.c): partitions assigned at the last
   * statistics, and when the gauges of jobs by state were refreshed. */
  size_t assigned;
  int64_t states_at_ms;

  atomic_uint_least64_t n_events, n_rejected, n_committed, n_failed, n_pauses;
  atomic_size_t s_open, s_inflight, s_pending, s_held;
};

/* ---- processor_compact.c ------------------------------------------------------ */

/* The key that decides which member compacts an index: "<dataset>#<index>",
 * malloc'd (caller frees); NULL without memory. */
char *sf_proc_compact_key(const char *dataset, const char *index_name);
/* Whether this member owns the index (the compaction thread: it may wait on
 * the brokers for the partition count): it is assigned the
 * ShardStaged partition that librdkafka's default partitioner gives the key;
 * *partition gets it (-1 when the partition count is unknown, and then the
 * answer is yes). */
int sf_proc_compact_owns(sf_proc *p, const char *dataset, const char *index_name,
                         int32_t *partition);
/* A rebalance happened: ownership is computed afresh. */
void sf_proc_compact_rebalanced(sf_proc *p);
/* A job of the index committed (the loop's thread): queues the index for
 * the compaction thread, which compacts it if this member owns it. */
void sf_proc_compact_after_commit(sf_proc *p, const char *dataset,
                                  const char *index_name);
/* Start and stop (join) the compaction thread; start does nothing unless
 * o.compact. Stop cancels a running merge between partitions. */
sf_code sf_proc_compact_start(sf_proc *p, sf_err *err);
void sf_proc_compact_stop(sf_proc *p);
void *sf_proc_compact_main(void *arg);

/* ---- processor_record.c ------------------------------------------------------- */

/* An event as kept: its value and what the message carried beside it,
 * borrowed from the record's bytes. */
typedef struct sf_proc_record {
  const uint8_t *value;
  size_t value_len;
  int64_t timestamp_ms; /* the message's (0 or -1: none) */
  int enveloped;        /* a record, not bare event bytes: key etc. are known */
  int has_key;          /* enveloped: the message had a key (not null) */
  const uint8_t *key;
  size_t key_len;
  uint32_t nheaders;
  const uint8_t *headers, *headers_end; /* encoded; see processor_record.c */
} sf_proc_record;

/* The record of m in the processor's buffer (valid until the next call):
 * *len bytes, what the loop hands the job table. NULL without memory. */
const uint8_t *sf_proc_record_make(sf_proc *p, const rd_kafka_message_t *m, size_t *len);
/* Splits a record (or bare event bytes) into its parts. */
void sf_proc_record_split(const uint8_t *rec, size_t len, sf_proc_record *r);
/* The first header called name: 1 with *v (NULL: a null value), *vl. */
int sf_proc_record_header(const sf_proc_record *r, const char *name, const uint8_t **v,
                          size_t *vl);
/* The same for the header called name that comes nth (0: the first). */
int sf_proc_record_header_nth(const sf_proc_record *r, const char *name, size_t nth,
                              const uint8_t **v, size_t *vl);
/* A new header list (caller destroys) with the record's headers, room for
 * `extra` more; NULL without memory. */
rd_kafka_headers_t *sf_proc_record_headers(const sf_proc_record *r, size_t extra);

/* The traceparent header of the job's first event that has one (borrowed
 * from its records; *len its length), or NULL (processor_dead.c). */
const uint8_t *sf_proc_job_traceparent(const sf_job *j, size_t *len);

/* ---- processor_status.c ------------------------------------------------------- */

/* On each turn of the loop: answers a /jobs request, and refreshes the
 * gauges of jobs by state once a second. */
void sf_proc_status_turn(sf_proc *p, int64_t now);
/* librdkafka's statistics callback: the lag gauges and readiness. */
int sf_proc_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);

/* ---- processor_tasks.c and processor_dead.c ---------------------------------- */

/* One structured log line through the user's callback: fmt is a template
 * of key=value pairs (processor/logline.h); values are escaped when the
 * line is rendered, so outside strings are passed as they are. */
void sf_proc_plog(sf_proc *p, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void sf_proc_q_init(tqueue *q);
void sf_proc_q_push(tqueue *q, task *t);
/* The next task, waiting for one when `wait`; NULL when quit and empty (or
 * empty, without wait). */
task *sf_proc_q_pop(tqueue *q, int wait);
void sf_proc_q_quit(tqueue *q);
void sf_proc_q_destroy(tqueue *q);
void sf_proc_task_free(task *t);
/* A thread hands a task back to the loop and wakes it. */
void sf_proc_hand_back(sf_proc *p, task *t);
/* Sleeps up to ms, waking early when the drain is over. */
void sf_proc_backoff(sf_proc *p, int ms);
/* Whether a failed publish (attempt n) is worth another attempt; logs it
 * and waits first when it is. Not for encoding errors, a fatal producer,
 * or once the drain is over. */
int sf_proc_retry_publish(sf_proc *p, sf_code rc, int attempt, const char *what,
                          const char *staging_id, sf_err *err);

/* The body of a thread that serves queue q: runs each task it pops, or
 * cancels it (SF_ECANCELED) when the task was revoked or the drain is over,
 * and hands it back to the loop; returns when q quits. */
void sf_proc_serve(sf_proc *p, tqueue *q, void (*run)(sf_proc *, task *));
/* Thread bodies (arg: the sf_proc). */
void *sf_proc_worker_main(void *arg);
void *sf_proc_dead_main(void *arg);

/* The loop's side of the hand-offs. */
void sf_proc_set_fatal(sf_proc *p, const sf_err *e);
void sf_proc_dispatch(sf_proc *p, sf_job *j);
void sf_proc_send_dead_job(sf_proc *p, sf_job *j, task *reuse);
/* One rejected event (its bytes raw[len], read at ref; ev as decoded, or
 * NULL): copies what its dead letter needs. */
void sf_proc_send_dead_event(sf_proc *p, const void *raw, size_t len, sf_jobs_ref ref,
                             sf_event_reason reason, const char *msg,
                             const sf_shard_staged *ev);
/* What the event means for its job, and what follows (processor.c): the
 * heart of the loop, for a message just read and for an event held at
 * intake tried again. *ev stays the caller's to clear (the table may have
 * taken it over, leaving it zeroed). spare: NULL for a new message; while
 * a held job's events are tried again, its task, taken (set to NULL) by
 * the first hold that needs one, so that its attempts go on counting. */
void sf_proc_classify(sf_proc *p, sf_shard_staged *ev, const uint8_t *raw, size_t len,
                      sf_jobs_ref ref, task **spare);
/* The event read at ref is held at intake in job j (why: err): the job is
 * held (a T_INTAKE task, *spare if there is one), unless it is already,
 * the event queued behind. */
void sf_proc_hold_intake(sf_proc *p, sf_job *j, sf_jobs_ref ref, const sf_err *err,
                         task **spare);
/* The dataset of j as a person knows it (an unresolved key without its
 * mark). */
const char *sf_proc_job_dataset(const sf_job *j);
/* Takes back every finished task and acts on its result. */
void sf_proc_drain_done(sf_proc *p);
/* Hands the held tasks whose retry is due back to their threads. */
void sf_proc_retry_held(sf_proc *p);
/* Frees a task that no thread has, first taking it out of the held list
 * if it is there (a held job revoked between two attempts, or shutdown). */
void sf_proc_unhold_free(sf_proc *p, task *t);

#endif
