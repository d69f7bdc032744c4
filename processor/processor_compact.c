/*
 * processor_compact.c - compaction in serve (docs/serve.md, "Compaction"):
 * one background thread that merges committed segments of the indexes this
 * member owns, after their commits, within the process's one build budget.
 *
 * The loop queues the index of each committed job here. The thread takes
 * one index at a time, checks that this member owns it
 * (sf_proc_compact_owns: it asks the brokers for the partition count, so
 * it runs here, never on the loop, which must not wait on them), and runs
 * the driver of `segforge compact` on it (sf_compact_all,
 * core/pipeline/compact.h: the merge policy on the newest version, each
 * merge by sf_compact_run - intent, block-copy build, one catalog version
 * that swaps exactly the inputs - and the policy again on the version that
 * follows, until it wants no merge), one merge at a time. The driver's
 * hooks log, meter and announce each merge.
 *
 * Jobs first: the merge's build is a background build of the one budget
 * (sf_build_opts.background): it takes a slot only when no job build waits
 * for one, and between partitions it hands its slot to a job build that
 * waits. So a job's build waits behind a compaction for at most one
 * partition copy, and the builds of jobs and merges together never exceed
 * --max-merges. One merge runs at a time: the thread is the only
 * compactor of the process.
 *
 * Safety does not rest on ownership: a merge whose inputs another compactor
 * (a member that owned the index before a rebalance, `segforge compact`)
 * swapped out first fails its commit with SF_ECONFLICT and is discarded;
 * its file falls to gc. A crash at any point leaves the catalog as it was
 * or with the merge committed; the next commit of the index runs the
 * policy again, which finds the same merge (the same inputs, the same
 * merged id) and completes it, reusing a finished file.
 *
 * The announcement: after the commit, SegmentsCompacted is published and
 * its delivery awaited. A crash between the two loses the announcement
 * (no offset holds it), not the merge; the next SegmentsCommitted or
 * SegmentsCompacted of the index names a newer version, and query services
 * reload on either.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/clock.h"
#include "core/base/fault.h"
#include "core/catalog/catalog.h"
#include "core/pipeline/compact.h"
#include "processor/processor_internal.h"

/* Conflicts in a row after which an index is left until its next commit:
 * another compactor is working on it. */
#define MAX_CONFLICTS 3

/* An index waiting to be compacted. */
typedef struct compact_item {
  struct compact_item *next;
  char *dataset; /* canonical */
  char *index_name;
} compact_item;

static void item_free(compact_item *it) {
  if (!it) return;
  free(it->dataset);
  free(it->index_name);
  free(it);
}

/* ---- ownership (the compaction thread) ------------------------------------ */

char *sf_proc_compact_key(const char *dataset, const char *index_name) {
  size_t n = strlen(dataset) + strlen(index_name) + 2;
  char *k = malloc(n);
  if (k) snprintf(k, n, "%s#%s", dataset, index_name);
  return k;
}

/* The ShardStaged topic's partition count, from the brokers' metadata;
 * cached until the next rebalance. 0 when unknown; a failed request is not
 * repeated for META_RETRY_MS, so that the loop does not wait on brokers
 * that do not answer at every commit. */
#define META_RETRY_MS 10000
static int32_t staged_partitions(sf_proc *p) {
  int32_t n = atomic_load(&p->compact_partitions);
  if (n > 0) return n;
  int64_t now = sf_clock_mono_ms(), failed = atomic_load(&p->compact_meta_failed_ms);
  if (failed && now - failed < META_RETRY_MS) return 0;
  atomic_store(&p->compact_meta_failed_ms, now);
  rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, p->topic, NULL);
  if (!rkt) return 0;
  const struct rd_kafka_metadata *md = NULL;
  if (!rd_kafka_metadata(p->rk, 0, rkt, &md, 2000)) {
    if (md->topic_cnt == 1 && !md->topics[0].err) n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
  }
  rd_kafka_topic_destroy(rkt);
  if (n > 0) {
    atomic_store(&p->compact_partitions, n);
    atomic_store(&p->compact_meta_failed_ms, 0);
  }
  return n > 0 ? n : 0;
}

int sf_proc_compact_owns(sf_proc *p, const char *dataset, const char *index_name,
                         int32_t *partition) {
  *partition = -1;
  int32_t n = staged_partitions(p);
  char *key = sf_proc_compact_key(dataset, index_name);
  if (!key || n <= 0) {
    free(key);
    return 1; /* unknown: compact anyway, the catalog commit keeps it safe */
  }
  /* librdkafka's default partitioner (consistent_random) for a keyed
   * message: CRC32 of the key modulo the partition count. */
  *partition = rd_kafka_msg_partitioner_consistent(NULL, key, strlen(key), n, NULL, NULL);
  free(key);
  rd_kafka_topic_partition_list_t *a = NULL;
  int owns = 0;
  if (!rd_kafka_assignment(p->rk, &a) && a) {
    owns = rd_kafka_topic_partition_list_find(a, p->topic, *partition) != NULL;
    rd_kafka_topic_partition_list_destroy(a);
  }
  return owns;
}

void sf_proc_compact_rebalanced(sf_proc *p) {
  atomic_store(&p->compact_partitions, 0); /* the topic may have grown */
  atomic_store(&p->compact_meta_failed_ms, 0);
}

void sf_proc_compact_after_commit(sf_proc *p, const char *dataset,
                                  const char *index_name) {
  if (!p->compact_started || !dataset || !index_name) return;
  pthread_mutex_lock(&p->compact_mu);
  for (compact_item *it = p->compact_head; it; it = it->next)
    if (!strcmp(it->dataset, dataset) && !strcmp(it->index_name, index_name)) {
      pthread_mutex_unlock(&p->compact_mu); /* queued already */
      return;
    }
  compact_item *it = calloc(1, sizeof *it);
  if (it && (it->dataset = strdup(dataset)) && (it->index_name = strdup(index_name))) {
    compact_item **pp = &p->compact_head;
    while (*pp) pp = &(*pp)->next;
    *pp = it;
    it = NULL;
    pthread_cond_signal(&p->compact_cv);
  }
  pthread_mutex_unlock(&p->compact_mu);
  item_free(it); /* out of memory: the next commit asks again */
}

/* ---- the thread ----------------------------------------------------------- */

/* One run of the driver on one index: what its hooks share. */
typedef struct run_ctx {
  sf_proc *p;
  const compact_item *it;
  int32_t partition;        /* the owned partition of the index's key; -1: unknown */
  int crashed;              /* serve.compact_mid fired in this merge */
  sf_build_budget_stats b0; /* at the merge's start: its yields follow */
} run_ctx;

/* The fault point serve.compact_mid: half of the merge is copied. */
static void on_progress(void *arg, const sf_build_progress *pr) {
  run_ctx *x = arg;
  if (!x->crashed && pr->bytes_total && pr->bytes_done * 2 >= pr->bytes_total &&
      pr->bytes_done < pr->bytes_total) {
    x->crashed = 1;
    (void)sf_fault_point("serve.compact_mid", NULL);
  }
}

/* When the version was published (so a re-announcement carries the same
 * time); now when it cannot be read. */
static int64_t version_time(const char *dataset, uint64_t version) {
  sf_catalog *c = NULL;
  int64_t at = sf_clock_wall_ms();
  if (!sf_catalog_open_version(dataset, version, &c, NULL))
    at = (int64_t)sf_catalog_created_at_ms(c);
  sf_catalog_free(c);
  return at;
}

/* SegmentsCompacted for a committed merge m (m->merged set). */
static sf_code announce(sf_proc *p, const compact_item *it,
                        const sf_compact_merge_report *m, sf_err *err) {
  char id[2 * SF_EVENT_ID_MAX];
  snprintf(id, sizeof id, "%s@%llu", m->merged->segment_id,
           (unsigned long long)m->version);
  char *key = sf_proc_compact_key(it->dataset, it->index_name);
  if (!key) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_segments_compacted ev = {
      .event_id = id,
      .dataset_uri = it->dataset,
      .index_name = it->index_name,
      .catalog_version = (int64_t)m->version,
      .removed_segment_ids = (char **)m->inputs, /* borrowed: never cleared */
      .num_removed = m->ninputs,
      .added_segments = (sf_seginfo *)m->merged, /* borrowed: never cleared */
      .num_added = 1,
      .total_rows = (int64_t)m->merged->num_rows,
      .bytes_read = (int64_t)m->bytes_read,
      .bytes_written = m->built ? (int64_t)m->merged->bytes : 0,
      .compacted_at_ms = version_time(it->dataset, m->version)};
  sf_code rc;
  for (int attempt = 1;; attempt++) {
    rc =
        sf_publish_compacted(p->pub, NULL, &ev, key, p->o.delivery_timeout_ms, NULL, err);
    if (!sf_proc_retry_publish(p, rc, attempt, "SegmentsCompacted", NULL, err)) break;
  }
  free(key);
  return rc;
}

/* The driver's start hook: a merge of the index begins. */
static void on_start(void *arg, const sf_compact_merge_report *m) {
  run_ctx *x = arg;
  sf_proc *p = x->p;
  x->crashed = 0;
  sf_build_budget_get_stats(p->budget, &x->b0);
  sf_proc_plog(p, SF_PROC_LOG_INFO,
               "event=compaction_started dataset=%s index=%s round=%u inputs=%zu "
               "bytes=%llu merged=%s",
               x->it->dataset, x->it->index_name, m->round, m->ninputs,
               (unsigned long long)m->bytes_read, m->output);
  sf_metrics_set_compactions_running(p->o.metrics, 1);
  atomic_store(&p->compact_running, 1);
}

/* The driver's report hook: a merge ended. Announces a committed merge;
 * non-zero (the run ends) when the announcement failed. */
static int on_report(void *arg, const sf_compact_merge_report *m) {
  run_ctx *x = arg;
  sf_proc *p = x->p;
  const compact_item *it = x->it;
  sf_build_budget_stats b1;
  sf_build_budget_get_stats(p->budget, &b1); /* the only background build: its yields */
  atomic_store(&p->compact_running, 0);
  sf_metrics_set_compactions_running(p->o.metrics, 0);
  double secs = m->ms / 1e3;
  if (m->status == SF_ECONFLICT) {
    sf_metrics_compaction_done(p->o.metrics, SF_METRICS_COMPACTION_DISCARDED, 0, 0, secs);
    sf_proc_plog(p, SF_PROC_LOG_INFO,
                 "event=compaction_discarded dataset=%s index=%s merged=%s reason=\"%s\"",
                 it->dataset, it->index_name, m->output, m->error);
    return 0;
  }
  if (m->status) { /* the run ends with it; compact_index logs it */
    if (m->status != SF_ECANCELED)
      sf_metrics_compaction_done(p->o.metrics, SF_METRICS_COMPACTION_FAILED, 0, 0, secs);
    return 0;
  }
  uint64_t written = m->built ? m->merged->bytes : 0;
  sf_metrics_compaction_done(p->o.metrics, SF_METRICS_COMPACTION_COMMITTED, m->bytes_read,
                             written, secs);
  atomic_fetch_add(&p->n_compactions, 1);
  (void)sf_fault_point("serve.after_compact", NULL);
  double t1 = sf_clock_mono_s();
  sf_err aerr = {0};
  sf_code arc = announce(p, it, m, &aerr);
  double pub_ms = (sf_clock_mono_s() - t1) * 1e3;
  unsigned long long yields = (unsigned long long)(b1.yields - x->b0.yields);
  if (arc)
    sf_proc_plog(
        p, SF_PROC_LOG_WARNING,
        "event=compaction_committed dataset=%s index=%s partition=%d version=%llu "
        "already=%d merged=%s inputs=%zu rows=%llu bytes_read=%llu "
        "bytes_written=%llu compact_ms=%.2f yields=%llu publish_ms=%.2f "
        "announced=%d error=\"%s\"",
        it->dataset, it->index_name, (int)x->partition, (unsigned long long)m->version,
        m->already, m->output, m->ninputs, (unsigned long long)m->merged->num_rows,
        (unsigned long long)m->bytes_read, (unsigned long long)written, m->ms, yields,
        pub_ms, 0, aerr.msg);
  else
    sf_proc_plog(
        p, SF_PROC_LOG_INFO,
        "event=compaction_committed dataset=%s index=%s partition=%d version=%llu "
        "already=%d merged=%s inputs=%zu rows=%llu bytes_read=%llu "
        "bytes_written=%llu compact_ms=%.2f yields=%llu publish_ms=%.2f "
        "announced=%d",
        it->dataset, it->index_name, (int)x->partition, (unsigned long long)m->version,
        m->already, m->output, m->ninputs, (unsigned long long)m->merged->num_rows,
        (unsigned long long)m->bytes_read, (unsigned long long)written, m->ms, yields,
        pub_ms, 1);
  return arc != SF_OK;
}

/* Compacts one owned index with the driver of `segforge compact`
 * (sf_compact_all), one merge at a time as background builds of the
 * process's budget, until the policy wants nothing, MAX_CONFLICTS rounds in
 * a row lose to other compactors, an announcement fails, or serve stops. */
static void compact_index(sf_proc *p, const compact_item *it, int32_t partition) {
  run_ctx x = {.p = p, .it = it, .partition = partition};
  sf_compact_all_req r = {.dataset = it->dataset,
                          .index_name = it->index_name,
                          .policy = p->compact_policy,
                          .max_merges = 1, /* the thread is the process's one compactor */
                          .build = {.budget = p->budget,
                                    .background = 1,
                                    .cancel = &p->compact_cancel,
                                    .progress = on_progress,
                                    .progress_ctx = &x},
                          .report = on_report,
                          .start = on_start,
                          .report_ctx = &x,
                          .max_fruitless_rounds = MAX_CONFLICTS};
  sf_compact_all_result res;
  sf_err err = {0};
  sf_code rc = sf_compact_all(&r, &res, &err);
  const char *q = it->dataset;
  if (rc == SF_ECONFLICT)
    sf_proc_plog(p, SF_PROC_LOG_INFO,
                 "event=compaction_left dataset=%s index=%s merges=%zu discarded=%zu "
                 "reason=\"%s\"",
                 q, it->index_name, res.merges, res.discarded, err.msg);
  else if (rc)
    sf_proc_plog(p, rc == SF_ECANCELED ? SF_PROC_LOG_INFO : SF_PROC_LOG_WARNING,
                 "event=%s dataset=%s index=%s merges=%zu error=\"%s\"",
                 rc == SF_ECANCELED ? "compaction_canceled" : "compaction_failed", q,
                 it->index_name, res.merges, err.msg);
  else if (!res.stopped) /* the policy wants no merge of the newest version */
    sf_proc_plog(p, SF_PROC_LOG_DEBUG,
                 "event=compaction_idle dataset=%s index=%s segments=%zu merges=%zu "
                 "discarded=%zu rewritten_bytes=%llu",
                 q, it->index_name, res.segments_after, res.merges, res.discarded,
                 (unsigned long long)res.bytes_written);
}

void *sf_proc_compact_main(void *arg) {
  sf_proc *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->compact_mu);
    while (!p->compact_head && !p->compact_quit)
      pthread_cond_wait(&p->compact_cv, &p->compact_mu);
    compact_item *it = p->compact_quit ? NULL : p->compact_head;
    if (it) p->compact_head = it->next;
    pthread_mutex_unlock(&p->compact_mu);
    if (!it) break;
    int32_t part;
    if (sf_proc_compact_owns(p, it->dataset, it->index_name, &part)) {
      compact_index(p, it, part);
    } else {
      sf_proc_plog(p, SF_PROC_LOG_DEBUG,
                   "event=compaction_not_owned dataset=%s index=%s partition=%d",
                   it->dataset, it->index_name, (int)part);
    }
    item_free(it);
  }
  return NULL;
}

sf_code sf_proc_compact_start(sf_proc *p, sf_err *err) {
  if (!p->o.compact) return SF_OK;
  if (pthread_create(&p->compact_thread, NULL, sf_proc_compact_main, p))
    return sf_err_set(err, SF_ENOMEM, "cannot start the compaction thread");
  p->compact_started = 1;
  return SF_OK;
}

void sf_proc_compact_stop(sf_proc *p) {
  if (!p->compact_started) return;
  atomic_store(&p->compact_cancel, 1); /* a running merge stops between partitions */
  pthread_mutex_lock(&p->compact_mu);
  p->compact_quit = 1;
  pthread_cond_broadcast(&p->compact_cv);
  pthread_mutex_unlock(&p->compact_mu);
  pthread_join(p->compact_thread, NULL);
  p->compact_started = 0;
  compact_item *it;
  while ((it = p->compact_head)) {
    p->compact_head = it->next;
    item_free(it);
  }
}
