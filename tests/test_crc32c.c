/* test_crc32c.c - the CRC-32C of shard and segment blocks: standard check
 * values, incremental use, and agreement of the hardware and table paths. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* cmocka.h needs these before it */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/crc32c.h"

static void test_check_value_of_123456789_is_e3069283(void **state) {
  assert_int_equal(sf_crc32c(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(sf_crc32c_sw(0, "123456789", 9), 0xE3069283u);
  if (sf_crc32c_hw_available())
    assert_int_equal(sf_crc32c_hw(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(sf_crc32c_isal(0, "123456789", 9), 0xE3069283u);
}

/* Vectors from RFC 3720 (iSCSI), appendix B.4. */
static void test_rfc3720_vectors_match(void **state) {
  uint8_t buf[32];
  memset(buf, 0, sizeof buf);
  assert_int_equal(sf_crc32c(0, buf, 32), 0x8A9136AAu);
  memset(buf, 0xff, sizeof buf);
  assert_int_equal(sf_crc32c(0, buf, 32), 0x62A8AB43u);
  for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
  assert_int_equal(sf_crc32c(0, buf, 32), 0x46DD794Eu);
  for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
  assert_int_equal(sf_crc32c(0, buf, 32), 0x113FDB5Cu);
}

static void test_empty_input_leaves_the_crc_unchanged(void **state) {
  assert_int_equal(sf_crc32c(0, NULL, 0), 0u);
  assert_int_equal(sf_crc32c(0x12345678u, "", 0), 0x12345678u);
}

static void fill(uint8_t *b, size_t n, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b[i] = (uint8_t)x;
  }
}

static void test_feeding_pieces_equals_one_call_at_every_split(void **state) {
  uint8_t b[300];
  fill(b, sizeof b, 7);
  uint32_t whole = sf_crc32c(0, b, sizeof b);
  for (size_t cut = 0; cut <= sizeof b; cut++) {
    assert_int_equal(sf_crc32c(sf_crc32c(0, b, cut), b + cut, sizeof b - cut), whole);
    assert_int_equal(sf_crc32c_sw(sf_crc32c_sw(0, b, cut), b + cut, sizeof b - cut),
                     whole);
  }
}

static void test_hardware_and_table_paths_agree_on_random_buffers(void **state) {
  if (!sf_crc32c_hw_available()) {
    skip();
    return;
  }
  enum { N = 1 << 16 };
  uint8_t *b = malloc(N);
  assert_non_null(b);
  fill(b, N, 42);
  uint64_t x = 99;
  for (int i = 0; i < 2000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    size_t off = x % 64, len = (x >> 8) % (i < 1000 ? 100 : N - 64);
    uint32_t seed = (uint32_t)(x >> 32);
    assert_int_equal(sf_crc32c_hw(seed, b + off, len), sf_crc32c_sw(seed, b + off, len));
  }
  free(b);
}

/* ISA-L (when the build links it; else the wrapper is the table path)
 * gives the table path's answer on every length up to a few of its 64-byte
 * folds, at every alignment, from any starting CRC, and on long buffers. */
static void test_isal_and_table_paths_agree_on_every_length_and_alignment(void **state) {
  if (!sf_crc32c_isal_available())
    print_message("  built without ISA-L: the fallback is checked\n");
  enum { N = 1 << 20 };
  uint8_t *b = malloc(N);
  assert_non_null(b);
  fill(b, N, 7);
  for (size_t off = 0; off < 16; off++)
    for (size_t len = 0; len <= 600; len++) {
      uint32_t seed = (uint32_t)(off * 0x9E3779B1u + len);
      if (sf_crc32c_isal(seed, b + off, len) != sf_crc32c_sw(seed, b + off, len))
        fail_msg("offset %zu length %zu", off, len);
    }
  assert_int_equal(sf_crc32c_isal(1, b + 3, N - 3), sf_crc32c_sw(1, b + 3, N - 3));
  assert_int_equal(sf_crc32c(0, b, N), sf_crc32c_sw(0, b, N));
  free(b);
}

/* The hardware path runs three interleaved streams over blocks of 8 KiB,
 * then of 256 bytes, then one stream: every length around those edges, at
 * every alignment of the start, gives the table path's answer. */
static void test_interleaved_streams_agree_at_every_block_edge(void **state) {
  if (!sf_crc32c_hw_available()) {
    skip();
    return;
  }
  enum { N = 3 * 8192 * 2 + 3 * 256 * 3 + 64 };
  uint8_t *b = malloc(N + 8);
  assert_non_null(b);
  fill(b, N + 8, 5);
  const size_t edges[] = {3 * 256, 3 * 8192, 2 * 3 * 8192, 3 * 8192 + 3 * 256,
                          2 * 3 * 8192 + 2 * 3 * 256};
  for (size_t e = 0; e < sizeof edges / sizeof edges[0]; e++)
    for (size_t len = edges[e] - 17; len <= edges[e] + 17 && len <= N; len++)
      for (size_t off = 0; off < 8; off++) {
        uint32_t want = sf_crc32c_sw(0x1234567u, b + off, len);
        if (sf_crc32c_hw(0x1234567u, b + off, len) != want)
          fail_msg("length %zu at offset %zu", len, off);
      }
  /* Whole and in pieces cut inside a block agree too. */
  uint32_t whole = sf_crc32c_hw(0, b, N);
  for (size_t cut = 1; cut < N; cut += 1021)
    assert_int_equal(sf_crc32c_hw(sf_crc32c_hw(0, b, cut), b + cut, N - cut), whole);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_check_value_of_123456789_is_e3069283),
      cmocka_unit_test(test_rfc3720_vectors_match),
      cmocka_unit_test(test_empty_input_leaves_the_crc_unchanged),
      cmocka_unit_test(test_feeding_pieces_equals_one_call_at_every_split),
      cmocka_unit_test(test_interleaved_streams_agree_at_every_block_edge),
      cmocka_unit_test(test_hardware_and_table_paths_agree_on_random_buffers),
      cmocka_unit_test(test_isal_and_table_paths_agree_on_every_length_and_alignment),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
