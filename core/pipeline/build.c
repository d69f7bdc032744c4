/*
 * build.c - see build.h.
 *
 * Shape: a fixed set of worker threads pull segment indexes from one atomic
 * counter (no queue to size, no producer thread). Everything shared between
 * them is in `run`: the counter, the cancel flag, the first error and the
 * progress totals; the last two are behind one mutex, which also serialises
 * the progress callback so that callers need no locking of their own.
 *
 * Each build owns its writer and its shard readers; a shard belongs to
 * exactly one segment of a plan, so no reader is shared between threads.
 */
#include "core/pipeline/build.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/base/fault.h"
#include "core/base/fsutil.h"

/* The pause of build.slow_partition after each partition. */
#define SLOW_PARTITION_NS 50000000L

/* Bytes a build copies before it remaps its shards (see remap_shards). */
#define REMAP_BYTES_DEFAULT (8u << 20)

typedef struct run {
  const sf_plan *plan;
  const char *dataset;
  const sf_build_opts *opts;
  sf_seginfo *out;
  uint64_t remap_bytes;

  atomic_size_t next;   /* next segment index to take */
  atomic_int failed;    /* set by the first failure: the others stop */
  atomic_uint running;  /* builds in progress */
  atomic_int committed; /* segments renamed in place (for the fault point) */

  pthread_mutex_t lock; /* guards everything below */
  sf_err err;           /* the first real error */
  sf_build_progress prog;
  sf_build_stats stats;
} run;

static int canceled(run *r) {
  return atomic_load(&r->failed) || (r->opts->cancel && atomic_load(r->opts->cancel));
}

/* The budget's stop condition while a build waits for a slot. */
static int stop_waiting(void *arg) {
  return canceled(arg);
}

/* Records the first real error; a build that merely noticed the cancel flag
 * reports SF_ECANCELED, which never hides the error that caused it. */
static void fail(run *r, const sf_err *e) {
  pthread_mutex_lock(&r->lock);
  if (r->err.code == SF_OK || (r->err.code == SF_ECANCELED && e->code != SF_ECANCELED))
    r->err = *e;
  pthread_mutex_unlock(&r->lock);
  atomic_store(&r->failed, 1);
}

static void report(run *r, uint64_t bytes, int seg_done, int reused) {
  pthread_mutex_lock(&r->lock);
  r->prog.bytes_done += bytes;
  if (seg_done) r->prog.segments_done++;
  if (reused) r->prog.segments_reused++;
  r->prog.running = atomic_load(&r->running);
  if (r->opts->progress) r->opts->progress(r->opts->progress_ctx, &r->prog);
  pthread_mutex_unlock(&r->lock);
}

char *sf_build_segment_path(const char *dataset, const char *segment_id) {
  size_t n = strlen(dataset) + strlen(SF_PLAN_SEGMENTS_DIR) + strlen(segment_id) +
             strlen(SF_PLAN_SEGMENT_EXT) + 3;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s/%s%s", dataset, SF_PLAN_SEGMENTS_DIR, segment_id,
             SF_PLAN_SEGMENT_EXT);
  return p;
}

/* ---- one segment --------------------------------------------------------- */

typedef struct job {
  run *r;
  int *slot_lost; /* set when a yield gave up the budget slot for good */
  const sf_plan_segment *seg;
  char *path;
  sf_seg_reader **src;  /* seg->count readers */
  sf_seg_params params; /* the segment's: the first shard's, kind SEGMENT */
} job;

/* The fields that make two files of one index interchangeable. */
static const char *params_differ(const sf_seg_params *a, const sf_seg_params *b) {
  if (a->type != b->type) return "index type";
  if (a->metric != b->metric) return "metric";
  if (a->dim != b->dim) return "dim";
  if (a->nlist != b->nlist) return "nlist";
  if (a->quantizer_checksum != b->quantizer_checksum) return "quantizer checksum";
  if (a->code_size && b->code_size && a->code_size != b->code_size) return "code size";
  if (a->pq_m && b->pq_m && a->pq_m != b->pq_m) return "pq_m";
  return NULL;
}

/* What the plan's inputs are called in messages: shards of a job, or the
 * committed segments a compaction merges. */
static const char *noun(const sf_plan *p) {
  return p->input_kind == SF_SEG_KIND_SEGMENT ? "segment" : "shard";
}

/* Opens the segment's shards and checks that each file is still the shard
 * the plan was made from: a file replaced between plan and build must not
 * slip into a segment under the planned name. (A compaction's inputs are
 * segments, of kind SF_SEG_KIND_SEGMENT: the plan says which kind.) */
static sf_code open_shards(job *j, sf_err *err) {
  const sf_plan *p = j->r->plan;
  sf_seg_kind want = p->input_kind ? p->input_kind : SF_SEG_KIND_SHARD;
  for (size_t k = 0; k < j->seg->count; k++) {
    const sf_plan_shard *s = &p->shards[j->seg->first + k];
    sf_code rc = sf_seg_open(s->path, &j->src[k], err);
    if (rc) {
      sf_err_prefix(err, "%s '%s'", noun(p), s->shard_id);
      return rc;
    }
    const sf_seg_params *fp = sf_seg_get_params(j->src[k]);
    const char *field = params_differ(fp, &p->params);
    if (fp->kind != want) field = "kind";
    if (field)
      return sf_err_set(err, SF_EMISMATCH,
                        "%s '%s' (%s): its %s differs from the plan's; "
                        "the file changed after planning, plan again",
                        noun(p), s->shard_id, s->path, field);
    if (!roaring_bitmap_equals(sf_seg_fragments(j->src[k]), s->fragments))
      return sf_err_set(err, SF_EMISMATCH,
                        "%s '%s' (%s): its fragments differ from the "
                        "plan's; the file changed after planning, plan again",
                        noun(p), s->shard_id, s->path);
  }
  j->params = *sf_seg_get_params(j->src[0]);
  j->params.kind = SF_SEG_KIND_SEGMENT;
  return SF_OK;
}

/* Remaps the segment's shards to release the pages a build has read.
 *
 * Why: the CRC check reads every block through the reader's mapping, and
 * the pages of a file mapping count towards the process's resident set for
 * as long as the mapping lives, although they are only page cache. Without
 * this, a build's RSS would grow to the size of its shards. Remapping after
 * every remap_bytes (8 MiB by default) keeps it at about that much per
 * build, for the price of re-reading each shard's directory (a few KiB per
 * MiB of data). (Dropping the pages with madvise right after the copy, in
 * the segfile writer, would do the same without the re-reads.)
 * The new mapping must show the same file: shards are immutable, and a file
 * replaced under us would otherwise mix two shards' layouts in a segment. */
static sf_code remap_shards(job *j, sf_err *err) {
  const sf_plan *p = j->r->plan;
  for (size_t k = 0; k < j->seg->count; k++) {
    const sf_plan_shard *s = &p->shards[j->seg->first + k];
    sf_seg_reader *old = j->src[k], *fresh;
    sf_code rc = sf_seg_open(s->path, &fresh, err);
    if (rc) {
      sf_err_prefix(err, "%s '%s'", noun(p), s->shard_id);
      return rc;
    }
    int same = sf_seg_file_bytes(fresh) == sf_seg_file_bytes(old) &&
               sf_seg_num_rows(fresh) == sf_seg_num_rows(old) &&
               !params_differ(sf_seg_get_params(fresh), sf_seg_get_params(old)) &&
               roaring_bitmap_equals(sf_seg_fragments(fresh), s->fragments);
    for (uint32_t q = 0; same && q < j->params.nlist; q++)
      same = sf_seg_partition_bytes(fresh, q) == sf_seg_partition_bytes(old, q);
    sf_seg_close(old);
    j->src[k] = fresh;
    if (!same)
      return sf_err_set(err, SF_EMISMATCH,
                        "%s '%s' (%s) was replaced while being copied; "
                        "its file must not change once written",
                        noun(p), s->shard_id, s->path);
  }
  return SF_OK;
}

/* Whether the file under the final name is this segment, finished by an
 * earlier run. Its header, directory and bitmap were verified by
 * sf_seg_open; the per-partition row counts tie it to these very shards. */
static int reusable(const job *j, const sf_seg_reader *have) {
  const sf_seg_params *hp = sf_seg_get_params(have);
  if (hp->kind != SF_SEG_KIND_SEGMENT || params_differ(hp, &j->params) ||
      hp->code_size != j->params.code_size ||
      !roaring_bitmap_equals(sf_seg_fragments(have), j->seg->fragments))
    return 0;
  uint64_t rows = 0;
  for (size_t k = 0; k < j->seg->count; k++) rows += sf_seg_num_rows(j->src[k]);
  if (sf_seg_num_rows(have) != rows) return 0;
  for (uint32_t p = 0; p < j->params.nlist; p++) {
    uint64_t want = 0;
    for (size_t k = 0; k < j->seg->count; k++)
      want += sf_seg_partition_rows(j->src[k], p);
    if (sf_seg_partition_rows(have, p) != want) return 0;
  }
  return 1;
}

static sf_code describe(const job *j, uint64_t bytes, uint64_t rows, sf_seginfo *si,
                        sf_err *err) {
  const sf_plan *p = j->r->plan;
  memset(si, 0, sizeof *si);
  size_t n =
      strlen("segments/") + strlen(j->seg->segment_id) + strlen(SF_PLAN_SEGMENT_EXT) + 1;
  si->segment_id = strdup(j->seg->segment_id);
  si->path = malloc(n);
  si->fragments = roaring_bitmap_copy(j->seg->fragments);
  si->shard_ids = calloc(j->seg->count, sizeof *si->shard_ids);
  if (!si->segment_id || !si->path || !si->fragments || !si->shard_ids) goto oom;
  snprintf(si->path, n, "segments/%s%s", j->seg->segment_id, SF_PLAN_SEGMENT_EXT);
  for (size_t k = 0; k < j->seg->count; k++) {
    si->num_shards = (uint32_t)k + 1;
    if (!(si->shard_ids[k] = strdup(p->shards[j->seg->first + k].shard_id))) goto oom;
  }
  si->bytes = bytes;
  si->num_rows = rows;
  si->index_type = j->params.type;
  si->metric = j->params.metric;
  si->dim = j->params.dim;
  si->nlist = j->params.nlist;
  si->quantizer_checksum = j->params.quantizer_checksum;
  return SF_OK;
oom:
  sf_seginfo_clear(si);
  return sf_err_set(err, SF_ENOMEM, "out of memory describing segment %s",
                    j->seg->segment_id);
}

/* Streams every partition of every shard into a new segment file. A job's
 * shards are block-copied (copy_partition); a compaction's segments are
 * joined (join_partition): their small chunks, one per incremental job,
 * become few, and large ones are block-copied as before (docs/format.md,
 * "Joining small chunks", has the measurements behind the choice). */
static sf_code write_segment(job *j, uint64_t *rows, sf_err *err) {
  run *r = j->r;
  sf_seg_writer *w;
  sf_code rc = sf_seg_writer_open(j->path, &j->params, &w, err);
  if (rc) return rc;
  const int join = r->plan->input_kind == SF_SEG_KIND_SEGMENT;
  uint64_t counted = 0, since_remap = 0;
  for (uint32_t p = 0; p < j->params.nlist; p++) {
    if (canceled(r)) {
      sf_seg_writer_abort(w);
      return sf_err_set(err, SF_ECANCELED, "segment %s: canceled", j->seg->segment_id);
    }
    if (p == j->params.nlist / 2 && (rc = sf_fault_point("build.mid_segment", err))) {
      sf_seg_writer_abort(w);
      return rc;
    }
    uint64_t bytes = 0;
    if (join) {
      /* The inputs are in order of their lowest fragment (the plan's), so
       * the row ids of consecutive incremental jobs ascend across them and
       * their small chunks join into few. The error names the file. */
      rc = sf_seg_writer_join_partition(w, (const sf_seg_reader *const *)j->src,
                                        j->seg->count, p, NULL, err);
      if (rc) {
        sf_seg_writer_abort(w);
        sf_err_prefix(err, "segment %s, partition %" PRIu32, j->seg->segment_id, p);
        return rc;
      }
    }
    for (size_t k = 0; k < j->seg->count; k++) {
      rc = join ? SF_OK : sf_seg_writer_copy_partition(w, j->src[k], p, err);
      if (rc) {
        sf_seg_writer_abort(w);
        sf_err_prefix(err, "segment %s, %s '%s', partition %" PRIu32, j->seg->segment_id,
                      noun(r->plan), r->plan->shards[j->seg->first + k].shard_id, p);
        return rc;
      }
      bytes += sf_seg_partition_bytes(j->src[k], p);
    }
    counted += bytes;
    since_remap += bytes;
    report(r, bytes, 0, 0);
    if (sf_fault_get("build.slow_partition"))
      nanosleep(&(struct timespec){0, SLOW_PARTITION_NS}, NULL);
    int yielded = 0;
    if (r->opts->background && r->opts->budget && p + 1 < j->params.nlist &&
        sf_build_budget_yield(r->opts->budget, stop_waiting, r, &yielded)) {
      *j->slot_lost = 1;
      sf_seg_writer_abort(w);
      return sf_err_set(err, SF_ECANCELED, "segment %s: canceled", j->seg->segment_id);
    }
    if (yielded) since_remap = r->remap_bytes; /* drop the pages while others run */
    if (since_remap >= r->remap_bytes && p + 1 < j->params.nlist) {
      since_remap = 0;
      if ((rc = remap_shards(j, err))) {
        sf_seg_writer_abort(w);
        sf_err_prefix(err, "segment %s", j->seg->segment_id);
        return rc;
      }
    }
  }
  *rows = sf_seg_writer_rows(w);
  sf_seg_join_stats js;
  sf_seg_writer_join_stats(w, &js);
  rc = sf_seg_writer_finish(w, j->seg->fragments, err);
  if (rc) {
    sf_err_prefix(err, "segment %s", j->seg->segment_id);
    return rc;
  }
  pthread_mutex_lock(&r->lock);
  r->stats.bytes_copied += counted;
  r->stats.built++;
  r->stats.chunks_in += js.chunks_in;
  r->stats.chunks_out += js.chunks_out;
  pthread_mutex_unlock(&r->lock);
  /* Headers, directories and bitmaps are not partition bytes: settle the
   * difference so that the progress total is reached exactly. */
  report(r, j->seg->bytes > counted ? j->seg->bytes - counted : 0, 1, 0);
  return SF_OK;
}

static sf_code build_one(run *r, size_t g, int *slot_lost, sf_err *err) {
  job j = {.r = r, .seg = &r->plan->segments[g], .slot_lost = slot_lost};
  sf_code rc = SF_ENOMEM;
  j.path = sf_build_segment_path(r->dataset, j.seg->segment_id);
  j.src = calloc(j.seg->count, sizeof *j.src);
  if (!j.path || !j.src) {
    sf_err_set(err, SF_ENOMEM, "out of memory");
    goto done;
  }
  if ((rc = open_shards(&j, err))) goto done;

  sf_seg_reader *have = NULL;
  sf_err ignored = {0};
  uint64_t rows = 0;
  if (sf_seg_open_meta(j.path, &have, &ignored) == SF_OK) {
    int same = reusable(&j, have);
    uint64_t bytes = sf_seg_file_bytes(have), have_rows = sf_seg_num_rows(have);
    sf_seg_close(have);
    /* Reused work is fresh work to gc: its grace period counts from now,
     * not from the crashed run that wrote the file. Gone meanwhile: build. */
    if (same && utimensat(AT_FDCWD, j.path, NULL, 0) && errno == ENOENT) same = 0;
    if (same) {
      rc = describe(&j, bytes, have_rows, &r->out[g], err);
      if (!rc) {
        pthread_mutex_lock(&r->lock);
        r->stats.reused++;
        pthread_mutex_unlock(&r->lock);
        report(r, j.seg->bytes, 1, 1);
      }
      goto done;
    }
    /* Not this segment (or not whole): the rename below replaces it. */
  }

  if ((rc = write_segment(&j, &rows, err))) goto done;
  struct stat st;
  if (stat(j.path, &st)) {
    rc = sf_err_errno(err, SF_EIO, errno, "cannot stat %s", j.path);
    goto done;
  }
  rc = describe(&j, (uint64_t)st.st_size, rows, &r->out[g], err);
  if (!rc && sf_fault_get("build.after_segment") &&
      atomic_fetch_add(&r->committed, 1) == 0)
    sf_fault_crash();
done:
  for (size_t k = 0; j.src && k < j.seg->count; k++) sf_seg_close(j.src[k]);
  free(j.src);
  free(j.path);
  return rc;
}

/* ---- leftovers of crashed runs ------------------------------------------- */

/* A run killed mid-segment leaves "<id>.sfseg.tmp.<pid>.<n>" behind (the
 * writer's temporary name). Those of this plan's segments whose writer is
 * no longer alive are removed before building: nobody can finish them, and
 * the rebuild writes a new temporary. A live pid is left alone, and so is
 * a temporary of another pid namespace (another container sharing the
 * dataset): its pid means nothing here, so it is left to gc, which removes
 * temporaries older than an hour. */
static size_t sweep_temporaries(const sf_plan *plan, const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  size_t removed = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *tmp = strstr(e->d_name, SF_PLAN_SEGMENT_EXT ".tmp.");
    if (!tmp) continue;
    size_t idlen = (size_t)(tmp - e->d_name);
    char *end;
    long pid = strtol(tmp + strlen(SF_PLAN_SEGMENT_EXT ".tmp."), &end, 10);
    if (pid <= 0 || *end != '.') continue;
    unsigned long long ns = strtoull(end + 1, &end, 10);
    if (*end != '.' || ns != sf_fs_pidns()) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    for (size_t g = 0; g < plan->num_segments; g++) {
      const char *id = plan->segments[g].segment_id;
      if (strlen(id) == idlen && !memcmp(id, e->d_name, idlen)) {
        if (!unlinkat(dirfd(d), e->d_name, 0)) removed++;
        break;
      }
    }
  }
  closedir(d);
  return removed;
}

/* ---- the pool ------------------------------------------------------------ */

/* Each segment build holds one slot of the process's budget (if any). The
 * segment is taken first, so that only a thread with work waits in the
 * budget's queue (a thread that would find nothing left must not stand in
 * line before another job's builds). */
static void *worker(void *arg) {
  run *r = arg;
  sf_build_budget *b = r->opts->budget;
  for (;;) {
    if (canceled(r)) break;
    size_t g = atomic_fetch_add(&r->next, 1);
    if (g >= r->plan->num_segments) break;
    if (b && (r->opts->background ? sf_build_budget_acquire_background(b, stop_waiting, r)
                                  : sf_build_budget_acquire(b, stop_waiting, r)))
      break; /* canceled */
    unsigned now = atomic_fetch_add(&r->running, 1) + 1;
    pthread_mutex_lock(&r->lock);
    if (now > r->stats.peak_running) r->stats.peak_running = now;
    pthread_mutex_unlock(&r->lock);
    sf_err e = {0};
    int slot_lost = 0;
    sf_code rc = build_one(r, g, &slot_lost, &e);
    atomic_fetch_sub(&r->running, 1);
    if (b && !slot_lost) sf_build_budget_release(b);
    if (rc) fail(r, &e);
  }
  return NULL;
}

void sf_build_results_free(sf_seginfo *s, size_t n) {
  if (!s) return;
  for (size_t i = 0; i < n; i++) sf_seginfo_clear(&s[i]);
  free(s);
}

static unsigned pool_size(const sf_build_opts *o, size_t segments) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned want = o->max_merges ? o->max_merges : (cores > 0 ? (unsigned)cores : 1);
  return segments < want ? (unsigned)segments : want;
}

sf_code sf_build_run(const sf_plan *plan, const char *dataset, const sf_build_opts *o,
                     sf_seginfo **out, size_t *n, sf_build_stats *stats, sf_err *err) {
  static const sf_build_opts defaults;
  *out = NULL;
  *n = 0;
  if (!o) o = &defaults;
  if (stats) memset(stats, 0, sizeof *stats);
  char *dir = sf_fs_join(dataset, SF_PLAN_SEGMENTS_DIR);
  if (!dir) return sf_err_set(err, SF_ENOMEM, "out of memory");
  /* Durable, so that a segment renamed into it is as durable as the
   * directory fsync after the rename promises. */
  sf_code rc = sf_fs_mkdirs_durable(dataset, SF_PLAN_SEGMENTS_DIR, err);
  size_t swept = rc ? 0 : sweep_temporaries(plan, dir);
  free(dir);
  if (rc) return rc;

  run r = {.plan = plan,
           .dataset = dataset,
           .opts = o,
           .remap_bytes = o->remap_bytes ? o->remap_bytes : REMAP_BYTES_DEFAULT};
  r.out = calloc(plan->num_segments ? plan->num_segments : 1, sizeof *r.out);
  if (!r.out) return sf_err_set(err, SF_ENOMEM, "out of memory");
  pthread_mutex_init(&r.lock, NULL);
  r.prog.bytes_total = plan->total_bytes;
  r.prog.segments_total = plan->num_segments;

  unsigned want = pool_size(o, plan->num_segments);
  pthread_t *tids = calloc(want ? want : 1, sizeof *tids);
  unsigned started = 0;
  for (; tids && started < want; started++)
    if (pthread_create(&tids[started], NULL, worker, &r)) break;
  if (started == 0 && want > 0) {
    /* Not even one thread: build on the caller's, which is still bounded. */
    worker(&r);
  }
  for (unsigned t = 0; t < started; t++) pthread_join(tids[t], NULL);
  free(tids);
  r.stats.threads = started;
  r.stats.temporaries_removed = swept;

  if (!r.err.code && o->cancel && atomic_load(o->cancel))
    sf_err_set(&r.err, SF_ECANCELED, "the build was canceled");
  pthread_mutex_destroy(&r.lock);
  if (!r.err.code && r.stats.reused) {
    /* A reused segment may have been renamed by a run killed before its
     * directory fsync: make what this run returns durable. */
    char *segdir = sf_fs_join(dataset, SF_PLAN_SEGMENTS_DIR);
    if (!segdir)
      sf_err_set(&r.err, SF_ENOMEM, "out of memory");
    else
      sf_fs_fsync_dir(segdir, &r.err);
    free(segdir);
  }
  if (stats) *stats = r.stats;
  if (r.err.code) {
    sf_build_results_free(r.out, plan->num_segments);
    if (err) *err = r.err;
    return r.err.code;
  }
  *out = r.out;
  *n = plan->num_segments;
  return SF_OK;
}
