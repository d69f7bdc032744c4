/* api_options.c - sf_options, string properties read by the API's
 * functions, and the typed readers those functions share. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api_internal.h"
#include "core/base/fragset.h"

#define MAX_KEY 128u

struct sf_options {
  char **keys, **values;
  size_t n, cap;
};

sf_options *sf_options_new(void) {
  return calloc(1, sizeof(sf_options));
}

void sf_options_free(sf_options *o) {
  if (!o) return;
  for (size_t i = 0; i < o->n; i++) {
    free(o->keys[i]);
    free(o->values[i]);
  }
  free(o->keys);
  free(o->values);
  free(o);
}

static size_t find(const sf_options *o, const char *key) {
  for (size_t i = 0; o && i < o->n; i++)
    if (!strcmp(o->keys[i], key)) return i;
  return (size_t)-1;
}

int sf_options_set(sf_options *o, const char *key, const char *value, sf_error *err) {
  if (!o || !key || !value)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_options_set needs an options object, a key and a value");
  size_t len = strlen(key);
  if (len == 0 || len > MAX_KEY)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option key '%.140s' must be 1 to %u characters", key, MAX_KEY);
  for (size_t i = 0; i < len; i++)
    if (!isgraph((unsigned char)key[i]))
      return sf_api_fail(err, SF_STATUS_INVALID,
                         "option key '%s' has a character that is not printable ASCII "
                         "(byte %zu); use names such as \"nlist\"",
                         key, i);
  char *v = strdup(value);
  if (!v) return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  size_t at = find(o, key);
  if (at != (size_t)-1) {
    free(o->values[at]);
    o->values[at] = v;
    return SF_STATUS_OK;
  }
  if (o->n == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 8;
    char **k = realloc(o->keys, cap * sizeof *k);
    if (k) o->keys = k;
    char **vs = k ? realloc(o->values, cap * sizeof *vs) : NULL;
    if (vs) o->values = vs;
    if (!k || !vs) {
      free(v);
      return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
    }
    o->cap = cap;
  }
  if (!(o->keys[o->n] = strdup(key))) {
    free(v);
    return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  }
  o->values[o->n++] = v;
  return SF_STATUS_OK;
}

const char *sf_options_get(const sf_options *o, const char *key) {
  size_t at = key ? find(o, key) : (size_t)-1;
  return at == (size_t)-1 ? NULL : o->values[at];
}

int sf_api_opts_check(const sf_options *o, const char *fn, const char *const *keys,
                      sf_error *err) {
  for (size_t i = 0; o && i < o->n; i++) {
    int known = 0;
    for (size_t j = 0; keys[j] && !known; j++) known = !strcmp(o->keys[i], keys[j]);
    if (known) continue;
    char list[256] = "";
    size_t used = 0;
    for (size_t j = 0; keys[j]; j++) {
      int n = snprintf(list + used, sizeof list - used, "%s%s", j ? ", " : "", keys[j]);
      if (n < 0 || (size_t)n >= sizeof list - used) break;
      used += (size_t)n;
    }
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option '%s' is not one that %s reads; it reads: %s", o->keys[i],
                       fn, list);
  }
  return SF_STATUS_OK;
}

const char *sf_api_opt_str(const sf_options *o, const char *key, const char *def) {
  const char *v = sf_options_get(o, key);
  return v ? v : def;
}

/* A decimal number without sign or spaces, into *out. */
static int parse_u64(const char *s, uint64_t *out, char **end) {
  if (!isdigit((unsigned char)s[0])) return -1;
  errno = 0;
  unsigned long long v = strtoull(s, end, 10);
  if (errno) return -1;
  *out = v;
  return 0;
}

int sf_api_opt_u64(const sf_options *o, const char *key, uint64_t def, uint64_t min,
                   uint64_t max, uint64_t *out, sf_error *err) {
  const char *v = sf_options_get(o, key);
  *out = def;
  if (!v) return SF_STATUS_OK;
  char *end;
  uint64_t x;
  if (parse_u64(v, &x, &end) || *end || x < min || x > max)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option %s is '%s'; give a whole number from %llu to %llu", key, v,
                       (unsigned long long)min, (unsigned long long)max);
  *out = x;
  return SF_STATUS_OK;
}

int sf_api_opt_size(const sf_options *o, const char *key, uint64_t def, uint64_t *out,
                    sf_error *err) {
  const char *v = sf_options_get(o, key);
  *out = def;
  if (!v) return SF_STATUS_OK;
  char *end;
  uint64_t x;
  unsigned shift = 0;
  int ok = !parse_u64(v, &x, &end);
  if (ok && *end) {
    const char *suffixes = "KMGT";
    const char *at = strchr(suffixes, toupper((unsigned char)*end));
    ok = *end && at &&
         (end[1] == '\0' || (toupper((unsigned char)end[1]) == 'B' && end[2] == '\0'));
    if (ok) shift = 10u * (unsigned)(at - suffixes + 1);
  }
  if (!ok || (shift && x > (UINT64_MAX >> shift)))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option %s is '%s'; give a number of bytes, optionally with K, "
                       "M, G or T (binary: 256M = 268435456)",
                       key, v);
  *out = x << shift;
  return SF_STATUS_OK;
}

int sf_api_opt_bool(const sf_options *o, const char *key, int def, int *out,
                    sf_error *err) {
  const char *v = sf_options_get(o, key);
  *out = def;
  if (!v) return SF_STATUS_OK;
  if (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes"))
    *out = 1;
  else if (!strcmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no"))
    *out = 0;
  else
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option %s is '%s'; give 1 or 0 (true/false, yes/no)", key, v);
  return SF_STATUS_OK;
}

int sf_api_opt_fragments(const sf_options *o, const char *key, roaring_bitmap_t **out,
                         sf_error *err) {
  const char *v = sf_options_get(o, key);
  *out = NULL;
  if (!v) return SF_STATUS_OK;
  sf_err e = {0};
  if (sf_fragset_parse(v, key, out, &e)) return sf_api_from_err(err, &e);
  return SF_STATUS_OK;
}
