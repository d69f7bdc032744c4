/* event.c - see event.h. */
#include "event.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/base/fragset.h"

static const char *const type_names[SF_EVENT_TYPE_COUNT] = {
    "ShardStaged", "SegmentsCommitted", "ShardRejected"};

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
                    "unknown event type '%s': use ShardStaged, SegmentsCommitted or "
                    "ShardRejected",
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

/* ---- clear / copy / equal ---------------------------------------------- */

/* CRoaring 0.2 (Debian 12) dereferences NULL in roaring_bitmap_free. */
static void bm_free(roaring_bitmap_t *b) {
  if (b) roaring_bitmap_free(b);
}

void sf_shard_staged_clear(sf_shard_staged *e) {
  if (!e) return;
  free(e->event_id);
  free(e->dataset_uri);
  free(e->index_name);
  free(e->column);
  free(e->staging_id);
  free(e->shard_id);
  free(e->shard_path);
  bm_free(e->fragments);
  bm_free(e->expected_fragments);
  memset(e, 0, sizeof *e);
}

void sf_segment_info_clear(sf_segment_info *s) {
  if (!s) return;
  free(s->segment_id);
  free(s->path);
  bm_free(s->fragments);
  for (size_t i = 0; i < s->num_shard_ids; i++) free(s->shard_ids[i]);
  free(s->shard_ids);
  memset(s, 0, sizeof *s);
}

void sf_segments_committed_clear(sf_segments_committed *e) {
  if (!e) return;
  free(e->event_id);
  free(e->dataset_uri);
  free(e->index_name);
  free(e->staging_id);
  for (size_t i = 0; i < e->num_segments; i++) sf_segment_info_clear(&e->segments[i]);
  free(e->segments);
  memset(e, 0, sizeof *e);
}

void sf_shard_rejected_clear(sf_shard_rejected *e) {
  if (!e) return;
  free(e->reason);
  free(e->message);
  free(e->staging_id);
  free(e->shard_id);
  free(e->source_topic);
  free(e->original_value);
  memset(e, 0, sizeof *e);
}

void sf_event_clear(sf_event *e) {
  if (!e) return;
  switch (e->type) {
    case SF_EVENT_SHARD_STAGED:
      sf_shard_staged_clear(&e->u.staged);
      break;
    case SF_EVENT_SEGMENTS_COMMITTED:
      sf_segments_committed_clear(&e->u.committed);
      break;
    case SF_EVENT_SHARD_REJECTED:
      sf_shard_rejected_clear(&e->u.rejected);
      break;
  }
}

static int dup_str(char **dst, const char *src) {
  *dst = NULL;
  if (!src) return 0;
  *dst = strdup(src);
  return *dst ? 0 : -1;
}

sf_code sf_shard_staged_copy(sf_shard_staged *dst, const sf_shard_staged *src,
                             sf_err *err) {
  *dst = *src;
  dst->event_id = dst->dataset_uri = dst->index_name = dst->column = NULL;
  dst->staging_id = dst->shard_id = dst->shard_path = NULL;
  dst->fragments = dst->expected_fragments = NULL;
  if (dup_str(&dst->event_id, src->event_id) ||
      dup_str(&dst->dataset_uri, src->dataset_uri) ||
      dup_str(&dst->index_name, src->index_name) || dup_str(&dst->column, src->column) ||
      dup_str(&dst->staging_id, src->staging_id) ||
      dup_str(&dst->shard_id, src->shard_id) ||
      dup_str(&dst->shard_path, src->shard_path) ||
      (src->fragments && !(dst->fragments = roaring_bitmap_copy(src->fragments))) ||
      (src->expected_fragments &&
       !(dst->expected_fragments = roaring_bitmap_copy(src->expected_fragments)))) {
    sf_shard_staged_clear(dst);
    return sf_err_set(err, SF_ENOMEM, "out of memory copying a ShardStaged event");
  }
  return SF_OK;
}

static bool str_eq(const char *a, const char *b) {
  return a == b || (a && b && !strcmp(a, b));
}

static bool bm_eq(const roaring_bitmap_t *a, const roaring_bitmap_t *b) {
  return a == b || (a && b && roaring_bitmap_equals(a, b));
}

bool sf_shard_staged_equal(const sf_shard_staged *a, const sf_shard_staged *b) {
  return str_eq(a->event_id, b->event_id) && str_eq(a->dataset_uri, b->dataset_uri) &&
         str_eq(a->index_name, b->index_name) && str_eq(a->column, b->column) &&
         str_eq(a->staging_id, b->staging_id) && str_eq(a->shard_id, b->shard_id) &&
         str_eq(a->shard_path, b->shard_path) && a->shard_bytes == b->shard_bytes &&
         a->num_rows == b->num_rows && bm_eq(a->fragments, b->fragments) &&
         bm_eq(a->expected_fragments, b->expected_fragments) &&
         a->index_type == b->index_type && a->metric == b->metric && a->dim == b->dim &&
         a->num_partitions == b->num_partitions &&
         a->quantizer_checksum == b->quantizer_checksum &&
         a->has_target_segment_bytes == b->has_target_segment_bytes &&
         (!a->has_target_segment_bytes ||
          a->target_segment_bytes == b->target_segment_bytes) &&
         a->staged_at_ms == b->staged_at_ms;
}

const char *sf_shard_staged_job_diff(const sf_shard_staged *a, const sf_shard_staged *b,
                                     char *av, char *bv, size_t n) {
  const char *f = NULL;
  const char *as = NULL, *bs = NULL; /* values that need no formatting */
  if (n) av[0] = bv[0] = 0;
  if (!str_eq(a->dataset_uri, b->dataset_uri))
    f = "dataset_uri", as = a->dataset_uri, bs = b->dataset_uri;
  else if (!str_eq(a->index_name, b->index_name))
    f = "index_name", as = a->index_name, bs = b->index_name;
  else if (!str_eq(a->column, b->column))
    f = "column", as = a->column, bs = b->column;
  else if (a->index_type != b->index_type)
    f = "index_type", as = sf_index_type_name(a->index_type),
    bs = sf_index_type_name(b->index_type);
  else if (a->metric != b->metric)
    f = "metric", as = sf_metric_name(a->metric), bs = sf_metric_name(b->metric);
  else if (a->dim != b->dim)
    f = "dim", snprintf(av, n, "%d", a->dim), snprintf(bv, n, "%d", b->dim);
  else if (a->num_partitions != b->num_partitions)
    f = "num_partitions", snprintf(av, n, "%d", a->num_partitions),
    snprintf(bv, n, "%d", b->num_partitions);
  else if (a->has_target_segment_bytes != b->has_target_segment_bytes ||
           (a->has_target_segment_bytes &&
            a->target_segment_bytes != b->target_segment_bytes)) {
    f = "target_segment_bytes";
    if (a->has_target_segment_bytes)
      snprintf(av, n, "%lld", (long long)a->target_segment_bytes);
    else
      as = "null";
    if (b->has_target_segment_bytes)
      snprintf(bv, n, "%lld", (long long)b->target_segment_bytes);
    else
      bs = "null";
  } else if (!bm_eq(a->expected_fragments, b->expected_fragments))
    f = "expected_fragments", as = "another set", bs = "this one";
  if (f && as) snprintf(av, n, "%s", as);
  if (f && bs) snprintf(bv, n, "%s", bs);
  return f;
}

bool sf_shard_staged_same_shard(const sf_shard_staged *a, const sf_shard_staged *b) {
  sf_shard_staged x = *a; /* a shallow copy: only its two scalars change */
  x.event_id = b->event_id;
  x.staged_at_ms = b->staged_at_ms;
  return sf_shard_staged_equal(&x, b);
}

static bool segment_eq(const sf_segment_info *a, const sf_segment_info *b) {
  if (!str_eq(a->segment_id, b->segment_id) || !str_eq(a->path, b->path) ||
      a->bytes != b->bytes || a->num_rows != b->num_rows ||
      !bm_eq(a->fragments, b->fragments) || a->num_shard_ids != b->num_shard_ids)
    return false;
  for (size_t i = 0; i < a->num_shard_ids; i++)
    if (!str_eq(a->shard_ids[i], b->shard_ids[i])) return false;
  return true;
}

bool sf_segments_committed_equal(const sf_segments_committed *a,
                                 const sf_segments_committed *b) {
  if (!str_eq(a->event_id, b->event_id) || !str_eq(a->dataset_uri, b->dataset_uri) ||
      !str_eq(a->index_name, b->index_name) || !str_eq(a->staging_id, b->staging_id) ||
      a->catalog_version != b->catalog_version || a->num_segments != b->num_segments ||
      a->total_rows != b->total_rows || a->num_shards != b->num_shards ||
      a->first_staged_at_ms != b->first_staged_at_ms ||
      a->committed_at_ms != b->committed_at_ms)
    return false;
  for (size_t i = 0; i < a->num_segments; i++)
    if (!segment_eq(&a->segments[i], &b->segments[i])) return false;
  return true;
}

bool sf_shard_rejected_equal(const sf_shard_rejected *a, const sf_shard_rejected *b) {
  return str_eq(a->reason, b->reason) && str_eq(a->message, b->message) &&
         str_eq(a->staging_id, b->staging_id) && str_eq(a->shard_id, b->shard_id) &&
         str_eq(a->source_topic, b->source_topic) &&
         a->source_partition == b->source_partition &&
         a->source_offset == b->source_offset &&
         a->original_value_len == b->original_value_len &&
         (a->original_value_len == 0 ||
          !memcmp(a->original_value, b->original_value, a->original_value_len)) &&
         a->rejected_at_ms == b->rejected_at_ms;
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

/* Free text (URIs, paths, messages): present, bounded, UTF-8, and free of
 * control characters that would garble logs and terminals. */
static sf_code check_text(const char *ev, const char *field, const char *s, size_t max,
                          bool allow_empty, sf_event_reason *reason, sf_err *err) {
  if (!s)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err, "%s.%s is missing", ev,
                           field);
  size_t n = strlen(s);
  if (n == 0 && !allow_empty)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is empty; it must be set", ev, field);
  if (n > max)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is %zu bytes long; at most %zu are allowed", ev, field,
                           n, max);
  if (!utf8_ok((const unsigned char *)s, n))
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is not valid UTF-8", ev, field);
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
      return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                             "%s.%s contains control character 0x%02x at byte %zu", ev,
                             field, (unsigned char)s[i], i);
  return SF_OK;
}

/* Ids end up in file names and log lines: printable ASCII without spaces,
 * at most SF_EVENT_ID_MAX bytes, and (when `name`) no '/' and not "." or "..". */
static sf_code check_id(const char *ev, const char *field, const char *s, bool name,
                        sf_event_reason *reason, sf_err *err) {
  if (!s || !*s)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is empty; it must be set", ev, field);
  size_t n = strlen(s);
  if (n > SF_EVENT_ID_MAX)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is %zu bytes long; ids are at most %d bytes", ev, field,
                           n, SF_EVENT_ID_MAX);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= 0x20 || c >= 0x7f)
      return sf_event_reject(
          reason, SF_REASON_INVALID_FIELD, err,
          "%s.%s '%.64s' has byte 0x%02x at %zu; ids are printable ASCII without "
          "spaces",
          ev, field, s, c, i);
    if (name && (c == '/' || c == '\\'))
      return sf_event_reject(
          reason, SF_REASON_INVALID_FIELD, err,
          "%s.%s '%.64s' contains '%c'; it names a file, so it may not", ev, field, s, c);
  }
  if (name && (!strcmp(s, ".") || !strcmp(s, "..")))
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err, "%s.%s may not be '%s'",
                           ev, field, s);
  return SF_OK;
}

static sf_code check_range(const char *ev, const char *field, int64_t v, int64_t lo,
                           int64_t hi, sf_event_reason *reason, sf_err *err) {
  if (v >= lo && v <= hi) return SF_OK;
  if (hi == INT64_MAX)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is %lld; it must be >= %lld", ev, field, (long long)v,
                           (long long)lo);
  return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                         "%s.%s is %lld; it must be %lld..%lld", ev, field, (long long)v,
                         (long long)lo, (long long)hi);
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

#define TRY(x)                    \
  do {                            \
    sf_code rc_ = (x);            \
    if (rc_ != SF_OK) return rc_; \
  } while (0)

static sf_code check_bitmap(const char *ev, const char *field, const roaring_bitmap_t *b,
                            sf_event_reason *reason, sf_err *err) {
  if (!b || roaring_bitmap_is_empty(b))
    return sf_event_reject(
        reason, SF_REASON_INVALID_FIELD, err,
        "%s.%s is an empty fragment set; it must name at least one fragment", ev, field);
  return SF_OK;
}

sf_code sf_shard_staged_validate(const sf_shard_staged *e, sf_event_reason *reason,
                                 sf_err *err) {
  const char *ev = "ShardStaged";
  TRY(check_id(ev, "event_id", e->event_id, false, reason, err));
  TRY(check_text(ev, "dataset_uri", e->dataset_uri, SF_EVENT_TEXT_MAX, false, reason,
                 err));
  TRY(check_id(ev, "index_name", e->index_name, true, reason, err));
  TRY(check_text(ev, "column", e->column, SF_EVENT_ID_MAX, false, reason, err));
  TRY(check_id(ev, "staging_id", e->staging_id, true, reason, err));
  TRY(check_id(ev, "shard_id", e->shard_id, true, reason, err));
  TRY(check_text(ev, "shard_path", e->shard_path, SF_EVENT_TEXT_MAX, false, reason, err));
  TRY(sf_event_check_relpath("ShardStaged.shard_path", e->shard_path, reason, err));
  TRY(check_range(ev, "shard_bytes", e->shard_bytes, 0, INT64_MAX, reason, err));
  TRY(check_range(ev, "num_rows", e->num_rows, 0, INT64_MAX, reason, err));
  TRY(check_bitmap(ev, "fragments", e->fragments, reason, err));
  TRY(check_bitmap(ev, "expected_fragments", e->expected_fragments, reason, err));
  if (!roaring_bitmap_is_subset(e->fragments, e->expected_fragments)) {
    roaring_bitmap_t *extra = roaring_bitmap_andnot(e->fragments, e->expected_fragments);
    char *s = extra ? sf_fragset_format_short(extra, 8) : NULL;
    sf_code rc =
        sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                        "ShardStaged.fragments has fragments %s that are not in "
                        "expected_fragments; a shard covers only fragments of its build",
                        s ? s : "(?)");
    free(s);
    bm_free(extra);
    return rc;
  }
  if ((unsigned)e->index_type > SF_IVF_PQ)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "ShardStaged.index_type %d is unknown", (int)e->index_type);
  if ((unsigned)e->metric > SF_DOT)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "ShardStaged.metric %d is unknown", (int)e->metric);
  TRY(check_range(ev, "dim", e->dim, 1, SF_MAX_DIM, reason, err));
  TRY(check_range(ev, "num_partitions", e->num_partitions, 1, SF_MAX_NLIST, reason, err));
  if (e->has_target_segment_bytes)
    TRY(check_range(ev, "target_segment_bytes", e->target_segment_bytes, 1, INT64_MAX,
                    reason, err));
  TRY(check_range(ev, "staged_at_ms", e->staged_at_ms, 0, INT64_MAX, reason, err));
  return SF_OK;
}

sf_code sf_segments_committed_validate(const sf_segments_committed *e,
                                       sf_event_reason *reason, sf_err *err) {
  const char *ev = "SegmentsCommitted";
  TRY(check_id(ev, "event_id", e->event_id, false, reason, err));
  TRY(check_text(ev, "dataset_uri", e->dataset_uri, SF_EVENT_TEXT_MAX, false, reason,
                 err));
  TRY(check_id(ev, "index_name", e->index_name, true, reason, err));
  TRY(check_id(ev, "staging_id", e->staging_id, true, reason, err));
  TRY(check_range(ev, "catalog_version", e->catalog_version, 0, INT64_MAX, reason, err));
  if (e->num_segments == 0)
    return sf_event_reject(
        reason, SF_REASON_INVALID_FIELD, err,
        "SegmentsCommitted.segments is empty; a commit has at least one segment");
  for (size_t i = 0; i < e->num_segments; i++) {
    const sf_segment_info *s = &e->segments[i];
    char where[64];
    snprintf(where, sizeof where, "SegmentsCommitted.segments[%zu]", i);
    TRY(check_id(where, "segment_id", s->segment_id, true, reason, err));
    TRY(check_text(where, "path", s->path, SF_EVENT_TEXT_MAX, false, reason, err));
    TRY(check_range(where, "bytes", s->bytes, 0, INT64_MAX, reason, err));
    TRY(check_range(where, "num_rows", s->num_rows, 0, INT64_MAX, reason, err));
    TRY(check_bitmap(where, "fragments", s->fragments, reason, err));
    if (s->num_shard_ids == 0)
      return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                             "%s.shard_ids is empty; a segment merges at least one shard",
                             where);
    for (size_t j = 0; j < s->num_shard_ids; j++)
      TRY(check_id(where, "shard_ids[]", s->shard_ids[j], true, reason, err));
  }
  TRY(check_range(ev, "total_rows", e->total_rows, 0, INT64_MAX, reason, err));
  TRY(check_range(ev, "num_shards", e->num_shards, 1, INT32_MAX, reason, err));
  TRY(check_range(ev, "first_staged_at_ms", e->first_staged_at_ms, 0, INT64_MAX, reason,
                  err));
  TRY(check_range(ev, "committed_at_ms", e->committed_at_ms, 0, INT64_MAX, reason, err));
  return SF_OK;
}

sf_code sf_shard_rejected_validate(const sf_shard_rejected *e, sf_event_reason *reason,
                                   sf_err *err) {
  const char *ev = "ShardRejected";
  /* Codes may be added over time, so any upper-case code is accepted. */
  if (!e->reason || !*e->reason || strlen(e->reason) > 64 ||
      strspn(e->reason, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != strlen(e->reason))
    return sf_event_reject(
        reason, SF_REASON_INVALID_FIELD, err,
        "ShardRejected.reason '%.64s' is not a code of upper-case letters and '_' "
        "(e.g. DECODE_ERROR)",
        e->reason ? e->reason : "");
  /* The message may quote bad bytes, hence only the UTF-8 rule, no control rule. */
  if (!e->message || !utf8_ok((const unsigned char *)e->message, strlen(e->message)))
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "ShardRejected.message is missing or not valid UTF-8");
  /* staging_id and shard_id are copied from an event that may itself be bad,
   * so they are only held to the UTF-8 rule. */
  if (e->staging_id &&
      !utf8_ok((const unsigned char *)e->staging_id, strlen(e->staging_id)))
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "ShardRejected.staging_id is not valid UTF-8");
  if (e->shard_id && !utf8_ok((const unsigned char *)e->shard_id, strlen(e->shard_id)))
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "ShardRejected.shard_id is not valid UTF-8");
  TRY(check_text(ev, "source_topic", e->source_topic, SF_EVENT_ID_MAX, false, reason,
                 err));
  TRY(check_range(ev, "source_partition", e->source_partition, -1, INT32_MAX, reason,
                  err));
  TRY(check_range(ev, "source_offset", e->source_offset, -1, INT64_MAX, reason, err));
  TRY(check_range(ev, "rejected_at_ms", e->rejected_at_ms, 0, INT64_MAX, reason, err));
  return SF_OK;
}

sf_code sf_event_validate(const sf_event *e, sf_event_reason *reason, sf_err *err) {
  switch (e->type) {
    case SF_EVENT_SHARD_STAGED:
      return sf_shard_staged_validate(&e->u.staged, reason, err);
    case SF_EVENT_SEGMENTS_COMMITTED:
      return sf_segments_committed_validate(&e->u.committed, reason, err);
    case SF_EVENT_SHARD_REJECTED:
      return sf_shard_rejected_validate(&e->u.rejected, reason, err);
  }
  return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err, "unknown event type %d",
                         (int)e->type);
}
