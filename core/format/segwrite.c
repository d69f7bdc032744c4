/*
 * segwrite.c - the writer of shard/segment files (sf_seg_writer_*); see
 * segfile.h for the API and docs/format.md for the bytes.
 *
 * The writer streams: chunks go to the temporary file as they come, and only
 * the directory (24 bytes per chunk, 4 per partition) is kept in memory until
 * finish writes it after the data. The header, which needs the final row
 * count, is written last of all, at offset 0, so that a file cut short by a
 * crash has no valid header; then fsync and rename make it visible (the LMDB
 * order: data, fsync, the one step that publishes).
 *
 * Merges use copy_partition: the source's chunks of a partition are one
 * contiguous, 64-aligned byte range, copied as one range at a 64-aligned
 * destination. Only the chunk offsets in the directory change. Compactions
 * use join_partition, which copies large chunks the same way and joins small
 * ones into runs (segfile.h says when and why).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "core/base/crc32c.h"
#include "core/base/fault.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/format/segfile.h"
#include "core/format/segfile_internal.h"

/* zstd level 3 (its default): row-id blocks are small and this level keeps
 * them near their smallest while compressing at hundreds of MB/s. */
#define ID_ZSTD_LEVEL 3

/* Writeback is started every this many bytes (see start_writeback). */
#define SEG_WRITEBACK_BYTES (8u << 20)

struct sf_seg_writer {
  sf_fs_tmpfile tmp;
  sf_seg_params p;
  uint64_t off;          /* bytes written so far == current end of file */
  uint64_t rows;         /* rows written so far */
  uint32_t part;         /* the partition last written to (order is non-decreasing) */
  int broken;            /* an I/O error left the file in an unknown state */
  int no_cfr;            /* copy_file_range is unavailable for this destination */
  uint64_t queued;       /* bytes handed to writeback so far (start_writeback) */
  uint32_t *part_chunks; /* nlist counts */
  uint8_t *chunks;       /* encoded directory entries, SEG_CHUNK_ENTRY each */
  uint64_t nchunks, chunks_cap;
  ZSTD_CCtx *cctx;
  uint8_t *raw;  /* varints of one chunk */
  uint8_t *zbuf; /* its compressed form */
  size_t zcap;
  /* join_partition's pending run (allocated on first use): up to run_cap
   * rows of ids and codes, and the scratch that decodes a small chunk. */
  sf_rowid *run_ids;
  uint8_t *run_codes;
  uint32_t run_cap;
  sf_seg_scratch *scratch;
  sf_seg_join_stats join;
};

static const uint8_t zeros[SEG_ALIGN];

uint64_t sf_seg_writer_rows(const sf_seg_writer *w) {
  return w->rows;
}
uint64_t sf_seg_writer_bytes(const sf_seg_writer *w) {
  return w->off;
}

static void writer_free(sf_seg_writer *w) {
  sf_fs_tmpfile_abort(&w->tmp); /* no-op after a commit */
  ZSTD_freeCCtx(w->cctx);
  free(w->part_chunks);
  free(w->chunks);
  free(w->raw);
  free(w->zbuf);
  free(w->run_ids);
  free(w->run_codes);
  sf_seg_scratch_free(w->scratch);
  free(w);
}

void sf_seg_writer_abort(sf_seg_writer *w) {
  if (w) writer_free(w);
}

sf_code sf_seg_writer_open(const char *path, const sf_seg_params *p, sf_seg_writer **out,
                           sf_err *err) {
  *out = NULL;
  sf_code rc = sf_seg_params_check(p, err);
  if (rc) {
    sf_err_prefix(err, "%s", path);
    return rc;
  }
  sf_seg_writer *w = calloc(1, sizeof *w);
  if (!w) return sf_err_set(err, SF_ENOMEM, "out of memory creating %s", path);
  w->tmp.fd = -1;
  w->p = *p;
  w->zcap = ZSTD_compressBound((size_t)SF_SEG_MAX_CHUNK_ROWS * SEG_VARINT_MAX);
  w->part_chunks = calloc(p->nlist, sizeof *w->part_chunks);
  w->raw = malloc((size_t)SF_SEG_MAX_CHUNK_ROWS * SEG_VARINT_MAX);
  w->zbuf = malloc(w->zcap);
  w->cctx = ZSTD_createCCtx();
  if (!w->part_chunks || !w->raw || !w->zbuf || !w->cctx) {
    writer_free(w);
    return sf_err_set(err, SF_ENOMEM, "out of memory creating %s", path);
  }
  if ((rc = sf_fs_tmpfile_open(&w->tmp, path, err))) {
    writer_free(w);
    return rc;
  }
  /* Placeholder header, all zeros: not a valid file until finish. */
  if ((rc = sf_fs_write_all(w->tmp.fd, zeros, SEG_HDR_SIZE, w->tmp.tmp_path, err))) {
    writer_free(w);
    return rc;
  }
  w->off = SEG_HDR_SIZE;
  *out = w;
  return SF_OK;
}

/* Starts writeback of what was written since the last call, once that is
 * SEG_WRITEBACK_BYTES, without waiting for it. Why: otherwise all of a
 * file's dirty pages wait for the fsync in finish, and a merge stalls there
 * while the disk sat idle during the copy; flushing as we go overlaps the
 * two (a build then keeps pace with cp + sync). It is only a hint: errors
 * surface at that fsync. */
static void start_writeback(sf_seg_writer *w) {
  if (w->off - w->queued < SEG_WRITEBACK_BYTES) return;
  (void)sync_file_range(w->tmp.fd, (off_t)w->queued, (off_t)(w->off - w->queued),
                        SYNC_FILE_RANGE_WRITE);
  w->queued = w->off;
}

/* Appends bytes at the end; any failure breaks the writer. */
static sf_code out(sf_seg_writer *w, const void *buf, uint64_t len, sf_err *err) {
  sf_code rc = sf_fs_write_all(w->tmp.fd, buf, (size_t)len, w->tmp.tmp_path, err);
  if (rc) {
    w->broken = 1;
  } else {
    w->off += len;
    start_writeback(w);
  }
  return rc;
}

static sf_code pad_to_align(sf_seg_writer *w, sf_err *err) {
  uint64_t pad = (SEG_ALIGN - w->off % SEG_ALIGN) % SEG_ALIGN;
  return pad ? out(w, zeros, pad, err) : SF_OK;
}

static sf_code reserve_chunks(sf_seg_writer *w, uint64_t more, sf_err *err) {
  if (w->nchunks + more <= w->chunks_cap) return SF_OK;
  uint64_t cap = w->chunks_cap ? w->chunks_cap : 64;
  while (cap < w->nchunks + more) cap *= 2;
  uint8_t *c = realloc(w->chunks, (size_t)cap * SEG_CHUNK_ENTRY);
  if (!c)
    return sf_err_set(err, SF_ENOMEM, "%s: out of memory for the directory", w->tmp.path);
  w->chunks = c;
  w->chunks_cap = cap;
  return SF_OK;
}

/* Checks what every append needs: a usable writer and a partition that
 * keeps the order. */
static sf_code check_append(sf_seg_writer *w, uint32_t partition, sf_err *err) {
  if (w->broken)
    return sf_err_set(err, SF_EIO, "%s: an earlier write failed; abort this writer",
                      w->tmp.path);
  if (partition >= w->p.nlist)
    return sf_err_set(err, SF_EINVAL, "%s: partition %u out of range (nlist %u)",
                      w->tmp.path, partition, w->p.nlist);
  if (partition < w->part)
    return sf_err_set(err, SF_EINVAL,
                      "%s: partition %u written after partition %u (must not decrease)",
                      w->tmp.path, partition, w->part);
  return SF_OK;
}

static sf_code write_chunk(sf_seg_writer *w, uint32_t partition, const sf_rowid *ids,
                           const uint8_t *codes, uint32_t n, sf_err *err) {
  size_t rawlen = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t v = i ? ids[i] - ids[i - 1] : ids[0];
    while (v >= 0x80) {
      w->raw[rawlen++] = (uint8_t)(v | 0x80);
      v >>= 7;
    }
    w->raw[rawlen++] = (uint8_t)v;
  }
  size_t zlen =
      ZSTD_compressCCtx(w->cctx, w->zbuf, w->zcap, w->raw, rawlen, ID_ZSTD_LEVEL);
  if (ZSTD_isError(zlen))
    return sf_err_set(err, SF_EIO, "%s: cannot compress row ids: %s", w->tmp.path,
                      ZSTD_getErrorName(zlen));
  const uint64_t codes_len = (uint64_t)n * w->p.code_size;
  sf_code rc;
  if ((rc = reserve_chunks(w, 1, err)) || (rc = pad_to_align(w, err))) return rc;
  seg_chunk e = {w->off, n, (uint32_t)zlen, sf_crc32c(0, codes, codes_len),
                 sf_crc32c(0, w->zbuf, zlen)};
  if ((rc = out(w, codes, codes_len, err)) || (rc = out(w, w->zbuf, zlen, err)))
    return rc;
  seg_chunk_put(w->chunks + w->nchunks++ * SEG_CHUNK_ENTRY, &e);
  w->part_chunks[partition]++;
  w->part = partition;
  w->rows += n;
  return SF_OK;
}

sf_code sf_seg_writer_add_chunk(sf_seg_writer *w, uint32_t partition, const sf_rowid *ids,
                                const uint8_t *codes, uint32_t n, sf_err *err) {
  sf_code rc = check_append(w, partition, err);
  if (rc || n == 0) return rc;
  if (!ids || !codes)
    return sf_err_set(err, SF_EINVAL, "%s: NULL ids or codes", w->tmp.path);
  for (uint32_t i = 1; i < n; i++)
    if (ids[i] <= ids[i - 1])
      return sf_err_set(err, SF_EINVAL,
                        "%s: partition %u row ids not strictly ascending at row %u",
                        w->tmp.path, partition, i);
  for (uint32_t i = 0; i < n; i += SF_SEG_MAX_CHUNK_ROWS) {
    uint32_t m = n - i < SF_SEG_MAX_CHUNK_ROWS ? n - i : SF_SEG_MAX_CHUNK_ROWS;
    if ((rc = write_chunk(w, partition, ids + i, codes + (uint64_t)i * w->p.code_size, m,
                          err)))
      return rc;
  }
  return SF_OK;
}

/* A source must share every parameter but its kind: codes from another
 * quantizer or layout would be silently wrong at search time. */
static sf_code check_same_params(const sf_seg_writer *w, const sf_seg_reader *src,
                                 sf_err *err) {
  const sf_seg_params *a = sf_seg_get_params(src), *b = &w->p;
  const char *s = sf_seg_path(src), *d = w->tmp.path;
  if (a->type != b->type)
    return sf_err_set(err, SF_EMISMATCH, "%s: index type %s differs from %s's %s", s,
                      sf_index_type_name(a->type), d, sf_index_type_name(b->type));
  if (a->metric != b->metric)
    return sf_err_set(err, SF_EMISMATCH, "%s: metric %s differs from %s's %s", s,
                      sf_metric_name(a->metric), d, sf_metric_name(b->metric));
  if (a->quantizer_checksum != b->quantizer_checksum)
    return sf_err_set(err, SF_EMISMATCH,
                      "%s: quantizer checksum %016llx differs from %s's %016llx (built "
                      "against another quantizer)",
                      s, (unsigned long long)a->quantizer_checksum, d,
                      (unsigned long long)b->quantizer_checksum);
  const struct {
    const char *name;
    uint32_t a, b;
  } f[] = {{"dim", a->dim, b->dim},
           {"nlist", a->nlist, b->nlist},
           {"code_size", a->code_size, b->code_size},
           {"pq_m", a->pq_m, b->pq_m}};
  for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
    if (f[i].a != f[i].b)
      return sf_err_set(err, SF_EMISMATCH, "%s: %s %u differs from %s's %u", s, f[i].name,
                        f[i].a, d, f[i].b);
  return SF_OK;
}

/* Copies [off, off+len) of src to the end of w. copy_file_range lets the
 * kernel move (or, on XFS/btrfs, share) the pages without a trip through
 * user space; where it cannot (another file system, old kernel, fault
 * injection) the rest is written from src's mapping. The fault point
 * segwrite.no_copy_file_range forces that path for tests. */
static sf_code copy_range(sf_seg_writer *w, const sf_seg_reader *src, uint64_t off,
                          uint64_t len, sf_err *err) {
  if (!w->no_cfr && sf_fault_get("segwrite.no_copy_file_range")) w->no_cfr = 1;
  loff_t in = (loff_t)off;
  while (len && !w->no_cfr) {
    ssize_t n =
        copy_file_range(sf_seg_reader_fd(src), &in, w->tmp.fd, NULL, (size_t)len, 0);
    if (n > 0) {
      len -= (uint64_t)n;
      w->off += (uint64_t)n;
      start_writeback(w);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EXDEV && errno != ENOSYS && errno != EOPNOTSUPP &&
        errno != EINVAL) {
      w->broken = 1;
      return sf_err_errno(err, SF_EIO, errno, "cannot copy %s into %s", sf_seg_path(src),
                          w->tmp.path);
    }
    if (n == 0) { /* the source shrank under its mapping: files are immutable */
      w->broken = 1;
      return sf_err_set(err, SF_EIO, "%s shrank while being copied", sf_seg_path(src));
    }
    w->no_cfr = 1;
  }
  return len ? out(w, sf_seg_reader_data(src) + in, len, err) : SF_OK;
}

/* The zero padding that borders partition p's chunk range in src (nc > 0
 * chunks from `first`): before its first chunk, back to the end of the
 * chunk before it in the file (or the header), and, for the file's last
 * chunks, up to the fragment bitmap. A copy never carries these bytes over,
 * but verify refuses a file where they are not zero, and so must a merge:
 * over all partitions every byte of the data region is then checked. */
static sf_code check_gaps(const sf_seg_reader *src, uint32_t p, uint64_t first,
                          uint32_t nc, sf_err *err) {
  const uint8_t *data = sf_seg_reader_data(src);
  const seg_chunk a = sf_seg_chunk_entry(src, first);
  uint64_t from = SEG_HDR_SIZE;
  if (first) {
    const seg_chunk prev = sf_seg_chunk_entry(src, first - 1);
    from = sf_seg_chunk_end(src, &prev);
  }
  for (uint64_t i = from; i < a.off; i++)
    if (data[i])
      return sf_seg_corrupt(err, sf_seg_path(src), sf_seg_get_params(src)->kind,
                            "non-zero padding before partition %u", p);
  if (first + nc == src->first[src->params.nlist]) {
    const seg_chunk z = sf_seg_chunk_entry(src, first + nc - 1);
    for (uint64_t i = sf_seg_chunk_end(src, &z); i < src->bitmap_off; i++)
      if (data[i])
        return sf_seg_corrupt(err, sf_seg_path(src), sf_seg_get_params(src)->kind,
                              "non-zero padding before the fragment bitmap");
  }
  return SF_OK;
}

sf_code sf_seg_writer_copy_partition(sf_seg_writer *w, const sf_seg_reader *src,
                                     uint32_t partition, sf_err *err) {
  sf_code rc = check_append(w, partition, err);
  if (rc || (rc = check_same_params(w, src, err))) return rc;
  const uint32_t nc = sf_seg_partition_num_chunks(src, partition);
  if (nc == 0) return SF_OK;
  /* Verify before writing anything, so a corrupt source leaves w usable. */
  const uint64_t first = sf_seg_partition_first_chunk(src, partition);
  const uint8_t *data = sf_seg_reader_data(src);
  if (!data)
    return sf_err_set(err, SF_EINVAL, "%s was opened for its metadata only; cannot copy",
                      sf_seg_path(src));
  const seg_chunk a = sf_seg_chunk_entry(src, first);
  uint64_t end = a.off;
  if ((rc = check_gaps(src, partition, first, nc, err))) return rc;
  for (uint32_t c = 0; c < nc; c++) {
    seg_chunk e = sf_seg_chunk_entry(src, first + c);
    for (uint64_t i = end; i < e.off; i++)
      if (data[i])
        return sf_seg_corrupt(err, sf_seg_path(src), sf_seg_get_params(src)->kind,
                              "partition %u non-zero padding before chunk %u", partition,
                              c);
    if ((rc = sf_seg_check_chunk_crcs(src, partition, c, &e, err))) return rc;
    end = sf_seg_chunk_end(src, &e);
  }
  if ((rc = reserve_chunks(w, nc, err)) || (rc = pad_to_align(w, err))) return rc;
  const uint64_t base = w->off; /* a multiple of SEG_ALIGN, like a.off */
  if ((rc = copy_range(w, src, a.off, end - a.off, err))) return rc;
  for (uint32_t c = 0; c < nc; c++) {
    seg_chunk e = sf_seg_chunk_entry(src, first + c);
    e.off = e.off - a.off + base;
    seg_chunk_put(w->chunks + w->nchunks++ * SEG_CHUNK_ENTRY, &e);
  }
  w->part_chunks[partition] += nc;
  w->part = partition;
  w->rows += sf_seg_partition_rows(src, partition);
  return SF_OK;
}

/* ---- join_partition ------------------------------------------------------- */

void sf_seg_writer_join_stats(const sf_seg_writer *w, sf_seg_join_stats *out) {
  *out = w->join;
}

/* The pending run of join_partition: rows and source chunks so far, and
 * the source chunk it holds when it holds one (copied verbatim then). */
typedef struct run {
  uint32_t rows, chunks;
  const sf_seg_reader *src;
  seg_chunk first;
} run;

/* Appends source chunks [c0, c1) of partition p of src, verbatim, as one
 * byte range (its padding was checked to be zero). */
static sf_code copy_chunks(sf_seg_writer *w, const sf_seg_reader *src, uint32_t p,
                           uint32_t c0, uint32_t c1, sf_err *err) {
  const uint64_t first = sf_seg_partition_first_chunk(src, p);
  const seg_chunk a = sf_seg_chunk_entry(src, first + c0);
  const seg_chunk z = sf_seg_chunk_entry(src, first + c1 - 1);
  const uint64_t end = sf_seg_chunk_end(src, &z);
  sf_code rc;
  if ((rc = reserve_chunks(w, c1 - c0, err)) || (rc = pad_to_align(w, err))) return rc;
  const uint64_t base = w->off;
  if ((rc = copy_range(w, src, a.off, end - a.off, err))) return rc;
  for (uint32_t c = c0; c < c1; c++) {
    seg_chunk e = sf_seg_chunk_entry(src, first + c);
    e.off = e.off - a.off + base;
    seg_chunk_put(w->chunks + w->nchunks++ * SEG_CHUNK_ENTRY, &e);
    w->rows += e.nrows;
  }
  w->part_chunks[p] += c1 - c0;
  w->part = p;
  w->join.chunks_out += c1 - c0;
  return SF_OK;
}

/* Writes the pending run as one chunk and empties it. */
static sf_code flush_run(sf_seg_writer *w, uint32_t p, run *r, sf_err *err) {
  if (!r->rows) return SF_OK;
  sf_code rc;
  if (r->chunks == 1) { /* nothing to join: the source's bytes as they are */
    const uint64_t len = sf_seg_chunk_end(r->src, &r->first) - r->first.off;
    if ((rc = reserve_chunks(w, 1, err)) || (rc = pad_to_align(w, err))) return rc;
    seg_chunk e = r->first;
    e.off = w->off;
    if ((rc = out(w, sf_seg_reader_data(r->src) + r->first.off, len, err))) return rc;
    seg_chunk_put(w->chunks + w->nchunks++ * SEG_CHUNK_ENTRY, &e);
    w->part_chunks[p]++;
    w->part = p;
    w->rows += e.nrows;
  } else {
    if ((rc = write_chunk(w, p, w->run_ids, w->run_codes, r->rows, err))) return rc;
    w->join.chunks_joined += r->chunks;
    w->join.rows_joined += r->rows;
  }
  w->join.chunks_out++;
  r->rows = r->chunks = 0;
  return SF_OK;
}

/* Checks every source before anything is written: parameters, mapping,
 * every block CRC of the partition and the padding between its chunks. */
static sf_code join_check(sf_seg_writer *w, const sf_seg_reader *const *srcs, size_t n,
                          uint32_t p, sf_err *err) {
  for (size_t k = 0; k < n; k++) {
    const sf_seg_reader *src = srcs[k];
    sf_code rc = check_same_params(w, src, err);
    if (rc) return rc;
    const uint8_t *data = sf_seg_reader_data(src);
    if (!data)
      return sf_err_set(err, SF_EINVAL,
                        "%s was opened for its metadata only; cannot copy",
                        sf_seg_path(src));
    const uint32_t nc = sf_seg_partition_num_chunks(src, p);
    const uint64_t first = sf_seg_partition_first_chunk(src, p);
    uint64_t end = 0;
    if (nc && (rc = check_gaps(src, p, first, nc, err))) return rc;
    for (uint32_t c = 0; c < nc; c++) {
      seg_chunk e = sf_seg_chunk_entry(src, first + c);
      for (uint64_t i = c ? end : e.off; i < e.off; i++)
        if (data[i])
          return sf_seg_corrupt(err, sf_seg_path(src), sf_seg_get_params(src)->kind,
                                "partition %u non-zero padding before chunk %u", p, c);
      if ((rc = sf_seg_check_chunk_crcs(src, p, c, &e, err))) return rc;
      end = sf_seg_chunk_end(src, &e);
    }
  }
  return SF_OK;
}

/* Sizes the run buffers for cap rows (kept across calls). */
static sf_code join_reserve(sf_seg_writer *w, uint32_t cap, sf_err *err) {
  if (!w->scratch && !(w->scratch = sf_seg_scratch_new()))
    return sf_err_set(err, SF_ENOMEM, "%s: out of memory joining chunks", w->tmp.path);
  if (w->run_cap >= cap) return SF_OK;
  free(w->run_ids);
  free(w->run_codes);
  w->run_ids = malloc((size_t)cap * sizeof *w->run_ids);
  w->run_codes = malloc((size_t)cap * w->p.code_size);
  w->run_cap = w->run_ids && w->run_codes ? cap : 0;
  if (!w->run_cap)
    return sf_err_set(err, SF_ENOMEM, "%s: out of memory for a run of %u rows",
                      w->tmp.path, cap);
  return SF_OK;
}

sf_code sf_seg_writer_join_partition(sf_seg_writer *w, const sf_seg_reader *const *srcs,
                                     size_t n, uint32_t partition,
                                     const sf_seg_join_opts *o, sf_err *err) {
  sf_code rc = check_append(w, partition, err);
  if (rc || (rc = join_check(w, srcs, n, partition, err))) return rc;
  uint32_t cap = o && o->max_rows ? o->max_rows : SF_SEG_JOIN_MAX_ROWS;
  uint32_t min = o && o->min_rows ? o->min_rows : SF_SEG_JOIN_MIN_ROWS;
  const uint32_t by_bytes = SF_SEG_JOIN_MAX_BYTES / w->p.code_size;
  if (cap > SF_SEG_MAX_CHUNK_ROWS) cap = SF_SEG_MAX_CHUNK_ROWS;
  if (cap > by_bytes) cap = by_bytes ? by_bytes : 1;
  if (min > cap) min = cap;
  if ((rc = join_reserve(w, cap, err))) return rc;
  const uint64_t chunks_before = w->nchunks;
  const uint32_t cs = w->p.code_size;
  run r = {0};
  for (size_t k = 0; k < n && !rc; k++) {
    const sf_seg_reader *src = srcs[k];
    const uint32_t nc = sf_seg_partition_num_chunks(src, partition);
    const uint64_t first = sf_seg_partition_first_chunk(src, partition);
    w->join.chunks_in += nc;
    for (uint32_t c = 0; c < nc && !rc;) {
      const seg_chunk e = sf_seg_chunk_entry(src, first + c);
      if (e.nrows >= min) { /* large: copy it and the large ones after it */
        uint32_t c1 = c + 1;
        while (c1 < nc && sf_seg_chunk_entry(src, first + c1).nrows >= min) c1++;
        if (!(rc = flush_run(w, partition, &r, err)))
          rc = copy_chunks(w, src, partition, c, c1, err);
        c = c1;
        continue;
      }
      sf_seg_chunk ch;
      if ((rc = sf_seg_read_chunk_ex(src, partition, c, w->scratch, SF_SEG_READ_NO_CRC,
                                     &ch, err))) {
        if (w->nchunks != chunks_before) w->broken = 1; /* part of it is out */
        break;
      }
      if (r.rows && (r.rows + ch.nrows > cap || ch.ids[0] <= w->run_ids[r.rows - 1]) &&
          (rc = flush_run(w, partition, &r, err)))
        break;
      memcpy(w->run_ids + r.rows, ch.ids, (size_t)ch.nrows * sizeof *ch.ids);
      memcpy(w->run_codes + (size_t)r.rows * cs, ch.codes, (size_t)ch.nrows * cs);
      if (!r.chunks++) {
        r.src = src;
        r.first = e;
      }
      r.rows += ch.nrows;
      c++;
    }
  }
  if (!rc) rc = flush_run(w, partition, &r, err);
  return rc;
}

/* Writes bitmap, directory and footer after the data, then the header. */
static sf_code write_tail(sf_seg_writer *w, const roaring_bitmap_t *fragments,
                          sf_err *err) {
  uint8_t *bm = NULL, *dir = NULL;
  size_t bmlen = 0;
  sf_code rc = sf_fragset_encode(fragments, &bm, &bmlen, err);
  if (rc) {
    sf_err_prefix(err, "%s", w->tmp.path);
    return rc;
  }
  const uint64_t boff = w->off;
  const uint64_t dlen =
      SEG_DIR_HEAD + (uint64_t)w->p.nlist * SEG_PART_ENTRY + w->nchunks * SEG_CHUNK_ENTRY;
  uint32_t dcrc = 0;
  if ((dir = malloc(SEG_DIR_HEAD + (size_t)w->p.nlist * SEG_PART_ENTRY)) == NULL) {
    rc = sf_err_set(err, SF_ENOMEM, "%s: out of memory for the directory", w->tmp.path);
    goto done;
  }
  /* The directory goes out in two pieces (head + counts, then the chunk
   * entries already encoded), its CRC computed across both. */
  seg_put32(dir, w->p.nlist);
  seg_put32(dir + 4, 0);
  seg_put64(dir + 8, w->nchunks);
  for (uint32_t i = 0; i < w->p.nlist; i++)
    seg_put32(dir + SEG_DIR_HEAD + (size_t)i * SEG_PART_ENTRY, w->part_chunks[i]);
  const size_t head = SEG_DIR_HEAD + (size_t)w->p.nlist * SEG_PART_ENTRY;
  dcrc = sf_crc32c(sf_crc32c(0, dir, head), w->chunks, w->nchunks * SEG_CHUNK_ENTRY);
  if ((rc = out(w, bm, bmlen, err)) || (rc = out(w, dir, head, err)) ||
      (rc = out(w, w->chunks, w->nchunks * SEG_CHUNK_ENTRY, err)))
    goto done;
  uint8_t f[SEG_FTR_SIZE] = {0};
  seg_put64(f, boff);
  seg_put64(f + 8, bmlen);
  seg_put64(f + 16, boff + bmlen);
  seg_put64(f + 24, dlen);
  seg_put64(f + 32, w->rows);
  seg_put64(f + 40, w->off + SEG_FTR_SIZE);
  seg_put32(f + 48, sf_crc32c(0, bm, bmlen));
  seg_put32(f + 52, dcrc);
  memcpy(f + 56, SEG_FTR_MAGIC, 4);
  seg_put32(f + 60, sf_crc32c(0, f, 60));
  if ((rc = out(w, f, sizeof f, err))) goto done;
  uint8_t h[SEG_HDR_SIZE];
  sf_seg_header_put(h, &w->p, w->rows);
  if ((rc = sf_fs_pwrite_all(w->tmp.fd, h, sizeof h, 0, w->tmp.tmp_path, err))) {
    w->broken = 1;
    sf_err_prefix(err, "the header");
  }
done:
  free(bm);
  free(dir);
  return rc;
}

static sf_code finish(sf_seg_writer *w, const roaring_bitmap_t *fragments, int replace,
                      sf_err *err) {
  sf_code rc;
  if (w->broken)
    rc = sf_err_set(err, SF_EIO, "%s: an earlier write failed; nothing was published",
                    w->tmp.path);
  else if (!fragments)
    rc = sf_err_set(err, SF_EINVAL, "%s: no fragment bitmap given", w->tmp.path);
  else if (!(rc = write_tail(w, fragments, err)))
    rc = replace ? sf_fs_tmpfile_commit(&w->tmp, err)
                 : sf_fs_tmpfile_commit_new(&w->tmp, err);
  writer_free(w);
  return rc;
}

sf_code sf_seg_writer_finish(sf_seg_writer *w, const roaring_bitmap_t *fragments,
                             sf_err *err) {
  return finish(w, fragments, 1, err);
}

sf_code sf_seg_writer_finish_new(sf_seg_writer *w, const roaring_bitmap_t *fragments,
                                 sf_err *err) {
  return finish(w, fragments, 0, err);
}
