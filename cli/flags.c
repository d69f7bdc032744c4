/* flags.c - the table of flags and their parsers (see flags.h). */
#include "cli/flags.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base/fragset.h"
#include "core/base/types.h"
#include "core/catalog/catalog.h"
#include "core/format/stage.h"
#include "core/pipeline/merge_policy.h"
#include "kafka/broker.h"
#include "kafka/kconf.h"

#define KB (1ULL << 10)
#define MB (1ULL << 20)
#define GB (1ULL << 30)
#define SEC 1000ULL
#define DAY (86400ULL * SEC)

static const char *const index_types[] = {"IVF_FLAT", "IVF_SQ", "IVF_PQ", NULL};
static const char *const metrics[] = {"L2", "COSINE", "DOT", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", NULL};
static const char *const off_on[] = {"off", "on", NULL};
static const char *const log_formats[] = {"logfmt", "json", NULL};

/* The longest librdkafka property name taken from the environment. */
#define SF_KCONF_KEY_MAX_CLI 256

#define F(id) [CLI_FLAG_##id - CLI_FLAG_FIRST]
/* clang-format off */
const cli_flag cli_flags[CLI_FLAG_END - CLI_FLAG_FIRST] = {
  /* The planning and build flags of plan, build, finalize, serve and stage.
   * The budget is at least one byte (leave the flag out for one segment per
   * shard: a zero would mean that on plan but "no override" in an event)
   * and at most what an event's Avro long and the plan's JSON carry. */
  F(TARGET_SEGMENT_BYTES) = {"target-segment-bytes", "N", CLI_KIND_SIZE, 1, INT64_MAX,
      "bytes", NULL, "segment budget: consecutive shards are packed up to N bytes"},
  /* Each slot is a thread with its own buffers (core/build.h); serve's
   * --workers defaults to it, so it stays within --workers' range. */
  F(MAX_MERGES) = {"max-merges", "N", CLI_KIND_NUMBER, 1, 256, NULL, NULL,
      "segment builds at once"},
  F(EXPECTED_FRAGMENTS) = {"expected-fragments", "LIST", CLI_KIND_FRAGSET, 0, 0, NULL, NULL,
      "the fragments the job covers, exactly"},
  F(INDEX_TYPE) = {"index-type", "T", CLI_KIND_CHOICE, 0, 0, NULL, index_types,
      "the index type"},
  F(METRIC) = {"metric", "M", CLI_KIND_CHOICE, 0, 0, NULL, metrics, "the distance"},
  F(STAGING_ID) = {"staging-id", "ID", CLI_KIND_ID, 0, 0, NULL, NULL, "the job's id"},
  F(INDEX) = {"index", "NAME", CLI_KIND_ID, 0, 0, NULL, NULL, "the logical index"},
  F(INDEX_NAME) = {"index-name", "NAME", CLI_KIND_ID, 0, 0, NULL, NULL,
      "the logical index"},
  F(SHARD_ID) = {"shard-id", "ID", CLI_KIND_SHARD_ID, 0, 0, NULL, NULL, "the shard's id"},
  F(FRAGMENTS) = {"fragments", "LIST", CLI_KIND_FRAGSET, 0, 0, NULL, NULL,
      "the fragments of the shard"},
  /* Vectors and search. */
  F(ROWS) = {"rows", "N", CLI_KIND_SIZE, 1, 1ULL << 31, "rows", NULL, "base rows"},
  F(DIM) = {"dim", "D", CLI_KIND_NUMBER, 1, SF_MAX_DIM, NULL, NULL, "vector dimension"},
  F(K) = {"k", "K", CLI_KIND_NUMBER, 1, 4096, NULL, NULL, "neighbours per query"},
  F(NPROBE) = {"nprobe", "N", CLI_KIND_NUMBER, 1, SF_MAX_NLIST, NULL, NULL,
      "partitions probed per query"},
  F(NLIST) = {"nlist", "N", CLI_KIND_NUMBER, 1, SF_MAX_NLIST, NULL, NULL, "coarse lists"},
  F(SEED) = {"seed", "S", CLI_KIND_NUMBER, 0, UINT64_MAX, NULL, NULL, "random seed"},
  F(ROWS_PER_FRAGMENT) = {"rows-per-fragment", "R", CLI_KIND_NUMBER, 1, UINT32_MAX, NULL,
      NULL, "rows of the vector file per fragment"},
  F(QUERIES) = {"queries", "N", CLI_KIND_SIZE, 1, 1ULL << 24, "rows", NULL, "query rows"},
  F(CLUSTERS) = {"clusters", "C", CLI_KIND_NUMBER, 1, 1ULL << 20, NULL, NULL,
      "clusters the rows are drawn from"},
  F(PQ_M) = {"pq-m", "M", CLI_KIND_NUMBER, 1, SF_MAX_PQ_M, NULL, NULL,
      "IVF_PQ sub-quantizers"},
  F(MAX_TRAIN_ROWS) = {"max-train-rows", "N", CLI_KIND_SIZE, 1, 1ULL << 40, "rows", NULL,
      "training sample cap"},
  F(ITERS) = {"iters", "N", CLI_KIND_NUMBER, 1, 1000, NULL, NULL, "k-means iterations"},
  F(THREADS) = {"threads", "N", CLI_KIND_NUMBER, 1, 256, NULL, NULL, "training threads"},
  F(SHARDS) = {"shards", "S", CLI_KIND_NUMBER, 1, 64, NULL, NULL, "worker shards"},
  /* Kafka and serve. */
  F(PARTITIONS) = {"partitions", "N", CLI_KIND_NUMBER, 1, SF_BROKER_MAX_PARTITIONS, NULL,
      NULL, "partitions per topic of the embedded broker"},
  F(NODES) = {"nodes", "N", CLI_KIND_NUMBER, 1, 16, NULL, NULL, "embedded brokers"},
  F(WORKERS) = {"workers", "N", CLI_KIND_NUMBER, 1, 256, NULL, NULL,
      "jobs finalized at once"},
  F(STAGING_TIMEOUT) = {"staging-timeout", "DUR", CLI_KIND_DURATION, 1, 365 * DAY, NULL,
      NULL, "a job must be complete within DUR of its first event"},
  F(DRAIN_TIMEOUT) = {"drain-timeout", "DUR", CLI_KIND_DURATION, 1, 365 * DAY, NULL, NULL,
      "on SIGTERM, the wait for work in flight"},
  F(RETRY_MAX_BACKOFF) = {"retry-max-backoff", "DUR", CLI_KIND_DURATION, 1, 365 * DAY,
      NULL, NULL, "longest wait between retries of a held job"},
  F(MAX_PENDING_EVENTS) = {"max-pending-events", "N", CLI_KIND_NUMBER, 1, 1ULL << 40, NULL,
      NULL, "messages read but not finished before the consumer pauses"},
  F(MAX_PENDING_BYTES) = {"max-pending-bytes", "N", CLI_KIND_SIZE, 1, 1ULL << 50, "bytes",
      NULL, "event bytes held before the consumer pauses"},
  F(LOG_LEVEL) = {"log-level", "LEVEL", CLI_KIND_CHOICE, 0, 0, NULL, log_levels,
      "the least severe log line shown"},
  F(LOG_FORMAT) = {"log-format", "FORMAT", CLI_KIND_CHOICE, 0, 0, NULL, log_formats,
      "how a log line is written"},
  F(COMPACT) = {"compact", "on|off", CLI_KIND_CHOICE, 0, 0, NULL, off_on,
      "merge committed segments in the background"},
  F(SINCE) = {"since", "DUR", CLI_KIND_DURATION, 1, 365 * DAY, NULL, NULL,
      "read dead letters published at most DUR ago"},
  /* A bare number stays milliseconds, as before units were taken. */
  F(TIMEOUT) = {"timeout", "DUR", CLI_KIND_DURATION, 1, INT32_MAX, NULL, NULL,
      "how long to wait (stage: for the broker's acknowledgement)", 1},
  /* Files and the catalog. */
  F(MEMORY) = {"memory", "SIZE", CLI_KIND_SIZE, MB, 1024 * GB, "bytes", NULL,
      "codes held at once"},
  F(KEEP_VERSIONS) = {"keep-versions", "K", CLI_KIND_NUMBER, 1, UINT32_MAX, NULL, NULL,
      "newest catalog versions kept"},
  F(GRACE) = {"grace", "DUR", CLI_KIND_DURATION, 0, (INT64_MAX / 1000) * SEC, NULL, NULL,
      "age before an unreferenced file goes"},
  F(VERSION) = {"version", "N", CLI_KIND_NUMBER, 1, INT64_MAX, NULL, NULL,
      "catalog version"},
  /* The merge policy of compact and serve (core/pipeline/merge_policy.h): its own
   * ranges, so that sf_mpolicy_params_check only has the floor <= max
   * rule left to refuse (docs/compaction.md says why the defaults). */
  F(FLOOR_SEGMENT_BYTES) = {"floor-segment-bytes", "N", CLI_KIND_SIZE, 1,
      SF_MPOLICY_MAX_BYTES, "bytes", NULL,
      "smaller segments count as N bytes: merged eagerly, one tier"},
  F(MAX_SEGMENT_BYTES) = {"max-segment-bytes", "N", CLI_KIND_SIZE, 1, SF_MPOLICY_MAX_BYTES,
      "bytes", NULL, "no merge writes more; segments over N/2 are left alone"},
  F(SEGMENTS_PER_TIER) = {"segments-per-tier", "N", CLI_KIND_NUMBER, 2,
      SF_MPOLICY_MAX_FANIN, NULL, NULL, "segments allowed per tier before a merge"},
  F(MAX_MERGE_AT_ONCE) = {"max-merge-at-once", "N", CLI_KIND_NUMBER, 2,
      SF_MPOLICY_MAX_FANIN, NULL, NULL, "segments one merge reads at most"},
};
/* clang-format on */
#undef F

static const cli_flag *get(cli_flag_id id) {
  return id >= CLI_FLAG_FIRST && id < CLI_FLAG_END ? &cli_flags[id - CLI_FLAG_FIRST]
                                                   : NULL;
}

/* A number as the flag would take it: 256M rather than 268435456. */
static void fmt_size(uint64_t v, char *buf, size_t size) {
  static const char suffix[] = "GMK";
  for (int i = 0; i < 3; i++) {
    uint64_t m = 1ULL << (10 * (3 - i));
    if (v && v % m == 0) {
      snprintf(buf, size, "%llu%c", (unsigned long long)(v / m), suffix[i]);
      return;
    }
  }
  snprintf(buf, size, "%llu", (unsigned long long)v);
}

static void fmt_ms(uint64_t ms, char *buf, size_t size) {
  static const struct {
    uint64_t ms;
    const char *unit;
  } units[] = {{3600 * SEC, "h"}, {60 * SEC, "m"}, {SEC, "s"}, {1, "ms"}};
  size_t i = 0;
  while (ms && ms % units[i].ms) i++;
  snprintf(buf, size, "%llu%s", (unsigned long long)(ms ? ms / units[i].ms : 0),
           ms ? units[i].unit : "");
}

void cli_flag_form(cli_flag_id id, char *buf, size_t size) {
  const cli_flag *f = get(id);
  char lo[40], hi[40];
  if (!f) {
    snprintf(buf, size, "a known flag");
    return;
  }
  switch (f->kind) {
    case CLI_KIND_NUMBER:
      snprintf(buf, size, "a whole number from %llu to %llu", (unsigned long long)f->min,
               (unsigned long long)f->max);
      break;
    case CLI_KIND_SIZE:
      fmt_size(f->min, lo, sizeof lo);
      fmt_size(f->max, hi, sizeof hi);
      snprintf(buf, size, "a number of %s from %s to %s (K, M and G suffixes: x1024)",
               f->unit, lo, hi);
      break;
    case CLI_KIND_DURATION:
      fmt_ms(f->min, lo, sizeof lo);
      fmt_ms(f->max, hi, sizeof hi);
      snprintf(buf, size,
               "a duration from %s to %s, such as 500ms, 90s or 10m (a bare number is "
               "%s)",
               lo, hi, f->bare_ms == 1 ? "milliseconds" : "seconds");
      break;
    case CLI_KIND_CHOICE: {
      size_t n = (size_t)snprintf(buf, size, "one of");
      for (size_t i = 0; f->choices[i] && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s %s", i ? "," : "", f->choices[i]);
      break;
    }
    case CLI_KIND_ID:
      snprintf(buf, size,
               "a valid id (1 to %u bytes without '/' or control characters, not '.' or "
               "'..': it names a file)",
               SF_CATALOG_MAX_ID);
      break;
    case CLI_KIND_SHARD_ID:
      snprintf(
          buf, size,
          "a valid shard id (1 to 128 letters, digits, '.', '_' or '-', not starting "
          "with '.')");
      break;
    case CLI_KIND_FRAGSET:
      snprintf(buf, size, "a range list of fragment numbers such as 0-63,70");
      break;
  }
}

/* The one message shape of a refused value. */
static sf_code refuse(cli_flag_id id, const char *val, sf_err *err) {
  char form[256];
  cli_flag_form(id, form, sizeof form);
  const cli_flag *f = get(id);
  return sf_err_set(err, SF_EINVAL, "--%s: '%s' is not %s", f ? f->name : "?",
                    val ? val : "", form);
}

static sf_code wrong_kind(cli_flag_id id, sf_err *err) {
  const cli_flag *f = get(id);
  return sf_err_set(err, SF_EINVAL, "--%s is not parsed that way (a bug)",
                    f ? f->name : "?");
}

sf_code cli_flag_u64(cli_flag_id id, const char *val, uint64_t *out, sf_err *err) {
  const cli_flag *f = get(id);
  if (!f || (f->kind != CLI_KIND_NUMBER && f->kind != CLI_KIND_SIZE))
    return wrong_kind(id, err);
  if (!val || !isdigit((unsigned char)*val)) return refuse(id, val, err);
  errno = 0;
  char *end;
  unsigned long long v = strtoull(val, &end, 10);
  uint64_t mul = 1;
  if (f->kind == CLI_KIND_SIZE && *end) {
    const char *s = strchr("KMG", toupper((unsigned char)*end));
    mul = s && *s ? 1ULL << (10 * (s - "KMG" + 1)) : 0;
    if (mul) {
      end++;
      if (toupper((unsigned char)*end) == 'I') end++;
      if (toupper((unsigned char)*end) == 'B') end++;
    }
  }
  if (errno || *end || mul == 0 || (v && v > UINT64_MAX / mul) || v * mul < f->min ||
      v * mul > f->max)
    return refuse(id, val, err);
  *out = v * mul;
  return SF_OK;
}

sf_code cli_flag_ms(cli_flag_id id, const char *val, int64_t *ms, sf_err *err) {
  const cli_flag *f = get(id);
  if (!f || f->kind != CLI_KIND_DURATION) return wrong_kind(id, err);
  static const struct {
    const char *suffix;
    uint64_t ms;
  } units[] = {{"ms", 1}, {"s", 1000}, {"", 0}, {"m", 60000}, {"h", 3600000}};
  if (!val || !(isdigit((unsigned char)*val) || *val == '.')) return refuse(id, val, err);
  /* Only digits and one '.' before the unit: strtod would also take "1e3",
   * "0x10", "infinity". */
  size_t num = strspn(val, "0123456789.");
  const char *dot = strchr(val, '.');
  if (dot && dot < val + num && memchr(dot + 1, '.', (size_t)(val + num - dot - 1)))
    return refuse(id, val, err);
  char *end, *iend;
  errno = 0;
  unsigned long long n = strtoull(val, &iend, 10);
  int whole = !errno && iend != val;
  double v = strtod(val, &end);
  whole = whole && iend == end; /* exact for whole numbers, which doubles are not */
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (end != val + num || strcmp(end, units[i].suffix)) continue;
    uint64_t u = units[i].ms ? units[i].ms : f->bare_ms ? f->bare_ms : 1000;
    double t = v * (double)u;
    if (whole ? n > f->max / u || n * u < f->min
              /* a positive duration shorter than 1 ms would round to 0 */
              : t < (double)f->min || t >= (double)f->max || (t > 0 && t < 1))
      return refuse(id, val, err);
    *ms = whole ? (int64_t)(n * u) : (int64_t)t;
    return SF_OK;
  }
  return refuse(id, val, err);
}

sf_code cli_flag_choice(cli_flag_id id, const char *val, int *out, sf_err *err) {
  const cli_flag *f = get(id);
  if (!f || f->kind != CLI_KIND_CHOICE) return wrong_kind(id, err);
  for (int i = 0; val && f->choices[i]; i++)
    if (!strcasecmp(val, f->choices[i])) {
      *out = i;
      return SF_OK;
    }
  return refuse(id, val, err);
}

sf_code cli_flag_check_id(cli_flag_id id, const char *val, sf_err *err) {
  const cli_flag *f = get(id);
  if (!f || (f->kind != CLI_KIND_ID && f->kind != CLI_KIND_SHARD_ID))
    return wrong_kind(id, err);
  /* The rules are the catalog's and the stager's; the message is the table's. */
  sf_code bad = f->kind == CLI_KIND_ID ? sf_catalog_check_id(f->name, val, NULL)
                                       : sf_stage_check_id(f->name, val, NULL);
  return bad ? refuse(id, val, err) : SF_OK;
}

sf_code cli_flag_fragset(cli_flag_id id, const char *val, roaring_bitmap_t **out,
                         sf_err *err) {
  const cli_flag *f = get(id);
  if (!f || f->kind != CLI_KIND_FRAGSET) return wrong_kind(id, err);
  sf_err why = {0};
  if (!sf_fragset_parse(val, "the list", out, &why)) return SF_OK;
  if (why.code == SF_ENOMEM) return sf_err_set(err, SF_ENOMEM, "%s", why.msg);
  return refuse(id, val, err);
}

void cli_flag_help(FILE *out, const struct option *opts) {
  int first = 1;
  for (; opts->name; opts++) {
    const cli_flag *f = get(opts->val);
    if (!f) continue;
    char form[256];
    cli_flag_form(opts->val, form, sizeof form);
    fprintf(out, "%s  --%s %s: %s\n", first ? "\nValues:\n" : "", f->name, f->metavar,
            form);
    first = 0;
  }
}

/* ---- the environment --------------------------------------------------------- */

#define ENV_PREFIX "SEGFORGE_"
#define ENV_X_PREFIX "SEGFORGE_X_"

extern char **environ;

typedef struct argvec {
  char **v;
  int n, cap;
} argvec;

static sf_code push(argvec *a, char *s, sf_err *err) {
  if (!s) return sf_err_set(err, SF_ENOMEM, "out of memory");
  if (a->n + 2 > a->cap) {
    int cap = a->cap ? 2 * a->cap : 32;
    char **nv = realloc(a->v, (size_t)cap * sizeof *nv);
    if (!nv) {
      free(s);
      return sf_err_set(err, SF_ENOMEM, "out of memory");
    }
    a->v = nv;
    a->cap = cap;
  }
  a->v[a->n++] = s;
  a->v[a->n] = NULL;
  return SF_OK;
}

/* The variable of a long option: SEGFORGE_MAX_MERGES for max-merges. */
static void env_name(const char *opt, char *buf, size_t n) {
  size_t w = (size_t)snprintf(buf, n, "%s", ENV_PREFIX);
  for (const char *c = opt; *c && w + 1 < n; c++)
    buf[w++] = *c == '-' ? '_' : (char)toupper((unsigned char)*c);
  buf[w < n ? w : n - 1] = '\0';
}

/* A table flag's value from the environment, checked by its kind's parser,
 * the message naming the variable. */
static sf_code env_check(const struct option *o, const char *var, const char *val,
                         sf_err *err) {
  const cli_flag *f = get(o->val);
  if (!f) return SF_OK;
  sf_code rc = SF_OK;
  uint64_t u;
  int64_t ms;
  int i;
  roaring_bitmap_t *b = NULL;
  switch (f->kind) {
    case CLI_KIND_NUMBER:
    case CLI_KIND_SIZE:
      rc = cli_flag_u64(o->val, val, &u, err);
      break;
    case CLI_KIND_DURATION:
      rc = cli_flag_ms(o->val, val, &ms, err);
      break;
    case CLI_KIND_CHOICE:
      rc = cli_flag_choice(o->val, val, &i, err);
      break;
    case CLI_KIND_ID:
    case CLI_KIND_SHARD_ID:
      rc = cli_flag_check_id(o->val, val, err);
      break;
    case CLI_KIND_FRAGSET:
      if (!(rc = cli_flag_fragset(o->val, val, &b, err))) sf_fragset_free(b);
      break;
  }
  if (rc == SF_EINVAL) sf_err_prefix(err, "%s (from the environment)", var);
  return rc;
}

/* The long option that arg ("--name" or "--name=value") names, as
 * getopt_long reads it: the exact name, or else a prefix of one option's
 * name (an abbreviation, --dataset-r for --dataset-root) or of several
 * that are the same option. NULL when arg is no long option or an
 * ambiguous prefix (getopt_long refuses it). Abbreviations are accepted,
 * as getopt_long accepts them everywhere; this makes them count as the
 * flag for the precedence below. */
static const struct option *long_opt(const char *arg, const struct option *opts) {
  if (strncmp(arg, "--", 2) || !arg[2]) return NULL;
  const char *name = arg + 2;
  size_t n = strcspn(name, "=");
  const struct option *found = NULL;
  int ambiguous = 0;
  for (const struct option *o = opts; o->name; o++) {
    if (strncmp(o->name, name, n)) continue;
    if (strlen(o->name) == n) return o;
    if (!found)
      found = o;
    else if (found->has_arg != o->has_arg || found->flag != o->flag ||
             found->val != o->val)
      ambiguous = 1;
  }
  return ambiguous ? NULL : found;
}

/* Whether argv[i] is --config (or --config=F, or an abbreviation); *skip:
 * its value is the next argument. */
static int is_config(const char *arg, const struct option *opts, int *skip) {
  const struct option *o = long_opt(arg, opts);
  if (!o || strcmp(o->name, "config")) return 0;
  *skip = !strchr(arg, '=');
  return 1;
}

/* Whether argv[i], an option, takes the next argument as its value. */
static int takes_next(const char *arg, const char *shortopts, const struct option *opts) {
  if (arg[0] != '-' || !arg[1]) return 0;
  if (arg[1] != '-') { /* short: "-X" then the value, or "-Xvalue" */
    const char *p = strchr(shortopts, arg[1]);
    return p && p[1] == ':' && !arg[2];
  }
  if (strchr(arg, '=')) return 0;
  const struct option *o = long_opt(arg, opts);
  return o && o->has_arg == required_argument;
}

/* Whether the command line (before any "--") gives the long option name,
 * as "--name V" or "--name=V", or abbreviated as getopt_long reads it. */
static int on_command_line(int argc, char **argv, const char *shortopts,
                           const struct option *opts, const char *name) {
  for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
    const char *a = argv[i];
    const struct option *o = long_opt(a, opts);
    if (o && !strcmp(o->name, name)) return 1;
    if (takes_next(a, shortopts, opts)) i++;
  }
  return 0;
}

static char *pair(const char *a, const char *b) {
  char *s = NULL;
  return asprintf(&s, "%s%s", a, b) < 0 ? NULL : s;
}

sf_code cli_env_args(int *argc, char ***argv, const char *shortopts,
                     const struct option *opts, sf_err *err) {
  static argvec keep; /* the process's: getopt and the command point into it */
  argvec a = {0};
  sf_code rc = push(&a, strdup((*argv)[0]), err);
  char var[160];
  /* 1. The configuration files: the environment's, then the command line's. */
  int has_config = 0;
  for (const struct option *o = opts; o->name; o++)
    has_config |= !strcmp(o->name, "config");
  const char *ev = has_config ? getenv(ENV_PREFIX "CONFIG") : NULL;
  if (!rc && ev) rc = push(&a, pair("--config=", ev), err);
  for (int i = 1; !rc && i < *argc && strcmp((*argv)[i], "--"); i++) {
    int skip;
    if (has_config && is_config((*argv)[i], opts, &skip)) {
      rc = push(&a, strdup((*argv)[i]), err);
      if (!rc && skip && i + 1 < *argc) rc = push(&a, strdup((*argv)[++i]), err);
    } else if (takes_next((*argv)[i], shortopts, opts)) {
      i++;
    }
  }
  /* 2. The environment's flags, then its librdkafka properties. */
  for (const struct option *o = opts; !rc && o->name; o++) {
    if (!strcmp(o->name, "help") || !strcmp(o->name, "config")) continue;
    /* The flag wins: its variable is not read at all, so that a repeatable
     * flag (--dataset-root) replaces the environment's value instead of
     * adding to it. */
    if (on_command_line(*argc, *argv, shortopts, opts, o->name)) continue;
    env_name(o->name, var, sizeof var);
    const char *v = getenv(var);
    if (!v) continue;
    if (o->has_arg == no_argument) {
      if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes"))
        rc = push(&a, pair("--", o->name), err);
      else if (*v && strcasecmp(v, "0") && strcasecmp(v, "false") && strcasecmp(v, "no"))
        rc = sf_err_set(err, SF_EINVAL,
                        "%s='%s' (from the environment): --%s takes no value; set it to "
                        "1, true or yes to turn it on, 0, false, no or nothing to leave "
                        "it off",
                        var, v, o->name);
      continue;
    }
    if (!(rc = env_check(o, var, v, err))) {
      char *s = NULL;
      rc = push(&a, asprintf(&s, "--%s=%s", o->name, v) < 0 ? NULL : s, err);
    }
  }
  const char *x = strstr(shortopts, "X:");
  for (char **e = environ; !rc && x && *e; e++) {
    if (strncmp(*e, ENV_X_PREFIX, strlen(ENV_X_PREFIX))) continue;
    const char *name = *e + strlen(ENV_X_PREFIX), *eq = strchr(name, '=');
    if (!eq || eq == name) continue;
    char prop[SF_KCONF_KEY_MAX_CLI];
    size_t n = (size_t)(eq - name);
    if (n >= sizeof prop) {
      rc = sf_err_set(err, SF_EINVAL, "%.*s: the property name is too long",
                      (int)(eq - *e), *e);
      break;
    }
    for (size_t i = 0; i < n; i++)
      prop[i] = name[i] == '_' ? '.' : (char)tolower((unsigned char)name[i]);
    prop[n] = '\0';
    /* Checked here so that a mistake names its variable. */
    sf_kconf *probe = sf_kconf_new();
    if (!probe) {
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
      break;
    }
    rc = sf_kconf_set(probe, prop, eq + 1, err);
    sf_kconf_free(probe);
    if (rc) {
      sf_err_prefix(err, "%.*s (from the environment, as -X %s)", (int)(eq - *e), *e,
                    prop);
      break;
    }
    char *s = NULL;
    if (!(rc = push(&a, strdup("-X"), err)))
      rc = push(&a, asprintf(&s, "%s=%s", prop, eq + 1) < 0 ? NULL : s, err);
  }
  /* 3. The command line, but its configuration files. */
  for (int i = 1; !rc && i < *argc; i++) {
    int skip;
    if (!strcmp((*argv)[i], "--")) {
      for (; !rc && i < *argc; i++) rc = push(&a, strdup((*argv)[i]), err);
      break;
    }
    if (has_config && is_config((*argv)[i], opts, &skip)) {
      i += skip;
      continue;
    }
    int next = takes_next((*argv)[i], shortopts, opts);
    rc = push(&a, strdup((*argv)[i]), err);
    if (!rc && next && i + 1 < *argc) rc = push(&a, strdup((*argv)[++i]), err);
  }
  if (rc) {
    for (int i = 0; i < a.n; i++) free(a.v[i]);
    free(a.v);
    return rc;
  }
  for (int i = 0; i < keep.n; i++) free(keep.v[i]);
  free(keep.v);
  keep = a;
  *argc = a.n;
  *argv = a.v;
  return SF_OK;
}

int cli_env_unknown(const struct option *opts, size_t i, char *buf, size_t n) {
  char var[160];
  for (char **e = environ; *e; e++) {
    const char *eq = strchr(*e, '=');
    size_t len = eq ? (size_t)(eq - *e) : strlen(*e);
    if (strncmp(*e, ENV_PREFIX, strlen(ENV_PREFIX)) ||
        !strncmp(*e, ENV_X_PREFIX, strlen(ENV_X_PREFIX)))
      continue;
    int known = 0;
    for (const struct option *o = opts; !known && o->name; o++) {
      if (!strcmp(o->name, "help")) continue;
      env_name(o->name, var, sizeof var);
      known = strlen(var) == len && !strncmp(var, *e, len);
    }
    if (known || i--) continue;
    snprintf(buf, n, "%.*s", (int)len, *e);
    return 1;
  }
  return 0;
}
