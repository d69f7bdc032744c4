/*
 * crc32c.h - CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the
 * checksum of every block of shard and segment files.
 *
 * Why CRC-32C rather than xxhash: it is what storage formats (iSCSI, ext4,
 * RocksDB, Kafka's record batches) use for corruption detection, it detects
 * all burst errors up to 32 bits, and x86 computes it in hardware (SSE4.2),
 * so verifying every block as a merge copies it costs little next to the disk.
 * When the build finds Intel's ISA-L (Debian's libisal-dev), sf_crc32c is
 * its crc32_iscsi: folding 64 bytes a step with carry-less multiplies
 * (PCLMULQDQ, VPCLMULQDQ on AVX-512 CPUs) it ran 1.5-2.2x faster than the
 * three crc32 streams below, and it is a well-kept library with its own CPU
 * dispatch. The hardware and table paths here remain the fallback.
 *
 * The convention is zlib's: pass 0 to start, feed the previous result to
 * continue, so crc(a||b) == sf_crc32c(sf_crc32c(0, a, la), b, lb).
 * sf_crc32c(0, "123456789", 9) == 0xE3069283 (the standard check value).
 */
#ifndef SF_CRC32C_H
#define SF_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The fastest implementation this CPU supports. Thread-safe. */
uint32_t sf_crc32c(uint32_t crc, const void *buf, size_t len);

/* The implementations, exposed so that tests can check they agree.
 * sf_crc32c_hw may only be called when sf_crc32c_hw_available() is true,
 * sf_crc32c_isal when sf_crc32c_isal_available() is (the build linked
 * ISA-L; it runs on any CPU then). */
uint32_t sf_crc32c_sw(uint32_t crc, const void *buf, size_t len);
uint32_t sf_crc32c_hw(uint32_t crc, const void *buf, size_t len);
int sf_crc32c_hw_available(void);
uint32_t sf_crc32c_isal(uint32_t crc, const void *buf, size_t len);
int sf_crc32c_isal_available(void);

#endif
