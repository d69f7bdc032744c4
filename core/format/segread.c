/*
 * segread.c - reading and verifying the chunks of an open shard or segment
 * (sf_seg_read_chunk*, sf_seg_verify); segfile.c opens and checks the file,
 * segwrite.c writes it. See segfile.h for the API.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "core/base/crc32c.h"
#include "core/format/segfile.h"
#include "core/format/segfile_internal.h"

#define CORRUPT(r, ...) sf_seg_corrupt(err, (r)->path, (r)->params.kind, __VA_ARGS__)

struct sf_seg_scratch {
  ZSTD_DCtx *dctx;
  uint8_t *raw; /* decompressed varints */
  size_t raw_cap;
  sf_rowid *ids;
  size_t ids_cap;
};

sf_code sf_seg_check_chunk_crcs(const sf_seg_reader *r, uint32_t p, uint32_t c,
                                const seg_chunk *e, sf_err *err) {
  if (r->meta)
    return sf_err_set(err, SF_EINVAL, "%s was opened for its metadata only", r->path);
  const uint8_t *codes = r->map.data + e->off;
  const uint64_t codes_len = (uint64_t)e->nrows * r->params.code_size;
  if (sf_crc32c(0, codes, codes_len) != e->codes_crc)
    return CORRUPT(r, "partition %u chunk %u code block CRC32C mismatch", p, c);
  if (sf_crc32c(0, codes + codes_len, e->ids_len) != e->ids_crc)
    return CORRUPT(r, "partition %u chunk %u row-id block CRC32C mismatch", p, c);
  return SF_OK;
}

/* ---- reading chunks ------------------------------------------------------ */

sf_seg_scratch *sf_seg_scratch_new(void) {
  sf_seg_scratch *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  if (!(s->dctx = ZSTD_createDCtx())) {
    free(s);
    return NULL;
  }
  return s;
}

void sf_seg_scratch_free(sf_seg_scratch *s) {
  if (!s) return;
  ZSTD_freeDCtx(s->dctx);
  free(s->raw);
  free(s->ids);
  free(s);
}

/* Grows s for a chunk of n rows (n <= SF_SEG_MAX_CHUNK_ROWS, so bounded). */
static int scratch_reserve(sf_seg_scratch *s, uint32_t n) {
  if (s->ids_cap < n) {
    sf_rowid *ids = realloc(s->ids, (size_t)n * sizeof *ids);
    if (!ids) return -1;
    s->ids = ids;
    s->ids_cap = n;
  }
  if (s->raw_cap < (size_t)n * SEG_VARINT_MAX) {
    uint8_t *raw = realloc(s->raw, (size_t)n * SEG_VARINT_MAX);
    if (!raw) return -1;
    s->raw = raw;
    s->raw_cap = (size_t)n * SEG_VARINT_MAX;
  }
  return 0;
}

/* Decodes a row-id block: one zstd frame whose declared size is checked
 * against what n varints can take before anything is decompressed, into a
 * buffer of exactly that size. Then n LEB128 varints: the first id, then
 * gaps of at least 1 (ids strictly ascending), using every byte. */
static sf_code decode_ids(const sf_seg_reader *r, uint32_t p, uint32_t c,
                          const uint8_t *blk, uint32_t len, uint32_t n, sf_seg_scratch *s,
                          sf_err *err) {
  unsigned long long size = ZSTD_getFrameContentSize(blk, len);
  if (size == ZSTD_CONTENTSIZE_UNKNOWN || size == ZSTD_CONTENTSIZE_ERROR)
    return CORRUPT(
        r, "partition %u chunk %u row-id block is not a zstd frame with a size", p, c);
  if (size < n || size > (unsigned long long)n * SEG_VARINT_MAX)
    return CORRUPT(r,
                   "partition %u chunk %u row-id block declares %llu bytes for %u rows",
                   p, c, size, n);
  if (ZSTD_findFrameCompressedSize(blk, len) != len)
    return CORRUPT(r, "partition %u chunk %u row-id block is not exactly one zstd frame",
                   p, c);
  if (scratch_reserve(s, n))
    return sf_err_set(err, SF_ENOMEM, "%s: out of memory decoding %u row ids", r->path,
                      n);
  size_t got = ZSTD_decompressDCtx(s->dctx, s->raw, (size_t)size, blk, len);
  if (ZSTD_isError(got) || got != size)
    return CORRUPT(r, "partition %u chunk %u row-id block does not decompress (%s)", p, c,
                   ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short");
  const uint8_t *q = s->raw, *end = s->raw + size;
  uint64_t prev = 0;
  for (uint32_t i = 0; i < n; i++) {
    uint64_t v = 0;
    int shift = 0;
    for (;;) {
      if (q == end || shift > 63 || (shift == 63 && *q > 1))
        return CORRUPT(r, "partition %u chunk %u row id %u is a bad varint", p, c, i);
      v |= (uint64_t)(*q & 0x7f) << shift;
      shift += 7;
      if (!(*q++ & 0x80)) break;
    }
    if (i && (v == 0 || v > UINT64_MAX - prev))
      return CORRUPT(r, "partition %u chunk %u row ids are not strictly ascending at %u",
                     p, c, i);
    prev = i ? prev + v : v;
    s->ids[i] = prev;
  }
  if (q != end)
    return CORRUPT(r, "partition %u chunk %u row-id block has %td trailing bytes", p, c,
                   end - q);
  return SF_OK;
}

sf_code sf_seg_read_chunk_ex(const sf_seg_reader *r, uint32_t p, uint32_t c,
                             sf_seg_scratch *s, unsigned flags, sf_seg_chunk *out,
                             sf_err *err) {
  if (r->meta)
    return sf_err_set(err, SF_EINVAL, "%s was opened for its metadata only", r->path);
  if (p >= r->params.nlist || c >= sf_seg_partition_num_chunks(r, p))
    return sf_err_set(err, SF_EINVAL, "%s: no chunk %u in partition %u", r->path, c, p);
  seg_chunk e = sf_seg_chunk_entry(r, r->first[p] + c);
  sf_code rc;
  if (!(flags & SF_SEG_READ_NO_CRC) && (rc = sf_seg_check_chunk_crcs(r, p, c, &e, err)))
    return rc;
  const uint8_t *codes = r->map.data + e.off;
  const uint64_t codes_len = (uint64_t)e.nrows * r->params.code_size;
  out->nrows = e.nrows;
  out->codes = codes;
  out->ids = NULL;
  if (flags & SF_SEG_READ_NO_IDS) return SF_OK;
  if ((rc = decode_ids(r, p, c, codes + codes_len, e.ids_len, e.nrows, s, err)))
    return rc;
  out->ids = s->ids;
  return SF_OK;
}

sf_code sf_seg_read_chunk(const sf_seg_reader *r, uint32_t p, uint32_t c,
                          sf_seg_scratch *s, sf_seg_chunk *out, sf_err *err) {
  return sf_seg_read_chunk_ex(r, p, c, s, 0, out, err);
}

static int all_zero(const uint8_t *b, uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    if (b[i]) return 0;
  return 1;
}

sf_code sf_seg_verify(const sf_seg_reader *r, sf_err *err) {
  if (r->meta)
    return sf_err_set(err, SF_EINVAL, "%s was opened for its metadata only", r->path);
  /* Padding first: with it, every byte of the file is either covered by a
   * CRC or known to be zero, so no flipped bit goes unnoticed. */
  uint64_t prev_end = SEG_HDR_SIZE;
  for (uint32_t p = 0; p < r->params.nlist; p++)
    for (uint64_t i = r->first[p]; i < r->first[p + 1]; i++) {
      seg_chunk e = sf_seg_chunk_entry(r, i);
      if (!all_zero(r->map.data + prev_end, e.off - prev_end))
        return CORRUPT(r, "non-zero padding before partition %u chunk %llu (offset %llu)",
                       p, (unsigned long long)(i - r->first[p]),
                       (unsigned long long)e.off);
      prev_end = sf_seg_chunk_end(r, &e);
    }
  if (!all_zero(r->map.data + prev_end, r->bitmap_off - prev_end))
    return CORRUPT(r, "non-zero padding before the fragment bitmap");
  sf_seg_scratch *s = sf_seg_scratch_new();
  if (!s) return sf_err_set(err, SF_ENOMEM, "%s: out of memory verifying", r->path);
  sf_code rc = SF_OK;
  for (uint32_t p = 0; p < r->params.nlist && !rc; p++) {
    const uint32_t nc = sf_seg_partition_num_chunks(r, p);
    for (uint32_t c = 0; c < nc && !rc; c++) {
      sf_seg_chunk ch;
      if ((rc = sf_seg_read_chunk(r, p, c, s, &ch, err))) break;
      uint32_t last = UINT32_MAX; /* ids are sorted: check each fragment once */
      for (uint32_t i = 0; i < ch.nrows; i++) {
        uint32_t f = SF_ROWID_FRAG(ch.ids[i]);
        if (f == last) continue;
        if (!roaring_bitmap_contains(r->frags, f)) {
          rc = CORRUPT(r,
                       "partition %u chunk %u holds row %u of fragment %u, which the "
                       "file's fragment bitmap does not list",
                       p, c, SF_ROWID_OFF(ch.ids[i]), f);
          break;
        }
        last = f;
      }
    }
  }
  sf_seg_scratch_free(s);
  return rc;
}
