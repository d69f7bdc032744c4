/*
 * cmd_demo.c - `segforge demo`: the whole path on generated data, as the
 * README's first command. Each step runs this same program as a child
 * process with the arguments a user would type, so the demo exercises the
 * real command line; the shard workers run in parallel, as independent
 * workers of a distributed build would.
 */
#include <getopt.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/fsutil.h"
#include "core/types.h"

extern char **environ;

static void help(void) {
  printf(
      "usage: segforge demo [--dir DIR] [--rows N] [--dim D] [--shards S]\n"
      "                     [--index-type T] [--metric M] [--nlist L] [--nprobe P]\n\n"
      "Generates clustered vectors with exact ground truth, trains a quantizer,\n"
      "stages S shards in parallel worker processes, and searches them, printing\n"
      "recall@10 against brute force. Defaults: a fresh temporary DIR, --rows\n"
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

static int run(const char *step, char *const *args) {
  fprintf(stderr, "demo: segforge");
  for (int i = 1; args[i]; i++) fprintf(stderr, " %s", args[i]);
  fprintf(stderr, "\n");
  return wait_ok(spawn(args), step);
}

int cli_cmd_demo(int argc, char **argv) {
  static const struct option opts[] = {
      {"dir", required_argument, 0, 'd'},    {"rows", required_argument, 0, 'n'},
      {"dim", required_argument, 0, 'D'},    {"shards", required_argument, 0, 's'},
      {"index-type", required_argument, 0, 't'}, {"metric", required_argument, 0, 'm'},
      {"nlist", required_argument, 0, 'l'},  {"nprobe", required_argument, 0, 'p'},
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  char dirbuf[4096] = "", *dir = NULL;
  uint64_t rows = 100000, dim = 64, shards = 4, nlist = 256, nprobe = 16;
  const char *type = "IVF_SQ", *metric = "L2";
  sf_err err = {0};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    sf_index_type t;
    sf_metric m;
    switch (c) {
      case 'd': dir = optarg; break;
      case 'n': rc = cli_parse_u64("--rows", optarg, 1000, 1ULL << 28, 1, &rows, &err); break;
      case 'D': rc = cli_parse_u64("--dim", optarg, 8, 4096, 0, &dim, &err); break;
      case 's': rc = cli_parse_u64("--shards", optarg, 1, 64, 0, &shards, &err); break;
      case 'l': rc = cli_parse_u64("--nlist", optarg, 1, 65536, 0, &nlist, &err); break;
      case 'p': rc = cli_parse_u64("--nprobe", optarg, 1, 65536, 0, &nprobe, &err); break;
      case 't': rc = sf_index_type_parse(optarg, &t, &err), type = optarg; break;
      case 'm': rc = sf_metric_parse(optarg, &m, &err), metric = optarg; break;
      case 'h': help(); return 0;
      default: return cli_usage("demo", "unknown option");
    }
    if (rc) return cli_usage("demo", "%s", err.msg);
  }
  if (dim % 8) return cli_usage("demo", "--dim must be a multiple of 8 (PQ uses dim/8 sub-quantizers)");
  if (!dir) {
    snprintf(dirbuf, sizeof dirbuf, "%s/segforge-demo.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dirbuf)) {
      perror("segforge demo: mkdtemp");
      return 1;
    }
    dir = dirbuf;
  }
  char data[4096], staging[4200], base[4200], query[4200], gt[4200];
  char s_rows[32], s_dim[32], s_nlist[32], s_nprobe[32], s_rpf[32], s_pqm[32];
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(staging, sizeof staging, "%s/dataset/_indices/_staging/demo-job-1", dir);
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
  fprintf(stderr, "demo: working in %s\n", dir);

  char *gen[] = {"segforge", "gen", "--out", data, "--rows", s_rows, "--dim", s_dim,
                 "--queries", "1000", "--clusters", "500", "--metric", (char *)metric,
                 "--k", "10", NULL};
  if (!run("gen", gen)) return 1;
  char *train[] = {"segforge", "train", "--vectors", base, "--out", staging,
                   "--index-type", (char *)type, "--metric", (char *)metric,
                   "--nlist", s_nlist, "--pq-m", s_pqm, NULL};
  if (strcasecmp(type, "IVF_PQ")) train[12] = NULL; /* --pq-m only for IVF_PQ */
  if (sf_fs_mkdirs(staging, &err)) return cli_fail("demo", &err);
  if (!run("train", train)) return 1;

  /* The workers: shard i holds fragments 4i..4i+3. */
  pid_t pids[64];
  char frag[64][32], sid[64][32], shard_paths[64][4300];
  fprintf(stderr, "demo: staging %llu shards in parallel worker processes\n",
          (unsigned long long)shards);
  for (uint64_t i = 0; i < shards; i++) {
    snprintf(frag[i], sizeof frag[i], "%llu-%llu", (unsigned long long)(4 * i),
             (unsigned long long)(4 * i + 3));
    snprintf(sid[i], sizeof sid[i], "worker-%llu", (unsigned long long)i);
    snprintf(shard_paths[i], sizeof shard_paths[i], "%s/%s.sfshard", staging, sid[i]);
    char *stage[] = {"segforge", "stage", "--vectors", base, "--staging", staging,
                     "--fragments", frag[i], "--rows-per-fragment", s_rpf,
                     "--shard-id", sid[i], NULL};
    pids[i] = spawn(stage);
  }
  int ok = 1;
  for (uint64_t i = 0; i < shards; i++) ok &= wait_ok(pids[i], "stage");
  if (!ok) return 1;

  char *search[8 + 64 + 12] = {"segforge", "search", "--queries", query, "--groundtruth", gt,
                               "--rows-per-fragment", s_rpf, "--k", "10", "--nprobe",
                               s_nprobe};
  int n = 12;
  for (uint64_t i = 0; i < shards; i++) search[n++] = shard_paths[i];
  search[n] = NULL;
  if (!run("search", search)) return 1;
  return 0;
}
