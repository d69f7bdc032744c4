/*
 * processor_status.c - what the processor tells an operator beyond its
 * counters: the open jobs (GET /jobs, `segforge status`), the jobs by state
 * and the oldest one's age (gauges), and the consumer's lag per partition
 * from librdkafka's statistics (gauges, and /readyz's "caught up").
 *
 * Everything here runs on the poll loop's thread, the only one that may
 * read the job table: the statistics callback is served by
 * rd_kafka_consumer_poll (the main queue is forwarded to the consumer's),
 * and /jobs is answered on the loop's next turn (the HTTP thread waits for
 * it, metrics.h). A job's state is read from the table and from its task:
 * `phase`, which the finalize thread moves from queued to building to
 * committing, is the one field written elsewhere, and it is atomic.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fragset.h"
#include "processor/processor_internal.h"

/* How often the gauges of jobs by state are refreshed: they walk the
 * whole table, so not at every turn. */
#define STATES_EVERY_MS 1000

static sf_metrics_job_state job_state(const sf_job *j) {
  const task *t = j->user;
  if (j->state == SF_JOB_WAITING || j->nwaiting || (t && t->held))
    return SF_METRICS_JOB_HELD;
  switch (j->state) {
    case SF_JOB_OPEN:
      return SF_METRICS_JOB_WAITING;
    case SF_JOB_FAILED:
      return SF_METRICS_JOB_FAILED;
    case SF_JOB_READY:
      if (!t) return SF_METRICS_JOB_QUEUED;
      switch (atomic_load(&t->phase)) {
        case 0:
          return SF_METRICS_JOB_QUEUED;
        case 1:
          return SF_METRICS_JOB_BUILDING;
        default:
          return SF_METRICS_JOB_COMMITTING;
      }
    default:
      return SF_METRICS_JOB_WAITING;
  }
}

/* The fragments a job still lacks: a malloc'd range list ("" for none), or
 * NULL when it has no shard yet (nothing says what it expects) or without
 * memory. */
static char *missing_fragments(const sf_job *j) {
  if (!j->nshards || !j->shards[0].ev.expected_fragments) return NULL;
  const roaring_bitmap_t *have = j->covered ? j->covered : j->shards[0].ev.fragments;
  roaring_bitmap_t *miss =
      roaring_bitmap_andnot(j->shards[0].ev.expected_fragments, have);
  if (!miss) return NULL;
  char *s = sf_fragset_format(miss);
  sf_fragset_free(miss);
  return s;
}

/* A JSON string of s (NULL: null), its bytes that are not UTF-8 each
 * replaced by U+FFFD: a dataset's real path or an error naming a file may
 * hold any byte, and json_string refuses them, which failed the whole
 * document. NULL without memory. */
static json_t *jtext(const char *s) {
  if (!s) return json_null();
  json_t *j = json_string(s);
  if (j) return j;
  size_t n = strlen(s);
  char *w = malloc(3 * n + 1), *o = w;
  if (!w) return NULL;
  for (size_t i = 0; i < n;) {
    unsigned char c = (unsigned char)s[i];
    size_t k = c < 0x80             ? 1
               : (c & 0xe0) == 0xc0 ? 2
               : (c & 0xf0) == 0xe0 ? 3
               : (c & 0xf8) == 0xf0 ? 4
                                    : 0;
    json_t *t = k && i + k <= n ? json_stringn(s + i, k) : NULL;
    if (t) {
      json_decref(t);
      memcpy(o, s + i, k);
      o += k;
      i += k;
    } else {
      memcpy(o, "\xef\xbf\xbd", 3);
      o += 3;
      i++;
    }
  }
  *o = '\0';
  j = json_string(w);
  free(w);
  return j;
}

typedef struct walk {
  sf_proc *p;
  int64_t now;
  int64_t counts[6];
  int64_t oldest; /* smallest first_seen_ms; 0: none */
  json_t *jobs;   /* NULL: count only */
  int oom;
} walk;

static void add_job(walk *w, const sf_job *j) {
  const task *t = j->user;
  sf_metrics_job_state st = job_state(j);
  json_t *o = json_object();
  char *miss = missing_fragments(j);
  char *expected = j->nshards && j->shards[0].ev.expected_fragments
                       ? sf_fragset_format(j->shards[0].ev.expected_fragments)
                       : NULL;
  int32_t part = j->nrefs      ? j->refs[0].partition
                 : j->nwaiting ? j->waiting[0].ref.partition
                               : -1;
  if (!o || json_object_set_new(o, "dataset", jtext(sf_proc_job_dataset(j))) ||
      json_object_set_new(o, "staging_id", jtext(j->staging_id)) ||
      json_object_set_new(o, "index_name",
                          j->nshards && j->shards[0].ev.index_name
                              ? jtext(j->shards[0].ev.index_name)
                              : json_null()) ||
      json_object_set_new(o, "state", json_string(sf_metrics_job_state_name(st))) ||
      json_object_set_new(o, "missing_fragments",
                          miss ? json_string(miss) : json_null()) ||
      json_object_set_new(o, "expected_fragments",
                          expected ? json_string(expected) : json_null()) ||
      json_object_set_new(o, "shards_seen", json_integer((json_int_t)j->nshards)) ||
      json_object_set_new(o, "events",
                          json_integer((json_int_t)(j->nrefs + j->nwaiting))) ||
      json_object_set_new(o, "age_seconds",
                          json_real((double)(w->now - j->first_seen_ms) / 1e3)) ||
      json_object_set_new(o, "partition", json_integer(part)))
    w->oom = 1;
  if (o && j->state == SF_JOB_OPEN && !w->p->frozen_since_ms &&
      json_object_set_new(o, "timeout_in_seconds",
                          json_real((double)(j->deadline_ms - w->now) / 1e3)))
    w->oom = 1;
  if (o && (j->state == SF_JOB_FAILED) &&
      (json_object_set_new(o, "reason", json_string(sf_event_reason_name(j->reason))) ||
       json_object_set_new(o, "message", jtext(j->message ? j->message : ""))))
    w->oom = 1;
  if (o && t && t->held &&
      (json_object_set_new(o, "attempts", json_integer(t->attempts)) ||
       json_object_set_new(o, "error", jtext(t->held_err.msg))))
    w->oom = 1;
  free(miss);
  free(expected);
  if (!o || json_array_append_new(w->jobs, o)) w->oom = 1;
}

static void visit(void *ctx, const sf_job *j) {
  walk *w = ctx;
  w->counts[job_state(j)]++;
  if (j->first_seen_ms && (!w->oldest || j->first_seen_ms < w->oldest))
    w->oldest = j->first_seen_ms;
  if (w->jobs) add_job(w, j);
}

/* Oldest first, then by staging id: a stable order to read. */
static int by_age(const void *a, const void *b) {
  json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
  double ax = json_real_value(json_object_get(x, "age_seconds")),
         ay = json_real_value(json_object_get(y, "age_seconds"));
  if (ax != ay) return ax < ay ? 1 : -1;
  return strcmp(json_string_value(json_object_get(x, "staging_id")),
                json_string_value(json_object_get(y, "staging_id")));
}

/* The /jobs document: {"group", "assigned", "jobs": [...]}; malloc'd, or
 * NULL without memory. */
static char *jobs_json(sf_proc *p, walk *w) {
  size_t n = json_array_size(w->jobs);
  json_t **v = n ? malloc(n * sizeof *v) : NULL;
  if (n && !v) return NULL;
  for (size_t i = 0; i < n; i++) v[i] = json_incref(json_array_get(w->jobs, i));
  if (n) qsort(v, n, sizeof *v, by_age);
  json_t *sorted = json_array();
  for (size_t i = 0; sorted && i < n; i++)
    if (json_array_append(sorted, v[i])) w->oom = 1;
  for (size_t i = 0; i < n; i++) json_decref(v[i]);
  free(v);
  json_t *doc = json_object();
  json_t *counts = json_object();
  for (int s = 0; counts && s < 6; s++)
    if (json_object_set_new(counts, sf_metrics_job_state_name((sf_metrics_job_state)s),
                            json_integer(w->counts[s])))
      w->oom = 1;
  const char *group = sf_kconf_get(p->kconf, "group.id");
  char *out = NULL;
  if (doc && sorted && counts && !w->oom &&
      !json_object_set_new(doc, "group", jtext(group ? group : "")) &&
      !json_object_set_new(doc, "topic", jtext(p->topic)) &&
      !json_object_set_new(doc, "partitions_assigned",
                           json_integer((json_int_t)p->assigned)) &&
      !json_object_set_new(doc, "counts", json_incref(counts)) &&
      !json_object_set_new(doc, "jobs", json_incref(sorted)))
    out = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  json_decref(counts);
  json_decref(sorted);
  json_decref(doc);
  if (out) { /* json_dumps' allocator is malloc; the caller frees with free */
    size_t len = strlen(out);
    char *nl = realloc(out, len + 2);
    if (nl) {
      nl[len] = '\n';
      nl[len + 1] = '\0';
      out = nl;
    }
  }
  return out;
}

void sf_proc_status_turn(sf_proc *p, int64_t now) {
  sf_metrics *m = p->o.metrics;
  if (!m) return;
  uint64_t ticket = 0;
  int wanted = sf_metrics_jobs_wanted(m, &ticket);
  if (!wanted && now - p->states_at_ms < STATES_EVERY_MS) return;
  walk w = {.p = p, .now = now, .jobs = wanted ? json_array() : NULL};
  sf_jobs_foreach(p->jobs, visit, &w);
  sf_metrics_set_job_states(m, w.counts, w.oldest);
  p->states_at_ms = now;
  if (wanted) {
    char *doc = w.jobs && !w.oom ? jobs_json(p, &w) : NULL;
    if (!doc) doc = strdup("{\"error\":\"out of memory\"}\n");
    sf_metrics_set_jobs(m, doc, ticket);
  }
  json_decref(w.jobs);
}

/* ---- consumer lag ---------------------------------------------------------- */

static int64_t jint(json_t *o, const char *key) {
  json_t *v = json_object_get(o, key);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

/* librdkafka's statistics (STATISTICS.md), every statistics.interval.ms:
 * for each assigned partition of the ShardStaged topic, the lag behind the
 * last stable offset (the high watermark under read_uncommitted) of the
 * group's committed offset (consumer_lag, what Kafka's tools show) and of
 * the position read. Returns 0 so that librdkafka frees the JSON. */
int sf_proc_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  sf_proc *p = opaque;
  if (!p->o.metrics) return 0;
  json_t *root = json_loadb(json, len, 0, NULL);
  json_t *parts = json_object_get(
      json_object_get(json_object_get(root, "topics"), p->topic), "partitions");
  rd_kafka_topic_partition_list_t *asg = NULL;
  if (rd_kafka_assignment(rk, &asg)) asg = NULL;
  char *text = NULL;
  size_t tlen = 0;
  FILE *f = open_memstream(&text, &tlen);
  int64_t assigned = 0;
  int caught_up = 1;
  for (int i = 0; asg && i < asg->cnt; i++) {
    if (strcmp(asg->elems[i].topic, p->topic)) continue;
    assigned++;
    char key[16];
    snprintf(key, sizeof key, "%d", (int)asg->elems[i].partition);
    json_t *o = json_object_get(parts, key);
    int64_t end = jint(o, "ls_offset");
    if (end < 0) end = jint(o, "hi_offset");
    int64_t pos = jint(o, "app_offset");
    if (pos < 0) pos = jint(o, "committed_offset");
    if (pos < 0) pos = jint(o, "lo_offset");
    int64_t read_lag = end >= 0 && pos >= 0 ? (end > pos ? end - pos : 0) : -1;
    if (read_lag < 0 || read_lag > SF_METRICS_READY_LAG) caught_up = 0;
    if (f) {
      fprintf(f, "segforge_consumer_lag{topic=\"%s\",partition=\"%s\"} %lld\n", p->topic,
              key, (long long)jint(o, "consumer_lag"));
      fprintf(f, "segforge_consumer_read_lag{topic=\"%s\",partition=\"%s\"} %lld\n",
              p->topic, key, (long long)read_lag);
    }
  }
  if (asg) rd_kafka_topic_partition_list_destroy(asg);
  json_decref(root);
  if (f && fclose(f)) {
    free(text);
    text = NULL;
  } else if (!f) {
    text = NULL;
  }
  p->assigned = (size_t)assigned;
  sf_metrics_set_lag(p->o.metrics, text, assigned, assigned > 0 && caught_up,
                     sf_clock_mono_ms());
  return 0;
}
