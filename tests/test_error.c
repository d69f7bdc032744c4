/* test_error.c - the error object: a failed system call is reported with the
 * system's reason, by every writer, whatever stream sits under it. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/base/error.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog_internal.h"

static void test_an_errno_is_named_by_its_text(void **state) {
  (void)state;
  sf_err err = {0};
  assert_int_equal(sf_err_errno(&err, SF_EIO, ENOSPC, "cannot write %s", "f"), SF_EIO);
  assert_int_equal(err.code, SF_EIO);
  assert_string_equal(err.msg, "cannot write f: No space left on device");
}

static void test_an_errno_of_zero_never_says_success(void **state) {
  (void)state;
  sf_err err = {0};
  sf_err_errno(&err, SF_EIO, 0, "cannot write %s", "f");
  assert_null(strstr(err.msg, "Success"));
  assert_string_equal(err.msg, "cannot write f: the system gave no error code");
}

static void test_write_all_to_a_full_device_names_no_space_left(void **state) {
  (void)state;
  int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (fd < 0) skip();
  sf_err err = {0};
  char buf[4096] = {0};
  assert_int_equal(sf_fs_write_all(fd, buf, sizeof buf, "the file", &err), SF_EIO);
  assert_string_equal(err.msg, "cannot write the file: No space left on device");
  assert_int_equal(sf_fs_pwrite_all(fd, buf, 16, 0, "the file", &err), SF_EIO);
  assert_non_null(strstr(err.msg, "No space left on device"));
  close(fd);
}

/* The catalog's Avro container went through avro-c's FILE* writer, which
 * keeps no errno: a full disk said "cannot write v...avro.tmp...: ". */
static void test_a_catalog_written_to_a_full_device_names_no_space_left(void **state) {
  (void)state;
  int fd = open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (fd < 0) skip();
  sf_catalog c = {.version = 1, .created_at_ms = 1};
  sf_err err = {0};
  assert_int_equal(sf_catalog_write_fd(&c, fd, "v1.avro.tmp", &err), SF_EIO);
  assert_string_equal(err.msg, "cannot write v1.avro.tmp: No space left on device");
  close(fd);
  /* Through stdio too (unbuffered, so the write fails in fwrite itself). */
  FILE *f = fopen("/dev/full", "wb");
  assert_non_null(f);
  setvbuf(f, NULL, _IONBF, 0);
  assert_int_equal(sf_catalog_write(&c, f, "v1.avro.tmp", &err), SF_EIO);
  assert_string_equal(err.msg, "cannot write v1.avro.tmp: No space left on device");
  fclose(f);
  /* The same bytes encode into memory. */
  uint8_t *buf = NULL;
  size_t n = 0;
  assert_int_equal(sf_catalog_encode(&c, "mem", &buf, &n, &err), SF_OK);
  assert_true(n > 4 && !memcmp(buf, "Obj\x01", 4));
  sf_catalog back = {0};
  assert_int_equal(sf_catalog_decode(buf, n, "mem", &back, &err), SF_OK);
  assert_int_equal(back.version, 1);
  sf_catalog_clear(&back);
  free(buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_an_errno_is_named_by_its_text),
      cmocka_unit_test(test_an_errno_of_zero_never_says_success),
      cmocka_unit_test(test_write_all_to_a_full_device_names_no_space_left),
      cmocka_unit_test(test_a_catalog_written_to_a_full_device_names_no_space_left),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
