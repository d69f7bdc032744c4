/*
 * staging_root.h - a staging root for an incremental job of an existing
 * index: the index's committed quantizer copied into it, so that workers
 * stage shards the index will accept (`segforge train --from-dataset`).
 *
 * The copy is verified twice: the committed file is read as a quantizer
 * (trusting nothing in it) and its checksum must be the one the catalog
 * records for the index; the written file is read back and must declare
 * the same checksum. A root that already holds a quantizer keeps it when it
 * is the same one (running the command again is harmless) and is refused
 * otherwise: shards may already be staged against it.
 */
#ifndef SF_STAGING_ROOT_H
#define SF_STAGING_ROOT_H

#include <stdint.h>

#include "core/base/error.h"
#include "core/base/types.h"

typedef struct sf_staging_root_req {
  const char *dataset;    /* directory or file:// URI */
  const char *index_name; /* an index of the newest catalog version */
  const char *root;       /* the staging root; created with its parents */
} sf_staging_root_req;

typedef struct sf_staging_root_result {
  char *quantizer_path; /* <root>/quantizer, malloc'd (sf_staging_root_result_clear) */
  uint64_t checksum;    /* the index's quantizer checksum */
  uint64_t version;     /* the catalog version read */
  sf_index_type index_type;
  sf_metric metric;
  uint32_t dim, nlist;
  int already; /* 1: the root held this quantizer already; nothing written */
} sf_staging_root_result;

/* Copies index_name's committed quantizer into <root>/quantizer (atomic:
 * temporary file, fsync, rename). Errors: SF_ENOTFOUND (no catalog, no such
 * index, or its quantizer file is gone, naming it); SF_ECORRUPT or
 * SF_EFORMAT (the committed file is damaged, naming it); SF_ECHECKSUM (it
 * reads, but is not the quantizer the catalog records); SF_EEXIST (root
 * holds another quantizer, naming both checksums); SF_EIO. On failure *res
 * is cleared. */
sf_code sf_staging_root_from_index(const sf_staging_root_req *req,
                                   sf_staging_root_result *res, sf_err *err);
/* Frees what res owns and zeroes it; accepts NULL. */
void sf_staging_root_result_clear(sf_staging_root_result *res);

#endif
