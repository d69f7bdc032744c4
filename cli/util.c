/* util.c - flag parsing and error printing shared by the commands. */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/base/fragset.h"
#include "core/base/types.h"
#include "core/catalog/catalog.h"

int cli_fail(const char *cmd, const sf_err *err) {
  fprintf(stderr, "segforge %s: %s: %s\n", cmd, sf_code_name(err->code), err->msg);
  return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "segforge %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see 'segforge %s --help')\n", cmd);
  va_end(ap);
  return 2;
}

int cli_plan_flag(cli_plan_flags *f, int c, const char *arg, sf_code *rc, sf_err *err) {
  switch (c) {
    case CLI_FLAG_TARGET_SEGMENT_BYTES:
      *rc = cli_flag_u64(c, arg, &f->target_segment_bytes, err);
      return 1;
    case CLI_FLAG_EXPECTED_FRAGMENTS: {
      roaring_bitmap_t *b = NULL;
      if (!(*rc = cli_flag_fragset(c, arg, &b, err))) {
        if (f->expected) sf_fragset_free(f->expected);
        f->expected = b;
      }
      return 1;
    }
    case CLI_FLAG_INDEX_TYPE:
      *rc = cli_flag_choice(c, arg, &f->index_type, err);
      return 1;
  }
  return 0;
}

void cli_plan_flags_clear(cli_plan_flags *f) {
  if (f->expected) sf_fragset_free(f->expected); /* CRoaring 0.2 crashes on NULL */
  f->expected = NULL;
}

static int plan_args_parse(const char *cmd, int build, void (*help)(void), int argc,
                           char **argv, cli_plan_args *a) {
  const struct option opts[] = {{"staging", required_argument, 0, 's'},
                                CLI_PLAN_OPTIONS,
                                CLI_OPT(CLI_FLAG_STAGING_ID),
                                {"json", no_argument, 0, 'j'},
                                {"help", no_argument, 0, 'h'},
                                /* build only: */
                                {"dataset", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_MAX_MERGES),
                                {0, 0, 0, 0}};
  const int nbuild = 2, n = (int)(sizeof opts / sizeof opts[0]);
  struct option use[sizeof opts / sizeof opts[0]];
  memcpy(use, opts, sizeof opts);
  if (!build) memset(&use[n - 1 - nbuild], 0, sizeof use[0]);
  *a = (cli_plan_args){.pf = CLI_PLAN_FLAGS_INIT};
  sf_err err = {0};
  int c, status = -1;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", use, &env_err))
      return cli_usage(cmd, "%s", env_err.msg);
  }
  optind = 1;
  while (status < 0 && (c = getopt_long(argc, argv, "", use, NULL)) != -1) {
    sf_code rc = SF_OK;
    if (cli_plan_flag(&a->pf, c, optarg, &rc, &err)) c = 0;
    switch (c) {
      case 0:
        break;
      case 's':
        a->staging = optarg;
        break;
      case 'd':
        a->dataset = optarg;
        break;
      case CLI_FLAG_MAX_MERGES:
        rc = cli_flag_u64(c, optarg, &a->max_merges, &err);
        break;
      case CLI_FLAG_STAGING_ID:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) a->po.staging_id = optarg;
        break;
      case 'j':
        a->json = 1;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, use);
        status = 0;
        break;
      default:
        status = cli_usage(cmd, "unknown option");
    }
    if (rc) status = cli_usage(cmd, "%s", err.msg);
  }
  if (status < 0 && !a->staging) status = cli_usage(cmd, "--staging DIR is required");
  if (status < 0 && build && !a->dataset)
    status = cli_usage(cmd, "--dataset D is required");
  if (status < 0 && optind < argc)
    status = cli_usage(cmd, "unexpected argument '%s'", argv[optind]);
  if (status >= 0) {
    cli_plan_flags_clear(&a->pf);
    return status;
  }
  a->po.target_segment_bytes = a->pf.target_segment_bytes;
  a->po.expected_fragments = a->pf.expected;
  a->po.index_type = a->pf.index_type;
  return -1;
}

int cli_plan_load(const char *cmd, int build, void (*help)(void), int argc, char **argv,
                  cli_plan_args *a, sf_plan **plan) {
  *plan = NULL;
  int status = plan_args_parse(cmd, build, help, argc, argv, a);
  if (status >= 0) return status;
  sf_err err = {0};
  sf_code rc = sf_plan_staging(a->staging, &a->po, plan, &err);
  cli_plan_flags_clear(&a->pf);
  return rc ? cli_fail(cmd, &err) : -1;
}
