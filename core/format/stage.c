/* stage.c - see stage.h. */
#include "core/format/stage.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/format/segfile.h"
#include "core/vector/vecio.h"

#define BATCH_ROWS 4096u

sf_code sf_stage_check_id(const char *what, const char *id, sf_err *err) {
  size_t n = id ? strlen(id) : 0;
  if (n == 0 || n > 128 || id[0] == '.')
    return sf_err_set(err, SF_EINVAL,
                      "%s '%s' must be 1 to 128 characters and not start with '.'", what,
                      id ? id : "");
  for (size_t i = 0; i < n; i++) {
    char c = id[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '_' || c == '-'))
      return sf_err_set(
          err, SF_EINVAL,
          "%s '%s' has the character '%c'; use only letters, digits, '.', '_' "
          "and '-'",
          what, id, c);
  }
  return SF_OK;
}

/* One fragment's row range in the input. */
typedef struct {
  uint32_t frag;
  uint64_t first, count;
} span;

typedef struct {
  const sf_stage_opts *o;
  const sf_quant *q;
  sf_vecreader *r;
  span *spans;
  size_t nspans;
  uint64_t rows;
  uint32_t dim;
  float *batch; /* BATCH_ROWS * dim */
} stage_ctx;

/* Calls fn(ctx, arg, row index in shard order, row id, prepared rows, n) for
 * every batch of the shard's rows, in ascending row-id order. */
typedef sf_code (*batch_fn)(stage_ctx *c, void *arg, uint64_t at, const span *s,
                            uint64_t off, float *x, size_t n, sf_err *err);

static sf_code for_each_batch(stage_ctx *c, batch_fn fn, void *arg, sf_err *err) {
  uint64_t at = 0;
  for (size_t i = 0; i < c->nspans; i++) {
    const span *s = &c->spans[i];
    sf_code rc = sf_vecreader_seek(c->r, s->first, err);
    if (rc) return rc;
    for (uint64_t off = 0; off < s->count;) {
      size_t want = s->count - off < BATCH_ROWS ? (size_t)(s->count - off) : BATCH_ROWS,
             got;
      rc = sf_vecreader_read_f32(c->r, c->batch, want, &got, err);
      if (rc) return rc;
      if (got != want)
        return sf_err_set(err, SF_EIO, "%s: short read in fragment %u", c->o->vectors,
                          s->frag);
      for (size_t j = 0; j < got; j++)
        sf_quant_prepare(c->q, c->batch + j * c->dim, c->batch + j * c->dim);
      rc = fn(c, arg, at, s, off, c->batch, got, err);
      if (rc) return rc;
      at += got;
      off += got;
    }
  }
  return SF_OK;
}

static sf_code assign_batch(stage_ctx *c, void *arg, uint64_t at, const span *s,
                            uint64_t off, float *x, size_t n, sf_err *err) {
  (void)s, (void)off, (void)err;
  sf_quant_assign_batch(c->q, x, n, (uint32_t *)arg + at);
  return SF_OK;
}

/* The partitions [p0, p1) of one pass and where each row of theirs goes. */
typedef struct {
  const uint32_t *lists;
  uint32_t p0, p1;
  uint64_t *fill; /* next slot per partition in the group, relative to p0 */
  sf_rowid *ids;
  uint8_t *codes;
  size_t code_size;
  uint64_t done;
} pass_state;

static sf_code encode_batch(stage_ctx *c, void *arg, uint64_t at, const span *s,
                            uint64_t off, float *x, size_t n, sf_err *err) {
  (void)err;
  pass_state *p = arg;
  for (size_t j = 0; j < n; j++) {
    uint32_t l = p->lists[at + j];
    if (l < p->p0 || l >= p->p1) continue;
    uint64_t slot = p->fill[l - p->p0]++;
    p->ids[slot] = SF_ROWID(s->frag, off + j);
    sf_quant_encode(c->q, x + j * c->dim, l, p->codes + slot * p->code_size);
    p->done++;
  }
  if (c->o->progress) c->o->progress(c->o->progress_arg, p->done, c->rows);
  return SF_OK;
}

/* Fills c->spans from the fragment set; every fragment must start inside
 * the file. */
static sf_code plan_spans(stage_ctx *c, sf_err *err) {
  uint64_t total = sf_vecreader_rows(c->r), R = c->o->rows_per_fragment;
  uint64_t n = roaring_bitmap_get_cardinality(c->o->fragments);
  c->spans = calloc(n ? n : 1, sizeof *c->spans);
  if (!c->spans) return sf_err_set(err, SF_ENOMEM, "out of memory");
  roaring_uint32_iterator_t *it = roaring_create_iterator(c->o->fragments);
  if (!it) return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (; it->has_value; roaring_advance_uint32_iterator(it)) {
    uint64_t first = (uint64_t)it->current_value * R;
    if (first >= total) {
      uint32_t f = it->current_value;
      roaring_free_uint32_iterator(it);
      return sf_err_set(
          err, SF_EINVAL,
          "fragment %u starts at row %llu but %s has %llu rows (%llu "
          "fragments of %llu rows); check --fragments and --rows-per-fragment",
          f, (unsigned long long)first, c->o->vectors, (unsigned long long)total,
          (unsigned long long)((total + R - 1) / R), (unsigned long long)R);
    }
    span *s = &c->spans[c->nspans++];
    s->frag = it->current_value;
    s->first = first;
    s->count = total - first < R ? total - first : R;
    c->rows += s->count;
  }
  roaring_free_uint32_iterator(it);
  return SF_OK;
}

static sf_code write_shard(stage_ctx *c, const uint32_t *lists, sf_stage_result *res,
                           sf_err *err) {
  const sf_quant *q = c->q;
  uint32_t nlist = sf_quant_nlist(q);
  size_t cs = sf_quant_code_size(q);
  size_t budget = c->o->memory_budget ? c->o->memory_budget : (size_t)256 << 20;
  uint64_t *count = calloc(nlist, sizeof *count), *fill = calloc(nlist, sizeof *fill);
  char *name = malloc(strlen(c->o->shard_id) + sizeof SF_SHARD_EXT);
  char *path = NULL;
  sf_seg_writer *w = NULL;
  sf_rowid *ids = NULL;
  uint8_t *codes = NULL;
  sf_code rc = SF_OK;
  if (!count || !fill || !name) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  strcpy(name, c->o->shard_id);
  strcat(name, SF_SHARD_EXT);
  if (!(path = sf_fs_join(c->o->staging_root, name))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  for (uint64_t i = 0; i < c->rows; i++) count[lists[i]]++;
  /* The largest single partition sets the floor of the pass buffers. */
  uint64_t max_part = 0;
  for (uint32_t p = 0; p < nlist; p++)
    if (count[p] > max_part) max_part = count[p];
  uint64_t cap_rows = budget / (cs + sizeof(sf_rowid));
  if (cap_rows < max_part) cap_rows = max_part;
  if (cap_rows > c->rows) cap_rows = c->rows;
  ids = malloc((cap_rows ? cap_rows : 1) * sizeof *ids);
  codes = malloc((cap_rows ? cap_rows : 1) * cs);
  if (!ids || !codes) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory for %llu rows of codes",
                    (unsigned long long)cap_rows);
    goto out;
  }
  sf_seg_params sp = {.kind = SF_SEG_KIND_SHARD,
                      .type = sf_quant_type(q),
                      .metric = sf_quant_metric(q),
                      .dim = sf_quant_dim(q),
                      .nlist = nlist,
                      .code_size = (uint32_t)cs,
                      .pq_m = sf_quant_pq_m(q),
                      .quantizer_checksum = sf_quant_checksum(q)};
  if ((rc = sf_seg_writer_open(path, &sp, &w, err))) goto out;
  pass_state ps = {
      .lists = lists, .fill = fill, .ids = ids, .codes = codes, .code_size = cs};
  for (uint32_t p0 = 0; p0 < nlist;) {
    uint64_t rows = 0;
    uint32_t p1 = p0;
    while (p1 < nlist && rows + count[p1] <= cap_rows) rows += count[p1++];
    ps.p0 = p0;
    ps.p1 = p1;
    uint64_t start = 0;
    for (uint32_t p = p0; p < p1; p++) {
      fill[p - p0] = start;
      start += count[p];
    }
    if (rows) {
      if ((rc = for_each_batch(c, encode_batch, &ps, err))) goto out;
      res->passes++;
    }
    start = 0;
    for (uint32_t p = p0; p < p1; p++) {
      rc = sf_seg_writer_add_chunk(w, p, ids + start, codes + start * cs,
                                   (uint32_t)count[p], err);
      if (rc) goto out;
      start += count[p];
    }
    p0 = p1;
  }
  sf_seg_writer *fin = w;
  w = NULL;
  /* Exclusive: a shard of the same id staged meanwhile (a second worker
   * given the same id) wins, and this one fails. */
  rc = c->o->exclusive ? sf_seg_writer_finish_new(fin, c->o->fragments, err)
                       : sf_seg_writer_finish(fin, c->o->fragments, err);
  if (rc == SF_EEXIST)
    rc = sf_err_set(err, SF_EEXIST,
                    "shard '%s' was staged at %s by another writer meanwhile; this one "
                    "was not kept",
                    c->o->shard_id, path);
  if (rc) goto out;
  struct stat st;
  res->bytes = stat(path, &st) ? 0 : (uint64_t)st.st_size;
  res->rows = c->rows;
  res->path = path;
  path = NULL;
out:
  sf_seg_writer_abort(w);
  free(count);
  free(fill);
  free(name);
  free(path);
  free(ids);
  free(codes);
  return rc;
}

/* A shard id names one shard of a build: staging it again would silently
 * change what may have been announced already. Checked before any row is
 * read, so the refusal is immediate. */
static sf_code check_new(const sf_stage_opts *o, sf_err *err) {
  char *name = malloc(strlen(o->shard_id) + sizeof SF_SHARD_EXT);
  if (name) sprintf(name, "%s%s", o->shard_id, SF_SHARD_EXT);
  char *path = name ? sf_fs_join(o->staging_root, name) : NULL;
  free(name);
  if (!path) return sf_err_set(err, SF_ENOMEM, "out of memory");
  struct stat st;
  sf_code rc = SF_OK;
  if (!lstat(path, &st))
    rc = sf_err_set(err, SF_EEXIST,
                    "shard '%s' is staged already (%s); choose another shard id, or "
                    "replace it on purpose (segforge stage --force)",
                    o->shard_id, path);
  else if (errno != ENOENT)
    rc = sf_err_errno(err, SF_EIO, errno, "cannot stat %s", path);
  free(path);
  return rc;
}

sf_code sf_stage_shard(const sf_stage_opts *o, const sf_quant *q, sf_stage_result *res,
                       sf_err *err) {
  memset(res, 0, sizeof *res);
  sf_code rc = sf_stage_check_id("shard id", o->shard_id, err);
  if (rc) return rc;
  if (!o->fragments || roaring_bitmap_is_empty(o->fragments))
    return sf_err_set(err, SF_EINVAL, "a shard needs at least one fragment");
  if (o->rows_per_fragment == 0)
    return sf_err_set(err, SF_EINVAL, "rows per fragment must be at least 1");
  if (o->exclusive && (rc = check_new(o, err))) return rc;
  stage_ctx c = {.o = o, .q = q};
  uint32_t *lists = NULL;
  if ((rc = sf_vecreader_open(o->vectors, &c.r, err))) return rc;
  c.dim = sf_vecreader_dim(c.r);
  if (c.dim != sf_quant_dim(q)) {
    rc = sf_err_set(err, SF_EMISMATCH,
                    "%s has dimension %u but the quantizer was trained for %u; stage the "
                    "vectors the quantizer was trained on",
                    o->vectors, c.dim, sf_quant_dim(q));
    goto out;
  }
  if ((rc = plan_spans(&c, err))) goto out;
  c.batch = malloc((size_t)BATCH_ROWS * c.dim * sizeof(float));
  lists = malloc((c.rows ? c.rows : 1) * sizeof *lists);
  if (!c.batch || !lists) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory for %llu rows",
                    (unsigned long long)c.rows);
    goto out;
  }
  if ((rc = for_each_batch(&c, assign_batch, lists, err))) goto out;
  rc = write_shard(&c, lists, res, err);
out:
  sf_vecreader_free(c.r);
  free(c.spans);
  free(c.batch);
  free(lists);
  return rc;
}
