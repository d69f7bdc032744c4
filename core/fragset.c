/* fragset.c - see fragset.h. */
#include "fragset.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sf_fragset_free(roaring_bitmap_t *b) {
  if (b) roaring_bitmap_free(b);
}

sf_code sf_fragset_decode(const void *buf, size_t len, const char *what,
                          roaring_bitmap_t **out, sf_err *err) {
  *out = NULL;
  if (!buf || len == 0)
    return sf_err_set(err, SF_ECORRUPT, "%s: empty fragment bitmap", what);
  /* The size the header claims must be exactly what we were given: the
   * _size call reads only within len and returns 0 when it would overrun. */
  size_t need = roaring_bitmap_portable_deserialize_size((const char *)buf, len);
  if (need == 0 || need != len)
    return sf_err_set(err, SF_ECORRUPT,
                      "%s: %zu bytes are not one portable roaring bitmap (%s)", what, len,
                      need == 0 ? "header or containers run past the end" : "trailing bytes");
  roaring_bitmap_t *b = roaring_bitmap_portable_deserialize_safe((const char *)buf, len);
  if (!b)
    return sf_err_set(err, SF_ECORRUPT, "%s: fragment bitmap does not deserialize", what);
  *out = b;
  return SF_OK;
}

sf_code sf_fragset_encode(const roaring_bitmap_t *b, uint8_t **out, size_t *len, sf_err *err) {
  size_t n = roaring_bitmap_portable_size_in_bytes(b);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return sf_err_set(err, SF_ENOMEM, "out of memory encoding a fragment bitmap");
  size_t w = roaring_bitmap_portable_serialize(b, (char *)buf);
  if (w != n) {
    free(buf);
    return sf_err_set(err, SF_EIO, "fragment bitmap serialized to %zu bytes, expected %zu", w, n);
  }
  *out = buf;
  *len = n;
  return SF_OK;
}

sf_code sf_fragset_parse(const char *s, const char *what, roaring_bitmap_t **out, sf_err *err) {
  *out = NULL;
  roaring_bitmap_t *b = roaring_bitmap_create();
  if (!b) return sf_err_set(err, SF_ENOMEM, "out of memory parsing %s", what);
  const char *p = s ? s : "";
  if (!*p) goto bad;
  while (*p) {
    char *end;
    if (!isdigit((unsigned char)*p)) goto bad;
    errno = 0;
    unsigned long long a = strtoull(p, &end, 10), z = a;
    p = end;
    if (*p == '-') {
      p++;
      if (!isdigit((unsigned char)*p)) goto bad;
      z = strtoull(p, &end, 10);
      p = end;
    }
    if (errno || a > UINT32_MAX || z > UINT32_MAX || z < a) goto bad;
    roaring_bitmap_add_range_closed(b, (uint32_t)a, (uint32_t)z);
    if (*p == ',') {
      p++;
      if (!*p) goto bad;
    } else if (*p) {
      goto bad;
    }
  }
  roaring_bitmap_run_optimize(b);
  *out = b;
  return SF_OK;
bad:
  sf_fragset_free(b);
  return sf_err_set(err, SF_EINVAL,
                    "%s expects a range list of fragment numbers such as '0-63,70', got '%s'",
                    what, s ? s : "");
}

typedef struct {
  char *buf;
  size_t len, cap, items, max_items, skipped;
  int oom;
  int have;
  uint32_t lo, hi;
} fmt_state;

static void put(fmt_state *st, const char *fmt, unsigned long long a, unsigned long long z) {
  if (st->oom) return;
  if (st->max_items && st->items >= st->max_items) {
    st->skipped++;
    return;
  }
  char tmp[48];
  int n = a == z ? snprintf(tmp, sizeof tmp, fmt, a) : snprintf(tmp, sizeof tmp, fmt, a, z);
  if (st->len + (size_t)n + 2 > st->cap) {
    size_t cap = (st->cap + (size_t)n + 2) * 2;
    char *nb = realloc(st->buf, cap);
    if (!nb) {
      st->oom = 1;
      return;
    }
    st->buf = nb;
    st->cap = cap;
  }
  if (st->len) st->buf[st->len++] = ',';
  memcpy(st->buf + st->len, tmp, (size_t)n + 1);
  st->len += (size_t)n;
  st->items++;
}

static void flush(fmt_state *st) {
  if (!st->have) return;
  if (st->lo == st->hi) put(st, "%llu", st->lo, st->lo);
  else put(st, "%llu-%llu", st->lo, st->hi);
}

static bool visit(uint32_t v, void *arg) {
  fmt_state *st = arg;
  if (st->have && v == st->hi + 1) {
    st->hi = v;
    return true;
  }
  flush(st);
  st->have = 1;
  st->lo = st->hi = v;
  return !st->oom;
}

static char *format(const roaring_bitmap_t *b, size_t max_items) {
  fmt_state st = {.max_items = max_items};
  st.buf = calloc(1, 1);
  st.cap = 1;
  if (!st.buf) return NULL;
  roaring_iterate(b, visit, &st);
  flush(&st);
  if (st.oom) {
    free(st.buf);
    return NULL;
  }
  if (st.skipped) {
    char tail[64];
    snprintf(tail, sizeof tail, ",...(+%zu more)", st.skipped);
    char *nb = realloc(st.buf, st.len + strlen(tail) + 1);
    if (!nb) {
      free(st.buf);
      return NULL;
    }
    st.buf = nb;
    memcpy(st.buf + st.len, tail, strlen(tail) + 1);
  }
  return st.buf;
}

char *sf_fragset_format(const roaring_bitmap_t *b) { return format(b, 0); }

char *sf_fragset_format_short(const roaring_bitmap_t *b, size_t max_items) {
  return format(b, max_items ? max_items : 1);
}
