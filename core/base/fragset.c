/* fragset.c - see fragset.h. */
#include "core/base/fragset.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/memcost.h"

void sf_fragset_free(roaring_bitmap_t *b) {
  if (b) roaring_bitmap_free(b);
}

/* ---- the portable format, checked (see fragset.h) --------------------------- */

#define COOKIE_NO_RUNS 12346u /* then a uint32 container count */
#define COOKIE_RUNS 12347u    /* low 16 bits; the high 16 are count - 1 */
#define NO_OFFSET_THRESHOLD 4 /* with runs, fewer containers have no offsets */
#define ARRAY_MAX 4096u       /* an array holds at most this many values */
#define BITSET_BYTES 8192u

static uint16_t rd16(const uint8_t *p) {
  return (uint16_t)(p[0] | p[1] << 8);
}
static uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

#define BAD(...) sf_err_set(err, SF_ECORRUPT, __VA_ARGS__)

/* Container i (key, header cardinality card) at p, its n bytes checked to be
 * present by the caller: the content must be what CRoaring's own containers
 * keep, since its set operations rely on it. */
static sf_code check_array(const uint8_t *p, uint32_t card, const char *what, uint32_t i,
                           sf_err *err) {
  for (uint32_t k = 1; k < card; k++)
    if (rd16(p + 2 * k) <= rd16(p + 2 * (k - 1)))
      return BAD(
          "%s: container %u holds values that are not strictly increasing (%u "
          "then %u at position %u): not a valid roaring bitmap",
          what, i, rd16(p + 2 * (k - 1)), rd16(p + 2 * k), k);
  return SF_OK;
}

/* A bitset or run container must hold as many values as its header claims
 * (`holds` says which: "its bitset holds", "its runs hold"). */
static sf_code check_count(uint32_t card, uint64_t n, const char *holds, const char *what,
                           uint32_t i, sf_err *err) {
  if (n != card)
    return BAD(
        "%s: container %u claims %u values but %s %llu: not a valid roaring bitmap", what,
        i, card, holds, (unsigned long long)n);
  return SF_OK;
}

static sf_code check_bitset(const uint8_t *p, uint32_t card, const char *what, uint32_t i,
                            sf_err *err) {
  uint64_t n = 0;
  for (uint32_t w = 0; w < BITSET_BYTES / 8; w++) {
    uint64_t x = (uint64_t)rd32(p + 8 * w) | (uint64_t)rd32(p + 8 * w + 4) << 32;
    n += (uint64_t)__builtin_popcountll(x);
  }
  return check_count(card, n, "its bitset holds", what, i, err);
}

static sf_code check_runs(const uint8_t *p, uint32_t nruns, uint32_t card,
                          const char *what, uint32_t i, sf_err *err) {
  if (nruns == 0)
    return BAD(
        "%s: container %u is a run container without runs: not a valid roaring "
        "bitmap",
        what, i);
  uint64_t n = 0;
  uint32_t next = 0; /* the smallest start the next run may have */
  for (uint32_t k = 0; k < nruns; k++) {
    uint32_t start = rd16(p + 4 * k), len = rd16(p + 4 * k + 2); /* len + 1 values */
    if (start + len > 0xFFFF)
      return BAD(
          "%s: container %u has a run %u+%u that passes 65535: not a valid "
          "roaring bitmap",
          what, i, start, len);
    if (k && start < next)
      return BAD(
          "%s: container %u has runs that overlap, touch or are out of order "
          "(run %u starts at %u): not a valid roaring bitmap",
          what, i, k, start);
    next = start + len + 2;
    n += len + 1;
  }
  return check_count(card, n, "its runs hold", what, i, err);
}

/* Walks the portable serialization (RoaringFormatSpec) of b[len] and checks
 * every length against len and every container's content; exactly len
 * bytes must be used. */
static sf_code check_portable(const uint8_t *b, size_t len, const char *what,
                              sf_err *err) {
  if (len < 4) return BAD("%s: %zu bytes are too short for a roaring bitmap", what, len);
  uint32_t cookie = rd32(b), n;
  size_t at;
  const uint8_t *runs = NULL;
  int offsets;
  if (cookie == COOKIE_NO_RUNS) {
    if (len < 8) return BAD("%s: roaring bitmap header is cut short", what);
    n = rd32(b + 4);
    if (n > 65536)
      return BAD("%s: roaring bitmap claims %u containers (at most 65536)", what, n);
    at = 8;
    offsets = 1;
  } else if ((cookie & 0xFFFF) == COOKIE_RUNS) {
    n = (cookie >> 16) + 1;
    runs = b + 4;
    at = 4 + ((size_t)n + 7) / 8;
    offsets = n >= NO_OFFSET_THRESHOLD;
  } else {
    return BAD("%s: not a portable roaring bitmap (cookie %08x)", what, cookie);
  }
  const uint8_t *hdr = b + at;
  if (at > len || (size_t)n * 4 > len - at)
    return BAD("%s: roaring bitmap header of %u containers runs past its %zu bytes", what,
               n, len);
  at += (size_t)n * 4;
  const uint8_t *offs = b + at;
  if (offsets) {
    if ((size_t)n * 4 > len - at)
      return BAD("%s: roaring bitmap offsets run past its %zu bytes", what, len);
    at += (size_t)n * 4;
  }
  for (uint32_t i = 0; i < n; i++) {
    uint32_t key = rd16(hdr + 4 * i), card = (uint32_t)rd16(hdr + 4 * i + 2) + 1;
    if (i && key <= rd16(hdr + 4 * (i - 1)))
      return BAD(
          "%s: roaring bitmap keys are not strictly increasing (%u then %u at "
          "container %u)",
          what, rd16(hdr + 4 * (i - 1)), key, i);
    if (offsets && rd32(offs + 4 * i) != at)
      return BAD("%s: roaring bitmap container %u is at byte %zu but its offset says %u",
                 what, i, at, rd32(offs + 4 * i));
    int is_run = runs && (runs[i / 8] >> (i % 8) & 1);
    size_t need;
    sf_code rc;
    if (is_run) {
      if (len - at < 2)
        return BAD("%s: roaring bitmap container %u is cut short", what, i);
      uint32_t nruns = rd16(b + at);
      at += 2;
      need = (size_t)nruns * 4;
      if (need > len - at)
        return BAD("%s: roaring bitmap container %u is cut short", what, i);
      rc = check_runs(b + at, nruns, card, what, i, err);
    } else if (card > ARRAY_MAX) {
      need = BITSET_BYTES;
      if (need > len - at)
        return BAD("%s: roaring bitmap container %u is cut short", what, i);
      rc = check_bitset(b + at, card, what, i, err);
    } else {
      need = (size_t)card * 2;
      if (need > len - at)
        return BAD("%s: roaring bitmap container %u is cut short", what, i);
      rc = check_array(b + at, card, what, i, err);
    }
    if (rc) return rc;
    at += need;
  }
  if (at != len) return BAD("%s: %zu bytes follow the roaring bitmap", what, len - at);
  return SF_OK;
}

sf_code sf_fragset_decode(const void *buf, size_t len, const char *what,
                          roaring_bitmap_t **out, sf_err *err) {
  *out = NULL;
  if (!buf || len == 0)
    return sf_err_set(err, SF_ECORRUPT, "%s: empty fragment bitmap", what);
  /* Our own walk first: CRoaring's deserializer checks lengths only, and
   * takes unsorted arrays, wrong cardinalities or overlapping runs as they
   * come, after which its set operations answer wrongly. */
  sf_code rc = check_portable(buf, len, what, err);
  if (rc) return rc;
  /* The size CRoaring claims must agree with our walk. */
  if (roaring_bitmap_portable_deserialize_size((const char *)buf, len) != len)
    return sf_err_set(err, SF_ECORRUPT,
                      "%s: %zu bytes are not one portable roaring bitmap", what, len);
  roaring_bitmap_t *b = roaring_bitmap_portable_deserialize_safe((const char *)buf, len);
  if (!b)
    return sf_err_set(err, SF_ECORRUPT, "%s: fragment bitmap does not deserialize", what);
  *out = b;
  return SF_OK;
}

size_t sf_fragset_mem(const roaring_bitmap_t *b) {
  if (!b) return 0;
  roaring_statistics_t st;
  roaring_bitmap_statistics(b, &st);
  size_t a = (size_t)b->high_low_container.allocation_size;
  /* The bitmap; its keys, container pointers and type codes (one block);
   * per container a header (16 bytes) and its values, rounded (at most 40
   * more than their size); bitsets are allocated 32-aligned (64 more). */
  return sf_mem_chunk(sizeof *b) + (a ? sf_mem_chunk(a * (sizeof(void *) + 3)) : 0) +
         (size_t)st.n_containers * (sf_mem_chunk(16) + 40) +
         (size_t)st.n_bytes_array_containers + st.n_bytes_run_containers +
         st.n_bytes_bitset_containers + (size_t)st.n_bitset_containers * 64;
}

sf_code sf_fragset_encode(const roaring_bitmap_t *b, uint8_t **out, size_t *len,
                          sf_err *err) {
  size_t n = roaring_bitmap_portable_size_in_bytes(b);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return sf_err_set(err, SF_ENOMEM, "out of memory encoding a fragment bitmap");
  size_t w = roaring_bitmap_portable_serialize(b, (char *)buf);
  if (w != n) {
    free(buf);
    return sf_err_set(err, SF_EIO,
                      "fragment bitmap serialized to %zu bytes, expected %zu", w, n);
  }
  *out = buf;
  *len = n;
  return SF_OK;
}

sf_code sf_fragset_parse(const char *s, const char *what, roaring_bitmap_t **out,
                         sf_err *err) {
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
  return sf_err_set(
      err, SF_EINVAL,
      "%s expects a range list of fragment numbers such as '0-63,70', got '%s'", what,
      s ? s : "");
}

typedef struct {
  char *buf;
  size_t len, cap, items, max_items, skipped;
  int oom;
  int have;
  uint32_t lo, hi;
} fmt_state;

static void put(fmt_state *st, const char *fmt, unsigned long long a,
                unsigned long long z) {
  if (st->oom) return;
  if (st->max_items && st->items >= st->max_items) {
    st->skipped++;
    return;
  }
  char tmp[48];
  int n =
      a == z ? snprintf(tmp, sizeof tmp, fmt, a) : snprintf(tmp, sizeof tmp, fmt, a, z);
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
  if (st->lo == st->hi)
    put(st, "%llu", st->lo, st->lo);
  else
    put(st, "%llu-%llu", st->lo, st->hi);
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

char *sf_fragset_format(const roaring_bitmap_t *b) {
  return format(b, 0);
}

char *sf_fragset_format_short(const roaring_bitmap_t *b, size_t max_items) {
  return format(b, max_items ? max_items : 1);
}
