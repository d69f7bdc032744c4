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
      "usage: segforge gc --dataset D [--keep-versions K] [--grace SECONDS] [--dry-run]\n\n"
      "Keeps the newest K catalog versions (default %u; never fewer than 1) and what\n"
      "they reference; removes older versions, the staging roots of committed jobs,\n"
      "segment files and quantizers no kept version references, and temporary files\n"
      "older than an hour. Segments a running finalize or serve will commit are kept\n"
      "whatever their age (they are declared in _indices/_intents/). Any other\n"
      "unreferenced segment or quantizer that no dropped version referenced either\n"
      "(built by 'segforge build' for a later commit?) stays until it is older than\n"
      "--grace (default %u seconds). --dry-run prints what would go and keeps it.\n",
      SF_GC_DEFAULT_KEEP, SF_GC_DEFAULT_GRACE_MS / 1000u);
}

static void show(void *ctx, sf_gc_kind kind, const char *path, uint64_t bytes) {
  printf("%s%-9s %12" PRIu64 "  %s\n", *(const int *)ctx ? "would remove " : "removed ",
         sf_gc_kind_name(kind), bytes, path);
}

int cli_cmd_gc(int argc, char **argv) {
  static const struct option opts[] = {
      {"dataset", required_argument, 0, 'd'}, {"keep-versions", required_argument, 0, 'k'},
      {"grace", required_argument, 0, 'g'},   {"dry-run", no_argument, 0, 'n'},
      {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
  const char *dataset = NULL;
  uint64_t keep = SF_GC_DEFAULT_KEEP, grace = SF_GC_DEFAULT_GRACE_MS / 1000u;
  int dry = 0, c;
  sf_err err = {0};
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'd': dataset = optarg; break;
      case 'k': rc = cli_parse_u64("--keep-versions", optarg, 1, UINT32_MAX, 0, &keep, &err); break;
      case 'g': rc = cli_parse_u64("--grace", optarg, 0, INT64_MAX / 1000, 0, &grace, &err); break;
      case 'n': dry = 1; break;
      case 'h': help(); return 0;
      default: return cli_usage("gc", "unknown option");
    }
    if (rc) return cli_usage("gc", "%s", err.msg);
  }
  if (!dataset) return cli_usage("gc", "--dataset D is required");
  if (optind < argc) return cli_usage("gc", "unexpected argument '%s'", argv[optind]);
  sf_gc_opts o = {.keep_versions = (uint32_t)keep, .dry_run = dry,
                  .grace_ms = (int64_t)grace * 1000, .temp_age_ms = -1};
  sf_gc_stats st;
  if (sf_gc_run(dataset, &o, show, &dry, &st, &err)) return cli_fail("gc", &err);
  size_t total = 0;
  for (int k = 0; k < SF_GC_KIND_COUNT; k++) total += st.removed[k];
  printf("%s %zu paths, %" PRIu64 " bytes; kept versions %" PRIu64 "..%" PRIu64 "\n",
         dry ? "would remove" : "removed", total, st.bytes, st.oldest_kept, st.newest);
  return 0;
}
