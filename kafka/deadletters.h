/*
 * deadletters.h - watches the dead-letter topic for the ShardRejected of
 * one job: what `segforge wait` and sf_worker_wait add to the dataset's own
 * answer (core/catalog/jobstatus.h), since an event rejected alone (its
 * shard file missing, corrupt, not matching) fails no job at once: the job
 * would wait for that shard until its staging timeout.
 *
 * A plain consumer with no group (assign, never commit), reading every
 * partition of the topic from the first message at or after since_ms. A
 * dead letter is the job's when its staging_id is the job's and the
 * ShardStaged it carries (original_value) names the same dataset, compared
 * in canonical form (sf_catalog_resolve_dataset); one whose original does
 * not decode matches on the staging id alone.
 */
#ifndef SF_DEADLETTERS_H
#define SF_DEADLETTERS_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "kafka/kconf.h"

typedef struct sf_dlwatch sf_dlwatch;

/* Starts watching for dead letters of (dataset, staging_id) on the topic
 * named by segforge.topic.rejected in k (default segforge.shards.rejected),
 * from since_ms (wall clock). k needs bootstrap.servers; it is copied.
 * Errors: SF_EINVAL (configuration), SF_EIO (no metadata for the topic
 * within 10 s), SF_ENOMEM. *out is freed by sf_dlwatch_free. */
sf_code sf_dlwatch_new(const sf_kconf *k, const char *dataset, const char *staging_id,
                       int64_t since_ms, sf_dlwatch **out, sf_err *err);

typedef struct sf_dlwatch_hit {
  char reason[64];
  char message[1024]; /* the dead letter's message, and where it was */
} sf_dlwatch_hit;

/* Reads what arrived, for up to timeout_ms: *found = 1 and *hit filled on
 * the first dead letter of the job. */
sf_code sf_dlwatch_poll(sf_dlwatch *w, int timeout_ms, int *found, sf_dlwatch_hit *hit,
                        sf_err *err);

/* Accepts NULL. */
void sf_dlwatch_free(sf_dlwatch *w);

#endif
