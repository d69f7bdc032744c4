/*
 * cli.h - the segforge program: one entry point per command (cli/cmd_*.c),
 * and the flag helpers they share. The CLI is the only layer that prints:
 * results to stdout, errors to stderr as "segforge <cmd>: <message>".
 */
#ifndef SF_CLI_H
#define SF_CLI_H

#include <stdint.h>

#include "core/error.h"

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
int cli_inspect_dataset(int argc, char **argv);

/* Prints "segforge <cmd>: <code>: <msg>" to stderr and returns 1. */
int cli_fail(const char *cmd, const sf_err *err);
/* Prints a usage error and returns 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Parse an unsigned integer flag value in [min, max]; accepts K/M/G suffixes
 * (powers of 1024) when `sizes` is set. On failure fills err naming the flag. */
sf_code cli_parse_u64(const char *flag, const char *val, uint64_t min, uint64_t max,
                      int sizes, uint64_t *out, sf_err *err);
#endif
