/*
 * cmd_train.c - `segforge train`: a quantizer (IVF centroids, plus SQ ranges
 * or PQ codebooks) from a vector file, written atomically where every worker
 * of a build can read it.
 *
 * Only the training sample is read: when the file holds more rows than the
 * sample cap, a deterministic sample (from --seed) is read row by row in
 * file order, so a billion-row file costs the sample's memory, not the
 * file's.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/base/clock.h"
#include "core/base/fsutil.h"
#include "core/vector/kmeans.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"

static void help(void) {
  printf(
      "usage: segforge train --vectors FILE --out DIR_OR_FILE --index-type TYPE\n"
      "                      --metric METRIC --nlist N [--pq-m M] [--seed S]\n"
      "                      [--max-train-rows N] [--iters N] [--threads N]\n\n"
      "Trains the quantizer every shard of a build is encoded against.\n"
      "  --vectors FILE        .fvecs, .bvecs or .ivecs training vectors\n"
      "  --out DIR_OR_FILE     a directory (e.g. a staging root; created with its\n"
      "                        parents when missing) gets DIR/quantizer; an existing\n"
      "                        file is replaced\n"
      "  --index-type TYPE     IVF_FLAT, IVF_SQ (8-bit) or IVF_PQ (8-bit codes)\n"
      "  --metric METRIC       L2, COSINE or DOT\n"
      "  --nlist N             coarse lists (1..%u; about rows/256 to rows/32 is usual)\n"
      "  --pq-m M              IVF_PQ sub-quantizers; must divide the dimension\n"
      "  --seed S              training seed (default 1): same seed, same quantizer\n"
      "  --max-train-rows N    sample cap (default 256 x nlist, at least 65536 for PQ)\n"
      "  --iters N             k-means iterations (default %u)\n"
      "  --threads N           training threads (default: the online CPUs); the\n"
      "                        quantizer is the same for any count\n\n"
      "   or: segforge train --from-dataset D --index NAME --out DIR\n\n"
      "Copies the committed quantizer of index NAME into staging root DIR (created),\n"
      "checksum verified, for the workers of an incremental job.\n",
      SF_MAX_NLIST, SF_QUANT_DEFAULT_ITERS);
}

/* Reads the training rows: all of them, or a sorted deterministic sample of
 * `cap` when the file is larger. *x is malloc'd (caller frees). */
static sf_code read_sample(const char *path, uint64_t cap, uint64_t seed, float **x,
                           size_t *n, uint64_t *total, uint32_t *dim, sf_err *err) {
  sf_vecreader *r;
  sf_code rc = sf_vecreader_open(path, &r, err);
  if (rc) return rc;
  *dim = sf_vecreader_dim(r);
  *total = sf_vecreader_rows(r);
  size_t m = (size_t)(*total < cap ? *total : cap);
  size_t *idx = NULL;
  float *buf = NULL;
  if ((double)m * *dim * sizeof(float) > (double)SIZE_MAX / 2) {
    rc = sf_err_set(err, SF_ELIMIT,
                    "%s: a sample of %zu rows of dim %u is too large; lower "
                    "--max-train-rows",
                    path, m, *dim);
    goto done;
  }
  buf = malloc(sizeof(float) * (m ? m : 1) * *dim);
  if (!buf) {
    rc = sf_err_set(err, SF_ENOMEM,
                    "out of memory for %zu training rows of dim %u; lower "
                    "--max-train-rows",
                    m, *dim);
    goto done;
  }
  size_t got = 0;
  if (m == *total) {
    while (got < m && !rc) {
      size_t nr = 0;
      rc = sf_vecreader_read_f32(r, buf + got * *dim, m - got, &nr, err);
      if (!rc && nr == 0)
        rc =
            sf_err_set(err, SF_ECORRUPT, "%s: ended after %zu of %zu rows", path, got, m);
      got += nr;
    }
  } else {
    idx = malloc(sizeof(size_t) * m);
    if (!idx) {
      rc = sf_err_set(err, SF_ENOMEM, "out of memory sampling %zu rows", m);
      goto done;
    }
    sf_kmeans_sample(seed, (size_t)*total, m, idx);
    for (; got < m && !rc; got++) {
      size_t nr = 0;
      rc = sf_vecreader_seek(r, idx[got], err);
      if (!rc) rc = sf_vecreader_read_f32(r, buf + got * *dim, 1, &nr, err);
      if (!rc && nr != 1)
        rc =
            sf_err_set(err, SF_ECORRUPT, "%s: row %zu could not be read", path, idx[got]);
    }
  }
done:
  sf_vecreader_free(r);
  free(idx);
  if (rc) {
    free(buf);
    return rc;
  }
  *x = buf;
  *n = m;
  return SF_OK;
}

int cli_cmd_train(int argc, char **argv) {
  const struct option opts[] = {{"vectors", required_argument, 0, 'v'},
                                {"out", required_argument, 0, 'o'},
                                CLI_OPT(CLI_FLAG_INDEX_TYPE),
                                CLI_OPT(CLI_FLAG_METRIC),
                                CLI_OPT(CLI_FLAG_NLIST),
                                CLI_OPT(CLI_FLAG_PQ_M),
                                CLI_OPT(CLI_FLAG_SEED),
                                CLI_OPT(CLI_FLAG_MAX_TRAIN_ROWS),
                                CLI_OPT(CLI_FLAG_ITERS),
                                CLI_OPT(CLI_FLAG_THREADS),
                                {"from-dataset", required_argument, 0, 'f'},
                                CLI_OPT(CLI_FLAG_INDEX),
                                {"help", no_argument, 0, 'h'},
                                {0, 0, 0, 0}};
  const char *vectors = NULL, *out = NULL, *from = NULL, *index = NULL;
  int type = -1, metric = -1; /* not given */
  uint64_t nlist = 0, pq_m = 0, seed = 1, max_rows = 0, iters = SF_QUANT_DEFAULT_ITERS;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  uint64_t threads = ncpu > 0 ? (uint64_t)ncpu : 1;
  sf_quant_params p = {0};
  sf_err err = {0};
  int c;
  {
    sf_err env_err = {0};
    if (cli_env_args(&argc, &argv, "", opts, &env_err))
      return cli_usage("train", "%s", env_err.msg);
  }
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    sf_code rc = SF_OK;
    switch (c) {
      case 'v':
        vectors = optarg;
        break;
      case 'o':
        out = optarg;
        break;
      case 'f':
        from = optarg;
        break;
      case CLI_FLAG_INDEX:
        if (!(rc = cli_flag_check_id(c, optarg, &err))) index = optarg;
        break;
      case CLI_FLAG_INDEX_TYPE:
        rc = cli_flag_choice(c, optarg, &type, &err);
        break;
      case CLI_FLAG_METRIC:
        rc = cli_flag_choice(c, optarg, &metric, &err);
        break;
      case CLI_FLAG_NLIST:
        rc = cli_flag_u64(c, optarg, &nlist, &err);
        break;
      case CLI_FLAG_PQ_M:
        rc = cli_flag_u64(c, optarg, &pq_m, &err);
        break;
      case CLI_FLAG_SEED:
        rc = cli_flag_u64(c, optarg, &seed, &err);
        break;
      case CLI_FLAG_MAX_TRAIN_ROWS:
        rc = cli_flag_u64(c, optarg, &max_rows, &err);
        break;
      case CLI_FLAG_ITERS:
        rc = cli_flag_u64(c, optarg, &iters, &err);
        break;
      case CLI_FLAG_THREADS:
        rc = cli_flag_u64(c, optarg, &threads, &err);
        break;
      case 'h':
        help();
        cli_flag_help(stdout, opts);
        return 0;
      default:
        return cli_usage("train", "unknown option");
    }
    if (rc) return cli_usage("train", "%s", err.msg);
  }
  if (optind < argc) return cli_usage("train", "unexpected argument '%s'", argv[optind]);
  if (from && (vectors || type >= 0 || metric >= 0 || nlist))
    return cli_usage("train", "--from-dataset copies a quantizer: no training flags");
  if (from) return cli_train_from_dataset(from, index, out);
  if (index) return cli_usage("train", "--index goes with --from-dataset");
  if (!vectors) return cli_usage("train", "--vectors FILE is required");
  if (!out) return cli_usage("train", "--out DIR_OR_FILE is required");
  if (type < 0)
    return cli_usage("train", "--index-type is required (IVF_FLAT, IVF_SQ, IVF_PQ)");
  if (metric < 0) return cli_usage("train", "--metric is required (L2, COSINE, DOT)");
  if (!nlist) return cli_usage("train", "--nlist is required");
  p.type = (sf_index_type)type;
  p.metric = (sf_metric)metric;
  if (p.type == SF_IVF_PQ && !pq_m)
    return cli_usage("train",
                     "--pq-m is required for IVF_PQ (a divisor of the dimension)");
  if (p.type != SF_IVF_PQ && pq_m)
    return cli_usage("train", "--pq-m applies to IVF_PQ only");
  p.nlist = (uint32_t)nlist;
  p.pq_m = (uint32_t)pq_m;
  p.seed = seed;
  p.kmeans_iters = (uint32_t)iters;
  p.nthreads = (uint32_t)threads;

  /* The sample cap the library would use; the CLI applies it while reading. */
  uint64_t cap = max_rows ? max_rows : nlist * SF_KMEANS_DEFAULT_MAX_PPC;
  if (!max_rows && p.type == SF_IVF_PQ && cap < 65536) cap = 65536;
  if (cap < nlist)
    return cli_usage("train", "--max-train-rows (%llu) must be at least --nlist (%llu)",
                     (unsigned long long)cap, (unsigned long long)nlist);

  char *path = NULL;
  double t0 = sf_clock_mono_s();
  float *x = NULL;
  size_t n = 0;
  uint64_t total = 0;
  uint32_t dim = 0;
  sf_quant *q = NULL;
  if (read_sample(vectors, cap, seed, &x, &n, &total, &dim, &err)) goto fail;
  p.dim = dim;
  /* Already sampled: train on all of it (with too few rows, leave the cap
   * unset so that the library's message about the row count shows). */
  int enough = n >= nlist && (p.type != SF_IVF_PQ || n >= SF_QUANT_PQ_KSUB);
  p.max_train_rows = enough ? n : 0;
  if (sf_quant_params_check(&p, &err)) goto fail;
  /* An existing file is replaced; anything else is a directory, created with
   * its parents when missing (a new staging root, as in the README), that
   * gets DIR/quantizer. Created once the input has read and the parameters
   * hold (a refused request leaves no directory behind), but before the
   * training, so that a path that cannot be a directory fails at once. */
  struct stat st;
  int file = stat(out, &st) == 0 && !S_ISDIR(st.st_mode);
  if (!file && sf_fs_mkdirs(out, &err)) goto fail;
  if (!(path = file ? strdup(out) : sf_fs_join(out, "quantizer"))) {
    sf_err_set(&err, SF_ENOMEM, "out of memory");
    goto fail;
  }
  if (sf_quant_train(&p, x, n, &q, &err)) {
    sf_err_prefix(&err, "%s", vectors);
    goto fail;
  }
  if (sf_quant_save(q, path, &err)) goto fail;
  char pq[24] = "";
  if (p.type == SF_IVF_PQ) snprintf(pq, sizeof pq, " pq_m %u", p.pq_m);
  printf(
      "train: %s %s dim %u nlist %u%s from %zu of %llu rows: checksum %016llx, %.2f s -> "
      "%s\n",
      sf_index_type_name(p.type), sf_metric_name(p.metric), dim, p.nlist, pq, n,
      (unsigned long long)total, (unsigned long long)sf_quant_checksum(q),
      sf_clock_mono_s() - t0, path);
  sf_quant_free(q);
  free(x);
  free(path);
  return 0;
fail:
  sf_quant_free(q);
  free(x);
  free(path);
  return cli_fail("train", &err);
}
