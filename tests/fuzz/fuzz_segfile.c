/*
 * fuzz_segfile.c - libFuzzer target for the shard/segment reader: open,
 * verify, and read every chunk of whatever bytes the fuzzer makes up; and
 * check that sf_seg_open_meta (pread, no mapping) judges every input exactly
 * as sf_seg_open does.
 *
 * Each input runs twice: as given (which mostly exercises the CRC checks,
 * since nearly every mutation breaks one), and again after recomputing every
 * CRC the bytes let us find, so that mutations reach the length, count,
 * offset, zstd and varint checks behind the CRCs.
 *
 * Seed corpus (no binary files in the repository):
 *   SF_FUZZ_WRITE_SEEDS=corpus ./fuzz_segfile   # writes a few valid files
 *   ./fuzz_segfile corpus -max_total_time=30
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/crc32c.h"
#include "core/base/fragset.h"
#include "core/format/segfile.h"
#include "fuzz_sound.h"
#include "tests/le_bytes.h"

/* Recomputes chunk, directory, bitmap, footer and header CRCs wherever the
 * (fuzzed) offsets fall inside the buffer; leaves the rest alone. */
static void fix_crcs(uint8_t *b, size_t n) {
  if (n < 128) return;
  uint8_t *f = b + n - 64;
  const uint32_t code_size = le_get32(b + 28);
  const uint64_t boff = le_get64(f), blen = le_get64(f + 8), doff = le_get64(f + 16),
                 dlen = le_get64(f + 24);
  const int dir_ok = doff <= n && dlen <= n - doff && dlen >= 16;
  if (dir_ok) {
    uint8_t *d = b + doff;
    uint64_t tab = 16 + 4 * (uint64_t)le_get32(d);
    for (uint64_t e = tab; e <= dlen && dlen - e >= 24 && e - tab < 24 * 4096; e += 24) {
      uint64_t off = le_get64(d + e), codes = (uint64_t)le_get32(d + e + 8) * code_size;
      uint32_t ids = le_get32(d + e + 12);
      if (off > n || codes > n - off || ids > n - off - codes) continue;
      le_put32(d + e + 16, sf_crc32c(0, b + off, codes));
      le_put32(d + e + 20, sf_crc32c(0, b + off + codes, ids));
    }
    le_put32(f + 52, sf_crc32c(0, d, dlen));
  }
  if (boff <= n && blen <= n - boff) le_put32(f + 48, sf_crc32c(0, b + boff, blen));
  le_put32(f + 60, sf_crc32c(0, f, 60));
  le_put32(b + 60, sf_crc32c(0, b, 60));
}

/* Every byte handed out is summed here, so the sanitizers see it read. */
volatile uint64_t fuzz_sink;

static void read_everything(const char *path) {
  sf_seg_reader *r, *m;
  sf_err err, merr;
  /* The pread reader must judge every input as the mapped one does. */
  sf_code mrc = sf_seg_open_meta(path, &m, &merr);
  sf_code rc = sf_seg_open(path, &r, &err);
  if (rc != mrc || (rc && strcmp(err.msg, merr.msg))) {
    fprintf(stderr, "sf_seg_open: %s (%s)\nsf_seg_open_meta: %s (%s)\n", sf_code_name(rc),
            rc ? err.msg : "", sf_code_name(mrc), mrc ? merr.msg : "");
    abort();
  }
  if (!mrc) {
    if (sf_seg_num_rows(m) != sf_seg_num_rows(r) ||
        !roaring_bitmap_equals(sf_seg_fragments(m), sf_seg_fragments(r)))
      abort();
    sf_seg_close(m);
  }
  if (rc) return;
  fuzz_check_bitmap(sf_seg_fragments(r), "fuzz_segfile");
  (void)sf_seg_verify(r, &err);
  sf_seg_scratch *s = sf_seg_scratch_new();
  const sf_seg_params *p = sf_seg_get_params(r);
  for (uint32_t part = 0; s && part < p->nlist; part++) {
    for (uint32_t c = 0; c < sf_seg_partition_num_chunks(r, part); c++) {
      sf_seg_chunk ch;
      if (sf_seg_read_chunk(r, part, c, s, &ch, &err)) continue;
      for (uint32_t i = 0; i < ch.nrows; i++) fuzz_sink += ch.ids[i];
      for (uint64_t i = 0; i < (uint64_t)ch.nrows * p->code_size; i++)
        fuzz_sink += ch.codes[i];
    }
  }
  sf_seg_scratch_free(s);
  sf_seg_close(r);
}

static int fd = -1;
static char path[64];

static void run(const uint8_t *data, size_t size) {
  if (ftruncate(fd, 0) || (size && pwrite(fd, data, size, 0) != (ssize_t)size)) abort();
  read_everything(path);
}

/* A few small valid files of each kind and type. */
static void write_seeds(const char *dir) {
  const sf_seg_params ps[3] = {
      {SF_SEG_KIND_SHARD, SF_IVF_SQ, SF_L2, 4, 4, 4, 0, 7},
      {SF_SEG_KIND_SEGMENT, SF_IVF_FLAT, SF_COSINE, 3, 2, 12, 0, 8},
      {SF_SEG_KIND_SHARD, SF_IVF_PQ, SF_DOT, 8, 3, 2, 2, 9},
  };
  mkdir(dir, 0755);
  for (int k = 0; k < 3; k++) {
    char name[4096];
    snprintf(name, sizeof name, "%s/seed%d", dir, k);
    sf_seg_writer *w;
    sf_err err;
    if (sf_seg_writer_open(name, &ps[k], &w, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      exit(1);
    }
    sf_rowid ids[40];
    uint8_t codes[40 * 12];
    for (uint32_t p = 0; p < ps[k].nlist; p += 1 + (k == 2)) {
      uint32_t n = 3 + 5 * p + (uint32_t)k;
      for (uint32_t i = 0; i < n * ps[k].code_size; i++) codes[i] = (uint8_t)(i * 31 + p);
      for (uint32_t i = 0; i < n; i++) /* ascending: fragment i / 8, offsets step 3 */
        ids[i] = ((uint64_t)(i / 8) << 32) | (i % 8 * 3 + p);
      sf_seg_writer_add_chunk(w, p, ids, codes, n, &err);
      sf_seg_writer_add_chunk(w, p, ids, codes, 2, &err); /* a second chunk */
    }
    roaring_bitmap_t *b = roaring_bitmap_create();
    roaring_bitmap_add_range_closed(b, 0, 5);
    if (sf_seg_writer_finish(w, b, &err)) {
      fprintf(stderr, "%s\n", err.msg);
      exit(1);
    }
    sf_fragset_free(b);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  const char *seeds = getenv("SF_FUZZ_WRITE_SEEDS");
  if (seeds) {
    write_seeds(seeds);
    exit(0);
  }
  fd = memfd_create("fuzz_segfile", MFD_CLOEXEC);
  if (fd < 0) abort();
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  run(data, size);
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  fix_crcs(copy, size);
  if (size && memcmp(copy, data, size)) run(copy, size);
  free(copy);
  return 0;
}
