/* staging_root.c - see staging_root.h. */
#include "core/pipeline/staging_root.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/vector/quantizer.h"

void sf_staging_root_result_clear(sf_staging_root_result *res) {
  if (!res) return;
  free(res->quantizer_path);
  memset(res, 0, sizeof *res);
}

/* The committed quantizer, loaded and checked against the catalog. */
static sf_code load_committed(const sf_catalog *c, const sf_catalog_index *ix,
                              sf_quant **q, sf_err *err) {
  char *path = sf_catalog_quantizer_path(c, ix);
  if (!path) return sf_err_set(err, SF_ENOMEM, "out of memory");
  struct stat st;
  sf_code rc = SF_OK;
  if (stat(path, &st) && errno == ENOENT)
    rc = sf_err_set(err, SF_ENOTFOUND, "index %s: its quantizer %s is missing", ix->name,
                    path);
  else if (!(rc = sf_quant_load(path, q, err)) &&
           sf_quant_checksum(*q) != ix->quantizer_checksum) {
    rc = sf_err_set(err, SF_ECHECKSUM,
                    "index %s: %s has checksum %016" PRIx64
                    ", the catalog records %016" PRIx64,
                    ix->name, path, sf_quant_checksum(*q), ix->quantizer_checksum);
    sf_quant_free(*q);
    *q = NULL;
  }
  if (rc && rc != SF_ENOTFOUND && rc != SF_ECHECKSUM)
    sf_err_prefix(err, "index %s: the committed quantizer does not read", ix->name);
  free(path);
  return rc;
}

/* What <root>/quantizer holds now: *exists = 0, or its checksum. */
static sf_code existing(const char *path, int *exists, uint64_t *sum, sf_err *err) {
  struct stat st;
  *exists = 0;
  if (stat(path, &st)) {
    if (errno == ENOENT) return SF_OK;
    return sf_err_set(err, SF_EIO, "%s: %s", path, strerror(errno));
  }
  *exists = 1;
  sf_err why = {0};
  if (sf_quant_checksum_of_file(path, sum, &why))
    return sf_err_set(err, SF_EEXIST,
                      "%s is there already and is not a valid quantizer (%s); it is left "
                      "alone: remove it or choose another staging root",
                      path, why.msg);
  return SF_OK;
}

sf_code sf_staging_root_from_index(const sf_staging_root_req *r,
                                   sf_staging_root_result *res, sf_err *err) {
  memset(res, 0, sizeof *res);
  if (!r->dataset || !r->index_name || !r->root)
    return sf_err_set(err, SF_EINVAL,
                      "a dataset, an index and a staging root are needed");
  sf_catalog *c = NULL;
  sf_quant *q = NULL;
  sf_code rc = sf_catalog_open_latest(r->dataset, &c, err);
  if (rc) return rc;
  const sf_catalog_index *ix = sf_catalog_find_index(c, r->index_name);
  if (!ix) {
    rc =
        sf_err_set(err, SF_ENOTFOUND, "the catalog (version %" PRIu64 ") has no index %s",
                   sf_catalog_version(c), r->index_name);
    goto out;
  }
  res->version = sf_catalog_version(c);
  res->checksum = ix->quantizer_checksum;
  res->index_type = ix->index_type;
  res->metric = ix->metric;
  res->dim = ix->dim;
  res->nlist = ix->nlist;
  if ((rc = load_committed(c, ix, &q, err))) goto out;
  struct stat st;
  if (!stat(r->root, &st) && !S_ISDIR(st.st_mode)) {
    rc = sf_err_set(err, SF_EEXIST,
                    "staging root %s exists and is not a directory: remove it or choose "
                    "another staging root",
                    r->root);
    goto out;
  }
  if (!(res->quantizer_path = sf_fs_join(r->root, "quantizer"))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  int exists;
  uint64_t sum = 0;
  if ((rc = existing(res->quantizer_path, &exists, &sum, err))) goto out;
  if (exists) {
    if (sum == res->checksum)
      res->already = 1;
    else
      rc = sf_err_set(err, SF_EEXIST,
                      "%s holds quantizer %016" PRIx64 ", not index %s's %016" PRIx64
                      "; it is left alone: remove it or choose another staging root",
                      res->quantizer_path, sum, r->index_name, res->checksum);
    goto out;
  }
  if ((rc = sf_fs_mkdirs(r->root, err)) ||
      (rc = sf_quant_save(q, res->quantizer_path, err)))
    goto out;
  /* Read back: what workers will read is what the catalog records. */
  if ((rc = sf_quant_checksum_of_file(res->quantizer_path, &sum, err))) goto out;
  if (sum != res->checksum)
    rc = sf_err_set(err, SF_ECHECKSUM,
                    "%s was written with checksum %016" PRIx64 ", not %016" PRIx64,
                    res->quantizer_path, sum, res->checksum);
out:
  sf_quant_free(q);
  sf_catalog_free(c);
  if (rc) sf_staging_root_result_clear(res);
  return rc;
}
