/* util.c - flag parsing and error printing shared by the commands. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

int cli_fail(const char *cmd, const sf_err *err) {
  fprintf(stderr, "segforge %s: %s: %s\n", cmd, sf_code_name(err->code), err->msg);
  return 1;
}

int cli_usage(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "segforge %s: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (see 'segforge %s --help')\n", cmd);
  va_end(ap);
  return 2;
}

sf_code cli_parse_u64(const char *flag, const char *val, uint64_t min, uint64_t max,
                      int sizes, uint64_t *out, sf_err *err) {
  if (!val || !*val || !isdigit((unsigned char)*val))
    return sf_err_set(err, SF_EINVAL, "%s expects a non-negative whole number, got '%s'",
                      flag, val ? val : "");
  errno = 0;
  char *end;
  unsigned long long v = strtoull(val, &end, 10);
  uint64_t mul = 1;
  if (sizes && *end) {
    switch (toupper((unsigned char)*end)) {
      case 'K': mul = 1ULL << 10; break;
      case 'M': mul = 1ULL << 20; break;
      case 'G': mul = 1ULL << 30; break;
      default: mul = 0;
    }
    if (mul) {
      end++;
      if (toupper((unsigned char)*end) == 'I') end++;
      if (toupper((unsigned char)*end) == 'B') end++;
    }
  }
  if (errno || *end || mul == 0 || (v && v > UINT64_MAX / mul))
    return sf_err_set(err, SF_EINVAL, "%s: '%s' is not a valid %s", flag, val,
                      sizes ? "size (a number with an optional K, M or G suffix)" : "number");
  v *= mul;
  if (v < min || v > max)
    return sf_err_set(err, SF_EINVAL, "%s must be between %llu and %llu, got %llu", flag,
                      (unsigned long long)min, (unsigned long long)max, v);
  *out = v;
  return SF_OK;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

sf_code cli_parse_ranges(const char *flag, const char *val, uint64_t limit, uint32_t **out,
                         uint64_t *n, sf_err *err) {
  uint64_t cap = 64, cnt = 0;
  uint32_t *v = malloc(cap * sizeof *v);
  if (!v) return sf_err_set(err, SF_ENOMEM, "out of memory parsing %s", flag);
  const char *p = val ? val : "";
  while (*p) {
    char *end;
    if (!isdigit((unsigned char)*p)) goto bad;
    unsigned long long a = strtoull(p, &end, 10), b = a;
    p = end;
    if (*p == '-') {
      p++;
      if (!isdigit((unsigned char)*p)) goto bad;
      b = strtoull(p, &end, 10);
      p = end;
    }
    if (a > UINT32_MAX || b > UINT32_MAX || b < a) goto bad;
    if (b - a + 1 > limit - cnt) {
      free(v);
      return sf_err_set(err, SF_ELIMIT, "%s lists more than %llu values", flag,
                        (unsigned long long)limit);
    }
    for (unsigned long long x = a; x <= b; x++) {
      if (cnt == cap) {
        uint32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
        if (!nv) {
          free(v);
          return sf_err_set(err, SF_ENOMEM, "out of memory parsing %s", flag);
        }
        v = nv;
      }
      v[cnt++] = (uint32_t)x;
    }
    if (*p == ',') p++;
    else if (*p) goto bad;
  }
  if (!cnt) goto bad;
  qsort(v, cnt, sizeof *v, cmp_u32);
  uint64_t w = 0;
  for (uint64_t i = 0; i < cnt; i++)
    if (!w || v[w - 1] != v[i]) v[w++] = v[i];
  *out = v;
  *n = w;
  return SF_OK;
bad:
  free(v);
  return sf_err_set(err, SF_EINVAL,
                    "%s expects a range list such as '0-63,70' (ascending ranges of "
                    "fragment numbers), got '%s'",
                    flag, val ? val : "");
}
