/* util.c - flag parsing and error printing shared by the commands. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/base/fragset.h"
#include "core/base/types.h"
#include "core/catalog/catalog.h"

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
      case 'K':
        mul = 1ULL << 10;
        break;
      case 'M':
        mul = 1ULL << 20;
        break;
      case 'G':
        mul = 1ULL << 30;
        break;
      default:
        mul = 0;
    }
    if (mul) {
      end++;
      if (toupper((unsigned char)*end) == 'I') end++;
      if (toupper((unsigned char)*end) == 'B') end++;
    }
  }
  if (errno || *end || mul == 0 || (v && v > UINT64_MAX / mul))
    return sf_err_set(
        err, SF_EINVAL, "%s: '%s' is not a valid %s", flag, val,
        sizes ? "size (a number with an optional K, M or G suffix)" : "number");
  v *= mul;
  if (v < min || v > max)
    return sf_err_set(err, SF_EINVAL, "%s must be between %llu and %llu, got %llu", flag,
                      (unsigned long long)min, (unsigned long long)max, v);
  *out = v;
  return SF_OK;
}

sf_code cli_check_ids(sf_err *err, ...) {
  va_list ap;
  va_start(ap, err);
  sf_code rc = SF_OK;
  const char *flag;
  while (!rc && (flag = va_arg(ap, const char *))) {
    const char *val = va_arg(ap, const char *);
    if (val) rc = sf_catalog_check_id(flag, val, err);
  }
  va_end(ap);
  return rc;
}

int cli_plan_flag(cli_plan_flags *f, int c, const char *arg, sf_code *rc, sf_err *err) {
  switch (c) {
    case 'b': /* the events carry it as an Avro long */
      *rc = cli_parse_u64("--target-segment-bytes", arg, 0, INT64_MAX, 1,
                          &f->target_segment_bytes, err);
      return 1;
    case 'e': {
      roaring_bitmap_t *b = NULL;
      if (!(*rc = sf_fragset_parse(arg, "--expected-fragments", &b, err))) {
        if (f->expected) sf_fragset_free(f->expected);
        f->expected = b;
      }
      return 1;
    }
    case 't': {
      sf_index_type t;
      if (!(*rc = sf_index_type_parse(arg, &t, err))) f->index_type = (int)t;
      return 1;
    }
  }
  return 0;
}

void cli_plan_flags_clear(cli_plan_flags *f) {
  if (f->expected) sf_fragset_free(f->expected); /* CRoaring 0.2 crashes on NULL */
  f->expected = NULL;
}
