/*
 * cmd_finalize.c - `segforge finalize`: plan + build + commit of one job,
 * without a broker. The same library call (sf_finalize) serves the stream
 * processor, so what this command does is exactly what `serve` does when a
 * job completes.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/base/fragset.h"
#include "core/base/progress.h"
#include "core/pipeline/finalize.h"

static void help(void) {
  printf(
      "usage: segforge finalize --dataset D --index NAME --column COL --staging-id ID\n"
      "                         [--target-segment-bytes N] [--expected-fragments LIST]\n"
      "                         [--index-type T] [--max-merges N] [--replace] "
      "[--json]\n\n"
      "Plans the shards of D/_indices/_staging/ID/, builds the segments (at most N at\n"
      "once; default: the number of cores) and commits them as one new catalog\n"
      "version of index NAME. A job committed before is a no-op that reports its\n"
      "version; a re-run after a crash reuses finished segments. --replace swaps out\n"
      "the segments whose fragments the new ones cover. Progress goes to stderr\n"
      "when it is a terminal.\n");
}

typedef struct {
  sf_progress clock;
} progress_state;

static void on_progress(void *ctx, const sf_build_progress *p) {
  progress_state *st = ctx;
  char line[256], extra[96];
  snprintf(extra, sizeof extra, "segments %zu/%zu, %u running", p->segments_done,
           p->segments_total, p->running);
  if (sf_progress_line(&st->clock, sf_progress_now(), p->bytes_done, p->bytes_total,
                       extra, p->segments_done == p->segments_total, line, sizeof line))
    fprintf(stderr, "\r%s\033[K%s", line,
            p->segments_done == p->segments_total ? "\n" : "");
}

int cli_cmd_finalize(int argc, char **argv) {
  const struct option opts[] = {{"dataset", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_INDEX),
                                {"column", required_argument, 0, 'c'},
                                CLI_OPT(CLI_FLAG_STAGING_ID),
                                CLI_PLAN_OPTIONS,
                                CLI_OPT(CLI_FLAG_MAX_MERGES),
                                {"replace", no_argument, 0, 'r'},
                                {"json", no_argument, 0, 'j'},
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  sf_finalize_req req = {0};
  cli_plan_flags pf = CLI_PLAN_FLAGS_INIT;
  uint64_t merges = 0;
  int json = 0, c, status = 2;
  sf_err err = {0};
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("finalize", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    if (cli_plan_flag(&pf, c, optarg, &rc, &err)) c = 0;
    switch (c) {
      case 0:
        break;
      case 'd':
        req.dataset = optarg;
        break;
      case CLI_FLAG_INDEX:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) req.index_name = optarg;
        break;
      case 'c':
        req.column = optarg;
        break;
      case CLI_FLAG_STAGING_ID:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) req.staging_id = optarg;
        break;
      case CLI_FLAG_MAX_MERGES:
        rc = cli_flag_u64(c, optarg, &merges, &err);
        break;
      case 'r':
        req.replace = 1;
        break;
      case 'j':
        json = 1;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        status = 0;
        goto out;
      default:
        cli_usage("finalize", "unknown option");
        goto out;
    }
    if (rc) {
      cli_usage("finalize", "%s", err.msg);
      goto out;
    }
  }
  if (!req.dataset || !req.index_name || !req.column || !req.staging_id) {
    cli_usage("finalize", "--dataset, --index, --column and --staging-id are required");
    goto out;
  }
  if (optind < argc) {
    cli_usage("finalize", "unexpected argument '%s'", argv[optind]);
    goto out;
  }
  progress_state st;
  sf_progress_init(&st.clock, sf_progress_now(), 0.25);
  req.expected_fragments = pf.expected;
  req.target_segment_bytes = pf.target_segment_bytes;
  req.index_type = pf.index_type;
  req.build.max_merges = (unsigned)merges;
  if (isatty(STDERR_FILENO)) {
    req.build.progress = on_progress;
    req.build.progress_ctx = &st;
  }
  double t0 = sf_progress_now();
  sf_finalize_result res;
  status = 1;
  if (sf_finalize(&req, &res, &err)) {
    cli_fail("finalize", &err);
    goto out;
  }
  double secs = sf_progress_now() - t0;
  if (json) {
    json_t *segs = json_array();
    for (size_t i = 0; segs && i < res.nsegs; i++) {
      char *fr = sf_fragset_format(res.segs[i].fragments);
      json_array_append_new(
          segs, json_pack("{s:s, s:s, s:I, s:I, s:s}", "segment_id",
                          res.segs[i].segment_id, "path", res.segs[i].path, "bytes",
                          (json_int_t)res.segs[i].bytes, "num_rows",
                          (json_int_t)res.segs[i].num_rows, "fragments", fr ? fr : ""));
      free(fr);
    }
    json_t *o =
        json_pack("{s:s, s:s, s:I, s:b, s:I, s:I, s:o, s:I, s:I, s:f}", "staging_id",
                  req.staging_id, "index", req.index_name, "catalog_version",
                  (json_int_t)res.version, "already", res.already, "num_shards",
                  (json_int_t)res.num_shards, "total_rows", (json_int_t)res.total_rows,
                  "segments", segs, "built", (json_int_t)res.build.built, "reused",
                  (json_int_t)res.build.reused, "seconds", secs);
    if (o) json_dumpf(o, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(o);
  } else if (res.already) {
    printf("job %s was committed before, in catalog version %" PRIu64
           " (%zu segments); "
           "nothing to do\n",
           req.staging_id, res.version, res.nsegs);
  } else {
    printf("committed job %s as catalog version %" PRIu64
           ": %zu segments (%zu built, %zu "
           "reused) from %zu shards, %" PRIu64 " rows, %.2f s\n",
           req.staging_id, res.version, res.nsegs, res.build.built, res.build.reused,
           res.num_shards, res.total_rows, secs);
    for (size_t i = 0; i < res.nsegs; i++) {
      char *fr = sf_fragset_format_short(res.segs[i].fragments, 6);
      printf("  %s  %" PRIu64 " rows  %" PRIu64 " bytes  fragments %s\n",
             res.segs[i].segment_id, res.segs[i].num_rows, res.segs[i].bytes,
             fr ? fr : "?");
      free(fr);
    }
  }
  sf_finalize_result_clear(&res);
  status = 0;
out:
  cli_plan_flags_clear(&pf);
  return status;
}
