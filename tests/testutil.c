/* testutil.c - see testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void die(const char *what, const char *path) {
  fprintf(stderr, "testutil: %s %s: %s\n", what, path, strerror(errno));
  abort();
}

const char *tu_tmpdir(const char *tag) {
  static char buf[4096];
  const char *root = getenv("SF_TEST_TMP");
  if (!root || !*root) root = "/tmp";
  mkdir(root, 0755);
  snprintf(buf, sizeof buf, "%s/%s.%ld.XXXXXX", root, tag, (long)getpid());
  if (!mkdtemp(buf)) die("mkdtemp", buf);
  return buf;
}

const char *tu_path(const char *dir, const char *name) {
  static char slots[8][4096];
  static int next;
  char *b = slots[next++ & 7];
  snprintf(b, 4096, "%s/%s", dir, name);
  return b;
}

uint8_t *tu_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die("open", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
  if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) die("read", path);
  fclose(f);
  *len = (size_t)n;
  return b;
}

void tu_write_file(const char *path, const void *buf, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(buf, 1, len, f) != len || fclose(f)) die("write", path);
}

void tu_flip_byte(const char *path, size_t offset, uint8_t mask) {
  size_t n;
  uint8_t *b = tu_read_file(path, &n);
  if (offset < n) b[offset] ^= mask;
  tu_write_file(path, b, n);
  free(b);
}

void tu_truncate(const char *path, size_t len) {
  if (truncate(path, (off_t)len)) die("truncate", path);
}

size_t tu_count_entries(const char *dir, const char *needle, int may_be_missing) {
  DIR *d = opendir(dir);
  if (!d) {
    if (may_be_missing && errno == ENOENT) return 0;
    die("opendir", dir);
  }
  size_t n = 0;
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.' && (!needle || strstr(e->d_name, needle));
  closedir(d);
  return n;
}

void tu_mkdirs(const char *base, const char *rel) {
  char p[4300];
  snprintf(p, sizeof p, "%s/%s", base, rel);
  for (char *s = p + strlen(base) + 1; (s = strchr(s, '/')); s++) {
    *s = '\0';
    mkdir(p, 0755);
    *s = '/';
  }
  mkdir(p, 0755);
}
