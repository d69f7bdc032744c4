/* gc.c - see gc.h for the rules and their order. */
#include "core/catalog/gc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/base/clock.h"
#include "core/base/dirlist.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"

#define MAX_TREE_DEPTH 32

const char *sf_gc_kind_name(sf_gc_kind k) {
  static const char *const names[] = {"version", "staging", "segment", "quantizer",
                                      "temp",    "intent",  "archive"};
  return (unsigned)k < SF_GC_KIND_COUNT ? names[k] : "unknown";
}

/* ---- a set of names: an array sorted once, then searched -------------- */

typedef struct strset {
  char **s;
  size_t n, cap;
} strset;

static int set_add(strset *set, const char *s) {
  if (set->n == set->cap) {
    size_t cap = set->cap ? 2 * set->cap : 64;
    char **ns = realloc(set->s, cap * sizeof *ns);
    if (!ns) return -1;
    set->s = ns;
    set->cap = cap;
  }
  if (!(set->s[set->n] = strdup(s))) return -1;
  set->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void set_sort(strset *set) {
  if (set->n) qsort(set->s, set->n, sizeof *set->s, cmp_str);
}

static int set_has(const strset *set, const char *s) {
  return set->n && bsearch(&s, set->s, set->n, sizeof *set->s, cmp_str) != NULL;
}

static void set_free(strset *set) {
  for (size_t i = 0; i < set->n; i++) free(set->s[i]);
  free(set->s);
}

/* Names a version references: segment file names (without "segments/"),
 * quantizer file names, job archive chunk names, and (if jobs) the staging
 * ids of its window of recent jobs. */
typedef struct refs {
  strset segs, quants, chunks, jobs;
} refs;

static int collect(const sf_catalog *c, refs *r, int jobs) {
  for (size_t i = 0; i < sf_catalog_num_indexes(c); i++) {
    const sf_catalog_index *ix = sf_catalog_index_at(c, i);
    char q[17];
    snprintf(q, sizeof q, "%016" PRIx64, ix->quantizer_checksum);
    if (set_add(&r->quants, q)) return -1;
    for (size_t k = 0; k < ix->nsegs;
         k++) /* paths are "segments/<name>" (checked on read) */
      if (set_add(&r->segs, strchr(ix->segs[k].info.path, '/') + 1)) return -1;
  }
  for (size_t i = 0; i < sf_catalog_num_archive_chunks(c); i++)
    if (set_add(&r->chunks, sf_catalog_archive_chunk_name(c, i))) return -1;
  for (size_t i = 0; jobs && i < sf_catalog_num_jobs(c); i++)
    if (set_add(&r->jobs, sf_catalog_job_at(c, i)->staging_id)) return -1;
  return 0;
}

static void refs_sort(refs *r) {
  set_sort(&r->segs);
  set_sort(&r->quants);
  set_sort(&r->chunks);
  set_sort(&r->jobs);
}

static void refs_free(refs *r) {
  set_free(&r->segs);
  set_free(&r->quants);
  set_free(&r->chunks);
  set_free(&r->jobs);
}

/* ---- removing ------------------------------------------------------------ */

typedef struct gc {
  char *ds;
  const sf_gc_opts *o;
  sf_gc_fn fn;
  void *ctx;
  sf_gc_stats *st;
  uint64_t now_ms, grace_ms, temp_age_ms;
  refs keep, dropped;
  strset building;    /* segment file names that live intents list */
  strset stale;       /* intent files nobody holds */
  strset committed;   /* staging roots whose job the newest version holds */
  sf_catalog *newest; /* the newest version, kept open for job lookups */
} gc;

static uint64_t age_ms(const gc *g, const struct stat *st) {
  uint64_t m =
      (uint64_t)st->st_mtim.tv_sec * 1000u + (uint64_t)st->st_mtim.tv_nsec / 1000000u;
  return g->now_ms > m ? g->now_ms - m : 0;
}

static sf_code removed(gc *g, sf_gc_kind k, const char *path, uint64_t bytes) {
  g->st->removed[k]++;
  g->st->bytes += bytes;
  if (g->fn) g->fn(g->ctx, k, path, bytes);
  return SF_OK;
}

static sf_code remove_file(gc *g, sf_gc_kind k, const char *path, uint64_t bytes,
                           sf_err *err) {
  if (!g->o->dry_run && unlink(path) && errno != ENOENT)
    return sf_err_errno(err, SF_EIO, errno, "cannot remove %s", path);
  return removed(g, k, path, bytes);
}

/* Sums (and unless dry, removes) the tree `name` under the directory parent,
 * never following symbolic links. */
static sf_code tree(int parent, const char *name, int depth, int del, uint64_t *bytes,
                    const char *root, sf_err *err) {
  if (depth > MAX_TREE_DEPTH)
    return sf_err_set(err, SF_ELIMIT, "%s nests more than %d directories deep", root,
                      MAX_TREE_DEPTH);
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
  if (!d) {
    if (fd >= 0) close(fd);
    return sf_err_errno(err, SF_EIO, errno, "cannot open %s", root);
  }
  sf_code rc = SF_OK;
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    struct stat st;
    if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW)) {
      rc = sf_err_errno(err, SF_EIO, errno, "cannot stat %s/.../%s", root, e->d_name);
    } else if (S_ISDIR(st.st_mode)) {
      rc = tree(fd, e->d_name, depth + 1, del, bytes, root, err);
    } else {
      *bytes += (uint64_t)st.st_size;
      if (del && unlinkat(fd, e->d_name, 0) && errno != ENOENT)
        rc = sf_err_errno(err, SF_EIO, errno, "cannot remove %s/.../%s", root, e->d_name);
    }
  }
  closedir(d);
  if (!rc && del && unlinkat(parent, name, AT_REMOVEDIR) && errno != ENOENT)
    rc = sf_err_errno(err, SF_EIO, errno, "cannot remove %s", root);
  return rc;
}

static int is_temp(const char *name) {
  return strstr(name, ".tmp.") != NULL;
}

/* Whether a file is one a live intent names, or a temporary of its writer
 * ("<name>.tmp.<...>"). */
static int building(const strset *b, const char *name) {
  if (!b || !b->n) return 0;
  const char *t = strstr(name, ".tmp.");
  if (!t) return set_has(b, name);
  char *base = strndup(name, (size_t)(t - name));
  int has = !base || set_has(b, base); /* out of memory: keep it */
  free(base);
  return has;
}

/* Sweeps a data directory (segments/ or quantizers/): temporaries by age,
 * other files unless a kept version needs them; never what a build in
 * progress will commit (`building`, may be NULL). kind SF_GC_TEMP sweeps
 * temporaries only (keep and dropped unused). */
static sf_code sweep_dir(gc *g, const char *rel, sf_gc_kind kind, const strset *keep,
                         const strset *dropped, const strset *build, sf_err *err) {
  char *dir;
  DIR *d;
  sf_code rc = sf_dirlist_open(g->ds, rel, &dir, &d, err);
  if (rc || !d) return rc;
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) || !S_ISREG(st.st_mode))
      continue;
    sf_gc_kind k = kind;
    if (building(build, e->d_name)) continue;
    if (is_temp(e->d_name)) {
      if (age_ms(g, &st) < g->temp_age_ms) continue;
      k = SF_GC_TEMP;
    } else if (kind == SF_GC_TEMP) {
      continue; /* temporaries only: _catalog/'s versions and lock are not swept */
    } else if (set_has(keep, e->d_name) ||
               (!set_has(dropped, e->d_name) && age_ms(g, &st) < g->grace_ms)) {
      continue;
    }
    char *p = sf_fs_join(dir, e->d_name);
    rc = p ? remove_file(g, k, p, (uint64_t)st.st_size, err)
           : sf_err_set(err, SF_ENOMEM, "out of memory");
    free(p);
  }
  closedir(d);
  free(dir);
  return rc;
}

/* Whether entry e of d is a directory of its own (a staging root): not "."
 * or "..", not a link. */
static int is_subdir(DIR *d, const struct dirent *e) {
  struct stat st;
  return strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
         !fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) && S_ISDIR(st.st_mode);
}

/* Which staging roots belong to committed jobs: the window of a kept
 * version, or (an older job) the newest version's archive, asked once per
 * chunk. Before anything is deleted: a chunk that does not read stops gc. */
static sf_code find_committed(gc *g, sf_err *err) {
  char *dir;
  DIR *d;
  sf_code rc = sf_dirlist_open(g->ds, SF_CATALOG_STAGING_DIR, &dir, &d, err);
  if (rc || !d) return rc;
  strset ask = {0};
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    if (!is_subdir(d, e)) continue;
    if (set_add(set_has(&g->keep.jobs, e->d_name) ? &g->committed : &ask, e->d_name))
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  closedir(d);
  free(dir);
  uint8_t *found = rc || !ask.n || !g->newest ? NULL : malloc(ask.n);
  if (!rc && ask.n && g->newest) {
    if (!found)
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    else if ((rc = sf_catalog_lookup_jobs(g->newest, (const char *const *)ask.s, ask.n,
                                          found, err)))
      sf_err_prefix(err, "gc deletes nothing while the job archive does not read");
    for (size_t i = 0; !rc && i < ask.n; i++)
      if (found[i] && set_add(&g->committed, ask.s[i]))
        rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  free(found);
  set_free(&ask);
  set_sort(&g->committed);
  return rc;
}

static sf_code sweep_staging(gc *g, sf_err *err) {
  char *dir;
  DIR *d;
  sf_code rc = sf_dirlist_open(g->ds, SF_CATALOG_STAGING_DIR, &dir, &d, err);
  if (rc || !d) return rc;
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    if (!is_subdir(d, e) || !set_has(&g->committed, e->d_name)) continue;
    char *p = sf_fs_join(dir, e->d_name);
    uint64_t bytes = 0;
    if (!p) {
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
      break;
    }
    /* Sum first, then remove, so that a dry run reports the same bytes. */
    rc = tree(dirfd(d), e->d_name, 0, 0, &bytes, p, err);
    if (!rc && !g->o->dry_run)
      rc = tree(dirfd(d), e->d_name, 0, 1, &(uint64_t){0}, p, err);
    if (!rc) rc = removed(g, SF_GC_STAGING, p, bytes);
    free(p);
  }
  closedir(d);
  free(dir);
  return rc;
}

/* Reads the versions: the kept ones must all read; the dropped ones are
 * read when they can be, to know which files only they referenced. */
static sf_code read_versions(gc *g, const uint64_t *v, size_t n, size_t first_kept,
                             sf_err *err) {
  for (size_t i = 0; i < n; i++) {
    sf_catalog *c;
    sf_err e2 = {0};
    sf_code rc = sf_catalog_open_version(g->ds, v[i], &c, i >= first_kept ? err : &e2);
    if (rc && i >= first_kept) {
      sf_err_prefix(err,
                    "gc deletes nothing while kept version %" PRIu64
                    " does not read (restore it, or keep fewer versions)",
                    v[i]);
      return rc;
    }
    if (rc) continue; /* a damaged old version: its files fall to the grace rule */
    int bad = collect(c, i >= first_kept ? &g->keep : &g->dropped, i >= first_kept);
    if (i + 1 == n)
      g->newest = c;
    else
      sf_catalog_free(c);
    if (bad) return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  refs_sort(&g->keep);
  refs_sort(&g->dropped);
  return SF_OK;
}

/* ---- intents: builds that will commit ------------------------------------ */

static sf_code intent_path(void *ctx, const char *path, sf_err *err) {
  gc *g = ctx; /* paths are "segments/<name>" (checked on read) */
  if (set_add(&g->building, strchr(path, '/') + 1))
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  return SF_OK;
}

static sf_code intent_stale(void *ctx, const char *file, uint64_t bytes, sf_err *err) {
  gc *g = ctx;
  (void)bytes;
  if (set_add(&g->stale, file)) return sf_err_set(err, SF_ENOMEM, "out of memory");
  return SF_OK;
}

/* Reads the live intents (before anything is deleted: one that does not
 * read stops gc, as a kept version that does not read does). */
static sf_code read_intents(gc *g, sf_err *err) {
  sf_code rc = sf_catalog_intents_scan(g->ds, intent_path, intent_stale, g, err);
  if (rc) {
    sf_err_prefix(
        err, "gc deletes nothing while what a build in progress will commit is unknown");
    return rc;
  }
  set_sort(&g->building);
  set_sort(&g->stale);
  return SF_OK;
}

/* The intents of builders that died: nobody will commit what they name. */
static sf_code drop_stale_intents(gc *g, sf_err *err) {
  for (size_t i = 0; i < g->stale.n; i++) {
    struct stat st;
    const char *p = g->stale.s[i];
    sf_code rc =
        remove_file(g, SF_GC_INTENT, p, stat(p, &st) ? 0 : (uint64_t)st.st_size, err);
    if (rc) return rc;
  }
  return SF_OK;
}

static sf_code drop_versions(gc *g, const char *catdir, const uint64_t *v,
                             size_t first_kept, sf_err *err) {
  for (size_t i = 0; i < first_kept; i++) { /* oldest first */
    char name[32];
    sf_catalog_version_name(v[i], name, sizeof name);
    char *p = sf_fs_join(catdir, name);
    struct stat st;
    sf_code rc = !p ? sf_err_set(err, SF_ENOMEM, "out of memory")
                    : remove_file(g, SF_GC_VERSION, p,
                                  stat(p, &st) ? 0 : (uint64_t)st.st_size, err);
    free(p);
    if (rc) return rc;
  }
  /* The versions must be gone for good before their files go. */
  return first_kept && !g->o->dry_run ? sf_fs_fsync_dir(catdir, err) : SF_OK;
}

sf_code sf_gc_run(const char *dataset, const sf_gc_opts *o, sf_gc_fn fn, void *ctx,
                  sf_gc_stats *stats, sf_err *err) {
  sf_gc_stats local;
  gc g = {.o = o,
          .fn = fn,
          .ctx = ctx,
          .st = stats ? stats : &local,
          .now_ms = (uint64_t)sf_clock_wall_ms()};
  memset(g.st, 0, sizeof *g.st);
  g.grace_ms = o->grace_ms < 0 ? SF_GC_DEFAULT_GRACE_MS : (uint64_t)o->grace_ms;
  g.temp_age_ms = o->temp_age_ms < 0 ? SF_GC_TEMP_AGE_MS : (uint64_t)o->temp_age_ms;
  size_t keep = o->keep_versions ? o->keep_versions : SF_GC_DEFAULT_KEEP;
  sf_code rc = sf_catalog_resolve_dataset(dataset, &g.ds, err);
  if (rc) return rc;
  char *catdir = sf_fs_join(g.ds, SF_CATALOG_DIR),
       *indices = sf_fs_join(g.ds, "_indices");
  uint64_t *v = NULL;
  size_t n = 0;
  int lock = -1;
  struct stat st;
  if (!catdir || !indices) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  if (stat(indices, &st)) { /* nothing of segforge's here: nothing to remove */
    if (errno != ENOENT) rc = sf_err_errno(err, SF_EIO, errno, "cannot stat %s", indices);
    goto out;
  }
  /* Exclusive, even before the first commit (the lock and _catalog/ are
   * created then): no commit and no intent is made while gc decides and
   * deletes. A dry run deletes nothing and creates nothing; it only wants a
   * stable view. */
  if (o->dry_run && stat(catdir, &st)) {
    if (errno != ENOENT) rc = sf_err_errno(err, SF_EIO, errno, "cannot stat %s", catdir);
  } else if (!(rc = sf_catalog_lock(g.ds, !o->dry_run, &lock, err))) {
    rc = sf_catalog_list_versions(g.ds, &v, &n, err);
  }
  size_t first_kept = n > keep ? n - keep : 0;
  if (n) {
    g.st->newest = v[n - 1];
    g.st->oldest_kept = v[first_kept];
  }
  if (!rc) rc = read_versions(&g, v, n, first_kept, err);
  if (!rc) rc = read_intents(&g, err);
  if (!rc) rc = find_committed(&g, err);
  if (!rc) rc = drop_versions(&g, catdir, v, first_kept, err);
  if (!rc) rc = sweep_staging(&g, err);
  if (!rc)
    rc = sweep_dir(&g, SF_CATALOG_SEGMENTS_DIR, SF_GC_SEGMENT, &g.keep.segs,
                   &g.dropped.segs, &g.building, err);
  if (!rc)
    rc = sweep_dir(&g, SF_CATALOG_QUANTIZERS_DIR, SF_GC_QUANTIZER, &g.keep.quants,
                   &g.dropped.quants, NULL, err);
  if (!rc)
    rc = sweep_dir(&g, SF_CATALOG_JOBS_DIR, SF_GC_ARCHIVE, &g.keep.chunks,
                   &g.dropped.chunks, NULL, err);
  if (!rc) rc = sweep_dir(&g, SF_CATALOG_DIR, SF_GC_TEMP, NULL, NULL, NULL, err);
  if (!rc) rc = sweep_dir(&g, SF_CATALOG_INTENTS_DIR, SF_GC_TEMP, NULL, NULL, NULL, err);
  if (!rc) rc = drop_stale_intents(&g, err);
out:
  if (lock >= 0) close(lock); /* releases the flock */
  refs_free(&g.keep);
  refs_free(&g.dropped);
  set_free(&g.building);
  set_free(&g.stale);
  set_free(&g.committed);
  sf_catalog_free(g.newest);
  free(v);
  free(catdir);
  free(indices);
  free(g.ds);
  return rc;
}
