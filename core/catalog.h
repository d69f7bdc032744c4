/*
 * catalog.h - the versioned catalog of a dataset's vector indexes, and the
 * commit that adds segments to it (docs/catalog.md).
 *
 * <dataset>/_indices/_catalog/ holds one immutable file per version,
 * v<20-digit version>.avro: an Avro container file (schemas/Catalog.avsc)
 * holding one record that lists every logical index of the dataset with its
 * segments, and every job (staging id) ever committed. The newest version is
 * the catalog; older ones stay until `segforge gc` drops them.
 *
 * A commit never changes a file. It reads the newest version N, checks the
 * new segments against it, writes version N+1 under a temporary name,
 * fsyncs it and publishes it with link(2), which fails with EEXIST when a
 * concurrent writer published N+1 first. The loser re-reads, re-checks and
 * tries again (bounded, with jittered backoff). So versions form a chain in
 * which every one was checked against its predecessor, and a crash at any
 * point leaves either version N or N+1, never a torn file under a version
 * name (temporary names never parse as versions).
 *
 * Readers (search, inspect) open the newest version without any lock. A
 * catalog object is immutable once opened, so threads may share one.
 */
#ifndef SF_CATALOG_H
#define SF_CATALOG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "seginfo.h"
#include "types.h"

/* Directories, relative to the dataset. */
#define SF_CATALOG_DIR "_indices/_catalog"
#define SF_CATALOG_QUANTIZERS_DIR "_indices/quantizers"
#define SF_CATALOG_STAGING_DIR "_indices/_staging"
#define SF_CATALOG_SEGMENTS_DIR "_indices/segments"

/* Sane limits checked on every catalog file read and every commit. */
#define SF_CATALOG_MAX_FILE_BYTES (1ULL << 30)
#define SF_CATALOG_MAX_ID 255u      /* bytes of an index name, staging/segment/shard id */
#define SF_CATALOG_MAX_TEXT 4096u   /* bytes of a column name or a path */
#define SF_CATALOG_MAX_INDEXES 65536u
#define SF_CATALOG_MAX_SEGMENTS (1u << 20) /* per index, and per job */
#define SF_CATALOG_MAX_SHARDS (1u << 20)   /* shard ids per segment */
#define SF_CATALOG_MAX_JOBS (1u << 24)

/* An id (index name, staging, segment or shard id) is 1..255 bytes without
 * '/' or control characters and is not "." or "..", so that it is also a
 * safe file name (a staging id names <dataset>/_indices/_staging/<id>/).
 * SF_EINVAL naming `field` (e.g. "--staging-id") and the rule. Commands check
 * ids with it as they parse their flags, before any I/O. */
sf_code sf_catalog_check_id(const char *field, const char *s, sf_err *err);

typedef struct sf_catalog sf_catalog;

/* A committed segment: its description (path relative to
 * <dataset>/_indices/, parameters those of its index) and its history. */
typedef struct sf_catalog_segment {
  sf_seginfo info;
  char *staging_id;  /* the job that committed it */
  uint64_t added_in; /* the version that added it */
} sf_catalog_segment;

typedef struct sf_catalog_index {
  char *name;
  char *column;
  sf_index_type index_type;
  sf_metric metric;
  uint32_t dim, nlist;
  uint64_t quantizer_checksum;
  sf_catalog_segment *segs; /* fragments pairwise disjoint */
  size_t nsegs;
} sf_catalog_index;

/* A committed job; committing its staging id again is a no-op. */
typedef struct sf_catalog_job {
  char *staging_id;
  char *index_name;
  uint64_t version; /* the version that committed it */
  uint64_t committed_at_ms;
  char **segment_ids;
  size_t nsegment_ids;
} sf_catalog_job;

/* Readers take no lock. Committers hold a shared flock(2) on
 * <dataset>/_indices/_catalog/LOCK and `segforge gc` an exclusive one, so gc
 * never deletes a file a commit in progress is about to reference, while
 * commits still run concurrently with each other. */
#define SF_CATALOG_LOCK_NAME "LOCK"

/* ---- reading ------------------------------------------------------------ */

/* The dataset (a directory, or a file:// URI naming one) as an absolute
 * directory path in a malloc'd string (caller frees). SF_ENOTFOUND when it
 * does not exist, SF_EINVAL for another kind of URI or a non-directory. */
sf_code sf_catalog_resolve_dataset(const char *dataset, char **dir, sf_err *err);

/* The file name of a version ("v00000000000000000001.avro") into buf
 * (at least 32 bytes); and the reverse: 1 and *version when name is exactly
 * a version file name, 0 otherwise (temporary files are not). */
void sf_catalog_version_name(uint64_t version, char *buf, size_t size);
int sf_catalog_parse_version_name(const char *name, uint64_t *version);

/* Opens the newest version of the dataset (a directory or a file:// URI).
 * SF_ENOTFOUND when the dataset has no version yet; SF_ECORRUPT or
 * SF_EFORMAT naming the file when the newest version does not read (an
 * older version is never silently used instead). *out is freed by
 * sf_catalog_free. */
sf_code sf_catalog_open_latest(const char *dataset, sf_catalog **out, sf_err *err);
/* Opens one version; SF_ENOTFOUND when it does not exist. */
sf_code sf_catalog_open_version(const char *dataset, uint64_t version, sf_catalog **out,
                                sf_err *err);
/* Accepts NULL. Pointers obtained from c die with it. */
void sf_catalog_free(sf_catalog *c);

/* The versions present, ascending, in a malloc'd array (caller frees; NULL
 * with *n == 0 when there is none). Files that are not versions (temporary
 * files of writers) are ignored. */
sf_code sf_catalog_list_versions(const char *dataset, uint64_t **versions, size_t *n,
                                 sf_err *err);

uint64_t sf_catalog_version(const sf_catalog *c);
uint64_t sf_catalog_created_at_ms(const sf_catalog *c);
/* The dataset as an absolute directory path (owned by c). */
const char *sf_catalog_dataset(const sf_catalog *c);

size_t sf_catalog_num_indexes(const sf_catalog *c);
const sf_catalog_index *sf_catalog_index_at(const sf_catalog *c, size_t i);
/* NULL when the version has no index of that name. */
const sf_catalog_index *sf_catalog_find_index(const sf_catalog *c, const char *name);

size_t sf_catalog_num_jobs(const sf_catalog *c);
const sf_catalog_job *sf_catalog_job_at(const sf_catalog *c, size_t i);
/* NULL when the staging id was never committed. */
const sf_catalog_job *sf_catalog_find_job(const sf_catalog *c, const char *staging_id);

/* Absolute paths, malloc'd (caller frees); NULL on allocation failure. */
char *sf_catalog_segment_path(const sf_catalog *c, const sf_catalog_segment *s);
char *sf_catalog_quantizer_path(const sf_catalog *c, const sf_catalog_index *ix);
/* All of ix's segment paths, absolute, in catalog order: a malloc'd array of
 * malloc'd strings, freed with sf_catalog_paths_free. */
sf_code sf_catalog_segment_paths(const sf_catalog *c, const sf_catalog_index *ix,
                                 char ***paths, size_t *n, sf_err *err);
void sf_catalog_paths_free(char **paths, size_t n);

/* The version as JSON: {"version", "created_at_ms", "indexes": [{"name",
 * "column", "index_type", "metric", "dim", "nlist", "quantizer_checksum" (16
 * hex digits), "quantizer_path", "num_rows", "bytes", "segments": [{
 * "segment_id", "path", "bytes", "num_rows", "fragments" (range list),
 * "shard_ids", "staging_id", "added_in"}]}], "jobs": [{"staging_id",
 * "index_name", "version", "committed_at_ms", "segment_ids"}]}. With
 * index_name set, only that index (and its jobs). A new reference the
 * caller json_decref()s; NULL on allocation failure. */
json_t *sf_catalog_describe_json(const sf_catalog *c, const char *index_name);

/* ---- committing --------------------------------------------------------- */

typedef struct sf_catalog_commit_req {
  const char *dataset;    /* directory or file:// URI */
  const char *index_name; /* created by its first commit */
  const char *column;     /* must equal the index's */
  const char *staging_id; /* the job; recorded so a second commit is a no-op */
  /* The new segments, borrowed. Paths are relative to <dataset>/_indices/
   * and must be "segments/<file name>"; each file must exist with `bytes`
   * bytes. All must share the same parameters. */
  const sf_seginfo *segs;
  size_t nsegs;
  /* The quantizer file to keep at _indices/quantizers/<checksum>; NULL =
   * <dataset>/_indices/_staging/<staging_id>/quantizer. Not read when the
   * kept copy is already there. */
  const char *quantizer_path;
  /* Swap out the index's segments whose fragments the new ones cover; a
   * segment only partly covered is refused. Without it any overlap is. */
  int replace;
  unsigned max_attempts; /* races lost before SF_ECONFLICT; 0 = 32 */
} sf_catalog_commit_req;

typedef struct sf_catalog_commit_result {
  uint64_t version;  /* the version that holds the job */
  int already;       /* 1: the job was committed before; nothing was written */
  unsigned attempts; /* 1 unless races were lost */
  size_t nreplaced;  /* segments swapped out by replace */
} sf_catalog_commit_result;

/* Commits req's segments as one new version (see the top of this file).
 * Refusals change nothing and name what is wrong:
 *   SF_EMISMATCH - column, type, metric, dim, nlist or quantizer differ from
 *                  the index's (naming the field and both values);
 *   SF_EOVERLAP  - a new segment shares fragments with a committed one
 *                  (naming both segments and the fragments as a range list),
 *                  or with replace a committed segment is only partly covered;
 *   SF_ECONFLICT - the staging id was committed with other segments, or
 *                  max_attempts races were lost;
 *   SF_EEXIST    - a segment id is already in the catalog;
 *   SF_ENOTFOUND, SF_EMISMATCH - a segment file is missing or has another size;
 *   SF_ECHECKSUM - the quantizer file's checksum is not the segments'.
 * Fault points (SF_FAULT, a comma-separated list of points, makes the
 * process _exit(99) there, as a crash would): catalog.before_link (the new
 * version is written and fsynced under its temporary name),
 * catalog.after_link (published, temporary not yet removed),
 * catalog.torn_temp (the temporary file cut to half its size first),
 * catalog.before_quantizer_rename. */
sf_code sf_catalog_commit(const sf_catalog_commit_req *req, sf_catalog_commit_result *res,
                          sf_err *err);

#endif
