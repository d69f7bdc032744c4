/*
 * fsutil.h - the few file-system operations whose order makes segforge crash
 * safe (after LMDB: data first, fsync, then the single step that makes it
 * visible), plus read-only mapping of files.
 */
#ifndef SF_FSUTIL_H
#define SF_FSUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/base/error.h"

/* mkdir -p. Each directory it creates is made durable (its parent is
 * fsynced), so a file renamed into it later survives a crash with its path.
 * SF_EINVAL when a component exists and is not a directory. */
sf_code sf_fs_mkdirs(const char *path, sf_err *err);

/* mkdir -p of "<base>/<rel>" whose result survives a power cut: for each
 * directory from base down to the last, the directory holding its name is
 * fsynced, whether this call created it or an earlier run did and crashed
 * before making it durable. base itself must exist. */
sf_code sf_fs_mkdirs_durable(const char *base, const char *rel, sf_err *err);

/* fsyncs a directory so that a rename or link inside it is durable. */
sf_code sf_fs_fsync_dir(const char *dir, sf_err *err);

/* Writes buf to `path` atomically: a temporary file in the same directory,
 * fsync, rename over path, fsync of the directory. */
sf_code sf_fs_write_atomic(const char *path, const void *buf, size_t len, sf_err *err);

/* The inode number of this process's pid namespace (1 if unknown): with
 * the pid it names a writer uniquely on a host shared by containers. */
uint64_t sf_fs_pidns(void);

/* A writer that publishes its file only on commit: open creates
 * "<path>.tmp.<pid>.<pidns>.<n>.<random>" with O_EXCL; commit fsyncs, renames to path and
 * fsyncs the directory; abort (or free without commit) unlinks the temporary. */
typedef struct sf_fs_tmpfile {
  int fd;
  char *path;     /* final name */
  char *tmp_path; /* temporary name */
} sf_fs_tmpfile;

sf_code sf_fs_tmpfile_open(sf_fs_tmpfile *t, const char *path, sf_err *err);
/* Writes all of buf (retrying short writes: the retry of a write cut short
 * by a full disk reports ENOSPC). Errors name `what` and the errno text. */
sf_code sf_fs_write_all(int fd, const void *buf, size_t len, const char *what,
                        sf_err *err);
/* The same at offset off (pwrite). */
sf_code sf_fs_pwrite_all(int fd, const void *buf, size_t len, uint64_t off,
                         const char *what, sf_err *err);
sf_code sf_fs_tmpfile_commit(sf_fs_tmpfile *t, sf_err *err);
/* Like commit, but never replaces: when path exists already (a writer of
 * the same name won a race) it fails with SF_EEXIST and removes only the
 * temporary. */
sf_code sf_fs_tmpfile_commit_new(sf_fs_tmpfile *t, sf_err *err);
void sf_fs_tmpfile_abort(sf_fs_tmpfile *t);

/* Opening what segforge reads by name. Every such input (vector files,
 * shards, segments, quantizers, catalog versions, configuration files, the
 * lists given to commit, schemas) must be a regular file: a FIFO blocks an
 * open until a writer appears and a device such as /dev/zero never ends.
 * sf_fs_open_input opens with O_NONBLOCK (a FIFO returns at once), checks
 * the descriptor it opened with fstat (nothing can be swapped in between),
 * refuses anything but a regular file with SF_EINVAL ("<path> is a FIFO, not
 * a regular file"), then clears O_NONBLOCK. A missing file is SF_ENOTFOUND.
 * *fd is the caller's to close; st (may be NULL) receives the file's stat
 * (zeroed on failure). */
sf_code sf_fs_open_input(const char *path, int *fd, struct stat *st, sf_err *err);
/* The same as a stdio stream, which the caller fcloses. */
sf_code sf_fs_fopen_input(const char *path, FILE **f, struct stat *st, sf_err *err);
/* Reads a whole input file of at most max bytes into a malloc'd buffer with
 * a NUL after its last byte (*buf, caller frees; *len excludes the NUL).
 * A larger file is SF_ELIMIT naming it and the limit, found from its size
 * before anything is allocated, and bounded again while reading (a file
 * that grows meanwhile). */
sf_code sf_fs_read_input(const char *path, size_t max, char **buf, size_t *len,
                         sf_err *err);

/* A read-only mapping of a whole file (an input: see sf_fs_open_input). An empty file
 * maps to data == NULL, size == 0. */
typedef struct sf_fs_map {
  const uint8_t *data;
  size_t size;
} sf_fs_map;

sf_code sf_fs_map_open(const char *path, sf_fs_map *m, sf_err *err);
void sf_fs_map_close(sf_fs_map *m);

/* The directory part of path in a malloc'd string ("." if none). */
char *sf_fs_dirname(const char *path);
/* "<a>/<b>" in a malloc'd string; NULL on allocation failure. */
char *sf_fs_join(const char *a, const char *b);

#endif
