/*
 * memcost.h - what an allocation really costs the heap, for bounds that
 * promise memory (serve's --max-pending-bytes). Counting the bytes asked
 * for is not enough: glibc's malloc rounds each request up to a 16-byte
 * multiple with an 8-byte header and at least 32 bytes, so a job of a few
 * dozen small allocations held 1.7 KB beyond the event bytes it counted.
 *
 * sf_mem_of measures an allocation that exists; sf_mem_chunk estimates one
 * by its size (for memory a library allocates where the pointer is not
 * ours to measure). Both are glibc's figures (64-bit); under another
 * allocator, or a sanitizer's, they stay close, and the tests check that
 * what is counted covers what is allocated.
 */
#ifndef SF_MEMCOST_H
#define SF_MEMCOST_H

#include <malloc.h>
#include <stddef.h>

/* The bytes a malloc'd block p takes: what it can hold plus its header;
 * 0 for NULL. p must come from malloc, calloc, realloc or strdup. */
static inline size_t sf_mem_of(const void *p) {
  return p ? malloc_usable_size((void *)p) + sizeof(size_t) : 0;
}

/* The bytes a malloc(n) takes: n and the header rounded up to 16, at
 * least 32. */
static inline size_t sf_mem_chunk(size_t n) {
  size_t c = (n + sizeof(size_t) + 15) & ~(size_t)15;
  return c < 32 ? 32 : c;
}

#endif
