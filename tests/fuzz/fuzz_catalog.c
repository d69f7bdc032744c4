/*
 * fuzz_catalog.c - libFuzzer target for the catalog version reader.
 *
 * A catalog file's record is covered by a checksum, so random mutations of a
 * whole file die there and never reach the Avro decoding behind it. The
 * first byte therefore picks the mode: bit 0 clear takes the rest as a
 * whole file; set, it takes the rest as the record's bytes and wraps them in
 * a valid container (a real header, the block framing, the checksum), so
 * that the fuzzer explores what avro-c and our field checks do with them.
 * Bit 1 picks the decoder: a catalog version, or a chunk of the job archive
 * (core/catalog/JobArchive.avsc).
 *
 * An accepted version must be written back and read again unchanged. Any
 * disagreement aborts, so the fuzzer reports it as a finding.
 *
 *   CC=clang cmake -S . -B build-fuzz -DSF_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_catalog && ./build-fuzz/fuzz_catalog
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/base/fragset.h"
#include "core/catalog/catalog_internal.h"
#include "fuzz_sound.h"

/* Real container headers, through their sync markers: [0] a version's,
 * [1] an archive chunk's. */
static uint8_t *headers[2];
static size_t header_lens[2];
static uint8_t sync_markers[2][16];

/* Writes c into a malloc'd buffer (caller frees). */
static uint8_t *write_mem(const sf_catalog *c, size_t *len) {
  uint8_t *buf = NULL;
  sf_err err = {0};
  if (sf_catalog_encode(c, "mem", &buf, len, &err)) {
    fprintf(stderr, "fuzz_catalog: cannot write: %s\n", err.msg);
    abort();
  }
  return buf;
}

static void init(void) {
  sf_catalog c = {.version = 1, .created_at_ms = 1};
  uint8_t *file;
  size_t len;
  file = write_mem(&c, &len);
  /* The file ends with the sync marker; the header ends at its first copy. */
  memcpy(sync_markers[0], file + len - 16, 16);
  for (size_t i = 0; i + 16 <= len; i++)
    if (!memcmp(file + i, sync_markers[0], 16)) {
      header_lens[0] = i + 16;
      break;
    }
  headers[0] = malloc(header_lens[0]);
  memcpy(headers[0], file, header_lens[0]);
  free(file);
  /* A chunk's: a container of its schema with no block is just the header. */
  avro_schema_t schema;
  avro_file_writer_t fw;
  char *buf = NULL;
  FILE *f = open_memstream(&buf, &len);
  if (!f || sf_catalog_load_schema(SF_CATALOG_ARCHIVE_SCHEMA_FILE, &schema, NULL) ||
      avro_file_writer_create_with_codec_fp(f, "mem", 0, schema, &fw, "null", 4096) ||
      avro_file_writer_close(fw) || fclose(f))
    abort();
  avro_schema_decref(schema);
  headers[1] = (uint8_t *)buf;
  header_lens[1] = len;
  memcpy(sync_markers[1], buf + len - 16, 16);
}

static size_t put_varint(uint8_t *p, int64_t v) {
  uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
  size_t n = 0;
  do {
    p[n++] = (uint8_t)((z & 0x7f) | (z > 0x7f ? 0x80 : 0));
    z >>= 7;
  } while (z);
  return n;
}

/* header + block(1 record: datum + its checksum) + sync. */
static uint8_t *wrap(int kind, const uint8_t *datum, size_t n, size_t *len) {
  const uint8_t *header = headers[kind], *sync_marker = sync_markers[kind];
  size_t header_len = header_lens[kind];
  uint8_t *f = malloc(header_len + 20 + n + 8 + 16);
  size_t k = header_len;
  memcpy(f, header, header_len);
  k += put_varint(f + k, 1);
  k += put_varint(f + k, (int64_t)(n + 8));
  memcpy(f + k, datum, n);
  k += n;
  uint64_t h = XXH3_64bits(datum, n);
  for (int i = 0; i < 8; i++) f[k++] = (uint8_t)(h >> (8 * i));
  memcpy(f + k, sync_marker, 16);
  *len = k + 16;
  return f;
}

static char *describe(sf_catalog *c) {
  c->dataset = "/d";
  json_t *j = sf_catalog_describe_json(c, NULL);
  c->dataset = NULL;
  char *s = j ? json_dumps(j, JSON_SORT_KEYS) : NULL;
  json_decref(j);
  if (!s) abort();
  return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!headers[0]) init();
  if (size < 1) return 0;
  size_t len = size - 1;
  int kind = (data[0] >> 1) & 1;
  uint8_t *file = (data[0] & 1) ? wrap(kind, data + 1, size - 1, &len) : NULL;
  const uint8_t *in = file ? file : data + 1;
  sf_catalog c = {0}, again = {0};
  sf_err err = {0};
  if (kind == 1) { /* an archive chunk: bounded, valid or refused */
    size_t njobs;
    if (sf_catalog_archive_decode(in, len, "fuzz", &njobs, &err) == SF_OK &&
        njobs > SF_CATALOG_MAX_JOBS)
      abort();
    free(file);
    return 0;
  }
  if (sf_catalog_decode(in, len, "fuzz", &c, &err) == SF_OK) {
    for (size_t i = 0; i < c.nix; i++)
      for (size_t k = 0; k < c.ix[i].nsegs; k++)
        fuzz_check_bitmap(c.ix[i].segs[k].info.fragments, "fuzz_catalog");
    size_t n2;
    uint8_t *out = write_mem(&c, &n2);
    if (sf_catalog_decode(out, n2, "again", &again, &err)) {
      fprintf(stderr, "fuzz_catalog: a written version does not read back: %s\n",
              err.msg);
      abort();
    }
    char *a = describe(&c), *b = describe(&again);
    if (strcmp(a, b)) abort();
    free(a);
    free(b);
    free(out);
    sf_catalog_clear(&again);
    sf_catalog_clear(&c);
  }
  free(file);
  return 0;
}
