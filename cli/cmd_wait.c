/*
 * cmd_wait.c - `segforge wait --dataset D --staging-id S [--index NAME]
 * [--timeout DUR] [--brokers LIST ...]`: blocks until the job is committed
 * (exit 0), or says why it will not be: its failed marker, a dead letter of
 * one of its events (with --brokers), or the timeout. The logic is
 * sf_worker_wait (producer/worker.h) over sf_jobstatus_wait
 * (core/catalog/jobstatus.h).
 */
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/base/clock.h"
#include "kafka/kconf.h"
#include "producer/worker.h"

/* Exit statuses: a script tells the outcomes apart. */
enum {
  EXIT_COMMITTED = 0,
  EXIT_ERROR = 1,
  EXIT_USAGE = 2,
  EXIT_FAILED = 3,
  EXIT_TIMEOUT = 4,
  EXIT_STOPPED = 130
};

static atomic_int g_cancel;

static void on_signal(int sig) {
  (void)sig;
  atomic_store(&g_cancel, 1);
}

static void help(void) {
  printf(
      "usage: segforge wait --dataset D --staging-id S [--index NAME] [--timeout DUR]\n"
      "                     [--brokers LIST [-X key=value]... [--config FILE]\n"
      "                      [--since DUR]] [--json]\n\n"
      "Waits until the job S of dataset D is committed: its staging id is in the\n"
      "newest catalog version (into index NAME, when given). Exits\n"
      "  0  committed (prints the catalog version)\n"
      "  3  failed: the job's failed marker (written by serve when it fails a job), or,\n"
      "     with --brokers, a ShardRejected of one of its events on the dead-letter\n"
      "     topic; prints the reason code and the message\n"
      "  4  --timeout DUR passed first (30s, 5m, 1h; a bare number is milliseconds;\n"
      "     default: wait for ever)\n"
      "  1  the dataset cannot be read, or the job is in another index; 2 usage.\n"
      "--brokers (or bootstrap.servers from -X/--config) also watches the dead-letter\n"
      "topic (segforge.topic.rejected) from --since ago (default 1h).\n");
}

/* A JSON string of s, its bytes that are not UTF-8 each replaced by
 * U+FFFD; NULL without memory. */
static json_t *utf8_string(const char *s) {
  json_t *j = json_string(s);
  if (j) return j;
  size_t n = strlen(s);
  char *w = malloc(3 * n + 1), *o = w;
  if (!w) return NULL;
  for (size_t i = 0; i < n;) {
    size_t k = 1;
    unsigned char c = (unsigned char)s[i];
    size_t want = c < 0x80         ? 1
                  : (c >> 5) == 6  ? 2
                  : (c >> 4) == 14 ? 3
                  : (c >> 3) == 30 ? 4
                                   : 0;
    if (want && i + want <= n) {
      k = want;
      json_t *t = json_stringn(s + i, k);
      if (t) {
        json_decref(t);
        memcpy(o, s + i, k);
        o += k;
        i += k;
        continue;
      }
    }
    memcpy(o, "\xef\xbf\xbd", 3);
    o += 3;
    i += 1;
  }
  *o = '\0';
  j = json_string(w);
  free(w);
  return j;
}

int cli_cmd_wait(int argc, char **argv) {
  const struct option opts[] = {{"dataset", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_STAGING_ID),
                                CLI_OPT(CLI_FLAG_INDEX),
                                CLI_OPT(CLI_FLAG_TIMEOUT),
                                CLI_OPT(CLI_FLAG_SINCE),
                                {"brokers", required_argument, 0, 'b'},
                                {"config", required_argument, 0, 'c'},
                                {"json", no_argument, 0, 'j'},
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  sf_worker_wait_req req = {0};
  int64_t since = 3600 * 1000;
  int c, json = 0, status = -1;
  sf_err err = {0};
  sf_kconf *k = sf_kconf_new();
  if (!k) return cli_fail("wait", &(sf_err){SF_ENOMEM, "out of memory"});
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "X:", opts, &env_err)) {
      sf_kconf_free(k);
      return cli_usage("wait", "%s", env_err.msg);
    }
  }
  optind = 1;
  while (status < 0 && (c = getopt_long(argc, argv, "X:", opts, NULL)) != -1) {
    sf_code e = SF_OK;
    switch (c) {
      case 'd':
        req.dataset = optarg;
        break;
      case CLI_FLAG_STAGING_ID:
        if (!(e = cli_flag_check_id(c, optarg, &err))) req.staging_id = optarg;
        break;
      case CLI_FLAG_INDEX:
        if (!(e = cli_flag_check_id(c, optarg, &err))) req.index_name = optarg;
        break;
      case CLI_FLAG_TIMEOUT: /* a bare number is milliseconds, as before units */
        e = cli_flag_ms(c, optarg, &req.timeout_ms, &err);
        break;
      case CLI_FLAG_SINCE:
        e = cli_flag_ms(c, optarg, &since, &err);
        break;
      case 'b':
        e = sf_kconf_set(k, "bootstrap.servers", optarg, &err);
        break;
      case 'X':
        e = sf_kconf_parse_arg(k, optarg, &err);
        break;
      case 'c':
        e = sf_kconf_load_file(k, optarg, &err);
        break;
      case 'j':
        json = 1;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        status = 0;
        break;
      default:
        status = cli_usage("wait", "unknown option");
    }
    if (e) status = cli_usage("wait", "%s", err.msg);
  }
  if (status < 0 && optind < argc)
    status = cli_usage("wait", "unexpected argument '%s'", argv[optind]);
  if (status < 0 && (!req.dataset || !req.staging_id))
    status = cli_usage("wait", "--dataset D and --staging-id S are required");
  if (status >= 0) {
    sf_kconf_free(k);
    return status;
  }
  req.kconf = k;
  req.since_ms = sf_clock_wall_ms() - since;
  req.cancel = &g_cancel;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sf_jobstatus st;
  sf_code rc = sf_worker_wait(&req, &st, &err);
  sf_kconf_free(k);
  if (rc == SF_ECANCELED) return EXIT_STOPPED;
  if (rc) return cli_fail("wait", &err);
  if (json) {
    /* The reason and message come from a marker or a dead letter that
     * anyone may have written: jansson escapes them (and refuses invalid
     * UTF-8, which json_stringn_nocheck would pass through: replaced). */
    json_t *o = json_object();
    char *doc = NULL;
    if (o &&
        !json_object_set_new(o, "state",
                             json_string(sf_jobstatus_state_name(st.state))) &&
        !json_object_set_new(o, "staging_id", utf8_string(req.staging_id)) &&
        !json_object_set_new(o, "version", json_integer((json_int_t)st.version)) &&
        !json_object_set_new(
            o, "index_name",
            st.index_name[0] ? utf8_string(st.index_name) : json_null()) &&
        !json_object_set_new(o, "reason", utf8_string(st.reason)) &&
        !json_object_set_new(o, "message", utf8_string(st.message)))
      doc = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!doc) return cli_fail("wait", &(sf_err){SF_ENOMEM, "out of memory"});
    printf("%s\n", doc);
    free(doc);
  } else if (st.state == SF_JOBSTATUS_COMMITTED) {
    printf("committed: %s into index %s, catalog version %llu\n", req.staging_id,
           st.index_name, (unsigned long long)st.version);
  }
  switch (st.state) {
    case SF_JOBSTATUS_COMMITTED:
      return EXIT_COMMITTED;
    case SF_JOBSTATUS_FAILED:
    case SF_JOBSTATUS_DEAD_LETTER:
      fprintf(stderr, "segforge wait: %s: %s: %s\n",
              st.state == SF_JOBSTATUS_FAILED ? "failed" : "dead letter", st.reason,
              st.message);
      return EXIT_FAILED;
    default:
      fprintf(stderr, "segforge wait: timeout: %s\n", st.message);
      return EXIT_TIMEOUT;
  }
}
