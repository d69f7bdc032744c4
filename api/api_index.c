/*
 * api_index.c - sf_index: a committed index opened for concurrent search.
 *
 * A core searcher (core/search/search.h) holds one query's scratch and
 * belongs to one thread. The index keeps a pool of them over one shared
 * quantizer: a search pops a free searcher (or opens a new one when every
 * searcher is busy, outside the lock), runs, and pushes it back. So
 * concurrent queries never wait for each other, the pool holds as many
 * searchers as the most queries that ever ran at once, and the mapped
 * files' pages are shared by all of them.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "core/catalog/catalog.h"
#include "core/search/search.h"
#include "core/vector/quantizer.h"

struct sf_index {
  sf_quant *q;
  char **paths;
  size_t npaths;
  uint64_t version, rows;
  char *dataset, *index; /* to explain a corrupt segment (the catalog knows); owned */
  pthread_mutex_t mu;
  sf_search **idle; /* free searchers, a stack */
  size_t nidle, cap;
};

void sf_index_close(sf_index *ix) {
  if (!ix) return;
  for (size_t i = 0; i < ix->nidle; i++) sf_search_free(ix->idle[i]);
  free(ix->idle);
  sf_catalog_paths_free(ix->paths, ix->npaths);
  sf_quant_free(ix->q);
  free(ix->dataset);
  free(ix->index);
  pthread_mutex_destroy(&ix->mu);
  free(ix);
}

/* A searcher for the calling thread: an idle one, or a new one. */
static int take(sf_index *ix, sf_search **out, sf_error *err) {
  pthread_mutex_lock(&ix->mu);
  *out = ix->nidle ? ix->idle[--ix->nidle] : NULL;
  pthread_mutex_unlock(&ix->mu);
  if (*out) return SF_STATUS_OK;
  sf_err e = {0};
  if (sf_search_open(ix->q, (const char *const *)ix->paths, ix->npaths, out, &e)) {
    if (e.code == SF_ENOTFOUND)
      sf_err_prefix(&e,
                    "a file of catalog version %llu was removed since the index was "
                    "opened (segforge gc removes superseded versions); open the index "
                    "again to search the newest version",
                    (unsigned long long)ix->version);
    sf_catalog_explain_corrupt_in(ix->dataset, ix->version, ix->index, &e);
    return sf_api_from_err(err, &e);
  }
  return SF_STATUS_OK;
}

static void give_back(sf_index *ix, sf_search *s) {
  pthread_mutex_lock(&ix->mu);
  if (ix->nidle == ix->cap) {
    size_t cap = ix->cap ? ix->cap * 2 : 4;
    sf_search **grown = realloc(ix->idle, cap * sizeof *grown);
    if (grown) {
      ix->idle = grown;
      ix->cap = cap;
    }
  }
  if (ix->nidle < ix->cap) {
    ix->idle[ix->nidle++] = s;
    s = NULL;
  }
  pthread_mutex_unlock(&ix->mu);
  sf_search_free(s); /* no room to keep it: the next search opens another */
}

int sf_index_open(const char *dataset, const char *index, sf_index **out, sf_error *err) {
  if (!out) return sf_api_fail(err, SF_STATUS_INVALID, "sf_index_open: out is NULL");
  *out = NULL;
  if (!dataset || !index)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_index_open needs a dataset and an index name");
  sf_index *ix = calloc(1, sizeof *ix);
  if (!ix) return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  pthread_mutex_init(&ix->mu, NULL);
  sf_catalog *c = NULL;
  char *qpath = NULL;
  sf_search *first = NULL;
  sf_err e = {0};
  if (sf_catalog_open_latest(dataset, &c, &e)) {
    if (e.code == SF_ENOTFOUND)
      sf_err_prefix(&e, "dataset %s has no committed index yet", dataset);
    goto fail;
  }
  const sf_catalog_index *ci = sf_catalog_find_index(c, index);
  if (!ci) {
    sf_err_set(&e, SF_ENOTFOUND, "catalog version %llu of %s has no index '%s'",
               (unsigned long long)sf_catalog_version(c), dataset, index);
    goto fail;
  }
  if (sf_catalog_segment_paths(c, ci, &ix->paths, &ix->npaths, &e)) goto fail;
  if (!(qpath = sf_catalog_quantizer_path(c, ci))) {
    sf_err_set(&e, SF_ENOMEM, "out of memory");
    goto fail;
  }
  if (sf_quant_load(qpath, &ix->q, &e)) goto fail;
  ix->version = sf_catalog_version(c);
  /* The first searcher checks every file against the quantizer now, so
   * that a bad index fails here rather than at the first query. */
  if (!(ix->dataset = strdup(sf_catalog_dataset(c))) || !(ix->index = strdup(index))) {
    sf_err_set(&e, SF_ENOMEM, "out of memory");
    goto fail;
  }
  if (sf_search_open(ix->q, (const char *const *)ix->paths, ix->npaths, &first, &e)) {
    sf_catalog_explain_corrupt(c, ci, &e);
    goto fail;
  }
  ix->rows = sf_search_rows(first);
  give_back(ix, first);
  sf_catalog_free(c);
  free(qpath);
  *out = ix;
  return SF_STATUS_OK;
fail:
  sf_catalog_free(c);
  free(qpath);
  sf_index_close(ix);
  return sf_api_from_err(err, &e);
}

uint32_t sf_index_dim(const sf_index *ix) {
  return ix ? sf_quant_dim(ix->q) : 0;
}

uint32_t sf_index_nlist(const sf_index *ix) {
  return ix ? sf_quant_nlist(ix->q) : 0;
}

uint64_t sf_index_num_rows(const sf_index *ix) {
  return ix ? ix->rows : 0;
}

size_t sf_index_num_segments(const sf_index *ix) {
  return ix ? ix->npaths : 0;
}

uint64_t sf_index_version(const sf_index *ix) {
  return ix ? ix->version : 0;
}

const char *sf_index_algorithm(const sf_index *ix) {
  return ix ? sf_index_type_name(sf_quant_type(ix->q)) : NULL;
}

const char *sf_index_metric(const sf_index *ix) {
  return ix ? sf_metric_name(sf_quant_metric(ix->q)) : NULL;
}

int sf_index_search(sf_index *ix, const float *queries, uint64_t nq, uint32_t dim,
                    uint32_t k, uint32_t nprobe, uint64_t *ids, float *distances,
                    sf_error *err) {
  if (!ix || (nq && (!queries || !ids)))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_index_search needs an index, queries and room for the ids");
  if (dim != sf_quant_dim(ix->q))
    return sf_api_fail(err, SF_STATUS_MISMATCH,
                       "the queries have dimension %u but the index has %u", dim,
                       sf_quant_dim(ix->q));
  if (k == 0 || nprobe == 0)
    return sf_api_fail(
        err, SF_STATUS_INVALID,
        "k (%u) and nprobe (%u) must be at least 1 (nprobe up to nlist %u)", k, nprobe,
        sf_quant_nlist(ix->q));
  for (uint64_t i = 0; i < nq; i++)
    for (uint32_t j = 0; j < dim; j++)
      if (!isfinite(queries[i * dim + j]))
        return sf_api_fail(err, SF_STATUS_INVALID,
                           "query %llu has a NaN or infinite value at element %u",
                           (unsigned long long)i, j);
  if (nq == 0) return SF_STATUS_OK;
  sf_search *s = NULL;
  int rc = take(ix, &s, err);
  /* No query can return more rows than the index holds: the heap and the
   * scratch scores are sized by that, not by k, so a huge k on a small
   * index costs the caller's arrays only. */
  uint64_t rows = rc ? 0 : sf_search_rows(s);
  uint32_t kk = rows < k ? (uint32_t)rows : k;
  float *scores = NULL;
  if (!rc && !distances && kk && !(scores = malloc((size_t)kk * sizeof *scores)))
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  sf_err e = {0};
  for (uint64_t i = 0; !rc && i < nq; i++) {
    uint64_t *id = ids + i * k;
    float *d = distances ? distances + i * k : scores;
    uint32_t got = 0;
    if (kk && sf_search_query(s, queries + i * dim, kk, nprobe, id, d, &got, &e)) {
      sf_catalog_explain_corrupt_in(ix->dataset, ix->version, ix->index, &e);
      rc = sf_api_from_err(err, &e);
      break;
    }
    for (uint32_t j = got; j < k; j++) {
      id[j] = SF_NO_ROW_ID;
      if (distances) d[j] = INFINITY;
    }
  }
  if (s) give_back(ix, s);
  free(scores);
  return rc;
}
