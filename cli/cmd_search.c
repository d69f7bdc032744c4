/*
 * cmd_search.c - `segforge search`: k-NN over shard/segment files, with
 * recall@k against a ground-truth file and the single-thread query rate.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "core/base/clock.h"
#include "core/base/fsutil.h"
#include "core/search/search.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"

static void help(void) {
  printf(
      "usage: segforge search --queries FILE [--k K] [--nprobe N] [--quantizer FILE]\n"
      "                       [--groundtruth GT.ivecs --rows-per-fragment R]\n"
      "                       [--no-verify] [--json] FILE...\n"
      "       segforge search --dataset D --index NAME --queries FILE [options]\n\n"
      "Searches the shard/segment FILEs (one logical index: same quantizer, disjoint\n"
      "fragments) for the K nearest rows of each query, probing the N nearest\n"
      "partitions (defaults: K 10, N 8). The quantizer defaults to the file\n"
      "'quantizer' beside the first FILE (its staging root). With --dataset, the\n"
      "segments and quantizer of index NAME in the newest catalog version.\n"
      "--groundtruth prints recall@K: GT row i lists base-row numbers, mapped to\n"
      "row ids with R rows per fragment. Every block's CRC is checked once when the\n"
      "files are opened, as a query service does when it loads an index;\n"
      "--no-verify skips that and checks each block every time it is scanned.\n"
      "--json prints the results and figures as one JSON object.\n");
}

/* Reads the ground truth: nq rows of at least k ids. */
static sf_code load_gt(const char *path, uint64_t nq, uint32_t k, int32_t **out,
                       uint32_t *gdim, sf_err *err) {
  sf_vecreader *r;
  sf_code rc = sf_vecreader_open(path, &r, err);
  if (rc) return rc;
  *gdim = sf_vecreader_dim(r);
  if (sf_vecreader_kind(r) != SF_VEC_IVECS)
    rc = sf_err_set(err, SF_EINVAL, "%s: ground truth must be an .ivecs file", path);
  else if (sf_vecreader_rows(r) < nq)
    rc = sf_err_set(err, SF_EINVAL, "%s has %llu rows but there are %llu queries", path,
                    (unsigned long long)sf_vecreader_rows(r), (unsigned long long)nq);
  else if (*gdim < k)
    rc = sf_err_set(err, SF_EINVAL,
                    "%s lists %u neighbours per query; recall@%u needs at least %u", path,
                    *gdim, k, k);
  if (!rc) {
    *out = malloc(sizeof(int32_t) * nq * *gdim);
    size_t got;
    if (!*out)
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    else
      rc = sf_vecreader_read_i32(r, *out, nq, &got, err);
  }
  sf_vecreader_free(r);
  return rc;
}

int cli_cmd_search(int argc, char **argv) {
  const struct option opts[] = {{"queries", required_argument, 0, 'q'},
                                CLI_OPT(CLI_FLAG_K),
                                CLI_OPT(CLI_FLAG_NPROBE),
                                {"quantizer", required_argument, 0, 'Q'},
                                {"groundtruth", required_argument, 0, 'g'},
                                CLI_OPT(CLI_FLAG_ROWS_PER_FRAGMENT),
                                {"no-verify", no_argument, 0, 'V'},
                                {"json", no_argument, 0, 'j'},
                                {"dataset", required_argument, 0, 'D'},
                                CLI_OPT(CLI_FLAG_INDEX),
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *qfile = NULL, *quant = NULL, *gtfile = NULL, *dataset = NULL, *index = NULL;
  uint64_t k = 10, nprobe = 8, rpf = 0;
  int json = 0, verify = 1, c;
  sf_err err = {0};
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("search", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'q':
        qfile = optarg;
        break;
      case 'Q':
        quant = optarg;
        break;
      case 'g':
        gtfile = optarg;
        break;
      case CLI_FLAG_K:
        rc = cli_flag_u64(c, optarg, &k, &err);
        break;
      case CLI_FLAG_NPROBE:
        rc = cli_flag_u64(c, optarg, &nprobe, &err);
        break;
      case CLI_FLAG_ROWS_PER_FRAGMENT:
        rc = cli_flag_u64(c, optarg, &rpf, &err);
        break;
      case 'V':
        verify = 0;
        break;
      case 'D':
        dataset = optarg;
        break;
      case CLI_FLAG_INDEX:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) index = optarg;
        break;
      case 'j':
        json = 1;
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("search", "unknown option");
    }
    if (rc) return cli_usage("search", "%s", err.msg);
  }
  if (!qfile) return cli_usage("search", "--queries FILE is required");
  if (!dataset != !index) return cli_usage("search", "--dataset and --index go together");
  if (dataset && optind < argc)
    return cli_usage("search", "give either --dataset and --index or files, not both");
  if (!dataset && optind >= argc)
    return cli_usage("search",
                     "name at least one shard or segment file, or --dataset and --index");
  if (gtfile && !rpf)
    return cli_usage("search",
                     "--groundtruth needs --rows-per-fragment to map rows to ids");

  char *qdefault = NULL;
  const sf_quant *q = NULL;
  sf_quant *qown = NULL;
  sf_search *s = NULL;
  float *queries = NULL, *scores = NULL;
  sf_rowid *ids = NULL;
  int32_t *gt = NULL;
  json_t *results = NULL;
  uint64_t nq = 0;
  uint32_t qdim = 0, gdim = 0;
  size_t npaths = 0;
  int status = 1;
  if (dataset) {
    /* The library resolves the catalog's segments and quantizer. */
    if (sf_search_open_dataset(dataset, index, quant, &s, &err)) goto out;
    q = sf_search_quant(s);
  } else {
    if (!quant) {
      char *dir = sf_fs_dirname(argv[optind]);
      qdefault = dir ? sf_fs_join(dir, "quantizer") : NULL;
      free(dir);
      quant = qdefault;
    }
    if (!quant) {
      sf_err_set(&err, SF_ENOMEM, "out of memory");
      goto out;
    }
    if (sf_quant_load(quant, &qown, &err)) goto out;
    q = qown;
  }
  if (sf_vec_load_f32(qfile, 0, UINT64_MAX, (size_t)4 << 30, &queries, &nq, &qdim, &err))
    goto out;
  if (qdim != sf_quant_dim(q)) {
    sf_err_set(&err, SF_EMISMATCH, "%s has dimension %u but the index has %u", qfile,
               qdim, sf_quant_dim(q));
    goto out;
  }
  if (gtfile && load_gt(gtfile, nq, (uint32_t)k, &gt, &gdim, &err)) goto out;
  if (!dataset && sf_search_open(q, (const char *const *)(argv + optind),
                                 (size_t)(argc - optind), &s, &err))
    goto out;
  npaths = sf_search_files(s);
  if (verify && sf_search_verify(s, &err)) goto out;
  ids = malloc(sizeof *ids * k);
  scores = malloc(sizeof *scores * k);
  if (json) results = json_array();
  if (!ids || !scores || (json && !results)) {
    sf_err_set(&err, SF_ENOMEM, "out of memory");
    goto out;
  }
  double hits = 0, scanned = 0, t0 = sf_clock_mono_s(), busy = 0;
  for (uint64_t i = 0; i < nq; i++) {
    uint32_t got;
    double a = sf_clock_mono_s();
    if (sf_search_query(s, queries + i * qdim, (uint32_t)k, (uint32_t)nprobe, ids, scores,
                        &got, &err))
      goto out;
    busy += sf_clock_mono_s() - a;
    scanned += (double)sf_search_last_scanned(s);
    if (gt) {
      const int32_t *g = gt + i * gdim;
      for (uint32_t r = 0; r < got; r++)
        for (uint32_t j = 0; j < k; j++)
          if (g[j] >= 0 &&
              ids[r] == SF_ROWID((uint64_t)g[j] / rpf, (uint64_t)g[j] % rpf)) {
            hits++;
            break;
          }
    }
    if (json) {
      json_t *ji = json_array(), *js = json_array();
      for (uint32_t r = 0; r < got; r++) {
        json_array_append_new(ji, json_integer((json_int_t)ids[r]));
        json_array_append_new(js, json_real(scores[r]));
      }
      json_array_append_new(results, json_pack("{s:I, s:o, s:o}", "query", (json_int_t)i,
                                               "ids", ji, "scores", js));
    }
  }
  double wall = sf_clock_mono_s() - t0, qps = busy > 0 ? nq / busy : 0;
  double recall = gt && nq ? hits / ((double)nq * k) : -1;
  if (json) {
    json_t *o = json_pack("{s:I, s:I, s:I, s:I, s:f, s:f, s:o}", "queries",
                          (json_int_t)nq, "k", (json_int_t)k, "nprobe",
                          (json_int_t)nprobe, "rows", (json_int_t)sf_search_rows(s),
                          "qps", qps, "seconds", wall, "results", results);
    results = NULL;
    if (o && recall >= 0) json_object_set_new(o, "recall", json_real(recall));
    if (o) json_dumpf(o, stdout, JSON_COMPACT);
    printf("\n");
    json_decref(o);
  } else {
    printf(
        "searched %llu queries over %llu rows in %d file%s: k=%llu nprobe=%llu, "
        "%.0f rows scanned per query, %.0f queries/s (one thread)\n",
        (unsigned long long)nq, (unsigned long long)sf_search_rows(s), (int)npaths,
        npaths == 1 ? "" : "s", (unsigned long long)k, (unsigned long long)nprobe,
        nq ? scanned / nq : 0, qps);
    if (recall >= 0) printf("recall@%llu = %.4f\n", (unsigned long long)k, recall);
  }
  status = 0;
out:
  if (status) cli_fail("search", &err);
  json_decref(results);
  sf_search_free(s);
  sf_quant_free(qown);
  free(qdefault);
  free(queries);
  free(scores);
  free(ids);
  free(gt);
  return status;
}
