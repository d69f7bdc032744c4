/* test_build.c - the bounded build pipeline: segments hold exactly their
 * shards' rows, concurrency stays within max_merges, a failure cancels the
 * rest and leaves no partial segment, a crash (SIGKILL through SF_FAULT)
 * leaves nothing under a final name and a re-run finishes, reusing what was
 * finished. Also the progress-line arithmetic the CLI shows. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* cmocka.h needs these before it */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "core/base/fault.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/base/progress.h"
#include "core/format/segfile.h"
#include "core/pipeline/build.h"
#include "core/pipeline/plan.h"
#include "tests/testutil.h"

#define NLIST 16u
#define CODE 8u
#define QSUM 0x5eedULL

/* Rows are a pure function of their id, so any segment can be checked
 * against the shards it came from without keeping them around. */
static uint32_t part_of(sf_rowid id) {
  return (uint32_t)((id * 0x9E3779B97F4A7C15ULL) >> 40) % NLIST;
}
static void code_of(sf_rowid id, uint8_t *c) {
  for (unsigned i = 0; i < CODE; i++) c[i] = (uint8_t)((id >> (8 * (i % 5))) * 31 + i);
}
static uint32_t rows_of(uint32_t frag) {
  return 40 + frag % 13;
}

static sf_seg_params params(void) {
  sf_seg_params p = {.kind = SF_SEG_KIND_SHARD,
                     .type = SF_IVF_SQ,
                     .metric = SF_L2,
                     .dim = CODE,
                     .nlist = NLIST,
                     .code_size = CODE,
                     .quantizer_checksum = QSUM};
  return p;
}

/* Writes a shard of fragments [lo, hi] and fills its sf_plan_shard. */
static void make_shard(const char *dir, const char *id, uint32_t lo, uint32_t hi,
                       sf_plan_shard *s) {
  sf_err err = {0};
  char name[64];
  snprintf(name, sizeof name, "%s.sfshard", id);
  memset(s, 0, sizeof *s);
  s->shard_id = strdup(id);
  s->path = strdup(tu_path(dir, name));
  s->params = params();
  s->fragments = roaring_bitmap_from_range(lo, (uint64_t)hi + 1, 1);
  size_t total = 0;
  for (uint32_t f = lo; f <= hi; f++) total += rows_of(f);
  sf_rowid *ids = malloc(total * sizeof *ids);
  uint8_t *codes = malloc(total * CODE);
  sf_seg_writer *w;
  assert_int_equal(sf_seg_writer_open(s->path, &s->params, &w, &err), SF_OK);
  for (uint32_t p = 0; p < NLIST; p++) {
    uint32_t n = 0;
    for (uint32_t f = lo; f <= hi; f++)
      for (uint32_t o = 0; o < rows_of(f); o++)
        if (part_of(SF_ROWID(f, o)) == p) {
          ids[n] = SF_ROWID(f, o);
          code_of(ids[n], codes + (size_t)n * CODE);
          n++;
        }
    assert_int_equal(sf_seg_writer_add_chunk(w, p, ids, codes, n, &err), SF_OK);
  }
  assert_int_equal(sf_seg_writer_finish(w, s->fragments, &err), SF_OK);
  free(ids);
  free(codes);
  struct stat st;
  assert_int_equal(stat(s->path, &st), 0);
  s->bytes = (uint64_t)st.st_size;
  s->num_rows = total;
}

typedef struct {
  char dir[1024], dataset[1024];
  sf_plan_shard s[16];
  size_t n;
  sf_plan *plan;
} fixture;

/* n shards of 4 fragments each, planned with `per` shards per segment. */
static void setup(fixture *fx, size_t n, size_t per) {
  memset(fx, 0, sizeof *fx);
  snprintf(fx->dir, sizeof fx->dir, "%s", tu_tmpdir("build"));
  snprintf(fx->dataset, sizeof fx->dataset, "%s", tu_path(fx->dir, "ds"));
  for (size_t i = 0; i < n; i++) {
    char id[24];
    snprintf(id, sizeof id, "w%02zu", i);
    make_shard(fx->dir, id, (uint32_t)i * 4, (uint32_t)i * 4 + 3, &fx->s[i]);
  }
  fx->n = n;
  uint64_t max = 0;
  for (size_t i = 0; i < n; i++) max = fx->s[i].bytes > max ? fx->s[i].bytes : max;
  sf_plan_opts o = {.staging_id = "job",
                    .target_segment_bytes = per > 1 ? max * per : 0,
                    .index_type = -1};
  sf_err err = {0};
  assert_int_equal(sf_plan_make(fx->s, n, &o, &fx->plan, &err), SF_OK);
}

static void teardown(fixture *fx) {
  for (size_t i = 0; i < fx->n; i++) {
    free(fx->s[i].shard_id);
    free(fx->s[i].path);
    sf_fragset_free(fx->s[i].fragments);
  }
  sf_plan_free(fx->plan);
}

/* Names in the segments directory: final files and anything else. */
static void count_files(const fixture *fx, size_t *final, size_t *other) {
  *final = *other = 0;
  DIR *d = opendir(tu_path(fx->dataset, "_indices/segments"));
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    size_t l = strlen(e->d_name);
    if (l > 6 && !strcmp(e->d_name + l - 6, ".sfseg"))
      (*final)++;
    else
      (*other)++;
  }
  closedir(d);
}

/* The segments directory holds `final` finished segments and `other`
 * files besides (temporaries). */
static void expect_files(const fixture *fx, size_t final, size_t other) {
  size_t fin, oth;
  count_files(fx, &fin, &oth);
  assert_int_equal(fin, final);
  assert_int_equal(oth, other);
}

static int cmp_u64(const void *a, const void *b) {
  sf_rowid x = *(const sf_rowid *)a, y = *(const sf_rowid *)b;
  return x < y ? -1 : x > y;
}

/* Every partition of segment g holds exactly its shards' rows there, each
 * with its own code; the header and bitmap agree with the plan. */
static void check_segment(const fixture *fx, size_t g, const sf_seginfo *si) {
  const sf_plan_segment *seg = &fx->plan->segments[g];
  char *path = sf_build_segment_path(fx->dataset, seg->segment_id);
  sf_seg_reader *r;
  sf_err err = {0};
  assert_int_equal(sf_seg_open(path, &r, &err), SF_OK);
  assert_int_equal(sf_seg_verify(r, &err), SF_OK);
  assert_int_equal(sf_seg_get_params(r)->kind, SF_SEG_KIND_SEGMENT);
  assert_true(roaring_bitmap_equals(sf_seg_fragments(r), seg->fragments));
  assert_int_equal(sf_seg_num_rows(r), seg->num_rows);
  sf_seg_scratch *sc = sf_seg_scratch_new();
  size_t cap = (size_t)seg->num_rows + 1;
  sf_rowid *got = malloc(cap * sizeof *got), *want = malloc(cap * sizeof *want);
  for (uint32_t p = 0; p < NLIST; p++) {
    size_t ng = 0, nw = 0;
    for (uint32_t c = 0; c < sf_seg_partition_num_chunks(r, p); c++) {
      sf_seg_chunk ch;
      assert_int_equal(sf_seg_read_chunk(r, p, c, sc, &ch, &err), SF_OK);
      for (uint32_t i = 0; i < ch.nrows; i++) {
        uint8_t code[CODE];
        code_of(ch.ids[i], code);
        assert_memory_equal(ch.codes + (size_t)i * CODE, code, CODE);
        got[ng++] = ch.ids[i];
      }
    }
    roaring_uint32_iterator_t *it = roaring_create_iterator(seg->fragments);
    for (; it->has_value; roaring_advance_uint32_iterator(it))
      for (uint32_t o = 0; o < rows_of(it->current_value); o++)
        if (part_of(SF_ROWID(it->current_value, o)) == p)
          want[nw++] = SF_ROWID(it->current_value, o);
    roaring_free_uint32_iterator(it);
    qsort(got, ng, sizeof *got, cmp_u64);
    assert_int_equal(ng, nw);
    assert_memory_equal(got, want, ng * sizeof *got);
  }
  free(got);
  free(want);
  sf_seg_scratch_free(sc);
  if (si) {
    assert_string_equal(si->segment_id, seg->segment_id);
    assert_non_null(strstr(path, si->path));
    assert_int_equal(si->bytes, sf_seg_file_bytes(r));
    assert_int_equal(si->num_rows, seg->num_rows);
    assert_int_equal(si->num_shards, seg->count);
    assert_string_equal(si->shard_ids[0], fx->plan->shards[seg->first].shard_id);
    assert_true(roaring_bitmap_equals(si->fragments, seg->fragments));
    assert_int_equal(si->index_type, SF_IVF_SQ);
    assert_int_equal(si->nlist, NLIST);
    assert_int_equal(si->quantizer_checksum, QSUM);
  }
  sf_seg_close(r);
  free(path);
}

/* Checks every built segment against its plan, then frees the results. */
static void check_results(fixture *fx, sf_seginfo *out, size_t n) {
  for (size_t g = 0; g < n; g++) check_segment(fx, g, &out[g]);
  sf_build_results_free(out, n);
}

static void test_segments_hold_exactly_the_union_of_their_shards_rows(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 7, 3);
  assert_int_equal(fx.plan->num_segments, 3);
  sf_seginfo *out;
  size_t n;
  sf_build_stats st;
  sf_err err = {0};
  sf_build_opts o = {.max_merges = 2};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, &st, &err), SF_OK);
  assert_int_equal(n, 3);
  assert_int_equal(st.built, 3);
  assert_int_equal(st.reused, 0);
  assert_int_equal(st.threads, 2);
  for (size_t g = 0; g < n; g++) check_segment(&fx, g, &out[g]);
  size_t fin, other;
  count_files(&fx, &fin, &other);
  assert_int_equal(fin, 3);
  assert_int_equal(other, 0);
  sf_build_results_free(out, n);
  teardown(&fx);
}

typedef struct {
  unsigned max_running;
  uint64_t last_done, total;
  size_t calls, last_segments;
  int monotonic;
} watch;

static void on_progress(void *ctx, const sf_build_progress *p) {
  watch *w = ctx;
  if (p->running > w->max_running) w->max_running = p->running;
  if (p->bytes_done < w->last_done) w->monotonic = 0;
  w->last_done = p->bytes_done;
  w->total = p->bytes_total;
  w->last_segments = p->segments_done;
  w->calls++;
  /* Slow each partition down so that builds overlap for certain. */
  nanosleep(&(struct timespec){0, 1000000}, NULL);
}

static void test_no_more_than_max_merges_builds_run_at_once(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 9, 1);
  assert_int_equal(fx.plan->num_segments, 9);
  watch w = {.monotonic = 1};
  sf_build_opts o = {.max_merges = 3, .progress = on_progress, .progress_ctx = &w};
  sf_seginfo *out;
  size_t n;
  sf_build_stats st;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, &st, &err), SF_OK);
  assert_int_equal(st.threads, 3);
  assert_true(st.peak_running <= 3);
  assert_true(w.max_running <= 3);
  assert_int_equal(w.max_running, 3); /* and the bound is actually used */
  assert_true(w.monotonic);
  assert_int_equal(w.last_done, fx.plan->total_bytes); /* progress ends at 100% */
  assert_int_equal(w.last_segments, 9);
  sf_build_results_free(out, n);
  teardown(&fx);
}

typedef struct {
  fixture *fx;
  sf_build_opts o;
  sf_code rc;
  sf_build_stats st;
} parallel_run;

static void *run_build(void *arg) {
  parallel_run *pr = arg;
  sf_seginfo *out = NULL;
  size_t n = 0;
  sf_err err = {0};
  pr->rc = sf_build_run(pr->fx->plan, pr->fx->dataset, &pr->o, &out, &n, &pr->st, &err);
  sf_build_results_free(out, n);
  return NULL;
}

static void test_builds_sharing_a_budget_never_exceed_its_slots_together(void **state) {
  (void)state;
  fixture a, b;
  setup(&a, 6, 1);
  setup(&b, 6, 1);
  sf_build_budget *budget = NULL;
  sf_err err = {0};
  assert_int_equal(sf_build_budget_new(2, &budget, &err), SF_OK);
  watch wa = {.monotonic = 1}, wb = {.monotonic = 1};
  /* Each call may start 2 threads; together they could run 4 builds. */
  parallel_run ra = {.fx = &a,
                     .o = {.max_merges = 2,
                           .budget = budget,
                           .progress = on_progress,
                           .progress_ctx = &wa}};
  parallel_run rb = {.fx = &b,
                     .o = {.max_merges = 2,
                           .budget = budget,
                           .progress = on_progress,
                           .progress_ctx = &wb}};
  pthread_t ta, tb;
  assert_int_equal(pthread_create(&ta, NULL, run_build, &ra), 0);
  assert_int_equal(pthread_create(&tb, NULL, run_build, &rb), 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  assert_int_equal(ra.rc, SF_OK);
  assert_int_equal(rb.rc, SF_OK);
  assert_int_equal(ra.st.built + rb.st.built, 12);
  sf_build_budget_stats bs;
  sf_build_budget_get_stats(budget, &bs);
  assert_int_equal(bs.slots, 2);
  assert_int_equal(bs.peak, 2); /* reached, never passed */
  assert_int_equal(bs.running, 0);
  assert_int_equal(bs.waiting, 0);
  assert_int_equal(bs.acquired, 12);
  assert_true(ra.st.peak_running + rb.st.peak_running >= 2);
  sf_build_budget_free(budget);
  teardown(&a);
  teardown(&b);
}

static void test_a_build_waiting_for_a_slot_gives_up_when_canceled(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 2, 1);
  sf_build_budget *budget = NULL;
  sf_err err = {0};
  assert_int_equal(sf_build_budget_new(1, &budget, &err), SF_OK);
  /* Someone else (another job, a compaction) holds the only slot. */
  assert_int_equal(sf_build_budget_acquire(budget, NULL, NULL), SF_OK);
  atomic_int cancel = 0;
  parallel_run r = {.fx = &fx,
                    .o = {.max_merges = 2, .budget = budget, .cancel = &cancel}};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, run_build, &r), 0);
  sf_build_budget_stats bs = {0};
  for (int i = 0; i < 500 && bs.waiting < 2; i++) {
    nanosleep(&(struct timespec){0, 2000000}, NULL);
    sf_build_budget_get_stats(budget, &bs);
  }
  assert_int_equal(bs.waiting, 2); /* both threads of the call wait, holding nothing */
  atomic_store(&cancel, 1);
  pthread_join(t, NULL); /* would hang without the cancel: the slot is never given */
  assert_int_equal(r.rc, SF_ECANCELED);
  assert_int_equal(r.st.built, 0);
  sf_build_budget_get_stats(budget, &bs);
  assert_int_equal(bs.waiting, 0);
  assert_int_equal(bs.running, 1);
  expect_files(&fx, 0, 0);
  sf_build_budget_release(budget);
  sf_build_budget_get_stats(budget, &bs);
  assert_int_equal(bs.running, 0);
  sf_build_budget_free(budget);
  teardown(&fx);
}

typedef struct {
  sf_build_budget *b;
  int id;
  int *order;
  atomic_int *next;
} taker;

static void *take_slot(void *arg) {
  taker *t = arg;
  assert_int_equal(sf_build_budget_acquire(t->b, NULL, NULL), SF_OK);
  t->order[atomic_fetch_add(t->next, 1)] = t->id;
  sf_build_budget_release(t->b);
  return NULL;
}

static void wait_for_waiters(sf_build_budget *b, size_t n) {
  sf_build_budget_stats bs = {0};
  for (int i = 0; i < 1000 && bs.waiting < n; i++) {
    nanosleep(&(struct timespec){0, 2000000}, NULL);
    sf_build_budget_get_stats(b, &bs);
  }
  assert_int_equal(bs.waiting, n);
}

static void test_a_budget_hands_slots_out_first_come_first_served(void **state) {
  (void)state;
  sf_build_budget *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_build_budget_new(0, &b, &err), SF_EINVAL);
  assert_null(b);
  sf_build_budget_free(NULL);
  assert_int_equal(sf_build_budget_new(1, &b, &err), SF_OK);
  assert_int_equal(sf_build_budget_acquire(b, NULL, NULL), SF_OK);
  /* Three threads queue up in a known order behind the held slot. */
  int order[3] = {0};
  atomic_int next = 0;
  taker t[3];
  pthread_t tid[3];
  for (int i = 0; i < 3; i++) {
    t[i] = (taker){.b = b, .id = i + 1, .order = order, .next = &next};
    assert_int_equal(pthread_create(&tid[i], NULL, take_slot, &t[i]), 0);
    wait_for_waiters(b, (size_t)i + 1);
  }
  sf_build_budget_release(b);
  for (int i = 0; i < 3; i++) pthread_join(tid[i], NULL);
  assert_int_equal(order[0], 1);
  assert_int_equal(order[1], 2);
  assert_int_equal(order[2], 3);
  sf_build_budget_stats bs;
  sf_build_budget_get_stats(b, &bs);
  assert_int_equal(bs.running, 0);
  assert_int_equal(bs.peak, 1);
  assert_int_equal(bs.acquired, 4);
  sf_build_budget_free(b);
}

typedef struct {
  sf_build_budget *b;
  atomic_int *step; /* 1 once it holds the slot again after yielding */
  int yielded;
} background;

static void *background_take(void *arg) {
  taker *t = arg;
  assert_int_equal(sf_build_budget_acquire_background(t->b, NULL, NULL), SF_OK);
  t->order[atomic_fetch_add(t->next, 1)] = t->id;
  sf_build_budget_release(t->b);
  return NULL;
}

static void *background_yield(void *arg) {
  background *g = arg;
  assert_int_equal(sf_build_budget_yield(g->b, NULL, NULL, &g->yielded), SF_OK);
  atomic_store(g->step, 1);
  sf_build_budget_release(g->b);
  return NULL;
}

static void test_background_builds_wait_behind_job_builds_and_yield_to_them(
    void **state) {
  (void)state;
  sf_build_budget *b = NULL;
  sf_err err = {0};
  assert_int_equal(sf_build_budget_new(1, &b, &err), SF_OK);
  /* Queueing: a background waiter that came first is served after a
   * foreground one that came later. */
  assert_int_equal(sf_build_budget_acquire(b, NULL, NULL), SF_OK);
  int order[2] = {0};
  atomic_int next = 0;
  taker bg = {.b = b, .id = 1, .order = order, .next = &next};
  taker fg = {.b = b, .id = 2, .order = order, .next = &next};
  pthread_t tb, tf;
  assert_int_equal(pthread_create(&tb, NULL, background_take, &bg), 0);
  wait_for_waiters(b, 1);
  assert_int_equal(pthread_create(&tf, NULL, take_slot, &fg), 0);
  wait_for_waiters(b, 2);
  sf_build_budget_release(b);
  pthread_join(tb, NULL);
  pthread_join(tf, NULL);
  assert_int_equal(order[0], 2);
  assert_int_equal(order[1], 1);
  /* Yielding: with nobody waiting, a yield keeps the slot ... */
  int yielded = -1;
  assert_int_equal(sf_build_budget_acquire_background(b, NULL, NULL), SF_OK);
  assert_int_equal(sf_build_budget_yield(b, NULL, NULL, &yielded), SF_OK);
  assert_int_equal(yielded, 0);
  /* ... and with a job build waiting, hands the slot to it and gets it back
   * once the job build is done. */
  int order2[1] = {0};
  atomic_int next2 = 0, step = 0;
  taker job = {.b = b, .id = 7, .order = order2, .next = &next2};
  assert_int_equal(pthread_create(&tf, NULL, take_slot, &job), 0);
  wait_for_waiters(b, 1);
  background g = {.b = b, .step = &step};
  pthread_t ty;
  assert_int_equal(pthread_create(&ty, NULL, background_yield, &g), 0);
  pthread_join(tf, NULL);
  pthread_join(ty, NULL);
  assert_int_equal(order2[0], 7);
  assert_int_equal(g.yielded, 1);
  assert_int_equal(atomic_load(&step), 1);
  sf_build_budget_stats bs;
  sf_build_budget_get_stats(b, &bs);
  assert_int_equal(bs.running, 0);
  assert_int_equal(bs.peak, 1);
  assert_int_equal(bs.yields, 1);
  sf_build_budget_free(b);
}

static void
test_a_corrupt_shard_fails_the_build_cancels_the_rest_and_leaves_no_partial_segment(
    void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 6, 1);
  /* The first shard in plan order: its build fails at once, while the other
   * (slowed) build is mid-way and the four others have not started. */
  const sf_plan_shard *bad = &fx.plan->shards[0];
  tu_flip_byte(bad->path, 64 + 3, 0x40); /* inside partition 0's first code block */
  watch w = {.monotonic = 1};
  sf_build_opts o = {.max_merges = 2, .progress = on_progress, .progress_ctx = &w};
  sf_seginfo *out = (sf_seginfo *)0x1;
  size_t n = 99;
  sf_build_stats st;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, &st, &err),
                   SF_ECORRUPT);
  assert_null(out);
  assert_int_equal(n, 0);
  assert_non_null(strstr(err.msg, bad->shard_id));
  assert_non_null(strstr(err.msg, fx.plan->segments[0].segment_id));
  /* Canceled: the four builds after the running pair never ran (unless the
   * failing thread was starved for the length of several builds). */
  assert_true(st.built < fx.plan->num_segments - 1);
  size_t fin, other;
  count_files(&fx, &fin, &other);
  assert_int_equal(other, 0); /* no temporary left behind */
  assert_true(fin < fx.plan->num_segments - 1);
  assert_true(fin == st.built);
  char *p0 = sf_build_segment_path(fx.dataset, fx.plan->segments[0].segment_id);
  assert_int_equal(access(p0, F_OK), -1);
  free(p0);
  for (size_t g = 1; fin && g < fx.plan->num_segments; g++) {
    char *pg = sf_build_segment_path(fx.dataset, fx.plan->segments[g].segment_id);
    if (!access(pg, F_OK)) check_segment(&fx, g, NULL); /* whole, never partial */
    free(pg);
  }
  teardown(&fx);
}

static void test_a_shard_with_a_bad_header_is_named(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 3, 1);
  tu_flip_byte(fx.plan->shards[2].path, 20, 0x01); /* dim, under the header CRC */
  sf_build_opts o = {.max_merges = 1};
  sf_seginfo *out;
  size_t n;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, NULL, &err),
                   SF_ECORRUPT);
  assert_non_null(strstr(err.msg, fx.plan->shards[2].shard_id));
  size_t fin, other;
  count_files(&fx, &fin, &other);
  assert_int_equal(other, 0);
  teardown(&fx);
}

static void test_a_shard_replaced_after_planning_is_refused(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 2, 1);
  sf_plan_shard again;
  /* Same name, other fragments: the plan no longer describes the file. */
  make_shard(fx.dir, "w01", 100, 101, &again);
  sf_build_opts o = {.max_merges = 1};
  sf_seginfo *out;
  size_t n;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, NULL, &err),
                   SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "'w01'"));
  assert_non_null(strstr(err.msg, "fragments"));
  free(again.shard_id);
  free(again.path);
  sf_fragset_free(again.fragments);
  teardown(&fx);
}

static void test_remapping_shards_during_a_build_changes_nothing_in_the_segments(
    void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 5, 2);
  /* One byte: every partition remaps every shard of its build. */
  sf_build_opts o = {.max_merges = 2, .remap_bytes = 1};
  sf_seginfo *out;
  size_t n;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, NULL, &err), SF_OK);
  check_results(&fx, out, n);
  teardown(&fx);
}

typedef struct {
  fixture *fx;
  int done;
} swapper;

/* On the first progress call, renames another shard's file over shard 0's
 * (same parameters, other layout), as a misbehaving worker would. */
static void swap_shard(void *ctx, const sf_build_progress *p) {
  swapper *s = ctx;
  (void)p;
  if (s->done++) return;
  assert_int_equal(rename(s->fx->plan->shards[1].path, s->fx->plan->shards[0].path), 0);
}

static void test_a_shard_replaced_while_being_copied_is_refused(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 2, 2);
  assert_int_equal(fx.plan->num_segments, 1);
  swapper sw = {&fx, 0};
  sf_build_opts o = {
      .max_merges = 1, .remap_bytes = 1, .progress = swap_shard, .progress_ctx = &sw};
  sf_seginfo *out;
  size_t n;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, NULL, &err),
                   SF_EMISMATCH);
  assert_non_null(strstr(err.msg, "'w00'"));
  expect_files(&fx, 0, 0);
  teardown(&fx);
}

static void test_a_rerun_reuses_finished_segments_and_replaces_impostors(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 4, 2);
  sf_build_opts o = {.max_merges = 2};
  sf_seginfo *out;
  size_t n;
  sf_build_stats st;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, &st, &err), SF_OK);
  sf_build_results_free(out, n);
  char *p0 = sf_build_segment_path(fx.dataset, fx.plan->segments[0].segment_id);
  char *p1 = sf_build_segment_path(fx.dataset, fx.plan->segments[1].segment_id);
  struct stat a, b;
  assert_int_equal(stat(p0, &a), 0);
  /* An impostor under segment 1's name: another segment's file. */
  size_t len;
  uint8_t *bytes = tu_read_file(p0, &len);
  tu_write_file(p1, bytes, len);
  free(bytes);
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, &st, &err), SF_OK);
  assert_int_equal(st.reused, 1);
  assert_int_equal(st.built, 1);
  assert_int_equal(stat(p0, &b), 0);
  assert_int_equal(a.st_ino, b.st_ino); /* not rewritten */
  check_results(&fx, out, n);
  free(p0);
  free(p1);
  teardown(&fx);
}

static void test_an_external_cancel_stops_the_build(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 2, 1);
  atomic_int cancel = 1;
  sf_build_opts o = {.max_merges = 2, .cancel = &cancel};
  sf_seginfo *out;
  size_t n;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, NULL, &err),
                   SF_ECANCELED);
  expect_files(&fx, 0, 0);
  teardown(&fx);
}

/* Runs the build in a child with SF_FAULT set; returns its wait status. */
static int build_in_child(fixture *fx, const char *fault, unsigned merges) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setenv("SF_FAULT", fault, 1);
    sf_fault_reload();
    sf_build_opts o = {.max_merges = merges};
    sf_seginfo *out;
    size_t n;
    sf_err err = {0};
    sf_code rc = sf_build_run(fx->plan, fx->dataset, &o, &out, &n, NULL, &err);
    _exit(rc == SF_OK ? 0 : 1);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return status;
}

static void test_a_kill_mid_segment_leaves_no_partial_segment_and_a_rerun_finishes(
    void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 4, 1);
  int status = build_in_child(&fx, "build.mid_segment", 1);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  size_t fin, other;
  count_files(&fx, &fin, &other);
  assert_int_equal(fin, 0);   /* no final name... */
  assert_int_equal(other, 1); /* ...only the dead writer's temporary */
  sf_build_opts o = {.max_merges = 2};
  sf_seginfo *out;
  size_t n;
  sf_build_stats st;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, &st, &err), SF_OK);
  assert_int_equal(st.built, 4);
  assert_int_equal(st.temporaries_removed, other);
  count_files(&fx, &fin, &other);
  assert_int_equal(fin, 4);
  assert_int_equal(other, 0); /* the dead run's temporary was swept */
  check_results(&fx, out, n);
  teardown(&fx);
}

static void test_a_kill_after_a_segment_keeps_it_and_the_rerun_reuses_it(void **state) {
  (void)state;
  fixture fx;
  setup(&fx, 3, 1);
  int status = build_in_child(&fx, "build.after_segment", 1);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  size_t fin, other;
  count_files(&fx, &fin, &other);
  assert_int_equal(fin, 1);
  check_segment(&fx, 0, NULL);
  sf_build_opts o = {.max_merges = 1};
  sf_seginfo *out;
  size_t n;
  sf_build_stats st;
  sf_err err = {0};
  assert_int_equal(sf_build_run(fx.plan, fx.dataset, &o, &out, &n, &st, &err), SF_OK);
  assert_int_equal(st.reused, 1);
  assert_int_equal(st.built, 2);
  sf_build_results_free(out, n);
  teardown(&fx);
}

static void test_the_progress_line_shows_bytes_rate_and_eta_at_most_every_interval(
    void **state) {
  (void)state;
  sf_progress p;
  char line[256];
  sf_progress_init(&p, 100.0, 0.25);
  assert_true(sf_progress_line(&p, 100.0, 0, 4 << 20, NULL, 0, line, sizeof line));
  assert_false(sf_progress_line(&p, 100.1, 1 << 20, 4 << 20, NULL, 0, line, sizeof line));
  assert_true(sf_progress_line(&p, 101.0, 1 << 20, 4 << 20, "x", 0, line, sizeof line));
  assert_string_equal(line, "1.0 MiB / 4.0 MiB  25%  1.0 MiB/s  ETA 0:03  x");
  assert_true(sf_progress_line(&p, 101.01, 4 << 20, 4 << 20, NULL, 1, line, sizeof line));
  assert_non_null(strstr(line, "100%"));
  sf_progress_bytes(512, line, sizeof line);
  assert_string_equal(line, "512 B");
  sf_progress_bytes(3ULL << 40, line, sizeof line);
  assert_string_equal(line, "3.0 TiB");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_segments_hold_exactly_the_union_of_their_shards_rows),
      cmocka_unit_test(test_no_more_than_max_merges_builds_run_at_once),
      cmocka_unit_test(test_builds_sharing_a_budget_never_exceed_its_slots_together),
      cmocka_unit_test(test_a_build_waiting_for_a_slot_gives_up_when_canceled),
      cmocka_unit_test(test_a_budget_hands_slots_out_first_come_first_served),
      cmocka_unit_test(test_background_builds_wait_behind_job_builds_and_yield_to_them),
      cmocka_unit_test(
          test_a_corrupt_shard_fails_the_build_cancels_the_rest_and_leaves_no_partial_segment),
      cmocka_unit_test(test_a_shard_with_a_bad_header_is_named),
      cmocka_unit_test(test_a_shard_replaced_after_planning_is_refused),
      cmocka_unit_test(
          test_remapping_shards_during_a_build_changes_nothing_in_the_segments),
      cmocka_unit_test(test_a_shard_replaced_while_being_copied_is_refused),
      cmocka_unit_test(test_a_rerun_reuses_finished_segments_and_replaces_impostors),
      cmocka_unit_test(test_an_external_cancel_stops_the_build),
      cmocka_unit_test(
          test_a_kill_mid_segment_leaves_no_partial_segment_and_a_rerun_finishes),
      cmocka_unit_test(test_a_kill_after_a_segment_keeps_it_and_the_rerun_reuses_it),
      cmocka_unit_test(
          test_the_progress_line_shows_bytes_rate_and_eta_at_most_every_interval),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
