/*
 * test_kconf.c - Kafka client configuration: properties from -X arguments
 * and files, checked when set with errors that name their origin;
 * segforge's own keys kept apart from librdkafka's; the built conf carries
 * exactly librdkafka's keys; librdkafka prints nothing unless a logger is
 * given.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
/* clang-format on */

#include "kafka/kconf.h"
#include "tests/testutil.h"

static const char *write_conf(const char *name, const char *text) {
  const char *dir = tu_tmpdir("kconf");
  static char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  tu_write_file(path, text, strlen(text));
  return path;
}

static void set_replaces_in_place_and_keeps_first_order(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  assert_int_equal(sf_kconf_set(k, "bootstrap.servers", "a:1", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "client.id", "x", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "bootstrap.servers", "b:2", &err), SF_OK);
  assert_int_equal(sf_kconf_count(k), 2);
  const char *key, *val;
  sf_kconf_at(k, 0, &key, &val);
  assert_string_equal(key, "bootstrap.servers");
  assert_string_equal(val, "b:2");
  assert_string_equal(sf_kconf_get(k, "client.id"), "x");
  assert_null(sf_kconf_get(k, "acks"));
  assert_string_equal(sf_kconf_get_or(k, "acks", "all"), "all");
  assert_true(sf_kconf_has(k, "client.id"));
  sf_kconf *d = sf_kconf_dup(k);
  assert_int_equal(sf_kconf_set(d, "client.id", "y", &err), SF_OK);
  assert_string_equal(sf_kconf_get(k, "client.id"), "x"); /* a deep copy */
  sf_kconf_free(d);
  sf_kconf_free(k);
  sf_kconf_free(NULL);
}

static void librdkafka_rejects_unknown_keys_and_bad_values_naming_the_key(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  assert_int_equal(sf_kconf_set(k, "bootstrap.server", "a:1", &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "bootstrap.server"));
  assert_non_null(strstr(err.msg, "No such configuration property"));
  assert_int_equal(sf_kconf_set(k, "acks", "banana", &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "acks"));
  assert_int_equal(sf_kconf_set(k, "linger.ms", "-5", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, "client id", "x", &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "' '"));
  assert_int_equal(sf_kconf_set(k, "client.id", "", &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "empty value"));
  assert_int_equal(sf_kconf_count(k), 0); /* nothing was kept */
  /* Topic-level properties go to the default topic configuration. */
  assert_int_equal(sf_kconf_set(k, "message.timeout.ms", "5000", &err), SF_OK);
  sf_kconf_free(k);
}

static void segforge_keys_are_checked_by_segforge(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  assert_int_equal(sf_kconf_set(k, SF_KCONF_TOPIC_STAGED, "my.staged-1", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_TOPIC_COMMITTED, "bad topic", &err),
                   SF_EINVAL);
  assert_non_null(strstr(err.msg, SF_KCONF_TOPIC_COMMITTED));
  assert_int_equal(sf_kconf_set(k, SF_KCONF_TOPIC_REJECTED, "..", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_FRAMING, "confluent", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_FRAMING, "xml", &err), SF_EINVAL);
  assert_string_equal(sf_kconf_get(k, SF_KCONF_FRAMING), "confluent");
  assert_int_equal(
      sf_kconf_set(k, SF_KCONF_SCHEMA_IDS, "ShardStaged=17,SegmentsCommitted=18", &err),
      SF_OK);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_SCHEMA_IDS, "ShardStaged", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_SCHEMA_IDS, "Nope=1", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_SCHEMA_IDS, "ShardStaged=-1", &err),
                   SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_SCHEMA_IDS, "ShardStaged=1,", &err),
                   SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_DELIVERY_TIMEOUT_MS, "2500", &err), SF_OK);
  assert_int_equal(sf_kconf_get_ms(k, SF_KCONF_DELIVERY_TIMEOUT_MS, 1), 2500);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_DELIVERY_TIMEOUT_MS, "0", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_DELIVERY_TIMEOUT_MS, "10s", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_set(k, "segforge.topics.staged", "x", &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "unknown segforge property"));
  assert_non_null(strstr(err.msg, SF_KCONF_TOPIC_STAGED)); /* lists the known keys */
  sf_kconf_free(k);
}

static void x_arguments_split_at_the_first_equals_sign(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  assert_int_equal(sf_kconf_parse_arg(k, "sasl.username=a=b", &err), SF_OK);
  assert_string_equal(sf_kconf_get(k, "sasl.username"), "a=b");
  assert_int_equal(sf_kconf_parse_arg(k, "acks", &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "key=value"));
  assert_int_equal(sf_kconf_parse_arg(k, "=all", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_parse_arg(k, "acks=", &err), SF_EINVAL);
  assert_int_equal(sf_kconf_parse_arg(k, "nope.nope=1", &err), SF_EINVAL);
  assert_true(!strncmp(err.msg, "-X: nope.nope", 13));
  sf_kconf_free(k);
}

static void a_file_takes_comments_blanks_and_spaces_around_keys(void **state) {
  const char *path =
      write_conf("ok.conf",
                 "# a comment\n"
                 "\n"
                 "   bootstrap.servers = 127.0.0.1:9092  \r\n"
                 "\t# indented comment\n"
                 "client.id=segforge # not a comment: values are verbatim\n"
                 "segforge.topic.staged=staged.v2\n"
                 "linger.ms=7"); /* no final newline */
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  assert_int_equal(sf_kconf_load_file(k, path, &err), SF_OK);
  assert_int_equal(sf_kconf_count(k), 4);
  assert_string_equal(sf_kconf_get(k, "bootstrap.servers"), "127.0.0.1:9092");
  assert_string_equal(sf_kconf_get(k, "client.id"),
                      "segforge # not a comment: values are verbatim");
  assert_string_equal(sf_kconf_get(k, "linger.ms"), "7");
  sf_kconf_free(k);
}

static void file_errors_name_the_file_and_the_line(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  const char *p = write_conf("bad1.conf", "acks=all\n\nno equals sign here\n");
  assert_int_equal(sf_kconf_load_file(k, p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "bad1.conf:3:"));
  assert_string_equal(sf_kconf_get(k, "acks"), "all"); /* lines before stay set */
  p = write_conf("bad2.conf", "# x\nacks=banana\n");
  assert_int_equal(sf_kconf_load_file(k, p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "bad2.conf:2: acks:"));
  p = write_conf("bad3.conf", " = value\n");
  assert_int_equal(sf_kconf_load_file(k, p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "bad3.conf:1:"));
  p = write_conf("bad4.conf", "segforge.framing=json\n");
  assert_int_equal(sf_kconf_load_file(k, p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "bad4.conf:1: segforge.framing"));
  char nul[] = "acks=all\nclient.id=a\0b\n";
  const char *dir = tu_tmpdir("kconf-nul");
  tu_write_file(tu_path(dir, "nul.conf"), nul, sizeof nul - 1);
  assert_int_equal(sf_kconf_load_file(k, tu_path(dir, "nul.conf"), &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "nul.conf:2: NUL"));
  size_t big = SF_KCONF_LINE_MAX + 10;
  char *line = malloc(big + 1);
  memset(line, 'a', big);
  memcpy(line, "client.id=", 10);
  line[big] = '\0';
  p = write_conf("long.conf", line);
  free(line);
  assert_int_equal(sf_kconf_load_file(k, p, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "long.conf:1: line of"));
  assert_int_equal(sf_kconf_load_file(k, "/nonexistent/segforge.conf", &err),
                   SF_ENOTFOUND);
  assert_non_null(strstr(err.msg, "/nonexistent/segforge.conf"));
  sf_kconf_free(k);
}

/* A FIFO would block the open until a writer came, /dev/zero would be read
 * forever (getline grew one line without end): both are refused before any
 * byte is read, and so is a regular file beyond SF_KCONF_FILE_MAX. */
static void fifos_devices_and_huge_files_are_refused_before_reading(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  const char *dir = tu_tmpdir("kconf-bounds");
  char fifo[4096], huge[4096];
  snprintf(fifo, sizeof fifo, "%s/fifo.conf", dir);
  snprintf(huge, sizeof huge, "%s/huge.conf", dir);
  assert_int_equal(mkfifo(fifo, 0600), 0);
  assert_int_equal(sf_kconf_load_file(k, fifo, &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "fifo.conf is a FIFO, not a regular file"));
  assert_int_equal(sf_kconf_load_file(k, "/dev/zero", &err), SF_EINVAL);
  assert_non_null(strstr(err.msg, "/dev/zero is a character device, not a regular file"));
  int fd = open(huge, O_WRONLY | O_CREAT | O_TRUNC, 0600); /* sparse: 8 GiB of nothing */
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 8LL << 30), 0);
  close(fd);
  assert_int_equal(sf_kconf_load_file(k, huge, &err), SF_ELIMIT);
  assert_non_null(
      strstr(err.msg, "huge.conf is 8589934592 bytes long (at most 1048576)"));
  assert_int_equal(sf_kconf_count(k), 0);
  sf_kconf_free(k);
}

static void the_built_conf_has_librdkafkas_keys_only(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  assert_int_equal(sf_kconf_set(k, "client.id", "c1", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, SF_KCONF_TOPIC_STAGED, "t", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "client.id", "c2", &err), SF_OK);
  char es[512];
  rd_kafka_conf_t *c = sf_kconf_build(k, es, sizeof es);
  assert_non_null(c);
  char v[64];
  size_t n = sizeof v;
  assert_int_equal(rd_kafka_conf_get(c, "client.id", v, &n), RD_KAFKA_CONF_OK);
  assert_string_equal(v, "c2");
  n = sizeof v;
  assert_int_equal(rd_kafka_conf_get(c, SF_KCONF_TOPIC_STAGED, v, &n),
                   RD_KAFKA_CONF_UNKNOWN);
  rd_kafka_conf_destroy(c);
  assert_int_equal(sf_kconf_build_err(k, &c, &err), SF_OK);
  rd_kafka_conf_destroy(c);
  sf_kconf_free(k);
}

static int logged;
static void count_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
  __atomic_fetch_add(&logged, 1, __ATOMIC_RELAXED);
}

/* Runs a producer that logs (debug on, an unreachable broker) and returns
 * how many bytes it wrote to stderr. */
static long run_noisy_client(sf_kconf *k) {
  fflush(stderr);
  int saved = dup(2);
  const char *dir = tu_tmpdir("kconf-stderr");
  const char *path = tu_path(dir, "stderr");
  int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
  dup2(fd, 2);
  close(fd);
  char es[512];
  rd_kafka_conf_t *c = sf_kconf_build(k, es, sizeof es);
  assert_non_null(c);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, es, sizeof es);
  assert_non_null(rk);
  for (int i = 0; i < 5; i++) rd_kafka_poll(rk, 100);
  rd_kafka_destroy(rk);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  size_t len = 0;
  free(tu_read_file(path, &len));
  return (long)len;
}

static void librdkafka_prints_nothing_unless_a_logger_is_set(void **state) {
  sf_kconf *k = sf_kconf_new();
  sf_err err = {0};
  assert_int_equal(sf_kconf_set(k, "bootstrap.servers", "127.0.0.1:1", &err), SF_OK);
  assert_int_equal(sf_kconf_set(k, "debug", "broker,metadata", &err), SF_OK);
  assert_int_equal(run_noisy_client(k), 0);
  sf_kconf_set_logger(k, count_log);
  logged = 0;
  assert_int_equal(run_noisy_client(k), 0);
  assert_true(__atomic_load_n(&logged, __ATOMIC_RELAXED) > 0);
  sf_kconf_free(k);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(set_replaces_in_place_and_keeps_first_order),
      cmocka_unit_test(librdkafka_rejects_unknown_keys_and_bad_values_naming_the_key),
      cmocka_unit_test(segforge_keys_are_checked_by_segforge),
      cmocka_unit_test(x_arguments_split_at_the_first_equals_sign),
      cmocka_unit_test(a_file_takes_comments_blanks_and_spaces_around_keys),
      cmocka_unit_test(file_errors_name_the_file_and_the_line),
      cmocka_unit_test(fifos_devices_and_huge_files_are_refused_before_reading),
      cmocka_unit_test(the_built_conf_has_librdkafkas_keys_only),
      cmocka_unit_test(librdkafka_prints_nothing_unless_a_logger_is_set),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
