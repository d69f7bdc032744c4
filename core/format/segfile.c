/*
 * segfile.c - the shard/segment file format; see segfile.h for the API and
 * docs/format.md for the bytes.
 *
 *   header (64) | chunks, partition by partition | fragment bitmap |
 *   directory | footer (64)
 *
 * A chunk is [codes][row-id block][zero padding to 64]: codes first so that
 * they start on a 64-byte boundary with one pad per chunk. Every chunk starts
 * on a multiple of 64, so a byte range of whole chunks keeps the alignment of
 * its codes wherever a merge places it (at another multiple of 64).
 *
 * The reader trusts nothing: sf_seg_open checks every number in the footer
 * and directory against the file size and the format limits before it
 * allocates anything (its only allocations are O(nlist), after nlist has
 * been checked against SF_MAX_NLIST and the directory's real size). Chunk
 * entries are read from the mapping on demand rather than copied.
 * sf_seg_open_meta makes the same checks on bytes read with pread.
 *
 * This file opens and checks a file; segread.c reads its chunks and
 * segwrite.c writes one.
 */
#include "core/format/segfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/crc32c.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/format/segfile_internal.h"

/* ---- shared helpers (also used by the writer in segwrite.c) ------------ */

const char *sf_seg_kind_name(sf_seg_kind k) {
  return k == SF_SEG_KIND_SHARD     ? "shard"
         : k == SF_SEG_KIND_SEGMENT ? "segment"
                                    : "unknown";
}

uint32_t sf_seg_code_size(sf_index_type type, uint32_t dim, uint32_t pq_m) {
  switch (type) {
    case SF_IVF_FLAT:
      return dim <= SF_MAX_DIM ? 4 * dim : 0;
    case SF_IVF_SQ:
      return dim;
    case SF_IVF_PQ:
      return pq_m;
  }
  return 0;
}

sf_code sf_seg_params_check(const sf_seg_params *p, sf_err *err) {
  if (p->kind != SF_SEG_KIND_SHARD && p->kind != SF_SEG_KIND_SEGMENT)
    return sf_err_set(err, SF_EINVAL, "file kind %d is neither shard (1) nor segment (2)",
                      (int)p->kind);
  if ((unsigned)p->type > SF_IVF_PQ)
    return sf_err_set(err, SF_EINVAL, "index type %d is not IVF_FLAT, IVF_SQ or IVF_PQ",
                      (int)p->type);
  if ((unsigned)p->metric > SF_DOT)
    return sf_err_set(err, SF_EINVAL, "metric %d is not L2, COSINE or DOT",
                      (int)p->metric);
  if (p->dim < 1 || p->dim > SF_MAX_DIM)
    return sf_err_set(err, SF_EINVAL, "dim %u is outside 1..%u", p->dim, SF_MAX_DIM);
  if (p->nlist < 1 || p->nlist > SF_MAX_NLIST)
    return sf_err_set(err, SF_EINVAL, "nlist %u is outside 1..%u", p->nlist,
                      SF_MAX_NLIST);
  if (p->type == SF_IVF_PQ) {
    if (p->pq_m < 1 || p->pq_m > SF_MAX_PQ_M || p->dim % p->pq_m)
      return sf_err_set(err, SF_EINVAL, "pq_m %u must be in 1..%u and divide dim %u",
                        p->pq_m, SF_MAX_PQ_M, p->dim);
  } else if (p->pq_m) {
    return sf_err_set(err, SF_EINVAL, "pq_m is %u but must be 0 for %s", p->pq_m,
                      sf_index_type_name(p->type));
  }
  uint32_t want = sf_seg_code_size(p->type, p->dim, p->pq_m);
  if (p->code_size != want)
    return sf_err_set(err, SF_EINVAL, "code_size %u does not match %s with dim %u (%u)",
                      p->code_size, sf_index_type_name(p->type), p->dim, want);
  return SF_OK;
}

void sf_seg_header_put(uint8_t h[SEG_HDR_SIZE], const sf_seg_params *p, uint64_t rows) {
  memset(h, 0, SEG_HDR_SIZE);
  memcpy(h, SF_SEG_MAGIC, SF_SEG_MAGIC_LEN);
  seg_put16(h + 8, SF_SEG_VERSION_MAJOR);
  seg_put16(h + 10, SF_SEG_VERSION_MINOR);
  seg_put32(h + 12, 0); /* flags */
  h[16] = (uint8_t)p->kind;
  h[17] = (uint8_t)p->type;
  h[18] = (uint8_t)p->metric;
  seg_put32(h + 20, p->dim);
  seg_put32(h + 24, p->nlist);
  seg_put32(h + 28, p->code_size);
  seg_put32(h + 32, p->pq_m);
  seg_put64(h + 40, p->quantizer_checksum);
  seg_put64(h + 48, rows);
  seg_put32(h + 60, sf_crc32c(0, h, 60));
}

/* "<path>: <what> (file corrupt; <remedy>)": one sentence a person can act
 * on, with the remedy that fits the kind of file. */
sf_code sf_seg_corrupt(sf_err *err, const char *path, sf_seg_kind kind, const char *fmt,
                       ...) {
  char what[SF_ERR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  const char *fix =
      kind == SF_SEG_KIND_SHARD ? "re-stage the shard"
      /* Right for a job's segment and a merged one alike; the
       * catalog, which knows which it is, says more
       * (sf_catalog_explain_corrupt). */
      : kind == SF_SEG_KIND_SEGMENT
          ? "restore it from a backup, or, for a job's segment whose shards "
            "are still staged, rebuild it from them"
          : "re-create it";
  return sf_err_set(err, SF_ECORRUPT, "%s: %s (file corrupt; %s)", path, what, fix);
}

/* ---- reader ------------------------------------------------------------- */

#define CORRUPT(r, ...) sf_seg_corrupt(err, (r)->path, (r)->params.kind, __VA_ARGS__)

/* h holds the first min(size, SEG_HDR_SIZE) bytes of the file. */
static sf_code check_header(sf_seg_reader *r, const uint8_t *h, sf_err *err) {
  if (r->size < SF_SEG_MAGIC_LEN || memcmp(h, SF_SEG_MAGIC, SF_SEG_MAGIC_LEN))
    return sf_err_set(err, SF_EFORMAT, "%s: not a segforge shard or segment file (%s)",
                      r->path, r->size ? "wrong magic bytes" : "file is empty");
  if (r->size < SEG_HDR_SIZE + SEG_FTR_SIZE)
    return CORRUPT(r, "file is %llu bytes, shorter than the smallest valid file (%d)",
                   (unsigned long long)r->size, SEG_HDR_SIZE + SEG_FTR_SIZE);
  r->vmajor = seg_get16(h + 8);
  r->vminor = seg_get16(h + 10);
  /* A newer major version may lay the header out differently, CRC included,
   * so a version we do not know is reported as such, CRC or not. */
  if (r->vmajor != SF_SEG_VERSION_MAJOR)
    return sf_err_set(
        err, SF_EFORMAT,
        "%s: format version %u.%u is not supported by this reader (%d.x)%s", r->path,
        r->vmajor, r->vminor, SF_SEG_VERSION_MAJOR,
        seg_get32(h + 60) == sf_crc32c(0, h, 60) ? "" : ", or the header is corrupt");
  if (seg_get32(h + 60) != sf_crc32c(0, h, 60))
    return CORRUPT(r, "header CRC32C mismatch");
  uint32_t flags = seg_get32(h + 12);
  if (flags)
    return sf_err_set(
        err, SF_EFORMAT,
        "%s: uses format features this reader lacks (flags 0x%x); upgrade segforge",
        r->path, flags);
  sf_seg_params *p = &r->params;
  p->kind = (sf_seg_kind)h[16];
  p->type = (sf_index_type)h[17];
  p->metric = (sf_metric)h[18];
  p->dim = seg_get32(h + 20);
  p->nlist = seg_get32(h + 24);
  p->code_size = seg_get32(h + 28);
  p->pq_m = seg_get32(h + 32);
  p->quantizer_checksum = seg_get64(h + 40);
  r->num_rows = seg_get64(h + 48);
  sf_err e;
  if (sf_seg_params_check(p, &e)) return CORRUPT(r, "header: %s", e.msg);
  return SF_OK;
}

/* Where the footer places the bitmap and the directory. */
typedef struct seg_tail {
  uint64_t boff, blen, doff, dlen;
} seg_tail;

/* Checks the footer f (the last SEG_FTR_SIZE bytes) and that the bitmap,
 * directory and footer tile the tail of the file exactly; leaves where they
 * are in *t. Reads nothing but f. */
static sf_code check_footer(sf_seg_reader *r, const uint8_t *f, seg_tail *t,
                            sf_err *err) {
  const uint64_t size = r->size;
  if (memcmp(f + 56, SEG_FTR_MAGIC, 4))
    return CORRUPT(r, "footer magic missing (file truncated or appended to)");
  if (seg_get32(f + 60) != sf_crc32c(0, f, 60))
    return CORRUPT(r, "footer CRC32C mismatch");
  uint64_t boff = seg_get64(f), blen = seg_get64(f + 8);
  uint64_t doff = seg_get64(f + 16), dlen = seg_get64(f + 24);
  uint64_t rows = seg_get64(f + 32), fsize = seg_get64(f + 40);
  if (fsize != size)
    return CORRUPT(
        r, "file is %llu bytes but its footer says %llu (truncated or appended to)",
        (unsigned long long)size, (unsigned long long)fsize);
  if (rows != r->num_rows)
    return CORRUPT(r, "footer says %llu rows, header %llu", (unsigned long long)rows,
                   (unsigned long long)r->num_rows);
  const uint64_t tail = size - SEG_FTR_SIZE; /* end of the directory */
  /* Overflow-safe: each length is compared with the room left, never added. */
  if (boff < SEG_HDR_SIZE || boff > tail || blen > tail - boff || doff != boff + blen ||
      dlen != tail - doff)
    return CORRUPT(
        r,
        "footer places the bitmap at %llu+%llu and the directory at %llu+%llu, "
        "which do not fit a %llu-byte file",
        (unsigned long long)boff, (unsigned long long)blen, (unsigned long long)doff,
        (unsigned long long)dlen, (unsigned long long)size);
  r->bitmap_off = boff;
  *t = (seg_tail){boff, blen, doff, dlen};
  return SF_OK;
}

/* Checks the CRCs of the bitmap and directory against the footer f and
 * decodes the bitmap; tail holds the file's bytes [t->boff, size - footer). */
static sf_code check_tail(sf_seg_reader *r, const uint8_t *f, const seg_tail *t,
                          const uint8_t *tail, sf_err *err) {
  if (seg_get32(f + 48) != sf_crc32c(0, tail, t->blen))
    return CORRUPT(r, "fragment bitmap CRC32C mismatch");
  if (seg_get32(f + 52) != sf_crc32c(0, tail + t->blen, t->dlen))
    return CORRUPT(r, "directory CRC32C mismatch");
  char what[SF_ERR_MSG_MAX];
  snprintf(what, sizeof what, "%s: fragment bitmap", r->path);
  return sf_fragset_decode(tail, t->blen, what, &r->frags, err);
}

/* Checks the directory d (dlen bytes) counts against its real size, then
 * every chunk entry against the data region, and fills first[]/rows[];
 * chunk_tab points into d from then on. */
static sf_code check_directory(sf_seg_reader *r, const uint8_t *d, uint64_t dlen,
                               sf_err *err) {
  const uint32_t nlist = r->params.nlist;
  if (dlen < SEG_DIR_HEAD)
    return CORRUPT(r, "directory is %llu bytes", (unsigned long long)dlen);
  if (seg_get32(d) != nlist)
    return CORRUPT(r, "directory lists %u partitions, header %u", seg_get32(d), nlist);
  const uint64_t nchunks = seg_get64(d + 8);
  const uint64_t parts_len = (uint64_t)nlist * SEG_PART_ENTRY;
  if (parts_len > dlen - SEG_DIR_HEAD ||
      (dlen - SEG_DIR_HEAD - parts_len) / SEG_CHUNK_ENTRY != nchunks ||
      (dlen - SEG_DIR_HEAD - parts_len) % SEG_CHUNK_ENTRY)
    return CORRUPT(r, "directory of %llu bytes cannot hold %u partitions and %llu chunks",
                   (unsigned long long)dlen, nlist, (unsigned long long)nchunks);
  /* nlist <= SF_MAX_NLIST and 4*nlist bytes exist: the arrays are bounded. */
  r->first = malloc(((size_t)nlist + 1) * sizeof *r->first);
  r->rows = calloc(nlist, sizeof *r->rows);
  if (!r->first || !r->rows)
    return sf_err_set(err, SF_ENOMEM, "%s: out of memory for %u partitions", r->path,
                      nlist);
  r->chunk_tab = d + SEG_DIR_HEAD + parts_len;
  r->num_chunks = nchunks;
  uint64_t ci = 0, prev_end = SEG_HDR_SIZE, total = 0;
  for (uint32_t p = 0; p < nlist; p++) {
    const uint32_t cnt = seg_get32(d + SEG_DIR_HEAD + (uint64_t)p * SEG_PART_ENTRY);
    if (cnt > nchunks - ci)
      return CORRUPT(r, "partition %u claims %u chunks, more than the directory holds", p,
                     cnt);
    r->first[p] = ci;
    for (uint32_t c = 0; c < cnt; c++, ci++) {
      seg_chunk e = seg_chunk_get(r->chunk_tab + ci * SEG_CHUNK_ENTRY);
      if (e.nrows < 1 || e.nrows > SF_SEG_MAX_CHUNK_ROWS)
        return CORRUPT(r, "partition %u chunk %u has %u rows (must be 1..%u)", p, c,
                       e.nrows, SF_SEG_MAX_CHUNK_ROWS);
      const uint64_t codes_len = (uint64_t)e.nrows * r->params.code_size;
      if (e.off % SEG_ALIGN || e.off < prev_end || e.off > r->bitmap_off ||
          codes_len > r->bitmap_off - e.off || e.ids_len < 1 ||
          e.ids_len > r->bitmap_off - e.off - codes_len)
        return CORRUPT(
            r,
            "partition %u chunk %u at offset %llu (%u rows, %llu code bytes, "
            "%u id bytes) overlaps its neighbours, is misaligned or runs past the "
            "data region",
            p, c, (unsigned long long)e.off, e.nrows, (unsigned long long)codes_len,
            e.ids_len);
      prev_end = e.off + codes_len + e.ids_len;
      r->rows[p] += e.nrows;
      if (e.nrows > r->max_chunk_rows) r->max_chunk_rows = e.nrows;
    }
    total += r->rows[p];
  }
  r->first[nlist] = ci;
  if (ci != nchunks)
    return CORRUPT(r, "partitions list %llu chunks, directory %llu",
                   (unsigned long long)ci, (unsigned long long)nchunks);
  if (total != r->num_rows)
    return CORRUPT(r, "chunks hold %llu rows, header says %llu",
                   (unsigned long long)total, (unsigned long long)r->num_rows);
  return SF_OK;
}

/* An empty reader of path (fd -1), or NULL without memory. */
static sf_seg_reader *reader_new(const char *path) {
  sf_seg_reader *r = calloc(1, sizeof *r);
  if (r && !(r->path = strdup(path))) {
    free(r);
    return NULL;
  }
  if (r) r->fd = -1;
  return r;
}

sf_code sf_seg_open(const char *path, sf_seg_reader **out, sf_err *err) {
  sf_seg_reader *r = reader_new(path);
  *out = NULL;
  if (!r) return sf_err_set(err, SF_ENOMEM, "out of memory opening %s", path);
  /* The fd serves copy_file_range; the mapping serves everything else. Both
   * must be the same file: compare the inode before and after mapping. */
  struct stat a, b;
  sf_code rc;
  if ((rc = sf_fs_open_input(path, &r->fd, &a, err))) goto fail;
  if ((rc = sf_fs_map_open(path, &r->map, err))) goto fail;
  if (stat(path, &b) || a.st_ino != b.st_ino || a.st_dev != b.st_dev ||
      (uint64_t)a.st_size != r->map.size) {
    rc = sf_err_set(err, SF_EIO, "%s was replaced while being opened; retry", path);
    goto fail;
  }
  r->size = r->map.size;
  const uint8_t *m = r->map.data;
  seg_tail t;
  if ((rc = check_header(r, m, err)) ||
      (rc = check_footer(r, m + r->size - SEG_FTR_SIZE, &t, err)) ||
      (rc = check_tail(r, m + r->size - SEG_FTR_SIZE, &t, m + t.boff, err)) ||
      (rc = check_directory(r, m + t.doff, t.dlen, err)))
    goto fail;
  *out = r;
  return SF_OK;
fail:
  sf_seg_close(r);
  return rc;
}

/* The most sf_seg_open_meta reads in one go from the end of the file: all
 * of a small file, or the footer, directory and bitmap of most others. */
#define SEG_META_WINDOW (64u << 10)
/* The most bitmap and directory bytes it reads at all: a directory this big
 * lists some ten million chunks, far beyond any real file. */
#define SEG_META_MAX ((uint64_t)256 << 20)

/* Reads len bytes at off of r's file: a file that ends first was cut while
 * being read (a staged file must not change). */
static sf_code read_at(sf_seg_reader *r, int fd, uint8_t *buf, size_t len, uint64_t off,
                       sf_err *err) {
  while (len) {
    ssize_t n = pread(fd, buf, len, (off_t)off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sf_err_errno(err, SF_EIO, errno, "cannot read %s", r->path);
    if (n == 0)
      return CORRUPT(r,
                     "file ends at byte %llu, before its size of %llu when opened "
                     "(truncated while being read)",
                     (unsigned long long)off, (unsigned long long)r->size);
    buf += n, len -= (size_t)n, off += (uint64_t)n;
  }
  return SF_OK;
}

sf_code sf_seg_open_meta(const char *path, sf_seg_reader **out, sf_err *err) {
  sf_seg_reader *r = reader_new(path);
  *out = NULL;
  if (!r) return sf_err_set(err, SF_ENOMEM, "out of memory opening %s", path);
  sf_code rc;
  struct stat st;
  if ((rc = sf_fs_open_input(path, &r->fd, &st, err))) goto fail;
  const int fd = r->fd;
  r->size = (uint64_t)st.st_size;
  /* One read from the end serves small files whole; otherwise the header
   * comes from a second read. */
  const size_t win = r->size < SEG_META_WINDOW ? (size_t)r->size : SEG_META_WINDOW;
  const uint64_t win_off = r->size - win;
  uint8_t head[SEG_HDR_SIZE];
  if (!(r->meta = malloc(win ? win : 1))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory reading %s", path);
    goto fail;
  }
  if ((rc = read_at(r, fd, r->meta, win, win_off, err))) goto fail;
  if (win_off && (rc = read_at(r, fd, head, SEG_HDR_SIZE, 0, err))) goto fail;
  if ((rc = check_header(r, win_off ? head : r->meta, err))) goto fail;
  /* The header check made sure the file, and so the window, holds a footer. */
  const uint8_t *f = r->meta + win - SEG_FTR_SIZE;
  seg_tail t;
  if ((rc = check_footer(r, f, &t, err))) goto fail;
  if (t.boff < win_off) { /* the bitmap and directory start before the window */
    const uint64_t need = r->size - t.boff;
    if (need - SEG_FTR_SIZE > SEG_META_MAX) {
      rc = sf_err_set(err, SF_ELIMIT,
                      "%s: bitmap and directory of %llu bytes exceed the %llu-byte limit",
                      path, (unsigned long long)(need - SEG_FTR_SIZE),
                      (unsigned long long)SEG_META_MAX);
      goto fail;
    }
    uint8_t *all = malloc((size_t)need);
    if (!all) {
      rc = sf_err_set(err, SF_ENOMEM, "out of memory reading %s", path);
      goto fail;
    }
    uint8_t ftr[SEG_FTR_SIZE];
    memcpy(ftr, f, SEG_FTR_SIZE);
    free(r->meta);
    r->meta = all;
    if ((rc = read_at(r, fd, all, (size_t)need, t.boff, err))) goto fail;
    f = all + need - SEG_FTR_SIZE;
    if (memcmp(f, ftr, SEG_FTR_SIZE)) { /* the file changed between the reads */
      rc = CORRUPT(r, "footer changed while being read (a staged file must not change)");
      goto fail;
    }
  }
  const uint8_t *tail = f + SEG_FTR_SIZE - (r->size - t.boff);
  if ((rc = check_tail(r, f, &t, tail, err)) ||
      (rc = check_directory(r, tail + t.blen, t.dlen, err)))
    goto fail;
  close(fd);
  r->fd = -1;
  *out = r;
  return SF_OK;
fail:
  sf_seg_close(r);
  return rc;
}

void sf_seg_close(sf_seg_reader *r) {
  if (!r) return;
  sf_fs_map_close(&r->map);
  free(r->meta);
  if (r->fd >= 0) close(r->fd);
  if (r->frags) sf_fragset_free(r->frags); /* CRoaring 0.2 crashes on NULL */
  free(r->first);
  free(r->rows);
  free(r->path);
  free(r);
}

const char *sf_seg_path(const sf_seg_reader *r) {
  return r->path;
}
const sf_seg_params *sf_seg_get_params(const sf_seg_reader *r) {
  return &r->params;
}
uint64_t sf_seg_num_rows(const sf_seg_reader *r) {
  return r->num_rows;
}
uint64_t sf_seg_file_bytes(const sf_seg_reader *r) {
  return r->size;
}
const roaring_bitmap_t *sf_seg_fragments(const sf_seg_reader *r) {
  return r->frags;
}
uint32_t sf_seg_max_chunk_rows(const sf_seg_reader *r) {
  return r->max_chunk_rows;
}

void sf_seg_version(const sf_seg_reader *r, uint32_t *major, uint32_t *minor) {
  *major = r->vmajor;
  *minor = r->vminor;
}

uint64_t sf_seg_partition_rows(const sf_seg_reader *r, uint32_t p) {
  return p < r->params.nlist ? r->rows[p] : 0;
}

uint32_t sf_seg_partition_num_chunks(const sf_seg_reader *r, uint32_t p) {
  return p < r->params.nlist ? (uint32_t)(r->first[p + 1] - r->first[p]) : 0;
}

seg_chunk sf_seg_chunk_entry(const sf_seg_reader *r, uint64_t i) {
  return seg_chunk_get(r->chunk_tab + i * SEG_CHUNK_ENTRY);
}

uint64_t sf_seg_chunk_end(const sf_seg_reader *r, const seg_chunk *e) {
  return e->off + (uint64_t)e->nrows * r->params.code_size + e->ids_len;
}

uint64_t sf_seg_partition_bytes(const sf_seg_reader *r, uint32_t p) {
  if (p >= r->params.nlist || r->first[p] == r->first[p + 1]) return 0;
  seg_chunk a = sf_seg_chunk_entry(r, r->first[p]),
            z = sf_seg_chunk_entry(r, r->first[p + 1] - 1);
  return sf_seg_chunk_end(r, &z) - a.off;
}

/* Reader internals the writer needs to copy from a source. */
int sf_seg_reader_fd(const sf_seg_reader *r) {
  return r->fd;
}
const uint8_t *sf_seg_reader_data(const sf_seg_reader *r) {
  return r->map.data;
}
uint64_t sf_seg_partition_first_chunk(const sf_seg_reader *r, uint32_t p) {
  return r->first[p];
}
