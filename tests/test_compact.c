/* test_compact.c - the merge executor and the compaction commit: merged
 * segments answer every query exactly as their inputs did, the merged file
 * verifies, one new version swaps out exactly the inputs, racing
 * compactions of overlapping inputs end with one winner and a file gc can
 * take, a crash mid-merge leaves the catalog readable and a re-run
 * completes, a replace and gc during a merge cannot take its inputs, and
 * jobs committed before a compaction stay recognised after it. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fault.h"
#include "core/base/fragset.h"
#include "core/catalog/catalog.h"
#include "core/catalog/gc.h"
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
#define RPF 150 /* rows per fragment */
#define JOBS 4  /* one job per fragment, one segment per job */
#define NQ 40
#define K 10

typedef struct fx {
  char ds[4000];
  float *base, *queries;
} fx;

/* A dataset of `jobs` staged jobs job-<j> (job j holds fragment j in one
 * shard), finalized one by one into index "idx": `jobs` segments. */
static void fx_init(fx *f, const char *tag, int jobs) {
  snprintf(f->ds, sizeof f->ds, "%s", tu_tmpdir(tag));
  size_t n = (size_t)jobs * RPF;
  f->base = malloc(n * DIM * sizeof *f->base);
  f->queries = malloc(NQ * DIM * sizeof *f->queries);
  assert_non_null(f->base);
  assert_non_null(f->queries);
  sf_gen_clustered(f->base, n, DIM, 12, 0.3f, 5, 1);
  sf_gen_clustered(f->queries, NQ, DIM, 12, 0.3f, 5, 2);
  sf_err err = {0};
  char vec[4100];
  snprintf(vec, sizeof vec, "%s/base.fvecs", f->ds);
  sf_vecwriter *w;
  assert_int_equal(sf_vecwriter_open(vec, DIM, &w, &err), SF_OK);
  assert_int_equal(sf_vecwriter_write_f32(w, f->base, n, &err), SF_OK);
  assert_int_equal(sf_vecwriter_close(w, &err), SF_OK);
  sf_quant_params qp = {
      .type = SF_IVF_FLAT, .metric = SF_L2, .dim = DIM, .nlist = NLIST, .seed = 3};
  sf_quant *q;
  assert_int_equal(sf_quant_train(&qp, f->base, n, &q, &err), SF_OK);
  for (int j = 0; j < jobs; j++) {
    char rel[128], root[4300], qpath[4400];
    snprintf(rel, sizeof rel, "%s/job-%d", SF_CATALOG_STAGING_DIR, j);
    snprintf(root, sizeof root, "%s/%s", f->ds, rel);
    tu_mkdirs(f->ds, rel);
    snprintf(qpath, sizeof qpath, "%s/quantizer", root);
    assert_int_equal(sf_quant_save(q, qpath, &err), SF_OK);
    roaring_bitmap_t *frags = roaring_bitmap_of(1, (uint32_t)j);
    sf_stage_opts so = {.vectors = vec,
                        .staging_root = root,
                        .shard_id = "s0",
                        .fragments = frags,
                        .rows_per_fragment = RPF};
    sf_stage_result sr;
    assert_int_equal(sf_stage_shard(&so, q, &sr, &err), SF_OK);
    free(sr.path);
    roaring_bitmap_free(frags);
  }
  sf_quant_free(q);
  for (int j = 0; j < jobs; j++) {
    char job[32];
    snprintf(job, sizeof job, "job-%d", j);
    sf_finalize_req req = {.dataset = f->ds,
                           .index_name = "idx",
                           .column = "emb",
                           .staging_id = job,
                           .index_type = -1,
                           .build = {.max_merges = 1}};
    sf_finalize_result res;
    sf_code rc = sf_finalize(&req, &res, &err);
    if (rc) fail_msg("finalize %s: %s", job, err.msg);
    assert_int_equal(res.nsegs, 1);
    sf_finalize_result_clear(&res);
  }
}

static void fx_free(fx *f) {
  free(f->base);
  free(f->queries);
}

/* The ids of the index's segments in the newest version, in catalog order
 * (malloc'd strings in a static array). */
static size_t segment_ids(const fx *f, char *ids[16], uint64_t *version) {
  sf_catalog *c;
  sf_err err = {0};
  assert_int_equal(sf_catalog_open_latest(f->ds, &c, &err), SF_OK);
  const sf_catalog_index *ix = sf_catalog_find_index(c, "idx");
  assert_non_null(ix);
  assert_true(ix->nsegs <= 16);
  for (size_t i = 0; i < ix->nsegs; i++) ids[i] = strdup(ix->segs[i].info.segment_id);
  size_t n = ix->nsegs;
  if (version) *version = sf_catalog_version(c);
  sf_catalog_free(c);
  return n;
}

static void free_ids(char **ids, size_t n) {
  for (size_t i = 0; i < n; i++) free(ids[i]);
}

/* Runs every query at nprobe = nlist over the newest version's segments;
 * fills ids[NQ*K] and scores[NQ*K]. */
static void search_all(const fx *f, sf_rowid *ids, float *scores) {
  sf_err err = {0};
  sf_search *s;
  assert_int_equal(sf_search_open_dataset(f->ds, "idx", NULL, &s, &err), SF_OK);
  for (int i = 0; i < NQ; i++) {
    uint32_t got;
    assert_int_equal(sf_search_query(s, f->queries + i * DIM, K, NLIST, ids + i * K,
                                     scores + i * K, &got, &err),
                     SF_OK);
    assert_int_equal(got, K);
  }
  sf_search_free(s);
}

static void brute_force(const fx *f, size_t rows, sf_rowid *ids) {
  int64_t idx[NQ * K];
  sf_err err = {0};
  assert_int_equal(
      sf_bruteforce_knn(f->base, rows, f->queries, NQ, DIM, SF_L2, K, idx, &err), SF_OK);
  for (int i = 0; i < NQ * K; i++)
    ids[i] = SF_ROWID((uint64_t)idx[i] / RPF, (uint64_t)idx[i] % RPF);
}

static sf_code compact(const fx *f, char **ids, size_t n, sf_compact_result *res,
                       sf_err *err) {
  sf_compact_req r = {.dataset = f->ds,
                      .index_name = "idx",
                      .segment_ids = (const char *const *)ids,
                      .nsegments = n};
  return sf_compact_run(&r, res, err);
}

static int file_exists(const fx *f, const char *rel) {
  char p[4600];
  struct stat st;
  snprintf(p, sizeof p, "%s/_indices/%s", f->ds, rel);
  return stat(p, &st) == 0;
}

/* ---- a merge answers like its inputs ---------------------------------- */

static void a_merge_answers_every_query_exactly_as_its_inputs_did(void **state) {
  fx f;
  fx_init(&f, "compact-exact", JOBS);
  sf_rowid before[NQ * K], after[NQ * K], brute[NQ * K];
  float sb[NQ * K], sa[NQ * K];
  search_all(&f, before, sb);
  brute_force(&f, JOBS * RPF, brute);
  assert_memory_equal(before, brute, sizeof brute);

  char *ids[16];
  uint64_t v0;
  size_t n = segment_ids(&f, ids, &v0);
  assert_int_equal(n, JOBS);
  /* Merge the middle three; the first segment stays as it is. */
  sf_compact_result res;
  sf_err err = {0};
  sf_code rc = compact(&f, ids + 1, 3, &res, &err);
  if (rc) fail_msg("compact: %s", err.msg);
  assert_int_equal(res.version, v0 + 1);
  assert_false(res.already);
  assert_int_equal(res.build.built, 1);
  assert_int_equal(res.input_rows, 3 * RPF);
  assert_int_equal(res.merged.num_rows, 3 * RPF);
  assert_int_equal(res.merged.num_shards, 0);
  assert_non_null(strstr(res.merged.segment_id, "compact-"));

  /* One version later, exactly the inputs are gone, in their place the
   * merge, which covers their fragments. */
  char *now[16];
  uint64_t v1;
  size_t m = segment_ids(&f, now, &v1);
  assert_int_equal(v1, v0 + 1);
  assert_int_equal(m, 2);
  assert_string_equal(now[0], ids[0]);
  assert_string_equal(now[1], res.merged.segment_id);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(f.ds, &c, &err), SF_OK);
  const sf_catalog_segment *ms = &sf_catalog_find_index(c, "idx")->segs[1];
  roaring_bitmap_t *want = roaring_bitmap_from_range(1, 4, 1);
  assert_true(roaring_bitmap_equals(ms->info.fragments, want));
  roaring_bitmap_free(want);
  assert_int_equal(ms->added_in, v1);
  assert_string_equal(ms->staging_id, ms->info.segment_id);

  /* The merged file verifies: every block's CRC, every row id. */
  char *path = sf_catalog_segment_path(c, ms);
  sf_seg_reader *rd;
  assert_int_equal(sf_seg_open(path, &rd, &err), SF_OK);
  assert_int_equal(sf_seg_get_params(rd)->kind, SF_SEG_KIND_SEGMENT);
  assert_int_equal(sf_seg_num_rows(rd), 3 * RPF);
  rc = sf_seg_verify(rd, &err);
  if (rc) fail_msg("verify: %s", err.msg);
  sf_seg_close(rd);
  free(path);
  sf_catalog_free(c);

  /* Same ids, same distances, at nprobe = nlist; and still brute force. */
  search_all(&f, after, sa);
  assert_memory_equal(after, before, sizeof before);
  assert_memory_equal(sa, sb, sizeof sb);

  /* Then all of them, the merge included: still the same answers. This
   * merge takes its slot of the process's build budget. */
  sf_build_budget *budget;
  assert_int_equal(sf_build_budget_new(1, &budget, &err), SF_OK);
  sf_compact_result res2;
  sf_compact_req all = {.dataset = f.ds,
                        .index_name = "idx",
                        .segment_ids = (const char *const *)now,
                        .nsegments = m,
                        .build = {.budget = budget}};
  assert_int_equal(sf_compact_run(&all, &res2, &err), SF_OK);
  sf_build_budget_stats bs;
  sf_build_budget_get_stats(budget, &bs);
  assert_int_equal(bs.acquired, 1);
  assert_int_equal(bs.running, 0);
  sf_build_budget_free(budget);
  assert_int_equal(res2.merged.num_rows, JOBS * RPF);
  search_all(&f, after, sa);
  assert_memory_equal(after, brute, sizeof brute);
  assert_memory_equal(sa, sb, sizeof sb);

  /* Running the finished merge again changes nothing. */
  sf_compact_result again;
  assert_int_equal(compact(&f, now, m, &again, &err), SF_OK);
  assert_true(again.already);
  assert_int_equal(again.version, res2.version);
  assert_string_equal(again.merged.segment_id, res2.merged.segment_id);
  uint64_t v2;
  char *fin[16];
  free_ids(fin, segment_ids(&f, fin, &v2));
  assert_int_equal(v2, res2.version);

  sf_compact_result_clear(&again);
  sf_compact_result_clear(&res2);
  sf_compact_result_clear(&res);
  free_ids(now, m);
  free_ids(ids, n);
  fx_free(&f);
}

static void a_merge_of_unknown_or_too_few_segments_is_refused(void **state) {
  fx f;
  fx_init(&f, "compact-bad", 2);
  char *ids[16];
  size_t n = segment_ids(&f, ids, NULL);
  sf_compact_result res;
  sf_err err = {0};
  assert_int_equal(compact(&f, ids, 1, &res, &err), SF_EINVAL);
  char *twice[2] = {ids[0], ids[0]};
  assert_int_equal(compact(&f, twice, 2, &res, &err), SF_EINVAL);
  char *unknown[2] = {ids[0], "no-such-segment"};
  assert_int_equal(compact(&f, unknown, 2, &res, &err), SF_ECONFLICT);
  assert_non_null(strstr(err.msg, "no-such-segment"));
  sf_compact_req r = {.dataset = f.ds,
                      .index_name = "nope",
                      .segment_ids = (const char *const *)ids,
                      .nsegments = 2};
  assert_int_equal(sf_compact_run(&r, &res, &err), SF_ENOTFOUND);
  free_ids(ids, n);
  fx_free(&f);
}

static void a_corrupt_block_in_an_input_refuses_the_merge_naming_the_file(void **state) {
  fx f;
  fx_init(&f, "compact-corrupt", 3);
  char *ids[16];
  uint64_t v0, v1;
  size_t n = segment_ids(&f, ids, &v0);
  /* The first code byte of the second input (its first chunk starts right
   * after the 64-byte header). */
  char path[4600], name[300];
  snprintf(name, sizeof name, "%s" SF_PLAN_SEGMENT_EXT, ids[1]);
  snprintf(path, sizeof path, "%s/%s/%s", f.ds, SF_PLAN_SEGMENTS_DIR, name);
  tu_flip_byte(path, 64, 0x01);
  sf_compact_result res;
  sf_err err = {0};
  assert_int_equal(compact(&f, ids, n, &res, &err), SF_ECORRUPT);
  assert_non_null(strstr(err.msg, name));
  assert_non_null(strstr(err.msg, "code block CRC32C mismatch"));
  /* Nothing committed: the index still lists its three inputs. */
  char *after[16];
  assert_int_equal(segment_ids(&f, after, &v1), n);
  assert_true(v1 == v0);
  free_ids(after, n);
  free_ids(ids, n);
  fx_free(&f);
}

/* ---- racing compactions -------------------------------------------------- */

/* Both merges finish their build before either commits: each waits in its
 * progress callback (on its last segment) until the other got there. */
typedef struct race {
  const fx *f;
  char *ids[2];
  atomic_int *built;
  sf_compact_result res;
  sf_code rc;
  sf_err err;
} race;

static void wait_for_both(void *ctx, const sf_build_progress *p) {
  atomic_int *built = ctx;
  if (p->segments_done != p->segments_total) return;
  atomic_fetch_add(built, 1);
  for (int i = 0; i < 2000 && atomic_load(built) < 2; i++) usleep(1000);
}

static void *race_main(void *arg) {
  race *r = arg;
  sf_compact_req q = {.dataset = r->f->ds,
                      .index_name = "idx",
                      .segment_ids = (const char *const *)r->ids,
                      .nsegments = 2,
                      .build = {.progress = wait_for_both, .progress_ctx = r->built}};
  r->rc = sf_compact_run(&q, &r->res, &r->err);
  return NULL;
}

static void racing_compactions_of_overlapping_inputs_have_one_winner(void **state) {
  fx f;
  fx_init(&f, "compact-race", 3);
  char *ids[16];
  uint64_t v0;
  size_t n = segment_ids(&f, ids, &v0);
  atomic_int built = 0;
  race a = {.f = &f, .ids = {ids[0], ids[1]}, .built = &built};
  race b = {.f = &f, .ids = {ids[1], ids[2]}, .built = &built};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, race_main, &a), 0);
  assert_int_equal(pthread_create(&tb, NULL, race_main, &b), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(atomic_load(&built), 2); /* both built before either committed */
  race *win = a.rc == SF_OK ? &a : &b, *lose = a.rc == SF_OK ? &b : &a;
  if (win->rc) fail_msg("neither won: %s / %s", a.err.msg, b.err.msg);
  assert_int_equal(lose->rc, SF_ECONFLICT);
  assert_non_null(strstr(lose->err.msg, ids[1])); /* names the input it lost */
  assert_int_equal(win->res.version, v0 + 1);

  /* The catalog holds the winner's merge and the other input, nothing of
   * the loser; the loser's merged file is there but nobody's. */
  char *now[16], loser_file[512];
  uint64_t v1;
  size_t m = segment_ids(&f, now, &v1);
  assert_int_equal(v1, v0 + 1);
  assert_int_equal(m, 2);
  char *loser_id;
  sf_err err = {0};
  assert_int_equal(
      sf_compact_segment_id((const char *const *)lose->ids, 2, &loser_id, &err), SF_OK);
  snprintf(loser_file, sizeof loser_file, "segments/%s.sfseg", loser_id);
  for (size_t i = 0; i < m; i++) assert_string_not_equal(now[i], loser_id);
  assert_true(file_exists(&f, loser_file));

  /* gc takes it (no intent protects it any more), and the inputs the
   * winner swapped out with their version. */
  sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = -1};
  sf_gc_stats st;
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, &st, &err), SF_OK);
  assert_false(file_exists(&f, loser_file));
  char winner_file[512];
  snprintf(winner_file, sizeof winner_file, "segments/%s.sfseg",
           win->res.merged.segment_id);
  assert_true(file_exists(&f, winner_file));
  assert_int_equal(st.removed[SF_GC_SEGMENT], 3); /* the loser's merge + 2 inputs */

  /* The loser run again is refused before it builds anything. */
  sf_compact_result again;
  assert_int_equal(compact(&f, lose->ids, 2, &again, &err), SF_ECONFLICT);
  assert_false(file_exists(&f, loser_file));

  free(loser_id);
  sf_compact_result_clear(&a.res);
  sf_compact_result_clear(&b.res);
  free_ids(now, m);
  free_ids(ids, n);
  fx_free(&f);
}

/* ---- inputs are protected while read --------------------------------------- */

typedef struct meddle {
  const fx *f;
  const char *victim_path; /* an input's file, relative to _indices/ */
  int done;
  sf_code commit_rc, gc_rc;
  int victim_there;
} meddle;

/* During the merge's first partition: a replace swaps an input out of the
 * catalog, and gc with one version and no grace runs. */
static void replace_and_gc(void *ctx, const sf_build_progress *p) {
  meddle *m = ctx;
  if (m->done++) return;
  sf_err err = {0};
  char path[4400];
  snprintf(path, sizeof path, "%s/_indices/segments/replacement.sfseg", m->f->ds);
  tu_write_file(path, "0123456789abcdef", 16);
  sf_catalog *c;
  assert_int_equal(sf_catalog_open_latest(m->f->ds, &c, &err), SF_OK);
  const sf_catalog_index *ix = sf_catalog_find_index(c, "idx");
  sf_seginfo s = {.segment_id = "replacement",
                  .path = "segments/replacement.sfseg",
                  .bytes = 16,
                  .num_rows = RPF,
                  .fragments = roaring_bitmap_of(1, 0),
                  .index_type = ix->index_type,
                  .metric = ix->metric,
                  .dim = ix->dim,
                  .nlist = ix->nlist,
                  .quantizer_checksum = ix->quantizer_checksum};
  sf_catalog_commit_req r = {.dataset = m->f->ds,
                             .index_name = "idx",
                             .column = "emb",
                             .staging_id = "replacer",
                             .segs = &s,
                             .nsegs = 1,
                             .replace = 1};
  sf_catalog_commit_result cres;
  m->commit_rc = sf_catalog_commit(&r, &cres, &err);
  roaring_bitmap_free(s.fragments);
  sf_catalog_free(c);
  sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = -1};
  m->gc_rc = sf_gc_run(m->f->ds, &o, NULL, NULL, NULL, &err);
  m->victim_there = file_exists(m->f, m->victim_path);
  (void)p;
}

static void a_replace_and_gc_during_a_merge_cannot_take_its_inputs(void **state) {
  fx f;
  fx_init(&f, "compact-meddle", 2);
  char *ids[16];
  uint64_t v0;
  size_t n = segment_ids(&f, ids, &v0);
  char victim[512];
  snprintf(victim, sizeof victim, "segments/%s.sfseg", ids[0]);
  meddle m = {.f = &f, .victim_path = victim};
  sf_compact_req q = {.dataset = f.ds,
                      .index_name = "idx",
                      .segment_ids = (const char *const *)ids,
                      .nsegments = 2,
                      .build = {.progress = replace_and_gc, .progress_ctx = &m}};
  sf_compact_result res;
  sf_err err = {0};
  /* The merge reads both inputs to the end (gc kept the swapped-out one
   * for its intent), then its commit sees the input gone and refuses. */
  assert_int_equal(sf_compact_run(&q, &res, &err), SF_ECONFLICT);
  assert_int_equal(m.commit_rc, SF_OK);
  assert_int_equal(m.gc_rc, SF_OK);
  assert_true(m.victim_there);
  uint64_t v1;
  char *now[16];
  size_t k = segment_ids(&f, now, &v1);
  assert_int_equal(v1, v0 + 1); /* the replace; no compaction */
  assert_int_equal(k, 2);
  /* With the intent ended, gc takes the swapped-out input and the merge. */
  sf_gc_opts o = {.keep_versions = 1, .grace_ms = 0, .temp_age_ms = -1};
  assert_int_equal(sf_gc_run(f.ds, &o, NULL, NULL, NULL, &err), SF_OK);
  assert_false(file_exists(&f, victim));
  char *mid;
  assert_int_equal(sf_compact_segment_id((const char *const *)ids, 2, &mid, &err), SF_OK);
  snprintf(victim, sizeof victim, "segments/%s.sfseg", mid);
  assert_false(file_exists(&f, victim));
  free(mid);
  free_ids(now, k);
  free_ids(ids, n);
  fx_free(&f);
}

/* ---- crashes ---------------------------------------------------------------- */

/* Runs the merge of ids[n] in a child process with SF_FAULT=fault; returns
 * the child's wait status. */
static int compact_in_child(const fx *f, char **ids, size_t n, const char *fault) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("SF_FAULT", fault, 1);
    sf_fault_reload();
    sf_compact_result res;
    sf_compact_req q = {.dataset = f->ds,
                        .index_name = "idx",
                        .segment_ids = (const char *const *)ids,
                        .nsegments = n};
    sf_code rc = sf_compact_run(&q, &res, NULL);
    _exit(rc ? 1 : 0); /* not reached when the fault point kills it */
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return st;
}

static size_t count_files(const fx *f, const char *needle) {
  return tu_count_entries(tu_path(f->ds, SF_CATALOG_SEGMENTS_DIR), needle, 0);
}

static void a_crash_mid_merge_leaves_the_catalog_readable_and_a_rerun_completes(
    void **state) {
  fx f;
  fx_init(&f, "compact-crash", JOBS);
  sf_rowid before[NQ * K], after[NQ * K];
  float sb[NQ * K], sa[NQ * K];
  search_all(&f, before, sb);
  char *ids[16];
  uint64_t v0;
  size_t n = segment_ids(&f, ids, &v0);

  /* Killed half-way through the partitions: a temporary file, no merge,
   * the catalog as it was. */
  int st = compact_in_child(&f, ids, n, "build.mid_segment");
  assert_true(WIFSIGNALED(st));
  assert_int_equal(count_files(&f, ".tmp."), 1);
  assert_int_equal(count_files(&f, "compact-"), 1); /* the temporary */
  uint64_t v;
  char *now[16];
  free_ids(now, segment_ids(&f, now, &v));
  assert_int_equal(v, v0);
  search_all(&f, after, sa);
  assert_memory_equal(after, before, sizeof before);

  /* Killed right after the merged file is renamed in place: the catalog
   * still as it was. */
  st = compact_in_child(&f, ids, n, "build.after_segment");
  assert_true(WIFSIGNALED(st));
  assert_int_equal(count_files(&f, ".tmp."), 0); /* the dead run's temporary went */
  free_ids(now, segment_ids(&f, now, &v));
  assert_int_equal(v, v0);

  /* The re-run reuses the finished file and commits. */
  sf_compact_result res;
  sf_err err = {0};
  sf_code rc = compact(&f, ids, n, &res, &err);
  if (rc) fail_msg("re-run: %s", err.msg);
  assert_int_equal(res.build.reused, 1);
  assert_int_equal(res.build.built, 0);
  assert_int_equal(res.version, v0 + 1);
  search_all(&f, after, sa);
  assert_memory_equal(after, before, sizeof before);
  assert_memory_equal(sa, sb, sizeof sb);
  sf_compact_result_clear(&res);

  free_ids(ids, n);
  n = segment_ids(&f, ids, &v0);
  assert_int_equal(n, 1);
  fx_free(&f);
  free_ids(ids, n);
}

/* A crash before the link of the compaction's version publishes nothing;
 * after it, everything, and the re-run finds it done. */

static void a_crash_around_the_compaction_commit_is_all_or_nothing(void **state) {
  fx f;
  fx_init(&f, "compact-commit-crash", 3);
  char *ids[16];
  uint64_t v0, v;
  size_t n = segment_ids(&f, ids, &v0);
  char *now[16];
  int st = compact_in_child(&f, ids, n, "catalog.before_link");
  assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  size_t m = segment_ids(&f, now, &v);
  assert_int_equal(v, v0);
  assert_int_equal(m, 3);
  free_ids(now, m);
  st = compact_in_child(&f, ids, n, "catalog.after_link");
  assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  m = segment_ids(&f, now, &v);
  assert_int_equal(v, v0 + 1);
  assert_int_equal(m, 1);
  free_ids(now, m);
  sf_compact_result res;
  sf_err err = {0};
  assert_int_equal(compact(&f, ids, n, &res, &err), SF_OK);
  assert_true(res.already);
  assert_int_equal(res.version, v0 + 1);
  sf_compact_result_clear(&res);
  free_ids(ids, n);
  fx_free(&f);
}

/* ---- jobs stay recognised --------------------------------------------------- */

static void a_job_committed_before_a_compaction_is_recognised_after_it(void **state) {
  fx f;
  fx_init(&f, "compact-redeliver", 3);
  char *ids[16];
  uint64_t v0;
  size_t n = segment_ids(&f, ids, &v0);
  sf_compact_result res;
  sf_err err = {0};
  assert_int_equal(compact(&f, ids, n, &res, &err), SF_OK);
  sf_compact_result_clear(&res);
  /* job-0 again, as a redelivery after a restart would run it: found,
   * nothing built, its own version returned. */
  sf_finalize_req req = {.dataset = f.ds,
                         .index_name = "idx",
                         .column = "emb",
                         .staging_id = "job-0",
                         .index_type = -1};
  sf_finalize_result fr;
  assert_int_equal(sf_finalize(&req, &fr, &err), SF_OK);
  assert_true(fr.already);
  assert_int_equal(fr.version, 1);
  assert_int_equal(fr.build.built, 0);
  sf_finalize_result_clear(&fr);
  uint64_t v;
  char *now[16];
  size_t m = segment_ids(&f, now, &v);
  assert_int_equal(v, v0 + 1);
  assert_int_equal(m, 1);
  free_ids(now, m);
  free_ids(ids, n);
  fx_free(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(a_merge_answers_every_query_exactly_as_its_inputs_did),
      cmocka_unit_test(a_merge_of_unknown_or_too_few_segments_is_refused),
      cmocka_unit_test(a_corrupt_block_in_an_input_refuses_the_merge_naming_the_file),
      cmocka_unit_test(racing_compactions_of_overlapping_inputs_have_one_winner),
      cmocka_unit_test(a_replace_and_gc_during_a_merge_cannot_take_its_inputs),
      cmocka_unit_test(
          a_crash_mid_merge_leaves_the_catalog_readable_and_a_rerun_completes),
      cmocka_unit_test(a_crash_around_the_compaction_commit_is_all_or_nothing),
      cmocka_unit_test(a_job_committed_before_a_compaction_is_recognised_after_it),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
