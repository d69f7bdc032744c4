/* jobstatus.c - is a job done yet (see jobstatus.h). */
#include "core/catalog/jobstatus.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/clock.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"

static const char *const names[] = {"pending", "committed", "failed", "dead_letter",
                                    "timeout"};

const char *sf_jobstatus_state_name(sf_jobstatus_state s) {
  return (unsigned)s <= SF_JOBSTATUS_TIMEOUT ? names[s] : "unknown";
}

/* The failed marker of the job, if any: FAILED with its reason and
 * message. A marker that does not parse still says failed. */
static sf_code read_marker(const char *dir, const char *staging_id, sf_jobstatus *st,
                           sf_err *err) {
  char *fdir = sf_fs_join(dir, SF_JOBSTATUS_FAILED_DIR);
  char *path = fdir ? sf_fs_join(fdir, staging_id) : NULL;
  free(fdir);
  if (!path) return sf_err_set(err, SF_ENOMEM, "out of memory");
  FILE *f = fopen(path, "r");
  if (!f) {
    int e = errno;
    sf_code rc =
        e == ENOENT || e == ENOTDIR
            ? SF_OK
            : sf_err_errno(err, SF_EIO, e, "cannot read the failed marker %s", path);
    free(path);
    return rc;
  }
  json_error_t je;
  json_t *o = json_loadf(f, 0, &je);
  fclose(f);
  const char *reason = json_string_value(json_object_get(o, "reason"));
  const char *msg = json_string_value(json_object_get(o, "message"));
  st->state = SF_JOBSTATUS_FAILED;
  snprintf(st->reason, sizeof st->reason, "%s", reason ? reason : "UNKNOWN");
  if (snprintf(st->message, sizeof st->message, "%s (failed marker %s)",
               msg ? msg : "the marker does not say why",
               path) >= (int)sizeof st->message)
    memcpy(st->message + sizeof st->message - 4, "...", 4);
  json_decref(o);
  free(path);
  return SF_OK;
}

sf_code sf_jobstatus_get(const char *dataset, const char *staging_id,
                         const char *index_name, sf_jobstatus *st, sf_err *err) {
  memset(st, 0, sizeof *st);
  sf_code rc = sf_catalog_check_id("staging id", staging_id, err);
  if (rc || (index_name && (rc = sf_catalog_check_id("index name", index_name, err))))
    return rc;
  char *dir = NULL;
  if ((rc = sf_catalog_resolve_dataset(dataset, &dir, err))) return rc;
  sf_catalog *c = NULL;
  rc = sf_catalog_open_latest(dir, &c, err);
  if (rc == SF_ENOTFOUND) { /* no version yet: nothing committed */
    rc = SF_OK;
  } else if (!rc) {
    sf_catalog_job job = {0};
    int found = 0;
    rc = sf_catalog_lookup_job(c, staging_id, &job, &found, err);
    if (!rc && found) {
      if (index_name && strcmp(index_name, job.index_name))
        rc = sf_err_set(err, SF_ECONFLICT,
                        "staging id '%s' is committed into index '%s', not '%s'",
                        staging_id, job.index_name, index_name);
      st->state = SF_JOBSTATUS_COMMITTED;
      st->version = job.version;
      snprintf(st->index_name, sizeof st->index_name, "%s", job.index_name);
      snprintf(st->message, sizeof st->message, "committed in catalog version %llu",
               (unsigned long long)job.version);
    }
    sf_catalog_job_clear(&job);
  }
  sf_catalog_free(c);
  /* Committed wins over a marker: the processor checks the catalog before
   * it fails a job, but a marker may be left by hand or by an older run. */
  if (!rc && st->state == SF_JOBSTATUS_PENDING)
    rc = read_marker(dir, staging_id, st, err);
  free(dir);
  return rc;
}

sf_code sf_jobstatus_wait(const char *dataset, const char *staging_id,
                          const char *index_name, const sf_jobstatus_wait_opts *o,
                          sf_jobstatus *st, sf_err *err) {
  int interval = o && o->interval_ms > 0 ? o->interval_ms : 500;
  int64_t timeout = o ? o->timeout_ms : 0;
  int64_t start = sf_clock_mono_ms();
  for (;;) {
    sf_code rc = sf_jobstatus_get(dataset, staging_id, index_name, st, err);
    if (rc || st->state != SF_JOBSTATUS_PENDING) return rc;
    if (o && o->cancel && atomic_load(o->cancel))
      return sf_err_set(err, SF_ECANCELED, "canceled");
    int64_t left = timeout > 0 ? start + timeout - sf_clock_mono_ms() : INT64_MAX;
    if (left <= 0) {
      st->state = SF_JOBSTATUS_TIMEOUT;
      snprintf(st->message, sizeof st->message,
               "job '%s' neither committed nor failed within %lld ms", staging_id,
               (long long)timeout);
      return SF_OK;
    }
    int budget = left < interval ? (int)left : interval;
    if (o && o->probe) {
      int64_t t0 = sf_clock_mono_ms();
      if ((rc = o->probe(o->probe_ctx, budget, st, err))) return rc;
      if (st->state != SF_JOBSTATUS_PENDING) return SF_OK;
      budget -= (int)(sf_clock_mono_ms() - t0);
    }
    if (budget > 0) {
      struct timespec ts = {budget / 1000, (long)(budget % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
}
