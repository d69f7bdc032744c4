/* fsutil.c - see fsutil.h. */
#include "core/base/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkdir of one directory; a new one is made durable by an fsync of its
 * parent, so that what is renamed into it later survives a crash. */
static sf_code mkdir_one(char *p, sf_err *err) {
  if (mkdir(p, 0755)) {
    int e = errno;
    struct stat st;
    if (e == EEXIST && !stat(p, &st) && S_ISDIR(st.st_mode)) return SF_OK;
    if (e == EEXIST)
      return sf_err_set(err, SF_EINVAL, "%s exists and is not a directory", p);
    return sf_err_errno(err, SF_EIO, e, "cannot create directory %s", p);
  }
  char *parent = sf_fs_dirname(p);
  sf_code rc =
      parent ? sf_fs_fsync_dir(parent, err) : sf_err_set(err, SF_ENOMEM, "out of memory");
  free(parent);
  return rc;
}

sf_code sf_fs_mkdirs(const char *path, sf_err *err) {
  char *p = strdup(path);
  if (!p) return sf_err_set(err, SF_ENOMEM, "out of memory");
  size_t n = strlen(p);
  while (n > 1 && p[n - 1] == '/') p[--n] = '\0'; /* "a/b/" is "a/b" */
  sf_code rc = SF_OK;
  for (char *s = p + 1; !rc && *s; s++) {
    if (*s != '/' || s[-1] == '/') continue;
    *s = '\0';
    rc = mkdir_one(p, err);
    *s = '/';
  }
  if (!rc) rc = mkdir_one(p, err);
  free(p);
  return rc;
}

sf_code sf_fs_mkdirs_durable(const char *base, const char *rel, sf_err *err) {
  char *path = sf_fs_join(base, rel);
  if (!path) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_code rc = sf_fs_mkdirs(path, err);
  /* Each component's name lives in the directory before it. */
  for (char *s = path + strlen(base); !rc && *s; s++) {
    if (*s != '/') continue;
    *s = '\0';
    rc = sf_fs_fsync_dir(path, err);
    *s = '/';
  }
  free(path);
  return rc;
}

sf_code sf_fs_fsync_dir(const char *dir, sf_err *err) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sf_err_errno(err, SF_EIO, errno, "cannot open directory %s", dir);
  int rc = fsync(fd), e = errno;
  close(fd);
  if (rc) return sf_err_errno(err, SF_EIO, e, "cannot fsync directory %s", dir);
  return SF_OK;
}

char *sf_fs_dirname(const char *path) {
  const char *s = strrchr(path, '/');
  if (!s) return strdup(".");
  if (s == path) return strdup("/");
  return strndup(path, (size_t)(s - path));
}

char *sf_fs_join(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  char *r = malloc(la + lb + 2);
  if (!r) return NULL;
  memcpy(r, a, la);
  r[la] = '/';
  memcpy(r + la + 1, b, lb + 1);
  return r;
}

sf_code sf_fs_write_all(int fd, const void *buf, size_t len, const char *what,
                        sf_err *err) {
  const uint8_t *p = buf;
  while (len) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sf_err_errno(err, SF_EIO, errno, "cannot write %s", what);
    }
    p += n;
    len -= (size_t)n;
  }
  return SF_OK;
}

sf_code sf_fs_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
                         const char *what, sf_err *err) {
  const uint8_t *p = buf;
  while (len) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sf_err_errno(err, SF_EIO, errno, "cannot write %s", what);
    }
    p += n;
    off += (uint64_t)n;
    len -= (size_t)n;
  }
  return SF_OK;
}

uint64_t sf_fs_pidns(void) {
  static _Atomic uint64_t cached; /* every thread computes the same value */
  uint64_t v = atomic_load_explicit(&cached, memory_order_relaxed);
  if (v) return v;
  char link[64] = "";
  ssize_t n = readlink("/proc/self/ns/pid", link, sizeof link - 1);
  const char *p = n > 0 ? strchr(link, '[') : NULL;
  v = p ? strtoull(p + 1, NULL, 10) : 0;
  if (!v) v = 1; /* unknown: all writers look alike, as before */
  atomic_store_explicit(&cached, v, memory_order_relaxed);
  return v;
}

sf_code sf_fs_tmpfile_open(sf_fs_tmpfile *t, const char *path, sf_err *err) {
  static atomic_uint counter;
  t->fd = -1;
  t->path = strdup(path);
  size_t n = strlen(path) + 96;
  t->tmp_path = malloc(n);
  if (!t->path || !t->tmp_path) {
    sf_fs_tmpfile_abort(t);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  /* "<pid>.<pid namespace>." lead, so a sweep of a crashed run's leftovers
   * can tell a dead writer of its own namespace from a live one in another
   * container sharing the dataset; a counter and random bits follow, and
   * O_EXCL makes any collision an error instead of two writers in one file. */
  uint64_t r = 0;
  if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r) r ^= (uint64_t)(uintptr_t)t;
  snprintf(t->tmp_path, n, "%s.tmp.%ld.%llu.%u.%016llx", path, (long)getpid(),
           (unsigned long long)sf_fs_pidns(), atomic_fetch_add(&counter, 1),
           (unsigned long long)r);
  t->fd = open(t->tmp_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (t->fd < 0) {
    sf_err_errno(err, SF_EIO, errno, "cannot create %s", t->tmp_path);
    sf_fs_tmpfile_abort(t);
    return SF_EIO;
  }
  return SF_OK;
}

/* rename(2) that never replaces: renameat2's RENAME_NOREPLACE, or where the
 * file system lacks it, link(2) (which never replaces either) and unlink. */
static int rename_noreplace(const char *from, const char *to) {
  if (!renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE)) return 0;
  if (errno != EINVAL && errno != ENOSYS && errno != ENOTSUP) return -1;
  if (link(from, to)) return -1;
  unlink(from);
  return 0;
}

/* The one commit path of both: fsync, close, rename (replacing or not),
 * fsync of the directory; the temporary is unlinked on any failure. */
static sf_code tmpfile_commit(sf_fs_tmpfile *t, int replace, sf_err *err) {
  sf_code rc = SF_OK;
  if (fsync(t->fd)) rc = sf_err_errno(err, SF_EIO, errno, "cannot fsync %s", t->tmp_path);
  if (close(t->fd) && !rc)
    rc = sf_err_errno(err, SF_EIO, errno, "cannot close %s", t->tmp_path);
  t->fd = -1;
  if (!rc &&
      (replace ? rename(t->tmp_path, t->path) : rename_noreplace(t->tmp_path, t->path)))
    rc = !replace && errno == EEXIST
             ? sf_err_set(err, SF_EEXIST, "%s already exists", t->path)
             : sf_err_errno(err, SF_EIO, errno, "cannot rename %s to %s", t->tmp_path,
                            t->path);
  if (!rc) {
    char *dir = sf_fs_dirname(t->path);
    rc = dir ? sf_fs_fsync_dir(dir, err) : sf_err_set(err, SF_ENOMEM, "out of memory");
    free(dir);
    free(t->tmp_path); /* renamed: nothing to unlink */
    t->tmp_path = NULL;
  }
  sf_fs_tmpfile_abort(t);
  return rc;
}

sf_code sf_fs_tmpfile_commit(sf_fs_tmpfile *t, sf_err *err) {
  return tmpfile_commit(t, 1, err);
}

sf_code sf_fs_tmpfile_commit_new(sf_fs_tmpfile *t, sf_err *err) {
  return tmpfile_commit(t, 0, err);
}

void sf_fs_tmpfile_abort(sf_fs_tmpfile *t) {
  if (t->fd >= 0) close(t->fd);
  if (t->tmp_path) unlink(t->tmp_path);
  free(t->tmp_path);
  free(t->path);
  t->fd = -1;
  t->tmp_path = t->path = NULL;
}

sf_code sf_fs_write_atomic(const char *path, const void *buf, size_t len, sf_err *err) {
  sf_fs_tmpfile t;
  sf_code rc = sf_fs_tmpfile_open(&t, path, err);
  if (rc) return rc;
  rc = sf_fs_write_all(t.fd, buf, len, t.tmp_path, err);
  if (rc) {
    sf_fs_tmpfile_abort(&t);
    return rc;
  }
  return sf_fs_tmpfile_commit(&t, err);
}

/* What st is, for "<path> is a FIFO, not a regular file". */
static const char *kind_of(mode_t m) {
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISSOCK(m)) return "a socket";
  return "of an unknown kind";
}

sf_code sf_fs_open_input(const char *path, int *fd, struct stat *st, sf_err *err) {
  *fd = -1;
  if (st) memset(st, 0, sizeof *st);
  /* O_NONBLOCK: opening a FIFO returns at once (to fail the check below)
   * instead of waiting for a writer. O_NOCTTY: a terminal named here must
   * not become the controlling one. */
  int f = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (f < 0) {
    int e = errno;
    return sf_err_errno(err, e == ENOENT || e == ENOTDIR ? SF_ENOTFOUND : SF_EIO, e,
                        "cannot open %s", path);
  }
  struct stat sb;
  if (fstat(f, &sb)) { /* the file opened, not whatever the name is by now */
    int e = errno;
    close(f);
    return sf_err_errno(err, SF_EIO, e, "cannot stat %s", path);
  }
  if (!S_ISREG(sb.st_mode)) {
    close(f);
    return sf_err_set(err, SF_EINVAL, "%s is %s, not a regular file", path,
                      kind_of(sb.st_mode));
  }
  int fl = fcntl(f, F_GETFL);
  if (fl < 0 || fcntl(f, F_SETFL, fl & ~O_NONBLOCK)) {
    int e = errno;
    close(f);
    return sf_err_errno(err, SF_EIO, e, "cannot open %s", path);
  }
  if (st) *st = sb;
  *fd = f;
  return SF_OK;
}

sf_code sf_fs_fopen_input(const char *path, FILE **out, struct stat *st, sf_err *err) {
  *out = NULL;
  int fd;
  sf_code rc = sf_fs_open_input(path, &fd, st, err);
  if (rc) return rc;
  if (!(*out = fdopen(fd, "rb"))) {
    int e = errno;
    close(fd);
    return sf_err_errno(err, e == ENOMEM ? SF_ENOMEM : SF_EIO, e, "cannot open %s", path);
  }
  return SF_OK;
}

sf_code sf_fs_read_input(const char *path, size_t max, char **buf, size_t *len,
                         sf_err *err) {
  *buf = NULL;
  *len = 0;
  int fd;
  struct stat st;
  sf_code rc = sf_fs_open_input(path, &fd, &st, err);
  if (rc) return rc;
  if ((uint64_t)st.st_size > max) {
    close(fd);
    return sf_err_set(err, SF_ELIMIT, "%s is %llu bytes long (at most %zu)", path,
                      (unsigned long long)st.st_size, max);
  }
  /* Read up to one byte past the size: a file that grew meanwhile is bounded
   * all the same. */
  size_t cap = (size_t)st.st_size + 1, n = 0;
  char *b = malloc(cap + 1);
  if (!b) {
    close(fd);
    return sf_err_set(err, SF_ENOMEM, "out of memory reading %s", path);
  }
  for (;;) {
    if (n == cap) {
      if (cap > max) break;
      size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
      char *nb = realloc(b, ncap + 1);
      if (!nb) {
        rc = sf_err_set(err, SF_ENOMEM, "out of memory reading %s", path);
        break;
      }
      b = nb;
      cap = ncap;
    }
    ssize_t got = read(fd, b + n, cap - n);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      rc = sf_err_errno(err, SF_EIO, errno, "cannot read %s", path);
      break;
    }
    if (got == 0) break;
    n += (size_t)got;
  }
  close(fd);
  if (!rc && n > max)
    rc = sf_err_set(err, SF_ELIMIT, "%s is more than %zu bytes long", path, max);
  if (rc) {
    free(b);
    return rc;
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
  return SF_OK;
}

sf_code sf_fs_map_open(const char *path, sf_fs_map *m, sf_err *err) {
  m->data = NULL;
  m->size = 0;
  int fd;
  struct stat st;
  sf_code rc = sf_fs_open_input(path, &fd, &st, err);
  if (rc) return rc;
  if (st.st_size > 0) {
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      close(fd);
      return sf_err_errno(err, SF_EIO, e, "cannot map %s", path);
    }
    m->data = p;
    m->size = (size_t)st.st_size;
  }
  close(fd);
  return SF_OK;
}

void sf_fs_map_close(sf_fs_map *m) {
  if (m->data) munmap((void *)m->data, m->size);
  m->data = NULL;
  m->size = 0;
}
