/*
 * processor_dead.c - the dead-letter thread of the processor (see
 * processor.h): it writes a failed job's marker, then publishes the
 * ShardRejected of every event of the job, or of a single rejected event,
 * waiting for each delivery report. Like the workers it never touches the
 * job table or the offsets: results go back to the loop (processor_tasks.c).
 */
#include <stdio.h>
#include <string.h>

#include "consumer/intake.h"
#include "core/catalog/catalog.h"
#include "processor/processor_internal.h"

/* ---- the dead-letter thread ------------------------------------------------------ */

/* How much of the original bytes a cut-down dead letter keeps. */
#define DEAD_LETTER_MIN_BYTES 1024

/* Kafka Connect's dead-letter headers (DeadLetterQueueReporter), so that
 * tooling built for Connect's dead-letter queues reads ours. */
#define CONNECT_ERRORS "__connect.errors."

static void add_text(rd_kafka_headers_t *h, const char *name, const char *v) {
  rd_kafka_header_add(h, name, -1, v, -1);
}

/* Whether n bytes at v are lower-case hex digits, not all zero when
 * nonzero is set. */
static int lower_hex(const uint8_t *v, size_t n, int nonzero) {
  int any = 0;
  for (size_t i = 0; i < n; i++) {
    if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) return 0;
    any |= v[i] != '0';
  }
  return any || !nonzero;
}

/* Whether a traceparent header value is one (W3C Trace Context, level 1):
 * version-traceid-parentid-flags in lower-case hex, version not ff, trace
 * and parent ids not zero; version 00 is exactly 55 characters, a later
 * version may carry more after a '-'. An invalid one is no trace context
 * and is not propagated. Bounded, so that no event makes the announcement
 * large. */
static int traceparent_valid(const uint8_t *v, size_t n) {
  if (!v || n < 55 || n > 512) return 0;
  if (!lower_hex(v, 2, 0) || (v[0] == 'f' && v[1] == 'f')) return 0;
  if (v[2] != '-' || v[35] != '-' || v[52] != '-') return 0;
  if (!lower_hex(v + 3, 32, 1) || !lower_hex(v + 36, 16, 1) || !lower_hex(v + 53, 2, 0))
    return 0;
  if (v[0] == '0' && v[1] == '0') return n == 55;
  return n == 55 || v[55] == '-';
}

/* The dead letter's headers: the rejected event's own (its traceparent
 * among them), Connect's context headers, segforge.reason, and the job's
 * traceparent when the event had none (jobtp, may be NULL). For a dead
 * letter cut down (`small`), only the event's traceparent (if valid), where it was
 * (topic, partition, offset) and the reason: what made it too large may be
 * the headers. NULL without memory. */
static rd_kafka_headers_t *dead_headers(sf_proc *p, const sf_shard_rejected *r,
                                        const sf_proc_record *rec, const uint8_t *jobtp,
                                        size_t jobtp_len, int small) {
  rd_kafka_headers_t *h =
      small ? rd_kafka_headers_new(12) : sf_proc_record_headers(rec, 12);
  if (!h) return NULL;
  const uint8_t *tv;
  size_t tl;
  int has_tp = sf_proc_record_header(rec, "traceparent", &tv, &tl);
  if (small && has_tp && traceparent_valid(tv, tl))
    rd_kafka_header_add(h, "traceparent", -1, tv, tv ? (ssize_t)tl : 0);
  char num[32], cls[96];
  add_text(h, CONNECT_ERRORS "topic", r->source_topic ? r->source_topic : "");
  snprintf(num, sizeof num, "%d", (int)r->source_partition);
  add_text(h, CONNECT_ERRORS "partition", num);
  snprintf(num, sizeof num, "%lld", (long long)r->source_offset);
  add_text(h, CONNECT_ERRORS "offset", num);
  snprintf(cls, sizeof cls, "segforge.reason.%s", r->reason ? r->reason : "NONE");
  add_text(h, CONNECT_ERRORS "exception.class.name", cls);
  add_text(h, "segforge.reason", r->reason ? r->reason : "NONE");
  if (small) return h;
  const char *group = sf_kconf_get(p->kconf, "group.id");
  add_text(h, CONNECT_ERRORS "connector.name", group ? group : "segforge");
  add_text(h, CONNECT_ERRORS "task.id", "0");
  sf_event_reason why = sf_event_reason_parse(r->reason);
  add_text(h, CONNECT_ERRORS "stage",
           why == SF_REASON_DECODE_ERROR || why == SF_REASON_UNKNOWN_SCHEMA
               ? "VALUE_CONVERTER"
               : "TASK_PUT");
  add_text(h, CONNECT_ERRORS "class.name", "segforge.processor");
  add_text(h, CONNECT_ERRORS "exception.message", r->message ? r->message : "");
  if (jobtp && !has_tp)
    rd_kafka_header_add(h, "traceparent", -1, jobtp, (ssize_t)jobtp_len);
  return h;
}

static sf_code publish_rejected_once(sf_proc *p, const sf_shard_rejected *r,
                                     const sf_publish_extra *x, sf_err *err) {
  sf_code rc;
  for (int attempt = 1;; attempt++) {
    rc = sf_publish_rejected_ex(p->pub, NULL, r, x, p->o.delivery_timeout_ms, NULL, err);
    if (!sf_proc_retry_publish(p, rc, attempt, "ShardRejected", r->staging_id, err))
      break;
  }
  return rc;
}

/* Publishes a dead letter. One that can never be published as it is (too
 * large for message.max.bytes, or not encodable) must not hold its
 * partition's offset forever: it is sent again cut down (the original bytes
 * truncated, the text made valid UTF-8, the message saying so), and if even
 * that cannot be sent it is logged at error level and given up, so that
 * the offset moves. Retryable failures (broker down) still retry. */
static sf_code publish_rejected(sf_proc *p, const sf_shard_rejected *r,
                                const sf_publish_extra *x, const sf_publish_extra *xsmall,
                                sf_err *err) {
  sf_code rc = publish_rejected_once(p, r, x, err);
  if (rc == SF_EDECODE || rc == SF_EINVAL) {
    char why[SF_ERR_MSG_MAX], orig[SF_ERR_MSG_MAX], msg[3 * SF_ERR_MSG_MAX];
    char sid[SF_EVENT_ID_MAX * 4 + 1], shid[SF_EVENT_ID_MAX * 4 + 1],
        prod[SF_EVENT_ID_MAX * 4 + 1];
    size_t keep = r->original_value_len < DEAD_LETTER_MIN_BYTES ? r->original_value_len
                                                                : DEAD_LETTER_MIN_BYTES;
    sf_event_escape_text(why, sizeof why, err->msg);
    sf_event_escape_text(orig, sizeof orig, r->message);
    snprintf(msg, sizeof msg,
             "%s [dead letter cut down: original_value holds the first %zu of %zu "
             "bytes, because the full dead letter could not be published: %s]",
             orig, keep, r->original_value_len, why);
    sf_shard_rejected m = *r; /* borrowed fields: never cleared */
    m.message = msg;
    m.original_value_len = keep;
    m.staging_id =
        r->staging_id ? sf_event_escape_text(sid, sizeof sid, r->staging_id) : NULL;
    m.shard_id =
        r->shard_id ? sf_event_escape_text(shid, sizeof shid, r->shard_id) : NULL;
    m.producer =
        r->producer ? sf_event_escape_text(prod, sizeof prod, r->producer) : NULL;
    sf_proc_plog(p, SF_PROC_LOG_WARNING,
                 "event=dead_letter_cut_down staging_id=%s partition=%d offset=%lld "
                 "bytes=%zu error=\"%s\"",
                 m.staging_id ? m.staging_id : "-", (int)r->source_partition,
                 (long long)r->source_offset, r->original_value_len, why);
    rc = publish_rejected_once(p, &m, xsmall, err);
    if (rc == SF_EDECODE || rc == SF_EINVAL) {
      sf_proc_plog(p, SF_PROC_LOG_ERR,
                   "event=dead_letter_impossible reason=%s partition=%d offset=%lld "
                   "error=\"%s\"",
                   r->reason ? r->reason : "-", (int)r->source_partition,
                   (long long)r->source_offset, err->msg);
      return SF_OK; /* given up loudly: the offset moves on */
    }
  }
  if (!rc) {
    atomic_fetch_add(&p->n_rejected, 1);
    if (p->o.metrics) sf_metrics_reject(p->o.metrics, sf_event_reason_parse(r->reason));
  }
  return rc;
}

/* Publishes the dead letter r of the event whose record is rec[len]:
 * original_value is the event's value, the message keeps its key and
 * timestamp, and its headers are dead_headers'. */
static sf_code publish_dead(sf_proc *p, sf_shard_rejected *r, const uint8_t *rec,
                            size_t len, const uint8_t *jobtp, size_t jobtp_len,
                            sf_err *err) {
  sf_proc_record pr;
  sf_proc_record_split(rec, len, &pr);
  sf_shard_rejected v = *r; /* borrowed: never cleared */
  v.original_value = (uint8_t *)pr.value;
  v.original_value_len = pr.value_len;
  rd_kafka_headers_t *h = dead_headers(p, &v, &pr, jobtp, jobtp_len, 0),
                     *hs = dead_headers(p, &v, &pr, jobtp, jobtp_len, 1);
  if (!h || !hs) {
    if (h) rd_kafka_headers_destroy(h);
    if (hs) rd_kafka_headers_destroy(hs);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  sf_publish_extra x = {.has_key = 1,
                        .key = pr.has_key ? pr.key : NULL,
                        .key_len = pr.key_len,
                        .timestamp_ms = pr.timestamp_ms > 0 ? pr.timestamp_ms : 0,
                        .headers = h};
  if (!pr.enveloped) { /* bare bytes (no record): the staging id, as before */
    x.key = v.staging_id;
    x.key_len = v.staging_id ? strlen(v.staging_id) : 0;
  }
  sf_publish_extra xs = x;
  xs.headers = hs;
  sf_code rc = publish_rejected(p, &v, &x, &xs, err);
  rd_kafka_headers_destroy(h);
  rd_kafka_headers_destroy(hs);
  return rc;
}

/* The trace context of a job: the first valid traceparent of its events
 * (borrowed from the job's records), or NULL. An event may carry the
 * header more than once: each value is looked at. */
const uint8_t *sf_proc_job_traceparent(const sf_job *j, size_t *len) {
  for (size_t i = 0; i < j->nshards; i++) {
    sf_proc_record pr;
    sf_proc_record_split(j->shards[i].raw, j->shards[i].raw_len, &pr);
    const uint8_t *v;
    for (size_t k = 0; sf_proc_record_header_nth(&pr, "traceparent", k, &v, len); k++)
      if (traceparent_valid(v, *len)) return v;
  }
  return NULL;
}

static int catalog_holds(const char *dataset, const char *staging_id) {
  sf_catalog *c = NULL;
  int held = 0;
  if (!sf_catalog_open_latest(dataset, &c, NULL) &&
      sf_catalog_lookup_job(c, staging_id, NULL, &held, NULL))
    held = 0;
  sf_catalog_free(c);
  return held;
}

/* Marks the job failed on disk, then dead-letters every event of it: the
 * event that failed it with its reason, the others as JOB_FAILED (or all
 * with the job's reason when no single event failed it). */
static void run_dead_job(sf_proc *p, task *t) {
  sf_job *j = t->job;
  t->dataset_fault = 0;
  /* Whatever failed it, a job the catalog holds is committed, not failed:
   * late redeliveries of a job committed before a restart (a timeout), or a
   * job another owner committed meanwhile after a rebalance (a conflict).
   * A failed marker for it would refuse a committed staging id for good. */
  if (catalog_holds(j->dataset, j->staging_id)) {
    t->in_catalog = 1;
    return;
  }
  /* The job's message may quote what is on disk (a link's target): made
   * valid UTF-8 so that the marker (JSON) and the dead letters take it. */
  char jm_ok[SF_ERR_MSG_MAX];
  const char *jm = sf_event_escape_text(jm_ok, sizeof jm_ok, j->message);
  /* The marker first (processor.h's ordering): without it a restart would
   * take the staging id afresh after its dead letters were published. So a
   * marker that cannot be written holds the job and its offsets, and the
   * loop retries it with backoff (processor.h, held jobs). */
  if (sf_intake_mark_failed(j->dataset, j->staging_id, j->reason, jm, sf_clock_wall_ms(),
                            &t->err)) {
    t->rc = SF_EIO;
    t->dataset_fault = 1; /* the dataset's: the job is held, the service goes on */
    sf_err_prefix(&t->err, "writing the failed marker of job '%s'", j->staging_id);
    return;
  }
  size_t tpl = 0;
  const uint8_t *tp = sf_proc_job_traceparent(j, &tpl);
  char others[SF_ERR_MSG_MAX + 128];
  snprintf(others, sizeof others, "job '%s' failed (%s): %s", j->staging_id,
           sf_event_reason_name(j->reason), jm);
  for (size_t i = 0; i <= j->nshards; i++) {
    const sf_jobs_shard *s = i < j->nshards ? &j->shards[i] : j->trigger;
    if (!s) break;
    int is_trigger = s == j->trigger;
    sf_event_reason why = j->trigger && !is_trigger ? SF_REASON_JOB_FAILED : j->reason;
    sf_shard_rejected r = {.reason = (char *)sf_event_reason_name(why),
                           .message = (char *)(j->trigger && !is_trigger ? others : jm),
                           .staging_id = j->staging_id,
                           .shard_id = s->ev.shard_id,
                           .producer = s->ev.producer,
                           .source_topic = (char *)p->topic,
                           .source_partition = s->ref.partition,
                           .source_offset = s->ref.offset,
                           .rejected_at_ms = sf_clock_wall_ms()};
    if ((t->rc = publish_dead(p, &r, s->raw, s->raw_len, tp, tpl, &t->err)))
      return;                      /* borrowed: not cleared */
    if (atomic_load(&t->cancel)) { /* revoked: the new owner dead-letters it */
      t->rc = sf_err_set(&t->err, SF_ECANCELED, "canceled");
      return;
    }
  }
}

static void run_dead(sf_proc *p, task *t) {
  if (t->kind == T_DEAD_EVENT) /* its original_value holds the event's record */
    t->rc = publish_dead(p, &t->rej, t->rej.original_value, t->rej.original_value_len,
                         NULL, 0, &t->err);
  else
    run_dead_job(p, t);
}

void *sf_proc_dead_main(void *arg) {
  /* A failed job dropped by a revoke belongs to the new owner now: this
   * one must neither mark it nor dead-letter it. */
  /* After the drain (quit) the queued dead letters are given back
   * unpublished, their offsets uncommitted (a restart redoes them): one
   * publish attempt each, up to the delivery timeout with the broker
   * gone, could hold the exit for hours with thousands queued. */
  sf_proc_serve(arg, &((sf_proc *)arg)->dead, run_dead);
  return NULL;
}
