/*
 * api_shard_writer.c - sf_shard_writer: one shard from rows in memory.
 *
 * Each add validates its whole batch before anything changes (so a refused
 * call leaves the writer as it was), then assigns and encodes the rows at
 * once: the writer holds codes, not vectors. finish orders the rows by
 * (partition, row id) - one sort by row id, which also finds duplicates,
 * then a stable counting pass by partition - and writes the file through
 * the segment writer, atomically.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/api_internal.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/format/segfile.h"
#include "core/format/stage.h"
#include "core/pipeline/plan.h"
#include "core/vector/quantizer.h"

#define BATCH_ROWS 4096u

static const char *const writer_keys[] = {"exclusive", NULL};

struct sf_shard_writer {
  char *root, *shard_id, *path; /* path: the final file's */
  char *done_path;              /* realpath after finish */
  sf_quant *q;
  uint32_t dim, nlist;
  size_t code_size;
  roaring_bitmap_t *declared; /* NULL: derived from the rows */
  roaring_bitmap_t *frags;    /* what the shard covers, set by finish */
  int exclusive, finished, failed;
  uint64_t n, cap, bytes;
  sf_rowid *ids;
  uint32_t *lists;
  uint8_t *codes;
  float *prepared; /* BATCH_ROWS * dim */
};

void sf_shard_writer_free(sf_shard_writer *w) {
  if (!w) return;
  free(w->root);
  free(w->shard_id);
  free(w->path);
  free(w->done_path);
  sf_quant_free(w->q);
  sf_fragset_free(w->declared);
  sf_fragset_free(w->frags);
  free(w->ids);
  free(w->lists);
  free(w->codes);
  free(w->prepared);
  free(w);
}

static int exists_already(const sf_shard_writer *w, sf_error *err) {
  struct stat st;
  if (!lstat(w->path, &st))
    return sf_api_fail(err, SF_STATUS_EXISTS,
                       "shard '%s' is staged already (%s); choose another shard id, or "
                       "replace it on purpose with option exclusive=0",
                       w->shard_id, w->path);
  if (errno != ENOENT) {
    sf_err e = {0};
    sf_err_errno(&e, SF_EIO, errno, "cannot stat %s", w->path);
    return sf_api_from_err(err, &e);
  }
  return SF_STATUS_OK;
}

int sf_shard_writer_open(const char *staging_root, const char *shard_id,
                         const char *fragments, const sf_options *opts,
                         sf_shard_writer **out, sf_error *err) {
  sf_err e = {0};
  int rc;
  if (!out)
    return sf_api_fail(err, SF_STATUS_INVALID, "sf_shard_writer_open: out is NULL");
  *out = NULL;
  if (!staging_root || !*staging_root)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "the staging root is missing; give the directory sf_train wrote "
                       "the quantizer to");
  if (sf_stage_check_id("shard id", shard_id, &e)) return sf_api_from_err(err, &e);
  if ((rc = sf_api_opts_check(opts, "sf_shard_writer_open", writer_keys, err))) return rc;
  sf_shard_writer *w = calloc(1, sizeof *w);
  if (!w) return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  if ((rc = sf_api_opt_bool(opts, "exclusive", 1, &w->exclusive, err))) goto fail;
  char *qpath = sf_fs_join(staging_root, SF_PLAN_QUANTIZER_NAME);
  char name[160];
  int len = snprintf(name, sizeof name, "%s%s", shard_id, SF_SHARD_EXT);
  w->root = strdup(staging_root);
  w->shard_id = strdup(shard_id);
  w->path = len > 0 && (size_t)len < sizeof name ? sf_fs_join(staging_root, name) : NULL;
  if (!qpath || !w->root || !w->shard_id || !w->path) {
    free(qpath);
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    goto fail;
  }
  if (fragments && sf_fragset_parse(fragments, "fragments", &w->declared, &e)) {
    free(qpath);
    rc = sf_api_from_err(err, &e);
    goto fail;
  }
  if (sf_quant_load(qpath, &w->q, &e)) {
    if (e.code == SF_ENOTFOUND)
      sf_err_prefix(&e, "no quantizer in staging root %s (train one with sf_train)",
                    staging_root);
    free(qpath);
    rc = sf_api_from_err(err, &e);
    goto fail;
  }
  free(qpath);
  w->dim = sf_quant_dim(w->q);
  w->nlist = sf_quant_nlist(w->q);
  w->code_size = sf_quant_code_size(w->q);
  if (!(w->prepared = malloc((size_t)BATCH_ROWS * w->dim * sizeof(float)))) {
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    goto fail;
  }
  if (w->exclusive && (rc = exists_already(w, err))) goto fail;
  *out = w;
  return SF_STATUS_OK;
fail:
  sf_shard_writer_free(w);
  return rc;
}

static int grow(sf_shard_writer *w, uint64_t more, sf_error *err) {
  if (w->n + more <= w->cap) return SF_STATUS_OK;
  uint64_t cap = w->cap ? w->cap : 1024;
  while (cap < w->n + more) cap *= 2;
  if (cap > SIZE_MAX / (w->code_size + sizeof(sf_rowid)))
    return sf_api_fail(err, SF_STATUS_LIMIT, "%llu rows do not fit in memory",
                       (unsigned long long)cap);
  sf_rowid *ids = realloc(w->ids, cap * sizeof *ids);
  if (ids) w->ids = ids;
  uint32_t *lists = ids ? realloc(w->lists, cap * sizeof *lists) : NULL;
  if (lists) w->lists = lists;
  uint8_t *codes = lists ? realloc(w->codes, cap * w->code_size) : NULL;
  if (!codes)
    return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory for %llu rows of codes",
                       (unsigned long long)cap);
  w->codes = codes;
  w->cap = cap;
  return SF_STATUS_OK;
}

static int check_state(const sf_shard_writer *w, const char *fn, sf_error *err) {
  if (!w) return sf_api_fail(err, SF_STATUS_INVALID, "%s: the writer is NULL", fn);
  if (w->finished || w->failed)
    return sf_api_fail(err, SF_STATUS_INVALID, "%s: shard '%s' is %s; open a new writer",
                       fn, w->shard_id, w->finished ? "finished already" : "failed");
  return SF_STATUS_OK;
}

int sf_shard_writer_add(sf_shard_writer *w, const float *vectors, const uint64_t *row_ids,
                        uint64_t n, uint32_t dim, sf_error *err) {
  int rc;
  if ((rc = check_state(w, "sf_shard_writer_add", err))) return rc;
  if (n == 0) return SF_STATUS_OK;
  if (!vectors || !row_ids)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_shard_writer_add: vectors and row ids are required");
  if (dim != w->dim)
    return sf_api_fail(
        err, SF_STATUS_MISMATCH,
        "the vectors have dimension %u but the quantizer of %s was trained "
        "for %u; add vectors of the column the quantizer was trained on",
        dim, w->root, w->dim);
  for (uint64_t i = 0; i < n; i++) {
    const float *x = vectors + i * dim;
    for (uint32_t j = 0; j < dim; j++)
      if (!isfinite(x[j]))
        return sf_api_fail(
            err, SF_STATUS_INVALID,
            "row %llu (row id %llu) has a NaN or infinite value at element "
            "%u; nothing of this call was added",
            (unsigned long long)i, (unsigned long long)row_ids[i], j);
    if (w->declared && !roaring_bitmap_contains(w->declared, SF_ROWID_FRAG(row_ids[i]))) {
      char *frags = sf_fragset_format_short(w->declared, 8);
      rc = sf_api_fail(err, SF_STATUS_INVALID,
                       "row %llu has row id %llu (fragment %u, offset %u), outside the "
                       "fragments %s that shard '%s' declares; a row id is fragment << "
                       "32 | offset. Nothing of this call was added",
                       (unsigned long long)i, (unsigned long long)row_ids[i],
                       SF_ROWID_FRAG(row_ids[i]), SF_ROWID_OFF(row_ids[i]),
                       frags ? frags : "?", w->shard_id);
      free(frags);
      return rc;
    }
  }
  if ((rc = grow(w, n, err))) return rc;
  sf_err e = {0};
  for (uint64_t at = 0; at < n; at += BATCH_ROWS) {
    size_t m = n - at < BATCH_ROWS ? (size_t)(n - at) : BATCH_ROWS;
    for (size_t j = 0; j < m; j++)
      sf_quant_prepare(w->q, vectors + (at + j) * dim, w->prepared + j * dim);
    uint64_t base = w->n + at;
    sf_quant_assign_batch(w->q, w->prepared, m, w->lists + base);
    if (sf_quant_encode_batch(w->q, w->prepared, m, w->lists + base,
                              w->codes + base * w->code_size, &e))
      return sf_api_from_err(err, &e);
  }
  memcpy(w->ids + w->n, row_ids, n * sizeof *row_ids);
  w->n += n;
  return SF_STATUS_OK;
}

typedef struct {
  sf_rowid id;
  uint64_t at;
} idpos;

static int by_id(const void *a, const void *b) {
  sf_rowid x = ((const idpos *)a)->id, y = ((const idpos *)b)->id;
  return x < y ? -1 : x > y;
}

/* The rows in (partition, row id) order into order[n]; refuses a duplicated
 * row id. Sets w->frags. */
static int order_rows(sf_shard_writer *w, uint64_t *order, uint64_t *count,
                      sf_error *err) {
  idpos *s = malloc((w->n ? w->n : 1) * sizeof *s);
  uint64_t *fill = calloc(w->nlist, sizeof *fill);
  int rc = SF_STATUS_OK;
  if (!s || !fill) {
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    goto out;
  }
  for (uint64_t i = 0; i < w->n; i++) s[i] = (idpos){w->ids[i], i};
  qsort(s, w->n, sizeof *s, by_id);
  w->frags = w->declared ? roaring_bitmap_copy(w->declared) : roaring_bitmap_create();
  if (!w->frags) {
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    goto out;
  }
  for (uint64_t i = 0; i < w->n; i++) {
    if (i && s[i].id == s[i - 1].id) {
      rc = sf_api_fail(err, SF_STATUS_INVALID,
                       "row id %llu (fragment %u, offset %u) was added twice to shard "
                       "'%s' (rows %llu and %llu of the writer); a row id names one row",
                       (unsigned long long)s[i].id, SF_ROWID_FRAG(s[i].id),
                       SF_ROWID_OFF(s[i].id), w->shard_id,
                       (unsigned long long)s[i - 1].at, (unsigned long long)s[i].at);
      goto out;
    }
    if (!w->declared) roaring_bitmap_add(w->frags, SF_ROWID_FRAG(s[i].id));
    count[w->lists[s[i].at]]++;
  }
  if (roaring_bitmap_is_empty(w->frags)) {
    rc = sf_api_fail(err, SF_STATUS_INVALID,
                     "shard '%s' has no rows and declares no fragments; add rows, or "
                     "declare the fragments it covers when it is empty",
                     w->shard_id);
    goto out;
  }
  for (uint32_t p = 1; p < w->nlist; p++) fill[p] = fill[p - 1] + count[p - 1];
  for (uint64_t i = 0; i < w->n; i++) order[fill[w->lists[s[i].at]]++] = s[i].at;
out:
  free(s);
  free(fill);
  return rc;
}

static int write_file(sf_shard_writer *w, const uint64_t *order, const uint64_t *count,
                      sf_error *err) {
  uint64_t max = 0;
  for (uint32_t p = 0; p < w->nlist; p++)
    if (count[p] > max) max = count[p];
  sf_rowid *ids = malloc((max ? max : 1) * sizeof *ids);
  uint8_t *codes = malloc((max ? max : 1) * w->code_size);
  sf_seg_writer *sw = NULL;
  sf_err e = {0};
  int rc = SF_STATUS_OK;
  if (!ids || !codes) {
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    goto out;
  }
  const sf_quant *q = w->q;
  sf_seg_params sp = {.kind = SF_SEG_KIND_SHARD,
                      .type = sf_quant_type(q),
                      .metric = sf_quant_metric(q),
                      .dim = w->dim,
                      .nlist = w->nlist,
                      .code_size = (uint32_t)w->code_size,
                      .pq_m = sf_quant_pq_m(q),
                      .quantizer_checksum = sf_quant_checksum(q)};
  if (sf_seg_writer_open(w->path, &sp, &sw, &e)) goto fail;
  uint64_t at = 0;
  for (uint32_t p = 0; p < w->nlist; p++) {
    for (uint64_t i = 0; i < count[p]; i++) {
      uint64_t r = order[at + i];
      ids[i] = w->ids[r];
      memcpy(codes + i * w->code_size, w->codes + r * w->code_size, w->code_size);
    }
    /* Chunks hold at most SF_SEG_MAX_CHUNK_ROWS rows; the writer splits. */
    for (uint64_t i = 0; i < count[p]; i += UINT32_MAX) {
      uint64_t m = count[p] - i < UINT32_MAX ? count[p] - i : UINT32_MAX;
      if (sf_seg_writer_add_chunk(sw, p, ids + i, codes + i * w->code_size, (uint32_t)m,
                                  &e))
        goto fail;
    }
    at += count[p];
  }
  sf_seg_writer *fin = sw;
  sw = NULL;
  if (w->exclusive ? sf_seg_writer_finish_new(fin, w->frags, &e)
                   : sf_seg_writer_finish(fin, w->frags, &e)) {
    if (e.code == SF_EEXIST)
      sf_err_set(&e, SF_EEXIST,
                 "shard '%s' was staged at %s by another writer meanwhile; this one was "
                 "not kept",
                 w->shard_id, w->path);
    goto fail;
  }
  goto out;
fail:
  rc = sf_api_from_err(err, &e);
out:
  sf_seg_writer_abort(sw);
  free(ids);
  free(codes);
  return rc;
}

int sf_shard_writer_finish(sf_shard_writer *w, sf_error *err) {
  int rc;
  if ((rc = check_state(w, "sf_shard_writer_finish", err))) return rc;
  uint64_t *order = malloc((w->n ? w->n : 1) * sizeof *order);
  uint64_t *count = calloc(w->nlist, sizeof *count);
  if (!order || !count)
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  else if (!(rc = w->exclusive ? exists_already(w, err) : SF_STATUS_OK) &&
           !(rc = order_rows(w, order, count, err)))
    rc = write_file(w, order, count, err);
  free(order);
  free(count);
  if (rc) {
    w->failed = 1;
    return rc;
  }
  struct stat st;
  w->bytes = stat(w->path, &st) ? 0 : (uint64_t)st.st_size;
  w->done_path = realpath(w->path, NULL);
  if (!w->done_path) w->done_path = strdup(w->path);
  w->finished = 1;
  /* The codes are on disk: the memory goes back now, not at free. */
  free(w->codes);
  free(w->lists);
  w->codes = NULL;
  w->lists = NULL;
  return SF_STATUS_OK;
}

uint64_t sf_shard_writer_rows(const sf_shard_writer *w) {
  return w ? w->n : 0;
}

uint32_t sf_shard_writer_dim(const sf_shard_writer *w) {
  return w ? w->dim : 0;
}

const char *sf_shard_writer_path(const sf_shard_writer *w) {
  return w && w->finished ? w->done_path : NULL;
}

uint64_t sf_shard_writer_bytes(const sf_shard_writer *w) {
  return w && w->finished ? w->bytes : 0;
}

char *sf_shard_writer_fragments(const sf_shard_writer *w) {
  const roaring_bitmap_t *b = w ? (w->frags ? w->frags : w->declared) : NULL;
  return b ? sf_fragset_format(b) : NULL;
}
