/* event.c - see event.h. */
#include "event.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "schemas/event.h"

static const char *const type_names[SF_EVENT_TYPE_COUNT] = {
    "ShardStaged", "SegmentsCommitted", "ShardRejected", "SegmentsCompacted"};

const char *sf_event_type_name(sf_event_type t) {
  return (unsigned)t < SF_EVENT_TYPE_COUNT ? type_names[t] : "UNKNOWN";
}

sf_code sf_event_type_parse(const char *s, sf_event_type *out, sf_err *err) {
  const char *name = s ? s : "";
  if (!strncasecmp(name, "segforge.events.", 16)) name += 16;
  for (unsigned i = 0; i < SF_EVENT_TYPE_COUNT; i++)
    if (!strcasecmp(name, type_names[i])) {
      *out = (sf_event_type)i;
      return SF_OK;
    }
  return sf_err_set(err, SF_EINVAL,
                    "unknown event type '%s': use ShardStaged, SegmentsCommitted, "
                    "ShardRejected or SegmentsCompacted",
                    s ? s : "");
}

static const char *const reason_names[SF_REASON_COUNT] = {
    [SF_REASON_NONE] = "NONE",
    [SF_REASON_DECODE_ERROR] = "DECODE_ERROR",
    [SF_REASON_UNKNOWN_SCHEMA] = "UNKNOWN_SCHEMA",
    [SF_REASON_INVALID_FIELD] = "INVALID_FIELD",
    [SF_REASON_PATH_ESCAPE] = "PATH_ESCAPE",
    [SF_REASON_MISSING_FILE] = "MISSING_FILE",
    [SF_REASON_CORRUPT_FILE] = "CORRUPT_FILE",
    [SF_REASON_CHECKSUM_MISMATCH] = "CHECKSUM_MISMATCH",
    [SF_REASON_PARAM_MISMATCH] = "PARAM_MISMATCH",
    [SF_REASON_FRAGMENT_OVERLAP] = "FRAGMENT_OVERLAP",
    [SF_REASON_DUPLICATE_CONFLICT] = "DUPLICATE_CONFLICT",
    [SF_REASON_JOB_TIMEOUT] = "JOB_TIMEOUT",
    [SF_REASON_JOB_FAILED] = "JOB_FAILED",
    [SF_REASON_COMMIT_CONFLICT] = "COMMIT_CONFLICT",
    [SF_REASON_COMMITTED_CONFLICT] = "COMMITTED_CONFLICT",
};

const char *sf_event_reason_name(sf_event_reason r) {
  return (unsigned)r < SF_REASON_COUNT ? reason_names[r] : "NONE";
}

sf_event_reason sf_event_reason_parse(const char *s) {
  for (unsigned i = 1; s && i < SF_REASON_COUNT; i++)
    if (!strcmp(s, reason_names[i])) return (sf_event_reason)i;
  return SF_REASON_NONE;
}

/* ---- clear / copy / equal: walks of the field tables (event_fields.c) ---- */

void sf_shard_staged_clear(sf_shard_staged *e) {
  if (e) sf_evrec_clear(&sf_evrec_shard_staged, e);
}

void sf_segments_committed_clear(sf_segments_committed *e) {
  if (e) sf_evrec_clear(&sf_evrec_segments_committed, e);
}

void sf_shard_rejected_clear(sf_shard_rejected *e) {
  if (e) sf_evrec_clear(&sf_evrec_shard_rejected, e);
}

void sf_segments_compacted_clear(sf_segments_compacted *e) {
  if (e) sf_evrec_clear(&sf_evrec_segments_compacted, e);
}

void sf_event_clear(sf_event *e) {
  const sf_evrec *rec = e ? sf_evrec_of(e->type) : NULL;
  if (rec) sf_evrec_clear(rec, sf_event_body(e));
}

sf_code sf_shard_staged_copy(sf_shard_staged *dst, const sf_shard_staged *src,
                             sf_err *err) {
  return sf_evrec_copy(&sf_evrec_shard_staged, dst, src, err);
}

bool sf_shard_staged_equal(const sf_shard_staged *a, const sf_shard_staged *b) {
  return sf_evrec_equal(&sf_evrec_shard_staged, a, b, 0);
}

bool sf_shard_staged_same_shard(const sf_shard_staged *a, const sf_shard_staged *b) {
  return sf_evrec_equal(&sf_evrec_shard_staged, a, b, SF_FIELD_DELIVERY);
}

const char *sf_shard_staged_diff(const sf_shard_staged *a, const sf_shard_staged *b,
                                 unsigned roles, char *av, char *bv, size_t n) {
  return sf_evrec_diff(&sf_evrec_shard_staged, a, b, roles, av, bv, n);
}

const char *sf_shard_staged_job_diff(const sf_shard_staged *a, const sf_shard_staged *b,
                                     char *av, char *bv, size_t n) {
  return sf_evrec_diff(&sf_evrec_shard_staged, a, b, SF_FIELD_JOB, av, bv, n);
}

uint64_t sf_shard_staged_digest(const sf_shard_staged *e, unsigned roles) {
  return sf_evrec_digest(&sf_evrec_shard_staged, e, roles);
}

bool sf_segments_committed_equal(const sf_segments_committed *a,
                                 const sf_segments_committed *b) {
  return sf_evrec_equal(&sf_evrec_segments_committed, a, b, 0);
}

bool sf_shard_rejected_equal(const sf_shard_rejected *a, const sf_shard_rejected *b) {
  return sf_evrec_equal(&sf_evrec_shard_rejected, a, b, 0);
}

bool sf_segments_compacted_equal(const sf_segments_compacted *a,
                                 const sf_segments_compacted *b) {
  return sf_evrec_equal(&sf_evrec_segments_compacted, a, b, 0);
}

/* ---- validation ---------------------------------------------------------- */

/* The length of the strict UTF-8 sequence at s[i] (RFC 3629: no overlongs,
 * no surrogates, <= U+10FFFF, as the Avro specification requires of
 * strings), or 0 when the bytes there are not one. */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t i) {
  unsigned c = s[i];
  if (c < 0x80) return 1;
  size_t k;
  unsigned lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF)
    k = 1;
  else if (c == 0xE0)
    k = 2, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC)
    k = 2;
  else if (c == 0xED)
    k = 2, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF)
    k = 2;
  else if (c == 0xF0)
    k = 3, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3)
    k = 3;
  else if (c == 0xF4)
    k = 3, hi = 0x8F;
  else
    return 0;
  if (n - i - 1 < k) return 0;
  if (s[i + 1] < lo || s[i + 1] > hi) return 0;
  for (size_t j = 2; j <= k; j++)
    if ((s[i + j] & 0xC0) != 0x80) return 0;
  return k + 1;
}

static bool utf8_ok(const unsigned char *s, size_t n) {
  for (size_t i = 0, k; i < n; i += k)
    if (!(k = utf8_seq(s, n, i))) return false;
  return true;
}

bool sf_event_utf8_ok(const char *s, size_t n) {
  return utf8_ok((const unsigned char *)s, n);
}

bool sf_event_text_ok(const char *s) {
  return s && utf8_ok((const unsigned char *)s, strlen(s));
}

char *sf_event_escape_text(char *dst, size_t size, const char *src) {
  const unsigned char *s = (const unsigned char *)(src ? src : "");
  size_t n = strlen((const char *)s), w = 0;
  if (!size) return dst;
  for (size_t i = 0, k; i < n; i += k) {
    k = utf8_seq(s, n, i);
    if (k == 1 && (s[i] < 0x20 || s[i] == 0x7f)) k = 0;
    if (k) {
      if (w + k >= size) break; /* never split a character */
      memcpy(dst + w, s + i, k);
      w += k;
    } else {
      if (w + 4 >= size) break;
      snprintf(dst + w, 5, "\\x%02x", s[i]);
      w += 4;
      k = 1;
    }
  }
  dst[w] = '\0';
  return dst;
}

/* Messages quote the outside bytes that broke a rule ('%.64s' of a bad id,
 * which may also cut a character in two). A ShardRejected must be valid
 * UTF-8 or it cannot be published, and a dead letter that cannot be
 * published used to hold its partition's offset forever: so the message is
 * made valid here, where every rejection passes, with bad bytes as \xNN. */
sf_code sf_event_reject(sf_event_reason *reason, sf_event_reason r, sf_err *err,
                        const char *fmt, ...) {
  if (reason) *reason = r;
  if (err) {
    char raw[SF_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    err->code = SF_EDECODE;
    sf_event_escape_text(err->msg, sizeof err->msg, raw);
  }
  return SF_EDECODE;
}

sf_code sf_event_check_relpath(const char *field, const char *path,
                               sf_event_reason *reason, sf_err *err) {
  if (path[0] == '/')
    return sf_event_reject(
        reason, SF_REASON_PATH_ESCAPE, err,
        "%s '%.200s' is absolute; it must be relative to the staging root", field, path);
  const char *p = path;
  for (;;) {
    const char *slash = strchr(p, '/');
    size_t n = slash ? (size_t)(slash - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.')
      return sf_event_reject(
          reason, SF_REASON_PATH_ESCAPE, err,
          "%s '%.200s' has a '..' component; it must stay inside the staging root", field,
          path);
    if (n == 0)
      return sf_event_reject(
          reason, SF_REASON_INVALID_FIELD, err,
          "%s '%.200s' has an empty component (a doubled or trailing '/')", field, path);
    if (n == 1 && p[0] == '.')
      return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                             "%s '%.200s' has a '.' component; write the path without it",
                             field, path);
    if (!slash) return SF_OK;
    p = slash + 1;
  }
}

sf_code sf_shard_staged_validate(const sf_shard_staged *e, sf_event_reason *reason,
                                 sf_err *err) {
  return sf_evrec_validate(&sf_evrec_shard_staged, e, "ShardStaged", reason, err);
}

sf_code sf_segments_committed_validate(const sf_segments_committed *e,
                                       sf_event_reason *reason, sf_err *err) {
  return sf_evrec_validate(&sf_evrec_segments_committed, e, "SegmentsCommitted", reason,
                           err);
}

sf_code sf_shard_rejected_validate(const sf_shard_rejected *e, sf_event_reason *reason,
                                   sf_err *err) {
  return sf_evrec_validate(&sf_evrec_shard_rejected, e, "ShardRejected", reason, err);
}

sf_code sf_segments_compacted_validate(const sf_segments_compacted *e,
                                       sf_event_reason *reason, sf_err *err) {
  return sf_evrec_validate(&sf_evrec_segments_compacted, e, "SegmentsCompacted", reason,
                           err);
}

sf_code sf_event_validate(const sf_event *e, sf_event_reason *reason, sf_err *err) {
  switch (e->type) {
    case SF_EVENT_SHARD_STAGED:
      return sf_shard_staged_validate(&e->u.staged, reason, err);
    case SF_EVENT_SEGMENTS_COMMITTED:
      return sf_segments_committed_validate(&e->u.committed, reason, err);
    case SF_EVENT_SHARD_REJECTED:
      return sf_shard_rejected_validate(&e->u.rejected, reason, err);
    case SF_EVENT_SEGMENTS_COMPACTED:
      return sf_segments_compacted_validate(&e->u.compacted, reason, err);
  }
  return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err, "unknown event type %d",
                         (int)e->type);
}
