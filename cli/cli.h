/*
 * cli.h - the segforge program: one entry point per command (cli/cmd_*.c),
 * and the flag helpers they share. The CLI is the only layer that prints:
 * results to stdout, errors to stderr as "segforge <cmd>: <message>".
 */
#ifndef SF_CLI_H
#define SF_CLI_H

#include <stdint.h>

#include "core/base/error.h"
#include "core/base/fragset.h"

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

/* Prints "segforge <cmd>: <code>: <msg>" to stderr and returns 1. */
int cli_fail(const char *cmd, const sf_err *err);
/* Prints a usage error and returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parse an unsigned integer flag value in [min, max]; accepts K/M/G suffixes
 * (powers of 1024) when `sizes` is set. On failure fills err naming the flag. */
sf_code cli_parse_u64(const char *flag, const char *val, uint64_t min, uint64_t max,
                      int sizes, uint64_t *out, sf_err *err);

/* Checks the ids given in flags, as (flag, value) pairs ending with NULL;
 * a NULL value (flag not given) is skipped. An id follows the catalog's rule
 * (sf_catalog_check_id): it names a directory or file, so a value such as
 * '../x' must be refused before anything is read or written. SF_EINVAL with
 * err naming the flag. */
sf_code cli_check_ids(sf_err *err, ...) __attribute__((sentinel));

/* The planning flags that plan, build and finalize share, as getopt_long
 * entries: --target-segment-bytes N (K/M/G; 0 = one segment per shard),
 * --expected-fragments LIST, --index-type T. Their option values are 'b',
 * 'e' and 't'; a command using CLI_PLAN_OPTIONS keeps those letters free. */
/* clang-format off */
#define CLI_PLAN_OPTIONS                                 \
  {"target-segment-bytes", required_argument, 0, 'b'},   \
  {"expected-fragments", required_argument, 0, 'e'},     \
  {"index-type", required_argument, 0, 't'}
/* clang-format on */

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
#endif
