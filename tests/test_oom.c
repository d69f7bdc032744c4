/*
 * test_oom.c - every out-of-memory path of the decoders, the planner, the
 * build, the commit and finalize runs, and each ends cleanly: after
 * SQLite's malloc tests (src/test_malloc.c), a countdown makes the N-th
 * allocation fail, for N = 1, 2, 3, ... until the operation completes
 * without reaching its N-th allocation.
 *
 * At each N the operation must
 *   - succeed, or fail with SF_ENOMEM (an event decoder also with no
 *     rejection reason: memory is no fault of the event, which must not be
 *     dead-lettered; finalize with the blame "retryable");
 *   - free everything it allocated (the wrapper's table of live blocks is
 *     empty afterwards; AddressSanitizer's leak check covers the shared
 *     libraries at exit);
 *   - for the operations that write (build, commit, finalize), leave a
 *     dataset whose every catalog version reads and names intact files,
 *     and on which the same operation then succeeds without injection.
 * Each operation runs twice: with one failure (transient), and with every
 * allocation from the N-th on failing (persistent).
 *
 * Only allocations made by segforge's own code are counted (see
 * tests/fault_sim.h): avro-c, CRoaring, zstd and jansson allocate through
 * the C library directly. fsync is skipped (fsim_sync_skip): durability is
 * the power-loss test's subject, and this one runs thousands of operations.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fragset.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"
#include "core/format/stage.h"
#include "core/pipeline/build.h"
#include "core/pipeline/finalize.h"
#include "core/pipeline/plan.h"
#include "core/vector/gen.h"
#include "core/vector/quantizer.h"
#include "schemas/event_decode.h"
#include "schemas/event_encode.h"
#include "schemas/schema.h"
#include "tests/dataset_fixture.h"
#include "tests/fault_sim.h"
#include "tests/testutil.h"

/* One world for all tests: made once, copied per test. */
static dfx world;
static char ds0[4096]; /* a dataset with job "job" staged (3 shards), nothing built */

typedef struct op op;
struct op {
  const char *name;
  /* The operation; frees all it allocates before returning. */
  sf_code (*run)(op *o, sf_err *err);
  /* Brings the state back to what run expects (NULL: it changes nothing). */
  void (*reset)(op *o);
  /* After a run that returned rc (injection off): checks the state and
   * runs the operation again, which must succeed. */
  void (*after)(op *o, sf_code rc);
  char ds[4096];
  sf_plan *plan;
  sf_seginfo *segs;
  size_t nsegs;
  uint8_t *event;
  size_t event_len;
  const char *file;
  int blame; /* finalize's last blame */
  sf_event_reason reason;
  const sf_shard_staged *staged; /* encode */
  const float *rows;             /* train */
  sf_quant_params qp;
  sf_quant *q; /* stage */
};

static void must_be_intact(const op *o, unsigned long n) {
  char why[1024];
  if (dfx_check(o->ds, why, sizeof why))
    fail_msg("%s, allocation %lu failing: %s", o->name, n, why);
}

/* Runs o under the countdown; returns the distinct failure points seen. */
static unsigned long countdown(op *o, int persistent) {
  unsigned long n = 1;
  for (;; n++) {
    if (o->reset) o->reset(o);
    sf_err err = {0};
    o->reason = SF_REASON_NONE;
    o->blame = SF_FINALIZE_OK;
    fsim_oom_arm(n, persistent);
    sf_code rc = o->run(o, &err);
    int fired = fsim_oom_disarm();
    char leaks[512];
    size_t nleaks = fsim_track_stop(leaks, sizeof leaks, 4);
    if (!fired && rc != SF_OK)
      fail_msg("%s failed without any injected failure: %s", o->name, err.msg);
    if (nleaks)
      fail_msg("%s, allocation %lu failing%s: %zu blocks leaked: %s", o->name, n,
               persistent ? " (and after)" : "", nleaks, leaks);
    if (rc != SF_OK && rc != SF_ENOMEM)
      fail_msg("%s, allocation %lu failing%s: %s instead of NOMEM: %s", o->name, n,
               persistent ? " (and after)" : "", sf_code_name(rc), err.msg);
    if (rc == SF_ENOMEM && o->reason != SF_REASON_NONE)
      fail_msg("%s, allocation %lu failing: rejection reason %d for a lack of memory",
               o->name, n, (int)o->reason);
    if (rc == SF_ENOMEM && o->blame != SF_FINALIZE_OK &&
        o->blame != SF_FINALIZE_RETRYABLE)
      fail_msg("%s, allocation %lu failing: a lack of memory blamed on the job", o->name,
               n);
    if (o->after) o->after(o, rc);
    if (!fired) break;
  }
  return n - 1;
}

static void run_both(op *o) {
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  /* A first run outside the countdown fills what the process sets up once
   * (schemas parsed, the pid namespace read), which is no leak. */
  if (o->reset) o->reset(o);
  sf_err err = {0};
  if (o->run(o, &err)) fail_msg("%s: %s", o->name, err.msg);
  unsigned long a = countdown(o, 0), b = countdown(o, 1);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  print_message("%-24s %4lu allocation points, each failing once and for good (%.1f s)\n",
                o->name, a, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
  assert_int_equal(a, b); /* the same allocations, up to the failing one */
  assert_true(a > 0);
}

/* ---- a copy of the world per test ----------------------------------------- */

static void fresh_ds(op *o, const char *tag) {
  snprintf(o->ds, sizeof o->ds, "%s/ds", tu_tmpdir(tag));
  dfx_copy_tree(ds0, o->ds);
}

static void rm_under(const op *o, const char *rel) {
  char p[4200];
  snprintf(p, sizeof p, "%s/%s", o->ds, rel);
  dfx_rm_rf(p);
}

static const char *staging_root(const op *o) {
  static char p[4200];
  snprintf(p, sizeof p, "%s/%s/job", o->ds, SF_CATALOG_STAGING_DIR);
  return p;
}

static sf_plan *plan_of(const op *o) {
  sf_plan_opts po = {.staging_id = "job", .target_segment_bytes = 0, .index_type = -1};
  sf_plan *p;
  sf_err err = {0};
  if (sf_plan_staging(staging_root(o), &po, &p, &err)) fail_msg("plan: %s", err.msg);
  return p;
}

/* ---- decoders ------------------------------------------------------------- */

static sf_code run_decode(op *o, sf_err *err) {
  sf_schema_set *set = NULL;
  sf_event_decoder *fast = NULL, *slow = NULL;
  sf_shard_staged a = {0}, b = {0};
  sf_code rc;
  if (!(rc = sf_schema_set_new(&set, err)) &&
      !(rc = sf_event_decoder_new(set, SF_FRAMING_AUTO, 0, &fast, err)) &&
      !(rc = sf_event_decoder_new(set, SF_FRAMING_AUTO, SF_DECODE_NO_FAST_PATH, &slow,
                                  err)) &&
      !(rc = sf_event_decode_shard_staged(fast, o->event, o->event_len, &a, &o->reason,
                                          err)))
    rc = sf_event_decode_shard_staged(slow, o->event, o->event_len, &b, &o->reason, err);
  if (!rc && (strcmp(a.shard_id, "s0") || strcmp(b.shard_id, "s0") ||
              !roaring_bitmap_equals(a.fragments, b.fragments)))
    rc = sf_err_set(err, SF_EINVAL, "the two readers disagree");
  sf_shard_staged_clear(&a);
  sf_shard_staged_clear(&b);
  sf_event_decoder_free(fast);
  sf_event_decoder_free(slow);
  sf_schema_set_free(set);
  return rc;
}

static sf_code run_encode(op *o, sf_err *err) {
  sf_schema_set *set = NULL;
  sf_event_encoder *enc = NULL;
  uint8_t *buf = NULL;
  size_t len = 0;
  sf_code rc;
  if (!(rc = sf_schema_set_new(&set, err)) &&
      !(rc = sf_event_encoder_new(set, SF_FRAMING_SINGLE, 0, &enc, err)))
    rc = sf_event_encode_shard_staged(enc, o->staged, &buf, &len, err);
  if (!rc && (len != o->event_len || memcmp(buf, o->event, len)))
    rc = sf_err_set(err, SF_EINVAL, "another encoding");
  free(buf);
  sf_event_encoder_free(enc);
  sf_schema_set_free(set);
  return rc;
}

static void test_decoding_a_shard_staged_event_survives_every_allocation_failure(
    void **state) {
  op o = {.name = "event decode", .run = run_decode};
  sf_schema_set *set;
  sf_event_encoder *enc;
  sf_err err = {0};
  assert_int_equal(sf_schema_set_new(&set, &err), SF_OK);
  assert_int_equal(sf_event_encoder_new(set, SF_FRAMING_SINGLE, 0, &enc, &err), SF_OK);
  sf_shard_staged e = {.event_id = "ev-1",
                       .dataset_uri = "file:///data/ds",
                       .index_name = "idx",
                       .column = "emb",
                       .staging_id = "job",
                       .shard_id = "s0",
                       .shard_path = "s0.sfshard",
                       .shard_bytes = 4096,
                       .num_rows = 32,
                       .index_type = SF_IVF_SQ,
                       .metric = SF_L2,
                       .dim = 8,
                       .num_partitions = 4,
                       .quantizer_checksum = 42,
                       .has_target_segment_bytes = true,
                       .target_segment_bytes = 1 << 20,
                       .staged_at_ms = 1700000000000};
  e.fragments = roaring_bitmap_from_range(0, 2, 1);
  e.expected_fragments = roaring_bitmap_from_range(0, 6, 1);
  assert_int_equal(sf_event_encode_shard_staged(enc, &e, &o.event, &o.event_len, &err),
                   SF_OK);
  sf_event_encoder_free(enc);
  sf_schema_set_free(set);
  run_both(&o);
  /* And encoding it again, as a worker does. */
  o.name = "event encode";
  o.run = run_encode;
  o.staged = &e;
  run_both(&o);
  sf_fragset_free(e.fragments);
  sf_fragset_free(e.expected_fragments);
  free(o.event);
}

static sf_code run_segfile(op *o, sf_err *err) {
  sf_seg_reader *r = NULL;
  sf_code rc = sf_seg_open(o->file, &r, err);
  if (!rc) rc = sf_seg_verify(r, err);
  sf_seg_close(r);
  r = NULL;
  if (!rc) rc = sf_seg_open_meta(o->file, &r, err);
  sf_seg_close(r);
  return rc;
}

static void test_opening_and_verifying_a_shard_survives_every_allocation_failure(
    void **state) {
  op o = {.name = "shard open + verify", .run = run_segfile};
  snprintf(o.ds, sizeof o.ds, "%s", ds0);
  o.file = strdup(tu_path(staging_root(&o), "s1.sfshard"));
  run_both(&o);
  free((char *)o.file);
}

static sf_code run_quantizer(op *o, sf_err *err) {
  sf_quant *q = NULL;
  uint64_t cs;
  sf_code rc = sf_quant_load(o->file, &q, err);
  if (!rc) rc = sf_quant_checksum_of_file(o->file, &cs, err);
  if (!rc && cs != sf_quant_checksum(q)) rc = sf_err_set(err, SF_EINVAL, "checksum");
  sf_quant_free(q);
  return rc;
}

static void test_loading_a_quantizer_survives_every_allocation_failure(void **state) {
  op o = {.name = "quantizer load", .run = run_quantizer, .file = world.quantizer};
  run_both(&o);
}

/* ---- the worker's side: training and staging --------------------------- */

static sf_code run_train(op *o, sf_err *err) {
  sf_quant *q = NULL;
  sf_code rc = sf_quant_train(&o->qp, o->rows,
                              (size_t)DFX_FRAGMENTS * DFX_ROWS_PER_FRAGMENT, &q, err);
  if (!rc) rc = sf_quant_save(q, o->file, err);
  sf_quant_free(q);
  return rc;
}

static void test_training_and_saving_a_quantizer_survives_every_allocation_failure(
    void **state) {
  size_t n = (size_t)DFX_FRAGMENTS * DFX_ROWS_PER_FRAGMENT;
  float *rows = malloc(n * 8 * sizeof *rows);
  assert_non_null(rows);
  sf_gen_clustered(rows, n, 8, 4, 0.1f, 7, 11);
  char path[4200];
  snprintf(path, sizeof path, "%s/q", tu_tmpdir("oom-train"));
  op o = {.name = "train IVF_SQ + save", .run = run_train, .rows = rows, .file = path};
  o.qp = (sf_quant_params){.type = SF_IVF_SQ,
                           .metric = SF_COSINE,
                           .dim = 8,
                           .nlist = 4,
                           .seed = 5,
                           .kmeans_iters = 4};
  run_both(&o);
  o.name = "train IVF_PQ + save";
  o.qp = (sf_quant_params){.type = SF_IVF_PQ,
                           .metric = SF_L2,
                           .dim = 8,
                           .nlist = 4,
                           .pq_m = 2,
                           .seed = 5,
                           .kmeans_iters = 2};
  run_both(&o);
  free(rows);
}

static sf_code run_stage(op *o, sf_err *err) {
  roaring_bitmap_t *f = roaring_bitmap_from_range(2, 5, 1);
  sf_stage_opts so = {.vectors = world.vectors,
                      .staging_root = staging_root(o),
                      .shard_id = "extra",
                      .fragments = f,
                      .rows_per_fragment = DFX_ROWS_PER_FRAGMENT,
                      .memory_budget = 512}; /* several passes */
  sf_stage_result res = {0};
  sf_code rc = sf_stage_shard(&so, o->q, &res, err);
  free(res.path);
  sf_fragset_free(f);
  return rc;
}

static void test_staging_a_shard_survives_every_allocation_failure(void **state) {
  op o = {.name = "stage", .run = run_stage};
  fresh_ds(&o, "oom-stage");
  sf_err err = {0};
  assert_int_equal(sf_quant_load(world.quantizer, &o.q, &err), SF_OK);
  run_both(&o);
  sf_quant_free(o.q);
}

/* ---- plan ------------------------------------------------------------------ */

static sf_code run_plan(op *o, sf_err *err) {
  roaring_bitmap_t *expect = roaring_bitmap_from_range(0, 6, 1);
  sf_plan_opts po = {.staging_id = "job",
                     .target_segment_bytes = 1, /* a shard per segment */
                     .expected_fragments = expect,
                     .index_type = -1};
  sf_plan *p = NULL;
  sf_code rc = sf_plan_staging(staging_root(o), &po, &p, err);
  sf_fragset_free(expect);
  if (!rc && p->num_segments != 3) rc = sf_err_set(err, SF_EINVAL, "not 3 segments");
  sf_plan_free(p);
  return rc;
}

static void test_planning_a_staging_root_survives_every_allocation_failure(void **state) {
  op o = {.name = "plan", .run = run_plan};
  snprintf(o.ds, sizeof o.ds, "%s", ds0);
  run_both(&o);
}

/* ---- build ----------------------------------------------------------------- */

static sf_code run_build(op *o, sf_err *err) {
  sf_build_opts bo = {.max_merges = 2};
  sf_seginfo *segs = NULL;
  size_t n = 0;
  sf_code rc = sf_build_run(o->plan, o->ds, &bo, &segs, &n, NULL, err);
  sf_build_results_free(segs, n);
  return rc;
}

/* Every file under a final segment name is complete; the build then runs. */
static void after_build(op *o, sf_code rc) {
  (void)rc;
  for (size_t g = 0; g < o->plan->num_segments; g++) {
    char *p = sf_build_segment_path(o->ds, o->plan->segments[g].segment_id);
    struct stat st;
    sf_seg_reader *r = NULL;
    sf_err err = {0};
    if (!stat(p, &st) && (sf_seg_open(p, &r, &err) || sf_seg_verify(r, &err)))
      fail_msg("build left a damaged segment %s: %s", p, err.msg);
    sf_seg_close(r);
    free(p);
  }
  sf_err err = {0};
  if (run_build(o, &err)) fail_msg("build after a failed build: %s", err.msg);
}

static void reset_build(op *o) {
  rm_under(o, SF_CATALOG_SEGMENTS_DIR);
}

static void test_building_segments_survives_every_allocation_failure(void **state) {
  op o = {.name = "build", .run = run_build, .reset = reset_build, .after = after_build};
  fresh_ds(&o, "oom-build");
  o.plan = plan_of(&o);
  run_both(&o);
  /* And reusing segments a previous run finished. */
  o.name = "build (reuse)";
  o.reset = NULL;
  run_both(&o);
  sf_plan_free(o.plan);
}

/* ---- compaction's build: joining small chunks ------------------------------ */

/* The plan of a compaction of the job's segments (which o->ds must hold):
 * inputs of kind SEGMENT, one group, as sf_compact_run makes it. */
static sf_plan *compaction_plan_of(const op *o, const sf_plan *job) {
  size_t n = job->num_segments;
  sf_plan_shard *sh = calloc(n, sizeof *sh);
  sf_err err = {0};
  for (size_t g = 0; g < n; g++) {
    sf_seg_reader *r;
    sh[g].shard_id = job->segments[g].segment_id;
    sh[g].path = sf_build_segment_path(o->ds, sh[g].shard_id);
    if (sf_seg_open(sh[g].path, &r, &err)) fail_msg("open: %s", err.msg);
    sh[g].bytes = sf_seg_file_bytes(r);
    sh[g].num_rows = sf_seg_num_rows(r);
    sh[g].params = *sf_seg_get_params(r);
    sh[g].fragments = roaring_bitmap_copy(sf_seg_fragments(r));
    sf_seg_close(r);
  }
  sf_plan_opts po = {.staging_id = "compact",
                     .target_segment_bytes = UINT64_MAX,
                     .index_type = -1,
                     .input_kind = SF_SEG_KIND_SEGMENT};
  sf_plan *p;
  if (sf_plan_make(sh, n, &po, &p, &err)) fail_msg("plan: %s", err.msg);
  for (size_t g = 0; g < n; g++) {
    free(sh[g].path);
    sf_fragset_free(sh[g].fragments);
  }
  free(sh);
  return p;
}

static void reset_compaction(op *o) {
  char *p = sf_build_segment_path(o->ds, o->plan->segments[0].segment_id);
  remove(p);
  free(p);
}

static void test_building_a_compaction_survives_every_allocation_failure(void **state) {
  op o = {.name = "build (compaction)",
          .run = run_build,
          .reset = reset_compaction,
          .after = after_build};
  fresh_ds(&o, "oom-compaction");
  sf_plan *job = plan_of(&o);
  sf_seginfo *segs = NULL;
  size_t n = 0;
  sf_build_stats st;
  sf_err err = {0};
  sf_build_opts bo = {.max_merges = 1};
  if (sf_build_run(job, o.ds, &bo, &segs, &n, NULL, &err)) fail_msg("%s", err.msg);
  sf_build_results_free(segs, n);
  o.plan = compaction_plan_of(&o, job);
  sf_plan_free(job);
  /* The merge joins its inputs' small chunks (the path under test). */
  if (sf_build_run(o.plan, o.ds, &bo, &segs, &n, &st, &err)) fail_msg("%s", err.msg);
  sf_build_results_free(segs, n);
  assert_true(st.chunks_out > 0 && st.chunks_out < st.chunks_in);
  run_both(&o);
  sf_plan_free(o.plan);
}

/* ---- commit ---------------------------------------------------------------- */

static sf_code run_commit(op *o, sf_err *err) {
  sf_catalog_commit_req r = {.dataset = o->ds,
                             .index_name = "idx",
                             .column = "emb",
                             .staging_id = "job",
                             .segs = o->segs,
                             .nsegs = o->nsegs};
  sf_catalog_commit_result res;
  return sf_catalog_commit(&r, &res, err);
}

static void after_commit(op *o, sf_code rc) {
  must_be_intact(o, 0);
  sf_err err = {0};
  if (run_commit(o, &err)) fail_msg("commit after a failed commit: %s", err.msg);
  must_be_intact(o, 0);
  assert_true(dfx_committed(o->ds, "job"));
}

static char template_indices[4200]; /* _catalog and quantizers before the commit */

static void reset_commit(op *o) {
  rm_under(o, SF_CATALOG_DIR);
  rm_under(o, SF_CATALOG_QUANTIZERS_DIR);
  if (!template_indices[0]) return;
  char a[4400], b[4400];
  snprintf(a, sizeof a, "%s/_catalog", template_indices);
  snprintf(b, sizeof b, "%s/%s", o->ds, SF_CATALOG_DIR);
  dfx_copy_tree(a, b);
  snprintf(a, sizeof a, "%s/quantizers", template_indices);
  snprintf(b, sizeof b, "%s/%s", o->ds, SF_CATALOG_QUANTIZERS_DIR);
  dfx_copy_tree(a, b);
}

static void test_committing_survives_every_allocation_failure(void **state) {
  op o = {.name = "commit (first)",
          .run = run_commit,
          .reset = reset_commit,
          .after = after_commit};
  fresh_ds(&o, "oom-commit");
  o.plan = plan_of(&o);
  sf_err err = {0};
  sf_build_opts bo = {.max_merges = 1};
  assert_int_equal(sf_build_run(o.plan, o.ds, &bo, &o.segs, &o.nsegs, NULL, &err), SF_OK);
  template_indices[0] = '\0';
  run_both(&o);
  /* Onto a catalog that already holds another job of the index. */
  dfx_stage(&world, o.ds, "base", 8, 2);
  sf_finalize_req fr = {.dataset = o.ds,
                        .index_name = "idx",
                        .column = "emb",
                        .staging_id = "base",
                        .index_type = -1};
  sf_finalize_result res;
  reset_commit(&o);
  assert_int_equal(sf_finalize(&fr, &res, &err), SF_OK);
  sf_finalize_result_clear(&res);
  snprintf(template_indices, sizeof template_indices, "%s/template",
           tu_tmpdir("oom-tmpl"));
  mkdir(template_indices, 0755);
  char a[4400], b[4400];
  snprintf(a, sizeof a, "%s/%s", o.ds, SF_CATALOG_DIR);
  snprintf(b, sizeof b, "%s/_catalog", template_indices);
  dfx_copy_tree(a, b);
  snprintf(a, sizeof a, "%s/%s", o.ds, SF_CATALOG_QUANTIZERS_DIR);
  snprintf(b, sizeof b, "%s/quantizers", template_indices);
  dfx_copy_tree(a, b);
  o.name = "commit (second)";
  run_both(&o);
  template_indices[0] = '\0';
  sf_build_results_free(o.segs, o.nsegs);
  sf_plan_free(o.plan);
}

/* ---- catalog read ------------------------------------------------------------ */

static sf_code run_catalog_read(op *o, sf_err *err) {
  sf_catalog *c = NULL;
  uint64_t *v = NULL;
  size_t nv = 0;
  sf_code rc = sf_catalog_open_latest(o->ds, &c, err);
  if (!rc) rc = sf_catalog_list_versions(o->ds, &v, &nv, err);
  if (!rc && (nv != 2 || sf_catalog_num_jobs(c) != 2))
    rc = sf_err_set(err, SF_EINVAL, "not 2 versions and 2 jobs");
  const sf_catalog_index *ix = c ? sf_catalog_find_index(c, "idx") : NULL;
  char **paths = NULL;
  size_t np = 0;
  if (!rc && ix) rc = sf_catalog_segment_paths(c, ix, &paths, &np, err);
  sf_catalog_paths_free(paths, np);
  sf_catalog_free(c);
  c = NULL;
  if (!rc) rc = sf_catalog_open_version(o->ds, 1, &c, err);
  sf_catalog_free(c);
  free(v);
  return rc;
}

static void test_reading_the_catalog_survives_every_allocation_failure(void **state) {
  op o = {.name = "catalog read", .run = run_catalog_read};
  fresh_ds(&o, "oom-read");
  dfx_stage(&world, o.ds, "other", 8, 2);
  sf_err err = {0};
  const char *jobs[] = {"job", "other"};
  for (int i = 0; i < 2; i++) {
    sf_finalize_req fr = {.dataset = o.ds,
                          .index_name = "idx",
                          .column = "emb",
                          .staging_id = jobs[i],
                          .index_type = -1};
    sf_finalize_result res;
    assert_int_equal(sf_finalize(&fr, &res, &err), SF_OK);
    sf_finalize_result_clear(&res);
  }
  run_both(&o);
}

/* ---- finalize ---------------------------------------------------------------- */

static sf_code run_finalize(op *o, sf_err *err) {
  roaring_bitmap_t *expect = roaring_bitmap_from_range(0, 6, 1);
  sf_finalize_req fr = {.dataset = o->ds,
                        .index_name = "idx",
                        .column = "emb",
                        .staging_id = "job",
                        .expected_fragments = expect,
                        .target_segment_bytes = 1,
                        .index_type = -1,
                        .build = {.max_merges = 2}};
  sf_finalize_result res;
  sf_code rc = sf_finalize(&fr, &res, err);
  o->blame = res.blame;
  sf_finalize_result_clear(&res);
  sf_fragset_free(expect);
  return rc;
}

static void after_finalize(op *o, sf_code rc) {
  must_be_intact(o, 0);
  sf_err err = {0};
  if (run_finalize(o, &err)) fail_msg("finalize after a failed finalize: %s", err.msg);
  must_be_intact(o, 0);
  assert_true(dfx_committed(o->ds, "job"));
}

static void reset_finalize(op *o) {
  rm_under(o, SF_CATALOG_SEGMENTS_DIR);
  rm_under(o, SF_CATALOG_DIR);
  rm_under(o, SF_CATALOG_QUANTIZERS_DIR);
}

static void test_finalizing_a_job_survives_every_allocation_failure(void **state) {
  op o = {.name = "finalize",
          .run = run_finalize,
          .reset = reset_finalize,
          .after = after_finalize};
  fresh_ds(&o, "oom-finalize");
  run_both(&o);
  /* Finalizing a job the catalog already holds. */
  o.name = "finalize (already)";
  o.reset = NULL;
  run_both(&o);
}

static int setup(void **state) {
  (void)state;
  dfx_init(&world, "oom-world");
  snprintf(ds0, sizeof ds0, "%s/ds0", world.dir);
  dfx_stage(&world, ds0, "job", 0, 3);
  fsim_sync_skip(1);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(
          test_decoding_a_shard_staged_event_survives_every_allocation_failure),
      cmocka_unit_test(
          test_opening_and_verifying_a_shard_survives_every_allocation_failure),
      cmocka_unit_test(test_loading_a_quantizer_survives_every_allocation_failure),
      cmocka_unit_test(
          test_training_and_saving_a_quantizer_survives_every_allocation_failure),
      cmocka_unit_test(test_staging_a_shard_survives_every_allocation_failure),
      cmocka_unit_test(test_planning_a_staging_root_survives_every_allocation_failure),
      cmocka_unit_test(test_building_segments_survives_every_allocation_failure),
      cmocka_unit_test(test_building_a_compaction_survives_every_allocation_failure),
      cmocka_unit_test(test_committing_survives_every_allocation_failure),
      cmocka_unit_test(test_reading_the_catalog_survives_every_allocation_failure),
      cmocka_unit_test(test_finalizing_a_job_survives_every_allocation_failure),
  };
  dfx_scratch_in_memory();
  int failed = cmocka_run_group_tests(tests, setup, NULL);
  dfx_scratch_remove();
  return failed;
}
