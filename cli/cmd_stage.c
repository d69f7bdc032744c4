/*
 * cmd_stage.c - `segforge stage`: one worker writes its shard.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/fragset.h"
#include "core/fsutil.h"
#include "core/quantizer.h"
#include "core/stage.h"

static void help(void) {
  printf(
      "usage: segforge stage --vectors FILE --staging DIR --fragments LIST\n"
      "                      --rows-per-fragment R --shard-id ID [--memory SIZE] [--json]\n\n"
      "Encodes the rows of the fragments in LIST (a range list such as 0-63,70) of\n"
      "FILE (.fvecs or .bvecs) with DIR/quantizer and writes DIR/ID.sfshard.\n"
      "Row i of FILE is fragment i / R, offset i %% R; its row id is\n"
      "(fragment << 32) | offset. Workers may stage into one DIR at once.\n"
      "--memory bounds the codes held at once (default 256M); larger shards take\n"
      "several passes over their rows.\n");
}

static void progress(void *arg, uint64_t done, uint64_t total) {
  double *last = arg;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  double now = ts.tv_sec + ts.tv_nsec * 1e-9;
  if (now - *last < 0.2 && done < total) return;
  *last = now;
  fprintf(stderr, "\rstage: %llu / %llu rows (%.0f%%)", (unsigned long long)done,
          (unsigned long long)total, total ? 100.0 * done / total : 100.0);
  if (done >= total) fputc('\n', stderr);
}

int cli_cmd_stage(int argc, char **argv) {
  static const struct option opts[] = {
      {"vectors", required_argument, 0, 'v'},  {"staging", required_argument, 0, 's'},
      {"fragments", required_argument, 0, 'f'}, {"rows-per-fragment", required_argument, 0, 'r'},
      {"shard-id", required_argument, 0, 'i'}, {"memory", required_argument, 0, 'm'},
      {"json", no_argument, 0, 'j'},           {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  const char *vectors = NULL, *staging = NULL, *frags = NULL, *shard_id = NULL;
  uint64_t rpf = 0, memory = 256ULL << 20;
  int json = 0, c;
  sf_err err = {0};
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'v': vectors = optarg; break;
      case 's': staging = optarg; break;
      case 'f': frags = optarg; break;
      case 'i': shard_id = optarg; break;
      case 'r':
        rc = cli_parse_u64("--rows-per-fragment", optarg, 1, UINT32_MAX, 0, &rpf, &err);
        break;
      case 'm': rc = cli_parse_u64("--memory", optarg, 1 << 20, 1ULL << 40, 1, &memory, &err); break;
      case 'j': json = 1; break;
      case 'h': help(); return 0;
      default: return cli_usage("stage", "unknown option");
    }
    if (rc) return cli_usage("stage", "%s", err.msg);
  }
  if (!vectors || !staging || !frags || !shard_id || !rpf)
    return cli_usage("stage",
                     "--vectors, --staging, --fragments, --rows-per-fragment and --shard-id "
                     "are required");
  if (optind < argc) return cli_usage("stage", "unexpected argument '%s'", argv[optind]);
  roaring_bitmap_t *fr = NULL;
  if (sf_fragset_parse(frags, "--fragments", &fr, &err)) return cli_usage("stage", "%s", err.msg);
  if (sf_stage_check_id("--shard-id", shard_id, &err)) {
    roaring_bitmap_free(fr);
    return cli_usage("stage", "%s", err.msg);
  }

  char *qpath = sf_fs_join(staging, "quantizer");
  sf_quant *q = NULL;
  int status = 1;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  if (!qpath) {
    sf_err_set(&err, SF_ENOMEM, "out of memory");
    goto out;
  }
  if (sf_quant_load(qpath, &q, &err)) {
    if (err.code == SF_ENOTFOUND)
      sf_err_prefix(&err, "no quantizer in the staging root (run 'segforge train --out %s' "
                          "first)", staging);
    goto out;
  }
  double last = 0;
  sf_stage_opts o = {.vectors = vectors,
                     .staging_root = staging,
                     .shard_id = shard_id,
                     .fragments = fr,
                     .rows_per_fragment = (uint32_t)rpf,
                     .memory_budget = memory,
                     .progress = isatty(2) ? progress : NULL,
                     .progress_arg = &last};
  sf_stage_result res;
  if (sf_stage_shard(&o, q, &res, &err)) goto out;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
  char *list = sf_fragset_format(fr);
  if (json) {
    char sum[17];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)sf_quant_checksum(q));
    json_t *j = json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:f}", "shard_id", shard_id, "path",
                          res.path, "rows", (json_int_t)res.rows, "bytes",
                          (json_int_t)res.bytes, "fragments", list ? list : "",
                          "quantizer_checksum", sum, "seconds", secs);
    if (j) json_dumpf(j, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(j);
  } else
    printf("staged %s: %llu rows of fragments %s, %llu bytes, %u pass%s, %.2f s\n", res.path,
           (unsigned long long)res.rows, list ? list : "?", (unsigned long long)res.bytes,
           res.passes, res.passes == 1 ? "" : "es", secs);
  free(list);
  free(res.path);
  status = 0;
out:
  if (status) cli_fail("stage", &err);
  sf_quant_free(q);
  free(qpath);
  roaring_bitmap_free(fr);
  return status;
}
