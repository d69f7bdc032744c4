/*
 * crc32c.c - see crc32c.h.
 *
 * Two paths:
 * - hardware: the SSE4.2 crc32 instruction, 8 bytes per step. One stream
 *   is bound by the instruction's latency (3 cycles for 8 bytes) while the
 *   CPU can start one per cycle, so long buffers run as three interleaved
 *   streams over three consecutive blocks, joined by shifting a stream's
 *   CRC over the length of the block after it (Mark Adler's scheme, as in
 *   his crc32c.c and in zlib's crc32_combine): the CRC register is linear
 *   over GF(2), so shifting it by n zero bytes is a 32x32 bit matrix,
 *   applied as four lookups in 256-entry tables computed once. Blocks of
 *   8 KiB, then 256 bytes, then one stream for what is left. A build
 *   verifies every block it copies, where the single stream was 11% of
 *   the CPU profile.
 * - software: slicing-by-8 (Intel's, as in zlib and RocksDB): eight 256-entry
 *   tables let each step fold 8 input bytes with 8 independent lookups.
 *   The tables (8 KiB) are computed once, under pthread_once, rather than
 *   pasted as 2048 constants.
 * - ISA-L's crc32_iscsi when the build has it (SF_HAVE_ISAL): it keeps no
 *   inversion of its own and takes an int length, hence the wrapper.
 * The CPU check is __builtin_cpu_supports, which reads a table libgcc fills
 * once; calling it per call keeps this module free of mutable state.
 */
#include "core/base/crc32c.h"

#include <limits.h>
#include <pthread.h>
#include <string.h>

#ifdef SF_HAVE_ISAL
#include <isa-l/crc.h>
#endif

#if defined(__x86_64__)
#include <nmmintrin.h>
#define SF_CRC32C_X86 1
#endif

#define POLY 0x82F63B78u /* CRC-32C, reflected */

static uint32_t table[8][256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c >> 1) ^ (POLY & (0u - (c & 1)));
    table[0][i] = c;
  }
  for (uint32_t i = 0; i < 256; i++)
    for (int t = 1; t < 8; t++)
      table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xff];
}

/* Loads 8 bytes as a little-endian integer whatever the host order, so the
 * table path gives the same answer on every machine. */
static inline uint64_t load_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

uint32_t sf_crc32c_sw(uint32_t crc, const void *buf, size_t len) {
  pthread_once(&table_once, table_init);
  const uint8_t *p = buf;
  uint32_t c = ~crc;
  while (len && ((uintptr_t)p & 7)) {
    c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
    len--;
  }
  while (len >= 8) {
    uint64_t v = load_le64(p) ^ c;
    c = table[7][v & 0xff] ^ table[6][(v >> 8) & 0xff] ^ table[5][(v >> 16) & 0xff] ^
        table[4][(v >> 24) & 0xff] ^ table[3][(v >> 32) & 0xff] ^
        table[2][(v >> 40) & 0xff] ^ table[1][(v >> 48) & 0xff] ^ table[0][v >> 56];
    p += 8;
    len -= 8;
  }
  while (len--) c = (c >> 8) ^ table[0][(c ^ *p++) & 0xff];
  return ~c;
}

#ifdef SF_CRC32C_X86
/* The interleaved blocks: LONG first, then SHORT, in bytes (multiples of 8). */
#define LONG 8192
#define SHORT 256

/* shift_long[k][b] is the register (b << 8k) advanced over LONG zero bytes;
 * shift_short likewise over SHORT. */
static uint32_t shift_long[4][256], shift_short[4][256];
static pthread_once_t shift_once = PTHREAD_ONCE_INIT;

/* The register c advanced over n zero bytes, a byte at a time (used only to
 * build the tables). */
static uint32_t advance_zeros(uint32_t c, size_t n) {
  while (n--) c = (c >> 8) ^ table[0][c & 0xff];
  return c;
}

static void shift_table(uint32_t t[4][256], size_t n) {
  uint32_t bit[32]; /* each one-bit register advanced: the matrix's columns */
  for (int i = 0; i < 32; i++) bit[i] = advance_zeros(1u << i, n);
  for (int k = 0; k < 4; k++)
    for (uint32_t b = 0; b < 256; b++) {
      uint32_t v = 0;
      for (int i = 0; i < 8; i++)
        if (b >> i & 1) v ^= bit[8 * k + i];
      t[k][b] = v;
    }
}

static void shift_init(void) {
  pthread_once(&table_once, table_init);
  shift_table(shift_long, LONG);
  shift_table(shift_short, SHORT);
}

static inline uint32_t shift(uint32_t t[4][256], uint32_t c) {
  return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
}

static inline uint64_t load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8); /* aligned here; memcpy keeps it strictly conforming */
  return v;
}

/* Three streams over the blocks [p, p+n), [p+n, p+2n), [p+2n, p+3n),
 * joined into the running register c. */
__attribute__((target("sse4.2"))) static inline uint64_t three_way(uint64_t c,
                                                                   const uint8_t *p,
                                                                   size_t n,
                                                                   uint32_t t[4][256]) {
  uint64_t c1 = 0, c2 = 0;
  for (const uint8_t *end = p + n; p < end; p += 8) {
    c = _mm_crc32_u64(c, load64(p));
    c1 = _mm_crc32_u64(c1, load64(p + n));
    c2 = _mm_crc32_u64(c2, load64(p + 2 * n));
  }
  c = shift(t, (uint32_t)c) ^ c1;
  return shift(t, (uint32_t)c) ^ c2;
}

__attribute__((target("sse4.2"))) uint32_t sf_crc32c_hw(uint32_t crc, const void *buf,
                                                        size_t len) {
  const uint8_t *p = buf;
  uint64_t c = ~crc;
  while (len && ((uintptr_t)p & 7)) {
    c = _mm_crc32_u8((uint32_t)c, *p++);
    len--;
  }
  if (len >= 3 * SHORT) pthread_once(&shift_once, shift_init);
  for (; len >= 3 * LONG; p += 3 * LONG, len -= 3 * LONG)
    c = three_way(c, p, LONG, shift_long);
  for (; len >= 3 * SHORT; p += 3 * SHORT, len -= 3 * SHORT)
    c = three_way(c, p, SHORT, shift_short);
  while (len >= 8) {
    uint64_t v;
    memcpy(&v, p, 8); /* aligned here; memcpy keeps it strictly conforming */
    c = _mm_crc32_u64(c, v);
    p += 8;
    len -= 8;
  }
  while (len--) c = _mm_crc32_u8((uint32_t)c, *p++);
  return ~(uint32_t)c;
}

int sf_crc32c_hw_available(void) {
  __builtin_cpu_init(); /* cheap after the first call; needed if we run early */
  return __builtin_cpu_supports("sse4.2");
}
#else
uint32_t sf_crc32c_hw(uint32_t crc, const void *buf, size_t len) {
  return sf_crc32c_sw(crc, buf, len);
}

int sf_crc32c_hw_available(void) {
  return 0;
}
#endif

#ifdef SF_HAVE_ISAL
uint32_t sf_crc32c_isal(uint32_t crc, const void *buf, size_t len) {
  const uint8_t *p = buf;
  uint32_t c = ~crc;
  while (len) {
    int n = len > (size_t)INT_MAX ? INT_MAX & ~63 : (int)len;
    c = crc32_iscsi((unsigned char *)(uintptr_t)p, n, c);
    p += n;
    len -= (size_t)n;
  }
  return ~c;
}

int sf_crc32c_isal_available(void) {
  return 1;
}
#else
uint32_t sf_crc32c_isal(uint32_t crc, const void *buf, size_t len) {
  return sf_crc32c_sw(crc, buf, len);
}

int sf_crc32c_isal_available(void) {
  return 0;
}
#endif

uint32_t sf_crc32c(uint32_t crc, const void *buf, size_t len) {
#ifdef SF_HAVE_ISAL
  return sf_crc32c_isal(crc, buf, len);
#else
  return sf_crc32c_hw_available() ? sf_crc32c_hw(crc, buf, len)
                                  : sf_crc32c_sw(crc, buf, len);
#endif
}
