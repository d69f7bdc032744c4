/*
 * processor_record.c - an event as the processor keeps it: its value
 * followed by what else the message carried (timestamp, key, headers), so
 * that a dead letter keeps the original key, headers and timestamp, and a
 * trace's traceparent travels from ShardStaged to SegmentsCommitted.
 *
 * The job table keeps each event's bytes opaquely (consumer/jobs.h), so the
 * record is one buffer: the value, then the envelope, then its length and a
 * mark:
 *
 *   value | ts i64 | keylen u32 | key | n u32 | (nlen u32 name vlen u32 v)*n
 *         | envlen u32 | "SFR1"
 *
 * (integers little-endian; a length of 0xffffffff is a null key or value).
 * The memory bound counts the whole record: it is what is held. Bytes
 * without the mark are taken as a bare value (no key, no headers), so
 * callers that pass plain event bytes keep working.
 */
#include <stdlib.h>
#include <string.h>

#include "processor/processor_internal.h"

#define MARK "SFR1"
#define NUL32 0xffffffffu

static void put32(uint8_t *b, uint32_t v) {
  for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *b) {
  return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
         (uint32_t)b[3] << 24;
}

/* Appends n bytes (or the null length) to the buffer. */
static uint8_t *put_bytes(uint8_t *w, const void *v, size_t n, int null) {
  put32(w, null ? NUL32 : (uint32_t)n);
  w += 4;
  if (!null && n) memcpy(w, v, n);
  return w + (null ? 0 : n);
}

const uint8_t *sf_proc_record_make(sf_proc *p, const rd_kafka_message_t *m, size_t *len) {
  rd_kafka_headers_t *hs = NULL;
  if (rd_kafka_message_headers(m, &hs)) hs = NULL;
  size_t nh = hs ? rd_kafka_header_cnt(hs) : 0;
  size_t need = m->len + 8 + 4 + m->key_len + 4 + 8;
  const char *name;
  const void *v;
  size_t vl;
  for (size_t i = 0; i < nh; i++)
    if (!rd_kafka_header_get_all(hs, i, &name, &v, &vl)) need += 8 + strlen(name) + vl;
  if (need > p->rec_cap) {
    size_t cap = need < 4096 ? 4096 : need * 2;
    uint8_t *nb = realloc(p->rec, cap);
    if (!nb) return NULL;
    p->rec = nb;
    p->rec_cap = cap;
  }
  uint8_t *w = p->rec;
  if (m->len) memcpy(w, m->payload, m->len);
  w += m->len;
  uint8_t *env = w;
  rd_kafka_timestamp_type_t tt;
  int64_t ts = rd_kafka_message_timestamp(m, &tt);
  for (int i = 0; i < 8; i++) w[i] = (uint8_t)((uint64_t)ts >> (8 * i));
  w += 8;
  w = put_bytes(w, m->key, m->key_len, m->key == NULL);
  uint8_t *count = w;
  w += 4;
  uint32_t n = 0;
  for (size_t i = 0; i < nh; i++) {
    if (rd_kafka_header_get_all(hs, i, &name, &v, &vl)) continue;
    w = put_bytes(w, name, strlen(name), 0);
    w = put_bytes(w, v, vl, v == NULL);
    n++;
  }
  put32(count, n);
  put32(w, (uint32_t)(w - env));
  memcpy(w + 4, MARK, 4);
  w += 8;
  *len = (size_t)(w - p->rec);
  return p->rec;
}

void sf_proc_record_split(const uint8_t *rec, size_t len, sf_proc_record *r) {
  memset(r, 0, sizeof *r);
  r->value = rec;
  r->value_len = len;
  if (len < 8 + 16 || memcmp(rec + len - 4, MARK, 4)) return;
  uint32_t envlen = get32(rec + len - 8);
  if ((size_t)envlen + 8 > len || envlen < 16) return;
  const uint8_t *e = rec + len - 8 - envlen, *end = rec + len - 8;
  uint64_t ts = 0;
  for (int i = 0; i < 8; i++) ts |= (uint64_t)e[i] << (8 * i);
  const uint8_t *q = e + 8;
  uint32_t kl = get32(q);
  q += 4;
  if (kl != NUL32 && kl > (size_t)(end - q)) return;
  r->value_len = (size_t)(e - rec);
  r->enveloped = 1;
  r->timestamp_ms = (int64_t)ts;
  if (kl != NUL32) {
    r->has_key = 1;
    r->key = q;
    r->key_len = kl;
    q += kl;
  }
  if (end - q < 4) return;
  r->nheaders = get32(q);
  r->headers = q + 4;
  r->headers_end = end;
}

/* Walks header i of r: 1 with name/value set, 0 past the end. */
static int header_at(const uint8_t **q, const uint8_t *end, const uint8_t **name,
                     size_t *nl, const uint8_t **val, size_t *vl) {
  if (end - *q < 4) return 0;
  *nl = get32(*q);
  *q += 4;
  if (*nl > (size_t)(end - *q)) return 0;
  *name = *q;
  *q += *nl;
  if (end - *q < 4) return 0;
  uint32_t l = get32(*q);
  *q += 4;
  if (l == NUL32) {
    *val = NULL;
    *vl = 0;
    return 1;
  }
  if (l > (size_t)(end - *q)) return 0;
  *val = *q;
  *vl = l;
  *q += l;
  return 1;
}

int sf_proc_record_header_nth(const sf_proc_record *r, const char *name, size_t nth,
                              const uint8_t **v, size_t *vl) {
  const uint8_t *q = r->headers, *n;
  size_t nl, want = strlen(name);
  for (uint32_t i = 0; q && i < r->nheaders; i++) {
    if (!header_at(&q, r->headers_end, &n, &nl, v, vl)) return 0;
    if (nl == want && !memcmp(n, name, nl) && !nth--) return 1;
  }
  return 0;
}

int sf_proc_record_header(const sf_proc_record *r, const char *name, const uint8_t **v,
                          size_t *vl) {
  return sf_proc_record_header_nth(r, name, 0, v, vl);
}

rd_kafka_headers_t *sf_proc_record_headers(const sf_proc_record *r, size_t extra) {
  rd_kafka_headers_t *hs = rd_kafka_headers_new(r->nheaders + extra);
  const uint8_t *q = r->headers, *n, *v;
  size_t nl, vl;
  for (uint32_t i = 0; hs && q && i < r->nheaders; i++) {
    if (!header_at(&q, r->headers_end, &n, &nl, &v, &vl)) break;
    rd_kafka_header_add(hs, (const char *)n, (ssize_t)nl, v, v ? (ssize_t)vl : 0);
  }
  return hs;
}
