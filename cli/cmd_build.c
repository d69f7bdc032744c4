/*
 * cmd_build.c - `segforge build`: plans a staging root (as `segforge plan`)
 * and builds its segments into <dataset>/_indices/segments/ with bounded
 * concurrency. It does not commit: `segforge commit` (or `finalize`) records
 * the segments in the catalog. Re-running after a crash reuses finished
 * segments.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/base/fragset.h"
#include "core/base/progress.h"
#include "core/pipeline/build.h"
#include "core/pipeline/plan.h"

static void help(void) {
  printf(
      "usage: segforge build --staging DIR --dataset D [--target-segment-bytes N]\n"
      "                      [--max-merges N] [--expected-fragments LIST]\n"
      "                      [--index-type T] [--staging-id ID] [--json]\n\n"
      "Plans the staging root DIR (see 'segforge plan --help') and merges each planned\n"
      "group of shards into D/_indices/segments/<segment_id>.sfseg, at most N builds at\n"
      "once (default: the number of cores). Compressed blocks are copied verbatim and\n"
      "every block's CRC is verified. A segment already built by an earlier run is\n"
      "reused. Prints the segments (text, or JSON with --json) on stdout; shows\n"
      "progress on stderr when it is a terminal.\n"
      "Crash tests: SF_FAULT=build.mid_segment or build.after_segment kills the\n"
      "process at that point.\n");
}

typedef struct {
  sf_progress clock;
  int tty;
  int shown;
  sf_build_progress last; /* for the final line, which is never throttled */
} progress_state;

static void show(progress_state *st, const sf_build_progress *p, int final) {
  char line[256], extra[96];
  snprintf(extra, sizeof extra, "segments %zu/%zu (%zu reused), %u running",
           p->segments_done, p->segments_total, p->segments_reused, p->running);
  if (!sf_progress_line(&st->clock, sf_progress_now(), p->bytes_done, p->bytes_total,
                        extra, final, line, sizeof line))
    return;
  fprintf(stderr, "\r%s\033[K", line);
  st->shown = 1;
}

static void on_progress(void *ctx, const sf_build_progress *p) {
  progress_state *st = ctx;
  st->last = *p;
  if (st->tty) show(st, p, 0);
}

static int print_json(const sf_seginfo *s, size_t n) {
  json_t *arr = json_array();
  for (size_t i = 0; arr && i < n; i++) {
    json_t *o = json_object(), *ids = json_array();
    char hex[17];
    snprintf(hex, sizeof hex, "%016" PRIx64, s[i].quantizer_checksum);
    char *frags = sf_fragset_format(s[i].fragments);
    for (uint32_t k = 0; ids && k < s[i].num_shards; k++)
      json_array_append_new(ids, json_string(s[i].shard_ids[k]));
    if (!o || !ids || !frags ||
        json_object_set_new(o, "segment_id", json_string(s[i].segment_id)) ||
        json_object_set_new(o, "path", json_string(s[i].path)) ||
        json_object_set_new(o, "bytes", json_integer((json_int_t)s[i].bytes)) ||
        json_object_set_new(o, "num_rows", json_integer((json_int_t)s[i].num_rows)) ||
        json_object_set_new(o, "fragments", json_string(frags)) ||
        json_object_set_new(o, "shard_ids", ids) ||
        json_object_set_new(o, "index_type",
                            json_string(sf_index_type_name(s[i].index_type))) ||
        json_object_set_new(o, "metric", json_string(sf_metric_name(s[i].metric))) ||
        json_object_set_new(o, "dim", json_integer(s[i].dim)) ||
        json_object_set_new(o, "nlist", json_integer(s[i].nlist)) ||
        json_object_set_new(o, "quantizer_checksum", json_string(hex)) ||
        json_array_append_new(arr, o)) {
      free(frags);
      json_decref(arr);
      return -1;
    }
    free(frags);
  }
  char *out = arr ? json_dumps(arr, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
  json_decref(arr);
  if (!out) return -1;
  printf("%s\n", out);
  free(out);
  return 0;
}

int cli_cmd_build(int argc, char **argv) {
  cli_plan_args a;
  sf_plan *plan;
  int status = cli_plan_load("build", 1, help, argc, argv, &a, &plan);
  if (status >= 0) return status;
  sf_err err = {0};

  progress_state st = {.tty = isatty(STDERR_FILENO)};
  double t0 = sf_progress_now();
  sf_progress_init(&st.clock, t0, 0.25);
  sf_build_opts bo = {
      .max_merges = (unsigned)a.max_merges, .progress = on_progress, .progress_ctx = &st};
  sf_seginfo *segs;
  size_t n;
  sf_build_stats stats;
  sf_code rc = sf_build_run(plan, a.dataset, &bo, &segs, &n, &stats, &err);
  if (st.shown) {
    show(&st, &st.last, 1);
    fprintf(stderr, "\n");
  }
  if (rc) {
    sf_plan_free(plan);
    return cli_fail("build", &err);
  }
  double secs = sf_progress_now() - t0;
  char total[32], rate[32];
  sf_progress_bytes(plan->total_bytes, total, sizeof total);
  sf_progress_bytes(secs > 0 ? (uint64_t)((double)stats.bytes_copied / secs) : 0, rate,
                    sizeof rate);
  fprintf(stderr,
          "build: %zu segments (%zu built, %zu reused) from %zu shards, %s in %.2f s "
          "(%s/s copied), at most %u at once\n",
          n, stats.built, stats.reused, plan->num_shards, total, secs, rate,
          stats.peak_running);
  int bad = 0;
  if (a.json) {
    bad = print_json(segs, n);
  } else {
    for (size_t i = 0; i < n; i++) {
      char *frags = sf_fragset_format_short(segs[i].fragments, 8);
      printf("%s  %" PRIu64 " bytes  %" PRIu64 " rows  fragments %s\n", segs[i].path,
             segs[i].bytes, segs[i].num_rows, frags ? frags : "?");
      free(frags);
    }
  }
  sf_build_results_free(segs, n);
  sf_plan_free(plan);
  if (bad) {
    sf_err_set(&err, SF_ENOMEM, "out of memory formatting the result");
    return cli_fail("build", &err);
  }
  return 0;
}
