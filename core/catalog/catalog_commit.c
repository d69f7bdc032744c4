/*
 * catalog_commit.c - sf_catalog_commit: a job's segments become one new
 * catalog version, or nothing changes.
 *
 * Order of a commit (each step durable before the next makes it visible,
 * after LMDB):
 *   1. the request alone is checked (ids, paths, parameters, disjointness);
 *   2. a shared flock on _catalog/LOCK is taken (it keeps gc out, not other
 *      committers) and held to the end; under it every segment file must
 *      exist with its declared size (gc cannot remove one until the version
 *      naming it is published, and then it is the catalog's), and the
 *      newest version N is read; a job it already holds - in its window of
 *      recent jobs or in its job archive (catalog_archive.c) - ends the
 *      commit as a no-op returning that job's version;
 *   3. N is turned into N+1 in memory: checked against the index's
 *      parameters and segments (overlap, or --replace's whole-segment rule);
 *      the jobs beyond the window move to the archive, whose new chunks
 *      are written (temporary file, fsync, rename, directory fsync);
 *   4. the quantizer is copied to _indices/quantizers/<checksum> (temporary
 *      file, fsync, rename) unless an intact copy is there; then N+1 is
 *      written to a temporary file and fsynced;
 *   5. link(2) publishes it as v<N+1>.avro. EEXIST means another committer
 *      published N+1 first: drop ours, wait a jittered, growing while, and
 *      start again at step 2 against the new newest version. The winner's
 *      segments may now overlap ours, which is then refused like any overlap;
 *   6. the directory is fsynced so that the link survives a crash.
 * A crash before 5 leaves N as the newest version and at most a temporary
 * file (gc removes it after an hour) or chunks no version names (gc removes
 * them after its grace period); after 5, N+1 is complete.
 *
 * Steps 2, 5 and 6 are every commit's (sf_catalog_commit_loop); a
 * compaction (catalog_compaction.c) brings its own step 3.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/base/clock.h"
#include "core/base/fault.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog_internal.h"
#include "core/vector/quantizer.h"

#define DEFAULT_ATTEMPTS 32u
#define FRAG_LIST_MAX 8 /* ranges shown in a refusal */

/* A pause point: the commit sleeps there for half a second, so that tests
 * can run gc (or another committer) inside a window that is otherwise
 * microseconds wide. */
static void fault_pause(const char *point) {
  struct timespec ts = {0, 500 * 1000 * 1000};
  if (!sf_fault_get(point)) return;
  while (nanosleep(&ts, &ts) && errno == EINTR) {
  }
}

/* Sleeps a random time in [0.1, 0.1 + 2^attempt) ms, at most ~64 ms, so that
 * committers that collided do not collide again in lockstep. */
static void backoff(unsigned attempt, uint64_t *seed) {
  *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
  uint64_t cap_us = 1000ULL << (attempt < 6 ? attempt : 6);
  uint64_t us = 100 + (*seed >> 33) % cap_us;
  struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) && errno == EINTR) {
  }
}

/* ---- step 1: the request alone ------------------------------------------ */

/* The first parameter in which a and b differ (NULL if none), with both
 * values formatted into av and bv. */
const char *sf_catalog_param_diff(const sf_seginfo *a, const sf_seginfo *b, char av[32],
                                  char bv[32]) {
  if (a->index_type != b->index_type) {
    snprintf(av, 32, "%s", sf_index_type_name(a->index_type));
    snprintf(bv, 32, "%s", sf_index_type_name(b->index_type));
    return "index type";
  }
  if (a->metric != b->metric) {
    snprintf(av, 32, "%s", sf_metric_name(a->metric));
    snprintf(bv, 32, "%s", sf_metric_name(b->metric));
    return "metric";
  }
  if (a->dim != b->dim) {
    snprintf(av, 32, "%u", a->dim);
    snprintf(bv, 32, "%u", b->dim);
    return "dim";
  }
  if (a->nlist != b->nlist) {
    snprintf(av, 32, "%u", a->nlist);
    snprintf(bv, 32, "%u", b->nlist);
    return "nlist";
  }
  if (a->quantizer_checksum != b->quantizer_checksum) {
    snprintf(av, 32, "%016" PRIx64, a->quantizer_checksum);
    snprintf(bv, 32, "%016" PRIx64, b->quantizer_checksum);
    return "quantizer checksum";
  }
  return NULL;
}

const char *sf_catalog_index_param_diff(const sf_catalog_index *ix, const sf_seginfo *s,
                                        char av[32], char bv[32]) {
  sf_seginfo ref = {.index_type = ix->index_type,
                    .metric = ix->metric,
                    .dim = ix->dim,
                    .nlist = ix->nlist,
                    .quantizer_checksum = ix->quantizer_checksum};
  return sf_catalog_param_diff(&ref, s, av, bv);
}

sf_code sf_catalog_check_seginfo(const sf_seginfo *s, sf_err *err) {
  sf_code rc;
  if ((rc = sf_catalog_check_id("segment_id", s->segment_id, err)) ||
      (rc = sf_catalog_check_segpath("path", s->path, err)))
    return rc;
  if (s->num_shards > SF_CATALOG_MAX_SHARDS || (s->num_shards && !s->shard_ids))
    return sf_err_set(err, SF_EINVAL, "bad shard id list");
  for (uint32_t k = 0; k < s->num_shards; k++)
    if ((rc = sf_catalog_check_id("shard id", s->shard_ids[k], err))) return rc;
  if (!s->fragments || roaring_bitmap_is_empty(s->fragments))
    return sf_err_set(err, SF_EINVAL, "it covers no fragments");
  if (s->bytes > INT64_MAX || s->num_rows > INT64_MAX)
    return sf_err_set(err, SF_EINVAL, "bytes or num_rows out of range");
  if ((unsigned)s->index_type > SF_IVF_PQ || (unsigned)s->metric > SF_DOT || s->dim < 1 ||
      s->dim > SF_MAX_DIM || s->nlist < 1 || s->nlist > SF_MAX_NLIST)
    return sf_err_set(err, SF_EINVAL, "type, metric, dim or nlist out of range");
  return SF_OK;
}

static sf_code check_request(const sf_catalog_commit_req *r, sf_err *err) {
  sf_code rc;
  if (!r->dataset) return sf_err_set(err, SF_EINVAL, "no dataset given");
  if ((rc = sf_catalog_check_id("index name", r->index_name, err)) ||
      (rc = sf_catalog_check_text("column", r->column, err)) ||
      (rc = sf_catalog_check_id("staging id", r->staging_id, err)))
    return rc;
  if (!r->nsegs || !r->segs)
    return sf_err_set(err, SF_EINVAL, "job %s: no segments to commit", r->staging_id);
  if (r->nsegs > SF_CATALOG_MAX_SEGMENTS)
    return sf_err_set(err, SF_ELIMIT, "job %s: %zu segments (at most %u)", r->staging_id,
                      r->nsegs, SF_CATALOG_MAX_SEGMENTS);
  for (size_t i = 0; i < r->nsegs; i++) {
    const sf_seginfo *s = &r->segs[i];
    if ((rc = sf_catalog_check_seginfo(s, err))) {
      sf_err_prefix(err, "segment %s", s->segment_id ? s->segment_id : "?");
      return rc;
    }
    char av[32], bv[32];
    const char *field = sf_catalog_param_diff(s, &r->segs[0], av, bv);
    if (field)
      return sf_err_set(err, SF_EMISMATCH,
                        "the new segments differ: %s has %s %s but %s has %s %s",
                        s->segment_id, field, av, r->segs[0].segment_id, field, bv);
    for (size_t k = 0; k < i; k++) {
      if (!strcmp(r->segs[k].segment_id, s->segment_id) ||
          !strcmp(r->segs[k].path, s->path))
        return sf_err_set(err, SF_EINVAL, "segment %s (%s) appears twice", s->segment_id,
                          s->path);
      if (roaring_bitmap_intersect(r->segs[k].fragments, s->fragments)) {
        roaring_bitmap_t *x = roaring_bitmap_and(r->segs[k].fragments, s->fragments);
        char *l = x ? sf_fragset_format_short(x, FRAG_LIST_MAX) : NULL;
        sf_err_set(err, SF_EOVERLAP, "new segments %s and %s share fragments %s",
                   r->segs[k].segment_id, s->segment_id, l ? l : "?");
        free(l);
        sf_fragset_free(x);
        return SF_EOVERLAP;
      }
    }
  }
  return SF_OK;
}

static sf_code check_files(const char *ds, const sf_seginfo *segs, size_t nsegs,
                           sf_err *err) {
  for (size_t i = 0; i < nsegs; i++) {
    const sf_seginfo *s = &segs[i];
    size_t n = strlen(ds) + strlen(s->path) + sizeof "/_indices/";
    char *p = malloc(n);
    if (!p) return sf_err_set(err, SF_ENOMEM, "out of memory");
    snprintf(p, n, "%s/_indices/%s", ds, s->path);
    struct stat st;
    sf_code rc = SF_OK;
    if (stat(p, &st))
      rc =
          sf_err_errno(err, errno == ENOENT ? SF_ENOTFOUND : SF_EIO, errno,
                       "segment %s: cannot find its file %s (build it before committing)",
                       s->segment_id, p);
    else if (!S_ISREG(st.st_mode))
      rc = sf_err_set(err, SF_EINVAL, "segment %s: %s is not a regular file",
                      s->segment_id, p);
    else if ((uint64_t)st.st_size != s->bytes)
      rc = sf_err_set(err, SF_EMISMATCH,
                      "segment %s: %s has %lld bytes, its description says %" PRIu64,
                      s->segment_id, p, (long long)st.st_size, s->bytes);
    free(p);
    if (rc) return rc;
  }
  /* A segment renamed into place just before a crash, and reused by this
   * run, may have a name that is not yet durable: make the directory
   * durable before a version names what is in it. */
  if (!nsegs) return SF_OK;
  char *segdir = sf_fs_join(ds, SF_CATALOG_SEGMENTS_DIR);
  if (!segdir) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_code rc = sf_fs_fsync_dir(segdir, err);
  free(segdir);
  return rc;
}

/* ---- step 3: the quantizer ------------------------------------------------ */

static sf_code copy_file(const char *src, const char *dst, sf_err *err) {
  int in;
  sf_code rc = sf_fs_open_input(src, &in, NULL, err);
  if (rc) return rc;
  sf_fs_tmpfile t;
  rc = sf_fs_tmpfile_open(&t, dst, err);
  if (rc) {
    close(in);
    return rc;
  }
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(in, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) rc = sf_err_errno(err, SF_EIO, errno, "cannot read %s", src);
    if (n <= 0) break;
    if ((rc = sf_fs_write_all(t.fd, buf, (size_t)n, t.tmp_path, err))) break;
  }
  close(in);
  if (rc) {
    sf_fs_tmpfile_abort(&t);
    return rc;
  }
  if ((rc = sf_fault_point("catalog.before_quantizer_rename", err))) {
    sf_fs_tmpfile_abort(&t);
    return rc;
  }
  return sf_fs_tmpfile_commit(&t, err);
}

/* Makes sure _indices/quantizers/<cs> holds the quantizer: content-addressed,
 * so an intact copy is never rewritten, and concurrent committers of the
 * same quantizer rename identical bytes over each other harmlessly. */
static sf_code keep_quantizer(const char *ds, const sf_catalog_commit_req *r, uint64_t cs,
                              sf_err *err) {
  char rel[128];
  snprintf(rel, sizeof rel, "%s/%016" PRIx64, SF_CATALOG_QUANTIZERS_DIR, cs);
  char *dst = sf_fs_join(ds, rel);
  char *src = NULL;
  if (r->quantizer_path) {
    src = strdup(r->quantizer_path);
  } else if ((src = malloc(strlen(ds) + strlen(r->staging_id) + 64))) {
    sprintf(src, "%s/%s/%s/quantizer", ds, SF_CATALOG_STAGING_DIR, r->staging_id);
  }
  sf_code rc = SF_OK;
  uint64_t got;
  if (!dst || !src) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  } else if (sf_quant_checksum_of_file(dst, &got, NULL) == SF_OK && got == cs) {
    /* Already kept, intact. A run that crashed between its rename and the
     * directory fsync left the name in the page cache only: make it durable
     * before a version names it. */
    char *qdir = sf_fs_dirname(dst);
    rc = qdir ? sf_fs_fsync_dir(qdir, err) : sf_err_set(err, SF_ENOMEM, "out of memory");
    free(qdir);
  } else if ((rc = sf_quant_checksum_of_file(src, &got, err))) {
    sf_err_prefix(err, "index %s needs its quantizer %016" PRIx64 " kept at %s, from %s",
                  r->index_name, cs, dst, src);
  } else if (got != cs) {
    rc = sf_err_set(err, SF_ECHECKSUM,
                    "quantizer %s has checksum %016" PRIx64
                    " but the segments were built with quantizer %016" PRIx64,
                    src, got, cs);
  } else if (!(rc = sf_fs_mkdirs_durable(ds, SF_CATALOG_QUANTIZERS_DIR, err))) {
    rc = copy_file(src, dst, err);
  }
  free(dst);
  free(src);
  return rc;
}

/* ---- step 4: version N -> N+1 --------------------------------------------- */

static void segment_drop(sf_catalog_segment *s) {
  sf_seginfo_clear(&s->info);
  free(s->staging_id);
  s->staging_id = NULL;
}

static sf_code overlap_error(const sf_catalog_index *ix, const sf_catalog_segment *e,
                             const sf_catalog_commit_req *r, sf_err *err) {
  for (size_t i = 0; i < r->nsegs; i++) {
    if (!roaring_bitmap_intersect(e->info.fragments, r->segs[i].fragments)) continue;
    roaring_bitmap_t *x = roaring_bitmap_and(e->info.fragments, r->segs[i].fragments);
    char *l = x ? sf_fragset_format_short(x, FRAG_LIST_MAX) : NULL;
    sf_err_set(err, SF_EOVERLAP,
               "new segment %s overlaps segment %s of index %s (committed by job %s in "
               "version %" PRIu64 ") on fragments %s; pass --replace to swap it out",
               r->segs[i].segment_id, e->info.segment_id, ix->name, e->staging_id,
               e->added_in, l ? l : "?");
    free(l);
    sf_fragset_free(x);
    break;
  }
  return SF_EOVERLAP;
}

static sf_code partial_error(const sf_catalog_index *ix, const sf_catalog_segment *e,
                             const roaring_bitmap_t *cover, sf_err *err) {
  roaring_bitmap_t *in = roaring_bitmap_and(e->info.fragments, cover);
  roaring_bitmap_t *out = roaring_bitmap_andnot(e->info.fragments, cover);
  char *li = in ? sf_fragset_format_short(in, FRAG_LIST_MAX) : NULL;
  char *lo = out ? sf_fragset_format_short(out, FRAG_LIST_MAX) : NULL;
  sf_err_set(
      err, SF_EOVERLAP,
      "--replace would cover segment %s of index %s only partly: its fragments %s are "
      "in the new segments but %s are not; a replacement must cover whole segments",
      e->info.segment_id, ix->name, li ? li : "?", lo ? lo : "?");
  free(li);
  free(lo);
  sf_fragset_free(in);
  sf_fragset_free(out);
  return SF_EOVERLAP;
}

/* Makes room for one more of the catalog's n entries of `size` bytes in arr
 * (at most max, named `what` in the error): *out is the grown array (arr is
 * then invalid), its new last entry zeroed. */
static sf_code grow(void *arr, size_t n, size_t size, size_t max, const char *what,
                    void **out, sf_err *err) {
  if (n >= max)
    return sf_err_set(err, SF_ELIMIT, "the catalog holds %zu %s already", n, what);
  uint8_t *a = realloc(arr, (n + 1) * size);
  if (!a) return sf_err_set(err, SF_ENOMEM, "out of memory");
  memset(a + n * size, 0, size);
  *out = a;
  return SF_OK;
}

static sf_code find_or_add_index(sf_catalog *c, const sf_catalog_commit_req *r,
                                 sf_catalog_index **out, sf_err *err) {
  const sf_seginfo *p = &r->segs[0];
  for (size_t i = 0; i < c->nix; i++) {
    sf_catalog_index *ix = &c->ix[i];
    if (strcmp(ix->name, r->index_name)) continue;
    if (strcmp(ix->column, r->column))
      return sf_err_set(err, SF_EMISMATCH, "index %s is on column %s, not %s", ix->name,
                        ix->column, r->column);
    char av[32], bv[32];
    const char *field = sf_catalog_index_param_diff(ix, p, av, bv);
    if (field)
      return sf_err_set(
          err, SF_EMISMATCH,
          "index %s has %s %s but the new segments have %s %s: all segments of "
          "an index share one type, metric, dim, nlist and quantizer",
          ix->name, field, av, field, bv);
    *out = ix;
    return SF_OK;
  }
  void *a = NULL;
  sf_code rc =
      grow(c->ix, c->nix, sizeof *c->ix, SF_CATALOG_MAX_INDEXES, "indexes", &a, err);
  if (rc) return rc;
  c->ix = a;
  sf_catalog_index *ix = &c->ix[c->nix++];
  ix->name = strdup(r->index_name);
  ix->column = strdup(r->column);
  ix->index_type = p->index_type;
  ix->metric = p->metric;
  ix->dim = p->dim;
  ix->nlist = p->nlist;
  ix->quantizer_checksum = p->quantizer_checksum;
  if (!ix->name || !ix->column) return sf_err_set(err, SF_ENOMEM, "out of memory");
  *out = ix;
  return SF_OK;
}

/* A new segment's id or file must not be anywhere in the catalog, except in
 * a segment this commit swaps out (a rebuild under the same name). */
static sf_code check_names(const sf_catalog *c, const sf_catalog_commit_req *r,
                           const sf_catalog_index *target, const uint8_t *drop,
                           sf_err *err) {
  for (size_t i = 0; i < c->nix; i++)
    for (size_t j = 0; j < c->ix[i].nsegs; j++) {
      const sf_seginfo *e = &c->ix[i].segs[j].info;
      if (&c->ix[i] == target && drop[j]) continue;
      for (size_t k = 0; k < r->nsegs; k++)
        if (!strcmp(e->segment_id, r->segs[k].segment_id) ||
            !strcmp(e->path, r->segs[k].path))
          return sf_err_set(err, SF_EEXIST,
                            "segment %s (%s) is already in the catalog, in index %s",
                            e->segment_id, e->path, c->ix[i].name);
    }
  return SF_OK;
}

static sf_code add_job(sf_catalog *c, const sf_catalog_commit_req *r, uint64_t v,
                       uint64_t at, sf_err *err) {
  void *a = NULL;
  sf_code rc =
      grow(c->jobs, c->njobs, sizeof *c->jobs, SF_CATALOG_MAX_JOBS, "jobs", &a, err);
  if (rc) return rc;
  c->jobs = a;
  sf_catalog_job *j = &c->jobs[c->njobs++];
  j->staging_id = strdup(r->staging_id);
  j->index_name = strdup(r->index_name);
  j->version = v;
  j->committed_at_ms = at;
  j->segment_ids = calloc(r->nsegs, sizeof *j->segment_ids);
  if (!j->staging_id || !j->index_name || !j->segment_ids)
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (size_t k = 0; k < r->nsegs; k++, j->nsegment_ids++)
    if (!(j->segment_ids[j->nsegment_ids] = strdup(r->segs[k].segment_id)))
      return sf_err_set(err, SF_ENOMEM, "out of memory");
  return SF_OK;
}

/* Turns c, version N as just read (owned by the caller, who frees it
 * whatever happens), into N+1 holding the request. */
static sf_code apply(sf_catalog *c, const sf_catalog_commit_req *r, size_t *nreplaced,
                     sf_err *err) {
  uint64_t v = c->version + 1, at = (uint64_t)sf_clock_wall_ms();
  sf_catalog_index *ix = NULL;
  sf_code rc = find_or_add_index(c, r, &ix, err);
  if (rc) return rc;
  roaring_bitmap_t *cover = roaring_bitmap_create();
  uint8_t *drop = calloc(ix->nsegs + 1, 1);
  if (!cover || !drop) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t k = 0; k < r->nsegs; k++)
    roaring_bitmap_or_inplace(cover, r->segs[k].fragments);
  *nreplaced = 0;
  for (size_t j = 0; j < ix->nsegs && !rc; j++) {
    const sf_catalog_segment *e = &ix->segs[j];
    if (!roaring_bitmap_intersect(e->info.fragments, cover)) continue;
    if (!r->replace)
      rc = overlap_error(ix, e, r, err);
    else if (!roaring_bitmap_is_subset(e->info.fragments, cover))
      rc = partial_error(ix, e, cover, err);
    else {
      drop[j] = 1;
      ++*nreplaced;
    }
  }
  if (rc || (rc = check_names(c, r, ix, drop, err))) goto out;
  /* Kept segments first, in their order, then the new ones in plan order. */
  size_t keep = ix->nsegs - *nreplaced, n = 0;
  sf_catalog_segment *segs = calloc(keep + r->nsegs, sizeof *segs);
  if (!segs) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t j = 0; j < ix->nsegs; j++) {
    if (drop[j])
      segment_drop(&ix->segs[j]);
    else
      segs[n++] = ix->segs[j];
  }
  free(ix->segs);
  ix->segs = segs;
  ix->nsegs = n;
  for (size_t k = 0; k < r->nsegs && !rc; k++) {
    sf_catalog_segment *s = &ix->segs[ix->nsegs];
    if ((rc = sf_catalog_seginfo_copy(&s->info, &r->segs[k], err))) break;
    ix->nsegs++;
    s->added_in = v;
    if (!(s->staging_id = strdup(r->staging_id)))
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  if (!rc) rc = add_job(c, r, v, at, err);
  c->version = v;
  c->created_at_ms = at;
out:
  sf_fragset_free(cover);
  free(drop);
  return rc;
}

/* ---- step 5: publish ------------------------------------------------------ */

/* SF_FAULT=catalog.torn_temp leaves half a temporary file, as a crash in
 * the middle of the write would. */
static void fault_torn(const char *tmp) {
  struct stat st;
  if (!sf_fault_get("catalog.torn_temp") || stat(tmp, &st)) return;
  if (truncate(tmp, st.st_size / 2)) _exit(98);
  sf_fault_crash();
}

/* Writes c as its version's file; SF_OK with *lost set when another writer
 * published that version first. */
static sf_code publish(const char *ds, const sf_catalog *c, uint64_t *seed, int *lost,
                       sf_err *err) {
  char name[32];
  sf_catalog_version_name(c->version, name, sizeof name);
  char *dir = sf_fs_join(ds, SF_CATALOG_DIR), *final = dir ? sf_fs_join(dir, name) : NULL;
  char *tmp = final ? malloc(strlen(final) + 64) : NULL;
  if (!tmp) {
    free(dir);
    free(final);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  *seed = *seed * 6364136223846793005ULL + 1442695040888963407ULL;
  sprintf(tmp, "%s.tmp.%ld.%08" PRIx64, final, (long)getpid(), *seed >> 32);
  sf_code rc = SF_OK;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = sf_err_errno(err, SF_EIO, errno, "cannot create %s", tmp);
    goto out;
  }
  rc = sf_catalog_write_fd(c, fd, tmp, err);
  if (!rc && fsync(fd)) rc = sf_err_errno(err, SF_EIO, errno, "cannot fsync %s", tmp);
  if (close(fd) && !rc) rc = sf_err_errno(err, SF_EIO, errno, "cannot close %s", tmp);
  if (rc) goto out_unlink;
  fault_torn(tmp);
  if ((rc = sf_fault_point("catalog.before_link", err))) goto out_unlink;
  /* The put-if-absent: link(2) never replaces an existing name. */
  if (link(tmp, final)) {
    if (errno == EEXIST)
      *lost = 1;
    else
      rc = sf_err_errno(err, SF_EIO, errno, "cannot link %s to %s", tmp, final);
    goto out_unlink;
  }
  if ((rc = sf_fault_point("catalog.after_link", err))) goto out_unlink;
  unlink(tmp);
  rc = sf_fs_fsync_dir(dir, err);
  goto out;
out_unlink:
  unlink(tmp);
out:
  free(dir);
  free(final);
  free(tmp);
  return rc;
}

/* ---- the commit ----------------------------------------------------------- */

static sf_code open_newest(const char *ds, sf_catalog **out, sf_err *err) {
  sf_code rc = sf_catalog_open_latest(ds, out, err);
  if (rc != SF_ENOTFOUND) return rc;
  /* No version yet: start from an empty version 0. */
  sf_catalog *c = calloc(1, sizeof *c);
  if (!c || !(c->dataset = strdup(ds))) {
    free(c);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  *out = c;
  return SF_OK;
}

sf_code sf_catalog_commit_loop(const char *dataset, const sf_seginfo *files,
                               size_t nfiles, sf_catalog_attempt_fn attempt_fn, void *ctx,
                               unsigned max_attempts, const char *what,
                               sf_catalog_outcome *out, sf_err *err) {
  memset(out, 0, sizeof *out);
  char *ds = NULL, *catdir = NULL;
  sf_code rc = sf_catalog_resolve_dataset(dataset, &ds, err);
  if (rc) return rc;
  if (!(catdir = sf_fs_join(ds, SF_CATALOG_DIR))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  /* A new _catalog/ (first commit) must survive a crash like the version
   * linked into it. */
  if ((rc = sf_fs_mkdirs_durable(ds, SF_CATALOG_DIR, err))) goto out;
  fault_pause("catalog.pause_before_lock");
  int lock;
  if ((rc = sf_catalog_lock(ds, 0, &lock, err))) goto out;
  /* The files are checked under the lock, where gc cannot run, and it is
   * held until the version naming them is published: checked before it, a
   * file could go between the check and the publication. */
  if ((rc = check_files(ds, files, nfiles, err))) {
    close(lock);
    goto out;
  }
  uint64_t seed = ((uint64_t)getpid() << 32) ^ sf_clock_mono_ns();
  unsigned max = max_attempts ? max_attempts : DEFAULT_ATTEMPTS;
  int lost = 0;
  for (unsigned attempt = 1; attempt <= max; attempt++) {
    sf_catalog *c;
    lost = 0;
    out->attempts = attempt;
    if ((rc = open_newest(ds, &c, err))) break;
    if ((rc = attempt_fn(ctx, ds, c, out, err))) {
    } else if (out->already) {
      /* Reported as committed: make sure the version that says so is
       * durable (a committer killed after its link may have left it in the
       * page cache only). */
      rc = sf_catalog_sync(c, err);
    } else if (!(rc = publish(ds, c, &seed, &lost, err)) && !lost) {
      out->version = c->version;
    }
    sf_catalog_free(c);
    if (rc || !lost) break;
    backoff(attempt, &seed);
  }
  if (lost)
    rc = sf_err_set(err, SF_ECONFLICT,
                    "%s: gave up after %u attempts, other committers published first "
                    "every time",
                    what, max);
  close(lock); /* releases the flock */
out:
  free(ds);
  free(catdir);
  return rc;
}

/* ---- a job's commit --------------------------------------------------------- */

/* The job is already in the catalog: the same commit again is a no-op;
 * anything else under the same staging id is a conflict. */
static sf_code same_job(const sf_catalog_job *j, const sf_catalog_commit_req *r,
                        sf_err *err) {
  int same = !strcmp(j->index_name, r->index_name) && j->nsegment_ids == r->nsegs;
  for (size_t k = 0; same && k < r->nsegs; k++) {
    same = 0;
    for (size_t i = 0; !same && i < j->nsegment_ids; i++)
      same = !strcmp(j->segment_ids[i], r->segs[k].segment_id);
  }
  if (same) return SF_OK;
  return sf_err_set(
      err, SF_ECONFLICT,
      "job %s was committed in version %" PRIu64
      " to index %s with %zu other segments; a staging id is committed once",
      j->staging_id, j->version, j->index_name, j->nsegment_ids);
}

typedef struct job_commit {
  const sf_catalog_commit_req *r;
  size_t nreplaced;
  int have_quantizer;
} job_commit;

/* One attempt against the newest version c: the job is found (in the
 * window or the archive) and the commit is a no-op, or c becomes N+1. */
static sf_code job_attempt(void *ctx, const char *ds, sf_catalog *c,
                           sf_catalog_outcome *out, sf_err *err) {
  job_commit *x = ctx;
  const sf_catalog_commit_req *r = x->r;
  sf_catalog_job j;
  int found;
  sf_code rc = sf_catalog_lookup_job(c, r->staging_id, &j, &found, err);
  if (rc) return rc;
  if (found) {
    if (!(rc = same_job(&j, r, err))) {
      out->version = j.version;
      out->already = 1;
    }
    sf_catalog_job_clear(&j);
    return rc;
  }
  size_t window = r->job_window ? r->job_window : SF_CATALOG_JOB_WINDOW;
  size_t cmax =
      r->archive_chunk_jobs ? r->archive_chunk_jobs : SF_CATALOG_ARCHIVE_CHUNK_JOBS;
  if ((rc = apply(c, r, &x->nreplaced, err)) ||
      (rc = sf_catalog_archive_spill(c, ds, window, cmax, err)))
    return rc;
  if (!x->have_quantizer &&
      !(rc = keep_quantizer(ds, r, r->segs[0].quantizer_checksum, err)))
    x->have_quantizer = 1;
  return rc;
}

sf_code sf_catalog_commit(const sf_catalog_commit_req *r, sf_catalog_commit_result *res,
                          sf_err *err) {
  memset(res, 0, sizeof *res);
  sf_code rc = check_request(r, err);
  if (rc) return rc;
  job_commit x = {.r = r};
  sf_catalog_outcome o;
  char what[SF_CATALOG_MAX_ID + 8];
  snprintf(what, sizeof what, "job %s", r->staging_id);
  rc = sf_catalog_commit_loop(r->dataset, r->segs, r->nsegs, job_attempt, &x,
                              r->max_attempts, what, &o, err);
  res->version = o.version;
  res->already = o.already;
  res->attempts = o.attempts;
  res->nreplaced = rc || o.already ? 0 : x.nreplaced;
  return rc;
}
