/*
 * catalog_impl.h - internals shared by catalog.c (files, queries, the rules
 * every version keeps), catalog_codec.c (one version <-> Avro container
 * bytes), catalog_archive.c (the job archive) and catalog_commit.c. Not part
 * of the public API.
 */
#ifndef SF_CATALOG_IMPL_H
#define SF_CATALOG_IMPL_H

#include <avro.h>
#include <stdint.h>
#include <stdio.h>

#include "catalog.h"

#define SF_CATALOG_FORMAT 2 /* written; format 1 is still read */
#define SF_CATALOG_FORMAT_V1 1
#define SF_CATALOG_SCHEMA_FILE "Catalog.avsc"
#define SF_CATALOG_SCHEMA_V1_FILE "Catalog.v1.avsc"
#define SF_CATALOG_ARCHIVE_SCHEMA_FILE "JobArchive.avsc"
#define SF_CATALOG_ARCHIVE_FORMAT 1

/* One chunk of the job archive, as a version references it: the file
 * <dataset>/SF_CATALOG_JOBS_DIR/<name> holds the jobs whose hash
 * (sf_catalog_job_hash) has `prefix` as its top `depth` bits. */
typedef struct sf_catalog_chunk_ref {
  char *name;      /* "<32 hex digits>.avro": XXH3-128 of the chunk's record */
  uint64_t prefix; /* < 2^depth */
  uint32_t depth;  /* 0..64 */
  uint64_t count;  /* jobs in it, >= 1 */
} sf_catalog_chunk_ref;

struct sf_catalog {
  char *dataset; /* absolute directory; NULL while only decoded */
  uint64_t version, created_at_ms;
  uint32_t format; /* as read (1 or 2); written as SF_CATALOG_FORMAT */
  sf_catalog_index *ix;
  size_t nix;
  sf_catalog_job *jobs; /* the window: the most recent jobs, oldest first */
  size_t njobs;
  sf_catalog_chunk_ref *archive; /* sorted by range, ranges disjoint */
  size_t narchive;
};

/* Frees everything c owns and zeroes it (not c itself). */
void sf_catalog_clear(sf_catalog *c);
void sf_catalog_index_clear(sf_catalog_index *ix);
void sf_catalog_chunk_ref_clear(sf_catalog_chunk_ref *r);
/* Deep copies into *dst (overwritten); on failure *dst is left cleared. */
sf_code sf_catalog_index_copy(sf_catalog_index *dst, const sf_catalog_index *src,
                              sf_err *err);
sf_code sf_catalog_seginfo_copy(sf_seginfo *dst, const sf_seginfo *src, sf_err *err);

/* Field rules besides sf_catalog_check_id (catalog.h). A text (column) is
 * 1..4096 bytes without control characters. A segment path is
 * "segments/<id>". `field` names the value. */
sf_code sf_catalog_check_text(const char *field, const char *s, sf_err *err);
sf_code sf_catalog_check_segpath(const char *field, const char *s, sf_err *err);
/* A job record: its ids, and a version no newer than `newest`. */
sf_code sf_catalog_check_job(const sf_catalog_job *j, uint64_t newest, sf_err *err);

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

/* ---- the container codec, shared by versions and archive chunks -------- */

/* The embedded schema of that file name (SF_CATALOG_*_FILE), parsed; the
 * caller avro_schema_decref()s it. */
sf_code sf_catalog_load_schema(const char *file, avro_schema_t *out, sf_err *err);

/* Builds a record of `schema` with fill(v, ctx, err) (which must leave the
 * last field, `checksum`, set to 8 bytes of anything) and encodes it into a
 * malloc'd buffer (caller frees) whose last 8 bytes hold the XXH3-64 of the
 * bytes before them. `what` names the record in messages. */
typedef sf_code (*sf_catalog_fill_fn)(avro_value_t *v, const void *ctx, sf_err *err);
sf_code sf_catalog_encode_record(avro_schema_t schema, sf_catalog_fill_fn fill,
                                 const void *ctx, const char *what, uint8_t **out,
                                 size_t *len, sf_err *err);

/* Frames an encoded record as a one-block container file, into a malloc'd
 * buffer (*out, *len; the caller frees). */
sf_code sf_catalog_frame_container(avro_schema_t schema, const uint8_t *datum, size_t n,
                                   const char *what, uint8_t **out, size_t *len,
                                   sf_err *err);

/* Walks a container file's framing (see catalog_codec.c) and verifies the
 * record's trailing XXH3-64; *datum and *schema point into buf. */
sf_code sf_catalog_open_container(const uint8_t *buf, size_t len, const char *what,
                                  const uint8_t **datum, size_t *dlen,
                                  const uint8_t **schema, size_t *slen, sf_err *err);

/* Decodes a checksummed datum written with writer schema `wschema`, which
 * must equal `mine`, into a generic value (*v, released with
 * avro_value_decref, and *iface with avro_value_iface_decref): every length
 * is bounded first (sf_avrobin_scan), because avro-c allocates whatever a
 * string claims. SF_EFORMAT when the schemas differ. */
sf_code sf_catalog_read_record(avro_schema_t mine, const uint8_t *datum, size_t dlen,
                               const uint8_t *wschema, size_t wslen, avro_value_t *v,
                               avro_value_iface_t **iface, sf_err *err);

/* Field access for decoders: each fails with SF_ECORRUPT naming the field.
 * A string of at most max bytes without NUL into a malloc'd copy; a long in
 * [min, max]; an array of at most max entries; an array of ids. */
sf_code sf_catalog_get(avro_value_t *rec, const char *name, avro_value_t *f, sf_err *err);
sf_code sf_catalog_get_str(avro_value_t *rec, const char *name, size_t max, char **out,
                           sf_err *err);
sf_code sf_catalog_get_long(avro_value_t *rec, const char *name, int64_t min, int64_t max,
                            int64_t *out, sf_err *err);
sf_code sf_catalog_get_array(avro_value_t *rec, const char *name, size_t max,
                             avro_value_t *arr, size_t *n, sf_err *err);
/* Encoders and decoders of one job record (CommittedJob, ArchivedJob). */
int sf_catalog_put_job(avro_value_t *rec, const sf_catalog_job *j);
sf_code sf_catalog_dec_job(avro_value_t *rec, sf_catalog_job *j, sf_err *err);

/* ---- the job archive (catalog_archive.c) -------------------------------- */

/* The hash that places a staging id in the archive: XXH3-64 of its bytes. */
uint64_t sf_catalog_job_hash(const char *staging_id);

/* The inclusive range of hashes of a chunk ref. */
void sf_catalog_chunk_range(const sf_catalog_chunk_ref *r, uint64_t *lo, uint64_t *hi);

/* The rules of a version's chunk refs: names, prefixes within their depth,
 * counts, sorted and pairwise disjoint ranges. SF_EINVAL naming the ref. */
sf_code sf_catalog_check_archive(const sf_catalog *c, sf_err *err);

/* Moves the oldest jobs of c's window beyond `window` into the archive of
 * the dataset directory ds: the chunks they fall in are read, merged with
 * them, split in two (by the next hash bit) while they hold more than
 * chunk_max jobs, and written as new chunk files (temporary file, fsync,
 * rename; then the directory is fsynced), whose refs replace the old ones
 * in c. For a committer under the shared catalog lock, before the version
 * is written: gc, which removes chunks no kept version names, cannot run
 * meanwhile. */
sf_code sf_catalog_archive_spill(sf_catalog *c, const char *ds, size_t window,
                                 size_t chunk_max, sf_err *err);

/* ---- committing (catalog_commit.c) ---------------------------------------- */

/* What a commit attempt decided. */
typedef struct sf_catalog_outcome {
  uint64_t version; /* the version published, or that already holds the change */
  int already;      /* set by the attempt: nothing to publish */
  unsigned attempts;
} sf_catalog_outcome;

/* One attempt of a commit on c, the newest version (version 0 and empty
 * when there is none; the loop frees it): either set out->already and
 * out->version (the change is there), or turn c into the next version,
 * ready to publish. ds is the dataset directory. Runs under the shared
 * catalog lock. */
typedef sf_code (*sf_catalog_attempt_fn)(void *ctx, const char *ds, sf_catalog *c,
                                         sf_catalog_outcome *out, sf_err *err);

/* The order every commit follows (catalog_commit.c's top): the shared lock,
 * files[nfiles] checked to exist with their sizes under it, then attempts
 * on the newest version, each published by link(2); a lost race is retried
 * up to max_attempts (0 = 32) times with backoff. `what` names the commit
 * in the message of giving up. */
sf_code sf_catalog_commit_loop(const char *dataset, const sf_seginfo *files,
                               size_t nfiles, sf_catalog_attempt_fn attempt_fn, void *ctx,
                               unsigned max_attempts, const char *what,
                               sf_catalog_outcome *out, sf_err *err);

/* The request rules of one segment description (ids, path, shard ids,
 * fragments, ranges). */
sf_code sf_catalog_check_seginfo(const sf_seginfo *s, sf_err *err);
/* The first index parameter in which a and b differ (NULL if none), with
 * both values formatted into av and bv. */
const char *sf_catalog_param_diff(const sf_seginfo *a, const sf_seginfo *b, char av[32],
                                  char bv[32]);

/* Decodes the bytes of a chunk file on their own (for the fuzz target):
 * the framing, checksum and every rule a chunk keeps, but not a version's
 * reference to it. *njobs is its job count. Errors name `what`. */
sf_code sf_catalog_archive_decode(const uint8_t *buf, size_t len, const char *what,
                                  size_t *njobs, sf_err *err);

/* Deep copy of a job record into *dst (overwritten; cleared on failure). */
sf_code sf_catalog_job_copy(sf_catalog_job *dst, const sf_catalog_job *src, sf_err *err);

#endif
