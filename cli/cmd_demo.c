/*
 * cmd_demo.c - `segforge demo`: the whole mission on generated data, as the
 * README's first command. It starts the embedded Kafka broker and the
 * stream processor in this process (a thread runs sf_proc_run), then plays
 * the distributed build: generate data, train the shared quantizer, and
 * stage the shards in parallel worker processes that announce them
 * (`segforge stage --publish`). It waits for SegmentsCommitted on the topic,
 * prints it as JSON, stops the processor (drain), and searches the
 * committed index (`segforge search --dataset --index`), printing recall.
 * Every step but the processor runs this same program as a child process,
 * with the arguments a user would type.
 */
#include <getopt.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/base/clock.h"
#include "core/base/fsutil.h"
#include "core/base/types.h"
#include "kafka/broker.h"
#include "kafka/kconf.h"
#include "processor/processor.h"
#include "schemas/event_decode.h"
#include "schemas/event_json.h"

extern char **environ;

#define DEMO_INDEX "embedding_idx"
#define DEMO_JOB "demo-job-1"
#define DEMO_PARTITIONS 4
#define DEMO_MIN_ROWS                                               \
  1000u /* the demo searches this many queries (gen --queries 1000) \
         */

static void help(void) {
  printf(
      "usage: segforge demo [--dir DIR] [--rows N] [--dim D] [--shards S]\n"
      "                     [--index-type T] [--metric M] [--nlist L] [--nprobe P]\n\n"
      "The whole path on generated data: starts an embedded Kafka broker and the\n"
      "stream processor (as `segforge serve` would), generates clustered vectors with\n"
      "exact ground truth, trains a quantizer, stages S shards in parallel worker\n"
      "processes that announce them on Kafka, waits for the processor's\n"
      "SegmentsCommitted and prints it as JSON, then searches the committed index and\n"
      "prints recall@10 against brute force. Defaults: a fresh temporary DIR, --rows\n"
      "100000 --dim 64 --shards 4 --index-type IVF_SQ --metric L2 --nlist 256\n"
      "--nprobe 16.\n");
}

static pid_t spawn(char *const *args) {
  pid_t pid;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return -1;
  self[n] = '\0';
  if (posix_spawn(&pid, self, NULL, NULL, args, environ)) return -1;
  return pid;
}

static int wait_ok(pid_t pid, const char *step) {
  int st;
  if (pid < 0 || waitpid(pid, &st, 0) < 0) {
    fprintf(stderr, "segforge demo: could not run step '%s'\n", step);
    return 0;
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st)) {
    fprintf(stderr, "segforge demo: step '%s' failed\n", step);
    return 0;
  }
  return 1;
}

static void show(char *const *args) {
  fprintf(stderr, "demo: segforge");
  for (int i = 1; args[i]; i++) fprintf(stderr, " %s", args[i]);
  fprintf(stderr, "\n");
}

static int run(const char *step, char *const *args) {
  show(args);
  return wait_ok(spawn(args), step);
}

/* The processor's log: what a person watching the demo wants to see. */
static void demo_log(void *ctx, int level, const sf_log_field *f, size_t n) {
  (void)ctx;
  const char *ev = sf_logline_get(f, n, "event");
  if (level > SF_PROC_LOG_INFO || (ev && !strcmp(ev, "librdkafka"))) return;
  char line[2048]; /* a longer line is cut: the demo's log is for a person */
  sf_logline_logfmt(f, n, line, sizeof line);
  fprintf(stderr, "demo: serve: %s\n", line);
}

static void *serve_thread(void *arg) {
  sf_proc *p = arg;
  sf_err err = {0};
  if (sf_proc_run(p, &err)) cli_fail("demo", &err);
  return NULL;
}

/* Reads the committed topic from the beginning, as a query service would,
 * until the announcement of staging_id arrives; prints it as JSON. */
static sf_code await_committed(const char *brokers, const char *staging_id, int timeout_s,
                               sf_err *err) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, sizeof errstr) ||
      rd_kafka_conf_set(conf, "group.id", "segforge-demo-reader", errstr,
                        sizeof errstr) ||
      rd_kafka_conf_set(conf, "fetch.wait.max.ms", "5", errstr, sizeof errstr)) {
    rd_kafka_conf_destroy(conf);
    return sf_err_set(err, SF_EINVAL, "%s", errstr);
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof errstr);
  if (!rk) {
    rd_kafka_conf_destroy(conf);
    return sf_err_set(err, SF_EIO, "cannot create a consumer: %s", errstr);
  }
  rd_kafka_poll_set_consumer(rk);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(DEMO_PARTITIONS);
  for (int i = 0; i < DEMO_PARTITIONS; i++)
    rd_kafka_topic_partition_list_add(l, SF_TOPIC_COMMITTED_DEFAULT, i)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
  rd_kafka_assign(rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  sf_schema_set *set = NULL;
  sf_event_decoder *dec = NULL;
  sf_code rc = sf_schema_set_new(&set, err);
  if (!rc) rc = sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &dec, err);
  int found = 0;
  for (double end = sf_clock_mono_s() + timeout_s;
       !rc && !found && sf_clock_mono_s() < end;) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
    if (!m) continue;
    sf_event ev;
    memset(&ev, 0, sizeof ev);
    if (!m->err && !sf_event_decode(dec, m->payload, m->len, &ev, NULL, NULL) &&
        ev.type == SF_EVENT_SEGMENTS_COMMITTED &&
        !strcmp(ev.u.committed.staging_id, staging_id)) {
      json_t *j = sf_event_to_json(&ev);
      char *text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
      fprintf(stderr, "demo: SegmentsCommitted received from %s:\n",
              SF_TOPIC_COMMITTED_DEFAULT);
      printf("%s\n", text ? text : "{}");
      fflush(stdout);
      free(text);
      json_decref(j);
      found = 1;
    }
    sf_event_clear(&ev);
    rd_kafka_message_destroy(m);
  }
  if (!rc && !found)
    rc = sf_err_set(err, SF_EIO, "no SegmentsCommitted for %s within %d s", staging_id,
                    timeout_s);
  sf_event_decoder_free(dec);
  sf_schema_set_free(set);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return rc;
}

int cli_cmd_demo(int argc, char **argv) {
  const struct option opts[] = {{"dir", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_ROWS),
                                CLI_OPT(CLI_FLAG_DIM),
                                CLI_OPT(CLI_FLAG_SHARDS),
                                CLI_OPT(CLI_FLAG_INDEX_TYPE),
                                CLI_OPT(CLI_FLAG_METRIC),
                                CLI_OPT(CLI_FLAG_NLIST),
                                CLI_OPT(CLI_FLAG_NPROBE),
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  char dirbuf[4096] = "", *dir = NULL;
  uint64_t rows = 100000, dim = 64, shards = 4, nlist = 256, nprobe = 16;
  int itype = SF_IVF_SQ, imetric = SF_L2;
  sf_err err = {0};
  int c;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("demo", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'd':
        dir = optarg;
        break;
      case CLI_FLAG_ROWS:
        rc = cli_flag_u64(c, optarg, &rows, &err);
        break;
      case CLI_FLAG_DIM:
        rc = cli_flag_u64(c, optarg, &dim, &err);
        break;
      case CLI_FLAG_SHARDS:
        rc = cli_flag_u64(c, optarg, &shards, &err);
        break;
      case CLI_FLAG_NLIST:
        rc = cli_flag_u64(c, optarg, &nlist, &err);
        break;
      case CLI_FLAG_NPROBE:
        rc = cli_flag_u64(c, optarg, &nprobe, &err);
        break;
      case CLI_FLAG_INDEX_TYPE:
        rc = cli_flag_choice(c, optarg, &itype, &err);
        break;
      case CLI_FLAG_METRIC:
        rc = cli_flag_choice(c, optarg, &imetric, &err);
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("demo", "unknown option");
    }
    if (rc) return cli_usage("demo", "%s", err.msg);
  }
  /* What the demo itself needs, beyond each flag's range: 1000 queries
   * drawn from the data, and dim/8 PQ sub-quantizers. */
  if (rows < DEMO_MIN_ROWS)
    return cli_usage("demo", "the demo needs --rows %u or more (it searches %u queries)",
                     DEMO_MIN_ROWS, DEMO_MIN_ROWS);
  if (dim % 8)
    return cli_usage("demo",
                     "--dim must be a multiple of 8 (PQ uses dim/8 sub-quantizers)");
  const char *type = sf_index_type_name((sf_index_type)itype);
  const char *metric = sf_metric_name((sf_metric)imetric);
  if (!dir) {
    snprintf(dirbuf, sizeof dirbuf, "%s/segforge-demo.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dirbuf)) {
      perror("segforge demo: mkdtemp");
      return 1;
    }
    dir = dirbuf;
  }
  double t0 = sf_clock_mono_s();
  char data[4200], dataset[4200], staging[4400], base[4400], query[4400], gt[4400];
  char s_rows[32], s_dim[32], s_nlist[32], s_nprobe[32], s_rpf[32], s_pqm[32], s_exp[32];
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(dataset, sizeof dataset, "%s/dataset", dir);
  snprintf(staging, sizeof staging, "%s/_indices/_staging/%s", dataset, DEMO_JOB);
  snprintf(base, sizeof base, "%s/base.fvecs", data);
  snprintf(query, sizeof query, "%s/query.fvecs", data);
  snprintf(gt, sizeof gt, "%s/gt.ivecs", data);
  uint64_t rpf = (rows + shards * 4 - 1) / (shards * 4); /* four fragments per shard */
  snprintf(s_rows, sizeof s_rows, "%llu", (unsigned long long)rows);
  snprintf(s_dim, sizeof s_dim, "%llu", (unsigned long long)dim);
  snprintf(s_nlist, sizeof s_nlist, "%llu", (unsigned long long)nlist);
  snprintf(s_nprobe, sizeof s_nprobe, "%llu", (unsigned long long)nprobe);
  snprintf(s_rpf, sizeof s_rpf, "%llu", (unsigned long long)rpf);
  snprintf(s_pqm, sizeof s_pqm, "%llu", (unsigned long long)(dim / 8));
  snprintf(s_exp, sizeof s_exp, "0-%llu", (unsigned long long)(4 * shards - 1));
  fprintf(stderr, "demo: working in %s\n", dir);

  /* The platform: an embedded broker and the stream processor. */
  sf_broker *broker = NULL;
  sf_kconf *k = sf_kconf_new();
  sf_proc *proc = NULL;
  pthread_t th;
  int started = 0, ok = 0;
  if (!k) return cli_fail("demo", &(sf_err){SF_ENOMEM, "out of memory"});
  if (sf_broker_start(DEMO_PARTITIONS, &broker, &err)) goto fail;
  const char *B = sf_broker_bootstraps(broker);
  fprintf(stderr, "demo: embedded Kafka broker at %s\n", B);
  /* The budget: about half of the index's codes per segment, so the plan
   * merges the shards into two segments. */
  uint64_t code = itype == SF_IVF_FLAT ? 4 * dim : itype == SF_IVF_SQ ? dim : dim / 8;
  const char *roots[1] = {dir}; /* the processor serves the demo's datasets only */
  sf_proc_opts po = {.kconf = k,
                     .target_segment_bytes = rows * (code + 2) * 6 / 10,
                     .max_merges = 2,
                     .staging_timeout_ms = 120000,
                     .dataset_roots = roots,
                     .n_dataset_roots = 1,
                     .log = demo_log};
  if (sf_kconf_set(k, "bootstrap.servers", B, &err) ||
      sf_kconf_set(k, "fetch.wait.max.ms", "5", &err) || sf_proc_new(&po, &proc, &err))
    goto fail;
  if (pthread_create(&th, NULL, serve_thread, proc)) {
    sf_err_set(&err, SF_ENOMEM, "cannot start the processor's thread");
    goto fail;
  }
  started = 1;

  char *gen[] = {"segforge", "gen",          "--out",     data,   "--rows",     s_rows,
                 "--dim",    s_dim,          "--queries", "1000", "--clusters", "500",
                 "--metric", (char *)metric, "--k",       "10",   NULL};
  if (!run("gen", gen)) goto out;
  char *train[] = {"segforge", "train",        "--vectors",  base,       "--out",
                   staging,    "--index-type", (char *)type, "--metric", (char *)metric,
                   "--nlist",  s_nlist,        "--pq-m",     s_pqm,      NULL};
  if (itype != SF_IVF_PQ) train[12] = NULL; /* --pq-m only for IVF_PQ */
  if (sf_fs_mkdirs(staging, &err)) goto fail;
  if (!run("train", train)) goto out;

  /* The workers: shard i holds fragments 4i..4i+3 and announces itself. */
  pid_t pids[64];
  char frag[64][32], sid[64][32];
  fprintf(stderr,
          "demo: staging %llu shards in parallel worker processes that publish "
          "ShardStaged\n",
          (unsigned long long)shards);
  for (uint64_t i = 0; i < shards; i++) {
    snprintf(frag[i], sizeof frag[i], "%llu-%llu", (unsigned long long)(4 * i),
             (unsigned long long)(4 * i + 3));
    snprintf(sid[i], sizeof sid[i], "worker-%llu", (unsigned long long)i);
    char *stage[] = {"segforge", "stage", "--vectors", base, "--staging", staging,
                     "--fragments", frag[i], "--rows-per-fragment", s_rpf, "--shard-id",
                     sid[i], "--publish", "--brokers", (char *)B, "--dataset-uri",
                     dataset, "--index-name", DEMO_INDEX, "--column", "embedding",
                     "--staging-id", DEMO_JOB, "--expected-fragments", s_exp,
                     /* a re-run in the same --dir re-stages the demo's own shards */
                     "--force", NULL};
    if (i == 0) show(stage);
    pids[i] = spawn(stage);
  }
  int staged = 1;
  for (uint64_t i = 0; i < shards; i++) staged &= wait_ok(pids[i], "stage --publish");
  if (!staged) goto out;

  if (await_committed(B, DEMO_JOB, 60, &err)) goto fail;
  sf_proc_stop(proc);
  pthread_join(th, NULL);
  started = 0;

  char *search[] = {"segforge",
                    "search",
                    "--dataset",
                    dataset,
                    "--index",
                    DEMO_INDEX,
                    "--queries",
                    query,
                    "--groundtruth",
                    gt,
                    "--rows-per-fragment",
                    s_rpf,
                    "--k",
                    "10",
                    "--nprobe",
                    s_nprobe,
                    NULL};
  if (!run("search", search)) goto out;
  fprintf(stderr, "demo: done in %.1f s; the dataset is in %s\n", sf_clock_mono_s() - t0,
          dataset);
  ok = 1;
  goto out;
fail:
  cli_fail("demo", &err);
out:
  if (started) {
    sf_proc_stop(proc);
    pthread_join(th, NULL);
  }
  sf_proc_free(proc);
  sf_broker_stop(broker);
  sf_kconf_free(k);
  return ok ? 0 : 1;
}
