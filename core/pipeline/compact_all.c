/*
 * compact_all.c - sf_compact_all (compact.h): the merge policy run against
 * the newest catalog version, round after round, until it wants nothing.
 *
 * A round is: read the segments (or, in a dry run, take the simulated
 * ones), ask the policy for up to max_merges merges, run them on as many
 * threads, join them all, report them in the policy's order. Waiting for
 * the whole round costs idle slots when merges differ in size, but keeps
 * the run a function of the catalog alone (compact.h says why that
 * matters); the policy would have to be told about running merges
 * (merging ids) to do better, and the reports would come in the order of
 * the threads' timing.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/clock.h"
#include "core/catalog/catalog.h"
#include "core/pipeline/compact.h"

/* By default a run gives up when this many rounds in a row lost every merge
 * to racing compactors: each loss means another made progress, so this only
 * ends a livelock, never a run that is getting somewhere. */
#define MAX_FRUITLESS_ROUNDS 64

static sf_code oom(sf_err *err) {
  return sf_err_set(err, SF_ENOMEM, "out of memory");
}

/* The index's segments as the policy sees them, with owned ids. */
typedef struct view {
  sf_mpolicy_segment *segs;
  char **ids; /* owned; segs[i].id == ids[i] */
  size_t n, cap;
  uint64_t version;
} view;

static void view_clear(view *v) {
  for (size_t i = 0; i < v->n; i++) free(v->ids[i]);
  free(v->ids);
  free(v->segs);
  memset(v, 0, sizeof *v);
}

static uint64_t view_bytes(const view *v) {
  uint64_t b = 0;
  for (size_t i = 0; i < v->n; i++) b += v->segs[i].bytes;
  return b;
}

/* Appends a segment; takes id (freed on failure). */
static sf_code view_add(view *v, char *id, uint64_t bytes, uint64_t rows, uint32_t first,
                        sf_err *err) {
  if (v->n == v->cap) {
    size_t cap = v->cap ? 2 * v->cap : 16;
    sf_mpolicy_segment *s = realloc(v->segs, cap * sizeof *s);
    if (s) v->segs = s;
    char **ids = s ? realloc(v->ids, cap * sizeof *ids) : NULL;
    if (ids) v->ids = ids;
    if (!s || !ids) {
      free(id);
      return oom(err);
    }
    v->cap = cap;
  }
  v->ids[v->n] = id;
  v->segs[v->n] = (sf_mpolicy_segment){
      .id = id, .bytes = bytes, .num_rows = rows, .first_fragment = first};
  v->n++;
  return SF_OK;
}

/* The segments of index `name` in the newest version. */
static sf_code view_read(const char *ds, const char *name, view *v, sf_err *err) {
  memset(v, 0, sizeof *v);
  sf_catalog *c;
  sf_code rc = sf_catalog_open_latest(ds, &c, err);
  if (rc) return rc;
  const sf_catalog_index *ix = sf_catalog_find_index(c, name);
  if (!ix)
    rc = sf_err_set(err, SF_ENOTFOUND,
                    "the catalog (version %" PRIu64 ") has no index %s to compact",
                    sf_catalog_version(c), name);
  for (size_t i = 0; !rc && ix && i < ix->nsegs; i++) {
    const sf_seginfo *s = &ix->segs[i].info;
    if (!s->fragments || roaring_bitmap_is_empty(s->fragments)) {
      rc = sf_err_set(err, SF_ECORRUPT, "index %s: segment %s covers no fragments", name,
                      s->segment_id);
      break;
    }
    char *id = strdup(s->segment_id);
    rc = id ? view_add(v, id, s->bytes, s->num_rows, roaring_bitmap_minimum(s->fragments),
                       err)
            : oom(err);
  }
  v->version = sf_catalog_version(c);
  sf_catalog_free(c);
  if (rc) view_clear(v);
  return rc;
}

/* Dry run: the view after the merges of plan, each merged segment the sum
 * of its inputs. */
static sf_code view_apply(view *v, const sf_mpolicy_plan *plan, char **merged_ids,
                          sf_err *err) {
  uint8_t *gone = calloc(v->n ? v->n : 1, 1);
  if (!gone) return oom(err);
  view nv = {0};
  sf_code rc = SF_OK;
  for (size_t m = 0; m < plan->nmerges; m++)
    for (size_t k = 0; k < plan->merges[m].nsegs; k++) gone[plan->merges[m].segs[k]] = 1;
  for (size_t i = 0; !rc && i < v->n; i++) {
    if (gone[i]) continue;
    rc = view_add(&nv, v->ids[i], v->segs[i].bytes, v->segs[i].num_rows,
                  v->segs[i].first_fragment, err);
    if (!rc) v->ids[i] = NULL; /* moved */
  }
  for (size_t m = 0; !rc && m < plan->nmerges; m++) {
    const sf_mpolicy_merge *mg = &plan->merges[m];
    uint32_t first = UINT32_MAX;
    for (size_t k = 0; k < mg->nsegs; k++)
      if (v->segs[mg->segs[k]].first_fragment < first)
        first = v->segs[mg->segs[k]].first_fragment;
    char *id = strdup(merged_ids[m]);
    rc = id ? view_add(&nv, id, mg->bytes, mg->num_rows, first, err) : oom(err);
  }
  free(gone);
  nv.version = v->version;
  view_clear(v); /* the moved ids are NULL there */
  if (rc) {
    view_clear(&nv);
    return rc;
  }
  *v = nv;
  return SF_OK;
}

/* One merge of a round, run on its own thread. */
typedef struct task {
  sf_compact_req req;
  const char **inputs; /* borrowed from the view */
  char *output;        /* owned */
  sf_compact_result res;
  sf_err err;
  sf_code rc;
  double ms;
  pthread_t thread;
  int started;
} task;

static void *task_main(void *arg) {
  task *t = arg;
  double t0 = ((double)sf_clock_mono_ns() / 1e6);
  t->rc = sf_compact_run(&t->req, &t->res, &t->err);
  t->ms = ((double)sf_clock_mono_ns() / 1e6) - t0;
  return NULL;
}

/* The report of a merge; 1 when the callback asks the run to end. */
static int report(const sf_compact_all_req *r, unsigned round, const task *t,
                  const sf_mpolicy_merge *mg) {
  if (!r->report) return 0;
  sf_compact_merge_report m = {
      .round = round,
      .inputs = t->inputs,
      .ninputs = t->req.nsegments,
      .output = t->output,
      .bytes_read = t->rc ? mg->bytes : t->res.input_bytes,
      .bytes_written = r->dry_run ? mg->bytes
                       : t->rc    ? 0
                                  : t->res.merged.bytes,
      .num_rows = mg->num_rows,
      .contiguous = mg->contiguous,
      .version = t->rc ? 0 : t->res.version,
      .already = !t->rc && t->res.already,
      .status = t->rc,
      .error = t->rc ? t->err.msg : NULL,
      .ms = t->ms,
      .merged = !t->rc && !r->dry_run ? &t->res.merged : NULL,
      .built = !t->rc && !r->dry_run && t->res.build.built,
  };
  return r->report(r->report_ctx, &m) != 0;
}

static void announce_start(const sf_compact_all_req *r, unsigned round, const task *t,
                           const sf_mpolicy_merge *mg) {
  if (!r->start) return;
  sf_compact_merge_report m = {.round = round,
                               .inputs = t->inputs,
                               .ninputs = t->req.nsegments,
                               .output = t->output,
                               .bytes_read = mg->bytes,
                               .num_rows = mg->num_rows,
                               .contiguous = mg->contiguous};
  r->start(r->report_ctx, &m);
}

/* Runs the tasks (ntasks >= 1), one thread each when there are several. */
static sf_code run_tasks(task *tasks, size_t n, sf_err *err) {
  if (n == 1) {
    task_main(&tasks[0]);
    return SF_OK;
  }
  sf_code rc = SF_OK;
  for (size_t i = 0; i < n; i++) {
    if (pthread_create(&tasks[i].thread, NULL, task_main, &tasks[i])) {
      rc = sf_err_set(err, SF_EIO, "could not start merge thread %zu of %zu", i + 1, n);
      break;
    }
    tasks[i].started = 1;
  }
  for (size_t i = 0; i < n; i++)
    if (tasks[i].started) pthread_join(tasks[i].thread, NULL);
  return rc;
}

typedef struct run {
  const sf_compact_all_req *r;
  const char *ds;
  sf_build_opts build; /* with the budget */
  sf_compact_all_result *res;
  view v;
} run;

/* One round on run->v. *wanted = 0 when the policy wants nothing; *won = 1
 * when a merge committed (or was found committed); *stop = 1 when a report
 * asked the run to end. */
static sf_code round_run(run *x, unsigned round, int *wanted, int *won, int *stop,
                         sf_err *err) {
  const sf_compact_all_req *r = x->r;
  sf_mpolicy_plan *plan = NULL;
  unsigned slots = r->max_merges ? r->max_merges : 1;
  sf_code rc = sf_mpolicy_find(&r->policy, x->v.segs, x->v.n, slots, &plan, err);
  if (rc) return rc;
  *wanted = plan->nmerges > 0;
  *won = 0;
  task *tasks = calloc(plan->nmerges ? plan->nmerges : 1, sizeof *tasks);
  char **outs = calloc(plan->nmerges ? plan->nmerges : 1, sizeof *outs);
  if (!tasks || !outs) rc = oom(err);
  for (size_t m = 0; !rc && m < plan->nmerges; m++) {
    const sf_mpolicy_merge *mg = &plan->merges[m];
    task *t = &tasks[m];
    if (!(t->inputs = malloc(mg->nsegs * sizeof *t->inputs))) {
      rc = oom(err);
      break;
    }
    for (size_t k = 0; k < mg->nsegs; k++) t->inputs[k] = x->v.ids[mg->segs[k]];
    t->req = (sf_compact_req){.dataset = x->ds,
                              .index_name = r->index_name,
                              .segment_ids = t->inputs,
                              .nsegments = mg->nsegs,
                              .build = x->build};
    t->req.build.max_merges = 1;
    rc = sf_compact_segment_id(t->inputs, mg->nsegs, &t->output, err);
    outs[m] = t->output;
  }
  if (!rc && plan->nmerges) {
    if (r->dry_run) {
      for (size_t m = 0; m < plan->nmerges; m++)
        tasks[m].res.input_bytes = plan->merges[m].bytes;
    } else {
      for (size_t m = 0; m < plan->nmerges; m++)
        announce_start(r, round, &tasks[m], &plan->merges[m]);
      rc = run_tasks(tasks, plan->nmerges, err);
    }
  }
  /* Every merge that ran is reported and counted, even after an error. */
  sf_code first = SF_OK;
  for (size_t m = 0; !rc && m < plan->nmerges; m++) {
    task *t = &tasks[m];
    const sf_mpolicy_merge *mg = &plan->merges[m];
    if (report(r, round, t, mg)) *stop = 1;
    if (t->rc == SF_ECONFLICT) {
      x->res->discarded++;
    } else if (t->rc) {
      if (!first) {
        first = t->rc;
        *err = t->err;
      }
    } else if (t->res.already) {
      x->res->already++;
      *won = 1;
    } else {
      x->res->merges++;
      x->res->bytes_read += r->dry_run ? mg->bytes : t->res.input_bytes;
      x->res->bytes_written += r->dry_run ? mg->bytes : t->res.merged.bytes;
      *won = 1;
    }
  }
  if (!rc) rc = first;
  if (!rc && r->dry_run && plan->nmerges) rc = view_apply(&x->v, plan, outs, err);
  for (size_t m = 0; tasks && m < plan->nmerges; m++) {
    sf_compact_result_clear(&tasks[m].res);
    free(tasks[m].inputs);
    free(tasks[m].output);
  }
  free(tasks);
  free(outs);
  sf_mpolicy_plan_free(plan);
  return rc;
}

static sf_code run_rounds(run *x, sf_err *err) {
  const sf_compact_all_req *r = x->r;
  sf_compact_all_result *res = x->res;
  sf_code rc = view_read(x->ds, r->index_name, &x->v, err);
  if (rc) return rc;
  res->version_before = res->version_after = x->v.version;
  res->segments_before = res->segments_after = x->v.n;
  res->bytes_before = res->bytes_after = view_bytes(&x->v);
  unsigned fruitless = 0, max_fruitless = r->max_fruitless_rounds
                                              ? r->max_fruitless_rounds
                                              : MAX_FRUITLESS_ROUNDS;
  for (unsigned round = 1;; round++) {
    if (r->build.cancel && atomic_load(r->build.cancel)) {
      rc = sf_err_set(err, SF_ECANCELED, "compaction of %s canceled after %u rounds",
                      r->index_name, round - 1);
      break;
    }
    int wanted = 0, won = 0, stop = 0;
    rc = round_run(x, round, &wanted, &won, &stop, err);
    if (rc || !wanted) break;
    res->rounds++;
    res->stopped = stop;
    fruitless = won ? 0 : fruitless + 1;
    if (!stop && fruitless >= max_fruitless)
      rc = sf_err_set(err, SF_ECONFLICT,
                      "compaction of %s: %u rounds in a row lost every merge to other "
                      "compactors; giving up",
                      r->index_name, fruitless);
    if (!r->dry_run) { /* the figures after, and the next round, see the newest */
      view_clear(&x->v);
      sf_err rerr = {0};
      sf_code rrc = view_read(x->ds, r->index_name, &x->v, rc ? &rerr : err);
      if (rrc) return rc ? rc : rrc;
    }
    if (rc || stop) break;
  }
  res->version_after = x->v.version;
  res->segments_after = x->v.n;
  res->bytes_after = view_bytes(&x->v);
  return rc;
}

sf_code sf_compact_all(const sf_compact_all_req *r, sf_compact_all_result *res,
                       sf_err *err) {
  memset(res, 0, sizeof *res);
  double t0 = ((double)sf_clock_mono_ns() / 1e6);
  if (!r->dataset || !r->index_name)
    return sf_err_set(err, SF_EINVAL, "a compaction needs a dataset and an index name");
  sf_code rc = sf_mpolicy_params_check(&r->policy, err);
  if (rc) return rc;
  run x = {.r = r, .build = r->build, .res = res};
  char *ds = NULL;
  sf_build_budget *own = NULL;
  if ((rc = sf_catalog_resolve_dataset(r->dataset, &ds, err))) return rc;
  x.ds = ds;
  if (!r->dry_run && !x.build.budget) {
    rc = sf_build_budget_new(r->max_merges ? r->max_merges : 1, &own, err);
    x.build.budget = own;
  }
  if (!rc) rc = run_rounds(&x, err);
  view_clear(&x.v);
  sf_build_budget_free(own);
  free(ds);
  res->ms = ((double)sf_clock_mono_ns() / 1e6) - t0;
  return rc;
}
