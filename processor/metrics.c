/*
 * metrics.c - Prometheus text rendering of sf_metrics, served by
 * libmicrohttpd.
 *
 * The listening socket is created and bound here rather than by
 * libmicrohttpd, for two reasons: a failure to bind gets its errno
 * ("Address already in use") instead of MHD's bare NULL, and port 0 can be
 * reported back (getsockname) for tests and for logs. The daemon owns the
 * socket once it started and closes it in MHD_stop_daemon.
 */
#include "processor/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/base/clock.h"

#ifndef SF_VERSION
#define SF_VERSION "unknown"
#endif
#ifndef SF_COMMIT
#define SF_COMMIT "unknown"
#endif
#define STR2(x) #x
#define STR(x) STR2(x)
#define LOAD_PHASE(m) atomic_load_explicit(&(m)->phase, memory_order_relaxed)

static const double build_bounds[SF_METRICS_NBUCKETS] = SF_METRICS_BUILD_BUCKETS;
static const double e2e_bounds[SF_METRICS_NBUCKETS] = SF_METRICS_E2E_BUCKETS;

static void hist_init(sf_histogram *h, const double *bounds) {
  for (int i = 0; i < SF_METRICS_NBUCKETS; i++) h->bounds[i] = bounds[i];
  for (int i = 0; i <= SF_METRICS_NBUCKETS; i++) atomic_init(&h->bucket[i], 0);
  atomic_init(&h->sum_us, 0);
}

void sf_metrics_init(sf_metrics *m) {
  atomic_init(&m->jobs_pending, 0);
  atomic_init(&m->jobs_building, 0);
  atomic_init(&m->jobs_held, 0);
  atomic_init(&m->job_retries, 0);
  atomic_init(&m->builds_running, 0);
  atomic_init(&m->builds_peak, 0);
  atomic_init(&m->build_slots, 0);
  atomic_flag_clear(&m->degraded_lock);
  m->degraded[0] = '\0';
  atomic_init(&m->jobs_committed, 0);
  atomic_init(&m->jobs_failed, 0);
  atomic_init(&m->events_received, 0);
  for (int i = 0; i < SF_REASON_COUNT; i++) atomic_init(&m->events_rejected[i], 0);
  atomic_init(&m->bytes_built, 0);
  atomic_init(&m->paused, 0);
  atomic_init(&m->loop_turn_ms, 0);
  atomic_init(&m->phase, SF_METRICS_STARTING);
  hist_init(&m->build_seconds, build_bounds);
  hist_init(&m->e2e_seconds, e2e_bounds);
  atomic_init(&m->compactions_running, 0);
  for (int i = 0; i < 3; i++) atomic_init(&m->compactions[i], 0);
  atomic_init(&m->compaction_bytes_read, 0);
  atomic_init(&m->compaction_bytes_written, 0);
  hist_init(&m->compaction_seconds, build_bounds);
  for (int i = 0; i < 6; i++) atomic_init(&m->job_states[i], 0);
  atomic_init(&m->oldest_job_ms, 0);
  atomic_init(&m->partitions_assigned, 0);
  atomic_init(&m->caught_up, 0);
  atomic_init(&m->lag_at_ms, 0);
  atomic_init(&m->jobs_asked, 0);
  atomic_init(&m->jobs_answered, 0);
  atomic_flag_clear(&m->text_lock);
  m->lag_text = NULL;
  m->jobs_json = NULL;
}

void sf_metrics_destroy(sf_metrics *m) {
  free(m->lag_text);
  free(m->jobs_json);
  m->lag_text = m->jobs_json = NULL;
}

static const char *const job_state_names[6] = {"waiting",    "queued", "building",
                                               "committing", "failed", "held"};

const char *sf_metrics_job_state_name(sf_metrics_job_state s) {
  return (unsigned)s < 6 ? job_state_names[s] : "unknown";
}

static void text_lock(sf_metrics *m) {
  while (atomic_flag_test_and_set_explicit(&m->text_lock, memory_order_acquire)) {
  }
}

static void text_unlock(sf_metrics *m) {
  atomic_flag_clear_explicit(&m->text_lock, memory_order_release);
}

/* Swaps *slot for s under the lock; frees the old one outside it. */
static void text_swap(sf_metrics *m, char **slot, char *s) {
  text_lock(m);
  char *old = *slot;
  *slot = s;
  text_unlock(m);
  free(old);
}

/* A copy of *slot (NULL when unset or out of memory). */
static char *text_copy(sf_metrics *m, char *const *slot) {
  text_lock(m);
  char *c = *slot ? strdup(*slot) : NULL;
  text_unlock(m);
  return c;
}

void sf_metrics_set_job_states(sf_metrics *m, const int64_t counts[6],
                               int64_t oldest_ms) {
  if (!m) return;
  for (int i = 0; i < 6; i++)
    atomic_store_explicit(&m->job_states[i], counts[i], memory_order_relaxed);
  atomic_store_explicit(&m->oldest_job_ms, oldest_ms, memory_order_relaxed);
}

void sf_metrics_set_lag(sf_metrics *m, char *text, int64_t assigned, bool caught_up,
                        int64_t now_ms) {
  if (!m) {
    free(text);
    return;
  }
  text_swap(m, &m->lag_text, text);
  atomic_store(&m->partitions_assigned, assigned);
  atomic_store(&m->caught_up, caught_up ? 1 : 0);
  atomic_store(&m->lag_at_ms, now_ms > 0 ? now_ms : 1);
}

bool sf_metrics_jobs_wanted(sf_metrics *m, uint64_t *ticket) {
  if (!m) return false;
  uint64_t asked = atomic_load(&m->jobs_asked);
  *ticket = asked;
  return asked != atomic_load(&m->jobs_answered);
}

void sf_metrics_set_jobs(sf_metrics *m, char *json, uint64_t ticket) {
  if (!m) {
    free(json);
    return;
  }
  text_swap(m, &m->jobs_json, json);
  atomic_store(&m->jobs_answered, ticket);
}

/* Asks the poll loop for the /jobs document and waits for it: a malloc'd
 * copy, or NULL when the loop did not answer in time. */
static char *jobs_document(sf_metrics *m) {
  uint64_t ticket = atomic_fetch_add(&m->jobs_asked, 1) + 1;
  int64_t end = sf_clock_mono_ms() + SF_METRICS_JOBS_WAIT_MS;
  while ((int64_t)(atomic_load(&m->jobs_answered) - ticket) < 0) {
    if (sf_clock_mono_ms() > end) return NULL;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
  return text_copy(m, &m->jobs_json);
}

bool sf_metrics_live(sf_metrics *m, int64_t now_ms, char *why, size_t n) {
  int phase = LOAD_PHASE(m);
  int64_t turn = atomic_load_explicit(&m->loop_turn_ms, memory_order_relaxed);
  if (phase == SF_METRICS_SERVING && turn && now_ms - turn > SF_METRICS_STUCK_MS) {
    snprintf(why, n, "stuck: the poll loop has not turned for %lld ms",
             (long long)(now_ms - turn));
    return false;
  }
  snprintf(why, n, "%s",
           phase == SF_METRICS_STARTING   ? "alive: starting"
           : phase == SF_METRICS_DRAINING ? "alive: draining"
                                          : "alive");
  return true;
}

bool sf_metrics_ready(sf_metrics *m, int64_t now_ms, char *why, size_t n) {
  int phase = LOAD_PHASE(m);
  int64_t turn = atomic_load(&m->loop_turn_ms), at = atomic_load(&m->lag_at_ms);
  int64_t assigned = atomic_load(&m->partitions_assigned);
  const char *no = NULL;
  if (phase == SF_METRICS_STARTING)
    no = "not ready: starting";
  else if (phase == SF_METRICS_DRAINING)
    no = "not ready: draining";
  else if (!turn || now_ms - turn > SF_METRICS_STUCK_MS)
    no = "not ready: the poll loop is stuck";
  else if (!at)
    no = "not ready: no consumer statistics yet (statistics.interval.ms)";
  else if (now_ms - at > SF_METRICS_STALE_MS)
    no = "not ready: the consumer statistics are stale";
  else if (!assigned)
    no = "not ready: no partition assigned to this member";
  else if (!atomic_load(&m->caught_up))
    no = "not ready: catching up (a partition is over " STR(
        SF_METRICS_READY_LAG) " messages behind its high watermark)";
  if (no) {
    snprintf(why, n, "%s", no);
    return false;
  }
  snprintf(why, n, "ready: %lld partition(s) assigned, caught up", (long long)assigned);
  return true;
}

void sf_metrics_observe(sf_histogram *h, double seconds) {
  if (!(seconds > 0)) seconds = 0; /* also NaN */
  int i = 0;
  while (i < SF_METRICS_NBUCKETS && seconds > h->bounds[i]) i++;
  atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
  double us = seconds * 1e6;
  atomic_fetch_add_explicit(&h->sum_us, us < 1.8e19 ? (uint64_t)us : UINT64_MAX / 2,
                            memory_order_relaxed);
}

void sf_metrics_reject(sf_metrics *m, sf_event_reason reason) {
  if ((unsigned)reason >= SF_REASON_COUNT) reason = SF_REASON_NONE;
  atomic_fetch_add_explicit(&m->events_rejected[reason], 1, memory_order_relaxed);
}

void sf_metrics_event_received(sf_metrics *m) {
  if (m) atomic_fetch_add_explicit(&m->events_received, 1, memory_order_relaxed);
}

void sf_metrics_set_paused(sf_metrics *m, bool paused) {
  if (m) atomic_store(&m->paused, paused);
}

void sf_metrics_set_build_slots(sf_metrics *m, int64_t slots) {
  if (m) atomic_store(&m->build_slots, slots);
}

void sf_metrics_set_load(sf_metrics *m, int64_t jobs_pending, int64_t jobs_building,
                         int64_t builds_running, int64_t builds_peak) {
  if (!m) return;
  atomic_store_explicit(&m->builds_running, builds_running, memory_order_relaxed);
  atomic_store_explicit(&m->builds_peak, builds_peak, memory_order_relaxed);
  atomic_store_explicit(&m->jobs_pending, jobs_pending, memory_order_relaxed);
  atomic_store_explicit(&m->jobs_building, jobs_building, memory_order_relaxed);
}

void sf_metrics_set_jobs_held(sf_metrics *m, int64_t held) {
  if (m) atomic_store(&m->jobs_held, held);
}

void sf_metrics_loop_turn(sf_metrics *m, int64_t now_ms) {
  if (m) atomic_store_explicit(&m->loop_turn_ms, now_ms, memory_order_relaxed);
}

void sf_metrics_set_phase(sf_metrics *m, sf_metrics_phase phase) {
  if (m) atomic_store(&m->phase, phase);
}

void sf_metrics_job_retried(sf_metrics *m) {
  if (m) atomic_fetch_add(&m->job_retries, 1);
}

void sf_metrics_job_failed(sf_metrics *m) {
  if (m) atomic_fetch_add(&m->jobs_failed, 1);
}

void sf_metrics_job_committed(sf_metrics *m, uint64_t bytes_built, double build_seconds,
                              double e2e_seconds) {
  if (!m) return;
  atomic_fetch_add(&m->jobs_committed, 1);
  atomic_fetch_add(&m->bytes_built, bytes_built);
  sf_metrics_observe(&m->build_seconds, build_seconds);
  if (e2e_seconds >= 0) sf_metrics_observe(&m->e2e_seconds, e2e_seconds);
}

void sf_metrics_set_compactions_running(sf_metrics *m, int64_t running) {
  if (m) atomic_store(&m->compactions_running, running);
}

void sf_metrics_compaction_done(sf_metrics *m, sf_metrics_compaction_result r,
                                uint64_t bytes_read, uint64_t bytes_written,
                                double seconds) {
  if (!m || (unsigned)r > SF_METRICS_COMPACTION_FAILED) return;
  atomic_fetch_add(&m->compactions[r], 1);
  atomic_fetch_add(&m->compaction_bytes_read, bytes_read);
  atomic_fetch_add(&m->compaction_bytes_written, bytes_written);
  sf_metrics_observe(&m->compaction_seconds, seconds);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static void header(FILE *f, const char *name, const char *type, const char *help) {
  fprintf(f, "# HELP segforge_%s %s\n# TYPE segforge_%s %s\n", name, help, name, type);
}

static void gauge(FILE *f, const char *name, const char *help, long long v) {
  header(f, name, "gauge", help);
  fprintf(f, "segforge_%s %lld\n", name, v);
}

static void counter(FILE *f, const char *name, const char *help, unsigned long long v) {
  header(f, name, "counter", help);
  fprintf(f, "segforge_%s %llu\n", name, v);
}

/* The lines of text (may be NULL) that begin with prefix: one family's
 * samples, which must follow its TYPE line. */
static void lines_with(FILE *f, const char *text, const char *prefix) {
  size_t n = strlen(prefix);
  for (const char *l = text; l && *l;) {
    const char *nl = strchr(l, '\n');
    size_t len = nl ? (size_t)(nl - l + 1) : strlen(l);
    if (!strncmp(l, prefix, n)) fwrite(l, 1, len, f);
    l += len;
  }
}

/* The standard process metrics, from /proc/self (Linux). */
static void process_metrics(FILE *f) {
  long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
  long long rss = 0;
  FILE *st = fopen("/proc/self/stat", "r");
  int ok = 0;
  if (st) {
    char buf[1024];
    size_t got = fread(buf, 1, sizeof buf - 1, st);
    buf[got] = '\0';
    fclose(st);
    /* The command name may hold spaces: fields resume after its ')'. */
    char *r = strrchr(buf, ')');
    ok = r && sscanf(r + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d "
                     "%*d %*d %*d %*d %llu %llu %lld",
                     &utime, &stime, &start, &vsize, &rss) == 5;
  }
  double boot = 0;
  FILE *ps = fopen("/proc/stat", "r");
  if (ps) {
    char line[256];
    while (fgets(line, sizeof line, ps))
      if (!strncmp(line, "btime ", 6)) boot = strtod(line + 6, NULL);
    fclose(ps);
  }
  if (ok && tick > 0) {
    fprintf(f,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
            "seconds.\n# TYPE process_cpu_seconds_total counter\n"
            "process_cpu_seconds_total %.2f\n",
            (double)(utime + stime) / (double)tick);
    fprintf(f,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\n"
            "process_resident_memory_bytes %lld\n",
            rss * (long long)page);
    fprintf(f,
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\n"
            "process_virtual_memory_bytes %llu\n",
            vsize);
    if (boot > 0)
      fprintf(f,
              "# HELP process_start_time_seconds Start time of the process since unix "
              "epoch in seconds.\n# TYPE process_start_time_seconds gauge\n"
              "process_start_time_seconds %.2f\n",
              boot + (double)start / (double)tick);
  }
  long nfds = -1;
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    nfds = 0;
    for (struct dirent *e; (e = readdir(d));)
      if (e->d_name[0] != '.') nfds++;
    closedir(d);
    nfds--; /* the directory's own descriptor */
  }
  if (nfds >= 0)
    fprintf(f,
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n",
            nfds);
  struct rlimit rl;
  if (!getrlimit(RLIMIT_NOFILE, &rl))
    fprintf(f,
            "# HELP process_max_fds Maximum number of open file descriptors.\n"
            "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
            rl.rlim_cur == RLIM_INFINITY ? 1048576ULL : (unsigned long long)rl.rlim_cur);
}

static void histogram(FILE *f, const char *name, const char *help,
                      const sf_histogram *h) {
  header(f, name, "histogram", help);
  /* Cumulative counts, and _count from the same reads, so that _count
   * always equals the +Inf bucket. */
  uint64_t cum = 0;
  for (int i = 0; i <= SF_METRICS_NBUCKETS; i++) {
    cum += LOAD(h->bucket[i]);
    if (i < SF_METRICS_NBUCKETS)
      fprintf(f, "segforge_%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
              (unsigned long long)cum);
    else
      fprintf(f, "segforge_%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
  }
  fprintf(f, "segforge_%s_sum %.6f\n", name, (double)LOAD(h->sum_us) / 1e6);
  fprintf(f, "segforge_%s_count %llu\n", name, (unsigned long long)cum);
}

static void degraded_lock(sf_metrics *m) {
  while (atomic_flag_test_and_set_explicit(&m->degraded_lock, memory_order_acquire)) {
  }
}

static void degraded_unlock(sf_metrics *m) {
  atomic_flag_clear_explicit(&m->degraded_lock, memory_order_release);
}

void sf_metrics_set_degraded(sf_metrics *m, const char *why) {
  degraded_lock(m);
  snprintf(m->degraded, sizeof m->degraded, "%s", why ? why : "");
  degraded_unlock(m);
}

sf_metrics_health_state sf_metrics_health(sf_metrics *m, int64_t now_ms, char *why,
                                          size_t n) {
  int phase = LOAD(m->phase);
  int64_t turn = LOAD(m->loop_turn_ms);
  const char *down = NULL;
  if (phase == SF_METRICS_STARTING)
    down = "starting: the poll loop has not run yet";
  else if (phase == SF_METRICS_DRAINING)
    down = "draining: the processor is stopping";
  else if (!turn || now_ms - turn > SF_METRICS_STUCK_MS)
    down = "stuck: the poll loop has not turned for over 30 s";
  if (down) {
    snprintf(why, n, "%s", down);
    return SF_HEALTH_DOWN;
  }
  degraded_lock(m);
  int degraded = m->degraded[0] != '\0';
  if (degraded) snprintf(why, n, "degraded: %s", m->degraded);
  degraded_unlock(m);
  if (!degraded) snprintf(why, n, "ok");
  return degraded ? SF_HEALTH_DEGRADED : SF_HEALTH_OK;
}

char *sf_metrics_render(const sf_metrics *m, size_t *len) {
  char *buf = NULL;
  size_t n = 0;
  FILE *f = open_memstream(&buf, &n);
  if (!f) return NULL;
  gauge(f, "jobs_pending", "Jobs seen whose shards do not yet cover their fragments.",
        (long long)LOAD(m->jobs_pending));
  gauge(f, "jobs_building", "Jobs whose segments are being built or committed.",
        (long long)LOAD(m->jobs_building));
  gauge(f, "jobs_held",
        "Jobs held because their dataset fails (full, read-only, I/O errors); "
        "retried with backoff.",
        (long long)LOAD(m->jobs_held));
  counter(f, "job_retries_total", "Attempts of held jobs after their first.",
          (unsigned long long)LOAD(m->job_retries));
  gauge(f, "builds_running", "Segment builds running in the process.",
        (long long)LOAD(m->builds_running));
  gauge(f, "builds_running_peak", "Most segment builds running at once since start.",
        (long long)LOAD(m->builds_peak));
  gauge(f, "build_slots", "Segment builds the process may run at once (--max-merges).",
        (long long)LOAD(m->build_slots));
  counter(f, "jobs_committed_total", "Jobs committed to the catalog.",
          (unsigned long long)LOAD(m->jobs_committed));
  counter(f, "jobs_failed_total", "Jobs failed and reported on the dead-letter topic.",
          (unsigned long long)LOAD(m->jobs_failed));
  counter(f, "events_received_total", "ShardStaged messages consumed.",
          (unsigned long long)LOAD(m->events_received));
  header(f, "events_rejected_total", "counter",
         "Events dead-lettered, by reason code (NONE: not the event's fault).");
  for (int r = 0; r < SF_REASON_COUNT; r++)
    fprintf(f, "segforge_events_rejected_total{reason=\"%s\"} %llu\n",
            sf_event_reason_name((sf_event_reason)r),
            (unsigned long long)LOAD(m->events_rejected[r]));
  counter(f, "bytes_built_total", "Bytes of segment files written.",
          (unsigned long long)LOAD(m->bytes_built));
  gauge(f, "consumer_paused",
        "1 while the consumer's partitions are paused (back-pressure).",
        LOAD(m->paused) ? 1 : 0);
  histogram(f, "build_duration_seconds", "Time to plan, build and commit one job.",
            &m->build_seconds);
  histogram(f, "end_to_end_seconds",
            "Time from a job's first staged_at_ms to its commit.", &m->e2e_seconds);
  gauge(f, "compactions_running", "Merges of committed segments running in serve.",
        (long long)LOAD(m->compactions_running));
  header(f, "compactions_total", "counter",
         "Merges of committed segments ended, by result (discarded: another "
         "compactor or a replace swapped an input out first).");
  static const char *const results[3] = {"committed", "discarded", "failed"};
  for (int r = 0; r < 3; r++)
    fprintf(f, "segforge_compactions_total{result=\"%s\"} %llu\n", results[r],
            (unsigned long long)LOAD(m->compactions[r]));
  counter(f, "compaction_bytes_read_total", "Bytes of input segments merged.",
          (unsigned long long)LOAD(m->compaction_bytes_read));
  counter(f, "compaction_bytes_written_total",
          "Bytes of merged segments written (rewritten bytes).",
          (unsigned long long)LOAD(m->compaction_bytes_written));
  histogram(f, "compaction_duration_seconds", "Time to build and commit one merge.",
            &m->compaction_seconds);
  header(f, "jobs", "gauge",
         "Open jobs by state (waiting: for shards; queued: for a finalize thread; "
         "committing: segments built, commit and announcement).");
  for (int i = 0; i < 6; i++)
    fprintf(f, "segforge_jobs{state=\"%s\"} %lld\n", job_state_names[i],
            (long long)LOAD(m->job_states[i]));
  int64_t oldest = LOAD(m->oldest_job_ms);
  header(f, "oldest_job_age_seconds", "gauge",
         "Seconds since the first event of the oldest open job arrived (0: none).");
  fprintf(f, "segforge_oldest_job_age_seconds %.3f\n",
          oldest ? (double)(sf_clock_mono_ms() - oldest) / 1e3 : 0.0);
  gauge(f, "partitions_assigned", "ShardStaged partitions assigned to this member.",
        (long long)LOAD(m->partitions_assigned));
  char *lag = text_copy((sf_metrics *)m, &((sf_metrics *)m)->lag_text);
  header(f, "consumer_lag", "gauge",
         "Messages between a partition's high watermark and the group's committed "
         "offset (librdkafka statistics; -1: unknown).");
  lines_with(f, lag, "segforge_consumer_lag{");
  header(f, "consumer_read_lag", "gauge",
         "Messages between a partition's high watermark and the position read.");
  lines_with(f, lag, "segforge_consumer_read_lag{");
  free(lag);
  header(f, "build_info", "gauge", "The build: version and commit; always 1.");
  fprintf(f, "segforge_build_info{version=\"%s\",commit=\"%s\"} 1\n", SF_VERSION,
          SF_COMMIT);
  int64_t turn = LOAD(m->loop_turn_ms);
  header(f, "poll_loop_age_seconds", "gauge",
         "Seconds since the consumer's poll loop last turned (-1 before it runs).");
  fprintf(f, "segforge_poll_loop_age_seconds %.3f\n",
          turn ? (double)(sf_clock_mono_ms() - turn) / 1e3 : -1.0);
  process_metrics(f);
  if (fclose(f) != 0) {
    free(buf);
    return NULL;
  }
  if (len) *len = n;
  return buf;
}

struct sf_metrics_server {
  struct MHD_Daemon *d;
  sf_metrics *m;
  unsigned port;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
  if (!r) {
    if (mode == MHD_RESPMEM_MUST_FREE) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, "Allow", "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version,
                              const char *upload_data, size_t *upload_data_size,
                              void **con_cls) {
  sf_metrics_server *s = cls;
  static const char text[] = "text/plain; charset=utf-8";
  if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD)) {
    static char msg[] = "only GET and HEAD\n";
    return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, text, msg, sizeof msg - 1,
                 MHD_RESPMEM_PERSISTENT);
  }
  if (!strcmp(url, "/metrics")) {
    size_t len = 0;
    char *body = sf_metrics_render(s->m, &len);
    if (!body) {
      static char msg[] = "out of memory\n";
      return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, msg, sizeof msg - 1,
                   MHD_RESPMEM_PERSISTENT);
    }
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                 MHD_RESPMEM_MUST_FREE);
  }
  if (!strcmp(url, "/healthz")) {
    /* Degraded answers 200: the process is alive and serving every other
     * dataset, and a restart (what a liveness probe's failure brings) would
     * not mend a dataset, only stop the others. The body says degraded. */
    char why[SF_METRICS_DEGRADED_MAX + 64];
    int ok =
        sf_metrics_health(s->m, sf_clock_mono_ms(), why, sizeof why) != SF_HEALTH_DOWN;
    char *body = NULL;
    int n = asprintf(&body, "%s\n", why);
    if (n < 0) {
      static char msg[] = "out of memory\n";
      return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, msg, sizeof msg - 1,
                   MHD_RESPMEM_PERSISTENT);
    }
    return reply(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, body,
                 (size_t)n, MHD_RESPMEM_MUST_FREE);
  }
  if (!strcmp(url, "/livez") || !strcmp(url, "/readyz")) {
    char why[256];
    int64_t now = sf_clock_mono_ms();
    bool ok = url[1] == 'l' ? sf_metrics_live(s->m, now, why, sizeof why)
                            : sf_metrics_ready(s->m, now, why, sizeof why);
    char *body = NULL;
    int n = asprintf(&body, "%s\n", why);
    if (n < 0) {
      static char msg[] = "out of memory\n";
      return reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, text, msg, sizeof msg - 1,
                   MHD_RESPMEM_PERSISTENT);
    }
    return reply(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, text, body,
                 (size_t)n, MHD_RESPMEM_MUST_FREE);
  }
  if (!strcmp(url, "/jobs")) {
    char *body = jobs_document(s->m);
    if (!body) {
      static char msg[] =
          "{\"error\":\"the poll loop did not answer within 5 s (starting, stopped or "
          "stuck)\"}\n";
      return reply(c, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", msg,
                   sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
    }
    return reply(c, MHD_HTTP_OK, "application/json", body, strlen(body),
                 MHD_RESPMEM_MUST_FREE);
  }
  if (!strcmp(url, "/")) {
    static char msg[] =
        "segforge: metrics at /metrics, open jobs at /jobs, probes at /livez, /readyz "
        "and /healthz\n";
    return reply(c, MHD_HTTP_OK, text, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
  }
  static char msg[] = "not found: try /metrics, /jobs, /livez, /readyz or /healthz\n";
  return reply(c, MHD_HTTP_NOT_FOUND, text, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
}

/* Splits "HOST:PORT" or "[V6]:PORT" into host and port. */
static sf_code split_addr(const char *addr, char *host, size_t hn, char *port, size_t pn,
                          sf_err *err) {
  const char *colon, *h = addr;
  size_t hl;
  if (*addr == '[') {
    const char *end = strchr(addr, ']');
    if (!end || end[1] != ':') goto bad;
    h = addr + 1;
    hl = (size_t)(end - h);
    colon = end + 1;
  } else {
    colon = strrchr(addr, ':');
    if (!colon) goto bad;
    hl = (size_t)(colon - addr);
  }
  const char *p = colon + 1;
  if (hl == 0 || hl >= hn || !*p || strlen(p) >= pn ||
      strspn(p, "0123456789") != strlen(p) || atol(p) > 65535)
    goto bad;
  memcpy(host, h, hl);
  host[hl] = '\0';
  strcpy(port, p);
  return SF_OK;
bad:
  return sf_err_set(err, SF_EINVAL,
                    "metrics address '%s': expected HOST:PORT (e.g. 127.0.0.1:9464, "
                    "[::1]:9464; port 0 picks a free one)",
                    addr);
}

/* A bound, listening socket for addr; -1 with err set. */
static int listen_on(const char *addr, unsigned *port_out, int *family, sf_err *err) {
  char host[256], port[8];
  if (split_addr(addr, host, sizeof host, port, sizeof port, err)) return -1;
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
                  *res = NULL;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai) {
    sf_err_set(err, SF_EINVAL, "metrics address '%s': %s", addr, gai_strerror(gai));
    return -1;
  }
  int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    sf_err_errno(err, SF_EIO, errno, "metrics address '%s': socket", addr);
    freeaddrinfo(res);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 32)) {
    sf_err_errno(err, SF_EIO, errno, "cannot listen on %s for metrics", addr);
    close(fd);
    freeaddrinfo(res);
    return -1;
  }
  *family = res->ai_family;
  freeaddrinfo(res);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
  return fd;
}

sf_code sf_metrics_serve(sf_metrics *m, const char *addr, sf_metrics_server **out,
                         sf_err *err) {
  *out = NULL;
  sf_metrics_server *s = calloc(1, sizeof *s);
  if (!s) return sf_err_set(err, SF_ENOMEM, "out of memory");
  s->m = m;
  int family = AF_INET;
  int fd = listen_on(addr, &s->port, &family, err);
  if (fd < 0) {
    free(s);
    return err ? err->code : SF_EIO;
  }
  /* No MHD_USE_ERROR_LOG: libraries never print. Few connections and a
   * short idle timeout: a scraper needs one at a time. A thread per
   * connection: /jobs waits up to SF_METRICS_JOBS_WAIT_MS for the poll
   * loop, and on one shared thread that wait held every probe and scrape
   * behind it (a liveness probe times out after 1 s). */
  unsigned flags =
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO;
  if (family == AF_INET6) flags |= MHD_USE_IPv6;
  s->d = MHD_start_daemon(flags, 0, NULL, NULL, handle, s, MHD_OPTION_LISTEN_SOCKET, fd,
                          MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
                          MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
  if (!s->d) {
    close(fd);
    free(s);
    return sf_err_set(err, SF_EIO, "cannot start the metrics server on %s", addr);
  }
  *out = s;
  return SF_OK;
}

unsigned sf_metrics_server_port(const sf_metrics_server *s) {
  return s->port;
}

void sf_metrics_server_stop(sf_metrics_server *s) {
  if (!s) return;
  MHD_stop_daemon(s->d); /* joins the thread, closes the socket */
  free(s);
}
