/* api_train.c - sf_train: the quantizer of a job from vectors in memory. */
#include <math.h>
#include <stdlib.h>
#include <unistd.h>

#include "api/api_internal.h"
#include "core/base/fsutil.h"
#include "core/pipeline/plan.h"
#include "core/vector/quantizer.h"

static const char *const train_keys[] = {"index_type",   "metric",  "nlist",
                                         "pq_m",         "seed",    "max_train_rows",
                                         "kmeans_iters", "threads", NULL};

/* The first row holding a NaN or an infinity, or n. */
static uint64_t first_bad_row(const float *x, uint64_t n, uint32_t dim, uint32_t *col) {
  for (uint64_t i = 0; i < n; i++)
    for (uint32_t j = 0; j < dim; j++)
      if (!isfinite(x[i * dim + j])) {
        *col = j;
        return i;
      }
  return n;
}

static int read_params(const sf_options *opts, uint32_t dim, sf_quant_params *p,
                       sf_error *err) {
  sf_err e = {0};
  uint64_t nlist, pq_m, seed, rows, iters, threads;
  int rc;
  if ((rc = sf_api_opts_check(opts, "sf_train", train_keys, err))) return rc;
  if (sf_index_type_parse(sf_api_opt_str(opts, "index_type", "IVF_FLAT"), &p->type, &e) ||
      sf_metric_parse(sf_api_opt_str(opts, "metric", "L2"), &p->metric, &e))
    return sf_api_from_err(err, &e);
  if (!sf_options_get(opts, "nlist"))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option nlist is required: the number of IVF partitions (e.g. "
                       "\"256\"; about sqrt(rows) is a common choice)");
  if ((rc = sf_api_opt_u64(opts, "nlist", 0, 1, SF_MAX_NLIST, &nlist, err)) ||
      (rc = sf_api_opt_u64(opts, "pq_m", 0, 0, SF_MAX_PQ_M, &pq_m, err)) ||
      (rc = sf_api_opt_u64(opts, "seed", 1, 0, UINT64_MAX, &seed, err)) ||
      (rc = sf_api_opt_u64(opts, "max_train_rows", 0, 0, UINT64_MAX, &rows, err)) ||
      (rc = sf_api_opt_u64(opts, "kmeans_iters", SF_QUANT_DEFAULT_ITERS, 1, 10000, &iters,
                           err)) ||
      (rc = sf_api_opt_u64(opts, "threads", 0, 0, 1024, &threads, err)))
    return rc;
  if (p->type == SF_IVF_PQ && !pq_m)
    return sf_api_fail(
        err, SF_STATUS_INVALID,
        "option pq_m is required for IVF_PQ: the number of sub-quantizers, "
        "a divisor of the dimension %u",
        dim);
  if (p->type != SF_IVF_PQ && pq_m)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option pq_m applies to IVF_PQ only; this index is %s",
                       sf_index_type_name(p->type));
  if (!threads) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    threads = ncpu > 0 ? (uint64_t)ncpu : 1;
  }
  p->dim = dim;
  p->nlist = (uint32_t)nlist;
  p->pq_m = (uint32_t)pq_m;
  p->seed = seed;
  p->max_train_rows = rows;
  p->kmeans_iters = (uint32_t)iters;
  p->nthreads = (uint32_t)threads;
  if (sf_quant_params_check(p, &e)) return sf_api_from_err(err, &e);
  return SF_STATUS_OK;
}

int sf_train(const float *vectors, uint64_t n, uint32_t dim, const sf_options *opts,
             const char *staging_root, sf_error *err) {
  sf_quant_params p = {0};
  sf_err e = {0};
  int rc;
  if (!staging_root || !*staging_root)
    return sf_api_fail(
        err, SF_STATUS_INVALID,
        "sf_train needs a staging root (sf_staging_root gives the one of a "
        "dataset and staging id)");
  if (!vectors || n == 0)
    return sf_api_fail(err, SF_STATUS_INVALID, "sf_train needs at least one vector");
  if (dim == 0 || dim > SF_MAX_DIM)
    return sf_api_fail(err, SF_STATUS_INVALID, "dimension %u is outside 1..%u", dim,
                       SF_MAX_DIM);
  if (n > SIZE_MAX / dim / sizeof(float))
    return sf_api_fail(err, SF_STATUS_LIMIT,
                       "%llu rows of %u floats do not fit in memory",
                       (unsigned long long)n, dim);
  if ((rc = read_params(opts, dim, &p, err))) return rc;
  uint32_t col = 0;
  uint64_t bad = first_bad_row(vectors, n, dim, &col);
  if (bad < n)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "training vector %llu has a NaN or infinite value at element %u; "
                       "train on finite values only",
                       (unsigned long long)bad, col);
  sf_quant *q = NULL;
  char *path = NULL;
  if (sf_quant_train(&p, vectors, (size_t)n, &q, &e) || sf_fs_mkdirs(staging_root, &e))
    goto out;
  if (!(path = sf_fs_join(staging_root, SF_PLAN_QUANTIZER_NAME))) {
    sf_err_set(&e, SF_ENOMEM, "out of memory");
    goto out;
  }
  sf_quant_save(q, path, &e);
out:
  sf_quant_free(q);
  free(path);
  return e.code ? sf_api_from_err(err, &e) : SF_STATUS_OK;
}
