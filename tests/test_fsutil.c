/* test_fsutil.c - the file-system helpers: inputs are regular files opened
 * without blocking, whole-file reads are bounded, mkdir -p creates what is
 * missing and refuses a file in the way, and a put-if-absent publish never
 * replaces. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/base/fsutil.h"
#include "tests/testutil.h"

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void test_an_input_must_be_a_regular_file_and_a_fifo_never_blocks(void **state) {
  const char *dir = tu_tmpdir("fs_input");
  char fifo[4096], file[4096];
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  snprintf(file, sizeof file, "%s/file", dir);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  tu_write_file(file, "abc", 3);
  int fd = -1;
  sf_err err = {0};
  double t0 = now_s(); /* no writer ever opens the FIFO: a blocking open never returns */
  assert_int_equal(sf_fs_open_input(fifo, &fd, NULL, &err), SF_EINVAL);
  assert_true(now_s() - t0 < 5);
  assert_int_equal(fd, -1);
  assert_non_null(strstr(err.msg, "fifo is a FIFO, not a regular file"));
  assert_int_equal(sf_fs_open_input("/dev/zero", &fd, NULL, &err), SF_EINVAL);
  assert_string_equal(err.msg, "/dev/zero is a character device, not a regular file");
  assert_int_equal(sf_fs_open_input(dir, &fd, NULL, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "is a directory, not a regular file"));
  assert_int_equal(sf_fs_open_input(tu_path(dir, "none"), &fd, NULL, &err), SF_ENOTFOUND);
  assert_non_null(strstr(err.msg, "No such file or directory"));
  struct stat st;
  assert_int_equal(sf_fs_open_input(file, &fd, &st, &err), SF_OK);
  assert_int_equal(st.st_size, 3);
  assert_int_equal(fcntl(fd, F_GETFL) & O_NONBLOCK, 0); /* an ordinary descriptor */
  close(fd);
  FILE *f = NULL;
  assert_int_equal(sf_fs_fopen_input(fifo, &f, NULL, &err), SF_EINVAL);
  assert_null(f);
  assert_int_equal(sf_fs_fopen_input(file, &f, NULL, &err), SF_OK);
  char buf[4] = {0};
  assert_int_equal(fread(buf, 1, 3, f), 3);
  assert_string_equal(buf, "abc");
  fclose(f);
}

static void test_a_whole_file_read_is_bounded_before_allocating(void **state) {
  const char *dir = tu_tmpdir("fs_read");
  char small[4096], huge[4096];
  snprintf(small, sizeof small, "%s/small", dir);
  snprintf(huge, sizeof huge, "%s/huge", dir);
  tu_write_file(small, "0123456789", 10);
  int fd = open(huge, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 1LL << 40), 0); /* sparse: a terabyte of nothing */
  close(fd);
  char *buf = NULL;
  size_t n = 0;
  sf_err err = {0};
  assert_int_equal(sf_fs_read_input(small, 10, &buf, &n, &err), SF_OK);
  assert_int_equal(n, 10);
  assert_string_equal(buf, "0123456789"); /* NUL-terminated */
  free(buf);
  assert_int_equal(sf_fs_read_input(small, 9, &buf, &n, &err), SF_ELIMIT);
  assert_null(buf);
  assert_non_null(strstr(err.msg, "small is 10 bytes long (at most 9)"));
  assert_int_equal(sf_fs_read_input(huge, 1 << 20, &buf, &n, &err), SF_ELIMIT);
  assert_non_null(strstr(err.msg, "huge is 1099511627776 bytes long (at most 1048576)"));
  assert_int_equal(sf_fs_read_input("/dev/zero", 1 << 20, &buf, &n, &err), SF_EINVAL);
}

static void test_mkdirs_creates_every_missing_level_and_refuses_a_file_in_the_way(
    void **state) {
  const char *dir = tu_tmpdir("fs_mkdirs");
  char p[4096];
  snprintf(p, sizeof p, "%s/a/b//c/", dir);
  sf_err err = {0};
  assert_int_equal(sf_fs_mkdirs(p, &err), SF_OK);
  struct stat st;
  assert_int_equal(stat(tu_path(dir, "a/b/c"), &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(sf_fs_mkdirs(p, &err), SF_OK); /* again: nothing to do */
  tu_write_file(tu_path(dir, "f"), "x", 1);
  snprintf(p, sizeof p, "%s/f/g", dir);
  assert_int_equal(sf_fs_mkdirs(p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "/f exists and is not a directory"));
}

static void test_commit_new_never_replaces_and_removes_its_temporary(void **state) {
  const char *dir = tu_tmpdir("fs_commit_new");
  char path[4096];
  snprintf(path, sizeof path, "%s/x", dir);
  sf_fs_tmpfile t;
  sf_err err = {0};
  assert_int_equal(sf_fs_tmpfile_open(&t, path, &err), SF_OK);
  assert_int_equal(sf_fs_write_all(t.fd, "mine", 4, "x", &err), SF_OK);
  tu_write_file(path, "theirs", 6);
  assert_int_equal(sf_fs_tmpfile_commit_new(&t, &err), SF_EEXIST);
  size_t n;
  uint8_t *got = tu_read_file(path, &n);
  assert_true(n == 6 && !memcmp(got, "theirs", 6));
  free(got);
  unlink(path);
  assert_int_equal(sf_fs_tmpfile_open(&t, path, &err), SF_OK);
  assert_int_equal(sf_fs_write_all(t.fd, "mine", 4, "x", &err), SF_OK);
  assert_int_equal(sf_fs_tmpfile_commit_new(&t, &err), SF_OK);
  got = tu_read_file(path, &n);
  assert_true(n == 4 && !memcmp(got, "mine", 4));
  free(got);
  /* Only x is left in the directory: no temporary of either attempt. */
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "test \"$(ls -A '%s')\" = x", dir);
  assert_int_equal(system(cmd), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_an_input_must_be_a_regular_file_and_a_fifo_never_blocks),
      cmocka_unit_test(test_a_whole_file_read_is_bounded_before_allocating),
      cmocka_unit_test(
          test_mkdirs_creates_every_missing_level_and_refuses_a_file_in_the_way),
      cmocka_unit_test(test_commit_new_never_replaces_and_removes_its_temporary),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
