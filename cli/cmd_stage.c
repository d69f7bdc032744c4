/*
 * cmd_stage.c - `segforge stage`: one worker writes its shard.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/base/clock.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/format/stage.h"
#include "core/vector/quantizer.h"
#include "kafka/kconf.h"
#include "producer/publisher.h"
#include "producer/worker.h"

static void help(void) {
  printf(
      "usage: segforge stage --vectors FILE --staging DIR --fragments LIST\n"
      "                      --rows-per-fragment R --shard-id ID [--memory SIZE] "
      "[--force]\n"
      "                      [--json]\n\n"
      "Encodes the rows of the fragments in LIST (a range list such as 0-63,70) of\n"
      "FILE (.fvecs or .bvecs) with DIR/quantizer and writes DIR/ID.sfshard.\n"
      "Row i of FILE is fragment i / R, offset i %% R; its row id is\n"
      "(fragment << 32) | offset. Workers may stage into one DIR at once.\n"
      "--memory bounds the codes held at once (default 256M); larger shards take\n"
      "several passes over their rows. A shard id is staged once: an existing\n"
      "DIR/ID.sfshard is refused before any row is read, unless --force replaces it.\n\n"
      "Announcing the shard (ShardStaged on Kafka, after it is written):\n"
      "  --publish --brokers B [-X key=value ...] [--config FILE] [--topic T]\n"
      "  --dataset-uri D --index-name N --column C --staging-id S\n"
      "  --expected-fragments LIST [--target-segment-bytes SIZE] [--timeout DUR]\n"
      "DIR must be D/_indices/_staging/S. -X passes any librdkafka property (as in\n"
      "kcat; later ones win, after --config FILE's key=value lines). The command\n"
      "returns once the broker acknowledged the event and prints its event_id.\n"
      "Everything the event needs (ids, fragments inside --expected-fragments, DIR\n"
      "being that root, the client's properties) is checked before the shard is\n"
      "written, so a refused announcement leaves no shard behind.\n");
}

/* librdkafka's log lines (errors, warnings, and everything when -X debug=...
 * is set) go to stderr: this is the program, which may print. */
static void kafka_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  fprintf(stderr, "segforge stage: kafka %s: %s\n", fac, buf);
}

/* What --publish needs, gathered from the flags. */
typedef struct publish_opts {
  int on;
  sf_kconf *conf;
  const char *brokers, *config, *topic;
  sf_worker_info info;
  uint64_t target;
  int64_t timeout_ms;
  char *dataset_abs; /* a relative --dataset-uri made absolute (freed by the caller) */
  roaring_bitmap_t *exp; /* --expected-fragments (freed by the caller) */
  sf_publisher *pub;     /* created before staging (freed by the caller) */
} publish_opts;

/* Checked before the shard is staged, so a typo costs nothing. */
static int check_publish(publish_opts *po, sf_err *err) {
  if (!po->on) {
    if (po->brokers || po->config || po->topic || po->exp || po->info.dataset_uri ||
        po->info.staging_id || sf_kconf_count(po->conf))
      return cli_usage("stage", "the Kafka flags are for --publish"), 2;
    return 0;
  }
  if (!po->brokers && !sf_kconf_has(po->conf, "bootstrap.servers") && !po->config)
    return cli_usage("stage",
                     "--publish needs --brokers (or bootstrap.servers in --config/-X)"),
           2;
  if (!po->info.dataset_uri || !po->info.index_name || !po->info.column ||
      !po->info.staging_id || !po->exp)
    return cli_usage(
               "stage",
               "--publish needs --dataset-uri, --index-name, --column, --staging-id "
               "and --expected-fragments"),
           2;
  /* --config first, then -X (already in po->conf) over it, then --brokers. */
  if (po->config) {
    sf_kconf *file = sf_kconf_new();
    if (!file) return sf_err_set(err, SF_ENOMEM, "out of memory"), 1;
    sf_code rc = sf_kconf_load_file(file, po->config, err);
    for (size_t i = 0; !rc && i < sf_kconf_count(po->conf); i++) {
      const char *k, *v;
      sf_kconf_at(po->conf, i, &k, &v);
      rc = sf_kconf_set(file, k, v, err);
    }
    if (rc) {
      sf_kconf_free(file);
      return cli_usage("stage", "%s", err->msg), 2;
    }
    sf_kconf_free(po->conf);
    po->conf = file;
  }
  if (po->brokers && sf_kconf_set(po->conf, "bootstrap.servers", po->brokers, err))
    return cli_usage("stage", "--brokers: %s", err->msg), 2;
  if (!sf_kconf_has(po->conf, "bootstrap.servers"))
    return cli_usage("stage",
                     "--publish needs --brokers (or bootstrap.servers in --config/-X)"),
           2;
  if (po->topic && sf_kconf_set(po->conf, SF_KCONF_TOPIC_STAGED, po->topic, err))
    return cli_usage("stage", "--topic: %s", err->msg), 2;
  sf_kconf_set_logger(po->conf, kafka_log);
  /* The event goes to another process, perhaps in another directory: a
   * relative path would name another dataset there. A URI (file:/p,
   * file:///p, FILE:/p) is passed on as written: the consumer resolves
   * every spelling to one canonical form (docs/catalog.md). */
  const char *ds = po->info.dataset_uri;
  if (ds[0] != '/' && !strstr(ds, "://") && strncasecmp(ds, "file:", 5) != 0) {
    if (!(po->dataset_abs = realpath(ds, NULL)))
      return sf_err_errno(err, SF_ENOTFOUND, errno, "--dataset-uri %s", ds), 1;
    po->info.dataset_uri = po->dataset_abs;
  }
  return 0;
}

/* The rest of the announcement, checked before the shard is written so
 * that a refused request leaves no shard a later finalize would pick up:
 * the event's fields against fr and the staging directory, then the
 * client itself (librdkafka's configuration). */
static int check_announcement(publish_opts *po, const roaring_bitmap_t *fr,
                              const char *staging, sf_err *err) {
  if (!po->on) return 0;
  po->info.expected_fragments = po->exp;
  po->info.target_segment_bytes = (int64_t)po->target;
  if (sf_worker_check(&po->info, fr, staging, err) ||
      sf_publisher_new(po->conf, SF_FRAMING_AUTO, &po->pub, err)) {
    sf_err_prefix(err, "nothing was staged");
    return 1;
  }
  return 0;
}

/* Fills and publishes the ShardStaged of the shard at path. */
static sf_code publish(publish_opts *po, const char *path, char **event_id, char *where,
                       size_t wsize, sf_err *err) {
  sf_shard_staged ev = {0};
  sf_code rc;
  if ((rc = sf_worker_fill_staged(&po->info, path, &ev, err))) goto out;
  sf_delivery dr;
  if ((rc = sf_worker_publish(po->pub, NULL, &ev, (int)po->timeout_ms, &dr, err)))
    goto out;
  snprintf(where, wsize, "%s [%d] at offset %lld",
           sf_publisher_topic(po->pub, SF_EVENT_SHARD_STAGED), (int)dr.partition,
           (long long)dr.offset);
  *event_id = ev.event_id;
  ev.event_id = NULL;
out:
  if (rc)
    sf_err_prefix(err,
                  "shard %s was staged, but not announced (run the same command with "
                  "--force to stage and announce it again)",
                  path);
  sf_shard_staged_clear(&ev);
  return rc;
}

static void progress(void *arg, uint64_t done, uint64_t total) {
  double *last = arg;
  double now = sf_clock_mono_s();
  if (now - *last < 0.2 && done < total) return;
  *last = now;
  fprintf(stderr, "\rstage: %llu / %llu rows (%.0f%%)", (unsigned long long)done,
          (unsigned long long)total, total ? 100.0 * done / total : 100.0);
  if (done >= total) fputc('\n', stderr);
}

int cli_cmd_stage(int argc, char **argv) {
  const struct option opts[] = {{"vectors", required_argument, 0, 'v'},
                                {"staging", required_argument, 0, 's'},
                                CLI_OPT(CLI_FLAG_FRAGMENTS),
                                CLI_OPT(CLI_FLAG_ROWS_PER_FRAGMENT),
                                CLI_OPT(CLI_FLAG_SHARD_ID),
                                CLI_OPT(CLI_FLAG_MEMORY),
                                {"json", no_argument, 0, 'j'},
                                {"help", no_argument, 0, 'h'},
                                {"publish", no_argument, 0, 'P'},
                                {"brokers", required_argument, 0, 'b'},
                                {"config", required_argument, 0, 'C'},
                                {"topic", required_argument, 0, 't'},
                                {"dataset-uri", required_argument, 0, 'D'},
                                CLI_OPT(CLI_FLAG_INDEX_NAME),
                                {"column", required_argument, 0, 'c'},
                                CLI_OPT(CLI_FLAG_STAGING_ID),
                                CLI_OPT(CLI_FLAG_EXPECTED_FRAGMENTS),
                                CLI_OPT(CLI_FLAG_TARGET_SEGMENT_BYTES),
                                CLI_OPT(CLI_FLAG_TIMEOUT),
                                {"event-id", required_argument, 0, 'E'},
                                {"force", no_argument, 0, 'F'},
                                {0, 0, 0, 0}};
  const char *vectors = NULL, *staging = NULL, *shard_id = NULL;
  roaring_bitmap_t *fr = NULL; /* --fragments */
  uint64_t rpf = 0, memory = 256ULL << 20;
  int json = 0, force = 0, bad = 0, c;
  sf_err err = {0};
  publish_opts po = {.conf = sf_kconf_new(), .timeout_ms = 30000};
  if (!po.conf) return cli_fail("stage", &(sf_err){SF_ENOMEM, "out of memory"});
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "X:", opts, &env_err)) {
      sf_kconf_free(po.conf);
      return cli_usage("stage", "%s", env_err.msg);
    }
  }
  optind = 1;
  while (!bad && (c = getopt_long(argc, argv, "X:", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'v':
        vectors = optarg;
        break;
      case 's':
        staging = optarg;
        break;
      case CLI_FLAG_FRAGMENTS:
        sf_fragset_free(fr); /* a repeated flag replaces the earlier value */
        fr = NULL;
        rc = cli_flag_fragset(c, optarg, &fr, &err);
        break;
      case CLI_FLAG_SHARD_ID:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) shard_id = optarg;
        break;
      case CLI_FLAG_ROWS_PER_FRAGMENT:
        rc = cli_flag_u64(c, optarg, &rpf, &err);
        break;
      case CLI_FLAG_MEMORY:
        rc = cli_flag_u64(c, optarg, &memory, &err);
        break;
      case 'j':
        json = 1;
        break;
      case 'F':
        force = 1;
        break;
      case 'P':
        po.on = 1;
        break;
      case 'b':
        po.brokers = optarg;
        break;
      case 'C':
        po.config = optarg;
        break;
      case 't':
        po.topic = optarg;
        break;
      case 'D':
        po.info.dataset_uri = optarg;
        break;
      case CLI_FLAG_INDEX_NAME:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) po.info.index_name = optarg;
        break;
      case 'c':
        po.info.column = optarg;
        break;
      case CLI_FLAG_STAGING_ID:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) po.info.staging_id = optarg;
        break;
      case 'E':
        po.info.event_id = optarg;
        break;
      case CLI_FLAG_EXPECTED_FRAGMENTS:
        sf_fragset_free(po.exp);
        po.exp = NULL;
        rc = cli_flag_fragset(c, optarg, &po.exp, &err);
        break;
      case CLI_FLAG_TARGET_SEGMENT_BYTES:
        rc = cli_flag_u64(c, optarg, &po.target, &err);
        break;
      case CLI_FLAG_TIMEOUT:
        rc = cli_flag_ms(c, optarg, &po.timeout_ms, &err);
        break;
      case 'X':
        rc = sf_kconf_parse_arg(po.conf, optarg, &err);
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        bad = -1; /* exits 0 */
        break;
      default:
        bad = cli_usage("stage", "unknown option");
    }
    if (rc) bad = cli_usage("stage", "%s", err.msg);
  }
  if (!bad && (!vectors || !staging || !fr || !shard_id || !rpf))
    bad =
        cli_usage("stage",
                  "--vectors, --staging, --fragments, --rows-per-fragment and --shard-id "
                  "are required");
  else if (!bad && optind < argc)
    bad = cli_usage("stage", "unexpected argument '%s'", argv[optind]);
  po.info.shard_id = shard_id;
  if (!bad) bad = check_publish(&po, &err);
  if (!bad) bad = check_announcement(&po, fr, staging, &err);
  if (bad) {
    if (bad == 1) cli_fail("stage", &err);
    if (bad < 0) bad = 0; /* --help */
    sf_fragset_free(fr);
    sf_fragset_free(po.exp);
    sf_publisher_free(po.pub, 0);
    sf_kconf_free(po.conf);
    free(po.dataset_abs);
    return bad;
  }
  char *event_id = NULL, where[512] = "";

  char *qpath = sf_fs_join(staging, "quantizer");
  sf_quant *q = NULL;
  int status = 1;
  double t0 = sf_clock_mono_s();
  if (!qpath) {
    sf_err_set(&err, SF_ENOMEM, "out of memory");
    goto out;
  }
  if (sf_quant_load(qpath, &q, &err)) {
    if (err.code == SF_ENOTFOUND)
      sf_err_prefix(&err,
                    "no quantizer in the staging root (run 'segforge train --out %s' "
                    "first)",
                    staging);
    goto out;
  }
  double last = 0;
  sf_stage_opts o = {.vectors = vectors,
                     .staging_root = staging,
                     .shard_id = shard_id,
                     .fragments = fr,
                     .rows_per_fragment = (uint32_t)rpf,
                     .memory_budget = memory,
                     .exclusive = !force, /* a shard id is staged once */
                     .progress = isatty(2) ? progress : NULL,
                     .progress_arg = &last};
  sf_stage_result res;
  if (sf_stage_shard(&o, q, &res, &err)) goto out;
  if (po.on && publish(&po, res.path, &event_id, where, sizeof where, &err)) {
    free(res.path);
    goto out;
  }
  double secs = sf_clock_mono_s() - t0;
  char *list = sf_fragset_format(fr);
  if (json) {
    char sum[17];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)sf_quant_checksum(q));
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:f}", "shard_id", shard_id,
                          "path", res.path, "rows", (json_int_t)res.rows, "bytes",
                          (json_int_t)res.bytes, "fragments", list ? list : "",
                          "quantizer_checksum", sum, "seconds", secs);
    if (j && event_id) json_object_set_new(j, "event_id", json_string(event_id));
    if (j) json_dumpf(j, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(j);
  } else
    printf("staged %s: %llu rows of fragments %s, %llu bytes, %u pass%s, %.2f s\n",
           res.path, (unsigned long long)res.rows, list ? list : "?",
           (unsigned long long)res.bytes, res.passes, res.passes == 1 ? "" : "es", secs);
  if (event_id && !json) printf("published ShardStaged %s to %s\n", event_id, where);
  free(list);
  free(res.path);
  status = 0;
out:
  if (status) cli_fail("stage", &err);
  sf_quant_free(q);
  free(qpath);
  free(event_id);
  sf_fragset_free(fr);
  sf_fragset_free(po.exp);
  sf_publisher_free(po.pub, 2000);
  sf_kconf_free(po.conf);
  free(po.dataset_abs);
  return status;
}
