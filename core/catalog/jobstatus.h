/*
 * jobstatus.h - is a job done yet? The answer a worker, a script or a
 * platform's orchestrator asks for after it staged a job's shards (the
 * counterpart of Milvus's GetIndexStates and LanceDB's wait_for_index),
 * read from the dataset alone: committed when the catalog's newest version
 * holds the staging id, failed when the stream processor wrote the job's
 * failed marker (<dataset>/_indices/_failed/<staging_id>, docs/serve.md),
 * pending otherwise. No broker: the layers above add what only Kafka knows
 * (a dead letter of one of the job's events, kafka/deadletters.h) through
 * the probe of sf_jobstatus_wait.
 */
#ifndef SF_JOBSTATUS_H
#define SF_JOBSTATUS_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/base/error.h"

/* Where the stream processor writes a failed job's marker, under the
 * dataset; a one-line JSON object {"staging_id", "reason", "message",
 * "failed_at_ms"}. */
#define SF_JOBSTATUS_FAILED_DIR "_indices/_failed"

typedef enum sf_jobstatus_state {
  SF_JOBSTATUS_PENDING = 0, /* neither committed nor failed (yet) */
  SF_JOBSTATUS_COMMITTED,   /* the catalog holds it: version, index_name */
  SF_JOBSTATUS_FAILED,      /* its failed marker: reason, message */
  SF_JOBSTATUS_DEAD_LETTER, /* one of its events was dead-lettered (a probe's) */
  SF_JOBSTATUS_TIMEOUT,     /* sf_jobstatus_wait gave up */
} sf_jobstatus_state;

/* "pending", "committed", "failed", "dead_letter", "timeout". */
const char *sf_jobstatus_state_name(sf_jobstatus_state s);

typedef struct sf_jobstatus {
  sf_jobstatus_state state;
  uint64_t version;     /* COMMITTED: the catalog version that committed it */
  char index_name[256]; /* COMMITTED: the index it went into */
  char reason[64];      /* FAILED, DEAD_LETTER: the reason code (docs/events.md) */
  char message[1024];   /* what happened, for a person; also for TIMEOUT */
} sf_jobstatus;

/* One look at the dataset (directory or file:// URI). index_name, when not
 * NULL, must be the index the catalog recorded the job in: a job committed
 * into another index is an error (SF_ECONFLICT naming both), not success.
 * Errors: SF_ENOTFOUND (no such dataset), SF_EINVAL (bad id or URI),
 * SF_ECORRUPT/SF_EFORMAT (the newest catalog version does not read),
 * SF_EIO. A dataset without any catalog version yet is PENDING. */
sf_code sf_jobstatus_get(const char *dataset, const char *staging_id,
                         const char *index_name, sf_jobstatus *st, sf_err *err);

/* What a caller adds to each look (e.g. a dead-letter watch): sets
 * st->state (and reason, message) to end the wait, or leaves it PENDING;
 * it may block up to budget_ms, which is the wait between two looks. */
typedef sf_code (*sf_jobstatus_probe)(void *ctx, int budget_ms, sf_jobstatus *st,
                                      sf_err *err);

typedef struct sf_jobstatus_wait_opts {
  int64_t timeout_ms;       /* <= 0: wait for ever */
  int interval_ms;          /* between two looks; 0 = 500 */
  sf_jobstatus_probe probe; /* may be NULL */
  void *probe_ctx;
  const atomic_int *cancel; /* may be NULL; set: returns SF_ECANCELED */
} sf_jobstatus_wait_opts;

/* Looks until the job is committed or failed (or the probe ends it), or
 * timeout_ms passed (TIMEOUT, message saying how long). SF_OK with the
 * state in *st; errors as sf_jobstatus_get's and the probe's, at once
 * (catalog versions and markers are written whole, by rename: an error is
 * no passing state). */
sf_code sf_jobstatus_wait(const char *dataset, const char *staging_id,
                          const char *index_name, const sf_jobstatus_wait_opts *o,
                          sf_jobstatus *st, sf_err *err);

#endif
