/*
 * flags.h - one table of the flags that take a value, and one parser per
 * kind of value. Each flag has one name, one range and one form for the
 * whole program: a command that takes --max-merges accepts exactly what
 * every other command taking it accepts, and refuses the rest with the same
 * message, "--<name>: '<value>' is not <form>", where the form says what is
 * accepted (docs/cli.md lists the table).
 *
 * A command puts CLI_OPT(CLI_FLAG_X) in its getopt_long options (the option
 * arrays are built at run time, since the names live in the table) and
 * passes the argument to the parser of the flag's kind in its
 * `case CLI_FLAG_X:`. The flag ids are above any option letter, so they
 * never collide with a command's own short values.
 *
 * Flags whose value is a path or a string handed on unchanged (--dataset,
 * --staging, --vectors, --brokers, -X ...) have nothing to parse and are
 * not in the table.
 */
#ifndef SF_CLI_FLAGS_H
#define SF_CLI_FLAGS_H

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>

#include "core/base/error.h"
#include "core/base/fragset.h"

typedef enum cli_flag_kind {
  CLI_KIND_NUMBER,   /* a whole number in [min, max] */
  CLI_KIND_SIZE,     /* a whole number with an optional K, M or G suffix (x1024) */
  CLI_KIND_DURATION, /* 500ms, 90s, 10m, 1h; a bare number counts bare_ms (seconds by
                        default); min, max in ms */
  CLI_KIND_CHOICE,   /* one of choices (any case); the value is its index */
  CLI_KIND_ID,       /* a catalog id (sf_catalog_check_id): it names a file */
  CLI_KIND_SHARD_ID, /* a shard id (sf_stage_check_id) */
  CLI_KIND_FRAGSET,  /* a fragment range list such as 0-63,70 */
} cli_flag_kind;

typedef struct cli_flag {
  const char *name;    /* without the leading "--" */
  const char *metavar; /* what --help shows for the value */
  cli_flag_kind kind;
  uint64_t min, max;          /* NUMBER, SIZE: the value; DURATION: milliseconds */
  const char *unit;           /* SIZE: what is counted ("bytes", "rows") */
  const char *const *choices; /* CHOICE: NULL-terminated, in the order of the enum */
  const char *help;           /* one line: what the value means */
  uint64_t bare_ms; /* DURATION: the milliseconds a bare number counts; 0 is seconds.
                       A flag that took a bare number before units keeps its unit. */
} cli_flag;

/* The ids, in the order of the table. */
typedef enum cli_flag_id {
  CLI_FLAG_FIRST = 0x100,
  CLI_FLAG_TARGET_SEGMENT_BYTES = CLI_FLAG_FIRST,
  CLI_FLAG_MAX_MERGES,
  CLI_FLAG_EXPECTED_FRAGMENTS,
  CLI_FLAG_INDEX_TYPE,
  CLI_FLAG_METRIC,
  CLI_FLAG_STAGING_ID,
  CLI_FLAG_INDEX,
  CLI_FLAG_INDEX_NAME,
  CLI_FLAG_SHARD_ID,
  CLI_FLAG_FRAGMENTS,
  CLI_FLAG_ROWS,
  CLI_FLAG_DIM,
  CLI_FLAG_K,
  CLI_FLAG_NPROBE,
  CLI_FLAG_NLIST,
  CLI_FLAG_SEED,
  CLI_FLAG_ROWS_PER_FRAGMENT,
  CLI_FLAG_PARTITIONS,
  CLI_FLAG_WORKERS,
  CLI_FLAG_STAGING_TIMEOUT,
  CLI_FLAG_DRAIN_TIMEOUT,
  CLI_FLAG_RETRY_MAX_BACKOFF,
  CLI_FLAG_MAX_PENDING_EVENTS,
  CLI_FLAG_MAX_PENDING_BYTES,
  CLI_FLAG_LOG_LEVEL,
  CLI_FLAG_MEMORY,
  CLI_FLAG_TIMEOUT,
  CLI_FLAG_KEEP_VERSIONS,
  CLI_FLAG_GRACE,
  CLI_FLAG_VERSION,
  CLI_FLAG_NODES,
  CLI_FLAG_SHARDS,
  CLI_FLAG_QUERIES,
  CLI_FLAG_CLUSTERS,
  CLI_FLAG_PQ_M,
  CLI_FLAG_MAX_TRAIN_ROWS,
  CLI_FLAG_ITERS,
  CLI_FLAG_THREADS,
  CLI_FLAG_FLOOR_SEGMENT_BYTES,
  CLI_FLAG_MAX_SEGMENT_BYTES,
  CLI_FLAG_SEGMENTS_PER_TIER,
  CLI_FLAG_MAX_MERGE_AT_ONCE,
  CLI_FLAG_COMPACT,
  CLI_FLAG_SINCE,
  CLI_FLAG_LOG_FORMAT,
  CLI_FLAG_END
} cli_flag_id;

/* The table, indexed by id - CLI_FLAG_FIRST. */
extern const cli_flag cli_flags[CLI_FLAG_END - CLI_FLAG_FIRST];

/* The getopt_long entry of a flag, for an option array built at run time. */
#define CLI_OPT(id) \
  { cli_flags[(id)-CLI_FLAG_FIRST].name, required_argument, NULL, (id) }

/* The parsers. Each checks the value against the flag's entry and, on a bad
 * value, returns SF_EINVAL with err holding "--<name>: '<value>' is not
 * <form>". A flag of another kind is a programming error (SF_EINVAL too). */
/* NUMBER and SIZE. */
sf_code cli_flag_u64(cli_flag_id id, const char *val, uint64_t *out, sf_err *err);
/* DURATION, in milliseconds: digits with at most one '.', then ms, s, m or h,
 * or nothing (the flag's bare unit). Junk, a sign, an exponent, a value out
 * of range or one that overflows is refused. */
sf_code cli_flag_ms(cli_flag_id id, const char *val, int64_t *ms, sf_err *err);
/* CHOICE: *out is the index of the choice. */
sf_code cli_flag_choice(cli_flag_id id, const char *val, int *out, sf_err *err);
/* ID and SHARD_ID: checks val. */
sf_code cli_flag_check_id(cli_flag_id id, const char *val, sf_err *err);
/* FRAGSET: *out is a new bitmap, freed with sf_fragset_free by the caller. */
sf_code cli_flag_fragset(cli_flag_id id, const char *val, roaring_bitmap_t **out,
                         sf_err *err);

/* Every flag from the environment (docs/cli.md, "From the environment"):
 * for each long option of opts, SEGFORGE_<NAME> (upper case, '-' as '_';
 * e.g. SEGFORGE_MAX_MERGES for --max-merges) gives its value, "1"/"true"/
 * "yes" or "0"/"false"/"no"/"" for one without a value; and when shortopts
 * has "X:", SEGFORGE_X_<PROPERTY> gives -X <property>=<value>, the property
 * in lower case with '_' as '.' (SEGFORGE_X_SECURITY_PROTOCOL=ssl is -X
 * security.protocol=ssl). A flag of the table is checked here, so that a
 * bad value names its variable. Replaces *argv (*argc) with a new vector,
 * owned by this module for the life of the process, in the order that
 * makes the precedence flag > environment > configuration file: the
 * --config files (the environment's first), then the environment, then
 * the command line's other arguments; getopt then lets the later of two
 * values win. A flag given on the command line is not read from the
 * environment (a repeatable one, --dataset-root, replaces its variable),
 * and an abbreviation getopt_long accepts (--dataset-r) counts as given;
 * -X of different keys add up. Errors: SF_EINVAL naming the variable,
 * SF_ENOMEM. */
sf_code cli_env_args(int *argc, char ***argv, const char *shortopts,
                     const struct option *opts, sf_err *err);

/* The i-th SEGFORGE_ variable of the environment (from 0) that no option
 * of opts reads (not SEGFORGE_X_..., not SEGFORGE_CONFIG when opts has
 * --config): its name, up to '=', in buf; 0 past the last. A typo
 * (SEGFORGE_MAX_MERGE) is otherwise ignored in silence. */
int cli_env_unknown(const struct option *opts, size_t i, char *buf, size_t n);

/* Writes what a flag accepts ("a whole number from 1 to 256") into buf. */
void cli_flag_form(cli_flag_id id, char *buf, size_t size);
/* Prints what --help says of the table's flags among a command's getopt
 * options (ending with a NULL name): for each, its form. */
void cli_flag_help(FILE *f, const struct option *opts);

#endif
