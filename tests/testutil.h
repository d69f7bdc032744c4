/*
 * testutil.h - helpers shared by the unit tests: a fresh scratch directory
 * per test, and file-mangling helpers for corruption tests.
 * cmocka is included by each test file itself.
 */
#ifndef SF_TESTUTIL_H
#define SF_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

/* Creates and returns a new empty directory under $SF_TEST_TMP (or /tmp),
 * named after `tag`; the string is static storage overwritten per call...
 * so copy it. Aborts the test on failure. */
const char *tu_tmpdir(const char *tag);

/* Joins dir and name into a static buffer (one of 8 rotating slots). */
const char *tu_path(const char *dir, const char *name);

/* Reads a whole file into a malloc'd buffer (caller frees); *len its size. */
uint8_t *tu_read_file(const char *path, size_t *len);
/* Writes buf to path, replacing it. */
void tu_write_file(const char *path, const void *buf, size_t len);
/* XORs the byte at offset with mask. */
void tu_flip_byte(const char *path, size_t offset, uint8_t mask);
/* Cuts the file to len bytes. */
void tu_truncate(const char *path, size_t len);
/* Counts the entries of directory dir whose names do not start with '.'
 * and contain `needle` (NULL: every such entry). A directory that does not
 * exist counts 0 when may_be_missing, and aborts the test otherwise. */
size_t tu_count_entries(const char *dir, const char *needle, int may_be_missing);
/* mkdir -p of "<base>/<rel>" below an existing base, with plain mkdir(2):
 * no fsync, so that it adds no sync points to a power-loss run. */
void tu_mkdirs(const char *base, const char *rel);

#endif
