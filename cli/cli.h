/*
 * cli.h - the segforge program: one entry point per command (cli/cmd_*.c),
 * and the flag helpers they share. The CLI is the only layer that prints:
 * results to stdout, errors to stderr as "segforge <cmd>: <message>".
 */
#ifndef SF_CLI_H
#define SF_CLI_H

#include <stdint.h>

#include "cli/flags.h"
#include "core/base/error.h"
#include "core/base/fragset.h"
#include "core/pipeline/plan.h"

/* Each command: argv[0] is the command name; returns the exit status
 * (0 ok, 1 failure, 2 usage error). */
typedef int (*cli_cmd_fn)(int argc, char **argv);

int cli_cmd_train(int argc, char **argv);
int cli_cmd_stage(int argc, char **argv);
int cli_cmd_search(int argc, char **argv);
int cli_cmd_inspect(int argc, char **argv);
int cli_cmd_gen(int argc, char **argv);
int cli_cmd_demo(int argc, char **argv);
int cli_cmd_events(int argc, char **argv);
int cli_cmd_finalize(int argc, char **argv);
int cli_cmd_plan(int argc, char **argv);
int cli_cmd_build(int argc, char **argv);
int cli_cmd_commit(int argc, char **argv);
int cli_cmd_gc(int argc, char **argv);
int cli_cmd_broker(int argc, char **argv);
int cli_cmd_serve(int argc, char **argv);
int cli_cmd_compact(int argc, char **argv);
int cli_cmd_status(int argc, char **argv);
int cli_cmd_wait(int argc, char **argv);
/* `train --from-dataset D --index NAME --out S` (cmd_train_from.c). */
int cli_train_from_dataset(const char *dataset, const char *index, const char *out);

/* Prints "segforge <cmd>: <code>: <msg>" to stderr and returns 1. */
int cli_fail(const char *cmd, const sf_err *err);
/* Prints a usage error and returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The planning flags that plan, build and finalize share (cli/flags.h):
 * --target-segment-bytes, --expected-fragments and --index-type, as
 * getopt_long entries of a run-time option array. */
#define CLI_PLAN_OPTIONS                                                        \
  CLI_OPT(CLI_FLAG_TARGET_SEGMENT_BYTES), CLI_OPT(CLI_FLAG_EXPECTED_FRAGMENTS), \
      CLI_OPT(CLI_FLAG_INDEX_TYPE)

typedef struct cli_plan_flags {
  uint64_t target_segment_bytes; /* 0: none */
  roaring_bitmap_t *expected;    /* NULL: none; owned, see cli_plan_flags_clear */
  int index_type;                /* an sf_index_type, or -1: none */
} cli_plan_flags;
#define CLI_PLAN_FLAGS_INIT \
  { 0, NULL, -1 }

/* Applies option c with argument arg to f: 1 when c is one of the
 * planning flags (*rc is SF_OK or SF_EINVAL with err naming the flag), 0
 * otherwise. A repeated flag replaces the earlier value. */
int cli_plan_flag(cli_plan_flags *f, int c, const char *arg, sf_code *rc, sf_err *err);
/* Frees what f owns; f may be used again after CLI_PLAN_FLAGS_INIT. */
void cli_plan_flags_clear(cli_plan_flags *f);

/* The flags of `plan` and `build` (build adds --dataset and --max-merges).
 * pf is owned (cli_plan_flags_clear). */
typedef struct cli_plan_args {
  const char *staging, *dataset; /* dataset: build only */
  sf_plan_opts po;               /* staging_id and the planning flags */
  cli_plan_flags pf;             /* what po borrows */
  uint64_t max_merges;           /* build only; 0: the number of cores */
  int json;
} cli_plan_args;

/* Parses argv for `plan` (build = 0) or `build` (build = 1) into *a and
 * plans the staging directory into *plan (the caller's: sf_plan_free).
 * Returns -1 when the command should go on, or the exit status to return
 * (0 after --help, 2 on a usage error, that of cli_fail when planning
 * fails; already printed) with nothing left to free. The flags that a->po
 * borrowed from a->pf are freed once the plan is made: only a->staging,
 * a->dataset, a->max_merges and a->json remain for the caller. */
int cli_plan_load(const char *cmd, int build, void (*help)(void), int argc, char **argv,
                  cli_plan_args *a, sf_plan **plan);
#endif
