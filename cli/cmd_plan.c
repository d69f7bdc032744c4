/*
 * cmd_plan.c - `segforge plan`: validates a staging root and prints which
 * shards would be merged into which segment, without writing anything.
 * The same plan `segforge build` executes (same flags, same segment ids).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli.h"
#include "core/base/fragset.h"
#include "core/base/progress.h"
#include "core/pipeline/plan.h"

static void help(void) {
  printf(
      "usage: segforge plan --staging DIR [--target-segment-bytes N]\n"
      "                     [--expected-fragments LIST] [--index-type T]\n"
      "                     [--staging-id ID] [--json]\n\n"
      "Reads the shards (*.sfshard) and the quantizer of a staging root, checks that\n"
      "they form one job (same parameters as the quantizer, no fragment in two shards,\n"
      "and with --expected-fragments exactly that set of fragments, e.g. '0-63,70'),\n"
      "and prints the segment plan: shards in order of their lowest fragment, packed\n"
      "into consecutive groups of at most N bytes (K, M, G suffixes); a larger shard\n"
      "is a segment alone; no budget means one segment per shard.\n"
      "--index-type refuses a type the shards cannot become (a merge copies codes).\n"
      "The staging id (default: the name of DIR) and the shard ids name the segments.\n");
}

/* Prints the plan for people: one line for the job, one per segment. */
static void print_plan(const sf_plan *p) {
  char tb[32], bb[32];
  sf_progress_bytes(p->total_bytes, tb, sizeof tb);
  char *frags = sf_fragset_format_short(p->fragments, 8);
  printf("staging %s: %zu shards, %s, %" PRIu64 " rows, fragments %s\n", p->staging_id,
         p->num_shards, tb, p->total_rows, frags ? frags : "?");
  free(frags);
  printf("index %s %s dim %u nlist %u quantizer %016" PRIx64 "\n",
         sf_index_type_name(p->params.type), sf_metric_name(p->params.metric),
         p->params.dim, p->params.nlist, p->params.quantizer_checksum);
  if (p->target_segment_bytes) sf_progress_bytes(p->target_segment_bytes, bb, sizeof bb);
  printf("%zu segments (budget %s)\n", p->num_segments,
         p->target_segment_bytes ? bb : "none: one segment per shard");
  for (size_t g = 0; g < p->num_segments; g++) {
    const sf_plan_segment *s = &p->segments[g];
    sf_progress_bytes(s->bytes, tb, sizeof tb);
    frags = sf_fragset_format_short(s->fragments, 8);
    printf("  %s  %s  %" PRIu64 " rows  fragments %s  shards:", s->segment_id, tb,
           s->num_rows, frags ? frags : "?");
    free(frags);
    for (size_t k = 0; k < s->count; k++) printf(" %s", p->shards[s->first + k].shard_id);
    printf("\n");
  }
}

int cli_cmd_plan(int argc, char **argv) {
  cli_plan_args a;
  sf_plan *p;
  int status = cli_plan_load("plan", 0, help, argc, argv, &a, &p);
  if (status >= 0) return status;
  sf_err err = {0};
  if (a.json) {
    json_t *j = sf_plan_to_json(p);
    char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s) {
      sf_plan_free(p);
      sf_err_set(&err, SF_ENOMEM, "out of memory formatting the plan");
      return cli_fail("plan", &err);
    }
    printf("%s\n", s);
    free(s);
  } else {
    print_plan(p);
  }
  sf_plan_free(p);
  return 0;
}
