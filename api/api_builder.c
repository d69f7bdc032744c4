/*
 * api_builder.c - sf_builder, the segment builder of the public API, and
 * sf_index_finalize / sf_index_wait_committed.
 *
 * A thin layer over core/pipeline: sf_plan_staging plans, sf_build_run
 * builds, sf_catalog_commit commits. Building one segment runs the build
 * on a plan of that segment alone: its shards planned again with no byte
 * budget give one group, and since a segment id hashes the staging id and
 * the shard ids, the same id and file as in the whole plan. So segments
 * built one by one, by several threads or processes, are exactly those the
 * whole plan names, and the build's reuse check recognises them.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api_internal.h"
#include "core/base/clock.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/pipeline/build.h"
#include "core/pipeline/finalize.h"
#include "core/pipeline/plan.h"

static const char *const builder_keys[] = {"index_type",      "target_segment_bytes",
                                           "max_concurrency", "expected_fragments",
                                           "replace",         NULL};

typedef struct {
  int index_type; /* -1: any */
  uint64_t target;
  unsigned max_concurrency;
  roaring_bitmap_t *expected;
  int replace;
} job_opts;

static int read_opts(const sf_options *o, const char *fn, job_opts *j, sf_error *err) {
  uint64_t conc;
  int rc;
  memset(j, 0, sizeof *j);
  j->index_type = -1;
  if ((rc = sf_api_opts_check(o, fn, builder_keys, err))) return rc;
  const char *t = sf_options_get(o, "index_type");
  if (t) {
    sf_index_type type;
    sf_err e = {0};
    if (sf_index_type_parse(t, &type, &e)) return sf_api_from_err(err, &e);
    j->index_type = (int)type;
  }
  if ((rc = sf_api_opt_size(o, "target_segment_bytes", 0, &j->target, err)) ||
      (rc = sf_api_opt_u64(o, "max_concurrency", 1, 1, 1024, &conc, err)) ||
      (rc = sf_api_opt_bool(o, "replace", 0, &j->replace, err)) ||
      (rc = sf_api_opt_fragments(o, "expected_fragments", &j->expected, err)))
    return rc;
  j->max_concurrency = (unsigned)conc;
  return SF_STATUS_OK;
}

struct sf_builder {
  char *dir, *index, *column, *staging_id, *root, *qpath;
  job_opts o;
  sf_plan *plan;
  sf_seginfo *segs; /* per plan segment; valid where built[i] */
  unsigned char *built;
  sf_catalog_intent *intent;
  pthread_mutex_t mu; /* segs and built, for concurrent sf_builder_build */
  atomic_int cancel;  /* set by the first failure of a build_all */
};

static void forget_plan(sf_builder *b) {
  for (size_t i = 0; b->plan && i < b->plan->num_segments; i++)
    if (b->built[i]) sf_seginfo_clear(&b->segs[i]);
  free(b->segs);
  free(b->built);
  sf_plan_free(b->plan);
  sf_catalog_intent_end(b->intent);
  b->segs = NULL;
  b->built = NULL;
  b->plan = NULL;
  b->intent = NULL;
}

void sf_builder_free(sf_builder *b) {
  if (!b) return;
  forget_plan(b);
  pthread_mutex_destroy(&b->mu);
  sf_fragset_free(b->o.expected);
  free(b->dir);
  free(b->index);
  free(b->column);
  free(b->staging_id);
  free(b->root);
  free(b->qpath);
  free(b);
}

int sf_builder_new(const char *dataset, const char *index, const char *column,
                   const char *staging_id, const sf_options *opts, sf_builder **out,
                   sf_error *err) {
  sf_err e = {0};
  int rc;
  if (!out) return sf_api_fail(err, SF_STATUS_INVALID, "sf_builder_new: out is NULL");
  *out = NULL;
  if (!dataset || !column || !*column)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_builder_new needs a dataset and the vector column's name");
  if (sf_catalog_check_id("index name", index, &e) ||
      sf_catalog_check_id("staging id", staging_id, &e))
    return sf_api_from_err(err, &e);
  sf_builder *b = calloc(1, sizeof *b);
  if (!b) return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  pthread_mutex_init(&b->mu, NULL);
  if ((rc = read_opts(opts, "sf_builder_new", &b->o, err))) goto fail;
  if (sf_catalog_resolve_dataset(dataset, &b->dir, &e)) {
    rc = sf_api_from_err(err, &e);
    goto fail;
  }
  char *staging = sf_fs_join(b->dir, SF_CATALOG_STAGING_DIR);
  b->root = staging ? sf_fs_join(staging, staging_id) : NULL;
  free(staging);
  b->qpath = b->root ? sf_fs_join(b->root, SF_PLAN_QUANTIZER_NAME) : NULL;
  b->index = strdup(index);
  b->column = strdup(column);
  b->staging_id = strdup(staging_id);
  if (!b->qpath || !b->index || !b->column || !b->staging_id) {
    rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    goto fail;
  }
  *out = b;
  return SF_STATUS_OK;
fail:
  sf_builder_free(b);
  return rc;
}

/* Declares the plan's segment files to gc (catalog.h, intents). */
static int declare(sf_builder *b, sf_error *err) {
  size_t n = b->plan->num_segments;
  char **paths = calloc(n ? n : 1, sizeof *paths);
  char owner[300];
  int len = snprintf(owner, sizeof owner, "sf_builder %s", b->staging_id);
  sf_err e = {0};
  int rc = paths && len > 0 ? SF_STATUS_OK
                            : sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  for (size_t i = 0; !rc && i < n; i++) {
    char name[300];
    int m = snprintf(name, sizeof name, "segments/%s%s", b->plan->segments[i].segment_id,
                     SF_PLAN_SEGMENT_EXT);
    if (m < 0 || (size_t)m >= sizeof name || !(paths[i] = strdup(name)))
      rc = sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  }
  if (!rc && sf_catalog_intent_begin(b->dir, owner, (const char *const *)paths, n,
                                     &b->intent, &e))
    rc = sf_api_from_err(err, &e);
  for (size_t i = 0; paths && i < n; i++) free(paths[i]);
  free(paths);
  return rc;
}

int sf_builder_plan(sf_builder *b, sf_error *err) {
  if (!b) return sf_api_fail(err, SF_STATUS_INVALID, "the builder is NULL");
  forget_plan(b);
  sf_plan_opts po = {.staging_id = b->staging_id,
                     .target_segment_bytes = b->o.target,
                     .expected_fragments = b->o.expected,
                     .index_type = b->o.index_type};
  sf_err e = {0};
  if (sf_plan_staging(b->root, &po, &b->plan, &e)) return sf_api_from_err(err, &e);
  size_t n = b->plan->num_segments;
  b->segs = calloc(n ? n : 1, sizeof *b->segs);
  b->built = calloc(n ? n : 1, 1);
  int rc = b->segs && b->built ? declare(b, err)
                               : sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  if (rc) forget_plan(b);
  return rc;
}

size_t sf_builder_num_segments(const sf_builder *b) {
  return b && b->plan ? b->plan->num_segments : 0;
}

static const sf_plan_segment *seg_at(const sf_builder *b, size_t i) {
  return b && b->plan && i < b->plan->num_segments ? &b->plan->segments[i] : NULL;
}

const char *sf_builder_segment_id(const sf_builder *b, size_t i) {
  const sf_plan_segment *s = seg_at(b, i);
  return s ? s->segment_id : NULL;
}

uint64_t sf_builder_segment_bytes(const sf_builder *b, size_t i) {
  const sf_plan_segment *s = seg_at(b, i);
  return s ? s->bytes : 0;
}

uint64_t sf_builder_segment_rows(const sf_builder *b, size_t i) {
  const sf_plan_segment *s = seg_at(b, i);
  return s ? s->num_rows : 0;
}

size_t sf_builder_segment_num_shards(const sf_builder *b, size_t i) {
  const sf_plan_segment *s = seg_at(b, i);
  return s ? s->count : 0;
}

const char *sf_builder_segment_shard(const sf_builder *b, size_t i, size_t j) {
  const sf_plan_segment *s = seg_at(b, i);
  return s && j < s->count ? b->plan->shards[s->first + j].shard_id : NULL;
}

char *sf_builder_segment_fragments(const sf_builder *b, size_t i) {
  const sf_plan_segment *s = seg_at(b, i);
  return s ? sf_fragset_format(s->fragments) : NULL;
}

int sf_builder_segment_built(const sf_builder *b, size_t i) {
  if (!seg_at(b, i)) return 0;
  pthread_mutex_t *mu = (pthread_mutex_t *)&b->mu; /* the flag, not the plan */
  pthread_mutex_lock(mu);
  int built = b->built[i];
  pthread_mutex_unlock(mu);
  return built;
}

char *sf_builder_plan_json(const sf_builder *b) {
  if (!b || !b->plan) return NULL;
  json_t *j = sf_plan_to_json(b->plan);
  char *s = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
  json_decref(j);
  if (!s) return NULL;
  /* jansson's allocator is malloc, but sf_free must not depend on it. */
  char *copy = strdup(s);
  free(s);
  return copy;
}

/* Builds segment i: its shards planned alone make one group of the same id. */
static int build_one(sf_builder *b, size_t i, sf_error *err) {
  const sf_plan_segment *g = &b->plan->segments[i];
  sf_plan_opts po = {.staging_id = b->staging_id,
                     .target_segment_bytes = UINT64_MAX,
                     .quantizer = &b->plan->params,
                     .index_type = -1};
  sf_plan *one = NULL;
  sf_seginfo *si = NULL;
  size_t n = 0;
  sf_err e = {0};
  sf_build_opts bo = {.max_merges = 1, .cancel = &b->cancel};
  if (sf_plan_make(&b->plan->shards[g->first], g->count, &po, &one, &e) ||
      sf_build_run(one, b->dir, &bo, &si, &n, NULL, &e)) {
    sf_plan_free(one);
    return sf_api_from_err(err, &e);
  }
  int rc = SF_STATUS_OK;
  if (n != 1 || strcmp(si[0].segment_id, g->segment_id))
    rc = sf_api_fail(err, SF_STATUS_CONFLICT,
                     "segment %zu was built as '%s' but the plan names '%s'; plan again",
                     i, n ? si[0].segment_id : "nothing", g->segment_id);
  pthread_mutex_lock(&b->mu);
  if (!rc && !b->built[i]) {
    b->segs[i] = si[0];
    memset(&si[0], 0, sizeof si[0]);
    b->built[i] = 1;
  }
  pthread_mutex_unlock(&b->mu);
  sf_build_results_free(si, n);
  sf_plan_free(one);
  return rc;
}

int sf_builder_build(sf_builder *b, size_t i, sf_error *err) {
  if (!b || !b->plan)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_builder_build: call sf_builder_plan first");
  if (i >= b->plan->num_segments)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "segment %zu is not in the plan, which has %zu segments", i,
                       b->plan->num_segments);
  return build_one(b, i, err);
}

typedef struct {
  sf_builder *b;
  pthread_mutex_t mu;
  size_t next;
  int rc;
  sf_error first; /* the first failure */
} pool;

static void *pool_worker(void *arg) {
  pool *p = arg;
  for (;;) {
    pthread_mutex_lock(&p->mu);
    size_t n = p->b->plan->num_segments, i = p->next;
    while (i < n && sf_builder_segment_built(p->b, i)) i++;
    p->next = i + 1;
    int stop = p->rc != 0 || i >= n;
    pthread_mutex_unlock(&p->mu);
    if (stop) return NULL;
    sf_error e = {0};
    int rc = build_one(p->b, i, &e);
    if (rc) {
      pthread_mutex_lock(&p->mu);
      /* A build stopped by another's failure is not the first failure. */
      if (!p->rc || (p->rc == SF_STATUS_CANCELED && rc != SF_STATUS_CANCELED)) {
        p->rc = rc;
        p->first = e;
      }
      pthread_mutex_unlock(&p->mu);
      atomic_store(&p->b->cancel, 1);
    }
  }
}

int sf_builder_build_all(sf_builder *b, sf_error *err) {
  if (!b || !b->plan)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_builder_build_all: call sf_builder_plan first");
  size_t todo = 0;
  for (size_t i = 0; i < b->plan->num_segments; i++) todo += !b->built[i];
  if (!todo) return SF_STATUS_OK;
  unsigned nt = b->o.max_concurrency < todo ? b->o.max_concurrency : (unsigned)todo;
  pool p = {.b = b};
  pthread_mutex_init(&p.mu, NULL);
  atomic_store(&b->cancel, 0);
  pthread_t *t = calloc(nt, sizeof *t);
  unsigned started = 0;
  if (t)
    while (started < nt && !pthread_create(&t[started], NULL, pool_worker, &p)) started++;
  if (!started) pool_worker(&p); /* no thread to be had: build them here */
  for (unsigned i = 0; i < started; i++) pthread_join(t[i], NULL);
  free(t);
  pthread_mutex_destroy(&p.mu);
  atomic_store(&b->cancel, 0);
  if (p.rc) {
    if (err) *err = p.first;
    return p.rc;
  }
  return SF_STATUS_OK;
}

int sf_builder_commit(sf_builder *b, uint64_t *version, int *already, sf_error *err) {
  int rc;
  if (!b || !b->plan)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_builder_commit: call sf_builder_plan first");
  if ((rc = sf_builder_build_all(b, err))) return rc;
  sf_catalog_commit_req cr = {.dataset = b->dir,
                              .index_name = b->index,
                              .column = b->column,
                              .staging_id = b->staging_id,
                              .segs = b->segs,
                              .nsegs = b->plan->num_segments,
                              .quantizer_path = b->qpath,
                              .replace = b->o.replace};
  sf_catalog_commit_result res;
  sf_err e = {0};
  if (sf_catalog_commit(&cr, &res, &e)) return sf_api_from_err(err, &e);
  if (version) *version = res.version;
  if (already) *already = res.already;
  /* Committed: gc's ordinary rules protect the segments from now on. */
  sf_catalog_intent_end(b->intent);
  b->intent = NULL;
  return SF_STATUS_OK;
}

int sf_index_finalize(const char *dataset, const char *index, const char *column,
                      const char *staging_id, const sf_options *opts, uint64_t *version,
                      sf_error *err) {
  job_opts o;
  int rc = read_opts(opts, "sf_index_finalize", &o, err);
  if (rc) return rc;
  if (!dataset || !column)
    rc = sf_api_fail(err, SF_STATUS_INVALID,
                     "sf_index_finalize needs a dataset and the vector column's name");
  sf_finalize_req req = {.dataset = dataset,
                         .index_name = index,
                         .column = column,
                         .staging_id = staging_id,
                         .expected_fragments = o.expected,
                         .target_segment_bytes = o.target,
                         .index_type = o.index_type,
                         .replace = o.replace,
                         .build = {.max_merges = o.max_concurrency}};
  sf_finalize_result res;
  sf_err e = {0};
  memset(&res, 0, sizeof res);
  if (!rc && sf_finalize(&req, &res, &e)) rc = sf_api_from_err(err, &e);
  if (!rc && version) *version = res.version;
  sf_finalize_result_clear(&res);
  sf_fragset_free(o.expected);
  return rc;
}

/* 1 and *version when the job is in the catalog, 0 when not (yet). */
static int committed(const char *dataset, const char *staging_id, uint64_t *version,
                     int *found, sf_error *err) {
  sf_catalog *c = NULL;
  sf_catalog_job job;
  sf_err e = {0};
  *found = 0;
  if (sf_catalog_open_latest(dataset, &c, &e))
    return e.code == SF_ENOTFOUND ? SF_STATUS_OK : sf_api_from_err(err, &e);
  int rc = SF_STATUS_OK;
  if (sf_catalog_lookup_job(c, staging_id, &job, found, &e))
    rc = sf_api_from_err(err, &e);
  else if (*found) {
    *version = job.version;
    sf_catalog_job_clear(&job);
  }
  sf_catalog_free(c);
  return rc;
}

int sf_index_wait_committed(const char *dataset, const char *staging_id, int timeout_ms,
                            uint64_t *version, sf_error *err) {
  sf_err e = {0};
  if (!dataset) return sf_api_fail(err, SF_STATUS_INVALID, "the dataset is missing");
  if (sf_catalog_check_id("staging id", staging_id, &e)) return sf_api_from_err(err, &e);
  int64_t deadline = sf_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
  for (;;) {
    uint64_t v = 0;
    int found, rc = committed(dataset, staging_id, &v, &found, err);
    if (rc) return rc;
    if (found) {
      if (version) *version = v;
      return SF_STATUS_OK;
    }
    int64_t left = deadline - sf_clock_mono_ms();
    if (timeout_ms >= 0 && left <= 0)
      return sf_api_fail(err, SF_STATUS_TIMEOUT,
                         "job '%s' is not committed in %s after %d ms", staging_id,
                         dataset, timeout_ms);
    int64_t nap = timeout_ms < 0 || left > 100 ? 100 : left;
    struct timespec ts = {0, (long)nap * 1000000L};
    nanosleep(&ts, NULL);
  }
}
