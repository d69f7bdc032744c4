/*
 * catalog.h - the versioned catalog of a dataset's vector indexes, and the
 * commit that adds segments to it (docs/catalog.md).
 *
 * <dataset>/_indices/_catalog/ holds one immutable file per version,
 * v<20-digit version>.avro: an Avro container file (core/catalog/Catalog.avsc)
 * holding one record that lists every logical index of the dataset with its
 * segments, the most recent committed jobs (staging ids) in full, and the
 * chunks of the job archive that hold every older one. The newest version
 * is the catalog; older ones stay until `segforge gc` drops them.
 *
 * Why an archive: a version is rewritten by every commit, so whatever it
 * lists costs every commit. Segments are live state and must be there; the
 * jobs are history, needed only to recognise a job committed again. So a
 * version keeps a window of the newest jobs (SF_CATALOG_JOB_WINDOW, W) and
 * moves older ones into the archive: immutable, content-addressed chunk
 * files in _catalog/jobs/, each holding the jobs whose staging-id hash
 * falls in one range (a prefix of its bits; a chunk over
 * SF_CATALOG_ARCHIVE_CHUNK_JOBS jobs splits in two). The window fills to
 * 1.5 W, then one commit moves its oldest W/2 jobs out, rewriting only the
 * chunks they fall in (synced together); a lookup reads at most one chunk.
 * So the cost of a commit and the size of a version follow the live
 * segments and the window, plus one reference per chunk (about 50 bytes
 * per ~700 archived jobs), not the whole history. Lookups stay exact: a
 * chunk lists its staging ids verbatim.
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
 * No published version names a file that is not there, and gc never
 * removes a file a commit in progress will name: a commit checks its files
 * under the catalog lock that gc holds exclusively, and a build declares
 * the files it will commit to gc beforehand ("intents", at the end).
 *
 * Readers (search, inspect) open the newest version without any lock. A
 * catalog object is immutable once opened, so threads may share one.
 */
#ifndef SF_CATALOG_H
#define SF_CATALOG_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/base/types.h"
#include "core/format/seginfo.h"

/* Directories, relative to the dataset. */
#define SF_CATALOG_DIR "_indices/_catalog"
#define SF_CATALOG_QUANTIZERS_DIR "_indices/quantizers"
#define SF_CATALOG_STAGING_DIR "_indices/_staging"
#define SF_CATALOG_SEGMENTS_DIR "_indices/segments"

/* Sane limits checked on every catalog file read and every commit. */
#define SF_CATALOG_MAX_FILE_BYTES (1ULL << 30)
#define SF_CATALOG_MAX_ID 255u    /* bytes of an index name, staging/segment/shard id */
#define SF_CATALOG_MAX_TEXT 4096u /* bytes of a column name or a path */
#define SF_CATALOG_MAX_INDEXES 65536u
#define SF_CATALOG_MAX_SEGMENTS (1u << 20) /* per index, and per job */
#define SF_CATALOG_MAX_SHARDS (1u << 20)   /* shard ids per segment */
#define SF_CATALOG_MAX_JOBS (1u << 24)     /* in a version's window, or a chunk */

/* The job archive: chunk files, and the defaults of its two sizes. */
#define SF_CATALOG_JOBS_DIR "_indices/_catalog/jobs"
#define SF_CATALOG_JOB_WINDOW 128u          /* jobs a version keeps in full (to 1.5x) */
#define SF_CATALOG_ARCHIVE_CHUNK_JOBS 1024u /* a chunk over this splits in two */

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

/* A committed job; committing its staging id again is a no-op. Its
 * segment ids are those it committed: a later replace or compaction may
 * have swapped them out. */
typedef struct sf_catalog_job {
  char *staging_id;
  char *index_name;
  uint64_t version; /* the version that committed it */
  uint64_t committed_at_ms;
  char **segment_ids;
  size_t nsegment_ids;
} sf_catalog_job;

/* Readers take no lock. Committers (and builders registering an intent,
 * below) hold a shared flock(2) on <dataset>/_indices/_catalog/LOCK and
 * `segforge gc` an exclusive one for the whole of its decide-and-delete, so
 * gc and a commit never interleave, while commits still run concurrently
 * with each other. */
#define SF_CATALOG_LOCK_NAME "LOCK"

/* Takes that lock on the dataset directory `dir` (absolute, as resolved by
 * sf_catalog_resolve_dataset): shared, or exclusive (gc). Creates _catalog/
 * and LOCK when missing, and waits as long as the other kind is held. The
 * descriptor (close-on-exec, its own open file description, so two holders
 * in one process exclude each other like two processes) goes to *fd; the
 * caller closes it to release the lock. */
sf_code sf_catalog_lock(const char *dir, int exclusive, int *fd, sf_err *err);

/* ---- reading ------------------------------------------------------------ */

/* A dataset in its canonical form: the one spelling under which events are
 * grouped into jobs, the catalog and gc find it, the CLI names it, and
 * SegmentsCommitted announces it. Every spelling of one directory gives the
 * same string:
 *  - a local path (absolute; relative ones are taken from the working
 *    directory), or a file: URI naming a local absolute path: file:///p,
 *    file://localhost/p or file:/p (RFC 8089; the scheme in any case),
 *    with its %XX escapes decoded; a URI with another host, a query or a
 *    fragment, a bad escape or %00, or another scheme is SF_EINVAL;
 *  - then realpath(3): absolute, every symbolic link, "." and ".." and
 *    duplicate or trailing slash resolved. Links are resolved, not kept,
 *    because two spellings through a link name the same files (staging
 *    root, catalog, failed markers): grouped apart, they would build the
 *    same staging id twice at once. The dataset roots of serve are
 *    compared in this form too.
 * It must exist and be a directory. Into *dir, malloc'd (caller frees).
 * SF_ENOTFOUND when it does not exist, SF_EINVAL for a bad URI or a
 * non-directory, SF_EIO for another failure of realpath(3), after which
 * errno holds its cause (ENOTDIR, ELOOP, EACCES, ENOMEM, ...), so that a
 * caller can tell whose fault it is. */
sf_code sf_catalog_resolve_dataset(const char *dataset, char **dir, sf_err *err);

/* The first step of the above alone: the local path a dataset names
 * (file: URI decoded), not yet resolved; malloc'd into *path. */
sf_code sf_catalog_dataset_path(const char *dataset, char **path, sf_err *err);

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

/* Makes the version c was read from durable (fsyncs the catalog directory).
 * A version read back may have been linked by a writer killed before its
 * directory fsync, so it is in the page cache only: whoever reports a job
 * it finds there as committed (and so lets its events go) calls this first.
 * The files the version names were made durable before it was linked. */
sf_code sf_catalog_sync(const sf_catalog *c, sf_err *err);

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

/* The jobs the version keeps in full (its window of the most recent ones),
 * oldest first; older jobs are in the archive, see sf_catalog_lookup_job. */
size_t sf_catalog_num_jobs(const sf_catalog *c);
const sf_catalog_job *sf_catalog_job_at(const sf_catalog *c, size_t i);
/* Every job ever committed: the window and the archive. */
uint64_t sf_catalog_num_jobs_total(const sf_catalog *c);

/* Whether the staging id was ever committed, exactly: the window, then the
 * one archive chunk its hash falls in (one file read, checked against the
 * name and checksum the version gives it). SF_OK and *found = 1 with a copy
 * of the job in *out (the caller frees it with sf_catalog_job_clear; out may
 * be NULL); SF_OK and *found = 0 when it never was. A chunk that does not
 * read is an error (SF_ECORRUPT, SF_ENOTFOUND naming the file), never "not
 * committed". Needs the catalog's dataset (an opened version). */
sf_code sf_catalog_lookup_job(const sf_catalog *c, const char *staging_id,
                              sf_catalog_job *out, int *found, sf_err *err);
/* The same for n staging ids at once (found[i] = 0 or 1), reading each
 * chunk at most once: for gc, which asks about every staging root. */
sf_code sf_catalog_lookup_jobs(const sf_catalog *c, const char *const *ids, size_t n,
                               uint8_t *found, sf_err *err);
/* Frees what a job record owns and zeroes it; accepts NULL. */
void sf_catalog_job_clear(sf_catalog_job *j);

/* sf_catalog_lookup_job, but answered without a read when the process
 * keeps the staging-id hashes of the chunk (every lookup that reads a chunk
 * keeps them, catalog_archive.c says how) and the id's hash is not among
 * them: serve's intake looks every new job up. The one difference: a chunk
 * file removed or damaged after the process read it is not noticed by a
 * lookup the hashes answer (commits and gc read the file every time). */
sf_code sf_catalog_lookup_job_cached(const sf_catalog *c, const char *staging_id,
                                     sf_catalog_job *out, int *found, sf_err *err);
/* The bound of the hashes kept: 8 bytes each, so 8 MiB by default, the
 * archive of a million jobs; at most SF_CATALOG_CHUNK_CACHE_SLOTS chunks. */
#define SF_CATALOG_CHUNK_CACHE_DEFAULT ((size_t)1 << 20)
#define SF_CATALOG_CHUNK_CACHE_SLOTS 4096u
/* Sets the most hashes kept (0: none), emptying the cache and zeroing its
 * counts. Thread-safe. */
void sf_catalog_chunk_cache_config(size_t hashes);
/* Cached lookups answered from the hashes, and those that read the chunk;
 * the chunks and hashes kept. */
void sf_catalog_chunk_cache_stats(uint64_t *hits, uint64_t *misses, size_t *chunks,
                                  size_t *hashes);
/* The archive chunks the version references (for gc, which keeps them):
 * file names in <dataset>/SF_CATALOG_JOBS_DIR/, owned by c. */
size_t sf_catalog_num_archive_chunks(const sf_catalog *c);
const char *sf_catalog_archive_chunk_name(const sf_catalog *c, size_t i);

/* Absolute paths, malloc'd (caller frees); NULL on allocation failure. */
char *sf_catalog_segment_path(const sf_catalog *c, const sf_catalog_segment *s);
char *sf_catalog_quantizer_path(const sf_catalog *c, const sf_catalog_index *ix);
/* All of ix's segment paths, absolute, in catalog order: a malloc'd array of
 * malloc'd strings, freed with sf_catalog_paths_free. */
sf_code sf_catalog_segment_paths(const sf_catalog *c, const sf_catalog_index *ix,
                                 char ***paths, size_t *n, sf_err *err);
void sf_catalog_paths_free(char **paths, size_t n);

/* Whether s was made by a compaction rather than a job: a merged segment
 * lists no shards and carries the compaction's id, its own segment id, as
 * its staging id. */
int sf_catalog_segment_is_merged(const sf_catalog_segment *s);

/* When err is a corrupt segment file of ix (SF_ECORRUPT, "<path>: ... (file
 * corrupt; <remedy>)", the path one of ix's segments), replaces the format
 * layer's general remedy with the one that fits how the segment was made,
 * naming the segment, the index and c's version: a job's segment is
 * restored from a backup or rebuilt from the job's shards while its staging
 * root remains; a merged one from a backup (its inputs go with gc).
 * Leaves any other error as it is. */
void sf_catalog_explain_corrupt(const sf_catalog *c, const sf_catalog_index *ix,
                                sf_err *err);
/* The same for the index named index of the given version of dataset,
 * opened for it (nothing changes when it cannot be read). */
void sf_catalog_explain_corrupt_in(const char *dataset, uint64_t version,
                                   const char *index, sf_err *err);

/* The version as JSON: {"version", "created_at_ms", "indexes": [{"name",
 * "column", "index_type", "metric", "dim", "nlist", "quantizer_checksum" (16
 * hex digits), "quantizer_path", "num_rows", "bytes", "segments": [{
 * "segment_id", "path", "bytes", "num_rows", "fragments" (range list),
 * "shard_ids", "staging_id", "added_in"}]}], "jobs": [{"staging_id",
 * "index_name", "version", "committed_at_ms", "segment_ids"}] (the window),
 * "jobs_total", "job_archive": [{"name", "prefix" (16 hex digits), "depth",
 * "count"}]}. With index_name set, only that index (and its jobs of the
 * window). A new reference the caller json_decref()s; NULL on allocation
 * failure. */
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
  /* The job archive's sizes (see the top of this file), for tests and
   * benchmarks: jobs the new version keeps in full (0 =
   * SF_CATALOG_JOB_WINDOW) and the most jobs a chunk holds before it splits
   * (0 = SF_CATALOG_ARCHIVE_CHUNK_JOBS). Any mix of values among committers
   * is consistent: they only decide where a record lives. */
  size_t job_window;
  size_t archive_chunk_jobs;
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
 *   SF_ECONFLICT - the staging id was committed with other segments (in
 *                  the window or the archive), or max_attempts races were
 *                  lost;
 *   SF_EEXIST    - a segment id is already in the catalog;
 *   SF_ENOTFOUND, SF_EMISMATCH - a segment file is missing or has another size
 *                  (checked under the lock, so no version names a missing file);
 *   SF_ECHECKSUM - the quantizer file's checksum is not the segments'.
 * Fault points (core/base/fault.h, SF_FAULT): catalog.before_quantizer_rename,
 * catalog.torn_temp, catalog.before_link (the new version is written and
 * fsynced under its temporary name), catalog.after_link (published, the
 * directory not yet fsynced); catalog.pause_before_lock (no crash: the
 * commit sleeps half a second right before it takes the shared lock, for
 * tests of what runs concurrently). */
sf_code sf_catalog_commit(const sf_catalog_commit_req *req, sf_catalog_commit_result *res,
                          sf_err *err);

/* ---- committing a compaction ---------------------------------------------
 *
 * A compaction merges committed segments of one index into one (core/
 * compact.h builds it); its commit is one new version in which exactly
 * those segments are replaced by the merged one, at the place of the first
 * of them. Nothing else changes: no job is added, and the job records (the
 * window and the archive) are history that does not name live segments, so
 * every job committed before stays recognised, whichever segments now hold
 * its rows. The merged segment's staging_id is its own id (the compaction's
 * id), and its shard_ids are empty: its inputs' lists would grow with every
 * merge. */
typedef struct sf_catalog_compaction_req {
  const char *dataset;    /* directory or file:// URI */
  const char *index_name; /* the index whose segments were merged */
  /* The segment ids swapped out (borrowed, distinct, at least one). */
  const char *const *inputs;
  size_t ninputs;
  /* The merged segment (borrowed): path "segments/<file name>", a file of
   * `bytes` bytes; its fragments must equal the union of the inputs', its
   * rows their sum, its parameters the index's. */
  const sf_seginfo *merged;
  unsigned max_attempts; /* races lost before SF_ECONFLICT; 0 = 32 */
} sf_catalog_compaction_req;

typedef struct sf_catalog_compaction_result {
  uint64_t version;  /* the version in which the merged segment replaced them */
  int already;       /* 1: done before (a re-run); nothing was written */
  unsigned attempts; /* 1 unless races were lost */
} sf_catalog_compaction_result;

/* Commits a compaction with the same order and retries as sf_catalog_commit
 * (shared lock; the merged file checked under it; put-if-absent link).
 * Refusals change nothing:
 *   SF_ECONFLICT - an input is no longer in the newest version (another
 *                  compaction or a replace swapped it out first): the merge
 *                  is stale, the caller discards it and gc removes its file
 *                  once no intent protects it; or max_attempts races were
 *                  lost;
 *   SF_ENOTFOUND - the index does not exist;
 *   SF_EMISMATCH - the merged segment's fragments, rows or parameters are
 *                  not its inputs' (naming what differs), or its file is
 *                  missing or of another size;
 *   SF_EEXIST    - the merged segment's id or path is already in the
 *                  catalog;
 *   SF_EINVAL    - a malformed request.
 * A re-run after the version was published (the inputs are gone and the
 * merged segment is in the index) returns SF_OK with `already`. The fault
 * points of sf_catalog_commit apply. */
sf_code sf_catalog_commit_compaction(const sf_catalog_compaction_req *req,
                                     sf_catalog_compaction_result *res, sf_err *err);

/* ---- intents: builds that will commit, visible to gc --------------------
 *
 * The invariant: no published version names a file that is not there, and
 * gc never removes a file that a commit in progress will name. The commit
 * alone gives the first half (it checks its files under the shared lock,
 * where gc cannot run). The second needs gc to see builds before they
 * commit: a segment may be finished, or found finished by an earlier run
 * and reused, long before its commit, and nothing in segments/ says that a
 * commit will name it (an old mtime says nothing either).
 *
 * So a builder (sf_finalize, sf_compact_run) declares the segment files it
 * will write or reuse - and any committed segment it will read, which a
 * replace and gc could otherwise take from under it - before it looks at
 * any of them: an intent is a file in
 * <dataset>/_indices/_intents/ listing those paths, on which the builder
 * holds an exclusive flock for as long as it lives. It is made under the
 * shared catalog lock, written under a temporary name, locked, and renamed
 * into place, so gc (which holds the lock exclusively while it decides and
 * deletes) either ran entirely before it - and the builder then sees the
 * files as gc left them, rebuilding what is gone - or sees it, complete and
 * locked. gc keeps every path a live intent lists (and its writer's
 * temporaries). An intent whose flock nobody holds was left by a builder
 * that died (the kernel drops flocks with the process): gc removes it.
 *
 * A builder ends its intent after its commit (or after giving up): the
 * commit made the files the catalog's, or they are orphans again and fall
 * to gc's ordinary rules. A commit needs no intent to be safe (`segforge
 * commit` of segments built earlier): its files are checked under the lock,
 * so it fails rather than publishing a version that names a missing file.
 *
 * The flock belongs to the intent's own open file description: two
 * builders in one process hold two intents that gc tells apart, and a
 * child process that inherits the descriptor across fork() would keep the
 * intent alive (it is close-on-exec). Like the catalog lock, intents rely
 * on flock(2) being honoured by every process using the dataset: one host,
 * or a file system that implements it across hosts. */
#define SF_CATALOG_INTENTS_DIR "_indices/_intents"
/* An intent file: a header line, an owner line, one path per line. */
#define SF_CATALOG_MAX_INTENT_BYTES                                \
  ((uint64_t)SF_CATALOG_MAX_SEGMENTS * (SF_CATALOG_MAX_ID + 16u) + \
   2u * SF_CATALOG_MAX_TEXT)

typedef struct sf_catalog_intent sf_catalog_intent;

/* Declares that the caller will write or reuse, then commit, the segment
 * files `paths` (n of them, relative to <dataset>/_indices/: "segments/<file
 * name>", as sf_seginfo.path). owner (1..4096 bytes, no control characters)
 * says who, for people reading _intents/ ("finalize job-7"). Waits while gc
 * holds the catalog lock. *out is released by sf_catalog_intent_end. */
sf_code sf_catalog_intent_begin(const char *dataset, const char *owner,
                                const char *const *paths, size_t n,
                                sf_catalog_intent **out, sf_err *err);
/* Withdraws the intent: its file is removed and its flock released. Accepts
 * NULL. */
void sf_catalog_intent_end(sf_catalog_intent *in);

/* Called for each path a live intent names. */
typedef sf_code (*sf_catalog_intent_path_fn)(void *ctx, const char *path, sf_err *err);
/* Called for each intent nobody holds (file: its absolute path). */
typedef sf_code (*sf_catalog_intent_stale_fn)(void *ctx, const char *file, uint64_t bytes,
                                              sf_err *err);

/* Reads the intents of the dataset directory `dir` (absolute). For gc, which
 * must hold the catalog lock (exclusively, unless it deletes nothing). A
 * live intent that does not read (too large, not an intent, a path that is
 * not "segments/<name>") is SF_ECORRUPT naming the file: what it protects is
 * unknown. Temporary files ("*.tmp.*") of builders that are making one are
 * skipped. The first error a callback returns stops the scan. */
sf_code sf_catalog_intents_scan(const char *dir, sf_catalog_intent_path_fn path_fn,
                                sf_catalog_intent_stale_fn stale_fn, void *ctx,
                                sf_err *err);

#endif
