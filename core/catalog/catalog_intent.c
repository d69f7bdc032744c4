/*
 * catalog_intent.c - the catalog lock, and intents: the segment files a
 * build in progress will commit, declared so that gc keeps them (the why
 * and the order are in catalog.h, "intents", and docs/catalog.md).
 *
 * An intent file:
 *   segforge intent 1
 *   owner <text>
 *   segments/<file name>
 *   ...
 * Its name is "i.<pid>.<pid namespace>.<counter>.<random>"; it is written
 * as "<name>.tmp.<pid>" first and renamed once complete and locked, so a
 * reader never sees a half-written intent nor an unlocked one of a live
 * builder.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/base/dirlist.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog_internal.h"

#define INTENT_HEADER "segforge intent 1"
#define INTENT_OWNER "owner "

struct sf_catalog_intent {
  int fd;     /* holds the flock */
  char *path; /* the intent file */
};

/* ---- the catalog lock ----------------------------------------------------- */

sf_code sf_catalog_lock(const char *dir, int exclusive, int *fd, sf_err *err) {
  *fd = -1;
  char *catdir = sf_fs_join(dir, SF_CATALOG_DIR);
  char *p = catdir ? sf_fs_join(catdir, SF_CATALOG_LOCK_NAME) : NULL;
  sf_code rc =
      p ? sf_fs_mkdirs(catdir, err) : sf_err_set(err, SF_ENOMEM, "out of memory");
  int f = rc ? -1 : open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (!rc && f < 0) rc = sf_err_errno(err, SF_EIO, errno, "cannot open %s", p);
  while (!rc && flock(f, exclusive ? LOCK_EX : LOCK_SH))
    if (errno != EINTR) rc = sf_err_errno(err, SF_EIO, errno, "cannot lock %s", p);
  if (rc && f >= 0) close(f);
  if (!rc) *fd = f;
  free(catdir);
  free(p);
  return rc;
}

/* ---- writing an intent ---------------------------------------------------- */

/* Appends to a 64 KiB buffer, flushing it to fd when full. */
typedef struct wbuf {
  int fd;
  const char *what;
  size_t n;
  char b[1 << 16];
} wbuf;

static sf_code put(wbuf *w, const char *s, sf_err *err) {
  for (size_t len = strlen(s); len;) {
    if (w->n == sizeof w->b) {
      sf_code rc = sf_fs_write_all(w->fd, w->b, w->n, w->what, err);
      if (rc) return rc;
      w->n = 0;
    }
    size_t k = sizeof w->b - w->n < len ? sizeof w->b - w->n : len;
    memcpy(w->b + w->n, s, k);
    w->n += k;
    s += k;
    len -= k;
  }
  return SF_OK;
}

static sf_code write_intent(int fd, const char *what, const char *owner,
                            const char *const *paths, size_t n, sf_err *err) {
  wbuf *w = malloc(sizeof *w);
  if (!w) return sf_err_set(err, SF_ENOMEM, "out of memory");
  w->fd = fd;
  w->what = what;
  w->n = 0;
  sf_code rc = put(w, INTENT_HEADER "\n" INTENT_OWNER, err);
  if (!rc && !(rc = put(w, owner, err))) rc = put(w, "\n", err);
  for (size_t i = 0; !rc && i < n; i++)
    if (!(rc = put(w, paths[i], err))) rc = put(w, "\n", err);
  if (!rc) rc = sf_fs_write_all(fd, w->b, w->n, what, err);
  free(w);
  return rc;
}

static sf_code check_begin(const char *owner, const char *const *paths, size_t n,
                           sf_err *err) {
  sf_code rc = sf_catalog_check_text("intent owner", owner, err);
  if (rc) return rc;
  if (n > SF_CATALOG_MAX_SEGMENTS)
    return sf_err_set(err, SF_ELIMIT, "an intent of %zu segments (at most %u)", n,
                      SF_CATALOG_MAX_SEGMENTS);
  for (size_t i = 0; i < n; i++)
    if ((rc = sf_catalog_check_segpath("intent path", paths[i], err))) return rc;
  return SF_OK;
}

sf_code sf_catalog_intent_begin(const char *dataset, const char *owner,
                                const char *const *paths, size_t n,
                                sf_catalog_intent **out, sf_err *err) {
  static atomic_uint counter;
  *out = NULL;
  char *ds = NULL, *dir = NULL, *tmp = NULL;
  int lock = -1;
  sf_catalog_intent *in = calloc(1, sizeof *in);
  if (in) in->fd = -1;
  sf_code rc = check_begin(owner, paths, n, err);
  if (rc || (rc = sf_catalog_resolve_dataset(dataset, &ds, err))) goto out;
  if (!in || !(dir = sf_fs_join(ds, SF_CATALOG_INTENTS_DIR))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r ^= (uint64_t)(uintptr_t)in;
  size_t len = strlen(dir) + 128;
  if (!(in->path = malloc(len)) || !(tmp = malloc(len + 32))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(in->path, len, "%s/i.%ld.%llu.%u.%016" PRIx64, dir, (long)getpid(),
           (unsigned long long)sf_fs_pidns(), atomic_fetch_add(&counter, 1), r);
  snprintf(tmp, len + 32, "%s.tmp.%ld", in->path, (long)getpid());
  if ((rc = sf_fs_mkdirs(dir, err))) goto out;
  /* Under the shared catalog lock: gc, which holds it exclusively, either
   * finished before the intent exists or starts after it is in place. */
  if ((rc = sf_catalog_lock(ds, 0, &lock, err))) goto out;
  in->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (in->fd < 0) {
    rc = sf_err_errno(err, SF_EIO, errno, "cannot create %s", tmp);
    goto out;
  }
  /* A new file: nobody else can hold its lock, so this cannot block. */
  if (flock(in->fd, LOCK_EX | LOCK_NB)) {
    rc = sf_err_errno(err, SF_EIO, errno, "cannot lock %s", tmp);
    goto out_unlink;
  }
  if ((rc = write_intent(in->fd, tmp, owner, paths, n, err))) goto out_unlink;
  /* rename keeps the inode, so the file appears locked and complete. No
   * fsync: an intent only matters while its builder lives. */
  if (rename(tmp, in->path)) {
    rc = sf_err_errno(err, SF_EIO, errno, "cannot rename %s to %s", tmp, in->path);
    goto out_unlink;
  }
  *out = in;
  in = NULL;
  goto out;
out_unlink:
  unlink(tmp);
out:
  if (lock >= 0) close(lock);
  if (in) { /* failed: nothing under the final name */
    if (in->fd >= 0) close(in->fd);
    free(in->path);
    free(in);
  }
  free(ds);
  free(dir);
  free(tmp);
  return rc;
}

void sf_catalog_intent_end(sf_catalog_intent *in) {
  if (!in) return;
  if (in->fd >= 0) {
    /* Unlinked while still locked: gc never finds it unlocked and alive. */
    if (in->path) unlink(in->path);
    close(in->fd);
  }
  free(in->path);
  free(in);
}

/* ---- reading intents (gc) ------------------------------------------------- */

/* Reads one live intent (fd, locked by its builder) line by line; every
 * line is bounded, and the file as a whole was bounded by its size. */
static sf_code read_intent(int fd, const char *file, sf_catalog_intent_path_fn fn,
                           void *ctx, sf_err *err) {
  FILE *fp = fdopen(fd, "r");
  if (!fp) {
    close(fd);
    return sf_err_errno(err, SF_EIO, errno, "cannot read %s", file);
  }
  char line[SF_CATALOG_MAX_TEXT + 16];
  sf_code rc = SF_OK;
  for (uint64_t no = 1; !rc && fgets(line, sizeof line, fp); no++) {
    size_t len = strlen(line);
    if (!len || line[len - 1] != '\n') {
      rc = sf_err_set(err, SF_ECORRUPT, "intent %s: line %" PRIu64 " is too long or cut",
                      file, no);
      break;
    }
    line[len - 1] = '\0';
    if (no == 1) {
      if (strcmp(line, INTENT_HEADER))
        rc = sf_err_set(err, SF_ECORRUPT, "intent %s: not an intent (first line '%.40s')",
                        file, line);
    } else if (no == 2) {
      if (strncmp(line, INTENT_OWNER, strlen(INTENT_OWNER)))
        rc = sf_err_set(err, SF_ECORRUPT, "intent %s: line 2 names no owner", file);
    } else if (sf_catalog_check_segpath("path", line, NULL)) {
      rc =
          sf_err_set(err, SF_ECORRUPT,
                     "intent %s, line %" PRIu64 ": '%.80s' is not 'segments/<file name>'",
                     file, no, line);
    } else {
      rc = fn(ctx, line, err);
    }
  }
  if (!rc && ferror(fp)) rc = sf_err_errno(err, SF_EIO, errno, "cannot read %s", file);
  fclose(fp);
  return rc;
}

/* One entry of _intents/: stale (nobody holds its flock), live, or gone. */
static sf_code scan_one(int dfd, const char *dir, const char *name,
                        sf_catalog_intent_path_fn path_fn,
                        sf_catalog_intent_stale_fn stale_fn, void *ctx, sf_err *err) {
  char *file = sf_fs_join(dir, name);
  if (!file) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_code rc = SF_OK;
  struct stat st;
  int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno != ENOENT) /* ENOENT: ended meanwhile (builders end without the lock) */
      rc = sf_err_errno(err, SF_EIO, errno, "cannot open intent %s", file);
  } else if (fstat(fd, &st)) {
    rc = sf_err_errno(err, SF_EIO, errno, "cannot stat intent %s", file);
  } else if (!S_ISREG(st.st_mode)) {
    rc = sf_err_set(err, SF_ECORRUPT, "intent %s is not a regular file; remove it", file);
  } else if (!flock(fd, LOCK_SH | LOCK_NB)) {
    /* Nobody holds it: its builder is gone. */
    rc = stale_fn(ctx, file, (uint64_t)st.st_size, err);
  } else if (errno != EWOULDBLOCK) {
    rc = sf_err_errno(err, SF_EIO, errno, "cannot test the lock of intent %s", file);
  } else if ((uint64_t)st.st_size > SF_CATALOG_MAX_INTENT_BYTES) {
    rc = sf_err_set(err, SF_ECORRUPT, "intent %s has %lld bytes, more than an intent can",
                    file, (long long)st.st_size);
  } else {
    rc = read_intent(fd, file, path_fn, ctx, err);
    fd = -1; /* closed by read_intent */
  }
  if (fd >= 0) close(fd);
  free(file);
  return rc;
}

sf_code sf_catalog_intents_scan(const char *dsdir, sf_catalog_intent_path_fn path_fn,
                                sf_catalog_intent_stale_fn stale_fn, void *ctx,
                                sf_err *err) {
  char *dir;
  DIR *d;
  sf_code rc = sf_dirlist_open(dsdir, SF_CATALOG_INTENTS_DIR, &dir, &d, err);
  if (rc || !d) return rc;
  struct dirent *e;
  while (!rc && (e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || strstr(e->d_name, ".tmp."))
      continue; /* an intent being made (gc sweeps the leftovers of crashes) */
    rc = scan_one(dirfd(d), dir, e->d_name, path_fn, stale_fn, ctx, err);
  }
  closedir(d);
  free(dir);
  return rc;
}
