/*
 * processor.c - the serve loop (see processor.h for threads and ordering):
 * messages, timeouts, offsets, back-pressure, rebalances and the life
 * cycle. The other threads and the hand-offs are in processor_tasks.c.
 *
 * The hot path, per message: one decode into a stack struct (the event's own
 * allocations), one hash lookup in the job table, and for a new shard one
 * file check and one copy of the original bytes. Duplicates cost no I/O and
 * no allocation beyond the decode.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer/intake.h"
#include "core/base/fault.h"
#include "processor/processor_internal.h"

/* How long start-up waits for the producer's topics (prepare_producer). */
#define PREPARE_TIMEOUT_MS 10000

/* ---- the poll loop: messages
 * ------------------------------------------------------------ */

/* The job table's key of an event whose dataset_uri could not be resolved
 * (an I/O error): the URI behind a mark, so that it never meets a
 * canonical dataset, whose name is an absolute path. NULL without memory. */
static char *unresolved_key(const char *uri) {
  size_t n = strlen(uri);
  char *k = malloc(n + 2);
  if (k) {
    k[0] = PROC_UNRESOLVED;
    memcpy(k + 1, uri, n + 1);
  }
  return k;
}

/* Holds ev under its unresolved key (see above); HELD, or ERROR. While
 * `only_behind`, only behind events of its job held there already
 * (returns LATE, touching nothing, when there are none): an event whose
 * dataset resolves again must not overtake them. */
static sf_jobs_outcome hold_unresolved(sf_proc *p, sf_shard_staged *ev,
                                       const uint8_t *raw, size_t len, sf_jobs_ref ref,
                                       int only_behind, sf_job **j, sf_err *err) {
  char *key = unresolved_key(ev->dataset_uri);
  sf_jobs_outcome o = SF_JOBS_ERROR;
  if (!key)
    sf_err_set(err, SF_ENOMEM, "out of memory");
  else if (only_behind && !sf_jobs_find(p->jobs, key, ev->staging_id))
    o = SF_JOBS_LATE;
  else
    o = sf_jobs_hold(p->jobs, key, ev, raw, len, ref, j, err);
  free(key);
  return o;
}

void sf_proc_classify(sf_proc *p, sf_shard_staged *ev, const uint8_t *raw, size_t len,
                      sf_jobs_ref ref, task **spare) {
  sf_err err = {0};
  sf_event_reason reason = SF_REASON_NONE;
  sf_job *j = NULL;
  sf_jobs_outcome o = SF_JOBS_LATE;
  /* The job's key: the dataset in canonical form, and the staging id. */
  char *owned = NULL;
  const char *ds = sf_intake_dataset(p->intake, ev, &owned, &reason, &err);
  if (!ds && reason) {
    sf_proc_send_dead_event(p, raw, len, ref, reason, err.msg, ev);
    return;
  }
  if (!ds && err.code == SF_ENOMEM) {
    sf_proc_set_fatal(p, &err);
    return;
  }
  if (!ds) /* its dataset does not even resolve (an I/O error): held */
    o = hold_unresolved(p, ev, raw, len, ref, 0, &j, &err);
  else if (p->nheld) /* behind its job's events held unresolved, if any */
    o = hold_unresolved(p, ev, raw, len, ref, 1, &j, &err);
  if (ds && o == SF_JOBS_LATE)
    o = sf_jobs_add(p->jobs, ds, ev, raw, len, ref, sf_clock_mono_ms(), &j, &reason,
                    &err);
  free(owned);
  switch (o) {
    case SF_JOBS_NEW:
      sf_proc_plog(p, SF_PROC_LOG_DEBUG, "event=shard_added staging_id=%s shards=%zu",
                   j->staging_id, j->nshards);
      break;
    case SF_JOBS_COMPLETE:
      sf_proc_plog(p, SF_PROC_LOG_INFO,
                   "event=job_complete staging_id=%s dataset=%s shards=%zu wait_ms=%lld",
                   j->staging_id, j->dataset, j->nshards,
                   (long long)(sf_clock_mono_ms() - j->first_seen_ms));
      sf_proc_dispatch(p, j);
      break;
    case SF_JOBS_DUPLICATE:
      sf_proc_plog(p, SF_PROC_LOG_DEBUG, "event=redelivery staging_id=%s offset=%lld",
                   j->staging_id, (long long)ref.offset);
      break;
    case SF_JOBS_REJECTED:
      sf_proc_send_dead_event(p, raw, len, ref, reason, err.msg, ev);
      break;
    case SF_JOBS_FAILED:
      sf_proc_send_dead_job(p, j, NULL);
      break;
    case SF_JOBS_LATE:
      sf_offsets_done(p->offs, ref.partition, ref.gen, ref.offset);
      sf_proc_plog(p, SF_PROC_LOG_DEBUG, "event=late_event staging_id=%s",
                   ev->staging_id);
      break;
    case SF_JOBS_HELD:
      sf_proc_hold_intake(p, j, ref, &err, spare);
      break;
    case SF_JOBS_ERROR:
      sf_proc_set_fatal(p, &err);
      break;
  }
  if (o == SF_JOBS_NEW || o == SF_JOBS_COMPLETE)
    (void)sf_fault_point("serve.after_consume", NULL);
}

static void on_message(sf_proc *p, const rd_kafka_message_t *m) {
  sf_err err = {0};
  if (m->err) {
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) return;
    sf_proc_plog(p, SF_PROC_LOG_WARNING, "event=consumer_error error=\"%s\"",
                 rd_kafka_message_errstr(m));
    return;
  }
  /* While stopping, a message is left unread: not tracked, its offset is
   * not committed, and the next owner reads it. */
  if (p->stop) return;
  if (sf_offsets_track(p->offs, m->partition, m->offset, &err)) {
    sf_proc_plog(p, SF_PROC_LOG_WARNING,
                 "event=message_not_tracked partition=%d offset=%lld", (int)m->partition,
                 (long long)m->offset);
    return;
  }
  uint32_t gen = sf_offsets_generation(p->offs, m->partition);
  sf_jobs_ref ref = {.partition = m->partition, .gen = gen, .offset = m->offset};
  atomic_fetch_add_explicit(&p->n_events, 1, memory_order_relaxed);
  sf_metrics_event_received(p->o.metrics);

  /* What the table keeps of the message: its value, key, headers and
   * timestamp, for the dead letters and the trace context. */
  size_t rec_len = 0;
  const uint8_t *rec = sf_proc_record_make(p, m, &rec_len);
  if (!rec) {
    sf_proc_set_fatal(p, &(sf_err){SF_ENOMEM, "out of memory"});
    return;
  }
  sf_shard_staged ev;
  memset(&ev, 0, sizeof ev);
  sf_event_reason reason = SF_REASON_NONE;
  if (sf_event_decode_shard_staged(p->dec, m->payload, m->len, &ev, &reason, &err)) {
    if (reason)
      sf_proc_send_dead_event(p, rec, rec_len, ref, reason, err.msg, NULL);
    else
      sf_proc_set_fatal(p, &err);
    return;
  }
  sf_proc_classify(p, &ev, rec, rec_len, ref, NULL);
  sf_shard_staged_clear(&ev);
}

static void expire(sf_proc *p) {
  if (sf_jobs_next_deadline(p->jobs) > sf_clock_mono_ms()) return;
  sf_job *j;
  while ((j = sf_jobs_expire(p->jobs, sf_clock_mono_ms())))
    sf_proc_send_dead_job(p, j, NULL);
}

/* ---- offsets, back-pressure, rebalances
 * -------------------------------------------------- */

/* Commits the watermarks that moved: of every partition, or of `only`. */
static void commit_offsets(sf_proc *p, const rd_kafka_topic_partition_list_t *only,
                           int sync) {
  enum { BATCH = 256 };
  int32_t parts[BATCH];
  int64_t offs[BATCH];
  size_t n = 0;
  if (only) {
    for (int i = 0; i < only->cnt && n < BATCH; i++) {
      int64_t w = sf_offsets_watermark(p->offs, only->elems[i].partition);
      if (w >= 0) parts[n] = only->elems[i].partition, offs[n++] = w;
    }
  } else {
    n = sf_offsets_uncommitted(p->offs, parts, offs, BATCH);
  }
  if (!n) return;
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
  for (size_t i = 0; i < n; i++)
    rd_kafka_topic_partition_list_add(l, p->topic, parts[i])->offset = offs[i];
  rd_kafka_resp_err_t e = rd_kafka_commit(p->rk, l, !sync);
  rd_kafka_topic_partition_list_destroy(l);
  if (e && e != RD_KAFKA_RESP_ERR__NO_OFFSET) {
    sf_proc_plog(p, SF_PROC_LOG_WARNING, "event=offset_commit_error error=\"%s\"",
                 rd_kafka_err2str(e));
    return;
  }
  /* Optimistic for async commits; a failure reported to offset_commit_cb
   * forgets it so the next round commits again. */
  for (size_t i = 0; i < n; i++) sf_offsets_committed(p->offs, parts[i], offs[i]);
  if (!only && n == BATCH) commit_offsets(p, NULL, sync); /* more partitions moved */
}

static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets, void *opaque) {
  sf_proc *p = opaque;
  if (!err || err == RD_KAFKA_RESP_ERR__NO_OFFSET || !offsets) return;
  sf_proc_plog(p, SF_PROC_LOG_WARNING, "event=offset_commit_error error=\"%s\"",
               rd_kafka_err2str(err));
  for (int i = 0; i < offsets->cnt; i++)
    sf_offsets_committed(p->offs, offsets->elems[i].partition, -1);
}

/* The heap bytes that pending work holds, as malloc counts them: the job
 * table (live jobs with their events and original bytes, terminal records,
 * maps), dead letters waiting for the broker, and the pending offsets.
 * This is what --max-pending-bytes bounds (docs/serve.md, Back-pressure). */
static size_t held_bytes(sf_proc *p) {
  sf_jobs_stats s;
  sf_jobs_get_stats(p->jobs, &s);
  return s.bytes + p->dead_bytes + sf_offsets_bytes(p->offs);
}

static void set_paused(sf_proc *p, int on) {
  rd_kafka_topic_partition_list_t *a = NULL;
  if (!rd_kafka_assignment(p->rk, &a)) {
    if (on)
      rd_kafka_pause_partitions(p->rk, a);
    else
      rd_kafka_resume_partitions(p->rk, a);
    rd_kafka_topic_partition_list_destroy(a);
  }
  p->paused = on;
  if (on) atomic_fetch_add(&p->n_pauses, 1);
  sf_metrics_set_paused(p->o.metrics, on);
  sf_proc_plog(p, SF_PROC_LOG_INFO,
               "event=%s building=%zu dead_letters=%zu pending=%zu pending_bytes=%zu",
               on ? "consumer_paused" : "consumer_resumed", p->inflight_finalize,
               p->inflight_dead, sf_offsets_pending(p->offs), held_bytes(p));
}

/* Whether memory is over the bounds at which a paused consumer resumes. */
static int memory_over(sf_proc *p) {
  return sf_offsets_pending(p->offs) >= p->o.max_pending_events / 10 * 9 ||
         held_bytes(p) >= p->o.max_pending_bytes / 10 * 9;
}

/* Pauses when the pipeline is full or memory is at its bounds, resumes when
 * both have drained (with hysteresis, so a steady stream does not flap). */
static void backpressure(sf_proc *p) {
  size_t full_at = p->o.workers + p->o.queue_depth, pending = sf_offsets_pending(p->offs);
  size_t dead_max = 10000; /* bounds the count of dead letters waiting for the broker */
  if (!p->paused) {
    if (p->inflight_finalize >= full_at || pending >= p->o.max_pending_events ||
        held_bytes(p) >= p->o.max_pending_bytes || p->inflight_dead >= dead_max)
      set_paused(p, 1);
  } else if (!p->stop && p->inflight_finalize <= p->o.workers && !memory_over(p) &&
             p->inflight_dead < dead_max / 2) {
    set_paused(p, 0);
  }
}

/* The staging timeout counts only time in which the job's shards could be
 * read. While the consumer is paused by the pipeline alone (builds or dead
 * letters in flight, which finish by themselves), the processor itself
 * holds the shards back: the timeouts stand still, and when they run again
 * every open job's deadline moves by the time they stood. While memory is
 * over its bounds they keep running: the memory is held by open jobs, and
 * without their timeouts nothing would ever free it. */
static void timeout_clock(sf_proc *p) {
  int freeze = p->paused && !p->stop && !memory_over(p);
  int64_t now = sf_clock_mono_ms();
  if (freeze && !p->frozen_since_ms) {
    p->frozen_since_ms = now > 0 ? now : 1;
  } else if (!freeze && p->frozen_since_ms) {
    sf_jobs_extend_deadlines(p->jobs, now - p->frozen_since_ms);
    p->frozen_since_ms = 0;
  }
}

static void drop_job(void *ctx, sf_job *j) {
  sf_proc *p = ctx;
  task *t = j->user;
  if (t && t->waiting) { /* held, between two attempts: no thread has it */
    j->user = NULL;
    sf_proc_unhold_free(p, t);
    t = NULL;
  }
  if (t) atomic_store(&t->cancel, 1); /* its build stops between partitions */
  sf_job *held = sf_jobs_drop(p->jobs, j);
  if (held && !t) sf_jobs_job_free(held);
}

static void list_partitions(const rd_kafka_topic_partition_list_t *l, char *buf,
                            size_t n) {
  size_t w = 0;
  buf[0] = '\0';
  for (int i = 0; i < l->cnt && w + 12 < n; i++)
    w += (size_t)snprintf(buf + w, n - w, "%s%d", i ? "," : "",
                          (int)l->elems[i].partition);
}

/* Called by librdkafka from inside rd_kafka_consumer_poll, in the loop's
 * thread. A revoke first commits what is finished, then drops the
 * partitions' unfinished jobs: the next owner rebuilds them from the events
 * (the segment names are deterministic, so its build reuses or replaces
 * whatever this one left). */
static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
  sf_proc *p = opaque;
  int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
  char names[512];
  list_partitions(parts, names, sizeof names);
  sf_proc_compact_rebalanced(p);
  if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
    for (int i = 0; i < parts->cnt; i++) {
      uint32_t gen;
      sf_err e = {0};
      if (sf_offsets_assign(p->offs, parts->elems[i].partition, &gen, &e))
        sf_proc_set_fatal(p, &e);
    }
    if (coop) {
      rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
      if (e) rd_kafka_error_destroy(e);
    } else {
      rd_kafka_assign(rk, parts);
    }
    if (p->paused) rd_kafka_pause_partitions(rk, parts);
    sf_proc_plog(p, SF_PROC_LOG_INFO,
                 "event=partitions_assigned partitions=%s protocol=%s", names,
                 coop ? "cooperative" : "eager");
    return;
  }
  int lost = rd_kafka_assignment_lost(rk);
  if (!lost) commit_offsets(p, parts, 1);
  sf_jobs_stats before, after;
  sf_jobs_get_stats(p->jobs, &before);
  for (int i = 0; i < parts->cnt; i++) {
    sf_jobs_foreach_on_partition(p->jobs, parts->elems[i].partition, drop_job, p);
    sf_offsets_revoke(p->offs, parts->elems[i].partition);
  }
  sf_jobs_get_stats(p->jobs, &after);
  if (coop) {
    rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
    if (e) rd_kafka_error_destroy(e);
  } else {
    rd_kafka_assign(rk, NULL);
  }
  sf_proc_plog(
      p, SF_PROC_LOG_INFO,
      "event=partitions_revoked partitions=%s lost=%d jobs_dropped=%zu protocol=%s",
      names, lost,
      (before.open + before.ready + before.failed) -
          (after.open + after.ready + after.failed),
      coop ? "cooperative" : "eager");
}

static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
  sf_proc *p = opaque;
  if (err == RD_KAFKA_RESP_ERR__FATAL) {
    char buf[512];
    rd_kafka_fatal_error(rk, buf, sizeof buf);
    sf_err e;
    sf_err_set(&e, SF_EIO, "fatal consumer error: %s", buf);
    sf_proc_set_fatal(p, &e);
    return;
  }
  sf_proc_plog(p, SF_PROC_LOG_WARNING, "event=kafka_error error=\"%s\" reason=\"%s\"",
               rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static void log_bridge(const rd_kafka_t *rk, int level, const char *fac,
                       const char *buf) {
  sf_proc *p = rd_kafka_opaque(rk);
  if (!p || !p->o.log) return;
  sf_proc_plog(p, level, "event=librdkafka facility=%s message=\"%s\"", fac, buf);
}

/* ---- life cycle
 * ------------------------------------------------------------------------- */

static sf_code kset(sf_kconf *k, const char *key, const char *val, sf_err *err) {
  return sf_kconf_set(k, key, val, err);
}

/* A size property of k as a number, or def when unset or not a number. */
static size_t conf_size(const sf_kconf *k, const char *key, size_t def) {
  const char *v = sf_kconf_get(k, key);
  char *end;
  unsigned long long n = v ? strtoull(v, &end, 10) : 0;
  return v && *v && !*end ? (size_t)n : def;
}

/* librdkafka's consumer holds what it prefetched beyond what the processor
 * holds: up to queued.max.messages.kbytes of messages (64 MiB by default),
 * each keeping alive the fetch response it came in (up to fetch.max.bytes,
 * 50 MiB). Unless set, each gets a sixteenth of the memory bound, so that
 * --max-pending-bytes stays a bound on what serve holds; fetch.max.bytes
 * no less than message.max.bytes and no more than receive.message.max.bytes
 * allows, as librdkafka requires. */
static sf_code prefetch_conf(sf_proc *p, sf_err *err) {
  sf_kconf *k = p->kconf;
  size_t share = p->o.max_pending_bytes / 16;
  char v[32];
  if (!sf_kconf_has(k, "queued.max.messages.kbytes")) {
    size_t kb = share / 1024;
    snprintf(v, sizeof v, "%zu", kb < 256 ? 256 : kb > 65536 ? 65536 : kb);
    if (kset(k, "queued.max.messages.kbytes", v, err)) return err->code;
  }
  if (!sf_kconf_has(k, "fetch.max.bytes")) {
    size_t lo = conf_size(k, "message.max.bytes", 1000000),
           hi = conf_size(k, "receive.message.max.bytes", 100000000);
    size_t n = share < lo ? lo : share > 52428800 ? 52428800 : share;
    if (hi > 512 && n > hi - 512) n = hi - 512;
    snprintf(v, sizeof v, "%zu", n);
    if (kset(k, "fetch.max.bytes", v, err)) return err->code;
  }
  return SF_OK;
}

/* The consumer's configuration: the user's, plus what correctness needs. */
static sf_code consumer_conf(sf_proc *p, sf_err *err) {
  sf_kconf *k = p->kconf;
  static const char *const own[] = {"enable.auto.commit", "enable.auto.offset.store"};
  for (size_t i = 0; i < 2; i++) {
    const char *v = sf_kconf_get(k, own[i]);
    if (v && strcmp(v, "false"))
      return sf_err_set(
          err, SF_EINVAL,
          "%s=%s: segforge serve commits offsets itself, only after a job's "
          "work is durable and announced; leave it unset or false",
          own[i], v);
    if (kset(k, own[i], "false", err)) return err->code;
  }
  if (!sf_kconf_has(k, "group.id") && kset(k, "group.id", SF_PROC_DEFAULT_GROUP, err))
    return err->code;
  /* Cooperative rebalancing: a member joining or leaving moves only the
   * partitions that change owner, so the open jobs of the others are not
   * dropped and rebuilt from their events (docs/serve.md, Rebalances). */
  if (!sf_kconf_has(k, "partition.assignment.strategy") &&
      kset(k, "partition.assignment.strategy", "cooperative-sticky", err))
    return err->code;
  /* A new group must read the shards staged before it started. */
  if (!sf_kconf_has(k, "auto.offset.reset") &&
      kset(k, "auto.offset.reset", "earliest", err))
    return err->code;
  if (prefetch_conf(p, err)) return err->code;
  /* The lag gauges and /readyz read librdkafka's statistics. */
  if (p->o.metrics && !sf_kconf_has(k, "statistics.interval.ms") &&
      kset(k, "statistics.interval.ms", "1000", err))
    return err->code;
  if (p->o.log) sf_kconf_set_logger(k, log_bridge);
  return SF_OK;
}

static sf_code schema_ids(sf_schema_set *set, const char *spec, sf_err *err) {
  char buf[1024];
  if (!spec) return SF_OK;
  snprintf(buf, sizeof buf, "%s", spec);
  for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok;
       tok = strtok_r(NULL, ", ", &save)) {
    sf_code rc = sf_schema_set_parse_id(set, tok, err);
    if (rc) return rc;
  }
  return SF_OK;
}

sf_code sf_proc_new(const sf_proc_opts *o, sf_proc **out, sf_err *err) {
  *out = NULL;
  if (!o->kconf || !sf_kconf_has(o->kconf, "bootstrap.servers"))
    return sf_err_set(err, SF_EINVAL,
                      "the processor needs bootstrap.servers (--brokers)");
  sf_proc *p = calloc(1, sizeof *p);
  if (!p) return sf_err_set(err, SF_ENOMEM, "out of memory");
  p->o = *o;
  if (!p->o.max_merges) p->o.max_merges = 2;
  if (!p->o.workers) p->o.workers = p->o.max_merges;
  if (p->o.workers > 256) p->o.workers = 256;
  if (!p->o.queue_depth) p->o.queue_depth = p->o.workers;
  if (!p->o.max_pending_events) p->o.max_pending_events = 1000000;
  if (!p->o.max_pending_bytes) p->o.max_pending_bytes = (size_t)256 << 20;
  if (!p->o.staging_timeout_ms) p->o.staging_timeout_ms = 600000;
  if (!p->o.commit_interval_ms) p->o.commit_interval_ms = 100;
  if (!p->o.drain_timeout_ms) p->o.drain_timeout_ms = SF_PROC_DEFAULT_DRAIN_MS;
  if (p->o.retry_max_ms <= 0) p->o.retry_max_ms = 300000;
  p->next_retry_ms = INT64_MAX;
  if (o->compact_policy)
    p->compact_policy = *o->compact_policy;
  else
    sf_mpolicy_params_default(&p->compact_policy);
  pthread_mutex_init(&p->compact_mu, NULL);
  pthread_cond_init(&p->compact_cv, NULL);
  sf_proc_q_init(&p->work);
  sf_proc_q_init(&p->dead);
  sf_proc_q_init(&p->done);
  sf_code rc = SF_OK;
  sf_framing framing = SF_FRAMING_AUTO;
  sf_kconf *pk = NULL;
  rd_kafka_conf_t *conf = NULL;
  /* Terminal records take at most a quarter of the memory bound, so that
   * they can never keep the consumer paused on their own. */
  sf_jobs_opts jo = {.timeout_ms = p->o.staging_timeout_ms,
                     .max_terminal_bytes = p->o.max_pending_bytes / 4,
                     .hooks = {.open = sf_intake_open, .check = sf_intake_check}};
  if ((rc = sf_mpolicy_params_check(&p->compact_policy, err)) ||
      (rc = sf_build_budget_new(p->o.max_merges, &p->budget, err)))
    goto out;
  sf_metrics_set_build_slots(p->o.metrics, p->o.max_merges);
  if (!(p->kconf = sf_kconf_dup(o->kconf)) || !(pk = sf_kconf_dup(o->kconf))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  p->topic = sf_kconf_get_or(p->kconf, SF_KCONF_TOPIC_STAGED, SF_TOPIC_STAGED_DEFAULT);
  if ((rc = sf_framing_parse(sf_kconf_get_or(p->kconf, SF_KCONF_FRAMING, "auto"),
                             &framing, err)) ||
      (rc = sf_schema_set_new(&p->schemas, err)) ||
      (rc = schema_ids(p->schemas, sf_kconf_get(p->kconf, SF_KCONF_SCHEMA_IDS), err)) ||
      (rc = sf_event_decoder_new(p->schemas, framing, 0, &p->dec, err)) ||
      (rc = sf_intake_new(&p->intake, o->dataset_roots, o->n_dataset_roots, err)))
    goto out;
  jo.hooks.ctx = p->intake;
  if ((rc = sf_jobs_new(&jo, &p->jobs, err)) || (rc = sf_offsets_new(&p->offs, err)))
    goto out;
  /* Each announcement is sent alone and waited for: lingering only adds
   * latency, so the publisher sends at once unless the user says otherwise. */
  if (!sf_kconf_has(pk, "linger.ms") && !sf_kconf_has(pk, "queue.buffering.max.ms") &&
      (rc = kset(pk, "linger.ms", "0", err)))
    goto out;
  if ((rc = sf_publisher_new(pk, framing, &p->pub, err)) ||
      (rc = consumer_conf(p, err)) || (rc = sf_kconf_build_err(p->kconf, &conf, err)))
    goto out;
  if (sf_fault_get("serve.producer_fatal")) /* as an idempotence sequence gap would */
    sf_publisher_inject_fatal(p->pub, "SF_FAULT=serve.producer_fatal");
  rd_kafka_conf_set_opaque(conf, p);
  rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
  rd_kafka_conf_set_offset_commit_cb(conf, offset_commit_cb);
  rd_kafka_conf_set_error_cb(conf, error_cb);
  rd_kafka_conf_set_stats_cb(conf, sf_proc_stats_cb);
  char errstr[512];
  if (!(p->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr))) {
    rd_kafka_conf_destroy(conf);
    rc = sf_err_set(err, SF_EINVAL, "cannot create the consumer: %s", errstr);
    goto out;
  }
  rd_kafka_poll_set_consumer(p->rk);
  p->cq = rd_kafka_queue_get_consumer(p->rk);
out:
  sf_kconf_free(pk);
  if (rc)
    sf_proc_free(p);
  else
    *out = p;
  return rc;
}

void sf_proc_stop(sf_proc *p) {
  p->stop = 1;
}

static sf_code start_threads(sf_proc *p, sf_err *err) {
  if (!(p->workers = calloc(p->o.workers, sizeof *p->workers)))
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (; p->nworkers_started < p->o.workers; p->nworkers_started++)
    if (pthread_create(&p->workers[p->nworkers_started], NULL, sf_proc_worker_main, p))
      return sf_err_set(err, SF_ENOMEM, "cannot start a finalize thread");
  if (pthread_create(&p->dead_thread, NULL, sf_proc_dead_main, p))
    return sf_err_set(err, SF_ENOMEM, "cannot start the dead-letter thread");
  p->dead_started = 1;
  return sf_proc_compact_start(p, err);
}

static void publish_stats(sf_proc *p) {
  sf_jobs_stats s;
  sf_jobs_get_stats(p->jobs, &s);
  atomic_store_explicit(&p->s_open, s.open, memory_order_relaxed);
  atomic_store_explicit(&p->s_inflight, p->inflight_finalize, memory_order_relaxed);
  atomic_store_explicit(&p->s_pending, sf_offsets_pending(p->offs), memory_order_relaxed);
  atomic_store_explicit(&p->s_held, p->nheld, memory_order_relaxed);
  if (p->o.metrics) {
    sf_build_budget_stats b;
    sf_build_budget_get_stats(p->budget, &b);
    sf_metrics_set_load(p->o.metrics, (int64_t)s.open, (int64_t)p->inflight_finalize,
                        b.running, b.peak);
  }
}

/* One turn of the loop: a message (or a wake-up), then the results, the
 * timeouts, back-pressure and the offset commit that are due. */
static void turn(sf_proc *p, int timeout_ms) {
  rd_kafka_message_t *m = rd_kafka_consumer_poll(p->rk, timeout_ms);
  if (m) {
    on_message(p, m);
    rd_kafka_message_destroy(m);
  }
  sf_proc_drain_done(p);
  sf_proc_retry_held(p);
  backpressure(p);
  timeout_clock(p);
  if (!p->stop && !p->frozen_since_ms) expire(p);
  int64_t now = sf_clock_mono_ms();
  /* the liveness stamp, from the clock read the turn needs anyway */
  sf_metrics_loop_turn(p->o.metrics, now);
  sf_proc_status_turn(p, now);
  if (now - p->last_commit_ms >= p->o.commit_interval_ms) {
    commit_offsets(p, NULL, 0);
    publish_stats(p);
    p->last_commit_ms = now;
  }
}

/* The producer learns its topics before the first job: otherwise the first
 * announcement waits for librdkafka's periodic topic scan (up to 1 s).
 * Only latency is at stake, so a failure is a warning. */
static void prepare_producer(sf_proc *p) {
  static const sf_event_type out[] = {
      SF_EVENT_SEGMENTS_COMMITTED, SF_EVENT_SHARD_REJECTED, SF_EVENT_SEGMENTS_COMPACTED};
  sf_err e = {0};
  int64_t t0 = sf_clock_mono_ms();
  if (sf_publisher_prepare(p->pub, out, p->o.compact ? 3 : 2, PREPARE_TIMEOUT_MS, &e)) {
    sf_proc_plog(p, SF_PROC_LOG_WARNING, "event=producer_not_ready error=\"%s\"", e.msg);
  } else {
    sf_proc_plog(p, SF_PROC_LOG_INFO, "event=producer_ready ms=%lld",
                 (long long)(sf_clock_mono_ms() - t0));
  }
}

sf_code sf_proc_run(sf_proc *p, sf_err *err) {
  sf_code rc = start_threads(p, err);
  if (!rc) prepare_producer(p);
  rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(topics, p->topic, RD_KAFKA_PARTITION_UA);
  rd_kafka_resp_err_t e =
      rc ? RD_KAFKA_RESP_ERR_NO_ERROR : rd_kafka_subscribe(p->rk, topics);
  rd_kafka_topic_partition_list_destroy(topics);
  if (e)
    rc = sf_err_set(err, SF_EINVAL, "cannot subscribe to %s: %s", p->topic,
                    rd_kafka_err2str(e));
  if (!rc) {
    sf_proc_plog(p, SF_PROC_LOG_INFO,
                 "event=serving topic=%s group=%s workers=%u max_merges=%u "
                 "staging_timeout_ms=%lld retry_max_ms=%lld compact=%s",
                 p->topic, sf_kconf_get(p->kconf, "group.id"), p->o.workers,
                 p->o.max_merges, (long long)p->o.staging_timeout_ms,
                 (long long)p->o.retry_max_ms, p->o.compact ? "on" : "off");
    sf_metrics_set_phase(p->o.metrics, SF_METRICS_SERVING);
    while (!p->stop) {
      int64_t until =
          p->frozen_since_ms ? 100 : sf_jobs_next_deadline(p->jobs) - sf_clock_mono_ms();
      turn(p, until < 0 ? 0 : until < 100 ? (int)until : 100);
    }
  }
  /* Drain: no new work; what is in flight finishes and is announced. */
  p->stop = 1;
  atomic_store(&p->compact_cancel, 1); /* no merge runs on into the drain */
  sf_metrics_set_phase(p->o.metrics, SF_METRICS_DRAINING);
  if (!p->paused) set_paused(p, 1);
  sf_proc_plog(p, SF_PROC_LOG_INFO, "event=draining building=%zu dead_letters=%zu",
               p->inflight_finalize, p->inflight_dead);
  int64_t deadline = sf_clock_mono_ms() + p->o.drain_timeout_ms;
  while ((p->inflight_finalize || p->inflight_dead) && sf_clock_mono_ms() < deadline)
    turn(p, 50);
  sf_proc_compact_stop(p);   /* a merge in progress is canceled: a later run redoes it */
  atomic_store(&p->quit, 1); /* threads stop retrying; closing cancels builds */
  commit_offsets(p, NULL, 1);
  rd_kafka_consumer_close(p->rk); /* the revoke drops what is left */
  sf_proc_q_quit(&p->work);
  sf_proc_q_quit(&p->dead);
  for (unsigned i = 0; i < p->nworkers_started; i++) pthread_join(p->workers[i], NULL);
  if (p->dead_started) pthread_join(p->dead_thread, NULL);
  p->nworkers_started = 0;
  p->dead_started = 0;
  sf_proc_drain_done(p);
  sf_proc_plog(p, SF_PROC_LOG_INFO,
               "event=stopped events=%llu committed=%llu failed=%llu rejected=%llu",
               (unsigned long long)p->n_events, (unsigned long long)p->n_committed,
               (unsigned long long)p->n_failed, (unsigned long long)p->n_rejected);
  if (!rc && p->fatal) {
    *err = p->fatal_err;
    rc = p->fatal;
  }
  return rc;
}

void sf_proc_free(sf_proc *p) {
  if (!p) return;
  if (p->cq) rd_kafka_queue_destroy(p->cq);
  if (p->rk) rd_kafka_destroy(p->rk);
  sf_publisher_free(p->pub,
                    p->o.delivery_timeout_ms > 0 ? p->o.delivery_timeout_ms : 5000);
  /* Tasks still queued (never run) hold dropped or live jobs. */
  task *t;
  while ((t = sf_proc_q_pop(&p->work, 0))) {
    if (t->job && t->job->state == SF_JOB_DROPPED) sf_jobs_job_free(t->job);
    sf_proc_unhold_free(p, t);
  }
  while ((t = sf_proc_q_pop(&p->dead, 0))) {
    if (t->job && t->job->state == SF_JOB_DROPPED) sf_jobs_job_free(t->job);
    sf_proc_unhold_free(p, t);
  }
  /* Held jobs between two attempts (their jobs are the table's). */
  while ((t = p->held_head)) {
    if (t->job) t->job->user = NULL;
    sf_proc_unhold_free(p, t);
  }
  sf_jobs_free(p->jobs);
  sf_offsets_free(p->offs);
  sf_intake_free(p->intake);
  sf_event_decoder_free(p->dec);
  sf_schema_set_free(p->schemas);
  sf_kconf_free(p->kconf);
  sf_proc_compact_stop(p);
  pthread_mutex_destroy(&p->compact_mu);
  pthread_cond_destroy(&p->compact_cv);
  sf_build_budget_free(p->budget);
  free(p->workers);
  sf_proc_q_destroy(&p->work);
  sf_proc_q_destroy(&p->dead);
  sf_proc_q_destroy(&p->done);
  free(p->rec);
  free(p);
}

void sf_proc_get_stats(sf_proc *p, sf_proc_stats *s) {
  s->events = atomic_load(&p->n_events);
  s->rejected = atomic_load(&p->n_rejected);
  s->jobs_committed = atomic_load(&p->n_committed);
  s->jobs_failed = atomic_load(&p->n_failed);
  s->pauses = atomic_load(&p->n_pauses);
  s->jobs_open = atomic_load(&p->s_open);
  s->jobs_inflight = atomic_load(&p->s_inflight);
  s->pending_events = atomic_load(&p->s_pending);
  s->jobs_held = atomic_load(&p->s_held);
  s->compactions = atomic_load(&p->n_compactions);
}
