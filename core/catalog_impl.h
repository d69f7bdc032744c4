/*
 * catalog_impl.h - internals shared by catalog.c (files, commit, queries)
 * and catalog_codec.c (one version <-> Avro container bytes, and the rules
 * every version keeps). Not part of the public API.
 */
#ifndef SF_CATALOG_IMPL_H
#define SF_CATALOG_IMPL_H

#include <stdint.h>
#include <stdio.h>

#include "catalog.h"

#define SF_CATALOG_FORMAT 1
#define SF_CATALOG_SCHEMA_FILE "Catalog.avsc"

struct sf_catalog {
  char *dataset; /* absolute directory; NULL while only decoded */
  uint64_t version, created_at_ms;
  sf_catalog_index *ix;
  size_t nix;
  sf_catalog_job *jobs;
  size_t njobs;
};

/* Frees everything c owns and zeroes it (not c itself). */
void sf_catalog_clear(sf_catalog *c);
void sf_catalog_index_clear(sf_catalog_index *ix);
void sf_catalog_job_clear(sf_catalog_job *j);
/* Deep copies into *dst (overwritten); on failure *dst is left cleared. */
sf_code sf_catalog_index_copy(sf_catalog_index *dst, const sf_catalog_index *src, sf_err *err);
sf_code sf_catalog_seginfo_copy(sf_seginfo *dst, const sf_seginfo *src, sf_err *err);

/* Field rules besides sf_catalog_check_id (catalog.h). A text (column) is
 * 1..4096 bytes without control characters. A segment path is
 * "segments/<id>". `field` names the value. */
sf_code sf_catalog_check_text(const char *field, const char *s, sf_err *err);
sf_code sf_catalog_check_segpath(const char *field, const char *s, sf_err *err);

/* The invariants of a version: the rules above for every field, limits,
 * unique index names, segment ids and staging ids, pairwise disjoint
 * fragments within an index, versions no newer than c's own. SF_ECORRUPT
 * naming the field. */
sf_code sf_catalog_validate(const sf_catalog *c, sf_err *err);

/* Encodes c as the bytes of an Avro container file into a malloc'd buffer
 * (*out, *len; the caller frees). `what` names the file in messages. */
sf_code sf_catalog_encode(const sf_catalog *c, const char *what, uint8_t **out, size_t *len,
                          sf_err *err);
/* sf_catalog_encode, then writes all of it to fd (not synced); a failed
 * write names `what` and the system's reason. */
sf_code sf_catalog_write_fd(const sf_catalog *c, int fd, const char *what, sf_err *err);
/* The same to a stdio stream (written and flushed, not synced). */
sf_code sf_catalog_write(const sf_catalog *c, FILE *fp, const char *what, sf_err *err);

/* Decodes and validates len bytes of a container file into *c (which must
 * be zeroed; on failure it is left cleared). Checks the framing, sizes and
 * checksum before any Avro decoding. Errors (SF_ECORRUPT, SF_EFORMAT) name
 * `what`. */
sf_code sf_catalog_decode(const uint8_t *buf, size_t len, const char *what, sf_catalog *c,
                          sf_err *err);

#endif
