/* test_compact_all.c - compacting an index until the policy is done
 * (sf_compact_all, core/pipeline/compact.h): the segment count drops to what
 * the policy allows and search answers the same ids exactly at nprobe =
 * nlist; a dry run plans the same merges and writes nothing; the same
 * catalog compacts to the same segments whatever the merges at once; two
 * compactors racing on one index leave a readable catalog holding every
 * row exactly once. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"
#include "core/format/stage.h"
#include "core/pipeline/compact.h"
#include "core/pipeline/finalize.h"
#include "core/search/search.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "core/vector/vecio.h"
#include "testutil.h"

#define DIM 16
#define NLIST 8
#define RPF 60  /* rows per fragment */
#define JOBS 14 /* one job per fragment, one segment per job */
#define ROWS (JOBS * RPF)
#define NQ 20
#define K 10

typedef struct fx {
  char ds[4000];
  float *base, *queries;
} fx;

/* A dataset of JOBS jobs job-<j>, each fragment j in one shard, finalized
 * one by one into index "idx": JOBS segments. */
static void fx_init(fx *f, const char *tag) {
  snprintf(f->ds, sizeof f->ds, "%s", tu_tmpdir(tag));
  f->base = malloc((size_t)ROWS * DIM * sizeof *f->base);
  f->queries = malloc(NQ * DIM * sizeof *f->queries);
  assert_non_null(f->base);
  assert_non_null(f->queries);
  sf_gen_clustered(f->base, ROWS, DIM, 12, 0.3f, 5, 1);
  sf_gen_clustered(f->queries, NQ, DIM, 12, 0.3f, 5, 2);
  sf_err err = {0};
  char vec[4100];
  snprintf(vec, sizeof vec, "%s/base.fvecs", f->ds);
  sf_vecwriter *w;
  assert_int_equal(sf_vecwriter_open(vec, DIM, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, f->base, ROWS, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  sf_quant_params qp = {
      .type = SF_IVF_FLAT, .metric = SF_L2, .dim = DIM, .nlist = NLIST, .seed = 3};
  sf_quant *q;
  assert_int_equal(sf_quant_train(&qp, f->base, ROWS, &q, &err), SF_OK);
  for (int j = 0; j < JOBS; j++) {
    char root[4300], qpath[4400], job[32];
    snprintf(job, sizeof job, "job-%d", j);
    snprintf(root, sizeof root, "%s/%s/%s", f->ds, SF_CATALOG_STAGING_DIR, job);
    snprintf(qpath, sizeof qpath, "%s/quantizer", root);
    assert_int_equal(sf_fs_mkdirs(root, &err), SF_OK);
    assert_int_equal(sf_quant_save(q, qpath, &err), SF_OK);
    roaring_bitmap_t *frags = roaring_bitmap_of(1, (uint32_t)j);
    sf_stage_opts so = {.vectors = vec,
                        .staging_root = root,
                        .shard_id = "s0",
                        .fragments = frags,
                        .rows_per_fragment = RPF};
    sf_stage_result sr;
    if (sf_stage_shard(&so, q, &sr, &err)) fail_msg("stage %s: %s", job, err.msg);
    free(sr.path);
    roaring_bitmap_free(frags);
    sf_finalize_req req = {.dataset = f->ds,
                           .index_name = "idx",
                           .column = "emb",
                           .staging_id = job,
                           .index_type = -1,
                           .build = {.max_merges = 1}};
    sf_finalize_result res;
    if (sf_finalize(&req, &res, &err)) fail_msg("finalize %s: %s", job, err.msg);
    sf_finalize_result_clear(&res);
  }
  sf_quant_free(q);
}

static void fx_free(fx *f) {
  free(f->base);
  free(f->queries);
}

/* Small segments and small tiers, so that the policy wants several rounds
 * of merges of a few segments each. */
static sf_mpolicy_params policy(void) {
  sf_mpolicy_params p;
  sf_mpolicy_params_default(&p);
  p.segments_per_tier = 3;
  p.max_merge_at_once = 3;
  return p;
}

/* The sorted ids of the index's segments in the newest version, joined by
 * ' ' (malloc'd); *n their count. */
static char *segment_list(const fx *f, size_t *n, uint64_t *version) {
  sf_catalog *c;
  sf_err err = {0};
  assert_int_equal(sf_catalog_open_latest(f->ds, &c, &err), SF_OK);
  const sf_catalog_index *ix = sf_catalog_find_index(c, "idx");
  assert_non_null(ix);
  char *ids[256];
  assert_true(ix->nsegs <= 256);
  for (size_t i = 0; i < ix->nsegs; i++) ids[i] = ix->segs[i].info.segment_id;
  for (size_t i = 1; i < ix->nsegs; i++) /* insertion sort */
    for (size_t j = i; j > 0 && strcmp(ids[j - 1], ids[j]) > 0; j--) {
      char *t = ids[j];
      ids[j] = ids[j - 1];
      ids[j - 1] = t;
    }
  char *s = calloc(ix->nsegs * 300 + 1, 1);
  for (size_t i = 0; i < ix->nsegs; i++) {
    strcat(s, ids[i]);
    strcat(s, " ");
  }
  *n = ix->nsegs;
  if (version) *version = sf_catalog_version(c);
  sf_catalog_free(c);
  return s;
}

/* Every query at nprobe = nlist over the newest version: ids[NQ*k]. */
static void search_all(const fx *f, uint32_t k, int nq, sf_rowid *ids) {
  sf_err err = {0};
  sf_search *s;
  float *scores = malloc((size_t)nq * k * sizeof *scores);
  assert_int_equal(sf_search_open_dataset(f->ds, "idx", NULL, &s, &err), SF_OK);
  for (int i = 0; i < nq; i++) {
    uint32_t got;
    assert_int_equal(
        sf_search_query(s, f->queries + i * DIM, k, NLIST, ids + (size_t)i * k,
                        scores + (size_t)i * k, &got, &err),
        SF_OK);
    assert_int_equal(got, k);
  }
  sf_search_free(s);
  free(scores);
}

/* Chunks of the index's segments in the newest version, summed; and
 * whether every segment that covers one stretch of fragments holds at most
 * one chunk per partition (a compaction joins its inputs' small chunks, and
 * their ids ascend when the inputs are consecutive jobs). */
static uint64_t count_chunks(const fx *f, int *joined) {
  sf_catalog *c;
  sf_err err = {0};
  assert_int_equal(sf_catalog_open_latest(f->ds, &c, &err), SF_OK);
  char **paths;
  size_t n;
  assert_int_equal(
      sf_catalog_segment_paths(c, sf_catalog_find_index(c, "idx"), &paths, &n, &err),
      SF_OK);
  uint64_t chunks = 0;
  *joined = 1;
  for (size_t i = 0; i < n; i++) {
    sf_seg_reader *r;
    assert_int_equal(sf_seg_open(paths[i], &r, &err), SF_OK);
    const roaring_bitmap_t *fr = sf_seg_fragments(r);
    int stretch = roaring_bitmap_maximum(fr) - roaring_bitmap_minimum(fr) + 1 ==
                  roaring_bitmap_get_cardinality(fr);
    for (uint32_t p = 0; p < NLIST; p++) {
      chunks += sf_seg_partition_num_chunks(r, p);
      if (stretch && sf_seg_partition_num_chunks(r, p) > 1) *joined = 0;
    }
    sf_seg_close(r);
  }
  sf_catalog_paths_free(paths, n);
  sf_catalog_free(c);
  return chunks;
}

/* The policy wants nothing of the newest version. */
static void assert_policy_done(const fx *f) {
  sf_catalog *c;
  sf_err err = {0};
  assert_int_equal(sf_catalog_open_latest(f->ds, &c, &err), SF_OK);
  sf_mpolicy_params p = policy();
  sf_mpolicy_plan *plan;
  assert_int_equal(
      sf_mpolicy_find_index(&p, sf_catalog_find_index(c, "idx"), NULL, 0, 0, &plan, &err),
      SF_OK);
  assert_int_equal(plan->nmerges, 0);
  sf_mpolicy_plan_free(plan);
  sf_catalog_free(c);
}

static size_t count_files(const fx *f) {
  char p[4100];
  snprintf(p, sizeof p, "%s/_indices/segments", f->ds);
  DIR *d = opendir(p);
  assert_non_null(d);
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

typedef struct mlog {
  size_t merges, conflicts;
  unsigned last_round;
  char trace[8192]; /* "<round>:<output>;" per merge */
} mlog;

static int record(void *ctx, const sf_compact_merge_report *m) {
  mlog *l = ctx;
  assert_true(m->round >= l->last_round); /* reported round by round */
  l->last_round = m->round;
  if (m->status == SF_ECONFLICT) {
    assert_non_null(m->error);
    assert_null(m->merged);
    l->conflicts++;
    return 0;
  }
  assert_int_equal(m->status, SF_OK);
  assert_null(m->error);
  assert_true(m->ninputs >= 2);
  if (m->version) { /* committed: the catalog's entry of the merged segment */
    assert_non_null(m->merged);
    assert_string_equal(m->merged->segment_id, m->output);
    assert_int_equal(m->merged->num_rows, m->num_rows);
    assert_int_equal(m->merged->bytes, m->already ? m->merged->bytes : m->bytes_written);
  }
  l->merges++;
  size_t n = strlen(l->trace);
  snprintf(l->trace + n, sizeof l->trace - n, "%u:%s;", m->round, m->output);
  return 0;
}

static sf_code compact_all(const fx *f, unsigned max_merges, int dry, mlog *l,
                           sf_compact_all_result *res, sf_err *err) {
  sf_compact_all_req r = {.dataset = f->ds,
                          .index_name = "idx",
                          .policy = policy(),
                          .max_merges = max_merges,
                          .dry_run = dry,
                          .report = record,
                          .report_ctx = l};
  return sf_compact_all(&r, res, err);
}

static void compaction_drops_the_count_to_the_policy_and_answers_the_same_ids(void **st) {
  fx f;
  fx_init(&f, "compact-all-answers");
  sf_rowid before[NQ * K], after[NQ * K];
  search_all(&f, K, NQ, before);
  int joined;
  uint64_t chunks_before = count_chunks(&f, &joined);
  assert_true(chunks_before > JOBS * NLIST / 2); /* a chunk per job and partition */
  mlog l = {0};
  sf_compact_all_result res;
  sf_err err = {0};
  if (compact_all(&f, 2, 0, &l, &res, &err)) fail_msg("compact: %s", err.msg);
  assert_int_equal(res.segments_before, JOBS);
  assert_true(res.segments_after < JOBS);
  assert_true(res.rounds >= 2); /* merged segments were merged again */
  assert_int_equal(res.merges, l.merges);
  assert_int_equal(res.discarded, 0);
  assert_true(res.bytes_written > 0 && res.bytes_read > 0);
  assert_true(res.version_after > res.version_before);
  size_t n;
  free(segment_list(&f, &n, NULL));
  assert_int_equal(n, res.segments_after);
  assert_policy_done(&f);
  search_all(&f, K, NQ, after);
  assert_memory_equal(before, after, sizeof before);
  /* The merges joined the jobs' chunks: one per partition of a segment of
   * consecutive jobs, so at most one per partition and segment in all. */
  uint64_t chunks_after = count_chunks(&f, &joined);
  assert_true(joined);
  assert_true(chunks_after <= res.segments_after * NLIST);
  assert_true(chunks_after < chunks_before);
  /* A second run finds nothing to do. */
  sf_compact_all_result again;
  mlog l2 = {0};
  assert_int_equal(compact_all(&f, 2, 0, &l2, &again, &err), SF_OK);
  assert_int_equal(again.merges, 0);
  assert_int_equal(again.version_after, res.version_after);
  fx_free(&f);
}

static void a_dry_run_plans_the_same_merges_and_writes_nothing(void **st) {
  fx f;
  fx_init(&f, "compact-all-dry");
  size_t n0, files0 = count_files(&f);
  uint64_t v0;
  char *list0 = segment_list(&f, &n0, &v0);
  mlog dry = {0}, real = {0};
  sf_compact_all_result dres, rres;
  sf_err err = {0};
  assert_int_equal(compact_all(&f, 2, 1, &dry, &dres, &err), SF_OK);
  size_t n1;
  uint64_t v1;
  char *list1 = segment_list(&f, &n1, &v1);
  assert_int_equal(v1, v0);
  assert_string_equal(list1, list0);
  assert_int_equal(count_files(&f), files0);
  assert_true(dres.merges > 0);
  assert_int_equal(dres.version_after, v0);
  /* The real run does what the dry run said. */
  assert_int_equal(compact_all(&f, 2, 0, &real, &rres, &err), SF_OK);
  assert_string_equal(dry.trace, real.trace);
  assert_int_equal(dres.segments_after, rres.segments_after);
  free(list0);
  free(list1);
  fx_free(&f);
}

static void the_same_catalog_compacts_to_the_same_segments(void **st) {
  fx a, b;
  fx_init(&a, "compact-all-same-a");
  fx_init(&b, "compact-all-same-b");
  mlog la = {0}, lb = {0};
  sf_compact_all_result ra, rb;
  sf_err err = {0};
  assert_int_equal(compact_all(&a, 1, 0, &la, &ra, &err), SF_OK);
  assert_int_equal(compact_all(&b, 1, 0, &lb, &rb, &err), SF_OK);
  assert_string_equal(la.trace, lb.trace);
  size_t na, nb;
  char *sa = segment_list(&a, &na, NULL), *sb = segment_list(&b, &nb, NULL);
  assert_string_equal(sa, sb);
  free(sa);
  free(sb);
  fx_free(&a);
  fx_free(&b);
}

/* The per-merge callbacks serve builds on: start before each merge, the
 * report after it, and a report that ends the run. */
typedef struct steps {
  char trace[8192]; /* "S<output>;" at a start, "R<output>;" at a report */
  size_t reports, stop_after;
  size_t gone; /* segments the merges removed: inputs - 1 each */
} steps;

static void on_start(void *ctx, const sf_compact_merge_report *m) {
  steps *s = ctx;
  assert_true(m->ninputs >= 2 && m->bytes_read > 0 && m->num_rows > 0);
  assert_int_equal(m->version, 0);
  assert_null(m->merged);
  size_t n = strlen(s->trace);
  snprintf(s->trace + n, sizeof s->trace - n, "S%s;", m->output);
}

static int on_report(void *ctx, const sf_compact_merge_report *m) {
  steps *s = ctx;
  assert_int_equal(m->status, SF_OK);
  assert_non_null(m->merged);
  assert_true(m->built); /* nothing to reuse: every merge is written */
  size_t n = strlen(s->trace);
  snprintf(s->trace + n, sizeof s->trace - n, "R%s;", m->output);
  s->gone += m->ninputs - 1;
  return ++s->reports == s->stop_after;
}

static void each_merge_is_started_then_reported_and_a_report_can_end_the_run(void **st) {
  fx f;
  fx_init(&f, "compact-all-steps");
  steps s = {.stop_after = 2};
  sf_compact_all_req r = {.dataset = f.ds,
                          .index_name = "idx",
                          .policy = policy(),
                          .max_merges = 1,
                          .report = on_report,
                          .start = on_start,
                          .report_ctx = &s};
  sf_compact_all_result res;
  sf_err err = {0};
  if (sf_compact_all(&r, &res, &err)) fail_msg("compact: %s", err.msg);
  assert_true(res.stopped);
  assert_int_equal(res.merges, 2);
  assert_int_equal(res.rounds, 2);
  /* Started and reported in turn, one merge at a time. */
  char want[8192] = "", *p = s.trace;
  for (int i = 0; i < 2; i++) {
    const char *sc = strchr(p, ';');
    assert_non_null(sc);
    assert_int_equal(p[0], 'S');
    size_t len = (size_t)(sc - p);
    size_t n = strlen(want);
    snprintf(want + n, sizeof want - n, "%.*s;R%.*s;", (int)len, p, (int)len - 1, p + 1);
    p = strchr(sc + 1, ';') + 1;
  }
  assert_string_equal(s.trace, want);
  /* The figures after are the catalog's. */
  size_t n;
  uint64_t v;
  free(segment_list(&f, &n, &v));
  assert_int_equal(res.segments_after, n);
  assert_int_equal(res.version_after, v);
  assert_int_equal(res.segments_after, JOBS - s.gone);
  /* The rest is left for the next run, which finishes it. */
  s = (steps){0};
  if (sf_compact_all(&r, &res, &err)) fail_msg("compact: %s", err.msg);
  assert_false(res.stopped);
  assert_true(res.merges >= 1);
  assert_policy_done(&f);
  fx_free(&f);
}

/* ---- two compactors at once ------------------------------------------- */

typedef struct racer {
  const fx *f;
  uint32_t at_once; /* different for the two, so that their merges overlap */
  mlog l;
  sf_compact_all_result res;
  sf_code rc;
  sf_err err;
} racer;

/* Slows every merge down so that the two runs overlap. */
static void slow(void *ctx, const sf_build_progress *p) {
  (void)ctx;
  (void)p;
  usleep(3000);
}

static void *racer_main(void *arg) {
  racer *r = arg;
  sf_compact_all_req q = {.dataset = r->f->ds,
                          .index_name = "idx",
                          .policy = policy(),
                          .max_merges = 2,
                          .build = {.progress = slow},
                          .report = record,
                          .report_ctx = &r->l};
  q.policy.max_merge_at_once = r->at_once;
  r->rc = sf_compact_all(&q, &r->res, &r->err);
  return NULL;
}

static int cmp_rowid(const void *a, const void *b) {
  sf_rowid x = *(const sf_rowid *)a, y = *(const sf_rowid *)b;
  return x < y ? -1 : x > y;
}

static void racing_compactors_leave_every_row_exactly_once(void **st) {
  fx f;
  fx_init(&f, "compact-all-race");
  sf_rowid before[NQ * K], after[NQ * K];
  search_all(&f, K, NQ, before);
  racer a = {.f = &f, .at_once = 3}, b = {.f = &f, .at_once = 2};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, racer_main, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, racer_main, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  if (a.rc) fail_msg("a: %s", a.err.msg);
  if (b.rc) fail_msg("b: %s", b.err.msg);
  print_message(
      "racing compactors: %zu + %zu merges, %zu + %zu discarded, %zu + %zu found "
      "done\n",
      a.res.merges, b.res.merges, a.res.discarded, b.res.discarded, a.res.already,
      b.res.already);
  assert_true(a.res.merges + b.res.merges > 0);
  assert_policy_done(&f);
  /* Every row exactly once: one query asking for all of them. */
  sf_rowid *all = malloc(ROWS * sizeof *all);
  search_all(&f, ROWS, 1, all);
  qsort(all, ROWS, sizeof *all, cmp_rowid);
  for (size_t i = 0; i < ROWS; i++) assert_int_equal(all[i], SF_ROWID(i / RPF, i % RPF));
  free(all);
  search_all(&f, K, NQ, after);
  assert_memory_equal(before, after, sizeof before);
  fx_free(&f);
}

static void a_missing_index_or_bad_policy_is_refused(void **st) {
  fx f;
  snprintf(f.ds, sizeof f.ds, "%s", tu_tmpdir("compact-all-refused"));
  sf_compact_all_req r = {.dataset = f.ds, .index_name = "idx", .policy = policy()};
  sf_compact_all_result res;
  sf_err err = {0};
  assert_int_equal(sf_compact_all(&r, &res, &err), SF_ENOTFOUND);
  r.policy.segments_per_tier = 1;
  assert_int_equal(sf_compact_all(&r, &res, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "--segments-per-tier"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(compaction_drops_the_count_to_the_policy_and_answers_the_same_ids),
      cmocka_unit_test(a_dry_run_plans_the_same_merges_and_writes_nothing),
      cmocka_unit_test(the_same_catalog_compacts_to_the_same_segments),
      cmocka_unit_test(each_merge_is_started_then_reported_and_a_report_can_end_the_run),
      cmocka_unit_test(racing_compactors_leave_every_row_exactly_once),
      cmocka_unit_test(a_missing_index_or_bad_policy_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
