/*
 * catalog_codec.c - one catalog version <-> the bytes of its Avro container
 * file (core/catalog/Catalog.avsc, embedded by core/base/embed.cmake).
 *
 * Writing uses avro-c throughout: the record is built as a generic value,
 * encoded once into memory so that its checksum can be filled in, and
 * appended with avro_file_writer_append_encoded (codec null, one block, one
 * record) to a memory stream; the file is then written with write(2), so
 * that a full disk is reported with its errno.
 *
 * Reading does not hand the file to avro_file_reader: that reader allocates
 * whatever block size the file claims before reading it, which is exactly
 * what our readers must never do with outside bytes. Instead the container
 * framing (magic, metadata map, sync marker, one block of one record, the
 * closing sync marker, nothing after) is walked here with every length
 * checked against the bytes that remain, the record's trailing XXH3-64 is
 * verified, the writer schema must equal ours, and only then does avro-c
 * decode the datum from memory (its memory reader is bounded by the block).
 * Before that, sf_avrobin_scan (core/base/avrobin.h) walks the datum with
 * every length bounded, because avro-c allocates whatever a string claims.
 * Every count and string it returns is checked again against our limits,
 * and the decoded version must keep the catalog's invariants
 * (sf_catalog_validate). A torn or bit-flipped file is thus reported as
 * SF_ECORRUPT naming the file and what is wrong, never half-read.
 *
 * Versions are written in format 2 (core/catalog/Catalog.avsc); format 1
 * (core/catalog/Catalog.v1.avsc: every job in `jobs`, no `job_archive`) is still
 * read, so that a dataset written before the job archive opens, and its
 * next commit writes format 2. The framing, checksum and bounded decoding
 * are shared with the job archive's chunk files (catalog_archive.c).
 */
#include <avro.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/base/avrobin.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog_internal.h"

#define CHECKSUM_BYTES 8
#define MAX_META_ENTRIES 64

sf_code sf_catalog_load_schema(const char *file, avro_schema_t *out, sf_err *err) {
  for (size_t i = 0; i < sf_catalog_schema_sources_count; i++) {
    const sf_catalog_schema_source *s = &sf_catalog_schema_sources[i];
    if (strcmp(s->name, file)) continue;
    if (avro_schema_from_json_length((const char *)s->text, s->len, out))
      return sf_err_set(err, SF_EFORMAT, "the embedded %s does not parse: %s", file,
                        avro_strerror());
    return SF_OK;
  }
  return sf_err_set(err, SF_ENOTFOUND, "this build embedded no core/catalog/%s", file);
}

/* ---- encoding ------------------------------------------------------------ */

#define TRY_AVRO(call)       \
  do {                       \
    if ((call)) goto failed; \
  } while (0)

static int put(avro_value_t *rec, const char *name, avro_value_t *f) {
  return avro_value_get_by_name(rec, name, f, NULL);
}

static int put_str(avro_value_t *rec, const char *name, const char *s) {
  avro_value_t f;
  return put(rec, name, &f) || avro_value_set_string(&f, s);
}

static int put_long(avro_value_t *rec, const char *name, uint64_t v) {
  avro_value_t f;
  return put(rec, name, &f) || avro_value_set_long(&f, (int64_t)v);
}

static int put_strings(avro_value_t *rec, const char *name, char *const *s, size_t n) {
  avro_value_t arr, e;
  if (put(rec, name, &arr)) return 1;
  for (size_t i = 0; i < n; i++)
    if (avro_value_append(&arr, &e, NULL) || avro_value_set_string(&e, s[i])) return 1;
  return 0;
}

static sf_code enc_segment(avro_value_t *rec, const sf_catalog_segment *s, sf_err *err) {
  uint8_t *frag = NULL;
  size_t flen;
  sf_code rc = sf_fragset_encode(s->info.fragments, &frag, &flen, err);
  if (rc) return rc;
  avro_value_t f;
  int bad = put_str(rec, "segment_id", s->info.segment_id) ||
            put_str(rec, "path", s->info.path) || put_long(rec, "bytes", s->info.bytes) ||
            put_long(rec, "num_rows", s->info.num_rows) || put(rec, "fragments", &f) ||
            avro_value_set_bytes(&f, frag, flen) ||
            put_strings(rec, "shard_ids", s->info.shard_ids, s->info.num_shards) ||
            put_str(rec, "staging_id", s->staging_id) ||
            put_long(rec, "added_in", s->added_in);
  free(frag);
  return bad ? sf_err_set(err, SF_ENOMEM, "cannot encode segment %s: %s",
                          s->info.segment_id, avro_strerror())
             : SF_OK;
}

static sf_code enc_index(avro_value_t *rec, const sf_catalog_index *ix, sf_err *err) {
  avro_value_t f, arr, e;
  if (put_str(rec, "name", ix->name) || put_str(rec, "column", ix->column) ||
      put(rec, "index_type", &f) || avro_value_set_enum(&f, (int)ix->index_type) ||
      put(rec, "metric", &f) || avro_value_set_enum(&f, (int)ix->metric) ||
      put(rec, "dim", &f) || avro_value_set_int(&f, (int32_t)ix->dim) ||
      put(rec, "nlist", &f) || avro_value_set_int(&f, (int32_t)ix->nlist) ||
      put_long(rec, "quantizer_checksum", ix->quantizer_checksum) ||
      put(rec, "segments", &arr))
    return sf_err_set(err, SF_ENOMEM, "cannot encode index %s: %s", ix->name,
                      avro_strerror());
  for (size_t i = 0; i < ix->nsegs; i++) {
    if (avro_value_append(&arr, &e, NULL))
      return sf_err_set(err, SF_ENOMEM, "cannot encode index %s: %s", ix->name,
                        avro_strerror());
    sf_code rc = enc_segment(&e, &ix->segs[i], err);
    if (rc) return rc;
  }
  return SF_OK;
}

int sf_catalog_put_job(avro_value_t *rec, const sf_catalog_job *j) {
  return put_str(rec, "staging_id", j->staging_id) ||
         put_str(rec, "index_name", j->index_name) ||
         put_long(rec, "version", j->version) ||
         put_long(rec, "committed_at_ms", j->committed_at_ms) ||
         put_strings(rec, "segment_ids", j->segment_ids, j->nsegment_ids);
}

static sf_code enc_record(avro_value_t *v, const void *ctx, sf_err *err) {
  const sf_catalog *c = ctx;
  avro_value_t f, arr, e;
  uint8_t zero[CHECKSUM_BYTES] = {0};
  if (put(v, "format", &f) || avro_value_set_int(&f, SF_CATALOG_FORMAT) ||
      put_long(v, "version", c->version) ||
      put_long(v, "created_at_ms", c->created_at_ms) || put(v, "checksum", &f) ||
      avro_value_set_fixed(&f, zero, sizeof zero) || put(v, "indexes", &arr))
    goto failed;
  for (size_t i = 0; i < c->nix; i++) {
    TRY_AVRO(avro_value_append(&arr, &e, NULL));
    sf_code rc = enc_index(&e, &c->ix[i], err);
    if (rc) return rc;
  }
  TRY_AVRO(put(v, "jobs", &arr));
  for (size_t i = 0; i < c->njobs; i++) {
    TRY_AVRO(avro_value_append(&arr, &e, NULL));
    TRY_AVRO(sf_catalog_put_job(&e, &c->jobs[i]));
  }
  TRY_AVRO(put(v, "job_archive", &arr));
  for (size_t i = 0; i < c->narchive; i++) {
    const sf_catalog_chunk_ref *r = &c->archive[i];
    TRY_AVRO(avro_value_append(&arr, &e, NULL));
    TRY_AVRO(put_str(&e, "name", r->name));
    TRY_AVRO(put_long(&e, "prefix", r->prefix));
    TRY_AVRO(put(&e, "depth", &f) || avro_value_set_int(&f, (int32_t)r->depth));
    TRY_AVRO(put_long(&e, "count", r->count));
  }
  return SF_OK;
failed:
  return sf_err_set(err, SF_ENOMEM, "cannot encode catalog version %llu: %s",
                    (unsigned long long)c->version, avro_strerror());
}

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

sf_code sf_catalog_encode_record(avro_schema_t schema, sf_catalog_fill_fn fill,
                                 const void *ctx, const char *what, uint8_t **out,
                                 size_t *len, sf_err *err) {
  avro_value_iface_t *iface = avro_generic_class_from_schema(schema);
  avro_value_t v;
  if (!iface || avro_generic_value_new(iface, &v)) {
    avro_value_iface_decref(iface);
    return sf_err_set(err, SF_ENOMEM, "cannot create a catalog record: %s",
                      avro_strerror());
  }
  uint8_t *buf = NULL;
  size_t n = 0;
  sf_code rc = fill(&v, ctx, err);
  if (!rc && avro_value_sizeof(&v, &n))
    rc =
        sf_err_set(err, SF_ENOMEM, "cannot size the catalog record: %s", avro_strerror());
  if (!rc && (n < CHECKSUM_BYTES || n > SF_CATALOG_MAX_FILE_BYTES / 2))
    rc = sf_err_set(err, SF_ELIMIT, "%s would take %zu bytes (at most %llu)", what, n,
                    SF_CATALOG_MAX_FILE_BYTES / 2);
  if (!rc && !(buf = malloc(n))) rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  if (!rc) {
    avro_writer_t w = avro_writer_memory((const char *)buf, (int64_t)n);
    if (!w || avro_value_write(w, &v) || avro_writer_tell(w) != (int64_t)n)
      rc = sf_err_set(err, SF_ENOMEM, "cannot encode the catalog record: %s",
                      avro_strerror());
    if (w) avro_writer_free(w);
  }
  avro_value_decref(&v);
  avro_value_iface_decref(iface);
  if (rc) {
    free(buf);
    return rc;
  }
  put_le64(buf + n - CHECKSUM_BYTES, XXH3_64bits(buf, n - CHECKSUM_BYTES));
  *out = buf;
  *len = n;
  return SF_OK;
}

sf_code sf_catalog_frame_container(avro_schema_t schema, const uint8_t *datum, size_t n,
                                   const char *what, uint8_t **out, size_t *len,
                                   sf_err *err) {
  /* avro-c frames the container into memory: its file writer reports no
   * errno of the stream under it, so files are written with write(2),
   * whose errors are reported (sf_catalog_write_fd, the archive's chunks). */
  char *buf = NULL;
  size_t blen = 0;
  *out = NULL;
  *len = 0;
  FILE *mem = open_memstream(&buf, &blen);
  if (!mem) return sf_err_set(err, SF_ENOMEM, "out of memory encoding %s", what);
  sf_code rc = SF_OK;
  avro_file_writer_t fw;
  /* One block holds the one record: the block buffer must fit it. */
  if (avro_file_writer_create_with_codec_fp(mem, what, 0, schema, &fw, "null", n + 64)) {
    rc = sf_err_set(err, SF_ENOMEM, "cannot encode %s: %s", what, avro_strerror());
  } else {
    int bad = avro_file_writer_append_encoded(fw, datum, (int64_t)n);
    bad |= avro_file_writer_close(fw);
    if (bad)
      rc = sf_err_set(err, SF_ENOMEM, "cannot encode %s: %s", what, avro_strerror());
  }
  if (fclose(mem) && !rc)
    rc = sf_err_set(err, SF_ENOMEM, "out of memory encoding %s", what);
  if (rc) {
    free(buf);
    return rc;
  }
  *out = (uint8_t *)buf;
  *len = blen;
  return SF_OK;
}

sf_code sf_catalog_encode(const sf_catalog *c, const char *what, uint8_t **out,
                          size_t *len, sf_err *err) {
  *out = NULL;
  *len = 0;
  sf_code rc = sf_catalog_validate(c, err);
  if (rc) {
    sf_err_prefix(err, "refusing to write catalog %s", what);
    return rc;
  }
  avro_schema_t schema;
  if ((rc = sf_catalog_load_schema(SF_CATALOG_SCHEMA_FILE, &schema, err))) return rc;
  uint8_t *datum = NULL;
  size_t n = 0;
  char name[64];
  snprintf(name, sizeof name, "catalog version %llu", (unsigned long long)c->version);
  rc = sf_catalog_encode_record(schema, enc_record, c, name, &datum, &n, err);
  uint8_t *buf = NULL;
  size_t blen = 0;
  if (!rc) rc = sf_catalog_frame_container(schema, datum, n, what, &buf, &blen, err);
  free(datum);
  avro_schema_decref(schema);
  if (rc) return rc;
  *out = buf;
  *len = blen;
  return SF_OK;
}

sf_code sf_catalog_write_fd(const sf_catalog *c, int fd, const char *what, sf_err *err) {
  uint8_t *buf;
  size_t n;
  sf_code rc = sf_catalog_encode(c, what, &buf, &n, err);
  if (rc) return rc;
  rc = sf_fs_write_all(fd, buf, n, what, err);
  free(buf);
  return rc;
}

sf_code sf_catalog_write(const sf_catalog *c, FILE *fp, const char *what, sf_err *err) {
  uint8_t *buf;
  size_t n;
  sf_code rc = sf_catalog_encode(c, what, &buf, &n, err);
  if (rc) return rc;
  errno = 0;
  if (fwrite(buf, 1, n, fp) != n || fflush(fp))
    rc = sf_err_errno(err, SF_EIO, errno ? errno : EIO, "cannot write %s", what);
  free(buf);
  return rc;
}

/* ---- container framing -------------------------------------------------- */

typedef struct rd {
  const uint8_t *p, *end;
} rd;

/* An Avro zig-zag varint long; -1 when it runs past the end or is too long. */
static int rd_long(rd *r, int64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
    uint8_t b = *r->p++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
      return 0;
    }
  }
  return -1;
}

/* A length-prefixed byte string, left in place. */
static int rd_bytes(rd *r, const uint8_t **s, size_t *n) {
  int64_t len;
  if (rd_long(r, &len) || len < 0 || (uint64_t)len > (uint64_t)(r->end - r->p)) return -1;
  *s = r->p;
  *n = (size_t)len;
  r->p += len;
  return 0;
}

static int is(const uint8_t *s, size_t n, const char *lit) {
  return n == strlen(lit) && !memcmp(s, lit, n);
}

/* Walks the container and returns the record's bytes and the writer schema
 * (both pointing into buf). */
static sf_code parse_container(const uint8_t *buf, size_t len, const char *what,
                               const uint8_t **datum, size_t *dlen,
                               const uint8_t **schema, size_t *slen, sf_err *err) {
  rd r = {buf, buf + len};
  const uint8_t *sync, *k, *v;
  size_t kn, vn, entries = 0;
  int64_t count, bsize;
  if (len < 4 || memcmp(buf, "Obj\x01", 4))
    return sf_err_set(err, SF_EFORMAT, "%s is not an Avro container file (bad magic)",
                      what);
  r.p += 4;
  *schema = NULL;
  for (;;) {
    if (rd_long(&r, &count)) goto truncated;
    if (count == 0) break;
    /* Bounded before negating: -INT64_MIN does not exist. */
    if (count < -MAX_META_ENTRIES || count > MAX_META_ENTRIES ||
        (entries += (size_t)(count < 0 ? -count : count)) > MAX_META_ENTRIES)
      return sf_err_set(err, SF_ECORRUPT, "%s: more than %d metadata entries", what,
                        MAX_META_ENTRIES);
    if (count < 0) { /* a negative count is followed by the block's size */
      count = -count;
      if (rd_long(&r, &bsize) || bsize < 0) goto truncated;
    }
    for (int64_t i = 0; i < count; i++) {
      if (rd_bytes(&r, &k, &kn) || rd_bytes(&r, &v, &vn)) goto truncated;
      if (is(k, kn, "avro.schema")) {
        *schema = v;
        *slen = vn;
      } else if (is(k, kn, "avro.codec") && !is(v, vn, "null")) {
        return sf_err_set(err, SF_EFORMAT, "%s: codec '%.*s' (catalog files use 'null')",
                          what, (int)(vn > 32 ? 32 : vn), (const char *)v);
      }
    }
  }
  if (!*schema)
    return sf_err_set(err, SF_ECORRUPT, "%s: no avro.schema in the header", what);
  if (r.end - r.p < 16) goto truncated;
  sync = r.p;
  r.p += 16;
  if (r.p == r.end)
    return sf_err_set(err, SF_ECORRUPT, "%s holds no record (truncated after the header)",
                      what);
  if (rd_long(&r, &count) || rd_long(&r, &bsize)) goto truncated;
  if (count != 1)
    return sf_err_set(err, SF_ECORRUPT, "%s: a block of %lld records (a version is one)",
                      what, (long long)count);
  if (bsize <= CHECKSUM_BYTES)
    return sf_err_set(err, SF_ECORRUPT, "%s: empty record", what);
  if ((uint64_t)bsize > (uint64_t)(r.end - r.p) || r.end - r.p - bsize < 16)
    goto truncated;
  *datum = r.p;
  *dlen = (size_t)bsize;
  r.p += bsize;
  if (memcmp(r.p, sync, 16))
    return sf_err_set(err, SF_ECORRUPT, "%s: the sync marker after the record is wrong",
                      what);
  r.p += 16;
  if (r.p != r.end)
    return sf_err_set(err, SF_ECORRUPT, "%s: %zu unexpected bytes after the record", what,
                      (size_t)(r.end - r.p));
  return SF_OK;
truncated:
  return sf_err_set(
      err, SF_ECORRUPT,
      "%s is truncated or damaged: a length at byte %zu runs past the end of "
      "the file (%zu bytes)",
      what, (size_t)(r.p - buf), len);
}

/* ---- decoding ------------------------------------------------------------ */

static sf_code get(avro_value_t *rec, const char *name, avro_value_t *f, sf_err *err) {
  if (avro_value_get_by_name(rec, name, f, NULL))
    return sf_err_set(err, SF_ECORRUPT, "%s: field missing", name);
  return SF_OK;
}

/* A string of at most max bytes without NULs, into a malloc'd copy. */
static sf_code dec_str(avro_value_t *f, const char *name, size_t max, char **out,
                       sf_err *err) {
  const char *s;
  size_t n; /* avro-c counts the terminating NUL */
  if (avro_value_get_string(f, &s, &n) || n == 0)
    return sf_err_set(err, SF_ECORRUPT, "%s: not a string", name);
  if (n - 1 > max || memchr(s, '\0', n - 1))
    return sf_err_set(err, SF_ECORRUPT, "%s: a string of %zu bytes (at most %zu, no NUL)",
                      name, n - 1, max);
  if (!(*out = strndup(s, n - 1))) return sf_err_set(err, SF_ENOMEM, "out of memory");
  return SF_OK;
}

static sf_code get_str(avro_value_t *rec, const char *name, size_t max, char **out,
                       sf_err *err) {
  avro_value_t f;
  sf_code rc = get(rec, name, &f, err);
  return rc ? rc : dec_str(&f, name, max, out, err);
}

/* A long in [min, max]. */
static sf_code get_long(avro_value_t *rec, const char *name, int64_t min, int64_t max,
                        int64_t *out, sf_err *err) {
  avro_value_t f;
  sf_code rc = get(rec, name, &f, err);
  if (rc) return rc;
  if (avro_value_get_long(&f, out))
    return sf_err_set(err, SF_ECORRUPT, "%s: not a long", name);
  if (*out < min || *out > max)
    return sf_err_set(err, SF_ECORRUPT, "%s: %lld is outside [%lld, %lld]", name,
                      (long long)*out, (long long)min, (long long)max);
  return SF_OK;
}

static sf_code get_array(avro_value_t *rec, const char *name, size_t max,
                         avro_value_t *arr, size_t *n, sf_err *err) {
  sf_code rc = get(rec, name, arr, err);
  if (rc) return rc;
  if (avro_value_get_size(arr, n))
    return sf_err_set(err, SF_ECORRUPT, "%s: not an array", name);
  if (*n > max)
    return sf_err_set(err, SF_ELIMIT, "%s: %zu entries (at most %zu)", name, *n, max);
  return SF_OK;
}

sf_code sf_catalog_get(avro_value_t *rec, const char *name, avro_value_t *f,
                       sf_err *err) {
  return get(rec, name, f, err);
}

sf_code sf_catalog_get_str(avro_value_t *rec, const char *name, size_t max, char **out,
                           sf_err *err) {
  return get_str(rec, name, max, out, err);
}

sf_code sf_catalog_get_long(avro_value_t *rec, const char *name, int64_t min, int64_t max,
                            int64_t *out, sf_err *err) {
  return get_long(rec, name, min, max, out, err);
}

sf_code sf_catalog_get_array(avro_value_t *rec, const char *name, size_t max,
                             avro_value_t *arr, size_t *n, sf_err *err) {
  return get_array(rec, name, max, arr, n, err);
}

/* An array of ids into a malloc'd array of malloc'd strings; *n is set as
 * soon as the array exists so that a partial result is freed by its owner. */
static sf_code get_ids(avro_value_t *rec, const char *name, size_t max, char ***out,
                       size_t *n, sf_err *err) {
  avro_value_t arr, e;
  size_t count;
  sf_code rc = get_array(rec, name, max, &arr, &count, err);
  if (rc) return rc;
  if (count && !(*out = calloc(count, sizeof **out)))
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  *n = count;
  for (size_t i = 0; i < count && !rc; i++) {
    if (avro_value_get_by_index(&arr, i, &e, NULL))
      return sf_err_set(err, SF_ECORRUPT, "%s[%zu]: missing", name, i);
    rc = dec_str(&e, name, SF_CATALOG_MAX_ID, &(*out)[i], err);
  }
  return rc;
}

static sf_code dec_segment(avro_value_t *rec, const sf_catalog_index *ix,
                           sf_catalog_segment *s, sf_err *err) {
  int64_t bytes, rows, added;
  avro_value_t f;
  const void *frag;
  size_t flen, nshards = 0;
  sf_code rc;
  if ((rc = get_str(rec, "segment_id", SF_CATALOG_MAX_ID, &s->info.segment_id, err)) ||
      (rc = get_str(rec, "path", SF_CATALOG_MAX_TEXT, &s->info.path, err)) ||
      (rc = get_long(rec, "bytes", 0, INT64_MAX, &bytes, err)) ||
      (rc = get_long(rec, "num_rows", 0, INT64_MAX, &rows, err)) ||
      (rc = get_str(rec, "staging_id", SF_CATALOG_MAX_ID, &s->staging_id, err)) ||
      (rc = get_long(rec, "added_in", 1, INT64_MAX, &added, err)) ||
      (rc = get_ids(rec, "shard_ids", SF_CATALOG_MAX_SHARDS, &s->info.shard_ids, &nshards,
                    err)))
    return rc;
  s->info.num_shards = (uint32_t)nshards;
  if ((rc = get(rec, "fragments", &f, err))) return rc;
  if (avro_value_get_bytes(&f, &frag, &flen))
    return sf_err_set(err, SF_ECORRUPT, "fragments: not bytes");
  if ((rc = sf_fragset_decode(frag, flen, "fragments", &s->info.fragments, err)))
    return rc;
  s->info.bytes = (uint64_t)bytes;
  s->info.num_rows = (uint64_t)rows;
  s->added_in = (uint64_t)added;
  s->info.index_type = ix->index_type;
  s->info.metric = ix->metric;
  s->info.dim = ix->dim;
  s->info.nlist = ix->nlist;
  s->info.quantizer_checksum = ix->quantizer_checksum;
  return SF_OK;
}

static sf_code dec_index(avro_value_t *rec, sf_catalog_index *ix, sf_err *err) {
  avro_value_t f, arr, e;
  int type, metric;
  int64_t dim, nlist, cs;
  size_t n;
  sf_code rc;
  if ((rc = get_str(rec, "name", SF_CATALOG_MAX_ID, &ix->name, err)) ||
      (rc = get_str(rec, "column", SF_CATALOG_MAX_TEXT, &ix->column, err)))
    return rc;
  if ((rc = get(rec, "index_type", &f, err))) return rc;
  if (avro_value_get_enum(&f, &type) || type < SF_IVF_FLAT || type > SF_IVF_PQ)
    return sf_err_set(err, SF_ECORRUPT,
                      "index_type: not one of IVF_FLAT, IVF_SQ, IVF_PQ");
  if ((rc = get(rec, "metric", &f, err))) return rc;
  if (avro_value_get_enum(&f, &metric) || metric < SF_L2 || metric > SF_DOT)
    return sf_err_set(err, SF_ECORRUPT, "metric: not one of L2, COSINE, DOT");
  if ((rc = get(rec, "dim", &f, err))) return rc;
  int32_t i32;
  if (avro_value_get_int(&f, &i32))
    return sf_err_set(err, SF_ECORRUPT, "dim: not an int");
  dim = i32;
  if ((rc = get(rec, "nlist", &f, err))) return rc;
  if (avro_value_get_int(&f, &i32))
    return sf_err_set(err, SF_ECORRUPT, "nlist: not an int");
  nlist = i32;
  if (dim < 1 || dim > SF_MAX_DIM || nlist < 1 || nlist > SF_MAX_NLIST)
    return sf_err_set(err, SF_ECORRUPT, "dim %lld or nlist %lld out of range",
                      (long long)dim, (long long)nlist);
  if ((rc = get_long(rec, "quantizer_checksum", INT64_MIN, INT64_MAX, &cs, err)))
    return rc;
  ix->index_type = (sf_index_type)type;
  ix->metric = (sf_metric)metric;
  ix->dim = (uint32_t)dim;
  ix->nlist = (uint32_t)nlist;
  ix->quantizer_checksum = (uint64_t)cs;
  if ((rc = get_array(rec, "segments", SF_CATALOG_MAX_SEGMENTS, &arr, &n, err)))
    return rc;
  if (n && !(ix->segs = calloc(n, sizeof *ix->segs)))
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  ix->nsegs = n;
  for (size_t i = 0; i < n; i++) {
    if (avro_value_get_by_index(&arr, i, &e, NULL))
      return sf_err_set(err, SF_ECORRUPT, "segments[%zu]: missing", i);
    if ((rc = dec_segment(&e, ix, &ix->segs[i], err))) {
      sf_err_prefix(err, "segments[%zu]", i);
      return rc;
    }
  }
  return SF_OK;
}

sf_code sf_catalog_dec_job(avro_value_t *rec, sf_catalog_job *j, sf_err *err) {
  int64_t v, at;
  sf_code rc;
  if ((rc = get_str(rec, "staging_id", SF_CATALOG_MAX_ID, &j->staging_id, err)) ||
      (rc = get_str(rec, "index_name", SF_CATALOG_MAX_ID, &j->index_name, err)) ||
      (rc = get_long(rec, "version", 1, INT64_MAX, &v, err)) ||
      (rc = get_long(rec, "committed_at_ms", 0, INT64_MAX, &at, err)) ||
      (rc = get_ids(rec, "segment_ids", SF_CATALOG_MAX_SEGMENTS, &j->segment_ids,
                    &j->nsegment_ids, err)))
    return rc;
  j->version = (uint64_t)v;
  j->committed_at_ms = (uint64_t)at;
  return SF_OK;
}

static sf_code dec_chunk_ref(avro_value_t *rec, sf_catalog_chunk_ref *r, sf_err *err) {
  avro_value_t f;
  int64_t prefix, count;
  int32_t depth;
  sf_code rc;
  if ((rc = get_str(rec, "name", SF_CATALOG_MAX_ID, &r->name, err)) ||
      (rc = get_long(rec, "prefix", INT64_MIN, INT64_MAX, &prefix, err)) ||
      (rc = get_long(rec, "count", 1, SF_CATALOG_MAX_JOBS, &count, err)) ||
      (rc = get(rec, "depth", &f, err)))
    return rc;
  if (avro_value_get_int(&f, &depth) || depth < 0 || depth > 64)
    return sf_err_set(err, SF_ECORRUPT, "depth: not an int in [0, 64]");
  r->prefix = (uint64_t)prefix;
  r->depth = (uint32_t)depth;
  r->count = (uint64_t)count;
  return SF_OK;
}

/* An array field of n records, each decoded by dec into elems[i] (of size
 * `size`, zeroed): *out and *n are set as soon as the array exists, so
 * that a partial result is freed by its owner. */
static sf_code dec_list(avro_value_t *v, const char *name, size_t max, size_t size,
                        sf_code (*dec)(avro_value_t *, void *, sf_err *), void **out,
                        size_t *n, sf_err *err) {
  avro_value_t arr, e;
  size_t count;
  sf_code rc = get_array(v, name, max, &arr, &count, err);
  if (rc) return rc;
  if (count && !(*out = calloc(count, size)))
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  *n = count;
  for (size_t i = 0; i < count; i++) {
    if (avro_value_get_by_index(&arr, i, &e, NULL))
      return sf_err_set(err, SF_ECORRUPT, "%s[%zu]: missing", name, i);
    if ((rc = dec(&e, (char *)*out + i * size, err))) {
      sf_err_prefix(err, "%s[%zu]", name, i);
      return rc;
    }
  }
  return SF_OK;
}

static sf_code dec_job_any(avro_value_t *rec, void *j, sf_err *err) {
  return sf_catalog_dec_job(rec, j, err);
}

static sf_code dec_chunk_ref_any(avro_value_t *rec, void *r, sf_err *err) {
  return dec_chunk_ref(rec, r, err);
}

/* `format` is the one the writer schema implies; the record must agree. */
static sf_code dec_record(avro_value_t *v, int format, sf_catalog *c, sf_err *err) {
  avro_value_t f, arr, e;
  int32_t got;
  int64_t version, at;
  size_t n;
  sf_code rc;
  if ((rc = get(v, "format", &f, err))) return rc;
  if (avro_value_get_int(&f, &got))
    return sf_err_set(err, SF_ECORRUPT, "format: not an int");
  if (got != format)
    return sf_err_set(err, got > SF_CATALOG_FORMAT ? SF_EFORMAT : SF_ECORRUPT,
                      "catalog format %d in a record of the format %d schema (this "
                      "segforge reads formats %d and %d)",
                      (int)got, format, SF_CATALOG_FORMAT_V1, SF_CATALOG_FORMAT);
  c->format = (uint32_t)format;
  if ((rc = get_long(v, "version", 1, INT64_MAX, &version, err)) ||
      (rc = get_long(v, "created_at_ms", 0, INT64_MAX, &at, err)))
    return rc;
  c->version = (uint64_t)version;
  c->created_at_ms = (uint64_t)at;
  if ((rc = get_array(v, "indexes", SF_CATALOG_MAX_INDEXES, &arr, &n, err))) return rc;
  if (n && !(c->ix = calloc(n, sizeof *c->ix)))
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  c->nix = n;
  for (size_t i = 0; i < n; i++) {
    if (avro_value_get_by_index(&arr, i, &e, NULL) ||
        (rc = dec_index(&e, &c->ix[i], err))) {
      if (!rc) return sf_err_set(err, SF_ECORRUPT, "indexes[%zu]: missing", i);
      sf_err_prefix(err, "indexes[%zu]", i);
      return rc;
    }
  }
  if ((rc = dec_list(v, "jobs", SF_CATALOG_MAX_JOBS, sizeof *c->jobs, dec_job_any,
                     (void **)&c->jobs, &c->njobs, err)))
    return rc;
  if (format == SF_CATALOG_FORMAT_V1) return SF_OK; /* every job is in `jobs` */
  return dec_list(v, "job_archive", SF_CATALOG_MAX_JOBS, sizeof *c->archive,
                  dec_chunk_ref_any, (void **)&c->archive, &c->narchive, err);
}

sf_code sf_catalog_read_record(avro_schema_t mine, const uint8_t *datum, size_t dlen,
                               const uint8_t *wschema, size_t wslen, avro_value_t *v,
                               avro_value_iface_t **iface, sf_err *err) {
  avro_schema_t theirs = NULL;
  *iface = NULL;
  if (avro_schema_from_json_length((const char *)wschema, wslen, &theirs) ||
      !avro_schema_equal(mine, theirs)) {
    if (theirs) avro_schema_decref(theirs);
    return sf_err_set(err, SF_EFORMAT,
                      "written with another schema than this segforge's (a newer "
                      "version of segforge?)");
  }
  avro_schema_decref(theirs);
  /* avro-c allocates whatever length a string claims before it checks the
   * bytes are there: walk the datum with every length bounded first. */
  size_t used = 0;
  sf_code rc = sf_avrobin_scan(mine, datum, dlen, &used, err);
  if (rc || used != dlen) {
    if (!rc) return sf_err_set(err, SF_ECORRUPT, "the record does not fill its block");
    if (err) err->code = SF_ECORRUPT; /* the scanner says EDECODE, meant for events */
    sf_err_prefix(err, "the record does not decode");
    return SF_ECORRUPT;
  }
  avro_value_iface_t *cls = avro_generic_class_from_schema(mine);
  avro_reader_t r = avro_reader_memory((const char *)datum, (int64_t)dlen);
  if (!cls || !r || avro_generic_value_new(cls, v)) {
    rc = sf_err_set(err, SF_ENOMEM, "cannot decode: %s", avro_strerror());
  } else if (avro_value_read(r, v)) {
    avro_value_decref(v);
    rc = sf_err_set(err, SF_ECORRUPT, "the record does not decode: %s", avro_strerror());
  }
  if (r) avro_reader_free(r);
  if (rc) {
    avro_value_iface_decref(cls);
    return rc;
  }
  *iface = cls;
  return SF_OK;
}

/* Decodes the (already checksummed) datum into c with whichever of our
 * schemas, format 2 or format 1, wrote it. */
static sf_code decode_datum(const uint8_t *datum, size_t dlen, const uint8_t *wschema,
                            size_t wslen, sf_catalog *c, sf_err *err) {
  static const struct {
    const char *file;
    int format;
  } known[] = {{SF_CATALOG_SCHEMA_FILE, SF_CATALOG_FORMAT},
               {SF_CATALOG_SCHEMA_V1_FILE, SF_CATALOG_FORMAT_V1}};
  sf_code rc = SF_OK;
  for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
    avro_schema_t mine;
    avro_value_iface_t *iface;
    avro_value_t v;
    if ((rc = sf_catalog_load_schema(known[k].file, &mine, err))) return rc;
    rc = sf_catalog_read_record(mine, datum, dlen, wschema, wslen, &v, &iface, err);
    avro_schema_decref(mine);
    if (rc == SF_EFORMAT) continue; /* not this schema: try the next */
    if (rc) return rc;
    rc = dec_record(&v, known[k].format, c, err);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    return rc;
  }
  return sf_err_set(err, SF_EFORMAT,
                    "written with another catalog schema than this segforge's (a newer "
                    "version of segforge?)");
}

sf_code sf_catalog_open_container(const uint8_t *buf, size_t len, const char *what,
                                  const uint8_t **datum, size_t *dlen,
                                  const uint8_t **schema, size_t *slen, sf_err *err) {
  if (len > SF_CATALOG_MAX_FILE_BYTES)
    return sf_err_set(err, SF_ELIMIT, "%s: %zu bytes (a catalog file is at most %llu)",
                      what, len, SF_CATALOG_MAX_FILE_BYTES);
  sf_code rc = parse_container(buf, len, what, datum, dlen, schema, slen, err);
  if (rc) return rc;
  uint64_t want = get_le64(*datum + *dlen - CHECKSUM_BYTES);
  uint64_t got = XXH3_64bits(*datum, *dlen - CHECKSUM_BYTES);
  if (want != got)
    return sf_err_set(
        err, SF_ECORRUPT,
        "%s: checksum mismatch (the record hashes to %016llx, the file says "
        "%016llx): the file is damaged",
        what, (unsigned long long)got, (unsigned long long)want);
  return SF_OK;
}

sf_code sf_catalog_decode(const uint8_t *buf, size_t len, const char *what, sf_catalog *c,
                          sf_err *err) {
  const uint8_t *datum = NULL, *wschema = NULL;
  size_t dlen = 0, wslen = 0;
  sf_code rc =
      sf_catalog_open_container(buf, len, what, &datum, &dlen, &wschema, &wslen, err);
  if (rc) return rc;
  rc = decode_datum(datum, dlen, wschema, wslen, c, err);
  if (!rc) rc = sf_catalog_validate(c, err);
  if (rc) {
    sf_catalog_clear(c);
    sf_err_prefix(err, "%s", what);
    return rc;
  }
  return SF_OK;
}
