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

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/base/clock.h"

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
  int64_t turn = LOAD(m->loop_turn_ms);
  header(f, "poll_loop_age_seconds", "gauge",
         "Seconds since the consumer's poll loop last turned (-1 before it runs).");
  fprintf(f, "segforge_poll_loop_age_seconds %.3f\n",
          turn ? (double)(sf_clock_mono_ms() - turn) / 1e3 : -1.0);
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
  if (!strcmp(url, "/")) {
    static char msg[] = "segforge: metrics at /metrics, liveness at /healthz\n";
    return reply(c, MHD_HTTP_OK, text, msg, sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
  }
  static char msg[] = "not found: try /metrics or /healthz\n";
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
   * short idle timeout: a scraper needs one at a time. */
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
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
