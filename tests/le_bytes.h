/*
 * le_bytes.h - little-endian fields read and written in place, for the
 * tests and fuzz targets that edit shard, segment and bitmap bytes behind
 * the readers' backs (and then recompute the CRCs). Header-only, so that the
 * fuzz targets, which link no test helper, can use it too.
 */
#ifndef SF_LE_BYTES_H
#define SF_LE_BYTES_H

#include <stdint.h>

static inline uint32_t le_get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static inline uint64_t le_get64(const uint8_t *p) {
  return le_get32(p) | (uint64_t)le_get32(p + 4) << 32;
}
static inline void le_put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void le_put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

#endif
