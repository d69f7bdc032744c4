/*
 * event_fields.c - the field tables (declared in event.h) and the walks over
 * them: clear, copy, equality, difference, digest, validation, and the
 * check of a table against its schema.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/base/fragset.h"
#include "schemas/event.h"

/* ---- the tables ---------------------------------------------------------- */

static const char *type_name(int v) {
  return sf_index_type_name((sf_index_type)v);
}
static sf_code type_parse(const char *s, int *v, sf_err *err) {
  sf_index_type t = SF_IVF_FLAT;
  sf_code rc = sf_index_type_parse(s, &t, err);
  *v = (int)t;
  return rc;
}
static const char *metric_name(int v) {
  return sf_metric_name((sf_metric)v);
}
static sf_code metric_parse(const char *s, int *v, sf_err *err) {
  sf_metric m = SF_L2;
  sf_code rc = sf_metric_parse(s, &m, err);
  *v = (int)m;
  return rc;
}
_Static_assert(sizeof(sf_index_type) == sizeof(int) && sizeof(sf_metric) == sizeof(int),
               "enum fields are stored as int");
static const sf_evf_enum index_types = {3, type_name, type_parse};
static const sf_evf_enum metrics = {3, metric_name, metric_parse};

static sf_code fragments_within_expected(const void *rec, const char *ev,
                                         sf_event_reason *reason, sf_err *err);

#define S_ sf_shard_staged
#define ROW(T, field, k, ...) \
  { .name = #field, .kind = (k), .off = offsetof(T, field), __VA_ARGS__ }
#define RANGE(a, b) .rule = SF_EVR_RANGE, .lo = (a), .hi = (b)
#define TEXT(max) .rule = SF_EVR_TEXT, .hi = (max)

/* ShardStaged, in .avsc order. `roles` say what a job compares. */
static const sf_evfield staged_fields[] = {
    ROW(S_, event_id, SF_EVF_STRING, .rule = SF_EVR_ID, .roles = SF_FIELD_DELIVERY),
    ROW(S_, dataset_uri, SF_EVF_STRING, TEXT(SF_EVENT_TEXT_MAX), .roles = SF_FIELD_JOB),
    ROW(S_, index_name, SF_EVF_STRING, .rule = SF_EVR_NAME, .roles = SF_FIELD_JOB),
    ROW(S_, column, SF_EVF_STRING, TEXT(SF_EVENT_ID_MAX), .roles = SF_FIELD_JOB),
    ROW(S_, staging_id, SF_EVF_STRING, .rule = SF_EVR_NAME), /* the job's key */
    ROW(S_, shard_id, SF_EVF_STRING, .rule = SF_EVR_NAME, .roles = SF_FIELD_SHARD),
    ROW(S_, shard_path, SF_EVF_STRING, .rule = SF_EVR_PATH, .hi = SF_EVENT_TEXT_MAX,
        .roles = SF_FIELD_SHARD),
    ROW(S_, shard_bytes, SF_EVF_LONG, RANGE(0, INT64_MAX), .roles = SF_FIELD_SHARD),
    ROW(S_, num_rows, SF_EVF_LONG, RANGE(0, INT64_MAX), .roles = SF_FIELD_SHARD),
    ROW(S_, fragments, SF_EVF_BITMAP, .rule = SF_EVR_FRAGS, .roles = SF_FIELD_SHARD),
    ROW(S_, expected_fragments, SF_EVF_BITMAP, .rule = SF_EVR_FRAGS,
        .roles = SF_FIELD_JOB, .check = fragments_within_expected),
    ROW(S_, index_type, SF_EVF_ENUM, .sym = &index_types, .rule = SF_EVR_KNOWN,
        .roles = SF_FIELD_JOB),
    ROW(S_, metric, SF_EVF_ENUM, .sym = &metrics, .rule = SF_EVR_KNOWN,
        .roles = SF_FIELD_JOB),
    ROW(S_, dim, SF_EVF_INT, RANGE(1, SF_MAX_DIM), .roles = SF_FIELD_JOB),
    ROW(S_, num_partitions, SF_EVF_INT, RANGE(1, SF_MAX_NLIST), .roles = SF_FIELD_JOB),
    ROW(S_, quantizer_checksum, SF_EVF_LONG, .flags = SF_EVF_HEX,
        .roles = SF_FIELD_QUANTIZER),
    ROW(S_, target_segment_bytes, SF_EVF_LONG, .flags = SF_EVF_OPTIONAL,
        .aux = offsetof(S_, has_target_segment_bytes), RANGE(1, INT64_MAX),
        .roles = SF_FIELD_JOB),
    ROW(S_, staged_at_ms, SF_EVF_LONG, RANGE(0, INT64_MAX), .roles = SF_FIELD_DELIVERY),
    ROW(S_, producer, SF_EVF_STRING, .flags = SF_EVF_OPTIONAL, TEXT(SF_EVENT_ID_MAX),
        .roles = SF_FIELD_DELIVERY),
};
#undef S_

#define G_ sf_seginfo
static const sf_evfield segment_fields[] = {
    ROW(G_, segment_id, SF_EVF_STRING, .rule = SF_EVR_NAME),
    ROW(G_, path, SF_EVF_STRING, TEXT(SF_EVENT_TEXT_MAX)),
    ROW(G_, bytes, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(G_, num_rows, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(G_, fragments, SF_EVF_BITMAP, .rule = SF_EVR_FRAGS),
    ROW(G_, shard_ids, SF_EVF_STRINGS, .aux = offsetof(G_, num_shards),
        .aux_size = sizeof(uint32_t), .rule = SF_EVR_NAME,
        .why_nonempty = "a segment merges at least one shard"),
};
#undef G_

#define C_ sf_segments_committed
static const sf_evfield committed_fields[] = {
    ROW(C_, event_id, SF_EVF_STRING, .rule = SF_EVR_ID),
    ROW(C_, dataset_uri, SF_EVF_STRING, TEXT(SF_EVENT_TEXT_MAX)),
    ROW(C_, index_name, SF_EVF_STRING, .rule = SF_EVR_NAME),
    ROW(C_, staging_id, SF_EVF_STRING, .rule = SF_EVR_NAME),
    ROW(C_, catalog_version, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(C_, segments, SF_EVF_RECORDS, .aux = offsetof(C_, num_segments),
        .aux_size = sizeof(size_t), .items = &sf_evrec_segment_info,
        .why_nonempty = "a commit has at least one segment"),
    ROW(C_, total_rows, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(C_, num_shards, SF_EVF_INT, RANGE(1, INT32_MAX)),
    ROW(C_, first_staged_at_ms, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(C_, committed_at_ms, SF_EVF_LONG, RANGE(0, INT64_MAX)),
};
#undef C_

/* staging_id, shard_id and producer are copied from an event that may itself
 * be bad, so they are held to the UTF-8 rule only; so is the message, which
 * may quote bad bytes. */
#define R_ sf_shard_rejected
static const sf_evfield rejected_fields[] = {
    ROW(R_, reason, SF_EVF_STRING, .rule = SF_EVR_CODE),
    ROW(R_, message, SF_EVF_STRING, .rule = SF_EVR_UTF8),
    ROW(R_, staging_id, SF_EVF_STRING, .flags = SF_EVF_OPTIONAL, .rule = SF_EVR_UTF8),
    ROW(R_, shard_id, SF_EVF_STRING, .flags = SF_EVF_OPTIONAL, .rule = SF_EVR_UTF8),
    ROW(R_, source_topic, SF_EVF_STRING, TEXT(SF_EVENT_ID_MAX)),
    ROW(R_, source_partition, SF_EVF_INT, RANGE(-1, INT32_MAX)),
    ROW(R_, source_offset, SF_EVF_LONG, RANGE(-1, INT64_MAX)),
    ROW(R_, original_value, SF_EVF_BYTES, .aux = offsetof(R_, original_value_len)),
    ROW(R_, rejected_at_ms, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(R_, producer, SF_EVF_STRING, .flags = SF_EVF_OPTIONAL, .rule = SF_EVR_UTF8),
};
#undef R_

/* A compacted segment is an sf_seginfo without shard ids: its inputs are
 * segments, named once in the event's removed_segment_ids. */
#define G_ sf_seginfo
static const sf_evfield compacted_segment_fields[] = {
    ROW(G_, segment_id, SF_EVF_STRING, .rule = SF_EVR_NAME),
    ROW(G_, path, SF_EVF_STRING, TEXT(SF_EVENT_TEXT_MAX)),
    ROW(G_, bytes, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(G_, num_rows, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(G_, fragments, SF_EVF_BITMAP, .rule = SF_EVR_FRAGS),
};
#undef G_

#define K_ sf_segments_compacted
static const sf_evfield compacted_fields[] = {
    ROW(K_, event_id, SF_EVF_STRING, .rule = SF_EVR_ID),
    ROW(K_, dataset_uri, SF_EVF_STRING, TEXT(SF_EVENT_TEXT_MAX)),
    ROW(K_, index_name, SF_EVF_STRING, .rule = SF_EVR_NAME),
    ROW(K_, catalog_version, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(K_, removed_segment_ids, SF_EVF_STRINGS, .aux = offsetof(K_, num_removed),
        .aux_size = sizeof(size_t), .rule = SF_EVR_NAME,
        .why_nonempty = "a compaction swaps out at least one segment"),
    ROW(K_, added_segments, SF_EVF_RECORDS, .aux = offsetof(K_, num_added),
        .aux_size = sizeof(size_t), .items = &sf_evrec_compacted_segment,
        .why_nonempty = "a compaction adds at least one segment"),
    ROW(K_, total_rows, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(K_, bytes_read, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(K_, bytes_written, SF_EVF_LONG, RANGE(0, INT64_MAX)),
    ROW(K_, compacted_at_ms, SF_EVF_LONG, RANGE(0, INT64_MAX)),
};
#undef K_

#define NROWS(a) (sizeof a / sizeof a[0])
const sf_evrec sf_evrec_shard_staged = {"ShardStaged", sizeof(sf_shard_staged),
                                        staged_fields, NROWS(staged_fields), true};
const sf_evrec sf_evrec_segment_info = {"SegmentInfo", sizeof(sf_seginfo), segment_fields,
                                        NROWS(segment_fields), false};
const sf_evrec sf_evrec_segments_committed = {
    "SegmentsCommitted", sizeof(sf_segments_committed), committed_fields,
    NROWS(committed_fields), false};
const sf_evrec sf_evrec_shard_rejected = {"ShardRejected", sizeof(sf_shard_rejected),
                                          rejected_fields, NROWS(rejected_fields), false};
const sf_evrec sf_evrec_compacted_segment = {"CompactedSegment", sizeof(sf_seginfo),
                                             compacted_segment_fields,
                                             NROWS(compacted_segment_fields), false};
const sf_evrec sf_evrec_segments_compacted = {
    "SegmentsCompacted", sizeof(sf_segments_compacted), compacted_fields,
    NROWS(compacted_fields), false};
_Static_assert(NROWS(staged_fields) <= SF_EVREC_MAX_FIELDS, "raise SF_EVREC_MAX_FIELDS");

const sf_evrec *sf_evrec_of(sf_event_type t) {
  switch (t) {
    case SF_EVENT_SHARD_STAGED:
      return &sf_evrec_shard_staged;
    case SF_EVENT_SEGMENTS_COMMITTED:
      return &sf_evrec_segments_committed;
    case SF_EVENT_SHARD_REJECTED:
      return &sf_evrec_shard_rejected;
    case SF_EVENT_SEGMENTS_COMPACTED:
      return &sf_evrec_segments_compacted;
  }
  return NULL;
}

void *sf_event_body(sf_event *e) {
  return &e->u;
}
const void *sf_event_body_const(const sf_event *e) {
  return &e->u;
}

/* ---- access -------------------------------------------------------------- */

size_t sf_evf_count(const void *e, const sf_evfield *f) {
  const char *p = (const char *)e + f->aux;
  if (f->aux_size == sizeof(uint32_t)) return *(const uint32_t *)p;
  return *(const size_t *)p;
}

void sf_evf_set_count(void *e, const sf_evfield *f, size_t n) {
  char *p = (char *)e + f->aux;
  if (f->aux_size == sizeof(uint32_t))
    *(uint32_t *)p = (uint32_t)n;
  else
    *(size_t *)p = n;
}

bool sf_evf_present(const void *e, const sf_evfield *f) {
  if (!(f->flags & SF_EVF_OPTIONAL)) return true;
  if (f->kind == SF_EVF_STRING) return *SF_EVF_CAT(e, f, char *) != NULL;
  return *(const bool *)((const char *)e + f->aux);
}

/* A number field as int64 (LONG, INT, ENUM). */
static int64_t num(const void *e, const sf_evfield *f) {
  if (f->kind == SF_EVF_LONG) return *SF_EVF_CAT(e, f, int64_t);
  if (f->kind == SF_EVF_INT) return *SF_EVF_CAT(e, f, int32_t);
  return *SF_EVF_CAT(e, f, int);
}

static size_t bytes_len(const void *e, const sf_evfield *f) {
  return *(const size_t *)((const char *)e + f->aux);
}

/* ---- clear / copy -------------------------------------------------------- */

/* CRoaring 0.2 (Debian 12) dereferences NULL in roaring_bitmap_free. */
static void bm_free(roaring_bitmap_t *b) {
  if (b) roaring_bitmap_free(b);
}

void sf_evrec_clear(const sf_evrec *rec, void *e) {
  if (!e) return;
  for (size_t i = 0; i < rec->nfields; i++) {
    const sf_evfield *f = &rec->fields[i];
    switch (f->kind) {
      case SF_EVF_STRING:
      case SF_EVF_BYTES:
        free(*SF_EVF_AT(e, f, void *));
        break;
      case SF_EVF_BITMAP:
        bm_free(*SF_EVF_AT(e, f, roaring_bitmap_t *));
        break;
      case SF_EVF_STRINGS: {
        char **v = *SF_EVF_AT(e, f, char **);
        for (size_t k = 0, n = sf_evf_count(e, f); v && k < n; k++) free(v[k]);
        free(v);
        break;
      }
      case SF_EVF_RECORDS: {
        char *v = *SF_EVF_AT(e, f, char *);
        for (size_t k = 0, n = sf_evf_count(e, f); v && k < n; k++)
          sf_evrec_clear(f->items, v + k * f->items->size);
        free(v);
        break;
      }
      default:
        break;
    }
  }
  memset(e, 0, rec->size);
}

static bool owns(const sf_evfield *f) {
  return f->kind == SF_EVF_STRING || f->kind == SF_EVF_BYTES ||
         f->kind == SF_EVF_BITMAP || f->kind == SF_EVF_STRINGS ||
         f->kind == SF_EVF_RECORDS;
}

/* Forgets the owned members of a shallow copy without freeing them. */
static void detach(const sf_evrec *rec, void *e) {
  for (size_t i = 0; i < rec->nfields; i++) {
    const sf_evfield *f = &rec->fields[i];
    if (owns(f)) *SF_EVF_AT(e, f, void *) = NULL;
    if (f->kind == SF_EVF_STRINGS || f->kind == SF_EVF_RECORDS) sf_evf_set_count(e, f, 0);
  }
}

static int copy_field(const sf_evfield *f, void *dst, const void *src, sf_err *err) {
  if (!owns(f)) return 0; /* copied with the struct */
  const void *s = *SF_EVF_CAT(src, f, void *);
  void **d = SF_EVF_AT(dst, f, void *);
  if (!s) return 0;
  switch (f->kind) {
    case SF_EVF_STRING:
      return !(*d = strdup(s));
    case SF_EVF_BITMAP:
      return !(*d = roaring_bitmap_copy(s));
    case SF_EVF_BYTES: {
      size_t n = bytes_len(src, f);
      if (!(*d = malloc(n ? n : 1))) return 1;
      memcpy(*d, s, n);
      return 0;
    }
    case SF_EVF_STRINGS: {
      size_t n = sf_evf_count(src, f);
      char **v = calloc(n ? n : 1, sizeof *v);
      if (!(*d = v)) return 1;
      sf_evf_set_count(dst, f, n);
      for (size_t k = 0; k < n; k++)
        if (((char *const *)s)[k] && !(v[k] = strdup(((char *const *)s)[k]))) return 1;
      return 0;
    }
    case SF_EVF_RECORDS: {
      size_t n = sf_evf_count(src, f), sz = f->items->size;
      char *v = calloc(n ? n : 1, sz);
      if (!(*d = v)) return 1;
      sf_evf_set_count(dst, f, n);
      for (size_t k = 0; k < n; k++)
        if (sf_evrec_copy(f->items, v + k * sz, (const char *)s + k * sz, err)) return 1;
      return 0;
    }
    default:
      return 0;
  }
}

sf_code sf_evrec_copy(const sf_evrec *rec, void *dst, const void *src, sf_err *err) {
  memcpy(dst, src, rec->size);
  detach(rec, dst);
  for (size_t i = 0; i < rec->nfields; i++)
    if (copy_field(&rec->fields[i], dst, src, err)) {
      sf_evrec_clear(rec, dst);
      return sf_err_set(err, SF_ENOMEM, "out of memory copying a %s event", rec->name);
    }
  return SF_OK;
}

/* ---- equality, difference, digest ---------------------------------------- */

static bool str_eq(const char *a, const char *b) {
  return a == b || (a && b && !strcmp(a, b));
}

static bool bm_eq(const roaring_bitmap_t *a, const roaring_bitmap_t *b) {
  return a == b || (a && b && roaring_bitmap_equals(a, b));
}

static bool field_eq(const sf_evfield *f, const void *a, const void *b) {
  bool pa = sf_evf_present(a, f), pb = sf_evf_present(b, f);
  if (pa != pb) return false;
  if (!pa) return true;
  switch (f->kind) {
    case SF_EVF_STRING:
      return str_eq(*SF_EVF_CAT(a, f, char *), *SF_EVF_CAT(b, f, char *));
    case SF_EVF_LONG:
    case SF_EVF_INT:
    case SF_EVF_ENUM:
      return num(a, f) == num(b, f);
    case SF_EVF_BITMAP:
      return bm_eq(*SF_EVF_CAT(a, f, roaring_bitmap_t *),
                   *SF_EVF_CAT(b, f, roaring_bitmap_t *));
    case SF_EVF_BYTES: {
      size_t n = bytes_len(a, f);
      return n == bytes_len(b, f) &&
             (!n || !memcmp(*SF_EVF_CAT(a, f, void *), *SF_EVF_CAT(b, f, void *), n));
    }
    case SF_EVF_STRINGS: {
      size_t n = sf_evf_count(a, f);
      if (n != sf_evf_count(b, f)) return false;
      for (size_t k = 0; k < n; k++)
        if (!str_eq((*SF_EVF_CAT(a, f, char **))[k], (*SF_EVF_CAT(b, f, char **))[k]))
          return false;
      return true;
    }
    case SF_EVF_RECORDS: {
      size_t n = sf_evf_count(a, f), sz = f->items->size;
      if (n != sf_evf_count(b, f)) return false;
      for (size_t k = 0; k < n; k++)
        if (!sf_evrec_equal(f->items, *SF_EVF_CAT(a, f, char *) + k * sz,
                            *SF_EVF_CAT(b, f, char *) + k * sz, 0))
          return false;
      return true;
    }
  }
  return false;
}

bool sf_evrec_equal(const sf_evrec *rec, const void *a, const void *b,
                    unsigned skip_roles) {
  for (size_t i = 0; i < rec->nfields; i++)
    if (!(rec->fields[i].roles & skip_roles) && !field_eq(&rec->fields[i], a, b))
      return false;
  return true;
}

/* One field's value as text for a message about a difference. */
static void show(const sf_evfield *f, const void *e, bool first, char *out, size_t n) {
  if (!n) return;
  if (!sf_evf_present(e, f)) {
    snprintf(out, n, "null");
    return;
  }
  switch (f->kind) {
    case SF_EVF_STRING: {
      const char *s = *SF_EVF_CAT(e, f, char *);
      snprintf(out, n, "%s", s ? s : "");
      break;
    }
    case SF_EVF_LONG:
      if (f->flags & SF_EVF_HEX)
        snprintf(out, n, "%016llx", (unsigned long long)num(e, f));
      else
        snprintf(out, n, "%lld", (long long)num(e, f));
      break;
    case SF_EVF_INT:
      snprintf(out, n, "%d", (int)num(e, f));
      break;
    case SF_EVF_ENUM:
      snprintf(out, n, "%s", f->sym->name((int)num(e, f)));
      break;
    case SF_EVF_BITMAP:
      snprintf(out, n, "%s", first ? "another set" : "this one");
      break;
    case SF_EVF_BYTES:
      snprintf(out, n, "%zu bytes", bytes_len(e, f));
      break;
    default:
      snprintf(out, n, "%zu items", sf_evf_count(e, f));
      break;
  }
}

const char *sf_evrec_diff(const sf_evrec *rec, const void *a, const void *b,
                          unsigned roles, char *av, char *bv, size_t n) {
  if (n) av[0] = bv[0] = 0;
  for (size_t i = 0; i < rec->nfields; i++) {
    const sf_evfield *f = &rec->fields[i];
    if (!(f->roles & roles) || field_eq(f, a, b)) continue;
    show(f, a, true, av, n);
    show(f, b, false, bv, n);
    return f->name;
  }
  return NULL;
}

static uint64_t chain(uint64_t h, const void *p, size_t n) {
  return XXH3_64bits_withSeed(p, n, h);
}
static uint64_t chain_str(uint64_t h, const char *s) {
  return chain(h, s ? s : "", s ? strlen(s) + 1 : 1);
}
static uint64_t chain_i64(uint64_t h, int64_t v) {
  return chain(h, &v, sizeof v);
}

typedef struct bm_chain {
  uint64_t h;
  uint32_t buf[256];
  size_t n;
} bm_chain;

static bool bm_visit(uint32_t v, void *arg) {
  bm_chain *c = arg;
  c->buf[c->n++] = v;
  if (c->n == 256) c->h = chain(c->h, c->buf, sizeof c->buf), c->n = 0;
  return true;
}

/* The members of b, whatever its containers. */
static uint64_t chain_bitmap(uint64_t h, const roaring_bitmap_t *b) {
  bm_chain c = {.h = chain_i64(h, b ? (int64_t)roaring_bitmap_get_cardinality(b) : -1)};
  if (b) roaring_iterate(b, bm_visit, &c);
  return c.n ? chain(c.h, c.buf, c.n * sizeof c.buf[0]) : c.h;
}

static uint64_t digest(const sf_evrec *rec, const void *e, unsigned roles, bool all,
                       uint64_t h) {
  for (size_t i = 0; i < rec->nfields; i++) {
    const sf_evfield *f = &rec->fields[i];
    if (!all && !(f->roles & roles)) continue;
    bool present = sf_evf_present(e, f);
    h = chain_i64(h, present);
    if (!present) continue;
    switch (f->kind) {
      case SF_EVF_STRING:
        h = chain_str(h, *SF_EVF_CAT(e, f, char *));
        break;
      case SF_EVF_LONG:
      case SF_EVF_INT:
      case SF_EVF_ENUM:
        h = chain_i64(h, num(e, f));
        break;
      case SF_EVF_BITMAP:
        h = chain_bitmap(h, *SF_EVF_CAT(e, f, roaring_bitmap_t *));
        break;
      case SF_EVF_BYTES:
        h = chain(chain_i64(h, (int64_t)bytes_len(e, f)), *SF_EVF_CAT(e, f, void *),
                  bytes_len(e, f));
        break;
      case SF_EVF_STRINGS:
        h = chain_i64(h, (int64_t)sf_evf_count(e, f));
        for (size_t k = 0; k < sf_evf_count(e, f); k++)
          h = chain_str(h, (*SF_EVF_CAT(e, f, char **))[k]);
        break;
      case SF_EVF_RECORDS:
        h = chain_i64(h, (int64_t)sf_evf_count(e, f));
        for (size_t k = 0; k < sf_evf_count(e, f); k++)
          h = digest(f->items, *SF_EVF_CAT(e, f, char *) + k * f->items->size, 0, true,
                     h);
        break;
    }
  }
  return h;
}

uint64_t sf_evrec_digest(const sf_evrec *rec, const void *e, unsigned roles) {
  return digest(rec, e, roles, false, 0);
}

/* ---- validation ---------------------------------------------------------- */

#define TRY(x)                    \
  do {                            \
    sf_code rc_ = (x);            \
    if (rc_ != SF_OK) return rc_; \
  } while (0)

/* Free text (URIs, paths, messages): present, bounded, UTF-8, and free of
 * control characters that would garble logs and terminals. */
static sf_code check_text(const char *ev, const char *field, const char *s, size_t max,
                          sf_event_reason *reason, sf_err *err) {
  if (!s)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err, "%s.%s is missing", ev,
                           field);
  size_t n = strlen(s);
  if (n == 0)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is empty; it must be set", ev, field);
  if (n > max)
    return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                           "%s.%s is %zu bytes long; at most %zu are allowed", ev, field,
                           n, max);
  if (!sf_event_utf8_ok(s, n))
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

/* Codes may be added over time, so any upper-case code is accepted. */
static sf_code check_code(const char *ev, const char *field, const char *s,
                          sf_event_reason *reason, sf_err *err) {
  if (!s || !*s || strlen(s) > 64 ||
      strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != strlen(s))
    return sf_event_reject(
        reason, SF_REASON_INVALID_FIELD, err,
        "%s.%s '%.64s' is not a code of upper-case letters and '_' (e.g. DECODE_ERROR)",
        ev, field, s ? s : "");
  return SF_OK;
}

static sf_code check_string(const sf_evfield *f, const char *ev, const char *name,
                            const char *s, sf_event_reason *reason, sf_err *err) {
  switch (f->rule) {
    case SF_EVR_ID:
    case SF_EVR_NAME:
      return check_id(ev, name, s, f->rule == SF_EVR_NAME, reason, err);
    case SF_EVR_TEXT:
      return check_text(ev, name, s, (size_t)f->hi, reason, err);
    case SF_EVR_PATH: {
      TRY(check_text(ev, name, s, (size_t)f->hi, reason, err));
      if (sf_event_check_relpath("", s, NULL, NULL) == SF_OK) return SF_OK;
      char where[128]; /* named only for the message: the hot path skips it */
      snprintf(where, sizeof where, "%s.%s", ev, name);
      return sf_event_check_relpath(where, s, reason, err);
    }
    case SF_EVR_UTF8:
      if (!sf_event_text_ok(s))
        return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                               (f->flags & SF_EVF_OPTIONAL)
                                   ? "%s.%s is not valid UTF-8"
                                   : "%s.%s is missing or not valid UTF-8",
                               ev, name);
      return SF_OK;
    case SF_EVR_CODE:
      return check_code(ev, name, s, reason, err);
    default:
      return SF_OK;
  }
}

static sf_code check_field(const sf_evfield *f, const void *e, const char *ev,
                           sf_event_reason *reason, sf_err *err) {
  if (!sf_evf_present(e, f)) return SF_OK;
  switch (f->kind) {
    case SF_EVF_STRING:
      return check_string(f, ev, f->name, *SF_EVF_CAT(e, f, char *), reason, err);
    case SF_EVF_LONG:
    case SF_EVF_INT:
      if (f->rule != SF_EVR_RANGE) return SF_OK;
      return check_range(ev, f->name, num(e, f), f->lo, f->hi, reason, err);
    case SF_EVF_ENUM:
      if (f->rule == SF_EVR_KNOWN && (uint64_t)num(e, f) >= (uint64_t)f->sym->count)
        return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                               "%s.%s %d is unknown", ev, f->name, (int)num(e, f));
      return SF_OK;
    case SF_EVF_BITMAP: {
      const roaring_bitmap_t *b = *SF_EVF_CAT(e, f, roaring_bitmap_t *);
      if (f->rule == SF_EVR_FRAGS && (!b || roaring_bitmap_is_empty(b)))
        return sf_event_reject(
            reason, SF_REASON_INVALID_FIELD, err,
            "%s.%s is an empty fragment set; it must name at least one fragment", ev,
            f->name);
      return SF_OK;
    }
    case SF_EVF_BYTES:
      return SF_OK;
    case SF_EVF_STRINGS:
    case SF_EVF_RECORDS: {
      size_t n = sf_evf_count(e, f);
      if (!n && f->why_nonempty)
        return sf_event_reject(reason, SF_REASON_INVALID_FIELD, err, "%s.%s is empty; %s",
                               ev, f->name, f->why_nonempty);
      char item[96];
      snprintf(item, sizeof item, "%s[]", f->name);
      for (size_t k = 0; k < n; k++) {
        if (f->kind == SF_EVF_STRINGS) {
          TRY(check_string(f, ev, item, (*SF_EVF_CAT(e, f, char **))[k], reason, err));
        } else {
          char where[128];
          snprintf(where, sizeof where, "%s.%s[%zu]", ev, f->name, k);
          TRY(sf_evrec_validate(f->items, *SF_EVF_CAT(e, f, char *) + k * f->items->size,
                                where, reason, err));
        }
      }
      return SF_OK;
    }
  }
  return SF_OK;
}

sf_code sf_evrec_validate(const sf_evrec *rec, const void *e, const char *ev,
                          sf_event_reason *reason, sf_err *err) {
  for (size_t i = 0; i < rec->nfields; i++) {
    const sf_evfield *f = &rec->fields[i];
    TRY(check_field(f, e, ev, reason, err));
    if (f->check) TRY(f->check(e, ev, reason, err));
  }
  return SF_OK;
}

/* A shard covers only fragments of its build. */
static sf_code fragments_within_expected(const void *rec, const char *ev,
                                         sf_event_reason *reason, sf_err *err) {
  const sf_shard_staged *e = rec;
  if (roaring_bitmap_is_subset(e->fragments, e->expected_fragments)) return SF_OK;
  roaring_bitmap_t *extra = roaring_bitmap_andnot(e->fragments, e->expected_fragments);
  char *s = extra ? sf_fragset_format_short(extra, 8) : NULL;
  sf_code rc = sf_event_reject(reason, SF_REASON_INVALID_FIELD, err,
                               "%s.fragments has fragments %s that are not in "
                               "expected_fragments; a shard covers only fragments of its "
                               "build",
                               ev, s ? s : "(?)");
  free(s);
  bm_free(extra);
  return rc;
}

/* ---- the table against its schema ----------------------------------------- */

bool sf_evf_matches(const sf_evfield *f, avro_schema_t s) {
  switch (f->kind) {
    case SF_EVF_STRING:
      return is_avro_string(s);
    case SF_EVF_LONG:
      return is_avro_int64(s);
    case SF_EVF_INT:
      return is_avro_int32(s);
    case SF_EVF_BITMAP:
    case SF_EVF_BYTES:
      return is_avro_bytes(s);
    case SF_EVF_ENUM:
      if (!is_avro_enum(s) || avro_schema_enum_number_of_symbols(s) != f->sym->count)
        return false;
      for (int i = 0; i < f->sym->count; i++)
        if (strcmp(avro_schema_enum_get(s, i), f->sym->name(i))) return false;
      return true;
    case SF_EVF_STRINGS:
      return is_avro_array(s) && is_avro_string(avro_schema_array_items(s));
    case SF_EVF_RECORDS:
      return is_avro_array(s) &&
             sf_evrec_matches(f->items, avro_schema_array_items(s), NULL, 0);
  }
  return false;
}

bool sf_evrec_matches(const sf_evrec *rec, avro_schema_t s, char *why, size_t n) {
  char dummy[8];
  if (!why) why = dummy, n = sizeof dummy;
  if (!is_avro_record(s) || strcmp(avro_schema_name(s), rec->name)) {
    snprintf(why, n, "the schema is not the record %s", rec->name);
    return false;
  }
  size_t nf = avro_schema_record_size(s);
  for (size_t i = 0; i < nf || i < rec->nfields; i++) {
    if (i >= nf || i >= rec->nfields) {
      snprintf(why, n, "%s: the schema has %zu fields, the table %zu", rec->name, nf,
               rec->nfields);
      return false;
    }
    const sf_evfield *f = &rec->fields[i];
    const char *name = avro_schema_record_field_name(s, (int)i);
    avro_schema_t t = avro_schema_record_field_get_by_index(s, (int)i);
    if (strcmp(name, f->name)) {
      snprintf(why, n, "%s field %zu is '%s' in the schema, '%s' in the table", rec->name,
               i, name, f->name);
      return false;
    }
    if (f->flags & SF_EVF_OPTIONAL) {
      if (!is_avro_union(t) || avro_schema_union_size(t) != 2 ||
          !is_avro_null(avro_schema_union_branch(t, 0))) {
        snprintf(why, n,
                 "%s.%s is optional in the table: the schema must say [\"null\", T]",
                 rec->name, f->name);
        return false;
      }
      t = avro_schema_union_branch(t, 1);
    }
    if (!sf_evf_matches(f, t)) {
      snprintf(why, n, "%s.%s has another type in the schema than in the table",
               rec->name, f->name);
      return false;
    }
  }
  return true;
}
