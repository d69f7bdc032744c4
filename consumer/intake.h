/*
 * intake.h - what the stream processor checks on disk when a ShardStaged
 * event arrives, and the failed marker that keeps a failed staging id
 * failed across restarts. These are the job table's hooks
 * (consumer/jobs.h: sf_jobs_hooks) and the dead-letter thread's marker.
 *
 * Intake (each a stable reason code for the dead-letter topic):
 *  - the dataset of the event exists (MISSING_FILE) and is a directory or a
 *    file:// URI naming one (INVALID_FIELD); its canonical form is the key
 *    of its job;
 *  - the staging id has no failed marker (JOB_FAILED);
 *  - the shard file exists (MISSING_FILE) and, with symlinks resolved, lies
 *    inside the staging root <dataset>/_indices/_staging/<staging_id>/
 *    (PATH_ESCAPE: the decoder already refused ".." and absolute paths);
 *  - it opens as a valid shard (CORRUPT_FILE: sf_seg_open checks header,
 *    footer, directory and bitmap CRCs; a segment is not a shard);
 *  - it matches the event: type, metric, dim and partitions (PARAM_MISMATCH),
 *    quantizer checksum (CHECKSUM_MISMATCH), fragments, rows and size
 *    (INVALID_FIELD: the event misdescribes its file).
 * Any other failure to resolve or open a path the event named is the
 * event's fault too (a name too long: INVALID_FIELD; a link loop:
 * PATH_ESCAPE; not a regular file: CORRUPT_FILE; not readable: MISSING_FILE);
 * only a shortage of memory or descriptors and a real I/O error are not.
 * Nor is what the event does not name: the dataset's catalog, its failed
 * markers, its own directories. When those cannot be read (an I/O error,
 * no permission, a newest catalog version that does not read) the hooks
 * cannot tell what the event means. In all these cases the reason stays
 * NONE: out of memory (SF_ENOMEM) stops the service, anything else holds
 * the event at intake until the dataset reads again (consumer/jobs.h,
 * "Held at intake"; docs/serve.md, "Held jobs").
 * The data blocks are not read here: the build verifies every block's CRC
 * as it copies it, so reading them twice would only double the I/O.
 *
 * The failed marker: <dataset>/_indices/_failed/<staging_id>, a small JSON
 * object {"staging_id", "reason", "message", "failed_at_ms"} written
 * atomically (temporary file, fsync, rename, fsync of the directory) before
 * any dead letter of the job is published. Its presence alone is what
 * counts; `segforge gc` leaves it, and an operator who wants to retry a
 * staging id deletes it.
 */
#ifndef SF_INTAKE_H
#define SF_INTAKE_H

#include <stdint.h>

#include "core/base/error.h"
#include "core/catalog/jobstatus.h"
#include "schemas/event.h"

/* The failed markers: where sf_jobstatus_get (and so `segforge wait`) reads
 * them. */
#define SF_INTAKE_FAILED_DIR SF_JOBSTATUS_FAILED_DIR

/* The hooks' context: the dataset roots, and small caches of resolved
 * datasets and staging roots, so that the events of one job cost one
 * realpath(3) of each rather than one per event (resolving paths was most
 * of the intake's time). A cached answer outlives a link changed after it:
 * the caches protect against events, like the roots (docs/serve.md). Used by one thread
 * at a time (the poll loop). Freed by sf_intake_free (accepts NULL). The hooks also
 * accept ctx == NULL: no cache, any dataset.
 *
 * roots[n] (copied; n == 0: any dataset) are the directories a dataset
 * must lie in, itself or below, with links resolved: an event names the
 * dataset the service writes into, so a deployment says which ones it
 * serves. Each must exist (SF_EINVAL naming it). */
typedef struct sf_intake sf_intake;
sf_code sf_intake_new(sf_intake **out, const char *const *roots, size_t n, sf_err *err);
void sf_intake_free(sf_intake *in);

/* The dataset of ev in canonical form (sf_catalog_resolve_dataset: every
 * spelling of one directory gives one string), the key of its job. Through
 * a small cache in `in` (NULL: none), so that a job's events cost one
 * realpath(3) of their dataset rather than one each; a cached answer is
 * borrowed (valid until the next call), otherwise *owned is set and the
 * caller frees it. NULL when it cannot be resolved: *reason says whose
 * fault (MISSING_FILE: it does not exist or a component is a file;
 * INVALID_FIELD: another URI scheme or host, a bad escape, not a
 * directory; a link loop, PATH_ESCAPE; ...), NONE for a failure of the
 * machine (out of memory, I/O), and err says what. */
const char *sf_intake_dataset(sf_intake *in, const sf_shard_staged *ev, char **owned,
                              sf_event_reason *reason, sf_err *err);

/* The open hook (sf_jobs_hooks): for the canonical dataset `dataset` of
 * ev, refuses one outside the dataset roots (PATH_ESCAPE), or whose
 * directories lead out of them, and a staging id marked failed
 * (JOB_FAILED). SF_EEXIST when the dataset's newest catalog version
 * already holds the staging id (see sf_jobs_hooks). ctx is an sf_intake or
 * NULL. On refusal *reason is set; it stays NONE when the dataset cannot
 * be read: one of its directories does not resolve, its failed marker
 * cannot be looked up (SF_EIO), its newest catalog version does not read
 * (that version's error: SF_ECORRUPT, SF_EFORMAT, SF_EIO, ...), or memory
 * runs out (SF_ENOMEM). A dataset with no catalog version yet is fine. */
sf_code sf_intake_open(void *ctx, const char *dataset, const sf_shard_staged *ev,
                       sf_event_reason *reason, sf_err *err);

/* The check hook: checks the shard file of ev in `dataset` (as resolved by
 * sf_intake_open); *path is its malloc'd absolute path (caller frees).
 * ctx is an sf_intake or NULL. A shard_path of one component that is a
 * regular file (lstat, not a symlink) lies in the resolved root by
 * construction; any other is resolved with realpath(3) and compared. */
sf_code sf_intake_check(void *ctx, const char *dataset, const sf_shard_staged *ev,
                        char **path, sf_event_reason *reason, sf_err *err);

/* Whether <dataset>/_indices/_failed/<staging_id> exists (dataset
 * resolved): 1 or 0; -1 when that cannot be told (stat(2) failed otherwise
 * than ENOENT or ENOTDIR; errno says why). */
int sf_intake_is_failed(const char *dataset, const char *staging_id);

/* Writes the failed marker durably. */
sf_code sf_intake_mark_failed(const char *dataset, const char *staging_id,
                              sf_event_reason reason, const char *message, int64_t now_ms,
                              sf_err *err);

#endif
