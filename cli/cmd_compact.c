/*
 * cmd_compact.c - `segforge compact`: runs the merge policy on one index
 * until it wants nothing (sf_compact_all, core/pipeline/compact.h), printing
 * each merge as its round ends and the figures at the end; --json prints
 * one object instead. Progress of long merges goes to stderr.
 */
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/base/clock.h"
#include "core/pipeline/compact.h"

/* A progress line on stderr at most this often, the first one this long
 * after the start: runs of short merges stay quiet. */
#define PROGRESS_EVERY_MS 2000.0

static void help(void) {
  printf(
      "usage: segforge compact --dataset D --index NAME [--dry-run] [--json]\n"
      "                        [--max-merges N] [--floor-segment-bytes N]\n"
      "                        [--max-segment-bytes N] [--segments-per-tier N]\n"
      "                        [--max-merge-at-once N]\n\n"
      "Merges committed segments of index NAME by block copy, as the tiered merge\n"
      "policy asks (docs/compaction.md), until it wants nothing; each merge is one\n"
      "new catalog version that swaps out exactly its inputs. A merge that another\n"
      "compactor beat to an input is discarded (gc removes its file) and the catalog\n"
      "is read again. The segments swapped out stay until 'segforge gc'.\n"
      "  --dry-run              print the merges the policy would make; write nothing\n"
      "  --json                 one JSON object on stdout instead of text\n"
      "  --max-merges N         merges at once (default 1: compaction is background\n"
      "                         work, and a merge runs at the speed of the disk)\n"
      "  --floor-segment-bytes N  default %" PRIu64
      "M\n"
      "  --max-segment-bytes N    default %" PRIu64
      "M\n"
      "  --segments-per-tier N    default %u\n"
      "  --max-merge-at-once N    default %u\n",
      (uint64_t)(SF_MPOLICY_DEFAULT_FLOOR_SEGMENT_BYTES >> 20),
      (uint64_t)(SF_MPOLICY_DEFAULT_MAX_SEGMENT_BYTES >> 20),
      SF_MPOLICY_DEFAULT_SEGMENTS_PER_TIER, SF_MPOLICY_DEFAULT_MAX_MERGE_AT_ONCE);
}

/* Shared by the merge threads' progress calls (one per merge at a time). */
typedef struct progress {
  pthread_mutex_t mu;
  double last; /* the last line, or the start */
} progress;

static void on_progress(void *ctx, const sf_build_progress *p) {
  progress *g = ctx;
  double t = ((double)sf_clock_mono_ns() / 1e6);
  pthread_mutex_lock(&g->mu);
  if (t - g->last >= PROGRESS_EVERY_MS && p->bytes_total) {
    g->last = t;
    fprintf(stderr, "segforge compact: merging: %.1f of %.1f MiB (%.0f%%)\n",
            (double)p->bytes_done / (1 << 20), (double)p->bytes_total / (1 << 20),
            100.0 * (double)p->bytes_done / (double)p->bytes_total);
  }
  pthread_mutex_unlock(&g->mu);
}

typedef struct out {
  int json, dry;
  json_t *merges; /* --json */
} out;

static int on_merge(void *ctx, const sf_compact_merge_report *m) {
  out *o = ctx;
  const char *what = m->status == SF_ECONFLICT
                         ? "discarded (an input was swapped out first)"
                     : m->status  ? "failed"
                     : m->already ? "done by another compactor"
                     : o->dry     ? "planned"
                                  : "committed";
  if (o->json) {
    json_t *j = json_object(), *in = json_array();
    for (size_t i = 0; i < m->ninputs; i++)
      json_array_append_new(in, json_string(m->inputs[i]));
    json_object_set_new(j, "round", json_integer(m->round));
    json_object_set_new(j, "inputs", in);
    json_object_set_new(j, "output", json_string(m->output));
    json_object_set_new(j, "bytes_read", json_integer((json_int_t)m->bytes_read));
    json_object_set_new(j, "bytes_written", json_integer((json_int_t)m->bytes_written));
    json_object_set_new(j, "rows", json_integer((json_int_t)m->num_rows));
    json_object_set_new(j, "contiguous", json_boolean(m->contiguous));
    json_object_set_new(j, "version", json_integer((json_int_t)m->version));
    json_object_set_new(j, "status",
                        json_string(m->status == SF_ECONFLICT ? "discarded"
                                    : m->status               ? "failed"
                                    : m->already              ? "already"
                                    : o->dry                  ? "planned"
                                                              : "committed"));
    json_object_set_new(j, "ms", json_real(m->ms));
    json_array_append_new(o->merges, j);
    return 0;
  }
  printf("round %u: %zu segments, %" PRIu64 " bytes, %" PRIu64 " rows -> %s: %s",
         m->round, m->ninputs, m->bytes_read, m->num_rows, m->output, what);
  if (m->version) printf(" in version %" PRIu64, m->version);
  if (!o->dry) printf(", %.0f ms", m->ms);
  printf("%s\n", m->contiguous ? "" : " (in size order)");
  return 0;
}

/* Bytes written per byte the index held: 1 + rewritten / before. */
static double write_amp(const sf_compact_all_result *r) {
  return r->bytes_before ? 1.0 + (double)r->bytes_written / (double)r->bytes_before : 1.0;
}

static void print_json(const out *o, const char *index, const sf_compact_all_result *r) {
  json_t *j = json_object();
  json_object_set_new(j, "index", json_string(index));
  json_object_set_new(j, "dry_run", json_boolean(o->dry));
  json_object_set_new(j, "version_before", json_integer((json_int_t)r->version_before));
  json_object_set_new(j, "version_after", json_integer((json_int_t)r->version_after));
  json_object_set_new(j, "segments_before", json_integer((json_int_t)r->segments_before));
  json_object_set_new(j, "segments_after", json_integer((json_int_t)r->segments_after));
  json_object_set_new(j, "bytes_before", json_integer((json_int_t)r->bytes_before));
  json_object_set_new(j, "bytes_after", json_integer((json_int_t)r->bytes_after));
  json_object_set_new(j, "merges", json_integer((json_int_t)r->merges));
  json_object_set_new(j, "discarded", json_integer((json_int_t)r->discarded));
  json_object_set_new(j, "already", json_integer((json_int_t)r->already));
  json_object_set_new(j, "rounds", json_integer(r->rounds));
  json_object_set_new(j, "bytes_read", json_integer((json_int_t)r->bytes_read));
  json_object_set_new(j, "bytes_written", json_integer((json_int_t)r->bytes_written));
  json_object_set_new(j, "write_amplification", json_real(write_amp(r)));
  json_object_set_new(j, "ms", json_real(r->ms));
  json_object_set(j, "merge_list", o->merges);
  char *s = json_dumps(j, JSON_INDENT(2));
  if (s) printf("%s\n", s);
  free(s);
  json_decref(j);
}

int cli_cmd_compact(int argc, char **argv) {
  const struct option opts[] = {{"dataset", required_argument, 0, 'd'},
                                CLI_OPT(CLI_FLAG_INDEX),
                                {"dry-run", no_argument, 0, 'n'},
                                {"json", no_argument, 0, 'j'},
                                CLI_OPT(CLI_FLAG_MAX_MERGES),
                                CLI_OPT(CLI_FLAG_FLOOR_SEGMENT_BYTES),
                                CLI_OPT(CLI_FLAG_MAX_SEGMENT_BYTES),
                                CLI_OPT(CLI_FLAG_SEGMENTS_PER_TIER),
                                CLI_OPT(CLI_FLAG_MAX_MERGE_AT_ONCE),
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *dataset = NULL, *index = NULL;
  uint64_t max_merges = 1, v;
  sf_mpolicy_params pol;
  sf_mpolicy_params_default(&pol);
  out o = {0};
  sf_err err = {0};
  int c;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("compact", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'd':
        dataset = optarg;
        break;
      case CLI_FLAG_INDEX:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) index = optarg;
        break;
      case 'n':
        o.dry = 1;
        break;
      case 'j':
        o.json = 1;
        break;
      case CLI_FLAG_MAX_MERGES:
        rc = cli_flag_u64(c, optarg, &max_merges, &err);
        break;
      case CLI_FLAG_FLOOR_SEGMENT_BYTES:
        rc = cli_flag_u64(c, optarg, &pol.floor_segment_bytes, &err);
        break;
      case CLI_FLAG_MAX_SEGMENT_BYTES:
        rc = cli_flag_u64(c, optarg, &pol.max_segment_bytes, &err);
        break;
      case CLI_FLAG_SEGMENTS_PER_TIER:
        if (!(rc = cli_flag_u64(c, optarg, &v, &err)))
          pol.segments_per_tier = (uint32_t)v;
        break;
      case CLI_FLAG_MAX_MERGE_AT_ONCE:
        if (!(rc = cli_flag_u64(c, optarg, &v, &err)))
          pol.max_merge_at_once = (uint32_t)v;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("compact", "unknown option");
    }
    if (rc) return cli_usage("compact", "%s", err.msg);
  }
  if (optind < argc)
    return cli_usage("compact", "unexpected argument '%s'", argv[optind]);
  if (!dataset) return cli_usage("compact", "--dataset D is required");
  if (!index) return cli_usage("compact", "--index NAME is required");
  /* The one rule the flags' ranges leave: the floor within the max. */
  if (sf_mpolicy_params_check(&pol, &err)) return cli_usage("compact", "%s", err.msg);

  progress g = {.mu = PTHREAD_MUTEX_INITIALIZER,
                .last = ((double)sf_clock_mono_ns() / 1e6)};
  if (o.json) o.merges = json_array();
  sf_compact_all_req r = {.dataset = dataset,
                          .index_name = index,
                          .policy = pol,
                          .max_merges = (unsigned)max_merges,
                          .build = {.progress = on_progress, .progress_ctx = &g},
                          .dry_run = o.dry,
                          .report = on_merge,
                          .report_ctx = &o};
  sf_compact_all_result res;
  sf_code rc = sf_compact_all(&r, &res, &err);
  if (rc) {
    json_decref(o.merges);
    return cli_fail("compact", &err);
  }
  if (o.json) {
    print_json(&o, index, &res);
  } else {
    printf("compact %s: %s%zu -> %zu segments in %zu merges over %u rounds", index,
           o.dry ? "would go " : "", res.segments_before, res.segments_after, res.merges,
           res.rounds);
    if (res.discarded || res.already)
      printf(" (%zu discarded, %zu done by another compactor)", res.discarded,
             res.already);
    printf("; %s %" PRIu64 " bytes for the %" PRIu64
           " the index held (write amplification %.2f); version %" PRIu64 " -> %" PRIu64
           "; %.2f s\n",
           o.dry ? "would rewrite" : "rewrote", res.bytes_written, res.bytes_before,
           write_amp(&res), res.version_before, res.version_after, res.ms / 1e3);
  }
  json_decref(o.merges);
  return 0;
}
