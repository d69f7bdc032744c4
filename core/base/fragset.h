/*
 * fragset.h - fragment sets: CRoaring bitmaps of uint32 fragment ids, and
 * the two outside forms they travel in: CRoaring's portable serialization
 * (events, shard and segment files, catalog) and range lists such as
 * "0-63,70" (flags and JSON for people).
 *
 * Bytes from outside are read only through sf_fragset_decode, the one
 * decoder every reader of events, shard and segment files and catalog
 * versions uses. CRoaring's roaring_bitmap_portable_deserialize_safe bounds
 * its reads but takes the content as it comes (its header says so), and
 * the packaged CRoaring (0.2.66) has no roaring_bitmap_internal_validate:
 * an array container of 5, 1, 3 deserializes, and then intersecting it
 * with {1} answers "empty". So sf_fragset_decode first walks the bytes
 * itself, following the format specification (RoaringFormatSpec):
 *  - the cookie, and at most 65536 containers;
 *  - every header, offset and container within the given length, and
 *    exactly the given length used;
 *  - keys strictly increasing; each offset (where the format has them)
 *    equal to where its container really starts;
 *  - array containers (at most 4096 values) strictly increasing;
 *  - bitset containers (more than 4096 values) holding as many bits as
 *    their header claims;
 *  - run containers with at least one run, runs in order that neither
 *    overlap nor touch nor pass 65535, whose lengths add up to the
 *    header's cardinality.
 * Only then does CRoaring deserialize them.
 */
#ifndef SF_FRAGSET_H
#define SF_FRAGSET_H

#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

/* Frees a bitmap; accepts NULL (the packaged CRoaring's roaring_bitmap_free
 * does not, so every free in segforge goes through here). */
void sf_fragset_free(roaring_bitmap_t *b);

/* Deserialises exactly `len` bytes of portable roaring after checking them
 * as described above (trailing bytes, a short buffer or content CRoaring
 * would not have written are SF_ECORRUPT). `what` names the source in
 * messages. The bitmap is freed with sf_fragset_free. */
sf_code sf_fragset_decode(const void *buf, size_t len, const char *what,
                          roaring_bitmap_t **out, sf_err *err);

/* The heap bytes b takes, estimated from the outside (CRoaring's pointers
 * are not ours to measure) and on the side of more: the bitmap, its
 * container index, and each container's header and values, each rounded
 * as malloc rounds (core/base/memcost.h), after CRoaring 0.2's layout. Exact
 * only for a bitmap whose containers hold no spare capacity: decoded ones
 * hold none; call roaring_bitmap_shrink_to_fit after growing one. 0 for
 * NULL. O(containers). */
size_t sf_fragset_mem(const roaring_bitmap_t *b);

/* Serialises into a malloc'd buffer (caller frees); *len receives its size. */
sf_code sf_fragset_encode(const roaring_bitmap_t *b, uint8_t **out, size_t *len,
                          sf_err *err);

/* Parses a range list ("0-63,70"; whitespace not allowed; empty list is an
 * error) into a new bitmap. `what` names the flag or field in messages. */
sf_code sf_fragset_parse(const char *s, const char *what, roaring_bitmap_t **out,
                         sf_err *err);

/* Formats as a range list into a malloc'd string (caller frees); "" for the
 * empty set. */
char *sf_fragset_format(const roaring_bitmap_t *b);

/* Formats at most `max_items` ranges, then "…(+N more)"; for error messages. */
char *sf_fragset_format_short(const roaring_bitmap_t *b, size_t max_items);

#endif
