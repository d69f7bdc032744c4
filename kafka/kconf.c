/*
 * kconf.c - Kafka client configuration as ordered string properties.
 *
 * librdkafka's keys are checked when they are set by applying them to a
 * scratch rd_kafka_conf_t kept in the object: that is the only complete
 * authority on what librdkafka accepts (its property table is private), and
 * it lets a file's error name its line. sf_kconf_build then applies the
 * same properties, in the same order, to a fresh conf, so that what is
 * built never depends on the scratch conf's history (a replaced value is
 * applied once, with its last value).
 */
#include "kafka/kconf.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fsutil.h"
#include "schemas/event.h"
#include "schemas/schema.h"

struct sf_kconf {
  char **keys, **vals; /* n owned strings each, in order of first setting */
  size_t n, cap;
  sf_kconf_log_fn log;
  rd_kafka_conf_t *check; /* scratch conf: librdkafka's verdict on each key */
};

#define SF_PREFIX "segforge."

sf_kconf *sf_kconf_new(void) {
  sf_kconf *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  k->check = rd_kafka_conf_new();
  if (!k->check) {
    free(k);
    return NULL;
  }
  return k;
}

void sf_kconf_free(sf_kconf *k) {
  if (!k) return;
  for (size_t i = 0; i < k->n; i++) {
    free(k->keys[i]);
    free(k->vals[i]);
  }
  free(k->keys);
  free(k->vals);
  if (k->check) rd_kafka_conf_destroy(k->check);
  free(k);
}

static bool is_own_key(const char *key) {
  return !strncmp(key, SF_PREFIX, strlen(SF_PREFIX));
}

static ssize_t find(const sf_kconf *k, const char *key) {
  for (size_t i = 0; i < k->n; i++)
    if (!strcmp(k->keys[i], key)) return (ssize_t)i;
  return -1;
}

/* Appends or replaces without any check (callers checked). */
static sf_code store(sf_kconf *k, const char *key, const char *value, sf_err *err) {
  char *v = strdup(value);
  if (!v) return sf_err_set(err, SF_ENOMEM, "out of memory");
  ssize_t at = find(k, key);
  if (at >= 0) {
    free(k->vals[at]);
    k->vals[at] = v;
    return SF_OK;
  }
  if (k->n == k->cap) {
    size_t cap = k->cap ? 2 * k->cap : 16;
    char **nk = realloc(k->keys, cap * sizeof *nk);
    if (nk) k->keys = nk;
    char **nv = nk ? realloc(k->vals, cap * sizeof *nv) : NULL;
    if (nv) k->vals = nv;
    if (!nk || !nv) {
      free(v);
      return sf_err_set(err, SF_ENOMEM, "out of memory");
    }
    k->cap = cap;
  }
  char *kk = strdup(key);
  if (!kk) {
    free(v);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  k->keys[k->n] = kk;
  k->vals[k->n] = v;
  k->n++;
  return SF_OK;
}

sf_kconf *sf_kconf_dup(const sf_kconf *k) {
  sf_kconf *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->log = k->log;
  d->check = rd_kafka_conf_dup(k->check);
  if (!d->check) goto fail;
  for (size_t i = 0; i < k->n; i++)
    if (store(d, k->keys[i], k->vals[i], NULL)) goto fail;
  return d;
fail:
  sf_kconf_free(d);
  return NULL;
}

/* Kafka's own rule for topic names: 1..249 of [A-Za-z0-9._-], not . or .. */
/* How many of the n bytes of s, from the start, are letters, digits, '.',
 * '_' or '-': the alphabet of both topic and property names. */
static size_t name_span(const char *s, size_t n) {
  size_t i = 0;
  while (i < n && (isalnum((unsigned char)s[i]) || (s[i] && strchr("._-", s[i])))) i++;
  return i;
}

static sf_code check_topic(const char *key, const char *v, sf_err *err) {
  size_t n = strlen(v);
  if (n > 249 || !strcmp(v, ".") || !strcmp(v, ".."))
    return sf_err_set(
        err, SF_EINVAL,
        "%s: '%s' is not a Kafka topic name (1..249 characters, not . or ..)", key, v);
  size_t i = name_span(v, n);
  if (i < n)
    return sf_err_set(err, SF_EINVAL,
                      "%s: topic name '%s' has '%c'; Kafka allows only letters, digits, "
                      "'.', '_' and '-'",
                      key, v, v[i]);
  return SF_OK;
}

static sf_code parse_ms(const char *key, const char *v, long *out, sf_err *err) {
  char *end;
  errno = 0;
  long ms = strtol(v, &end, 10);
  if (errno || end == v || *end || ms < 1 || ms > INT_MAX)
    return sf_err_set(err, SF_EINVAL, "%s: '%s' is not a number of milliseconds (1..%d)",
                      key, v, INT_MAX);
  if (out) *out = ms;
  return SF_OK;
}

/* "Type=id[,Type=id...]": the names and ids are checked here; the ids are
 * mapped by whoever builds a schema set (sf_schema_set_parse_id). */
static sf_code check_schema_ids(const char *key, const char *v, sf_err *err) {
  const char *p = v;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    char item[128];
    if (len == 0 || len >= sizeof item)
      return sf_err_set(err, SF_EINVAL, "%s: expected Type=id[,Type=id...], got '%s'",
                        key, v);
    memcpy(item, p, len);
    item[len] = '\0';
    char *eq = strchr(item, '=');
    if (!eq)
      return sf_err_set(err, SF_EINVAL,
                        "%s: '%s' has no '=' (expected e.g. ShardStaged=17)", key, item);
    *eq = '\0';
    sf_event_type t;
    sf_err e2 = {0};
    if (sf_event_type_parse(item, &t, &e2))
      return sf_err_set(err, SF_EINVAL, "%s: %s", key, e2.msg);
    char *end;
    errno = 0;
    long long id = strtoll(eq + 1, &end, 10);
    if (errno || end == eq + 1 || *end || id < 0 || id > INT32_MAX)
      return sf_err_set(err, SF_EINVAL, "%s: schema id '%s' is not a number in 0..%d",
                        key, eq + 1, INT32_MAX);
    if (!comma) return SF_OK;
    p = comma + 1;
  }
}

/* "DIR[,DIR]...", each absolute and non-empty. */
static sf_code check_roots(const char *key, const char *v, sf_err *err) {
  for (const char *p = v;;) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    if (n == 0 || *p != '/')
      return sf_err_set(err, SF_EINVAL,
                        "%s: '%s' is not a comma-separated list of absolute directories "
                        "(e.g. /data/a,/data/b)",
                        key, v);
    if (!comma) return SF_OK;
    p = comma + 1;
  }
}

static sf_code check_own(const char *key, const char *v, sf_err *err) {
  if (!strcmp(key, SF_KCONF_TOPIC_STAGED) || !strcmp(key, SF_KCONF_TOPIC_COMMITTED) ||
      !strcmp(key, SF_KCONF_TOPIC_REJECTED) || !strcmp(key, SF_KCONF_TOPIC_COMPACTED))
    return check_topic(key, v, err);
  if (!strcmp(key, SF_KCONF_FRAMING)) {
    sf_framing f;
    sf_err e2 = {0};
    if (sf_framing_parse(v, &f, &e2))
      return sf_err_set(err, SF_EINVAL, "%s: %s", key, e2.msg);
    return SF_OK;
  }
  if (!strcmp(key, SF_KCONF_SCHEMA_IDS)) return check_schema_ids(key, v, err);
  if (!strcmp(key, SF_KCONF_DELIVERY_TIMEOUT_MS)) return parse_ms(key, v, NULL, err);
  if (!strcmp(key, SF_KCONF_DATASET_ROOTS)) return check_roots(key, v, err);
  return sf_err_set(
      err, SF_EINVAL,
      "unknown segforge property '%s' (known: %s, %s, %s, %s, %s, %s, %s, %s)", key,
      SF_KCONF_TOPIC_STAGED, SF_KCONF_TOPIC_COMMITTED, SF_KCONF_TOPIC_REJECTED,
      SF_KCONF_TOPIC_COMPACTED, SF_KCONF_FRAMING, SF_KCONF_SCHEMA_IDS,
      SF_KCONF_DELIVERY_TIMEOUT_MS, SF_KCONF_DATASET_ROOTS);
}

sf_code sf_kconf_set(sf_kconf *k, const char *key, const char *value, sf_err *err) {
  if (!key || !*key) return sf_err_set(err, SF_EINVAL, "empty property name");
  size_t kl = strlen(key);
  if (kl > SF_KCONF_KEY_MAX)
    return sf_err_set(err, SF_EINVAL, "property name of %zu bytes (at most %d)", kl,
                      SF_KCONF_KEY_MAX);
  /* librdkafka's names are lower-case words with '.' and '_'; anything else
   * (a space, a quote) is a typo, reported before librdkafka's more
   * general "No such configuration property". */
  size_t i = name_span(key, kl);
  if (i < kl)
    return sf_err_set(err, SF_EINVAL,
                      "property name '%.64s' has '%c'; names are letters, digits, '.', "
                      "'_' and '-'",
                      key, isprint((unsigned char)key[i]) ? key[i] : '?');
  if (!value || !*value)
    return sf_err_set(err, SF_EINVAL,
                      "%s: empty value (leave the property out to keep its default)",
                      key);
  size_t vl = strlen(value);
  if (vl > SF_KCONF_VALUE_MAX)
    return sf_err_set(err, SF_EINVAL, "%s: value of %zu bytes (at most %d)", key, vl,
                      SF_KCONF_VALUE_MAX);
  if (is_own_key(key)) {
    sf_code rc = check_own(key, value, err);
    if (rc) return rc;
  } else {
    char es[512];
    rd_kafka_conf_res_t r = rd_kafka_conf_set(k->check, key, value, es, sizeof es);
    if (r != RD_KAFKA_CONF_OK) return sf_err_set(err, SF_EINVAL, "%s: %s", key, es);
  }
  return store(k, key, value, err);
}

sf_code sf_kconf_parse_arg(sf_kconf *k, const char *arg, sf_err *err) {
  const char *eq = arg ? strchr(arg, '=') : NULL;
  if (!eq)
    return sf_err_set(err, SF_EINVAL,
                      "-X '%.128s': expected key=value (e.g. -X acks=all)",
                      arg ? arg : "");
  size_t kl = (size_t)(eq - arg);
  if (kl == 0 || kl > SF_KCONF_KEY_MAX)
    return sf_err_set(err, SF_EINVAL,
                      "-X '%.128s': expected key=value (e.g. -X acks=all)", arg);
  char key[SF_KCONF_KEY_MAX + 1];
  memcpy(key, arg, kl);
  key[kl] = '\0';
  sf_code rc = sf_kconf_set(k, key, eq + 1, err);
  if (rc) sf_err_prefix(err, "-X");
  return rc;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t') s++;
  size_t n = strlen(s);
  while (n &&
         (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
    s[--n] = '\0';
  return s;
}

sf_code sf_kconf_load_file(sf_kconf *k, const char *path, sf_err *err) {
  /* Bounded before anything is allocated: a regular file (a FIFO would block,
   * /dev/zero never ends) of at most SF_KCONF_FILE_MAX bytes, read whole. */
  char *text;
  size_t len;
  sf_code rc = sf_fs_read_input(path, SF_KCONF_FILE_MAX, &text, &len, err);
  if (rc) {
    sf_err_prefix(err, "configuration file");
    return rc;
  }
  unsigned long lineno = 0;
  for (size_t at = 0; !rc && at < len;) {
    char *line = text + at, *nl = memchr(line, '\n', len - at);
    size_t n = nl ? (size_t)(nl - line) + 1 : len - at;
    at += n;
    lineno++;
    if (n > SF_KCONF_LINE_MAX) {
      rc = sf_err_set(err, SF_EINVAL, "%s:%lu: line of %zu bytes (at most %d)", path,
                      lineno, n, SF_KCONF_LINE_MAX);
      break;
    }
    if (memchr(line, '\0', n)) {
      rc = sf_err_set(err, SF_EINVAL, "%s:%lu: NUL byte (is this a text file?)", path,
                      lineno);
      break;
    }
    line[n - (nl != NULL)] = '\0'; /* text[len] is a NUL already */
    char *s = trim(line);
    if (!*s || *s == '#') continue;
    char *eq = strchr(s, '=');
    if (!eq) {
      rc = sf_err_set(err, SF_EINVAL, "%s:%lu: expected key=value, got '%.80s'", path,
                      lineno, s);
      break;
    }
    *eq = '\0';
    char *key = trim(s), *val = trim(eq + 1);
    if (!*key) {
      rc = sf_err_set(err, SF_EINVAL, "%s:%lu: missing property name before '='", path,
                      lineno);
      break;
    }
    if ((rc = sf_kconf_set(k, key, val, err))) sf_err_prefix(err, "%s:%lu", path, lineno);
  }
  free(text);
  return rc;
}

const char *sf_kconf_get(const sf_kconf *k, const char *key) {
  ssize_t at = find(k, key);
  return at >= 0 ? k->vals[at] : NULL;
}

const char *sf_kconf_get_or(const sf_kconf *k, const char *key, const char *def) {
  const char *v = sf_kconf_get(k, key);
  return v ? v : def;
}

bool sf_kconf_has(const sf_kconf *k, const char *key) {
  return find(k, key) >= 0;
}

size_t sf_kconf_count(const sf_kconf *k) {
  return k->n;
}

void sf_kconf_at(const sf_kconf *k, size_t i, const char **key, const char **value) {
  if (key) *key = i < k->n ? k->keys[i] : NULL;
  if (value) *value = i < k->n ? k->vals[i] : NULL;
}

void sf_kconf_set_logger(sf_kconf *k, sf_kconf_log_fn fn) {
  k->log = fn;
}

int sf_kconf_get_ms(const sf_kconf *k, const char *key, int def) {
  const char *v = sf_kconf_get(k, key);
  long ms = def; /* set on success; -O3 cannot tell */
  if (!v || parse_ms(key, v, &ms, NULL)) return def;
  return (int)ms;
}

/* Installed when no logger was given: librdkafka would otherwise print to
 * stderr itself, and libraries never print. */
static void drop_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {}

rd_kafka_conf_t *sf_kconf_build(const sf_kconf *k, char *errstr, size_t n) {
  rd_kafka_conf_t *c = rd_kafka_conf_new();
  if (!c) {
    snprintf(errstr, n, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < k->n; i++) {
    if (is_own_key(k->keys[i])) continue;
    char es[512];
    if (rd_kafka_conf_set(c, k->keys[i], k->vals[i], es, sizeof es) != RD_KAFKA_CONF_OK) {
      snprintf(errstr, n, "%s: %s", k->keys[i], es);
      rd_kafka_conf_destroy(c);
      return NULL;
    }
  }
  rd_kafka_conf_set_log_cb(c, k->log ? k->log : drop_log);
  return c;
}

sf_code sf_kconf_build_err(const sf_kconf *k, rd_kafka_conf_t **out, sf_err *err) {
  char es[512];
  *out = sf_kconf_build(k, es, sizeof es);
  if (!*out)
    return sf_err_set(err, strcmp(es, "out of memory") ? SF_EINVAL : SF_ENOMEM, "%s", es);
  return SF_OK;
}
