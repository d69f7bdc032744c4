/*
 * test_metrics.c - the Prometheus exposition of the processor's metrics:
 * the text parses line by line (HELP and TYPE before every family, sample
 * syntax, cumulative buckets whose +Inf equals _count), values follow the
 * struct, and the HTTP server answers /metrics, 404 and 405 on an
 * ephemeral port and reports bad or busy addresses.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/clock.h"
#include "processor/metrics.h"

/* The value of the sample named exactly `name` (with labels, if any). */
static double sample(const char *text, const char *name) {
  size_t n = strlen(name);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (!strncmp(p, name, n) && p[n] == ' ') return strtod(p + n + 1, NULL);
  fail_msg("no sample %s", name);
  return -1;
}

/* Checks the exposition format line by line; returns the number of
 * samples. */
static int check_exposition(const char *text) {
  regex_t help, type, smp;
  assert_int_equal(
      regcomp(&help, "^# HELP ((segforge|process)_[a-z_]+) [^\n]+$", REG_EXTENDED), 0);
  assert_int_equal(
      regcomp(&type, "^# TYPE ((segforge|process)_[a-z_]+) (counter|gauge|histogram)$",
              REG_EXTENDED),
      0);
  assert_int_equal(
      regcomp(
          &smp,
          "^((segforge|process)_[a-z_]+)(\\{[a-z]+=\"[^\"]*\"(,[a-z]+=\"[^\"]*\")*\\})? "
          "(-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?)$",
          REG_EXTENDED),
      0);
  char family[128] = "", ftype[16] = "", helped[128] = "";
  int samples = 0;
  double last_bucket = -1, inf_bucket = -1;
  char *copy = strdup(text), *save = NULL;
  assert_int_equal(text[strlen(text) - 1], '\n');
  for (char *line = strtok_r(copy, "\n", &save); line;
       line = strtok_r(NULL, "\n", &save)) {
    regmatch_t m[8];
    if (!regexec(&help, line, 2, m, 0)) {
      snprintf(helped, sizeof helped, "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
               line + m[1].rm_so);
      continue;
    }
    if (!regexec(&type, line, 4, m, 0)) {
      snprintf(family, sizeof family, "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
               line + m[1].rm_so);
      snprintf(ftype, sizeof ftype, "%.*s", (int)(m[3].rm_eo - m[3].rm_so),
               line + m[3].rm_so);
      assert_string_equal(family, helped); /* HELP then TYPE, same name */
      last_bucket = inf_bucket = -1;
      continue;
    }
    if (regexec(&smp, line, 8, m, 0)) fail_msg("not an exposition line: '%s'", line);
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(m[1].rm_eo - m[1].rm_so),
             line + m[1].rm_so);
    double v = strtod(line + m[5].rm_so, NULL);
    size_t fl = strlen(family);
    if (!strcmp(ftype, "histogram")) {
      assert_true(!strncmp(name, family, fl));
      const char *suffix = name + fl;
      if (!strcmp(suffix, "_bucket")) {
        assert_true(v >= last_bucket); /* cumulative */
        last_bucket = v;
        if (strstr(line, "le=\"+Inf\"")) inf_bucket = v;
      } else if (!strcmp(suffix, "_count")) {
        assert_true(inf_bucket >= 0);
        assert_true(v == inf_bucket);
      } else
        assert_string_equal(suffix, "_sum");
    } else {
      assert_string_equal(name, family);
      if (!strcmp(ftype, "counter")) {
        assert_true(v >= 0);
        assert_true(strlen(name) > 6 && !strcmp(name + strlen(name) - 6, "_total"));
      }
    }
    samples++;
  }
  free(copy);
  regfree(&help);
  regfree(&type);
  regfree(&smp);
  return samples;
}

static void rendering_parses_and_follows_the_struct(void **state) {
  sf_metrics m;
  sf_metrics_init(&m);
  atomic_store(&m.jobs_pending, 3);
  atomic_fetch_add(&m.jobs_committed, 2);
  atomic_fetch_add(&m.events_received, 17);
  atomic_fetch_add(&m.bytes_built, 1ULL << 40);
  atomic_store(&m.paused, 1);
  atomic_store(&m.jobs_held, 2);
  atomic_fetch_add(&m.job_retries, 9);
  atomic_store(&m.builds_running, 1);
  atomic_store(&m.builds_peak, 3);
  atomic_store(&m.build_slots, 3);
  sf_metrics_reject(&m, SF_REASON_PATH_ESCAPE);
  sf_metrics_reject(&m, SF_REASON_PATH_ESCAPE);
  sf_metrics_reject(&m, (sf_event_reason)999); /* out of range: NONE */
  sf_metrics_observe(&m.build_seconds, 0.3);
  sf_metrics_observe(&m.build_seconds, 0.3);
  sf_metrics_observe(&m.build_seconds, 1e9); /* +Inf only */
  sf_metrics_observe(&m.build_seconds, -1);  /* counts as 0 */
  sf_metrics_observe(&m.e2e_seconds, 7);
  const int64_t states[6] = {4, 0, 1, 2, 0, 3};
  sf_metrics_set_job_states(&m, states, sf_clock_mono_ms() - 2500);
  sf_metrics_set_lag(
      &m,
      strdup("segforge_consumer_lag{topic=\"t\",partition=\"0\"} 7\n"
             "segforge_consumer_read_lag{topic=\"t\",partition=\"0\"} 1\n"
             "segforge_consumer_lag{topic=\"t\",partition=\"1\"} 0\n"
             "segforge_consumer_read_lag{topic=\"t\",partition=\"1\"} 0\n"),
      2, true, sf_clock_mono_ms());
  size_t len = 0;
  char *t = sf_metrics_render(&m, &len);
  assert_non_null(t);
  assert_int_equal(strlen(t), len);
  assert_true(check_exposition(t) > 40);
  assert_true(sample(t, "segforge_jobs_pending") == 3);
  assert_true(sample(t, "segforge_jobs_committed_total") == 2);
  assert_true(sample(t, "segforge_events_received_total") == 17);
  assert_true(sample(t, "segforge_bytes_built_total") == 1099511627776.0);
  assert_true(sample(t, "segforge_consumer_paused") == 1);
  assert_true(sample(t, "segforge_jobs_held") == 2);
  assert_true(sample(t, "segforge_job_retries_total") == 9);
  assert_true(sample(t, "segforge_builds_running") == 1);
  assert_true(sample(t, "segforge_builds_running_peak") == 3);
  assert_true(sample(t, "segforge_build_slots") == 3);
  assert_true(sample(t, "segforge_events_rejected_total{reason=\"PATH_ESCAPE\"}") == 2);
  assert_true(sample(t, "segforge_events_rejected_total{reason=\"NONE\"}") == 1);
  assert_true(sample(t, "segforge_events_rejected_total{reason=\"DECODE_ERROR\"}") == 0);
  assert_true(sample(t, "segforge_build_duration_seconds_bucket{le=\"0.01\"}") == 1);
  assert_true(sample(t, "segforge_build_duration_seconds_bucket{le=\"0.25\"}") == 1);
  assert_true(sample(t, "segforge_build_duration_seconds_bucket{le=\"0.5\"}") == 3);
  assert_true(sample(t, "segforge_build_duration_seconds_bucket{le=\"600\"}") == 3);
  assert_true(sample(t, "segforge_build_duration_seconds_bucket{le=\"+Inf\"}") == 4);
  assert_true(sample(t, "segforge_build_duration_seconds_count") == 4);
  double sum = sample(t, "segforge_build_duration_seconds_sum");
  assert_true(sum > 1e9 && sum < 1e9 + 1);
  assert_true(sample(t, "segforge_end_to_end_seconds_bucket{le=\"5\"}") == 0);
  assert_true(sample(t, "segforge_end_to_end_seconds_bucket{le=\"10\"}") == 1);
  assert_true(sample(t, "segforge_jobs{state=\"waiting\"}") == 4);
  assert_true(sample(t, "segforge_jobs{state=\"building\"}") == 1);
  assert_true(sample(t, "segforge_jobs{state=\"committing\"}") == 2);
  assert_true(sample(t, "segforge_jobs{state=\"held\"}") == 3);
  double age = sample(t, "segforge_oldest_job_age_seconds");
  assert_true(age >= 2.5 && age < 60);
  assert_true(sample(t, "segforge_consumer_lag{topic=\"t\",partition=\"0\"}") == 7);
  assert_true(sample(t, "segforge_consumer_read_lag{topic=\"t\",partition=\"0\"}") == 1);
  assert_true(sample(t, "segforge_partitions_assigned") == 2);
  assert_non_null(strstr(t, "\nsegforge_build_info{version=\""));
  assert_true(sample(t, "process_open_fds") >= 3);
  assert_true(sample(t, "process_resident_memory_bytes") > 0);
  free(t);
  /* The probes: ready once serving, turning, assigned and caught up. */
  char why[256];
  int64_t now = sf_clock_mono_ms();
  assert_true(sf_metrics_live(&m, now, why, sizeof why)); /* starting is alive */
  assert_false(sf_metrics_ready(&m, now, why, sizeof why));
  assert_non_null(strstr(why, "starting"));
  sf_metrics_set_phase(&m, SF_METRICS_SERVING);
  sf_metrics_loop_turn(&m, now);
  assert_true(sf_metrics_ready(&m, now, why, sizeof why));
  sf_metrics_set_lag(&m, NULL, 2, false, now);
  assert_false(sf_metrics_ready(&m, now, why, sizeof why));
  assert_non_null(strstr(why, "catching up"));
  sf_metrics_set_lag(&m, NULL, 0, false, now);
  assert_false(sf_metrics_ready(&m, now, why, sizeof why));
  assert_non_null(strstr(why, "no partition assigned"));
  sf_metrics_set_lag(&m, NULL, 1, true, now);
  assert_false(sf_metrics_ready(&m, now + SF_METRICS_STALE_MS + 1, why, sizeof why));
  assert_false(sf_metrics_live(&m, now + SF_METRICS_STUCK_MS + 1, why, sizeof why));
  assert_non_null(strstr(why, "stuck"));
  sf_metrics_destroy(&m);
}

/* A whole HTTP/1.0 exchange with the server; returns the malloc'd reply. */
static char *http(unsigned port, const char *request) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct timeval tv = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  ssize_t got;
  while ((got = read(fd, buf + n, cap - n - 1)) > 0) n += (size_t)got;
  assert_true(got == 0); /* closed by the server, not timed out */
  buf[n] = '\0';
  close(fd);
  return buf;
}

/* Sends request and checks that the reply holds `want` and, unless NULL,
 * `also`. */
static void expect_reply(unsigned port, const char *request, const char *want,
                         const char *also) {
  char *r = http(port, request);
  assert_non_null(strstr(r, want));
  if (also) assert_non_null(strstr(r, also));
  free(r);
}

/* The value of one sample of a fresh GET /metrics. */
static double scrape(unsigned port, const char *name) {
  char *r = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
  double v = sample(strstr(r, "\r\n\r\n") + 4, name);
  free(r);
  return v;
}

static void the_server_answers_metrics_on_an_ephemeral_port(void **state) {
  sf_metrics m;
  sf_metrics_init(&m);
  atomic_fetch_add(&m.jobs_failed, 5);
  sf_metrics_server *s = NULL;
  sf_err err = {0};
  assert_int_equal(sf_metrics_serve(&m, "127.0.0.1:0", &s, &err), SF_OK);
  unsigned port = sf_metrics_server_port(s);
  assert_true(port > 0);

  char *r = http(port, "GET /metrics HTTP/1.0\r\n\r\n");
  assert_true(!strncmp(r, "HTTP/1.0 200", 12) || !strncmp(r, "HTTP/1.1 200", 12));
  assert_non_null(strstr(r, "text/plain; version=0.0.4"));
  char *body = strstr(r, "\r\n\r\n");
  assert_non_null(body);
  assert_true(check_exposition(body + 4) > 40);
  assert_true(sample(body + 4, "segforge_jobs_failed_total") == 5);
  free(r);

  atomic_fetch_add(&m.jobs_failed, 1); /* every scrape renders afresh */
  assert_true(scrape(port, "segforge_jobs_failed_total") == 6);

  /* /healthz: 503 until the loop serves, 200 while it turns, 503 once it
   * has not turned for SF_METRICS_STUCK_MS or while it drains. */
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  expect_reply(port, "GET /healthz HTTP/1.0\r\n\r\n", " 503 ", "starting");
  atomic_store(&m.phase, SF_METRICS_SERVING);
  atomic_store(&m.loop_turn_ms, now);
  expect_reply(port, "GET /healthz HTTP/1.0\r\n\r\n", " 200 ", "\r\n\r\nok\n");
  double age = scrape(port, "segforge_poll_loop_age_seconds");
  assert_true(age >= 0 && age < 5);
  /* Held jobs: still 200 (a restart mends no dataset), the body says why. */
  atomic_store(&m.jobs_held, 1);
  sf_metrics_set_degraded(&m, "1 job held\nstaging_id=j dataset=/d error=\"EROFS\"");
  expect_reply(port, "GET /healthz HTTP/1.0\r\n\r\n", " 200 ",
               "\r\n\r\ndegraded: 1 job held\nstaging_id=j dataset=/d");
  char why[64];
  assert_int_equal(sf_metrics_health(&m, now, why, sizeof why), SF_HEALTH_DEGRADED);
  assert_true(scrape(port, "segforge_jobs_held") == 1);
  sf_metrics_set_degraded(&m, NULL);
  expect_reply(port, "GET /healthz HTTP/1.0\r\n\r\n", "\r\n\r\nok\n", NULL);
  assert_int_equal(sf_metrics_health(&m, now, why, sizeof why), SF_HEALTH_OK);
  assert_string_equal(why, "ok");
  atomic_store(&m.loop_turn_ms, now - SF_METRICS_STUCK_MS - 1000);
  expect_reply(port, "GET /healthz HTTP/1.0\r\n\r\n", " 503 ", "stuck");
  atomic_store(&m.loop_turn_ms, now);
  atomic_store(&m.phase, SF_METRICS_DRAINING);
  expect_reply(port, "GET /healthz HTTP/1.0\r\n\r\n", " 503 ", "draining");

  expect_reply(port, "GET /nothing HTTP/1.0\r\n\r\n", " 404 ", NULL);
  expect_reply(port, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n", " 405 ",
               NULL);

  /* The port is taken now: a second server says so. */
  char addr[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
  sf_metrics_server *s2 = NULL;
  assert_int_equal(sf_metrics_serve(&m, addr, &s2, &err), SF_EIO);
  assert_non_null(strstr(err.msg, "in use"));
  assert_null(s2);
  sf_metrics_server_stop(s);
  sf_metrics_server_stop(NULL);
}

/* /jobs waits up to SF_METRICS_JOBS_WAIT_MS for the poll loop; meanwhile
 * the probes and /metrics must still answer at once: kubelet's probe
 * timeout is 1 s, and a /jobs asked while the loop starts, drains or is
 * stuck must not fail the liveness probe of a process that is fine. */
static void a_waiting_jobs_request_does_not_hold_the_probes(void **state) {
  sf_metrics m;
  sf_metrics_init(&m);
  sf_metrics_server *s = NULL;
  sf_err err = {0};
  assert_int_equal(sf_metrics_serve(&m, "127.0.0.1:0", &s, &err), SF_OK);
  unsigned port = sf_metrics_server_port(s);
  /* Nobody answers /jobs (no poll loop): asked, and left waiting. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  static const char jobs[] = "GET /jobs HTTP/1.0\r\n\r\n";
  assert_int_equal(write(fd, jobs, sizeof jobs - 1), (ssize_t)(sizeof jobs - 1));
  struct timespec pause = {0, 200000000}; /* the server is in /jobs by now */
  nanosleep(&pause, NULL);
  int64_t t0 = sf_clock_mono_ms();
  expect_reply(port, "GET /livez HTTP/1.0\r\n\r\n", " 200 ", "alive");
  expect_reply(port, "GET /readyz HTTP/1.0\r\n\r\n", " 503 ", "starting");
  (void)scrape(port, "segforge_jobs_failed_total");
  int64_t took = sf_clock_mono_ms() - t0;
  if (took >= 1000) fail_msg("the probes waited %lld ms behind /jobs", (long long)took);
  /* The /jobs request itself still gets its 503 once the wait is over. */
  char buf[512];
  size_t n = 0;
  ssize_t got;
  while (n < sizeof buf - 1 && (got = read(fd, buf + n, sizeof buf - 1 - n)) > 0)
    n += (size_t)got;
  buf[n] = '\0';
  close(fd);
  assert_non_null(strstr(buf, " 503 "));
  sf_metrics_server_stop(s);
  sf_metrics_destroy(&m);
}

static void bad_addresses_are_refused_with_the_expected_form(void **state) {
  sf_metrics m;
  sf_metrics_init(&m);
  sf_metrics_server *s = NULL;
  sf_err err = {0};
  const char *bad[] = {
      "",      "9464",          "127.0.0.1:", "127.0.0.1:99999",
      ":9464", "127.0.0.1:94a", "[::1]9464",  "no.such.host.invalid:9464"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(sf_metrics_serve(&m, bad[i], &s, &err), SF_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err.msg, "metrics address"));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(rendering_parses_and_follows_the_struct),
      cmocka_unit_test(the_server_answers_metrics_on_an_ephemeral_port),
      cmocka_unit_test(a_waiting_jobs_request_does_not_hold_the_probes),
      cmocka_unit_test(bad_addresses_are_refused_with_the_expected_form),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
