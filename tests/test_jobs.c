/* test_jobs.c - the job table: what every ShardStaged event means for its
 * job (DESIGN "Behaviour/Jobs"), timeouts, terminal records, rebalances.
 * Events are built as data; the outside checks are fake hooks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "consumer/jobs.h"
#include "core/base/fragset.h"

/* ---- events as data ------------------------------------------------------- */

static sf_shard_staged ev(const char *staging, const char *shard, const char *frags,
                          const char *expected) {
  sf_shard_staged e;
  memset(&e, 0, sizeof e);
  char buf[300];
  snprintf(buf, sizeof buf, "%s/%s#1", staging, shard);
  e.event_id = strdup(buf);
  e.dataset_uri = strdup("/data/ds");
  e.index_name = strdup("embedding_idx");
  e.column = strdup("embedding");
  e.staging_id = strdup(staging);
  e.shard_id = strdup(shard);
  snprintf(buf, sizeof buf, "%s.sfshard", shard);
  e.shard_path = strdup(buf);
  e.shard_bytes = 1000;
  e.num_rows = 100;
  sf_err err = {0};
  assert_int_equal(sf_fragset_parse(frags, "fragments", &e.fragments, &err), SF_OK);
  assert_int_equal(sf_fragset_parse(expected, "expected", &e.expected_fragments, &err),
                   SF_OK);
  e.index_type = SF_IVF_SQ;
  e.metric = SF_L2;
  e.dim = 64;
  e.num_partitions = 256;
  e.quantizer_checksum = 0xabcdef0123456789ULL;
  e.staged_at_ms = 1000;
  return e;
}

/* ---- fake hooks ------------------------------------------------------------ */

typedef struct hooks {
  const char *failed_staging;    /* open: this staging id is marked failed */
  const char *missing_dataset;   /* open: this dataset does not exist */
  const char *committed_staging; /* open: the catalog holds this staging id */
  const char *bad_shard;         /* check: reject this shard id ... */
  sf_event_reason bad_reason;    /* ... with this reason (NONE: an I/O error) */
  sf_code bad_code;              /* ... and this code (0: as the reason says) */
  const char *unreadable;        /* open: staging ids with this prefix find their
                                    dataset unreadable (an I/O error) */
  int opens, checks;             /* calls seen */
} hooks;

static sf_code h_open(void *ctx, const char *dataset, const sf_shard_staged *e,
                      sf_event_reason *reason, sf_err *err) {
  hooks *h = ctx;
  h->opens++;
  if (h->failed_staging && !strcmp(e->staging_id, h->failed_staging)) {
    *reason = SF_REASON_JOB_FAILED;
    return sf_err_set(err, SF_ECANCELED, "marked failed");
  }
  if (h->missing_dataset && !strcmp(e->dataset_uri, h->missing_dataset)) {
    *reason = SF_REASON_MISSING_FILE;
    return sf_err_set(err, SF_ENOTFOUND, "no dataset");
  }
  assert_string_equal(dataset, e->dataset_uri); /* the tests' canonical form */
  if (h->unreadable && !strncmp(e->staging_id, h->unreadable, strlen(h->unreadable)))
    return sf_err_set(err, SF_EIO, "cannot read the catalog of %s", dataset);
  if (h->committed_staging && !strcmp(e->staging_id, h->committed_staging))
    return SF_EEXIST;
  return SF_OK;
}

static sf_code h_check(void *ctx, const char *dataset, const sf_shard_staged *e,
                       char **path, sf_event_reason *reason, sf_err *err) {
  hooks *h = ctx;
  h->checks++;
  if (h->bad_shard && !strcmp(e->shard_id, h->bad_shard)) {
    *reason = h->bad_reason;
    return sf_err_set(err,
                      h->bad_code     ? h->bad_code
                      : h->bad_reason ? SF_ECORRUPT
                                      : SF_EIO,
                      "bad shard file");
  }
  char buf[600];
  snprintf(buf, sizeof buf, "%s/_indices/_staging/%s/%s", dataset, e->staging_id,
           e->shard_path);
  *path = strdup(buf);
  return SF_OK;
}

typedef struct fx {
  sf_jobs *t;
  hooks h;
  int64_t now;
  int64_t next_offset;
} fx;

static fx *fx_new(int64_t timeout_ms, size_t max_terminal) {
  fx *f = calloc(1, sizeof *f);
  sf_jobs_opts o = {.timeout_ms = timeout_ms,
                    .max_terminal = max_terminal,
                    .hooks = {.open = h_open, .check = h_check, .ctx = &f->h}};
  sf_err err = {0};
  assert_int_equal(sf_jobs_new(&o, &f->t, &err), SF_OK);
  f->now = 5000;
  return f;
}

static void fx_free(fx *f) {
  sf_jobs_free(f->t);
  free(f);
}

/* Adds e of the canonical dataset ds (NULL: its dataset_uri), cleared
 * afterwards whatever happened, read at partition p. */
static sf_jobs_outcome add_ds_on(fx *f, const char *ds, int32_t p, sf_shard_staged e,
                                 sf_job **job, sf_event_reason *reason) {
  sf_err err = {0};
  uint8_t raw[4] = {0xC3, 0x01, 0xAA, (uint8_t)f->next_offset};
  sf_jobs_ref ref = {.partition = p, .gen = 1, .offset = f->next_offset++};
  sf_jobs_outcome o =
      sf_jobs_add(f->t, ds, &e, raw, sizeof raw, ref, f->now, job, reason, &err);
  if (o == SF_JOBS_REJECTED || o == SF_JOBS_FAILED || o == SF_JOBS_ERROR)
    assert_true(err.msg[0] != '\0');
  sf_shard_staged_clear(&e);
  return o;
}

static sf_jobs_outcome add_on(fx *f, int32_t p, sf_shard_staged e, sf_job **job,
                              sf_event_reason *reason) {
  return add_ds_on(f, NULL, p, e, job, reason);
}

/* e with its dataset_uri spelled `uri`, of the canonical dataset ds. */
static sf_jobs_outcome add_ds(fx *f, const char *ds, const char *uri, sf_shard_staged e,
                              sf_job **job) {
  free(e.dataset_uri);
  e.dataset_uri = strdup(uri);
  return add_ds_on(f, ds, 0, e, job, NULL);
}

static sf_jobs_outcome add(fx *f, sf_shard_staged e, sf_job **job,
                           sf_event_reason *reason) {
  return add_on(f, 0, e, job, reason);
}

#define EXPECT(f, e, outcome)                                      \
  assert_string_equal(sf_jobs_outcome_name(add(f, e, NULL, NULL)), \
                      sf_jobs_outcome_name(outcome))

/* ---- completion ------------------------------------------------------------ */

static void a_job_of_one_shard_covering_its_fragments_is_complete_at_once(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  assert_int_equal(j->state, SF_JOB_READY);
  assert_int_equal(j->nshards, 1);
  assert_string_equal(j->dataset, "/data/ds");
  assert_string_equal(j->shards[0].path, "/data/ds/_indices/_staging/job-1/w0.sfshard");
  assert_int_equal(j->shards[0].raw_len, 4);
  assert_int_equal(j->nrefs, 1);
  fx_free(f);
}

static void shards_out_of_order_complete_the_job_with_the_last_fragment(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w2", "20-29", "0-29"), SF_JOBS_NEW);
  EXPECT(f, ev("job-1", "w0", "0-9", "0-29"), SF_JOBS_NEW);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "10-19", "0-29"), &j, NULL),
                   SF_JOBS_COMPLETE);
  assert_int_equal(j->nshards, 3);
  assert_string_equal(j->shards[0].ev.shard_id, "w2"); /* arrival order */
  sf_plan_shard ps[3];
  sf_jobs_plan_shards(j, ps);
  assert_string_equal(ps[1].shard_id, "w0");
  assert_int_equal(ps[1].bytes, 1000);
  assert_int_equal(ps[1].num_rows, 100);
  assert_int_equal(ps[1].params.type, SF_IVF_SQ);
  assert_int_equal(ps[1].params.nlist, 256);
  assert_int_equal(ps[1].params.dim, 64);
  assert_true(ps[1].params.quantizer_checksum == 0xabcdef0123456789ULL);
  assert_true(roaring_bitmap_contains(ps[1].fragments, 9));
  fx_free(f);
}

static void a_job_is_not_complete_while_a_fragment_is_missing(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  EXPECT(f, ev("job-1", "w1", "5-8", "0-9"), SF_JOBS_NEW); /* 9 missing */
  EXPECT(f, ev("job-1", "w2", "9", "0-9"), SF_JOBS_COMPLETE);
  fx_free(f);
}

static void the_first_staged_time_is_the_smallest_of_the_shards(void **state) {
  fx *f = fx_new(0, 0);
  sf_shard_staged a = ev("job-1", "w0", "0", "0-1"), b = ev("job-1", "w1", "1", "0-1");
  a.staged_at_ms = 700;
  b.staged_at_ms = 300;
  sf_job *j;
  add(f, a, &j, NULL);
  assert_int_equal(j->first_staged_at_ms, 700);
  add(f, b, &j, NULL);
  assert_int_equal(j->first_staged_at_ms, 300);
  fx_free(f);
}

/* ---- redeliveries and conflicts ------------------------------------------- */

static void a_redelivered_event_changes_nothing(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  int checks = f->h.checks;
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), &j, NULL), SF_JOBS_DUPLICATE);
  assert_int_equal(f->h.checks, checks); /* no file opened twice */
  assert_int_equal(j->nshards, 1);
  assert_int_equal(j->nrefs, 2); /* its offset waits for the job */
  assert_int_equal(j->state, SF_JOB_OPEN);
  EXPECT(f, ev("job-1", "w1", "5-9", "0-9"), SF_JOBS_COMPLETE);
  fx_free(f);
}

static void a_reannounced_shard_with_a_new_event_id_and_time_is_a_redelivery(
    void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_shard_staged e = ev("job-1", "w0", "0-4", "0-9");
  free(e.event_id);
  e.event_id = strdup("worker-restarted-7");
  e.staged_at_ms = 99999;
  EXPECT(f, e, SF_JOBS_DUPLICATE);
  fx_free(f);
}

static void the_same_shard_id_with_other_content_fails_the_job(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  EXPECT(f, ev("job-1", "w1", "5-6", "0-9"), SF_JOBS_NEW);
  sf_shard_staged e = ev("job-1", "w0", "0-4", "0-9");
  e.shard_bytes = 1001;
  sf_job *j;
  sf_event_reason r;
  assert_int_equal(add(f, e, &j, &r), SF_JOBS_FAILED);
  assert_int_equal(r, SF_REASON_DUPLICATE_CONFLICT);
  assert_int_equal(j->state, SF_JOB_FAILED);
  assert_int_equal(j->reason, SF_REASON_DUPLICATE_CONFLICT);
  assert_non_null(j->trigger);
  assert_int_equal(j->trigger->ev.shard_bytes, 1001);
  assert_int_equal(j->nrefs, 3); /* both shards and the trigger */
  assert_non_null(strstr(j->message, "w0"));
  fx_free(f);
}

static void a_fragment_in_two_shards_fails_the_job(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_job *j;
  sf_event_reason r;
  assert_int_equal(add(f, ev("job-1", "w1", "4-9", "0-9"), &j, &r), SF_JOBS_FAILED);
  assert_int_equal(r, SF_REASON_FRAGMENT_OVERLAP);
  assert_non_null(strstr(j->message, "4"));
  fx_free(f);
}

/* Each job-level field, changed in the second shard, fails the job. */
static void every_job_parameter_that_differs_fails_the_job(void **state) {
  for (int field = 1; field < 10; field++) {
    fx *f = fx_new(0, 0);
    EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
    sf_shard_staged e = ev("job-1", "w1", "5-9", "0-9");
    sf_event_reason want = SF_REASON_PARAM_MISMATCH;
    switch (field) {
      case 1:
        free(e.index_name), e.index_name = strdup("other_idx");
        break;
      case 2:
        free(e.column), e.column = strdup("other");
        break;
      case 3:
        e.index_type = SF_IVF_PQ;
        break;
      case 4:
        e.metric = SF_DOT;
        break;
      case 5:
        e.dim = 32;
        break;
      case 6:
        e.num_partitions = 128;
        break;
      case 7:
        e.has_target_segment_bytes = true, e.target_segment_bytes = 1 << 20;
        break;
      case 8:
        roaring_bitmap_add(e.expected_fragments, 10);
        break;
      case 9:
        e.quantizer_checksum ^= 1, want = SF_REASON_CHECKSUM_MISMATCH;
        break;
    }
    sf_job *j;
    sf_event_reason r;
    assert_int_equal(add(f, e, &j, &r), SF_JOBS_FAILED);
    assert_int_equal(r, want);
    assert_int_equal(j->state, SF_JOB_FAILED);
    fx_free(f);
  }
}

/* ---- keys: dataset and staging id ------------------------------------------ */

static void the_same_staging_id_in_two_datasets_makes_two_jobs(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *a, *b, *x;
  assert_int_equal(add_ds(f, "/data/a", "/data/a", ev("nightly", "w0", "0-4", "0-9"), &a),
                   SF_JOBS_NEW);
  assert_int_equal(add_ds(f, "/data/b", "/data/b", ev("nightly", "w0", "0-9", "0-9"), &b),
                   SF_JOBS_COMPLETE);
  assert_ptr_not_equal(a, b);
  assert_string_equal(a->dataset, "/data/a");
  assert_string_equal(b->dataset, "/data/b");
  assert_int_equal(a->state, SF_JOB_OPEN); /* b's shard 0-9 did not fail a */
  sf_jobs_finish(f->t, b, 1);
  /* b committed: a's next shard joins a, it is not late */
  assert_int_equal(add_ds(f, "/data/a", "/data/a", ev("nightly", "w1", "5-9", "0-9"), &x),
                   SF_JOBS_COMPLETE);
  assert_ptr_equal(x, a);
  assert_int_equal(add_ds(f, "/data/b", "/data/b", ev("nightly", "w0", "0-9", "0-9"), &x),
                   SF_JOBS_LATE);
  assert_ptr_equal(x, b);
  assert_ptr_equal(sf_jobs_find(f->t, "/data/a", "nightly"), a);
  assert_ptr_equal(sf_jobs_find(f->t, "/data/b", "nightly"), b);
  assert_null(sf_jobs_find(f->t, "/data/c", "nightly"));
  fx_free(f);
}

static void spellings_of_one_dataset_form_one_job(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *j, *x;
  assert_int_equal(add_ds(f, "/data/ds", "/data/ds", ev("job-1", "w0", "0-2", "0-9"), &j),
                   SF_JOBS_NEW);
  assert_int_equal(
      add_ds(f, "/data/ds", "file:///data/ds", ev("job-1", "w1", "3-5", "0-9"), &x),
      SF_JOBS_NEW);
  assert_ptr_equal(x, j);
  /* a redelivery in yet another spelling is still a redelivery */
  assert_int_equal(
      add_ds(f, "/data/ds", "/data/ds/", ev("job-1", "w1", "3-5", "0-9"), &x),
      SF_JOBS_DUPLICATE);
  assert_int_equal(
      add_ds(f, "/data/ds", "/data/ds/", ev("job-1", "w2", "6-9", "0-9"), &x),
      SF_JOBS_COMPLETE);
  assert_ptr_equal(x, j);
  assert_string_equal(j->dataset, "/data/ds");
  assert_int_equal(j->nshards, 3);
  fx_free(f);
}

static void the_jobs_of_a_dataset_share_its_name(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *a, *b;
  assert_int_equal(add_ds(f, "/data/ds", "/data/ds", ev("job-1", "w0", "0", "0-9"), &a),
                   SF_JOBS_NEW);
  assert_int_equal(add_ds(f, "/data/ds", "/data/ds", ev("job-2", "w0", "0", "0-9"), &b),
                   SF_JOBS_NEW);
  assert_ptr_equal(a->dataset, b->dataset);
  fx_free(f);
}

static void a_failed_job_stays_failed_and_rejects_its_later_events(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  EXPECT(f, ev("job-1", "w1", "3-9", "0-9"), SF_JOBS_FAILED);
  sf_event_reason r;
  sf_job *j;
  /* While its dead letters are on their way ... */
  assert_int_equal(add(f, ev("job-1", "w2", "5-9", "0-9"), &j, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_JOB_FAILED);
  sf_jobs_finish(f->t, j, 0);
  assert_int_equal(j->state, SF_JOB_DEAD);
  assert_null(j->shards);
  /* ... and after: even a shard that would complete it. */
  assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_JOB_FAILED);
  fx_free(f);
}

static void a_committed_job_reports_its_redeliveries_as_late(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), &j, NULL), SF_JOBS_NEW);
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  sf_jobs_finish(f->t, j, 1);
  assert_int_equal(j->state, SF_JOB_COMMITTED);
  int opens = f->h.opens;
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_LATE);
  EXPECT(f, ev("job-1", "w1", "5-9", "0-9"), SF_JOBS_LATE);
  /* re-announced: new event id and time, the dataset spelled otherwise */
  sf_shard_staged e = ev("job-1", "w1", "5-9", "0-9");
  free(e.event_id), e.event_id = strdup("again");
  e.staged_at_ms += 99;
  assert_int_equal(add_ds(f, "/data/ds", "file:///data/ds/", e, NULL), SF_JOBS_LATE);
  assert_int_equal(f->h.opens, opens); /* recognised without I/O */
  fx_free(f);
}

/* Each way an event can contradict a job committed whole: dead-lettered
 * with COMMITTED_CONFLICT, no longer dropped as late. */
static void an_event_contradicting_a_committed_job_is_a_committed_conflict(void **state) {
  for (int kind = 0; kind < 7; kind++) {
    fx *f = fx_new(0, 0);
    sf_job *j;
    assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), &j, NULL), SF_JOBS_NEW);
    assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
    sf_jobs_finish(f->t, j, 1);
    sf_shard_staged e = ev("job-1", "w1", "5-9", "0-9");
    const char *needle = "other content";
    switch (kind) {
      case 0: /* a shard id it did not have, even over its own fragments */
        free(e.shard_id), e.shard_id = strdup("w9"), needle = "did not have";
        break;
      case 1:
        e.num_rows += 1;
        break;
      case 2:
        roaring_bitmap_remove(e.fragments, 9);
        break;
      case 3:
        free(e.shard_path), e.shard_path = strdup("elsewhere.sfshard");
        break;
      case 4:
        roaring_bitmap_add(e.expected_fragments, 10), needle = "expected fragments";
        break;
      case 5:
        e.dim = 32, needle = "parameters";
        break;
      case 6:
        e.quantizer_checksum ^= 1, needle = "quantizer";
        break;
    }
    sf_event_reason r = SF_REASON_NONE;
    sf_job *x = NULL;
    sf_err err = {0};
    uint8_t raw[1] = {0};
    sf_jobs_ref ref = {.partition = 0, .gen = 1, .offset = 100};
    assert_int_equal(sf_jobs_add(f->t, NULL, &e, raw, 1, ref, f->now, &x, &r, &err),
                     SF_JOBS_REJECTED);
    sf_shard_staged_clear(&e);
    assert_int_equal(r, SF_REASON_COMMITTED_CONFLICT);
    assert_ptr_equal(x, j);
    assert_int_equal(j->state, SF_JOB_COMMITTED);
    if (!strstr(err.msg, needle) || !strstr(err.msg, "new staging id") ||
        !strstr(err.msg, "job-1"))
      fail_msg("kind %d: %s", kind, err.msg);
    fx_free(f);
  }
}

/* A job this process did not see whole cannot tell: its events stay LATE. */
static void a_job_committed_earlier_takes_every_later_event_as_late(void **state) {
  fx *f = fx_new(0, 0);
  f->h.committed_staging = "job-1";
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  assert_true(j->committed_earlier);
  sf_jobs_finish(f->t, j, 1);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_LATE); /* it was part of it */
  /* and a job that timed out before the catalog turned out to hold it */
  f->h.committed_staging = NULL;
  assert_int_equal(add(f, ev("job-2", "w0", "0-4", "0-9"), &j, NULL), SF_JOBS_NEW);
  f->now += 1;
  sf_jobs_fail(f->t, j, SF_REASON_JOB_TIMEOUT, "timed out");
  sf_jobs_finish(f->t, j, 1);
  EXPECT(f, ev("job-2", "w1", "5-9", "0-9"), SF_JOBS_LATE);
  fx_free(f);
}

/* ---- a job being committed ------------------------------------------------ */

static void an_event_contradicting_a_job_being_committed_is_rejected_alone(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  sf_event_reason r;
  sf_shard_staged other = ev("job-1", "w1", "5-9", "0-9");
  other.num_rows = 5;
  assert_int_equal(add(f, other, NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_DUPLICATE_CONFLICT);
  assert_int_equal(add(f, ev("job-1", "w2", "9", "0-9"), NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_FRAGMENT_OVERLAP);
  sf_shard_staged pm = ev("job-1", "w3", "9", "0-9");
  pm.dim = 8;
  assert_int_equal(add(f, pm, NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_PARAM_MISMATCH);
  assert_int_equal(j->state, SF_JOB_READY); /* untouched */
  assert_int_equal(j->nshards, 2);
  assert_int_equal(j->nrefs, 2);
  fx_free(f);
}

static void a_redelivery_to_a_job_being_committed_waits_for_the_job(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  EXPECT(f, ev("job-1", "w0", "0-9", "0-9"), SF_JOBS_DUPLICATE);
  assert_int_equal(j->nrefs, 2);
  assert_int_equal(j->refs[1].offset, 1);
  fx_free(f);
}

static void a_job_refused_by_finalize_fails_and_stays_failed(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  sf_jobs_fail(f->t, j, SF_REASON_COMMIT_CONFLICT, "overlaps a committed segment");
  assert_int_equal(j->state, SF_JOB_FAILED);
  assert_string_equal(j->message, "overlaps a committed segment");
  assert_int_equal(j->nshards, 1); /* events kept for the dead letters */
  sf_jobs_finish(f->t, j, 0);
  assert_int_equal(j->state, SF_JOB_DEAD);
  sf_event_reason r;
  assert_int_equal(add(f, ev("job-1", "w0", "0-9", "0-9"), NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_JOB_FAILED);
  fx_free(f);
}

/* ---- intake checks --------------------------------------------------------- */

static void an_event_whose_file_fails_its_check_is_rejected_alone(void **state) {
  fx *f = fx_new(0, 0);
  f->h.bad_shard = "w1";
  f->h.bad_reason = SF_REASON_CORRUPT_FILE;
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_event_reason r;
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_CORRUPT_FILE);
  assert_int_equal(j->state, SF_JOB_OPEN);
  assert_int_equal(j->nshards, 1);
  assert_int_equal(j->nrefs, 1);
  /* The worker fixes its file and announces it again: the job goes on. */
  f->h.bad_shard = NULL;
  EXPECT(f, ev("job-1", "w1", "5-9", "0-9"), SF_JOBS_COMPLETE);
  fx_free(f);
}

static void a_first_event_whose_file_fails_opens_no_job(void **state) {
  fx *f = fx_new(0, 0);
  f->h.bad_shard = "w0";
  f->h.bad_reason = SF_REASON_MISSING_FILE;
  sf_event_reason r;
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), &j, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_MISSING_FILE);
  assert_null(j);
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1"));
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.open + s.events, 0);
  fx_free(f);
}

static void a_check_that_runs_out_of_memory_is_an_error(void **state) {
  fx *f = fx_new(0, 0);
  f->h.bad_shard = "w1";
  f->h.bad_reason = SF_REASON_NONE;
  f->h.bad_code = SF_ENOMEM;
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, NULL), SF_JOBS_ERROR);
  assert_int_equal(j->nshards, 1);
  assert_int_equal(j->nwaiting, 0);
  f->h.bad_shard = "w9";
  assert_int_equal(add(f, ev("job-2", "w9", "0", "0"), &j, NULL), SF_JOBS_ERROR);
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-2"));
  fx_free(f);
}

/* ---- held at intake ------------------------------------------------------- */

/* A rebalance's visit: drops every job it is shown. */
typedef struct visit {
  sf_jobs *t;
  int n;
} visit;

static void visit_drop(void *ctx, sf_job *j) {
  visit *v = ctx;
  v->n++;
  sf_jobs_job_free(sf_jobs_drop(v->t, j));
}

/* Adds again, in order, the events held at intake of the job of
 * (dataset, staging id), as the processor does when it retries; the
 * outcomes into out[] (at most 8). Returns how many there were. */
static size_t retry(fx *f, const char *dataset, const char *staging,
                    sf_jobs_outcome *out) {
  sf_job *j = sf_jobs_find(f->t, dataset, staging);
  assert_non_null(j);
  size_t n;
  sf_jobs_shard *w = sf_jobs_take_waiting(f->t, j, &n);
  assert_true(n <= 8);
  for (size_t i = 0; i < n; i++) {
    sf_err err = {0};
    out[i] = sf_jobs_add(f->t, dataset, &w[i].ev, w[i].raw, w[i].raw_len, w[i].ref,
                         f->now, NULL, NULL, &err);
  }
  sf_jobs_waiting_free(w, n);
  return n;
}

static void an_event_whose_dataset_cannot_be_read_is_held_and_its_job_waits_behind_it(
    void **state) {
  fx *f = fx_new(0, 0);
  f->h.unreadable = "job-1";
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), &j, NULL), SF_JOBS_HELD);
  assert_int_equal(j->state, SF_JOB_WAITING);
  assert_int_equal(j->nshards, 0);
  assert_int_equal(j->nwaiting, 1);
  assert_int_equal(f->h.opens, 1);
  /* Its job's next events wait behind it, unclassified (no hook is asked),
   * even one that would fail the job: none overtakes the first. */
  EXPECT(f, ev("job-1", "w1", "5-9", "0-9"), SF_JOBS_HELD);
  EXPECT(f, ev("job-1", "w2", "4-9", "0-9"), SF_JOBS_HELD);
  assert_int_equal(f->h.opens, 1);
  assert_int_equal(f->h.checks, 0);
  assert_int_equal(j->nwaiting, 3);
  /* Other jobs, of the same dataset too, go on. */
  EXPECT(f, ev("job-2", "w0", "0-9", "0-9"), SF_JOBS_COMPLETE);
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.held, 1);
  assert_int_equal(s.events, 4);
  /* Tried again while the dataset still fails: held again, in order. */
  sf_jobs_outcome o[8];
  assert_int_equal(retry(f, "/data/ds", "job-1", o), 3);
  assert_int_equal(o[0], SF_JOBS_HELD);
  assert_int_equal(o[1], SF_JOBS_HELD);
  assert_int_equal(o[2], SF_JOBS_HELD);
  assert_int_equal(f->h.opens, 3); /* the first event alone asked again */
  j = sf_jobs_find(f->t, "/data/ds", "job-1");
  assert_int_equal(j->nwaiting, 3);
  assert_string_equal(j->waiting[0].ev.shard_id, "w0");
  assert_string_equal(j->waiting[2].ev.shard_id, "w2");
  /* The dataset reads again: each event means what it would have meant
   * in the order read. */
  f->h.unreadable = NULL;
  assert_int_equal(retry(f, "/data/ds", "job-1", o), 3);
  assert_int_equal(o[0], SF_JOBS_NEW);
  assert_int_equal(o[1], SF_JOBS_COMPLETE);
  assert_int_equal(o[2], SF_JOBS_REJECTED); /* overlaps the complete job */
  j = sf_jobs_find(f->t, "/data/ds", "job-1");
  assert_int_equal(j->state, SF_JOB_READY);
  assert_int_equal(j->nrefs, 2);
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.held, 0);
  assert_int_equal(s.events, 3);
  fx_free(f);
}

static void a_shard_whose_file_cannot_be_read_holds_its_job_which_does_not_time_out(
    void **state) {
  fx *f = fx_new(1000, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  f->h.bad_shard = "w1";
  f->h.bad_reason = SF_REASON_NONE; /* an I/O error */
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, NULL), SF_JOBS_HELD);
  assert_int_equal(j->state, SF_JOB_OPEN);
  assert_int_equal(j->nshards, 1);
  assert_int_equal(j->nwaiting, 1);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_HELD); /* a redelivery, behind */
  /* Its deadline passes while its events wait: a full timeout more. */
  f->now += 5000;
  assert_null(sf_jobs_expire(f->t, f->now));
  assert_int_equal(j->deadline_ms, f->now + 1000);
  assert_int_equal(j->state, SF_JOB_OPEN);
  f->h.bad_shard = NULL;
  sf_jobs_outcome o[8];
  assert_int_equal(retry(f, "/data/ds", "job-1", o), 2);
  assert_int_equal(o[0], SF_JOBS_COMPLETE);
  assert_int_equal(o[1], SF_JOBS_DUPLICATE);
  assert_int_equal(j->nrefs, 3);
  fx_free(f);
}

static void events_held_at_intake_are_counted_and_dropped_with_their_partition(
    void **state) {
  fx *f = fx_new(0, 0);
  f->h.unreadable = "job-1";
  sf_jobs_stats s0, s;
  sf_jobs_get_stats(f->t, &s0);
  assert_int_equal(add_on(f, 1, ev("job-1", "w0", "0-4", "0-9"), NULL, NULL),
                   SF_JOBS_HELD);
  assert_int_equal(add_on(f, 1, ev("job-1", "w1", "5-9", "0-9"), NULL, NULL),
                   SF_JOBS_HELD);
  assert_int_equal(add_on(f, 0, ev("job-2", "w0", "0-4", "0-9"), NULL, NULL),
                   SF_JOBS_NEW);
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.events, 3);
  assert_int_equal(s.raw_bytes, 12);
  assert_true(s.live_bytes > s0.live_bytes);
  visit v = {f->t, 0};
  sf_jobs_foreach_on_partition(f->t, 1, visit_drop, &v);
  assert_int_equal(v.n, 1);
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1"));
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.held, 0);
  assert_int_equal(s.events, 1);
  assert_int_equal(s.raw_bytes, 4);
  fx_free(f);
}

static void an_event_that_cannot_be_keyed_is_held_under_the_callers_key(void **state) {
  fx *f = fx_new(0, 0);
  uint8_t raw[4] = {1, 2, 3, 4};
  sf_jobs_ref ref = {.partition = 0, .gen = 1, .offset = 7};
  sf_err err = {0};
  sf_job *j;
  sf_shard_staged e = ev("job-1", "w0", "0-4", "0-9");
  assert_int_equal(sf_jobs_hold(f->t, "?/data/ds", &e, raw, 4, ref, &j, &err),
                   SF_JOBS_HELD);
  assert_null(e.shard_id); /* taken over */
  assert_int_equal(j->state, SF_JOB_WAITING);
  e = ev("job-1", "w1", "5-9", "0-9");
  ref.offset++;
  assert_int_equal(sf_jobs_hold(f->t, "?/data/ds", &e, raw, 4, ref, &j, &err),
                   SF_JOBS_HELD);
  assert_int_equal(j->nwaiting, 2);
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1")); /* apart from the real key */
  /* A job under that key in another state holds nothing. */
  EXPECT(f, ev("job-2", "w0", "0-9", "0-9"), SF_JOBS_COMPLETE);
  e = ev("job-2", "w0", "0-9", "0-9");
  assert_int_equal(sf_jobs_hold(f->t, "/data/ds", &e, raw, 4, ref, &j, &err),
                   SF_JOBS_ERROR);
  sf_shard_staged_clear(&e);
  size_t n;
  sf_jobs_shard *w =
      sf_jobs_take_waiting(f->t, sf_jobs_find(f->t, "?/data/ds", "job-1"), &n);
  assert_int_equal(n, 2);
  assert_int_equal(w[1].ref.offset, 8);
  assert_null(sf_jobs_find(f->t, "?/data/ds", "job-1")); /* the record went with them */
  for (size_t i = 0; i < n; i++)
    assert_int_equal(sf_jobs_add(f->t, NULL, &w[i].ev, w[i].raw, w[i].raw_len, w[i].ref,
                                 f->now, NULL, NULL, &err),
                     i ? SF_JOBS_COMPLETE : SF_JOBS_NEW);
  sf_jobs_waiting_free(w, n);
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.held, 0);
  assert_int_equal(s.events, 3);
  fx_free(f);
}

static void a_staging_id_marked_failed_on_disk_is_rejected_without_more_io(void **state) {
  fx *f = fx_new(0, 0);
  f->h.failed_staging = "job-1";
  sf_event_reason r;
  assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_JOB_FAILED);
  assert_int_equal(f->h.opens, 1);
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_JOB_FAILED);
  assert_int_equal(f->h.opens, 1);
  assert_int_equal(f->h.checks, 0);
  fx_free(f);
}

static void an_event_for_a_missing_dataset_is_rejected(void **state) {
  fx *f = fx_new(0, 0);
  f->h.missing_dataset = "/data/ds";
  sf_event_reason r;
  assert_int_equal(add(f, ev("job-1", "w0", "0-4", "0-9"), NULL, &r), SF_JOBS_REJECTED);
  assert_int_equal(r, SF_REASON_MISSING_FILE);
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1"));
  fx_free(f);
}

/* ---- interleaving ----------------------------------------------------------- */

static void interleaved_jobs_do_not_disturb_each_other(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-a", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  EXPECT(f, ev("job-b", "w0", "0-4", "0-14"), SF_JOBS_NEW); /* same shard id, other job */
  EXPECT(f, ev("job-b", "w1", "5-9", "0-14"), SF_JOBS_NEW);
  EXPECT(f, ev("job-a", "w1", "5-9", "0-9"), SF_JOBS_COMPLETE);
  EXPECT(f, ev("job-b", "w2", "10-14", "0-14"), SF_JOBS_COMPLETE);
  assert_int_equal(sf_jobs_find(f->t, "/data/ds", "job-a")->nshards, 2);
  assert_int_equal(sf_jobs_find(f->t, "/data/ds", "job-b")->nshards, 3);
  fx_free(f);
}

/* ---- timeouts ------------------------------------------------------------- */

static void a_job_not_complete_within_the_timeout_fails_with_job_timeout(void **state) {
  fx *f = fx_new(1000, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  f->now += 400;
  EXPECT(f, ev("job-2", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  EXPECT(f, ev("job-1", "w1", "5-7", "0-9"), SF_JOBS_NEW); /* no extension */
  assert_int_equal(sf_jobs_next_deadline(f->t), 6000);
  assert_null(sf_jobs_expire(f->t, 5999));
  sf_job *j = sf_jobs_expire(f->t, 6000);
  assert_non_null(j);
  assert_string_equal(j->staging_id, "job-1");
  assert_int_equal(j->state, SF_JOB_FAILED);
  assert_int_equal(j->reason, SF_REASON_JOB_TIMEOUT);
  assert_non_null(strstr(j->message, "8-9")); /* names what is missing */
  assert_null(sf_jobs_expire(f->t, 6000));
  assert_int_equal(sf_jobs_next_deadline(f->t), 6400);
  sf_jobs_finish(f->t, j, 0);
  assert_string_equal(sf_jobs_expire(f->t, 7000)->staging_id, "job-2");
  assert_true(sf_jobs_next_deadline(f->t) == INT64_MAX);
  fx_free(f);
}

static void time_the_consumer_was_paused_does_not_count_against_open_jobs(void **state) {
  fx *f = fx_new(1000, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW); /* deadline 6000 */
  f->now += 200;
  EXPECT(f, ev("job-2", "w0", "0-4", "0-9"), SF_JOBS_NEW); /* deadline 6200 */
  sf_jobs_extend_deadlines(f->t, 5000);                    /* paused for 5 s */
  assert_int_equal(sf_jobs_next_deadline(f->t), 11000);
  assert_null(sf_jobs_expire(f->t, 10999));
  f->now = 10500; /* a job opened after the pause gets the plain timeout */
  EXPECT(f, ev("job-3", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  assert_string_equal(sf_jobs_expire(f->t, 11000)->staging_id, "job-1");
  assert_null(sf_jobs_expire(f->t, 11199));
  assert_string_equal(sf_jobs_expire(f->t, 11200)->staging_id, "job-2");
  assert_string_equal(sf_jobs_expire(f->t, 11500)->staging_id, "job-3");
  fx_free(f);
}

static size_t held_bytes(fx *f) {
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  return s.raw_bytes;
}

/* Each event added by add_on carries 4 original bytes. */
static void the_original_bytes_held_by_live_jobs_are_counted(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_DUPLICATE); /* keeps no copy */
  EXPECT(f, ev("job-2", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  assert_int_equal(held_bytes(f), 8);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "5-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  assert_int_equal(held_bytes(f), 12);
  sf_jobs_finish(f->t, j, 1);
  assert_int_equal(held_bytes(f), 4);
  assert_int_equal(add(f, ev("job-2", "w1", "4-9", "0-9"), &j, NULL), SF_JOBS_FAILED);
  assert_int_equal(held_bytes(f), 8); /* the trigger's bytes too */
  sf_jobs_job_free(sf_jobs_drop(f->t, j));
  assert_int_equal(held_bytes(f), 0);
  EXPECT(f, ev("job-3", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_jobs_drop(f->t, sf_jobs_find(f->t, "/data/ds", "job-3"));
  assert_int_equal(held_bytes(f), 0);
  fx_free(f);
}

/* ---- what memory a job costs ------------------------------------------------ */

/* Bytes the heap has handed out and not taken back: glibc's count of its
 * chunks in use (header and rounding included), or under AddressSanitizer,
 * which replaces malloc, its count of bytes asked for. */
#if defined(__SANITIZE_ADDRESS__) /* gcc says so here, clang by __has_feature */
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(TEST_ASAN)
size_t __sanitizer_get_current_allocated_bytes(void); /* the sanitizer's runtime */
static size_t heap_in_use(void) {
  return __sanitizer_get_current_allocated_bytes();
}
static const int exact_heap = 0;
#else
#include <malloc.h>
static size_t heap_in_use(void) {
  return mallinfo2().uordblks;
}
static const int exact_heap = 1;
#endif

/* An event as the decoder makes it: bitmaps deserialized (no spare
 * capacity), strings of their real lengths, a long dataset path. */
static sf_shard_staged wire_ev(const char *staging, const char *shard, const char *frags,
                               const char *expected) {
  sf_shard_staged e = ev(staging, shard, frags, expected);
  roaring_bitmap_t **bms[2] = {&e.fragments, &e.expected_fragments};
  for (int i = 0; i < 2; i++) {
    uint8_t *b;
    size_t n;
    assert_int_equal(sf_fragset_encode(*bms[i], &b, &n, NULL), SF_OK);
    sf_fragset_free(*bms[i]);
    assert_int_equal(sf_fragset_decode(b, n, "test", bms[i], NULL), SF_OK);
    free(b);
  }
  free(e.dataset_uri);
  e.dataset_uri = strdup("/srv/datasets/tenant-0042/embeddings-2024/ds");
  return e;
}

/* Adds e of dataset /srv/... with `raw` original bytes. */
static sf_jobs_outcome add_sized(fx *f, sf_shard_staged e, size_t raw, sf_job **job) {
  static uint8_t bytes[4096];
  sf_jobs_ref ref = {.partition = 0, .gen = 1, .offset = f->next_offset++};
  sf_jobs_outcome o =
      sf_jobs_add(f->t, NULL, &e, bytes, raw, ref, f->now, job, NULL, NULL);
  sf_shard_staged_clear(&e);
  return o;
}

static size_t table_bytes(fx *f) {
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  return s.bytes;
}

/* The table's count covers what malloc handed out for its jobs, and does
 * not overstate it by much: the processor's memory bound rests on it. */
static void the_memory_a_job_holds_is_counted_as_the_heap_sees_it(void **state) {
  fx *f = fx_new(0, 0);
  enum { JOBS = 3000, BIG = 300 };
  char id[64], frags[64];
  size_t heap0 = heap_in_use(), count0 = table_bytes(f);
  /* one-shard jobs, each still waiting for its second fragment */
  for (int i = 0; i < JOBS; i++) {
    snprintf(id, sizeof id, "mem-%06d", i);
    assert_int_equal(add_sized(f, wire_ev(id, "w0", "0", "0-1"), 420, NULL), SF_JOBS_NEW);
  }
  size_t heap1 = heap_in_use(), count1 = table_bytes(f);
  print_message("one-shard jobs: %.0f bytes each on the heap, %.0f counted\n",
                (double)(heap1 - heap0) / JOBS, (double)(count1 - count0) / JOBS);
  assert_true(count1 - count0 >= heap1 - heap0);
  if (exact_heap) assert_true((count1 - count0) * 4 <= (heap1 - heap0) * 5);
  /* jobs of many shards, with redeliveries; some failed by an overlap */
  for (int i = 0; i < BIG; i++) {
    snprintf(id, sizeof id, "big-%04d", i);
    for (int k = 0; k < 40; k++) {
      char shard[16];
      snprintf(shard, sizeof shard, "s%02d", k);
      snprintf(frags, sizeof frags, "%d", 3 * k);
      add_sized(f, wire_ev(id, shard, frags, "0-200"), 300 + k, NULL);
      if (k % 7 == 0) add_sized(f, wire_ev(id, shard, frags, "0-200"), 300 + k, NULL);
    }
    if (i % 10 == 0) add_sized(f, wire_ev(id, "bad", "3", "0-200"), 333, NULL);
  }
  size_t heap2 = heap_in_use(), count2 = table_bytes(f);
  print_message("40-shard jobs: %.0f bytes each on the heap, %.0f counted\n",
                (double)(heap2 - heap1) / BIG, (double)(count2 - count1) / BIG);
  assert_true(count2 - count0 >= heap2 - heap0);
  if (exact_heap) assert_true((count2 - count0) * 4 <= (heap2 - heap0) * 5);
  /* jobs whose dataset cannot be read: their events held at intake */
  f->h.unreadable = "held-";
  for (int i = 0; i < JOBS; i++) {
    snprintf(id, sizeof id, "held-%06d", i);
    for (int k = 0; k < 1 + i % 3; k++)
      assert_int_equal(add_sized(f, wire_ev(id, k ? "w1" : "w0", "0", "0-1"), 420, NULL),
                       SF_JOBS_HELD);
  }
  size_t heap3 = heap_in_use(), count3 = table_bytes(f);
  print_message("held jobs of 1-3 events: %.0f bytes each on the heap, %.0f counted\n",
                (double)(heap3 - heap2) / JOBS, (double)(count3 - count2) / JOBS);
  assert_true(count3 - count0 >= heap3 - heap0);
  if (exact_heap) assert_true((count3 - count0) * 4 <= (heap3 - heap0) * 5);
  fx_free(f);
}

static void terminal_records_take_at_most_their_byte_budget(void **state) {
  fx *f = calloc(1, sizeof *f);
  sf_jobs_opts o = {.max_terminal_bytes = 20000,
                    .hooks = {.open = h_open, .check = h_check, .ctx = &f->h}};
  assert_int_equal(sf_jobs_new(&o, &f->t, NULL), SF_OK);
  char id[32];
  for (int i = 0; i < 1000; i++) {
    sf_job *j;
    snprintf(id, sizeof id, "job-%d", i);
    assert_int_equal(add(f, ev(id, "w0", "0-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
    sf_jobs_finish(f->t, j, 1);
    sf_jobs_stats s;
    sf_jobs_get_stats(f->t, &s);
    assert_true(s.terminal_bytes <= 20000);
    assert_true(s.live_bytes == 0);
  }
  assert_non_null(sf_jobs_find(f->t, "/data/ds", "job-999"));
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-0"));
  fx_free(f);
}

static void a_timed_out_job_the_catalog_holds_ends_committed(void **state) {
  fx *f = fx_new(1000, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_job *j = sf_jobs_expire(f->t, 10000);
  assert_non_null(j);
  sf_jobs_finish(f->t, j, 1);
  assert_int_equal(j->state, SF_JOB_COMMITTED);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_LATE);
  fx_free(f);
}

static void a_failed_job_being_dead_lettered_is_handed_over_when_dropped(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w1", "4-9", "0-9"), &j, NULL), SF_JOBS_FAILED);
  assert_ptr_equal(sf_jobs_drop(f->t, j), j);
  assert_int_equal(j->state, SF_JOB_DROPPED);
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1"));
  sf_jobs_job_free(j);
  fx_free(f);
}

static void a_complete_job_never_times_out(void **state) {
  fx *f = fx_new(1000, 0);
  EXPECT(f, ev("job-1", "w0", "0-9", "0-9"), SF_JOBS_COMPLETE);
  assert_null(sf_jobs_expire(f->t, 1000000));
  fx_free(f);
}

static void without_a_timeout_jobs_wait_forever(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  assert_null(sf_jobs_expire(f->t, INT64_MAX - 1));
  fx_free(f);
}

/* ---- rebalances ----------------------------------------------------------- */

static void dropping_an_open_job_lets_a_new_owner_rebuild_it(void **state) {
  fx *f = fx_new(0, 0);
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  sf_job *j = sf_jobs_find(f->t, "/data/ds", "job-1");
  assert_null(sf_jobs_drop(f->t, j));
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1"));
  /* The partition comes back: the job is rebuilt from its events. */
  EXPECT(f, ev("job-1", "w0", "0-4", "0-9"), SF_JOBS_NEW);
  EXPECT(f, ev("job-1", "w1", "5-9", "0-9"), SF_JOBS_COMPLETE);
  fx_free(f);
}

static void dropping_a_job_being_committed_hands_it_to_its_holder(void **state) {
  fx *f = fx_new(0, 0);
  sf_job *j;
  assert_int_equal(add(f, ev("job-1", "w0", "0-9", "0-9"), &j, NULL), SF_JOBS_COMPLETE);
  assert_ptr_equal(sf_jobs_drop(f->t, j), j);
  assert_int_equal(j->state, SF_JOB_DROPPED);
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1"));
  EXPECT(f, ev("job-1", "w0", "0-9", "0-9"), SF_JOBS_COMPLETE); /* a fresh job */
  sf_jobs_job_free(j); /* the worker is done with it */
  fx_free(f);
}

static void a_job_whose_events_arrive_on_two_partitions_fails(void **state) {
  fx *f = fx_new(0, 0);
  assert_int_equal(add_on(f, 0, ev("job-1", "w0", "0-4", "0-9"), NULL, NULL),
                   SF_JOBS_NEW);
  sf_job *j;
  sf_event_reason why;
  /* Even a redelivery: its position on the other partition could not be
   * held by the job's owner. */
  assert_int_equal(add_on(f, 1, ev("job-1", "w0", "0-4", "0-9"), &j, &why),
                   SF_JOBS_FAILED);
  assert_int_equal(why, SF_REASON_INVALID_FIELD);
  assert_non_null(strstr(j->message, "share a partition"));
  /* A complete job is never failed afterwards: the event is rejected alone. */
  assert_int_equal(add_on(f, 0, ev("job-2", "w0", "0-9", "0-9"), NULL, NULL),
                   SF_JOBS_COMPLETE);
  assert_int_equal(add_on(f, 1, ev("job-2", "w0", "0-9", "0-9"), NULL, &why),
                   SF_JOBS_REJECTED);
  assert_int_equal(why, SF_REASON_INVALID_FIELD);
  fx_free(f);
}

static void a_revoked_partition_drops_exactly_the_jobs_read_from_it(void **state) {
  fx *f = fx_new(0, 0);
  assert_int_equal(add_on(f, 0, ev("job-a", "w0", "0-4", "0-9"), NULL, NULL),
                   SF_JOBS_NEW);
  assert_int_equal(add_on(f, 1, ev("job-b", "w0", "0-4", "0-9"), NULL, NULL),
                   SF_JOBS_NEW);
  assert_int_equal(add_on(f, 1, ev("job-c", "w0", "0-9", "0-9"), NULL, NULL),
                   SF_JOBS_COMPLETE);
  assert_int_equal(add_on(f, 0, ev("job-d", "w0", "0-4", "0-9"), NULL, NULL),
                   SF_JOBS_NEW);
  /* A job read from two partitions (a producer that keyed it badly) fails. */
  assert_int_equal(add_on(f, 1, ev("job-d", "w1", "5-6", "0-9"), NULL, NULL),
                   SF_JOBS_FAILED);
  visit v = {f->t, 0};
  sf_jobs_foreach_on_partition(f->t, 1, visit_drop, &v);
  assert_int_equal(v.n, 3);
  assert_non_null(sf_jobs_find(f->t, "/data/ds", "job-a"));
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-b"));
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-c"));
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-d"));
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.open, 1);
  assert_int_equal(s.ready, 0);
  assert_int_equal(s.events, 1);
  fx_free(f);
}

/* ---- memory bounds --------------------------------------------------------- */

static void terminal_records_beyond_the_limit_are_forgotten_oldest_first(void **state) {
  fx *f = fx_new(0, 3);
  char id[32];
  for (int i = 0; i < 5; i++) {
    sf_job *j;
    snprintf(id, sizeof id, "job-%d", i);
    assert_int_equal(add(f, ev(id, "w0", "0", "0"), &j, NULL), SF_JOBS_COMPLETE);
    sf_jobs_finish(f->t, j, 1);
  }
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-0"));
  assert_null(sf_jobs_find(f->t, "/data/ds", "job-1"));
  for (int i = 2; i < 5; i++) {
    snprintf(id, sizeof id, "job-%d", i);
    assert_non_null(sf_jobs_find(f->t, "/data/ds", id));
  }
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.terminal, 3);
  fx_free(f);
}

/* Thousands of jobs, shards interleaved pseudo-randomly, some delivered
 * twice: every job completes exactly once and the counts stay exact. */
static void many_interleaved_jobs_each_complete_exactly_once(void **state) {
  fx *f = fx_new(0, 0);
  enum { JOBS = 2000, SHARDS = 8 };
  static unsigned char want[JOBS][SHARDS], got[JOBS][SHARDS];
  uint64_t rng = 12345;
  int completed = 0, remaining = 0;
  for (int jn = 0; jn < JOBS; jn++)
    for (int sn = 0; sn < SHARDS; sn++) {
      rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
      want[jn][sn] = 1 + (rng & 1);
      got[jn][sn] = 0;
      remaining += want[jn][sn];
    }
  char id[32], sh[32], fr[32];
  while (remaining) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    int jn = (int)(rng % JOBS), sn = (int)((rng >> 20) % SHARDS);
    if (got[jn][sn] == want[jn][sn]) continue;
    snprintf(id, sizeof id, "job-%d", jn);
    snprintf(sh, sizeof sh, "w%d", sn);
    snprintf(fr, sizeof fr, "%d-%d", sn * 4, sn * 4 + 3);
    sf_job *j;
    sf_jobs_outcome o = add(f, ev(id, sh, fr, "0-31"), &j, NULL);
    if (got[jn][sn]++) {
      assert_true(o == SF_JOBS_DUPLICATE || o == SF_JOBS_LATE);
    } else if (o == SF_JOBS_COMPLETE) {
      completed++;
      sf_jobs_finish(f->t, j, 1);
    } else {
      assert_int_equal(o, SF_JOBS_NEW);
    }
    remaining--;
  }
  assert_int_equal(completed, JOBS);
  sf_jobs_stats s;
  sf_jobs_get_stats(f->t, &s);
  assert_int_equal(s.open + s.ready + s.failed, 0);
  assert_int_equal(s.events, 0);
  assert_int_equal(s.terminal, JOBS);
  fx_free(f);
}

/* Many removals from the staging-id map in random order: every job left is
 * still found and every job removed is gone. */
static void jobs_stay_findable_through_many_removals(void **state) {
  fx *f = fx_new(0, 0);
  enum { N = 5000 };
  static unsigned char gone[N];
  memset(gone, 0, sizeof gone);
  char id[32];
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "s%d", i * 7919);
    assert_int_equal(add(f, ev(id, "w0", "0", "0-1"), NULL, NULL), SF_JOBS_NEW);
  }
  uint64_t rng = 99;
  for (int k = 0; k < N / 2; k++) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    int i = (int)(rng % N);
    if (gone[i]) continue;
    snprintf(id, sizeof id, "s%d", i * 7919);
    assert_null(sf_jobs_drop(f->t, sf_jobs_find(f->t, "/data/ds", id)));
    gone[i] = 1;
  }
  for (int i = 0; i < N; i++) {
    snprintf(id, sizeof id, "s%d", i * 7919);
    sf_job *j = sf_jobs_find(f->t, "/data/ds", id);
    if (gone[i])
      assert_null(j);
    else
      assert_string_equal(j->staging_id, id);
  }
  fx_free(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_job_of_one_shard_covering_its_fragments_is_complete_at_once),
      cmocka_unit_test(shards_out_of_order_complete_the_job_with_the_last_fragment),
      cmocka_unit_test(a_job_is_not_complete_while_a_fragment_is_missing),
      cmocka_unit_test(the_first_staged_time_is_the_smallest_of_the_shards),
      cmocka_unit_test(a_redelivered_event_changes_nothing),
      cmocka_unit_test(a_reannounced_shard_with_a_new_event_id_and_time_is_a_redelivery),
      cmocka_unit_test(the_same_shard_id_with_other_content_fails_the_job),
      cmocka_unit_test(a_fragment_in_two_shards_fails_the_job),
      cmocka_unit_test(every_job_parameter_that_differs_fails_the_job),
      cmocka_unit_test(the_same_staging_id_in_two_datasets_makes_two_jobs),
      cmocka_unit_test(spellings_of_one_dataset_form_one_job),
      cmocka_unit_test(the_jobs_of_a_dataset_share_its_name),
      cmocka_unit_test(a_failed_job_stays_failed_and_rejects_its_later_events),
      cmocka_unit_test(a_committed_job_reports_its_redeliveries_as_late),
      cmocka_unit_test(an_event_contradicting_a_committed_job_is_a_committed_conflict),
      cmocka_unit_test(a_job_committed_earlier_takes_every_later_event_as_late),
      cmocka_unit_test(an_event_contradicting_a_job_being_committed_is_rejected_alone),
      cmocka_unit_test(a_redelivery_to_a_job_being_committed_waits_for_the_job),
      cmocka_unit_test(a_job_refused_by_finalize_fails_and_stays_failed),
      cmocka_unit_test(an_event_whose_file_fails_its_check_is_rejected_alone),
      cmocka_unit_test(a_first_event_whose_file_fails_opens_no_job),
      cmocka_unit_test(a_check_that_runs_out_of_memory_is_an_error),
      cmocka_unit_test(
          an_event_whose_dataset_cannot_be_read_is_held_and_its_job_waits_behind_it),
      cmocka_unit_test(
          a_shard_whose_file_cannot_be_read_holds_its_job_which_does_not_time_out),
      cmocka_unit_test(
          events_held_at_intake_are_counted_and_dropped_with_their_partition),
      cmocka_unit_test(an_event_that_cannot_be_keyed_is_held_under_the_callers_key),
      cmocka_unit_test(a_staging_id_marked_failed_on_disk_is_rejected_without_more_io),
      cmocka_unit_test(an_event_for_a_missing_dataset_is_rejected),
      cmocka_unit_test(interleaved_jobs_do_not_disturb_each_other),
      cmocka_unit_test(a_job_not_complete_within_the_timeout_fails_with_job_timeout),
      cmocka_unit_test(time_the_consumer_was_paused_does_not_count_against_open_jobs),
      cmocka_unit_test(the_original_bytes_held_by_live_jobs_are_counted),
      cmocka_unit_test(the_memory_a_job_holds_is_counted_as_the_heap_sees_it),
      cmocka_unit_test(terminal_records_take_at_most_their_byte_budget),
      cmocka_unit_test(a_timed_out_job_the_catalog_holds_ends_committed),
      cmocka_unit_test(a_failed_job_being_dead_lettered_is_handed_over_when_dropped),
      cmocka_unit_test(a_complete_job_never_times_out),
      cmocka_unit_test(without_a_timeout_jobs_wait_forever),
      cmocka_unit_test(dropping_an_open_job_lets_a_new_owner_rebuild_it),
      cmocka_unit_test(dropping_a_job_being_committed_hands_it_to_its_holder),
      cmocka_unit_test(a_job_whose_events_arrive_on_two_partitions_fails),
      cmocka_unit_test(a_revoked_partition_drops_exactly_the_jobs_read_from_it),
      cmocka_unit_test(terminal_records_beyond_the_limit_are_forgotten_oldest_first),
      cmocka_unit_test(many_interleaved_jobs_each_complete_exactly_once),
      cmocka_unit_test(jobs_stay_findable_through_many_removals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
