/*
 * fuzz_vecio.c - libFuzzer target for the texmex reader: whatever bytes the
 * fuzzer makes up, as an .fvecs, .ivecs or .bvecs file (the first byte picks
 * which), are opened and streamed to the end in small batches. The reader
 * must refuse bad sizes and dimensions without a crash, a read past what it
 * allocated, or an allocation driven by the file's numbers.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/vector/vecio.h"

static char paths[3][64];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  static const char *ext[3] = {"fvecs", "ivecs", "bvecs"};
  const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  for (int i = 0; i < 3; i++)
    snprintf(paths[i], sizeof paths[i], "%.32s/fuzz_vecio.%ld.%s", tmp, (long)getpid(),
             ext[i]);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const char *path = paths[data[0] % 3];
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (size > 1 && fwrite(data + 1, 1, size - 1, f) != size - 1) abort();
  fclose(f);
  sf_vecreader *r;
  sf_err err;
  if (sf_vecreader_open(path, &r, &err) == SF_OK) {
    uint32_t dim = sf_vecreader_dim(r);
    float *buf = malloc(sizeof(float) * 4 * (dim ? dim : 1));
    int32_t *ibuf = malloc(sizeof(int32_t) * 4 * (dim ? dim : 1));
    size_t n = 1;
    if (sf_vecreader_kind(r) == SF_VEC_IVECS)
      while (n && sf_vecreader_read_i32(r, ibuf, 4, &n, &err) == SF_OK) {
      }
    else
      while (n && sf_vecreader_read_f32(r, buf, 4, &n, &err) == SF_OK) {
      }
    free(buf);
    free(ibuf);
    sf_vecreader_free(r);
  }
  unlink(path);
  return 0;
}
