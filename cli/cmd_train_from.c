/*
 * cmd_train_from.c - `segforge train --from-dataset D --index NAME --out S`:
 * no training; the committed quantizer of index NAME goes into staging
 * root S (core/pipeline/staging_root.h), so that the workers of an
 * incremental job stage shards the index accepts.
 */
#include <inttypes.h>
#include <stdio.h>

#include "cli/cli.h"
#include "core/pipeline/staging_root.h"

int cli_train_from_dataset(const char *dataset, const char *index, const char *out) {
  if (!index) return cli_usage("train", "--from-dataset needs --index NAME");
  if (!out) return cli_usage("train", "--out DIR (the staging root) is required");
  sf_staging_root_req r = {.dataset = dataset, .index_name = index, .root = out};
  sf_staging_root_result res;
  sf_err err = {0};
  if (sf_staging_root_from_index(&r, &res, &err)) return cli_fail("train", &err);
  printf("train: index %s (version %" PRIu64
         "): %s %s dim %u nlist %u, checksum %016" PRIx64 " %s %s\n",
         index, res.version, sf_index_type_name(res.index_type),
         sf_metric_name(res.metric), res.dim, res.nlist, res.checksum,
         res.already ? "already in" : "->", res.quantizer_path);
  sf_staging_root_result_clear(&res);
  return 0;
}
