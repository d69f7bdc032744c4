/*
 * cmd_serve.c - `segforge serve`: the stream processor (processor/processor.h)
 * on the command line. Flags become Kafka properties in the order given,
 * as in kcat; without --brokers it starts the embedded broker in-process.
 * Logs are one key=value line per event on stderr; the bootstrap address
 * of an embedded broker is printed on stdout, so a script can read it.
 */
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli/cli.h"
#include "core/base/clock.h"
#include "core/pipeline/merge_policy.h"
#include "kafka/broker.h"
#include "kafka/kconf.h"
#include "processor/logline.h"
#include "processor/metrics.h"
#include "processor/processor.h"

static void help(void) {
  printf(
      "usage: segforge serve [--brokers LIST] [--group G] [-X key=value]... [--config "
      "FILE]\n"
      "                      [--target-segment-bytes N] [--max-merges N] [--workers N]\n"
      "                      [--staging-timeout DUR] [--topic-staged T] "
      "[--topic-committed T]\n"
      "                      [--topic-rejected T] [--partitions N] [--metrics-addr "
      "HOST:PORT]\n"
      "                      [--drain-timeout DUR] [--max-pending-events N]\n"
      "                      [--max-pending-bytes N] [--dataset-root DIR]...\n"
      "                      [--retry-max-backoff DUR] [--log-level "
      "error|warn|info|debug]\n"
      "                      [--compact on|off] [--floor-segment-bytes N]\n"
      "                      [--max-segment-bytes N] [--segments-per-tier N]\n"
      "                      [--max-merge-at-once N] [--log-format logfmt|json]\n\n"
      "Consumes ShardStaged events in the consumer group G (default %s), finalizes\n"
      "each job once its shards cover its expected fragments (plan, build with at most\n"
      "--max-merges segment builds at once, commit), and publishes SegmentsCommitted;\n"
      "rejected events and failed jobs go to the dead-letter topic. Offsets move only\n"
      "past finished work, so a crash loses nothing. SIGTERM or SIGINT drains the jobs\n"
      "in flight and exits 0.\n\n"
      "Without --brokers (and no bootstrap.servers from -X/--config) an embedded broker\n"
      "starts in this process with --partitions partitions per topic (default 4); its\n"
      "address is printed as 'bootstrap.servers=HOST:PORT' on stdout.\n\n"
      "  -X key=value       any librdkafka property, or segforge.topic.*, "
      "segforge.framing,\n"
      "                     segforge.schema.ids (see docs/serve.md); applied in order\n"
      "  --config FILE      the same, one key=value a line\n"
      "  --target-segment-bytes N  segment budget (K/M/G) for jobs whose events set "
      "none;\n"
      "                     default: none, one segment per shard\n"
      "  --max-merges N     segment builds at once in the whole process, all jobs\n"
      "                     together (default 2)\n"
      "  --workers N        jobs finalized at once (default: --max-merges); their\n"
      "                     builds share the --max-merges slots, and one job alone\n"
      "                     may use them all\n"
      "  --retry-max-backoff DUR  a job whose dataset fails (full, read-only, I/O\n"
      "                     errors) is held and retried after 1s, 2s, 4s ... up to\n"
      "                     DUR between attempts (default 5m); the service goes on\n"
      "  --staging-timeout DUR  a job must be complete within DUR of its first event\n"
      "                     (e.g. 90s, 10m, 500ms; default 10m)\n"
      "  --max-pending-events N  messages read but not finished before the consumer\n"
      "                     pauses (default 1000000)\n"
      "  --max-pending-bytes N  original event bytes held in memory (K/M/G) before\n"
      "                     the consumer pauses (default 256M)\n"
      "  --drain-timeout DUR  on SIGTERM, wait at most DUR for jobs and dead letters\n"
      "                     in flight (default 20s: the exit fits a 30s termination\n"
      "                     grace); the rest is redone after a restart\n"
      "  --dataset-root DIR  serve only datasets in DIR or below it (repeatable); an\n"
      "                     event naming another is refused with PATH_ESCAPE. Without\n"
      "                     it, any dataset this process can write is served\n"
      "  --metrics-addr A   serve Prometheus metrics on http://A/metrics and a liveness\n"
      "                     probe on http://A/healthz\n"
      "  --log-format logfmt|json  one line per event on stderr: key=value pairs\n"
      "                     (default), or one JSON object with the same members\n"
      "  --compact on|off   after commits, merge the committed segments of the indexes\n"
      "                     this member owns, within the --max-merges slots; job builds\n"
      "                     go first (default on; see docs/serve.md, Compaction)\n"
      "  --floor-segment-bytes N, --max-segment-bytes N, --segments-per-tier N,\n"
      "  --max-merge-at-once N  the merge policy of --compact, as for 'segforge\n"
      "                     compact' (defaults %" PRIu64 "M, %" PRIu64
      "M, %u, %u;\n"
      "                     docs/compaction.md)\n",
      SF_PROC_DEFAULT_GROUP, (uint64_t)(SF_MPOLICY_DEFAULT_FLOOR_SEGMENT_BYTES >> 20),
      (uint64_t)(SF_MPOLICY_DEFAULT_MAX_SEGMENT_BYTES >> 20),
      SF_MPOLICY_DEFAULT_SEGMENTS_PER_TIER, SF_MPOLICY_DEFAULT_MAX_MERGE_AT_ONCE);
}

static int g_level = SF_PROC_LOG_INFO;
static int g_json; /* --log-format json */
static sf_proc *volatile g_proc;

static void on_signal(int sig) {
  (void)sig;
  if (g_proc) sf_proc_stop(g_proc);
}

/* One line per event: ts=... level=... <the fields as logfmt>, or with
 * --log-format json one JSON object: {"ts", "level", then the fields as
 * members}. The fields are rendered by processor/logline.h, which escapes
 * every value: ids, paths and messages from events are written as they
 * are, yet each line parses back to them. */
static void log_fields(void *ctx, int level, const sf_log_field *f, size_t n) {
  (void)ctx;
  if (level > g_level) return;
  int64_t ms = sf_clock_wall_ms();
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  const char *name = level <= SF_PROC_LOG_ERR       ? "error"
                     : level <= SF_PROC_LOG_WARNING ? "warn"
                     : level <= SF_PROC_LOG_INFO    ? "info"
                                                    : "debug";
  char ts[96]; /* ints of any size fit: no truncation to check */
  snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           (long)(ms % 1000));
  size_t (*render)(const sf_log_field *, size_t, char *, size_t) =
      g_json ? sf_logline_json : sf_logline_logfmt;
  char stack[8192], *heap = NULL;
  const char *body = stack;
  size_t need = render(f, n, stack, sizeof stack);
  if (need >= sizeof stack) { /* owned here, freed below */
    heap = malloc(need + 1);
    if (heap) render(f, n, heap, need + 1);
    /* Without memory, a line that says so rather than one cut mid-value. */
    body = heap ? heap : g_json ? "\"event\":\"log_line_lost\"" : "event=log_line_lost";
  }
  if (g_json)
    fprintf(stderr, "{\"ts\":\"%s\",\"level\":\"%s\"%s%s}\n", ts, name, *body ? "," : "",
            body);
  else
    fprintf(stderr, "ts=%s level=%s %s\n", ts, name, body);
  free(heap);
}

/* A line of serve's own, from a template of key=value pairs (logline.h). */
__attribute__((format(printf, 2, 3))) static void slog(int level, const char *fmt, ...) {
  sf_logline l;
  va_list ap;
  va_start(ap, fmt);
  sf_logline_vformat(&l, fmt, ap);
  va_end(ap);
  log_fields(NULL, level, l.f, l.n);
}

int cli_cmd_serve(int argc, char **argv) {
  const struct option opts[] = {{"brokers", required_argument, 0, 'b'},
                                {"group", required_argument, 0, 'g'},
                                {"config", required_argument, 0, 'c'},
                                CLI_OPT(CLI_FLAG_TARGET_SEGMENT_BYTES),
                                CLI_OPT(CLI_FLAG_MAX_MERGES),
                                CLI_OPT(CLI_FLAG_WORKERS),
                                CLI_OPT(CLI_FLAG_STAGING_TIMEOUT),
                                {"topic-staged", required_argument, 0, 's'},
                                {"topic-committed", required_argument, 0, 'C'},
                                {"topic-rejected", required_argument, 0, 'R'},
                                CLI_OPT(CLI_FLAG_PARTITIONS),
                                {"metrics-addr", required_argument, 0, 'm'},
                                CLI_OPT(CLI_FLAG_LOG_LEVEL),
                                CLI_OPT(CLI_FLAG_DRAIN_TIMEOUT),
                                CLI_OPT(CLI_FLAG_MAX_PENDING_EVENTS),
                                CLI_OPT(CLI_FLAG_MAX_PENDING_BYTES),
                                {"dataset-root", required_argument, 0, 'r'},
                                CLI_OPT(CLI_FLAG_RETRY_MAX_BACKOFF),
                                CLI_OPT(CLI_FLAG_COMPACT),
                                CLI_OPT(CLI_FLAG_LOG_FORMAT),
                                CLI_OPT(CLI_FLAG_FLOOR_SEGMENT_BYTES),
                                CLI_OPT(CLI_FLAG_MAX_SEGMENT_BYTES),
                                CLI_OPT(CLI_FLAG_SEGMENTS_PER_TIER),
                                CLI_OPT(CLI_FLAG_MAX_MERGE_AT_ONCE),
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  enum { MAX_ROOTS = 64 };
  const char *roots[MAX_ROOTS];
  size_t nroots = 0;
  sf_err err = {0};
  sf_kconf *k = sf_kconf_new();
  if (!k) return cli_fail("serve", &(sf_err){SF_ENOMEM, "out of memory"});
  sf_proc_opts po = {.log = log_fields, .compact = 1};
  sf_mpolicy_params pol;
  sf_mpolicy_params_default(&pol);
  uint64_t v, partitions = 4;
  const char *metrics_addr = NULL;
  int c, rc = 0;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "X:", opts, &env_err)) {
      sf_kconf_free(k);
      return cli_usage("serve", "%s", env_err.msg);
    }
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "X:", opts, NULL)) != -1) {
    sf_code e = SF_OK;
    switch (c) {
      case 'X':
        e = sf_kconf_parse_arg(k, optarg, &err);
        break;
      case 'c':
        e = sf_kconf_load_file(k, optarg, &err);
        break;
      case 'b':
        e = sf_kconf_set(k, "bootstrap.servers", optarg, &err);
        break;
      case 'g':
        e = sf_kconf_set(k, "group.id", optarg, &err);
        break;
      case 's':
        e = sf_kconf_set(k, SF_KCONF_TOPIC_STAGED, optarg, &err);
        break;
      case 'C':
        e = sf_kconf_set(k, SF_KCONF_TOPIC_COMMITTED, optarg, &err);
        break;
      case 'R':
        e = sf_kconf_set(k, SF_KCONF_TOPIC_REJECTED, optarg, &err);
        break;
      case CLI_FLAG_TARGET_SEGMENT_BYTES:
        e = cli_flag_u64(c, optarg, &po.target_segment_bytes, &err);
        break;
      case CLI_FLAG_MAX_MERGES:
        if (!(e = cli_flag_u64(c, optarg, &v, &err))) po.max_merges = v;
        break;
      case CLI_FLAG_WORKERS:
        if (!(e = cli_flag_u64(c, optarg, &v, &err))) po.workers = v;
        break;
      case CLI_FLAG_STAGING_TIMEOUT:
        e = cli_flag_ms(c, optarg, &po.staging_timeout_ms, &err);
        break;
      case CLI_FLAG_PARTITIONS:
        e = cli_flag_u64(c, optarg, &partitions, &err);
        break;
      case CLI_FLAG_MAX_PENDING_EVENTS:
        if (!(e = cli_flag_u64(c, optarg, &v, &err))) po.max_pending_events = (size_t)v;
        break;
      case CLI_FLAG_MAX_PENDING_BYTES:
        if (!(e = cli_flag_u64(c, optarg, &v, &err))) po.max_pending_bytes = (size_t)v;
        break;
      case CLI_FLAG_DRAIN_TIMEOUT: {
        int64_t ms = 0;
        if (!(e = cli_flag_ms(c, optarg, &ms, &err)))
          po.drain_timeout_ms = ms > INT32_MAX ? INT32_MAX : (int)ms;
        break;
      }
      case CLI_FLAG_RETRY_MAX_BACKOFF:
        e = cli_flag_ms(c, optarg, &po.retry_max_ms, &err);
        break;
      case CLI_FLAG_LOG_FORMAT:
        e = cli_flag_choice(c, optarg, &g_json, &err); /* logfmt = 0, json = 1 */
        break;
      case CLI_FLAG_COMPACT:
        e = cli_flag_choice(c, optarg, &po.compact, &err); /* off = 0, on = 1 */
        break;
      case CLI_FLAG_FLOOR_SEGMENT_BYTES:
        e = cli_flag_u64(c, optarg, &pol.floor_segment_bytes, &err);
        break;
      case CLI_FLAG_MAX_SEGMENT_BYTES:
        e = cli_flag_u64(c, optarg, &pol.max_segment_bytes, &err);
        break;
      case CLI_FLAG_SEGMENTS_PER_TIER:
        if (!(e = cli_flag_u64(c, optarg, &v, &err))) pol.segments_per_tier = (uint32_t)v;
        break;
      case CLI_FLAG_MAX_MERGE_AT_ONCE:
        if (!(e = cli_flag_u64(c, optarg, &v, &err))) pol.max_merge_at_once = (uint32_t)v;
        break;
      case 'm':
        metrics_addr = optarg;
        break;
      case 'r':
        if (nroots == MAX_ROOTS)
          e = sf_err_set(&err, SF_EINVAL, "--dataset-root: at most %d roots",
                         (int)MAX_ROOTS);
        else
          roots[nroots++] = optarg;
        break;
      case CLI_FLAG_LOG_LEVEL: {
        static const int levels[] = {SF_PROC_LOG_ERR, SF_PROC_LOG_WARNING,
                                     SF_PROC_LOG_INFO,
                                     SF_PROC_LOG_DEBUG}; /* in the table's order */
        int i;
        if (!(e = cli_flag_choice(c, optarg, &i, &err))) g_level = levels[i];
        break;
      }
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        sf_kconf_free(k);
        return 0;
      default:
        sf_kconf_free(k);
        return cli_usage("serve", "unknown option");
    }
    if (e) {
      sf_kconf_free(k);
      return cli_usage("serve", "%s", err.msg);
    }
  }
  if (optind < argc) {
    sf_kconf_free(k);
    return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
  }
  /* The one rule the flags' ranges leave: the floor within the max. Checked
   * before an embedded broker starts. */
  if (sf_mpolicy_params_check(&pol, &err)) {
    sf_kconf_free(k);
    return cli_usage("serve", "%s", err.msg);
  }
  po.compact_policy = &pol;
  /* The roots of --config / -X segforge.dataset.roots join the flags'. */
  char *conf_roots = NULL;
  const char *cr = sf_kconf_get(k, SF_KCONF_DATASET_ROOTS);
  if (cr && !(conf_roots = strdup(cr))) {
    sf_kconf_free(k);
    return cli_fail("serve", &(sf_err){SF_ENOMEM, "out of memory"});
  }
  for (char *save = NULL, *t = conf_roots ? strtok_r(conf_roots, ",", &save) : NULL; t;
       t = strtok_r(NULL, ",", &save)) {
    if (nroots == MAX_ROOTS) {
      free(conf_roots);
      sf_kconf_free(k);
      return cli_usage("serve", "%s: at most %d roots with --dataset-root",
                       SF_KCONF_DATASET_ROOTS, (int)MAX_ROOTS);
    }
    roots[nroots++] = t;
  }
  /* Checked again (resolved) by the processor; here so that a typo fails
   * before an embedded broker starts. */
  for (size_t i = 0; i < nroots; i++) {
    struct stat st;
    if (stat(roots[i], &st) || !S_ISDIR(st.st_mode)) {
      int status = cli_usage("serve",
                             "--dataset-root (or segforge.dataset.roots): '%s' is not a "
                             "directory that exists: create it or fix the path",
                             roots[i]); /* roots[i] may point into conf_roots */
      free(conf_roots);
      sf_kconf_free(k);
      return status;
    }
  }

  sf_broker *broker = NULL;
  sf_metrics metrics;
  sf_metrics_server *msrv = NULL;
  sf_proc *p = NULL;
  sf_metrics_init(&metrics);
  if (!sf_kconf_has(k, "bootstrap.servers")) {
    if (sf_broker_start((unsigned)partitions, &broker, &err)) goto fail;
    /* The embedded (mock) broker holds an empty fetch for fetch.wait.max.ms
     * instead of answering when data arrives: keep that wait short. */
    if (sf_kconf_set(k, "bootstrap.servers", sf_broker_bootstraps(broker), &err) ||
        (!sf_kconf_has(k, "fetch.wait.max.ms") &&
         sf_kconf_set(k, "fetch.wait.max.ms", "5", &err)))
      goto fail;
    printf("bootstrap.servers=%s\n", sf_broker_bootstraps(broker));
    fflush(stdout);
    slog(SF_PROC_LOG_INFO, "event=embedded_broker bootstrap_servers=%s partitions=%llu",
         sf_broker_bootstraps(broker), (unsigned long long)partitions);
  }
  if (metrics_addr) {
    if (sf_metrics_serve(&metrics, metrics_addr, &msrv, &err)) goto fail;
    slog(SF_PROC_LOG_INFO, "event=metrics_serving addr=%s port=%u", metrics_addr,
         sf_metrics_server_port(msrv));
  }
  po.kconf = k;
  po.metrics = &metrics;
  po.dataset_roots = roots;
  po.n_dataset_roots = nroots;
  if (sf_proc_new(&po, &p, &err)) goto fail;
  /* Like Kafka's clients ("supplied but isn't a known config"): a variable
   * no flag of serve reads is said, not refused (another command may). */
  char unknown[128];
  for (size_t u = 0; cli_env_unknown(opts, u, unknown, sizeof unknown); u++) {
    slog(SF_PROC_LOG_WARNING,
         "event=unknown_variable name=%s hint=\"no flag of serve reads it: ignored "
         "(docs/cli.md)\"",
         unknown);
  }
  if (!nroots)
    slog(SF_PROC_LOG_WARNING,
         "event=any_dataset hint=\"events may name any dataset this process can "
         "write; restrict them with --dataset-root\"");
  g_proc = p;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  if (sf_proc_run(p, &err)) goto fail;
  goto out;
fail:
  rc = cli_fail("serve", &err);
out:
  g_proc = NULL;
  sf_proc_free(p);
  sf_metrics_server_stop(msrv);
  sf_metrics_destroy(&metrics);
  sf_broker_stop(broker);
  sf_kconf_free(k);
  free(conf_roots);
  return rc;
}
