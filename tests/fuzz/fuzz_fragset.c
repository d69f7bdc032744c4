/*
 * fuzz_fragset.c - libFuzzer target for sf_fragset_decode, the one decoder
 * of portable roaring bytes from outside (events, shard and segment files,
 * catalog versions).
 *
 * An accepted bitmap must behave as the set of its values (fuzz_sound.h),
 * and encode and decode back to the same set. The first byte picks a
 * prefix, so that mutations reach the containers rather than dying on the
 * cookie: 0 takes the rest as it is; 1 puts a no-run header of one
 * container (key 0) before it; 2 a run header whose one container is a run
 * container.
 *
 *   SF_FUZZ_WRITE_SEEDS=corpus ./fuzz_fragset   # writes what CRoaring writes
 *   ./fuzz_fragset corpus -max_total_time=30
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fragset.h"
#include "fuzz_sound.h"

static void write_seed(const char *dir, int k, const roaring_bitmap_t *b) {
  uint8_t *enc;
  size_t n;
  char name[4096];
  if (sf_fragset_encode(b, &enc, &n, NULL)) exit(1);
  snprintf(name, sizeof name, "%s/seed%d", dir, k);
  FILE *f = fopen(name, "wb");
  if (!f) exit(1);
  fputc(0, f);
  fwrite(enc, 1, n, f);
  fclose(f);
  free(enc);
}

static void write_seeds(const char *dir) {
  mkdir(dir, 0755);
  roaring_bitmap_t *b[4] = {
      roaring_bitmap_of(3, 1, 3, 5), roaring_bitmap_from_range(0, 100000, 1),
      roaring_bitmap_from_range(7, 140000, 3), roaring_bitmap_create()};
  for (uint32_t k = 0; k < 6; k++)
    roaring_bitmap_add_range_closed(b[3], k << 16 | 10, k << 16 | (k % 2 ? 300 : 20));
  for (int i = 0; i < 4; i++) {
    roaring_bitmap_run_optimize(b[i]);
    write_seed(dir, i, b[i]);
    roaring_bitmap_free(b[i]);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const char *dir = getenv("SF_FUZZ_WRITE_SEEDS");
  if (dir && *dir) {
    write_seeds(dir);
    exit(0);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > (1 << 17)) return 0;
  static uint8_t buf[(1 << 17) + 16];
  static const uint8_t no_runs[8] = {0x3a, 0x30, 0, 0, 1, 0, 0, 0};
  static const uint8_t runs[5] = {0x3b, 0x30, 0, 0, 1};
  size_t n = 0;
  if (data[0] % 3 == 1) {
    memcpy(buf, no_runs, 8);
    n = 8;
  } else if (data[0] % 3 == 2) {
    memcpy(buf, runs, 5);
    n = 5;
  }
  memcpy(buf + n, data + 1, size - 1);
  n += size - 1;
  roaring_bitmap_t *b = NULL;
  if (sf_fragset_decode(buf, n, "fuzz", &b, NULL)) return 0;
  fuzz_check_bitmap(b, "fuzz_fragset");
  uint8_t *enc;
  size_t len;
  roaring_bitmap_t *again = NULL;
  if (sf_fragset_encode(b, &enc, &len, NULL) ||
      sf_fragset_decode(enc, len, "again", &again, NULL) ||
      !roaring_bitmap_equals(b, again)) {
    fprintf(stderr, "fuzz_fragset: an accepted bitmap does not survive a round trip\n");
    abort();
  }
  free(enc);
  sf_fragset_free(again);
  sf_fragset_free(b);
  return 0;
}
