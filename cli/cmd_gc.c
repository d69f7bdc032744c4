/*
 * cmd_gc.c - `segforge gc`: removes what no kept catalog version needs
 * (the rules are in core/catalog/gc.h), printing each path as it goes.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "core/catalog/gc.h"

static void help(void) {
  printf(
      "usage: segforge gc --dataset D [--keep-versions K] [--grace DUR] [--dry-run]\n\n"
      "Keeps the newest K catalog versions (default %u; never fewer than 1) and what\n"
      "they reference; removes older versions, the staging roots of committed jobs,\n"
      "segment files and quantizers no kept version references, and temporary files\n"
      "older than an hour. Segments a running finalize or serve will commit are kept\n"
      "whatever their age (they are declared in _indices/_intents/). Any other\n"
      "unreferenced segment or quantizer that no dropped version referenced either\n"
      "(built by 'segforge build' for a later commit?) stays until it is older than\n"
      "--grace (default %us). --dry-run prints what would go and keeps it.\n",
      SF_GC_DEFAULT_KEEP, SF_GC_DEFAULT_GRACE_MS / 1000u);
}

static void show(void *ctx, sf_gc_kind kind, const char *path, uint64_t bytes) {
  printf("%s%-9s %12" PRIu64 "  %s\n", *(const int *)ctx ? "would remove " : "removed ",
         sf_gc_kind_name(kind), bytes, path);
}

int cli_cmd_gc(int argc, char **argv) {
  const struct option opts[] = {{"dataset", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_KEEP_VERSIONS),
                                CLI_OPT(CLI_FLAG_GRACE),
                                {"dry-run", no_argument, 0, 'n'},
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *dataset = NULL;
  uint64_t keep = SF_GC_DEFAULT_KEEP;
  int64_t grace_ms = SF_GC_DEFAULT_GRACE_MS;
  int dry = 0, c;
  sf_err err = {0};
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("gc", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'd':
        dataset = optarg;
        break;
      case CLI_FLAG_KEEP_VERSIONS:
        rc = cli_flag_u64(c, optarg, &keep, &err);
        break;
      case CLI_FLAG_GRACE:
        rc = cli_flag_ms(c, optarg, &grace_ms, &err);
        break;
      case 'n':
        dry = 1;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("gc", "unknown option");
    }
    if (rc) return cli_usage("gc", "%s", err.msg);
  }
  if (!dataset) return cli_usage("gc", "--dataset D is required");
  if (optind < argc) return cli_usage("gc", "unexpected argument '%s'", argv[optind]);
  sf_gc_opts o = {.keep_versions = (uint32_t)keep,
                  .dry_run = dry,
                  .grace_ms = grace_ms,
                  .temp_age_ms = -1};
  sf_gc_stats st;
  if (sf_gc_run(dataset, &o, show, &dry, &st, &err)) return cli_fail("gc", &err);
  size_t total = 0;
  for (int k = 0; k < SF_GC_KIND_COUNT; k++) total += st.removed[k];
  printf("%s %zu paths, %" PRIu64 " bytes; kept versions %" PRIu64 "..%" PRIu64 "\n",
         dry ? "would remove" : "removed", total, st.bytes, st.oldest_kept, st.newest);
  return 0;
}
