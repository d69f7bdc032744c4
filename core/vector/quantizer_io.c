/*
 * quantizer_io.c - the quantizer file (documented byte for byte in
 * docs/quantizer-format.md) and its JSON description.
 *
 *   0   8  magic "SFQUANT1"
 *   8   4  version (1)          12  4  header bytes (64)
 *   16  4  index type           20  4  metric
 *   24  4  dim                  28  4  nlist
 *   32  4  pq_m (0 unless PQ)   36  4  k-means iterations (informational)
 *   40  8  seed (informational) 48  8  training rows (informational)
 *   56  8  payload bytes
 *   64  payload: centroids nlist*dim f32; IVF_SQ: vmin[dim], vdiff[dim];
 *       IVF_PQ: pq_m codebooks of 256 x dim/pq_m f32
 *   end 8  XXH3-64 of every byte before it
 * All integers and floats little-endian. The trailer hash covers the header
 * too, so the checksum names the parameters as well as the numbers.
 *
 * The reader trusts nothing: it checks the magic and version, every count
 * against the limits in types.h, that the payload size follows from the
 * parameters, that the buffer is exactly that long, and the hash, all before
 * allocating; then that every number is finite.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/base/fsutil.h"
#include "core/vector/quantizer_internal.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "quantizer_io.c and IVF_FLAT codes assume a little-endian host"
#endif

#define MAGIC SF_QUANT_MAGIC
#define VERSION 1u
#define HEADER_BYTES 64u
#define TRAILER_BYTES 8u

static void put32(uint8_t *p, uint32_t v) {
  memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v) {
  memcpy(p, &v, 8);
}
static uint32_t get32(const uint8_t *p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* Payload floats for valid params: at most 2^36 + 2^17, no overflow. */
static uint64_t payload_floats(const sf_quant_params *p) {
  uint64_t f = (uint64_t)p->nlist * p->dim;
  if (p->type == SF_IVF_SQ) f += 2ull * p->dim;
  if (p->type == SF_IVF_PQ) f += (uint64_t)SF_QUANT_PQ_KSUB * p->dim;
  return f;
}

uint64_t sf_quant_file_size(const sf_quant_params *p) {
  return HEADER_BYTES + 4 * payload_floats(p) + TRAILER_BYTES;
}

sf_code sf_quant_serialize(const sf_quant *q, uint8_t **buf, size_t *len, sf_err *err) {
  const sf_quant_params *p = &q->p;
  const uint64_t size = sf_quant_file_size(p);
  uint8_t *b = malloc(size);
  if (!b) return sf_err_set(err, SF_ENOMEM, "out of memory serializing a quantizer");
  memset(b, 0, HEADER_BYTES);
  memcpy(b, MAGIC, 8);
  put32(b + 8, VERSION);
  put32(b + 12, HEADER_BYTES);
  put32(b + 16, (uint32_t)p->type);
  put32(b + 20, (uint32_t)p->metric);
  put32(b + 24, p->dim);
  put32(b + 28, p->nlist);
  put32(b + 32, p->pq_m);
  put32(b + 36, p->kmeans_iters);
  put64(b + 40, p->seed);
  put64(b + 48, q->train_rows);
  put64(b + 56, 4 * payload_floats(p));
  uint8_t *w = b + HEADER_BYTES;
  size_t nc = (size_t)p->nlist * p->dim;
  memcpy(w, q->centroids, 4 * nc);
  w += 4 * nc;
  if (p->type == SF_IVF_SQ) {
    memcpy(w, q->sq_vmin, 4ull * p->dim);
    memcpy(w + 4ull * p->dim, q->sq_vdiff, 4ull * p->dim);
    w += 8ull * p->dim;
  } else if (p->type == SF_IVF_PQ) {
    memcpy(w, q->pq_cb, 4ull * SF_QUANT_PQ_KSUB * p->dim);
    w += 4ull * SF_QUANT_PQ_KSUB * p->dim;
  }
  put64(w, XXH3_64bits(b, size - TRAILER_BYTES));
  *buf = b;
  *len = size;
  return SF_OK;
}

sf_code sf_quant_save(const sf_quant *q, const char *path, sf_err *err) {
  uint8_t *b = NULL; /* set on success; -O3 cannot tell */
  size_t len = 0;
  sf_code rc = sf_quant_serialize(q, &b, &len, err);
  if (rc) return rc;
  rc = sf_fs_write_atomic(path, b, len, err);
  free(b);
  return rc;
}

/* Validates everything but the float values: the header, the size the
 * parameters imply, and the hash. Fills p, *train_rows and *sum. */
static sf_code check_bytes(const uint8_t *b, size_t len, const char *name,
                           sf_quant_params *p, uint64_t *train_rows, uint64_t *sum,
                           sf_err *err) {
  if (len < 8 || memcmp(b, MAGIC, 8))
    return sf_err_set(err, SF_EFORMAT,
                      "%s: not a segforge quantizer file (no \"%s\" magic)", name, MAGIC);
  if (len < HEADER_BYTES + TRAILER_BYTES)
    return sf_err_set(
        err, SF_ECORRUPT,
        "%s: truncated quantizer file: %zu bytes, the header alone needs %u", name, len,
        HEADER_BYTES + TRAILER_BYTES);
  uint32_t version = get32(b + 8);
  if (version != VERSION)
    return sf_err_set(
        err, SF_EFORMAT,
        "%s: quantizer format version %u is not supported (this build reads %u)", name,
        version, VERSION);
  if (get32(b + 12) != HEADER_BYTES)
    return sf_err_set(err, SF_ECORRUPT, "%s: header size field is %u, expected %u", name,
                      get32(b + 12), HEADER_BYTES);
  uint32_t type = get32(b + 16), metric = get32(b + 20);
  memset(p, 0, sizeof *p);
  p->dim = get32(b + 24);
  p->nlist = get32(b + 28);
  p->pq_m = get32(b + 32);
  p->kmeans_iters = get32(b + 36);
  p->seed = get64(b + 40);
  *train_rows = get64(b + 48);
  if (type > SF_IVF_PQ)
    return sf_err_set(err, SF_ECORRUPT, "%s: unknown index type %u in header", name,
                      type);
  if (metric > SF_DOT)
    return sf_err_set(err, SF_ECORRUPT, "%s: unknown metric %u in header", name, metric);
  p->type = (sf_index_type)type;
  p->metric = (sf_metric)metric;
  if (p->dim == 0 || p->dim > SF_MAX_DIM)
    return sf_err_set(err, SF_ECORRUPT, "%s: dim %u in header is outside 1..%u", name,
                      p->dim, SF_MAX_DIM);
  if (p->nlist == 0 || p->nlist > SF_MAX_NLIST)
    return sf_err_set(err, SF_ECORRUPT, "%s: nlist %u in header is outside 1..%u", name,
                      p->nlist, SF_MAX_NLIST);
  if (p->type == SF_IVF_PQ && (p->pq_m == 0 || p->pq_m > SF_MAX_PQ_M || p->dim % p->pq_m))
    return sf_err_set(err, SF_ECORRUPT,
                      "%s: pq_m %u in header is outside 1..%u or does not divide dim %u",
                      name, p->pq_m, SF_MAX_PQ_M, p->dim);
  if (p->type != SF_IVF_PQ && p->pq_m)
    return sf_err_set(err, SF_ECORRUPT, "%s: pq_m %u in header of a %s quantizer", name,
                      p->pq_m, sf_index_type_name(p->type));
  uint64_t want = 4 * payload_floats(p), have = get64(b + 56);
  if (have != want)
    return sf_err_set(err, SF_ECORRUPT,
                      "%s: header says %" PRIu64
                      " payload bytes, its parameters imply %" PRIu64,
                      name, have, want);
  uint64_t size = sf_quant_file_size(p);
  if ((uint64_t)len != size)
    return sf_err_set(err, SF_ECORRUPT,
                      "%s: file is %zu bytes, its header implies %" PRIu64 " (%s)", name,
                      len, size, (uint64_t)len < size ? "truncated" : "trailing bytes");
  uint64_t stored = get64(b + size - TRAILER_BYTES), actual = XXH3_64bits(b, size - 8);
  if (stored != actual)
    return sf_err_set(err, SF_ECORRUPT,
                      "%s: checksum mismatch: trailer says %016" PRIx64
                      ", content hashes to %016" PRIx64 " (the file is damaged)",
                      name, stored, actual);
  *sum = stored;
  return SF_OK;
}

static int all_finite(const float *v, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(v[i])) return 0;
  return 1;
}

sf_code sf_quant_load_mem(const uint8_t *buf, size_t len, const char *name,
                          sf_quant **out, sf_err *err) {
  *out = NULL;
  if (!name) name = "quantizer";
  sf_quant_params p;
  uint64_t rows = 0, sum = 0; /* set on success; -O3 cannot tell */
  sf_code rc = check_bytes(buf, len, name, &p, &rows, &sum, err);
  if (rc) return rc;
  sf_quant *q = calloc(1, sizeof *q);
  if (!q) return sf_err_set(err, SF_ENOMEM, "%s: out of memory for a quantizer", name);
  q->p = p;
  q->train_rows = rows;
  if ((rc = sf_quant_alloc(q, err))) goto fail;
  const uint8_t *r = buf + HEADER_BYTES;
  size_t nc = (size_t)p.nlist * p.dim;
  memcpy(q->centroids, r, 4 * nc);
  r += 4 * nc;
  int finite = all_finite(q->centroids, nc);
  if (p.type == SF_IVF_SQ) {
    memcpy(q->sq_vmin, r, 4ull * p.dim);
    memcpy(q->sq_vdiff, r + 4ull * p.dim, 4ull * p.dim);
    finite = finite && all_finite(q->sq_vmin, p.dim) && all_finite(q->sq_vdiff, p.dim);
    for (uint32_t j = 0; finite && j < p.dim; j++)
      if (q->sq_vdiff[j] < 0) {
        rc = sf_err_set(err, SF_ECORRUPT, "%s: negative SQ range %g for dimension %u",
                        name, (double)q->sq_vdiff[j], j);
        goto fail;
      }
  } else if (p.type == SF_IVF_PQ) {
    memcpy(q->pq_cb, r, 4ull * SF_QUANT_PQ_KSUB * p.dim);
    finite = finite && all_finite(q->pq_cb, (size_t)SF_QUANT_PQ_KSUB * p.dim);
  }
  if (!finite) {
    rc = sf_err_set(err, SF_ECORRUPT, "%s: the quantizer holds a NaN or infinite number",
                    name);
    goto fail;
  }
  if ((rc = sf_quant_finish(q, err))) goto fail;
  if (q->checksum != sum) { /* serialization is canonical, so this is a bug */
    rc = sf_err_set(err, SF_ECORRUPT, "%s: re-serialized checksum differs", name);
    goto fail;
  }
  *out = q;
  return SF_OK;
fail:
  sf_quant_free(q);
  return rc;
}

sf_code sf_quant_load(const char *path, sf_quant **out, sf_err *err) {
  *out = NULL;
  sf_fs_map m;
  sf_code rc = sf_fs_map_open(path, &m, err);
  if (rc) return rc;
  static const uint8_t empty[1] = {0};
  rc = sf_quant_load_mem(m.data ? m.data : empty, m.size, path, out, err);
  sf_fs_map_close(&m);
  return rc;
}

sf_code sf_quant_checksum_of_file(const char *path, uint64_t *checksum, sf_err *err) {
  sf_fs_map m;
  sf_code rc = sf_fs_map_open(path, &m, err);
  if (rc) return rc;
  static const uint8_t empty[1] = {0};
  sf_quant_params p;
  uint64_t rows;
  rc = check_bytes(m.data ? m.data : empty, m.size, path, &p, &rows, checksum, err);
  sf_fs_map_close(&m);
  return rc;
}

json_t *sf_quant_describe_json(const sf_quant *q) {
  char hex[17];
  snprintf(hex, sizeof hex, "%016" PRIx64, q->checksum);
  json_t *o =
      json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:s, s:I, s:I}", "type",
                sf_index_type_name(q->p.type), "metric", sf_metric_name(q->p.metric),
                "dim", (json_int_t)q->p.dim, "nlist", (json_int_t)q->p.nlist, "pq_m",
                (json_int_t)q->p.pq_m, "code_size", (json_int_t)sf_quant_code_size(q),
                "checksum", hex, "train_rows", (json_int_t)q->train_rows, "kmeans_iters",
                (json_int_t)q->p.kmeans_iters);
  /* JSON integers are signed 64-bit here; a larger seed goes as a string. */
  json_t *seed =
      q->p.seed <= (uint64_t)INT64_MAX ? json_integer((json_int_t)q->p.seed) : NULL;
  if (!seed) {
    char dec[24];
    snprintf(dec, sizeof dec, "%" PRIu64, q->p.seed);
    seed = json_string(dec);
  }
  if (!o || json_object_set_new(o, "seed", seed)) {
    json_decref(o);
    return NULL;
  }
  return o;
}
