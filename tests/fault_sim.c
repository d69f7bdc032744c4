/*
 * fault_sim.c - see fault_sim.h. The __wrap_ functions replace the C
 * library's at link time (ld --wrap); __real_ names the original.
 */
#include "tests/fault_sim.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
char *__real_realpath(const char *path, char *resolved);
int __real_fsync(int fd);
int __real_fdatasync(int fd);

/* ---- allocation failures ------------------------------------------------ */

static atomic_int oom_armed;
static atomic_ulong oom_calls; /* allocation calls since the arm */
static unsigned long oom_target;
static int oom_persistent;
static atomic_int oom_fired;

/* Whether this allocation call is the one (or one of those) to fail. */
static int oom_now(void) {
  if (!atomic_load_explicit(&oom_armed, memory_order_acquire)) return 0;
  unsigned long n = atomic_fetch_add(&oom_calls, 1) + 1;
  if (n == oom_target || (oom_persistent && n > oom_target)) {
    atomic_store(&oom_fired, 1);
    errno = ENOMEM;
    return 1;
  }
  return 0;
}

/* Live blocks: an open-addressing table keyed by address, with tombstones,
 * behind one mutex (the build runs threads). Big enough for any test. */
#define TRACK_SLOTS (1u << 18)
#define TOMB ((void *)1)
typedef struct {
  void *p;
  size_t size;
  void *caller;
} slot;
static slot table[TRACK_SLOTS];
static size_t live, taken; /* live blocks; slots taken, tombstones included */
static int tracking;
static pthread_mutex_t track_mu = PTHREAD_MUTEX_INITIALIZER;

static size_t hash(const void *p) {
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)(x & (TRACK_SLOTS - 1));
}

static void track_add(void *p, size_t size, void *caller) {
  if (!p) return;
  pthread_mutex_lock(&track_mu);
  if (tracking) {
    size_t i = hash(p);
    while (table[i].p && table[i].p != TOMB) i = (i + 1) & (TRACK_SLOTS - 1);
    if (!table[i].p && ++taken > TRACK_SLOTS / 4 * 3) {
      static const char m[] = "fault_sim: too many allocations to track\n";
      if (write(2, m, sizeof m - 1)) abort(); /* no stdio: it may allocate */
      abort();
    }
    table[i] = (slot){p, size, caller};
    live++;
  }
  pthread_mutex_unlock(&track_mu);
}

/* Forgets p; blocks allocated before tracking began, or by a shared library
 * and freed here, are not in the table and are ignored. */
static void track_del(void *p) {
  if (!p) return;
  pthread_mutex_lock(&track_mu);
  if (live) {
    for (size_t i = hash(p); table[i].p; i = (i + 1) & (TRACK_SLOTS - 1))
      if (table[i].p == p) {
        table[i].p = TOMB;
        live--;
        break;
      }
  }
  pthread_mutex_unlock(&track_mu);
}

void fsim_track_start(void) {
  pthread_mutex_lock(&track_mu);
  memset(table, 0, sizeof table);
  live = taken = 0;
  tracking = 1;
  pthread_mutex_unlock(&track_mu);
}

size_t fsim_track_stop(char *buf, size_t size, size_t max) {
  pthread_mutex_lock(&track_mu);
  tracking = 0;
  size_t n = live, shown = 0, used = 0;
  if (buf && size) buf[0] = '\0';
  for (size_t i = 0; buf && i < TRACK_SLOTS && shown < max; i++) {
    if (!table[i].p || table[i].p == TOMB) continue;
    Dl_info info;
    const char *mod = "?";
    uintptr_t off = (uintptr_t)table[i].caller;
    if (dladdr(table[i].caller, &info) && info.dli_fname) {
      mod = strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1
                                         : info.dli_fname;
      off -= (uintptr_t)info.dli_fbase;
    }
    int w = snprintf(buf + used, size - used, "%s%zu bytes from %s+0x%lx",
                     shown ? "; " : "", table[i].size, mod, (unsigned long)off);
    if (w < 0 || (size_t)w >= size - used) break;
    used += (size_t)w;
    shown++;
  }
  memset(table, 0, sizeof table);
  live = taken = 0;
  pthread_mutex_unlock(&track_mu);
  return n;
}

void fsim_oom_arm(unsigned long n, int persistent) {
  oom_target = n;
  oom_persistent = persistent;
  atomic_store(&oom_calls, 0);
  atomic_store(&oom_fired, 0);
  fsim_track_start();
  atomic_store_explicit(&oom_armed, 1, memory_order_release);
}

int fsim_oom_disarm(void) {
  atomic_store(&oom_armed, 0);
  return atomic_load(&oom_fired);
}

unsigned long fsim_oom_calls(void) {
  return atomic_load(&oom_calls);
}

#define CALLER __builtin_return_address(0)

void *__wrap_malloc(size_t n) {
  if (oom_now()) return NULL;
  void *p = __real_malloc(n);
  track_add(p, n, CALLER);
  return p;
}

void *__wrap_calloc(size_t n, size_t size) {
  if (oom_now()) return NULL;
  void *p = __real_calloc(n, size);
  track_add(p, n * size, CALLER);
  return p;
}

void *__wrap_realloc(void *old, size_t n) {
  if (n && oom_now()) return NULL; /* old stays valid and tracked */
  void *p = __real_realloc(old, n);
  if (p || !n) track_del(old);
  track_add(p, n, CALLER);
  return p;
}

void __wrap_free(void *p) {
  track_del(p);
  __real_free(p);
}

char *__wrap_strdup(const char *s) {
  if (oom_now()) return NULL;
  char *p = __real_strdup(s);
  track_add(p, p ? strlen(p) + 1 : 0, CALLER);
  return p;
}

char *__wrap_strndup(const char *s, size_t n) {
  if (oom_now()) return NULL;
  char *p = __real_strndup(s, n);
  track_add(p, p ? strlen(p) + 1 : 0, CALLER);
  return p;
}

char *__wrap_realpath(const char *path, char *resolved) {
  if (!resolved && oom_now()) return NULL;
  char *p = __real_realpath(path, resolved);
  if (!resolved) track_add(p, p ? strlen(p) + 1 : 0, CALLER);
  return p;
}

/* ---- power loss ----------------------------------------------------------- */

static atomic_int sync_skip;

void fsim_sync_skip(int on) {
  atomic_store(&sync_skip, on);
}

static pthread_mutex_t pl_mu = PTHREAD_MUTEX_INITIALIZER;
static int pl_on;
static char pl_root[PATH_MAX], pl_shadow[PATH_MAX];
static unsigned long pl_syncs, pl_crash_at;

static _Noreturn void die(const char *what, const char *path) {
  fprintf(stderr, "fault_sim: %s %s: %s\n", what, path, strerror(errno));
  abort();
}

/* An inode's identity, "<ino>-<birth sec>.<birth nsec>", and its type ('d',
 * 'f', or 0 for anything else). */
static char key_of(int dirfd, const char *name, int flags, char key[64]) {
  struct statx sx;
  if (statx(dirfd, name, flags | AT_SYMLINK_NOFOLLOW,
            STATX_TYPE | STATX_INO | STATX_BTIME, &sx))
    die("statx", name);
  long long bs = (sx.stx_mask & STATX_BTIME) ? (long long)sx.stx_btime.tv_sec : 0;
  unsigned bn = (sx.stx_mask & STATX_BTIME) ? sx.stx_btime.tv_nsec : 0;
  snprintf(key, 64, "%llu-%lld.%u", (unsigned long long)sx.stx_ino, bs, bn);
  return S_ISDIR(sx.stx_mode) ? 'd' : S_ISREG(sx.stx_mode) ? 'f' : 0;
}

static void shadow_path(const char *shadow, char kind, const char *key, char *out) {
  snprintf(out, PATH_MAX, "%s/%c-%s", shadow, kind, key);
}

static void write_file(const char *path, const void *buf, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("create", path);
  for (const char *p = buf; len;) {
    ssize_t n = write(fd, p, len);
    if (n <= 0) die("write", path);
    p += n;
    len -= (size_t)n;
  }
  close(fd);
}

/* The whole content of an open file, from offset 0; NULL if it is not
 * readable. *len its size. */
static uint8_t *read_fd(int fd, size_t *len) {
  size_t cap = 1 << 16, n = 0;
  uint8_t *b = malloc(cap);
  for (;;) {
    if (n == cap && !(b = realloc(b, cap *= 2))) die("realloc", "");
    ssize_t r = pread(fd, b + n, cap - n, (off_t)n);
    if (r < 0) die("read", "");
    if (r == 0) break;
    n += (size_t)r;
  }
  *len = n;
  return b;
}

static uint8_t *read_path(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  uint8_t *b = read_fd(fd, len);
  close(fd);
  return b;
}

/* Writes the entries of the open directory fd to `path`, one line each:
 * "<type> <key> <name>". */
static void write_listing(int fd, const char *path) {
  int d = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  DIR *dir = d >= 0 ? fdopendir(d) : NULL;
  if (!dir) die("opendir", "a directory being synced");
  FILE *out = fopen(path, "w");
  if (!out) die("create", path);
  struct dirent *e;
  while ((e = readdir(dir))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char k[64];
    char t = key_of(dirfd(dir), e->d_name, 0, k);
    if (t) fprintf(out, "%c %s %s\n", t, k, e->d_name);
  }
  fclose(out);
  closedir(dir);
}

/* Records the state of the open file or directory fd: a copy of a file's
 * bytes, a directory's entries as lines "<type> <key> <name>". */
static void record(int fd, const char *shadow) {
  char key[64], path[PATH_MAX];
  char type = key_of(fd, "", AT_EMPTY_PATH, key);
  if (type == 'f') {
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    size_t len;
    uint8_t *b = read_path(self, &len); /* the fd itself may be write-only */
    if (!b) die("reopen", self);
    shadow_path(shadow, 'f', key, path);
    write_file(path, b, len);
    free(b);
  } else if (type == 'd') {
    shadow_path(shadow, 'd', key, path);
    write_listing(fd, path);
  }
}

/* Calls fn(<path>/<name>, ctx) for each entry of directory path but . and ..
 * (the walks below recurse through it). */
static void each_entry(const char *path, void (*fn)(const char *, void *), void *ctx) {
  DIR *d = opendir(path);
  if (!d) die("opendir", path);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    fn(sub, ctx);
  }
  closedir(d);
}

static void snapshot_sub(const char *sub, void *shadow);
static void snapshot_tree(const char *path, const char *shadow) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) die("open", path);
  record(fd, shadow);
  struct stat st;
  fstat(fd, &st);
  close(fd);
  if (!S_ISDIR(st.st_mode)) return;
  each_entry(path, snapshot_sub, (void *)shadow);
}

static void snapshot_sub(const char *sub, void *shadow) {
  snapshot_tree(sub, shadow);
}

void fsim_pl_snapshot(const char *root, const char *shadow) {
  snapshot_tree(root, shadow);
}

void fsim_pl_record(const char *root, const char *shadow, unsigned long crash_at) {
  pthread_mutex_lock(&pl_mu);
  if (!realpath(root, pl_root)) die("realpath", root);
  snprintf(pl_shadow, sizeof pl_shadow, "%s", shadow);
  pl_syncs = 0;
  pl_crash_at = crash_at;
  pl_on = 1;
  pthread_mutex_unlock(&pl_mu);
}

unsigned long fsim_pl_syncs(void) {
  pthread_mutex_lock(&pl_mu);
  unsigned long n = pl_syncs;
  pthread_mutex_unlock(&pl_mu);
  return n;
}

/* Whether the open file fd lives under pl_root. */
static int under_root(int fd) {
  char self[64], path[PATH_MAX];
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(self, path, sizeof path - 1);
  if (n <= 0) return 0;
  path[n] = '\0';
  size_t r = strlen(pl_root);
  return !strncmp(path, pl_root, r) && (path[r] == '/' || path[r] == '\0');
}

/* A sync under recording: the crash, or the record of what it makes
 * durable. Serialised, so a crash never interrupts a record. */
static int pl_sync(int fd) {
  pthread_mutex_lock(&pl_mu);
  if (!under_root(fd)) {
    pthread_mutex_unlock(&pl_mu);
    return 0;
  }
  if (++pl_syncs == pl_crash_at) raise(SIGKILL);
  record(fd, pl_shadow);
  pthread_mutex_unlock(&pl_mu);
  return 0;
}

int __wrap_fsync(int fd) {
  if (atomic_load(&sync_skip)) return 0;
  if (pl_on) return pl_sync(fd);
  return __real_fsync(fd);
}

int __wrap_fdatasync(int fd) {
  if (atomic_load(&sync_skip)) return 0;
  if (pl_on) return pl_sync(fd);
  return __real_fdatasync(fd);
}

/* ---- restoring the tree a power loss leaves -------------------------------- */

/* The current tree: where each inode is now. */
typedef struct {
  char key[64];
  char type;
  char *path;
} node;
typedef struct {
  node *v;
  size_t n, cap;
} nodes;

static void scan_sub(const char *sub, void *cur);
static void scan_current(const char *path, nodes *cur) {
  char key[64];
  char type = key_of(AT_FDCWD, path, 0, key);
  if (!type) return;
  if (cur->n == cur->cap &&
      !(cur->v = realloc(cur->v, (cur->cap = cur->cap * 2 + 16) * sizeof *cur->v)))
    die("realloc", path);
  node *nd = &cur->v[cur->n++];
  snprintf(nd->key, sizeof nd->key, "%s", key);
  nd->type = type;
  nd->path = strdup(path);
  if (type != 'd') return;
  each_entry(path, scan_sub, cur);
}

static void scan_sub(const char *sub, void *cur) {
  scan_current(sub, cur);
}

static const node *find(const nodes *cur, const char *key, char type) {
  for (size_t i = 0; i < cur->n; i++)
    if (cur->v[i].type == type && !strcmp(cur->v[i].key, key)) return &cur->v[i];
  return NULL;
}

typedef struct {
  const char *shadow;
  const fsim_pl_policy *p;
  nodes cur;
  uint64_t rng;
} restorer;

static uint64_t next_rand(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static void restore_file(restorer *r, const char *key, const char *dst) {
  char sp[PATH_MAX];
  shadow_path(r->shadow, 'f', key, sp);
  size_t dlen = 0, clen = 0;
  uint8_t *dur = read_path(sp, &dlen);
  const node *now = find(&r->cur, key, 'f');
  uint8_t *cur = now ? read_path(now->path, &clen) : NULL;
  const uint8_t *out = NULL;
  size_t olen = 0;
  if (r->p->data == FSIM_DATA_DROP || !cur) {
    out = dur;
    olen = dlen;
  } else {
    if (r->p->data == FSIM_DATA_GARBLE)
      for (size_t i = 0; i < clen; i++)
        if (!dur || i >= dlen || dur[i] != cur[i]) cur[i] = (uint8_t)next_rand(&r->rng);
    out = cur;
    olen = clen;
  }
  write_file(dst, out ? out : (const uint8_t *)"", olen);
  free(dur);
  free(cur);
}

/* Whether the unsynced entries of directory `key` survive. */
static int keep_names(restorer *r, const char *key) {
  if (r->p->names != FSIM_NAMES_MIXED) return r->p->names == FSIM_NAMES_KEEP;
  uint64_t h = r->p->seed;
  for (const char *c = key; *c; c++) h = (h ^ (uint8_t)*c) * 0x100000001b3ULL;
  return next_rand(&h) & 1;
}

static void restore_dir(restorer *r, const char *key, const char *dst, int depth) {
  if (depth > 32) die("too deep", dst);
  if (mkdir(dst, 0755)) die("mkdir", dst);
  char sp[PATH_MAX];
  shadow_path(r->shadow, 'd', key, sp);
  const node *now = find(&r->cur, key, 'd');
  char now_listing[PATH_MAX];
  int use_now = now && keep_names(r, key);
  if (use_now) { /* the entries it holds now, in a scratch file */
    snprintf(now_listing, sizeof now_listing, "%s/.now.%d", r->shadow, depth);
    int fd = open(now->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) die("open", now->path);
    write_listing(fd, now_listing);
    close(fd);
  }
  FILE *f = fopen(use_now ? now_listing : sp, "r");
  char line[PATH_MAX + 128];
  while (f && fgets(line, sizeof line, f)) {
    char type, k[64], name[PATH_MAX];
    line[strcspn(line, "\n")] = '\0';
    if (sscanf(line, "%c %63s", &type, k) != 2) die("bad listing", sp);
    snprintf(name, sizeof name, "%s", line + 3 + strlen(k));
    char sub[PATH_MAX];
    if (snprintf(sub, sizeof sub, "%s/%s", dst, name) >= (int)sizeof sub)
      die("path too long", dst);
    if (type == 'd')
      restore_dir(r, k, sub, depth + 1);
    else
      restore_file(r, k, sub);
  }
  if (f) fclose(f);
  if (use_now) unlink(now_listing);
}

void fsim_pl_restore(const char *root, const char *shadow, const char *out,
                     const fsim_pl_policy *p) {
  restorer r = {.shadow = shadow, .p = p, .rng = p->seed * 0x2545F4914F6CDD1DULL + 1};
  scan_current(root, &r.cur);
  char key[64];
  if (key_of(AT_FDCWD, root, 0, key) != 'd') die("not a directory", root);
  restore_dir(&r, key, out, 0);
  for (size_t i = 0; i < r.cur.n; i++) free(r.cur.v[i].path);
  free(r.cur.v);
}
