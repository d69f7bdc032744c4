/*
 * gc.h - removes what no kept catalog version needs (docs/catalog.md, "gc").
 *
 * The newest K versions are kept, and with them everything they reference:
 * their segment files and quantizers. So is everything a build in progress
 * will commit: the segment paths its live intent lists (catalog.h,
 * "intents"), and the temporaries of their writers. What goes:
 *   - versions older than the newest K (never the newest one);
 *   - staging roots (_indices/_staging/<id>/) of jobs the newest version
 *     holds as committed (in its window of recent jobs or in its job
 *     archive): their shards were merged and their quantizer was copied to
 *     _indices/quantizers/ at commit;
 *   - job archive chunks (_indices/_catalog/jobs/) no kept version
 *     references, by the rule of segments below (chunks are written and
 *     referenced under the shared catalog lock, so none is ever in
 *     flight while gc runs);
 *   - segment files in _indices/segments/ and quantizers in
 *     _indices/quantizers/ that no kept version references and no live
 *     intent lists, when a dropped version referenced them (swapped out by
 *     --replace, or their index history aged out), or when they are older
 *     than the grace period (the leftovers of builds that never committed,
 *     and segments built by `segforge build` for a later `segforge commit`,
 *     which declares no intent);
 *   - temporary files ("*.tmp.*") of writers in those directories and in
 *     _indices/_catalog/ and _indices/_intents/, older than an hour;
 *   - stale intents: those whose builder died (nobody holds their flock).
 *
 * Order and locking: gc takes an exclusive flock on _catalog/LOCK (creating
 * it if the dataset has _indices/ but no catalog yet) before it reads
 * anything, and holds it until its last deletion. Commits check their files
 * and publish under the shared lock, and builders declare their intents
 * under it, so a commit never publishes a file gc removed, and a build
 * either declared its segments before gc looked (then gc keeps them) or
 * starts after gc finished (then it sees, and rebuilds, what gc removed).
 * The kept versions and the live intents are all read before the first
 * deletion; one that does not read stops gc with nothing deleted. Then
 * version files go first (and the directory is fsynced), data files after,
 * so a crash in the middle never leaves a kept version that names a
 * missing file. Readers take no lock, which is why K > 1 is wise when
 * queries may still be loading an older version. A dry run takes the lock
 * shared and creates nothing.
 */
#ifndef SF_GC_H
#define SF_GC_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

#define SF_GC_DEFAULT_KEEP 10u
#define SF_GC_DEFAULT_GRACE_MS (3600u * 1000u)
#define SF_GC_TEMP_AGE_MS (3600u * 1000u)

typedef enum sf_gc_kind {
  SF_GC_VERSION = 0, /* an old catalog version file */
  SF_GC_STAGING,     /* a committed job's staging root (a directory) */
  SF_GC_SEGMENT,     /* a segment file no kept version references */
  SF_GC_QUANTIZER,   /* a kept quantizer no kept version references */
  SF_GC_TEMP,        /* a writer's temporary file older than an hour */
  SF_GC_INTENT,      /* the intent of a build that died (catalog.h) */
  SF_GC_ARCHIVE,     /* a job archive chunk no kept version references */
  SF_GC_KIND_COUNT
} sf_gc_kind;

/* "version", "staging", "segment", "quantizer", "temp", "intent", "archive". */
const char *sf_gc_kind_name(sf_gc_kind k);

typedef struct sf_gc_opts {
  uint32_t keep_versions; /* the newest K versions are kept; 0 = SF_GC_DEFAULT_KEEP */
  int dry_run;            /* decide and report, delete nothing */
  /* Unreferenced segments and quantizers younger than this stay unless a
   * dropped version referenced them; < 0 = SF_GC_DEFAULT_GRACE_MS. */
  int64_t grace_ms;
  /* Temporary files younger than this stay; < 0 = SF_GC_TEMP_AGE_MS. */
  int64_t temp_age_ms;
} sf_gc_opts;

/* Called once per path removed (or, with dry_run, that would be), in the
 * order of removal. bytes: the file's size (a staging root's total). */
typedef void (*sf_gc_fn)(void *ctx, sf_gc_kind kind, const char *path, uint64_t bytes);

typedef struct sf_gc_stats {
  size_t removed[SF_GC_KIND_COUNT]; /* per kind */
  uint64_t bytes;                   /* total size of what was removed */
  uint64_t newest;                  /* newest version (0 if none) */
  uint64_t oldest_kept;             /* oldest kept version (0 if none) */
} sf_gc_stats;

/* Runs gc on the dataset (a directory or file:// URI). fn may be NULL;
 * stats may be NULL. A kept version that does not read (damaged) stops gc
 * before anything is deleted: what it references is unknown. A file that
 * cannot be removed is an error (SF_EIO naming it) after which gc stops;
 * running it again continues. */
sf_code sf_gc_run(const char *dataset, const sf_gc_opts *o, sf_gc_fn fn, void *ctx,
                  sf_gc_stats *stats, sf_err *err);

#endif
