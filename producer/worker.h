/*
 * worker.h - the C API of a build worker that writes its own shard and
 * announces it: fill a ShardStaged from the shard file plus what the worker
 * knows, check it, publish it.
 *
 * What comes from where, so that an announcement cannot disagree with the
 * file it announces:
 *  - from the shard file (opened and checked with sf_seg_open): index type,
 *    metric, dim, number of partitions, quantizer checksum, fragments, rows,
 *    and its size in bytes;
 *  - from the worker: dataset, index name, column, staging id, shard id,
 *    the job's expected fragments, an optional per-job segment budget;
 *  - derived: shard_path, the file's path relative to the staging root
 *    <dataset>/_indices/_staging/<staging_id>/ (both resolved with
 *    realpath, so a symlink cannot lead outside it); event_id, by default
 *    deterministic from the staging id, shard id and the shard's content,
 *    so a worker that retries an announcement sends the same id; producer,
 *    by default "<host>/<pid>" of the calling process (sf_worker_producer),
 *    so that an operator can find the worker behind a bad shard.
 *
 * See examples/worker_publish.c for a complete program and docs/worker.md.
 * The functions are reentrant; sf_worker_publish is as thread-safe as the
 * publisher (see publisher.h).
 */
#ifndef SF_WORKER_H
#define SF_WORKER_H

#include <roaring/roaring.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/catalog/jobstatus.h"
#include "producer/publisher.h"
#include "schemas/event.h"

typedef struct sf_worker_info {
  const char *dataset_uri; /* a directory or file:// URI (required, must exist) */
  const char *index_name;  /* e.g. "embedding_idx" (required) */
  const char *column;      /* the vector column (required) */
  const char *staging_id;  /* the build (required) */
  const char *shard_id;    /* unique within the build (required) */
  const roaring_bitmap_t *expected_fragments; /* the whole build's (required) */
  int64_t target_segment_bytes;               /* > 0: per-job budget; 0: none */
  const char *event_id;                       /* NULL: derived (see above) */
  int64_t staged_at_ms;                       /* 0: now */
  const char *producer; /* NULL: "<host>/<pid>" of this process; "": none (null) */
} sf_worker_info;

/* Fills *out (caller storage; the caller clears it with
 * sf_shard_staged_clear, and on failure it is left cleared) for the shard
 * file at shard_file. The file must lie inside the staging root of
 * info->dataset_uri and info->staging_id (SF_EINVAL naming both paths
 * otherwise) and be a shard, not a segment (SF_EFORMAT). The result is
 * validated with sf_shard_staged_validate (SF_EDECODE naming the field; e.g.
 * fragments not inside the expected fragments). Errors of the file:
 * SF_ENOTFOUND, SF_EIO, SF_EFORMAT, SF_ECORRUPT, naming it. */
sf_code sf_worker_fill_staged(const sf_worker_info *info, const char *shard_file,
                              sf_shard_staged *out, sf_err *err);

/* Checks, before the shard is written, everything of its announcement that
 * does not come from the shard file, so that a bad request costs nothing
 * and leaves no shard behind: the fields of info keep the ShardStaged rules
 * (ids, column, dataset URI; SF_EDECODE naming the field), `fragments` (the
 * fragments the shard will hold) lie inside info->expected_fragments, and
 * staging_dir is the staging root of info->dataset_uri and info->staging_id
 * (both must exist; SF_EINVAL naming both paths otherwise).
 * sf_worker_fill_staged checks the same again with the file. */
sf_code sf_worker_check(const sf_worker_info *info, const roaring_bitmap_t *fragments,
                        const char *staging_dir, sf_err *err);

/* The default event_id of an event (its staging_id, shard_id and content)
 * into buf (size >= SF_EVENT_ID_MAX + 1): "<staging_id>/<shard_id>@<16 hex>",
 * or "sf-<32 hex>" when that would be too long. */
void sf_worker_event_id(const sf_shard_staged *e, char *buf, size_t size);

/* "<host>/<pid>" of the calling process (gethostname(2), getpid(2)) into
 * buf, cut to size - 1 bytes (size >= SF_EVENT_ID_MAX + 1 keeps it whole);
 * the host is "unknown" when it cannot be read, and bytes that the
 * ShardStaged.producer rule refuses (control characters, non-ASCII) are
 * written as '?'. */
void sf_worker_producer(char *buf, size_t size);

/* Validates ev and publishes it on topic (NULL: the publisher's staged
 * topic), waiting for the delivery report (see sf_publish_staged). */
sf_code sf_worker_publish(sf_publisher *p, const char *topic, const sf_shard_staged *ev,
                          int timeout_ms, sf_delivery *dr, sf_err *err);

/* Waits until the job is done (core/catalog/jobstatus.h): COMMITTED once
 * the dataset's catalog holds it, FAILED on its failed marker, and, when k
 * names brokers (bootstrap.servers), DEAD_LETTER on the first ShardRejected
 * of the job on the dead-letter topic (kafka/deadletters.h) published since
 * since_ms (wall clock; 0: the last hour), TIMEOUT after timeout_ms (<= 0:
 * never). SF_OK with the state and a message in *st; errors: the dataset
 * cannot be read (SF_ENOTFOUND, SF_EIO, ...), committed into another index
 * than index_name (SF_ECONFLICT; index_name may be NULL), the dead-letter
 * topic cannot be read (SF_EIO), SF_ECANCELED when *cancel is set. */
typedef struct sf_worker_wait_req {
  const char *dataset;
  const char *staging_id;
  const char *index_name; /* NULL: any */
  int64_t timeout_ms;
  const sf_kconf *kconf; /* NULL or no bootstrap.servers: no dead-letter watch */
  int64_t since_ms;
  const atomic_int *cancel; /* may be NULL */
} sf_worker_wait_req;
sf_code sf_worker_wait(const sf_worker_wait_req *req, sf_jobstatus *st, sf_err *err);

#endif
