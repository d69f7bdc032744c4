/*
 * segfile_internal.h - what the reader (segfile.c) and the writer
 * (segwrite.c) of the shard/segment format share: the byte layout constants,
 * little-endian accessors and the chunk entry. Not part of the public API.
 */
#ifndef SF_SEGFILE_INTERNAL_H
#define SF_SEGFILE_INTERNAL_H

#include <stdint.h>

#include "core/base/fsutil.h"
#include "core/format/segfile.h"

enum {
  SEG_HDR_SIZE = 64,
  SEG_FTR_SIZE = 64,
  SEG_DIR_HEAD = 16,  /* u32 nlist, u32 reserved, u64 num_chunks */
  SEG_PART_ENTRY = 4, /* u32 chunk count */
  SEG_CHUNK_ENTRY =
      24,              /* u64 offset, u32 rows, u32 ids_len, u32 codes_crc, u32 ids_crc */
  SEG_ALIGN = 64,      /* every chunk (and so its codes) starts on a multiple of this */
  SEG_VARINT_MAX = 10, /* bytes of the longest LEB128 encoding of a uint64 */
};
#define SEG_FTR_MAGIC "SFSG" /* the last-but-one 4 bytes of a file */

/* Little-endian loads and stores, byte by byte: any host, any alignment. */
static inline void seg_put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8);
}
static inline void seg_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void seg_put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t seg_get16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t seg_get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static inline uint64_t seg_get64(const uint8_t *p) {
  return (uint64_t)seg_get32(p) | (uint64_t)seg_get32(p + 4) << 32;
}

/* One directory entry: the chunk's codes start at off (rows * code_size
 * bytes), its row-id block follows them (ids_len bytes). */
typedef struct seg_chunk {
  uint64_t off;
  uint32_t nrows, ids_len, codes_crc, ids_crc;
} seg_chunk;

static inline void seg_chunk_put(uint8_t *b, const seg_chunk *e) {
  seg_put64(b, e->off);
  seg_put32(b + 8, e->nrows);
  seg_put32(b + 12, e->ids_len);
  seg_put32(b + 16, e->codes_crc);
  seg_put32(b + 20, e->ids_crc);
}
static inline seg_chunk seg_chunk_get(const uint8_t *b) {
  seg_chunk e = {seg_get64(b), seg_get32(b + 8), seg_get32(b + 12), seg_get32(b + 16),
                 seg_get32(b + 20)};
  return e;
}

/* An open file (segfile.c opens it; segread.c reads its chunks). */
struct sf_seg_reader {
  char *path;
  int fd; /* kept for copy_file_range by writers that copy from us */
  sf_fs_map map;
  uint64_t size; /* the file's bytes */
  uint8_t *meta; /* sf_seg_open_meta: the bytes read (the tail holds the
                    directory that chunk_tab points into); NULL when mapped */
  sf_seg_params params;
  uint16_t vmajor, vminor;
  uint64_t num_rows;
  roaring_bitmap_t *frags;
  const uint8_t *chunk_tab; /* num_chunks entries of SEG_CHUNK_ENTRY bytes, in the map */
  uint64_t num_chunks;
  uint64_t bitmap_off; /* the data region is [SEG_HDR_SIZE, bitmap_off) */
  uint64_t *first;     /* nlist + 1: partition p owns chunks [first[p], first[p+1]) */
  uint64_t *rows;      /* nlist */
  uint32_t max_chunk_rows;
};

/* The header for params and a row count, CRC included. */
void sf_seg_header_put(uint8_t h[SEG_HDR_SIZE], const sf_seg_params *p, uint64_t rows);

/* Fills err with SF_ECORRUPT: "<path>: <what> (file corrupt; <remedy>)". */
sf_code sf_seg_corrupt(sf_err *err, const char *path, sf_seg_kind kind, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

/* Reader internals for the writer's verbatim copy. */
int sf_seg_reader_fd(const sf_seg_reader *r);
const uint8_t *sf_seg_reader_data(const sf_seg_reader *r);
uint64_t sf_seg_partition_first_chunk(const sf_seg_reader *r, uint32_t p);
seg_chunk sf_seg_chunk_entry(const sf_seg_reader *r, uint64_t i);
uint64_t sf_seg_chunk_end(const sf_seg_reader *r, const seg_chunk *e);
/* Checks chunk e's two CRCs (p, c only name it in the message). */
sf_code sf_seg_check_chunk_crcs(const sf_seg_reader *r, uint32_t p, uint32_t c,
                                const seg_chunk *e, sf_err *err);

#endif
