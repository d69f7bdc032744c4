/*
 * offsets.c - the watermark per partition (see offsets.h).
 *
 * Each partition's pending offsets are an ascending array q[head, len). A
 * done entry is kept as a tombstone, its bits inverted (~offset < 0 for
 * every offset >= 0), so the array stays sorted by magnitude and binary
 * search still finds entries. The front is trimmed of tombstones whenever
 * the watermark is asked for, and the array is compacted when tombstones
 * outnumber the live entries, which bounds it by twice the pending count.
 */
#include "consumer/offsets.h"

#include <stdlib.h>
#include <string.h>

typedef struct part {
  uint32_t gen; /* 0: not assigned */
  int64_t *q;   /* pending offsets, ascending by magnitude; ~x = done */
  size_t head, len, cap;
  size_t live;       /* entries in [head, len) that are not tombstones */
  int64_t last;      /* newest offset read, -1 = none */
  int64_t committed; /* last recorded commit, -1 = none */
} part;

struct sf_offsets {
  part *parts;
  size_t nparts;    /* array size (max partition + 1) */
  uint32_t nextgen; /* generations are global, so never reused */
  size_t pending;
};

static int64_t mag(int64_t v) {
  return v < 0 ? ~v : v;
}

/* The first position in [head, len) whose offset (live or done) is not
 * below `offset`: the queue is sorted by magnitude. */
static size_t lower_bound(const part *t, int64_t offset) {
  size_t lo = t->head, hi = t->len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (mag(t->q[mid]) < offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

sf_code sf_offsets_new(sf_offsets **out, sf_err *err) {
  *out = calloc(1, sizeof **out);
  return *out ? SF_OK : sf_err_set(err, SF_ENOMEM, "out of memory");
}

void sf_offsets_free(sf_offsets *o) {
  if (!o) return;
  for (size_t i = 0; i < o->nparts; i++) free(o->parts[i].q);
  free(o->parts);
  free(o);
}

static part *get(const sf_offsets *o, int32_t p) {
  if (p < 0 || (size_t)p >= o->nparts || !o->parts[p].gen) return NULL;
  return &o->parts[p];
}

sf_code sf_offsets_assign(sf_offsets *o, int32_t p, uint32_t *gen, sf_err *err) {
  if (p < 0 || p > SF_OFFSETS_MAX_PARTITION)
    return sf_err_set(err, SF_EINVAL, "partition %d is out of range", (int)p);
  if ((size_t)p >= o->nparts) {
    size_t n = (size_t)p + 1 > o->nparts * 2 ? (size_t)p + 1 : o->nparts * 2;
    part *np = realloc(o->parts, n * sizeof *np);
    if (!np) return sf_err_set(err, SF_ENOMEM, "out of memory");
    memset(np + o->nparts, 0, (n - o->nparts) * sizeof *np);
    o->parts = np;
    o->nparts = n;
  }
  sf_offsets_revoke(o, p);
  part *t = &o->parts[p];
  if (++o->nextgen == 0) o->nextgen = 1;
  t->gen = o->nextgen;
  t->last = -1;
  t->committed = -1;
  *gen = t->gen;
  return SF_OK;
}

void sf_offsets_revoke(sf_offsets *o, int32_t p) {
  part *t = get(o, p);
  if (!t) return;
  o->pending -= t->live;
  free(t->q);
  memset(t, 0, sizeof *t);
}

uint32_t sf_offsets_generation(const sf_offsets *o, int32_t p) {
  part *t = get(o, p);
  return t ? t->gen : 0;
}

/* Drops tombstones, and the consumed front, so q[0, live) is all live. */
static void compact(part *t) {
  size_t w = 0;
  for (size_t i = t->head; i < t->len; i++)
    if (t->q[i] >= 0) t->q[w++] = t->q[i];
  t->head = 0;
  t->len = w;
}

sf_code sf_offsets_track(sf_offsets *o, int32_t p, int64_t offset, sf_err *err) {
  part *t = get(o, p);
  if (!t) return sf_err_set(err, SF_EINVAL, "partition %d is not assigned", (int)p);
  if (offset < 0)
    return sf_err_set(err, SF_EINVAL, "offset %lld is negative", (long long)offset);
  if (t->len == t->cap) {
    if (t->head > 0 && t->len - t->head <= t->cap / 2) {
      compact(t); /* reuse the space in front */
    } else {
      size_t ncap = t->cap ? t->cap * 2 : 64;
      int64_t *nq = realloc(t->q, ncap * sizeof *nq);
      if (!nq) return sf_err_set(err, SF_ENOMEM, "out of memory");
      t->q = nq;
      t->cap = ncap;
    }
  }
  if (t->len == t->head || mag(t->q[t->len - 1]) < offset) {
    t->q[t->len++] = offset; /* the usual case: offsets arrive in order */
  } else {
    /* A seek back: keep the array sorted. Rare, so O(n) is fine. */
    size_t lo = lower_bound(t, offset);
    if (lo < t->len && mag(t->q[lo]) == offset) {
      if (t->q[lo] >= 0) return SF_OK; /* already pending */
      t->q[lo] = offset;               /* read again: pending again */
      t->live++;
      o->pending++;
      return SF_OK;
    }
    memmove(&t->q[lo + 1], &t->q[lo], (t->len - lo) * sizeof *t->q);
    t->q[lo] = offset;
    t->len++;
  }
  t->live++;
  o->pending++;
  if (offset > t->last) t->last = offset;
  return SF_OK;
}

int sf_offsets_done(sf_offsets *o, int32_t p, uint32_t gen, int64_t offset) {
  part *t = get(o, p);
  if (!t || t->gen != gen || offset < 0) return 0;
  size_t lo = lower_bound(t, offset);
  if (lo == t->len || t->q[lo] != offset) return 0; /* absent or already done */
  t->q[lo] = ~offset;
  t->live--;
  o->pending--;
  while (t->head < t->len && t->q[t->head] < 0) t->head++;
  if (t->head == t->len)
    t->head = t->len = 0;
  else if (t->len - t->head > 64 && t->len - t->head - t->live > t->live)
    compact(t);
  return 1;
}

int64_t sf_offsets_watermark(sf_offsets *o, int32_t p) {
  part *t = get(o, p);
  if (!t) return -1;
  if (t->head < t->len) return t->q[t->head]; /* the front is never a tombstone */
  return t->last < 0 ? -1 : t->last + 1;
}

size_t sf_offsets_uncommitted(sf_offsets *o, int32_t *parts, int64_t *offsets,
                              size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < o->nparts && n < max; i++) {
    if (!o->parts[i].gen) continue;
    int64_t w = sf_offsets_watermark(o, (int32_t)i);
    if (w < 0 || w == o->parts[i].committed) continue;
    parts[n] = (int32_t)i;
    offsets[n++] = w;
  }
  return n;
}

void sf_offsets_committed(sf_offsets *o, int32_t p, int64_t offset) {
  part *t = get(o, p);
  if (t) t->committed = offset;
}

size_t sf_offsets_pending(const sf_offsets *o) {
  return o->pending;
}

size_t sf_offsets_pending_on(const sf_offsets *o, int32_t p) {
  part *t = get(o, p);
  return t ? t->live : 0;
}

size_t sf_offsets_bytes(const sf_offsets *o) {
  return o->pending * 4 * sizeof(int64_t);
}
