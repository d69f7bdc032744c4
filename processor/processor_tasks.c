/*
 * processor_tasks.c - the threads of the processor besides the poll loop,
 * and the hand-offs between them and the loop (see processor.h).
 *
 * A task is one unit of work handed to a thread and handed back with its
 * result through the `done` queue: finalize a job (workers), dead-letter a
 * failed job or a single event (the dead-letter thread, processor_dead.c). A job handed
 * out is marked by job->user = its task, so a rebalance can cancel it; a dropped job is
 * freed when its task comes back, never while a thread reads it. Threads never touch the
 * job table or the offsets: the loop acts on results in sf_proc_drain_done.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "consumer/intake.h"
#include "core/base/clock.h"
#include "core/base/fault.h"
#include "core/base/memcost.h"
#include "core/catalog/catalog.h"
#include "core/pipeline/finalize.h"
#include "processor/processor_internal.h"

/* ---- small helpers ---------------------------------------------------------- */

void sf_proc_plog(sf_proc *p, int level, const char *fmt, ...) {
  if (!p->o.log) return;
  sf_logline l;
  va_list ap;
  va_start(ap, fmt);
  sf_logline_vformat(&l, fmt, ap);
  va_end(ap);
  p->o.log(p->o.log_ctx, level, l.f, l.n);
}

void sf_proc_q_init(tqueue *q) {
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  q->head = q->tail = NULL;
  q->n = 0;
  q->quit = 0;
}

void sf_proc_q_push(tqueue *q, task *t) {
  pthread_mutex_lock(&q->mu);
  t->next = NULL;
  if (q->tail)
    q->tail->next = t;
  else
    q->head = t;
  q->tail = t;
  q->n++;
  pthread_cond_signal(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

/* Waits for a task; NULL when the queue is quit and empty. */
task *sf_proc_q_pop(tqueue *q, int wait) {
  pthread_mutex_lock(&q->mu);
  while (wait && !q->head && !q->quit) pthread_cond_wait(&q->cv, &q->mu);
  task *t = q->head;
  if (t) {
    q->head = t->next;
    if (!q->head) q->tail = NULL;
    q->n--;
  }
  pthread_mutex_unlock(&q->mu);
  return t;
}

void sf_proc_q_quit(tqueue *q) {
  pthread_mutex_lock(&q->mu);
  q->quit = 1;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

void sf_proc_q_destroy(tqueue *q) {
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
}

void sf_proc_task_free(task *t) {
  if (!t) return;
  sf_shard_rejected_clear(&t->rej);
  free(t);
}

/* A thread hands a task back and wakes the poll loop. */
void sf_proc_hand_back(sf_proc *p, task *t) {
  sf_proc_q_push(&p->done, t);
  atomic_fetch_add(&p->ndone, 1);
  rd_kafka_queue_yield(p->cq);
}

/* Sleeps up to ms, waking early when the drain is over. */
void sf_proc_backoff(sf_proc *p, int ms) {
  for (int slept = 0; slept < ms && !atomic_load(&p->quit); slept += 20) usleep(20000);
}

/* ---- the finalize workers ----------------------------------------------------- */

/* The dead-letter reason of a finalize failure; NONE for a failure that is
 * not the job's fault, which holds the job (its dataset's fault, retried
 * with backoff) or stops the service (the process's). sf_finalize says whose
 * fault it was (an unreadable
 * catalog version or a commit that lost every race is not the job's, though
 * their codes look like a corrupt file or a conflict); the code then picks
 * the reason. */
static sf_event_reason finalize_reason(sf_code c, sf_finalize_blame blame) {
  if (blame == SF_FINALIZE_RETRYABLE) return SF_REASON_NONE;
  switch (c) {
    case SF_ECORRUPT:
    case SF_EFORMAT:
      return SF_REASON_CORRUPT_FILE;
    case SF_ECHECKSUM:
      return SF_REASON_CHECKSUM_MISMATCH;
    case SF_ENOTFOUND:
      return SF_REASON_MISSING_FILE;
    case SF_EMISMATCH:
      return SF_REASON_PARAM_MISMATCH;
    case SF_EOVERLAP:
    case SF_ECONFLICT:
    case SF_EEXIST:
      return SF_REASON_COMMIT_CONFLICT;
    case SF_EIO:
    case SF_ENOMEM:
    case SF_ECANCELED:
      return SF_REASON_NONE;
    default:
      return SF_REASON_JOB_FAILED;
  }
}

/* Publishing retries until delivered, while the service runs: a broker
 * outage must not turn into lost announcements. An event that cannot be
 * encoded (SF_EDECODE, SF_EINVAL) is not retried, nor is anything once the
 * producer hit a fatal error. */
int sf_proc_retry_publish(sf_proc *p, sf_code rc, int attempt, const char *what,
                          const char *staging_id, sf_err *err) {
  if (!rc || rc == SF_EDECODE || rc == SF_EINVAL || atomic_load(&p->quit)) return 0;
  /* A producer with a fatal error never sends again: retrying would spin
   * forever. The failure goes back to the loop, which stops the service
   * (exit 1) so that a supervisor restarts it with a new producer. */
  if (sf_publisher_fatal(p->pub, err)) return 0;
  sf_proc_plog(p, SF_PROC_LOG_WARNING,
               "event=publish_retry what=%s staging_id=%s attempt=%d error=\"%s\"", what,
               staging_id ? staging_id : "-", attempt, err->msg);
  sf_proc_backoff(p, attempt < 25 ? 200 * attempt : 5000);
  return 1;
}

/* When the catalog recorded the job (so a re-announcement carries the
 * same time as the first); now when it cannot be read. */
static int64_t committed_at(const char *dataset, uint64_t version,
                            const char *staging_id) {
  sf_catalog *c = NULL;
  int64_t at = sf_clock_wall_ms();
  if (!sf_catalog_open_version(dataset, version, &c, NULL)) {
    sf_catalog_job cj;
    int found = 0;
    if (!sf_catalog_lookup_job(c, staging_id, &cj, &found, NULL) && found)
      at = (int64_t)cj.committed_at_ms;
    sf_catalog_job_clear(&cj);
  }
  sf_catalog_free(c);
  return at;
}

/* Publishes the job's SegmentsCommitted and waits for its delivery. */
static sf_code announce(sf_proc *p, task *t, const sf_finalize_result *res, sf_err *err) {
  const sf_job *j = t->job;
  const sf_shard_staged *e0 = &j->shards[0].ev;
  /* A job committed earlier may be announced again from only part of its
   * events (read again after a restart): its shard count is the catalog's. */
  size_t nshards = 0;
  for (size_t i = 0; i < res->nsegs; i++) nshards += res->segs[i].num_shards;
  if (!res->already || !nshards) nshards = j->nshards;
  char id[2 * SF_EVENT_ID_MAX];
  snprintf(id, sizeof id, "%s@%llu", j->staging_id, (unsigned long long)res->version);
  t->committed_at_ms = committed_at(j->dataset, res->version, j->staging_id);
  sf_segments_committed ev = {.event_id = id,
                              .dataset_uri = (char *)j->dataset, /* canonical */
                              .index_name = e0->index_name,
                              .staging_id = j->staging_id,
                              .catalog_version = (int64_t)res->version,
                              /* borrowed from res: never cleared */
                              .segments = res->segs,
                              .num_segments = res->nsegs,
                              .total_rows = (int64_t)res->total_rows,
                              .num_shards = (int32_t)nshards,
                              .first_staged_at_ms = j->first_staged_at_ms,
                              .committed_at_ms = t->committed_at_ms};
  /* The trace context of the job's events (a W3C traceparent header)
   * carries on to its announcement. */
  size_t tpl = 0;
  const uint8_t *tp = sf_proc_job_traceparent(j, &tpl);
  rd_kafka_headers_t *h = tp ? rd_kafka_headers_new(2) : NULL;
  if (h) rd_kafka_header_add(h, "traceparent", -1, tp, (ssize_t)tpl);
  sf_publish_extra x = {.headers = h};
  sf_code rc;
  for (int attempt = 1;; attempt++) {
    rc = sf_publish_committed_ex(p->pub, NULL, &ev, &x, p->o.delivery_timeout_ms, NULL,
                                 err);
    if (!sf_proc_retry_publish(p, rc, attempt, "SegmentsCommitted", j->staging_id, err))
      break;
  }
  if (h) rd_kafka_headers_destroy(h);
  return rc;
}

/* The build's progress: every segment built means the commit comes next. */
static void on_progress(void *ctx, const sf_build_progress *bp) {
  task *t = ctx;
  if (bp->segments_total && bp->segments_done == bp->segments_total)
    atomic_store(&t->phase, 2);
}

static void run_finalize(sf_proc *p, task *t) {
  sf_job *j = t->job;
  atomic_store(&t->phase, 1);
  const sf_shard_staged *e0 = &j->shards[0].ev;
  sf_plan_shard *ps = calloc(j->nshards, sizeof *ps);
  if (!ps) {
    t->rc = sf_err_set(&t->err, SF_ENOMEM, "out of memory");
    return;
  }
  sf_jobs_plan_shards(j, ps);
  sf_finalize_req req = {
      .dataset = j->dataset,
      .index_name = e0->index_name,
      .column = e0->column,
      .staging_id = j->staging_id,
      .shards = ps,
      .nshards = j->nshards,
      .expected_fragments = e0->expected_fragments,
      .target_segment_bytes = e0->has_target_segment_bytes
                                  ? (uint64_t)e0->target_segment_bytes
                                  : p->o.target_segment_bytes,
      .index_type = -1,
      /* As many threads as the process may build segments at once; every
       * build takes a slot of the one budget that all jobs share. */
      .build = {.max_merges = p->o.max_merges,
                .budget = p->budget,
                .cancel = &t->cancel,
                .progress = on_progress,
                .progress_ctx = t},
  };
  sf_finalize_result res;
  double t0 = sf_clock_mono_s();
  /* One attempt: a failure that is not the job's is retried by the loop
   * (the job held, with backoff), which frees this thread for other jobs. */
  t->rc = sf_finalize(&req, &res, &t->err);
  t->blame = res.blame;
  t->dataset_fault = t->rc && t->rc != SF_ECANCELED && !atomic_load(&t->cancel) &&
                     finalize_reason(t->rc, t->blame) == SF_REASON_NONE;
  free(ps);
  t->finalize_ms = (sf_clock_mono_s() - t0) * 1e3;
  if (t->rc) return;
  atomic_store(&t->phase, 2);
  (void)sf_fault_point("serve.after_commit", NULL);
  t->already = res.already;
  t->version = res.version;
  t->nsegs = res.nsegs;
  t->rows = res.total_rows;
  t->bytes_built = res.build.bytes_copied;
  double t1 = sf_clock_mono_s();
  sf_err aerr = {0};
  sf_code rc = announce(p, t, &res, &aerr);
  t->publish_ms = (sf_clock_mono_s() - t1) * 1e3;
  sf_finalize_result_clear(&res);
  if (rc == SF_EDECODE || rc == SF_EINVAL) {
    /* Committed, but the announcement can never be sent (too large for the
     * client or the broker, or not encodable): a configuration error that
     * every job this large will hit. Query services must not silently miss
     * a version, so the job's offsets hold and the service stops, saying
     * which limits to change. */
    t->rc = SF_EINVAL;
    t->blame = SF_FINALIZE_RETRYABLE;
    char budget[32] = "none";
    if (p->o.target_segment_bytes)
      snprintf(budget, sizeof budget, "%llu",
               (unsigned long long)p->o.target_segment_bytes);
    sf_err_set(&t->err, SF_EINVAL,
               "job '%s' is committed (version %llu) but its SegmentsCommitted of %zu "
               "segments cannot be published: %s. Raise message.max.bytes (producer, "
               "broker and the topic's max.message.bytes) or the segment budget "
               "(--target-segment-bytes, now %s; or the job's target_segment_bytes) so "
               "that jobs have fewer segments; offsets are held, a restart announces it",
               j->staging_id, (unsigned long long)t->version, t->nsegs, aerr.msg, budget);
    return;
  } else if (rc) {
    t->rc = rc; /* not delivered (shutting down): the offsets stay */
    t->err = aerr;
    return;
  }
  (void)sf_fault_point("serve.after_publish", NULL);
}

void sf_proc_serve(sf_proc *p, tqueue *q, void (*run)(sf_proc *, task *)) {
  task *t;
  while ((t = sf_proc_q_pop(q, 1))) {
    if (atomic_load(&t->cancel) || atomic_load(&p->quit))
      t->rc = sf_err_set(&t->err, SF_ECANCELED, "canceled");
    else
      run(p, t);
    sf_proc_hand_back(p, t);
  }
}

void *sf_proc_worker_main(void *arg) {
  /* After the drain (quit) a queued job is given back unbuilt: its offsets
   * stay uncommitted and the next owner or a restart builds it. */
  sf_proc_serve(arg, &((sf_proc *)arg)->work, run_finalize);
  return NULL;
}

/* ---- the poll loop: hand-offs ---------------------------------------------------- */

void sf_proc_set_fatal(sf_proc *p, const sf_err *e) {
  if (p->fatal) return;
  p->fatal = e->code ? e->code : SF_EIO;
  p->fatal_err = *e;
  p->stop = 1;
  sf_proc_plog(p, SF_PROC_LOG_ERR, "event=fatal error=\"%s\"", e->msg);
}

static void release_refs(sf_proc *p, const sf_job *j) {
  for (size_t i = 0; i < j->nrefs; i++)
    sf_offsets_done(p->offs, j->refs[i].partition, j->refs[i].gen, j->refs[i].offset);
}

static task *task_new(sf_proc *p, int kind, sf_job *j) {
  task *t = calloc(1, sizeof *t);
  if (!t) {
    sf_err e = {SF_ENOMEM, "out of memory"};
    sf_proc_set_fatal(p, &e);
    return NULL;
  }
  t->kind = kind;
  t->job = j;
  if (j) j->user = t;
  return t;
}

void sf_proc_dispatch(sf_proc *p, sf_job *j) {
  task *t = task_new(p, T_FINALIZE, j);
  if (!t) return;
  p->inflight_finalize++;
  sf_proc_q_push(&p->work, t);
}

void sf_proc_send_dead_job(sf_proc *p, sf_job *j, task *reuse) {
  sf_proc_plog(p, SF_PROC_LOG_WARNING,
               "event=job_failed staging_id=%s reason=%s shards=%zu message=\"%s\"",
               j->staging_id, sf_event_reason_name(j->reason), j->nshards,
               j->message ? j->message : "");
  task *t = reuse;
  if (t) {
    memset(&t->err, 0, sizeof t->err);
    t->kind = T_DEAD_JOB;
    t->rc = SF_OK;
    t->dataset_fault = 0;
    j->user = t;
  } else if (!(t = task_new(p, T_DEAD_JOB, j))) {
    return;
  }
  p->inflight_dead++;
  sf_proc_q_push(&p->dead, t);
}

/* The heap bytes a dead letter on its way holds (its task and copies):
 * counted in p->dead_bytes, part of the memory bound. */
static size_t dead_cost(const task *t) {
  const sf_shard_rejected *r = &t->rej;
  return sf_mem_of(t) + sf_mem_of(r->reason) + sf_mem_of(r->message) +
         sf_mem_of(r->staging_id) + sf_mem_of(r->shard_id) + sf_mem_of(r->source_topic) +
         sf_mem_of(r->original_value);
}

void sf_proc_send_dead_event(sf_proc *p, const void *raw, size_t len, sf_jobs_ref ref,
                             sf_event_reason reason, const char *msg,
                             const sf_shard_staged *ev) {
  sf_proc_plog(
      p, SF_PROC_LOG_WARNING,
      "event=event_rejected reason=%s staging_id=%s shard_id=%s partition=%d offset=%lld "
      "message=\"%s\"",
      sf_event_reason_name(reason), ev && ev->staging_id ? ev->staging_id : "-",
      ev && ev->shard_id ? ev->shard_id : "-", (int)ref.partition, (long long)ref.offset,
      msg);
  task *t = task_new(p, T_DEAD_EVENT, NULL);
  if (!t) return;
  sf_shard_rejected *r = &t->rej;
  r->reason = strdup(sf_event_reason_name(reason));
  char ok[SF_ERR_MSG_MAX];
  r->message = strdup(sf_event_escape_text(ok, sizeof ok, msg));
  r->staging_id = ev && ev->staging_id ? strdup(ev->staging_id) : NULL;
  r->shard_id = ev && ev->shard_id ? strdup(ev->shard_id) : NULL;
  r->producer = ev && ev->producer ? strdup(ev->producer) : NULL;
  r->source_topic = strdup(p->topic);
  r->source_partition = ref.partition;
  r->source_offset = ref.offset;
  r->original_value = len ? malloc(len) : NULL;
  r->original_value_len = len;
  r->rejected_at_ms = sf_clock_wall_ms();
  if (!r->reason || !r->message || !r->source_topic || (len && !r->original_value) ||
      (ev && ev->staging_id && !r->staging_id) || (ev && ev->shard_id && !r->shard_id) ||
      (ev && ev->producer && !r->producer)) {
    sf_proc_task_free(t);
    sf_err e = {SF_ENOMEM, "out of memory"};
    sf_proc_set_fatal(p, &e);
    return;
  }
  if (len) memcpy(r->original_value, raw, len);
  t->ref = ref;
  p->inflight_dead++;
  p->dead_bytes += dead_cost(t);
  sf_proc_q_push(&p->dead, t);
}

/* ---- the poll loop: results -------------------------------------------------------- */

/* ---- the poll loop: held jobs ----------------------------------------------------- */

/* The first wait of a held job; each further one is twice the last, up to
 * the processor's retry_max_ms. */
#define HOLD_FIRST_MS 1000
/* Held jobs named one by one in the /healthz report. */
#define HOLD_REPORTED 8

static const char *held_what(const task *t) {
  return t->kind == T_FINALIZE ? "finalize"
         : t->kind == T_INTAKE ? "intake"
                               : "failed_marker";
}

const char *sf_proc_job_dataset(const sf_job *j) {
  return j->dataset[0] == PROC_UNRESOLVED ? j->dataset + 1 : j->dataset;
}

/* The gauge and the /healthz report, after the held set changed. */
static void held_report(sf_proc *p) {
  sf_metrics *mx = p->o.metrics;
  if (!mx) return;
  sf_metrics_set_jobs_held(mx, (int64_t)p->nheld);
  if (!p->nheld) {
    sf_metrics_set_degraded(mx, NULL);
    return;
  }
  char buf[SF_METRICS_DEGRADED_MAX];
  size_t w = 0, n = 0;
  w += (size_t)snprintf(buf, sizeof buf,
                        "%zu job%s held: %s dataset fails, the job is retried with "
                        "backoff and its partition's offset waits for it",
                        p->nheld, p->nheld == 1 ? "" : "s",
                        p->nheld == 1 ? "its" : "their");
  for (const task *t = p->held_head; t && w < sizeof buf; t = t->hnext, n++) {
    if (n == HOLD_REPORTED) {
      w += (size_t)snprintf(buf + w, sizeof buf - w, "\n... and %zu more", p->nheld - n);
      break;
    }
    /* The same pairs as a log line, escaped the same way (logline.h). */
    sf_logline l;
    sf_logline_format(&l, "staging_id=%s dataset=%s what=%s attempts=%d error=\"%s\"",
                      t->job->staging_id, sf_proc_job_dataset(t->job), held_what(t),
                      t->attempts, t->held_err.msg);
    if (w + 2 >= sizeof buf) break; /* full: what is there ends with its NUL */
    buf[w++] = '\n';
    w += sf_logline_logfmt(l.f, l.n, buf + w, sizeof buf - w);
  }
  sf_metrics_set_degraded(mx, buf);
}

/* Takes t off the held list, keeping its count of attempts (a T_INTAKE
 * being retried goes back on with the same count if it fails again). */
static void held_detach(sf_proc *p, task *t) {
  if (!t->held) return;
  if (t->hprev)
    t->hprev->hnext = t->hnext;
  else
    p->held_head = t->hnext;
  if (t->hnext) t->hnext->hprev = t->hprev;
  t->hprev = t->hnext = NULL;
  t->held = t->waiting = 0;
  p->nheld--;
}

static void held_unlink(sf_proc *p, task *t) {
  if (!t->held) return;
  held_detach(p, t);
  t->attempts = 0;
  held_report(p);
}

void sf_proc_unhold_free(sf_proc *p, task *t) {
  if (!t) return;
  held_unlink(p, t);
  sf_proc_task_free(t);
}

/* The job of t failed for its dataset's sake: it keeps its offsets and
 * waits for its next attempt; the service goes on. */
static void hold(sf_proc *p, task *t) {
  sf_job *j = t->job;
  int64_t now = sf_clock_mono_ms();
  if (!t->held) {
    t->held = 1;
    if (!t->attempts) t->held_since_ms = now; /* else: a T_INTAKE held again */
    t->hprev = NULL;
    t->hnext = p->held_head;
    if (p->held_head) p->held_head->hprev = t;
    p->held_head = t;
    p->nheld++;
  }
  t->attempts++;
  t->held_err = t->err;
  int64_t wait = HOLD_FIRST_MS < p->o.retry_max_ms ? HOLD_FIRST_MS : p->o.retry_max_ms;
  for (int i = 1; i < t->attempts && wait < p->o.retry_max_ms; i++) wait *= 2;
  if (wait > p->o.retry_max_ms) wait = p->o.retry_max_ms;
  t->retry_at_ms = now + wait;
  t->waiting = 1;
  j->user = t;
  if (t->retry_at_ms < p->next_retry_ms) p->next_retry_ms = t->retry_at_ms;
  if (t->kind == T_INTAKE) /* where its partition's offset waits */
    sf_proc_plog(
        p, SF_PROC_LOG_WARNING,
        "event=job_held staging_id=%s dataset=%s what=%s events=%zu partition=%d "
        "offset=%lld attempt=%d retry_in_ms=%lld held_ms=%lld error=\"%s\"",
        j->staging_id, sf_proc_job_dataset(j), held_what(t), j->nwaiting,
        (int)j->waiting[0].ref.partition, (long long)j->waiting[0].ref.offset,
        t->attempts, (long long)wait, (long long)(now - t->held_since_ms), t->err.msg);
  else
    sf_proc_plog(p, SF_PROC_LOG_WARNING,
                 "event=job_held staging_id=%s dataset=%s what=%s attempt=%d "
                 "retry_in_ms=%lld held_ms=%lld error=\"%s\"",
                 j->staging_id, sf_proc_job_dataset(j), held_what(t), t->attempts,
                 (long long)wait, (long long)(now - t->held_since_ms), t->err.msg);
  held_report(p);
}

/* A held job came through: logged, and no longer held. */
static void unhold_recovered(sf_proc *p, task *t) {
  if (!t->held) return;
  sf_proc_plog(p, SF_PROC_LOG_INFO,
               "event=job_recovered staging_id=%s dataset=%s what=%s attempts=%d "
               "held_ms=%lld",
               t->job->staging_id, sf_proc_job_dataset(t->job), held_what(t),
               t->attempts + 1, (long long)(sf_clock_mono_ms() - t->held_since_ms));
  held_unlink(p, t);
}

void sf_proc_hold_intake(sf_proc *p, sf_job *j, sf_jobs_ref ref, const sf_err *err,
                         task **spare) {
  if (j->user) { /* held already: the event waits behind the job's first */
    sf_proc_plog(p, SF_PROC_LOG_DEBUG,
                 "event=event_held staging_id=%s partition=%d offset=%lld waiting=%zu",
                 j->staging_id, (int)ref.partition, (long long)ref.offset, j->nwaiting);
    return;
  }
  task *t = spare && *spare ? *spare : task_new(p, T_INTAKE, j);
  if (!t) return; /* out of memory: the service stops, the event's offset held */
  if (spare && *spare == t) *spare = NULL;
  t->kind = T_INTAKE;
  t->job = j;
  j->user = t;
  t->err = *err;
  hold(p, t);
}

/* Tries the events held at intake of t's job again, in the order read: each
 * is classified anew, and the first whose dataset still cannot be read
 * holds the job again (with t, its attempts counted on), the rest queued
 * behind it. Runs on the loop's thread, which alone calls the hooks. */
static void retry_intake(sf_proc *p, task *t) {
  sf_job *j = t->job;
  char sid[SF_EVENT_ID_MAX + 1];
  snprintf(sid, sizeof sid, "%s", j->staging_id);
  char *d = strdup(sf_proc_job_dataset(j)); /* for the log line: j may go; freed below */
  held_detach(p, t);                        /* keeps its attempts */
  t->job = NULL;
  j->user = NULL;
  size_t n;
  sf_jobs_shard *w = sf_jobs_take_waiting(p->jobs, j, &n); /* may free j */
  sf_metrics_job_retried(p->o.metrics);
  sf_proc_plog(p, SF_PROC_LOG_INFO,
               "event=job_retry staging_id=%s what=intake attempt=%d events=%zu", sid,
               t->attempts + 1, n);
  task *spare = t;
  /* Stopping (out of memory, a signal): what is left is dropped with its
   * offsets uncommitted, for a restart or the next owner to read again. */
  for (size_t i = 0; i < n && !p->stop; i++)
    sf_proc_classify(p, &w[i].ev, w[i].raw, w[i].raw_len, w[i].ref, &spare);
  sf_jobs_waiting_free(w, n);
  if (!spare) { /* held again */
    free(d);
    return;
  }
  sf_proc_plog(p, SF_PROC_LOG_INFO,
               "event=job_recovered staging_id=%s dataset=%s what=intake attempts=%d "
               "held_ms=%lld",
               sid, d ? d : "-", t->attempts + 1,
               (long long)(sf_clock_mono_ms() - t->held_since_ms));
  free(d);
  sf_proc_task_free(t);
  held_report(p);
}

void sf_proc_retry_held(sf_proc *p) {
  if (!p->nheld || p->stop) return;
  int64_t now = sf_clock_mono_ms();
  if (now < p->next_retry_ms) return;
  int64_t next = INT64_MAX;
  task *due = NULL; /* T_INTAKE tasks due, retried below: that changes the list */
  for (task *t = p->held_head; t; t = t->hnext) {
    if (!t->waiting) continue;
    if (t->retry_at_ms > now) {
      if (t->retry_at_ms < next) next = t->retry_at_ms;
      continue;
    }
    if (t->kind == T_INTAKE) {
      t->next = due;
      due = t;
      continue;
    }
    t->waiting = 0;
    t->rc = SF_OK;
    t->blame = SF_FINALIZE_OK;
    t->dataset_fault = 0;
    memset(&t->err, 0, sizeof t->err);
    sf_metrics_job_retried(p->o.metrics);
    sf_proc_plog(p, SF_PROC_LOG_INFO, "event=job_retry staging_id=%s what=%s attempt=%d",
                 t->job->staging_id, held_what(t), t->attempts + 1);
    if (t->kind == T_FINALIZE) {
      p->inflight_finalize++;
      sf_proc_q_push(&p->work, t);
    } else {
      p->inflight_dead++;
      sf_proc_q_push(&p->dead, t);
    }
  }
  p->next_retry_ms = next; /* each hold below may bring it forward */
  while (due) {
    task *t = due;
    due = t->next;
    t->next = NULL;
    retry_intake(p, t);
  }
}

/* ---- the poll loop: results -------------------------------------------------------- */

static void finalize_done(sf_proc *p, task *t) {
  sf_job *j = t->job;
  p->inflight_finalize--;
  j->user = NULL;
  if (j->state == SF_JOB_DROPPED) {
    sf_proc_plog(p, SF_PROC_LOG_INFO, "event=job_dropped staging_id=%s", j->staging_id);
    sf_jobs_job_free(j);
    sf_proc_unhold_free(p, t);
    return;
  }
  if (!t->rc) {
    unhold_recovered(p, t);
    release_refs(p, j);
    atomic_fetch_add(&p->n_committed, 1);
    int64_t e2e = t->committed_at_ms - j->first_staged_at_ms;
    sf_metrics_job_committed(p->o.metrics, t->bytes_built, t->finalize_ms / 1e3,
                             t->already ? -1 : (e2e > 0 ? e2e / 1e3 : 0));
    sf_proc_plog(p, SF_PROC_LOG_INFO,
                 "event=job_committed staging_id=%s dataset=%s version=%llu already=%d "
                 "segments=%zu shards=%zu "
                 "rows=%llu finalize_ms=%.2f publish_ms=%.2f wait_ms=%lld e2e_ms=%lld",
                 j->staging_id, j->dataset, (unsigned long long)t->version, t->already,
                 t->nsegs, j->nshards, (unsigned long long)t->rows, t->finalize_ms,
                 t->publish_ms, (long long)(sf_clock_mono_ms() - j->first_seen_ms),
                 (long long)e2e);
    sf_proc_compact_after_commit(p, j->dataset, j->shards[0].ev.index_name);
    sf_jobs_finish(p->jobs, j, 1);
    sf_proc_task_free(t);
    return;
  }
  sf_event_reason r = finalize_reason(t->rc, t->blame);
  if (r == SF_REASON_NONE) {
    /* Its dataset's fault: held and retried, the service goes on. */
    if (t->dataset_fault && !p->stop) {
      hold(p, t);
      return;
    }
    /* Stopping (the job stays pending, its offsets held for the next
     * owner), or the process's own fault, which stops the service so that a
     * restart retries. */
    sf_proc_plog(p, SF_PROC_LOG_ERR, "event=job_not_finished staging_id=%s error=\"%s\"",
                 j->staging_id, t->err.msg);
    if (!p->stop) sf_proc_set_fatal(p, &t->err);
    sf_proc_unhold_free(p, t);
    return;
  }
  held_unlink(p, t); /* a retry met the job's own fault: it fails now */
  sf_jobs_fail(p->jobs, j, r, t->err.msg);
  sf_proc_send_dead_job(p, j, t);
}

static void dead_job_done(sf_proc *p, task *t) {
  sf_job *j = t->job;
  p->inflight_dead--;
  j->user = NULL;
  if (j->state == SF_JOB_DROPPED) {
    sf_jobs_job_free(j);
  } else if (t->in_catalog) {
    unhold_recovered(p, t);
    sf_proc_plog(p, SF_PROC_LOG_INFO,
                 "event=late_events_of_committed_job staging_id=%s events=%zu",
                 j->staging_id, j->nrefs);
    release_refs(p, j);
    sf_jobs_finish(p->jobs, j, 1);
  } else if (!t->rc) {
    unhold_recovered(p, t);
    sf_proc_plog(p, SF_PROC_LOG_WARNING,
                 "event=job_dead_lettered staging_id=%s reason=%s events=%zu",
                 j->staging_id, sf_event_reason_name(j->reason),
                 j->nshards + (j->trigger != NULL));
    atomic_fetch_add(&p->n_failed, 1);
    sf_metrics_job_failed(p->o.metrics);
    release_refs(p, j);
    sf_jobs_finish(p->jobs, j, 0);
  } else if (t->dataset_fault && !p->stop) {
    /* The marker cannot be written (its dataset is full or read-only): no
     * dead letter may go before it, so the job is held, its offsets too. */
    hold(p, t);
    return;
  } else {
    /* Not dead-lettered (not delivered while stopping, or a fatal producer):
     * the job stays FAILED holding its offsets, and unless the service is
     * stopping anyway it stops, so that a restart retries. */
    sf_proc_plog(p, t->rc == SF_ECANCELED ? SF_PROC_LOG_INFO : SF_PROC_LOG_ERR,
                 "event=dead_letter_not_delivered staging_id=%s error=\"%s\"",
                 j->staging_id, t->err.msg);
    if (!p->stop && t->rc != SF_ECANCELED) sf_proc_set_fatal(p, &t->err);
  }
  sf_proc_unhold_free(p, t);
}

void sf_proc_drain_done(sf_proc *p) {
  if (!atomic_load(&p->ndone)) return;
  task *t;
  while ((t = sf_proc_q_pop(&p->done, 0))) {
    atomic_fetch_sub(&p->ndone, 1);
    if (t->kind == T_FINALIZE) {
      finalize_done(p, t);
    } else if (t->kind == T_DEAD_JOB) {
      dead_job_done(p, t);
    } else {
      p->inflight_dead--;
      p->dead_bytes -= dead_cost(t);
      if (!t->rc) {
        sf_offsets_done(p->offs, t->ref.partition, t->ref.gen, t->ref.offset);
      } else {
        sf_proc_plog(
            p, t->rc == SF_ECANCELED ? SF_PROC_LOG_INFO : SF_PROC_LOG_ERR,
            "event=dead_letter_not_delivered partition=%d offset=%lld error=\"%s\"",
            (int)t->ref.partition, (long long)t->ref.offset, t->err.msg);
        if (!p->stop && t->rc != SF_ECANCELED) sf_proc_set_fatal(p, &t->err);
      }
      sf_proc_task_free(t);
    }
  }
}
