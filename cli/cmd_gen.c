/*
 * cmd_gen.c - `segforge gen`: clustered base vectors, queries from the same
 * clusters, and their exact neighbours, as texmex files. The data every
 * demo, test and benchmark measures recall on.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/base/fsutil.h"
#include "core/vector/gen.h"
#include "core/vector/vecio.h"

static void help(void) {
  printf(
      "usage: segforge gen --out DIR [--rows N] [--queries N] [--dim D] [--clusters C]\n"
      "                    [--sigma S] [--metric L2|COSINE|DOT] [--k K] [--seed S]\n\n"
      "Writes DIR/base.fvecs, DIR/query.fvecs and DIR/gt.ivecs (the exact K nearest\n"
      "base rows of each query under the metric, by brute force).\n"
      "Defaults: --rows 100000 --queries 1000 --dim 64 --clusters 100 --sigma 0.3\n"
      "          --metric L2 --k 100 --seed 42\n");
}

static sf_code write_f32(const char *dir, const char *name, const float *x, size_t n,
                         uint32_t dim, sf_err *err) {
  char *path = sf_fs_join(dir, name);
  if (!path) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_vecwriter *w;
  sf_code rc = sf_vecwriter_open(path, dim, &w, err);
  if (!rc) {
    rc = sf_vecwriter_write_f32(w, x, n, err);
    if (rc)
      sf_vecwriter_abort(w);
    else
      rc = sf_vecwriter_close(w, err);
  }
  free(path);
  return rc;
}

int cli_cmd_gen(int argc, char **argv) {
  const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                CLI_OPT(CLI_FLAG_ROWS),
                                CLI_OPT(CLI_FLAG_QUERIES),
                                CLI_OPT(CLI_FLAG_DIM),
                                CLI_OPT(CLI_FLAG_CLUSTERS),
                                {"sigma", required_argument, 0, 's'},
                                CLI_OPT(CLI_FLAG_METRIC),
                                CLI_OPT(CLI_FLAG_K),
                                CLI_OPT(CLI_FLAG_SEED),
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *out = NULL;
  uint64_t rows = 100000, nq = 1000, dim = 64, clusters = 100, k = 100, seed = 42;
  double sigma = 0.3;
  int metric = SF_L2;
  sf_err err = {0};
  int c;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("gen", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'o':
        out = optarg;
        break;
      case CLI_FLAG_ROWS:
        rc = cli_flag_u64(c, optarg, &rows, &err);
        break;
      case CLI_FLAG_QUERIES:
        rc = cli_flag_u64(c, optarg, &nq, &err);
        break;
      case CLI_FLAG_DIM:
        rc = cli_flag_u64(c, optarg, &dim, &err);
        break;
      case CLI_FLAG_CLUSTERS:
        rc = cli_flag_u64(c, optarg, &clusters, &err);
        break;
      case CLI_FLAG_K:
        rc = cli_flag_u64(c, optarg, &k, &err);
        break;
      case CLI_FLAG_SEED:
        rc = cli_flag_u64(c, optarg, &seed, &err);
        break;
      case CLI_FLAG_METRIC:
        rc = cli_flag_choice(c, optarg, &metric, &err);
        break;
      case 's': {
        char *end;
        sigma = strtod(optarg, &end);
        if (*end || !(sigma > 0 && sigma < 100))
          return cli_usage("gen", "--sigma expects a number in (0, 100), got '%s'",
                           optarg);
        break;
      }
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("gen", "unknown option");
    }
    if (rc) return cli_usage("gen", "%s", err.msg);
  }
  if (!out) return cli_usage("gen", "--out DIR is required");
  if (optind < argc) return cli_usage("gen", "unexpected argument '%s'", argv[optind]);
  if (rows * dim > (1ULL << 32))
    return cli_usage("gen", "--rows x --dim must stay below 2^32 floats (16 GiB)");

  float *base = malloc(rows * dim * sizeof(float));
  float *qs = malloc(nq * dim * sizeof(float));
  int64_t *gt = malloc(nq * k * sizeof(int64_t));
  int32_t *gt32 = malloc(nq * k * sizeof(int32_t));
  if (!base || !qs || !gt || !gt32) {
    sf_err_set(&err, SF_ENOMEM, "out of memory for %llu x %llu floats",
               (unsigned long long)rows, (unsigned long long)dim);
    goto fail;
  }
  sf_gen_clustered(base, rows, (uint32_t)dim, (uint32_t)clusters, (float)sigma, seed,
                   seed + 1);
  sf_gen_clustered(qs, nq, (uint32_t)dim, (uint32_t)clusters, (float)sigma, seed,
                   seed + 2);
  if (sf_fs_mkdirs(out, &err) ||
      sf_bruteforce_knn(base, rows, qs, nq, (uint32_t)dim, metric, (uint32_t)k, gt, &err))
    goto fail;
  for (size_t i = 0; i < nq * k; i++) gt32[i] = (int32_t)gt[i];
  if (write_f32(out, "base.fvecs", base, rows, (uint32_t)dim, &err) ||
      write_f32(out, "query.fvecs", qs, nq, (uint32_t)dim, &err))
    goto fail;
  char *gpath = sf_fs_join(out, "gt.ivecs");
  sf_vecwriter *w = NULL;
  sf_code rc = gpath ? sf_vecwriter_open(gpath, (uint32_t)k, &w, &err)
                     : sf_err_set(&err, SF_ENOMEM, "out of memory");
  free(gpath);
  if (rc) goto fail;
  if (sf_vecwriter_write_i32(w, gt32, nq, &err)) {
    sf_vecwriter_abort(w);
    goto fail;
  }
  if (sf_vecwriter_close(w, &err)) goto fail;
  fprintf(
      stderr,
      "gen: %llu base rows, %llu queries, dim %llu, top-%llu ground truth (%s) in %s\n",
      (unsigned long long)rows, (unsigned long long)nq, (unsigned long long)dim,
      (unsigned long long)k, sf_metric_name(metric), out);
  free(base);
  free(qs);
  free(gt);
  free(gt32);
  return 0;
fail:
  free(base);
  free(qs);
  free(gt);
  free(gt32);
  return cli_fail("gen", &err);
}
