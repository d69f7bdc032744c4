/*
 * schema.c - see schema.h.
 *
 * Three JSON walks over jansson trees, each in document order (the order in
 * which an Avro parser meets names, which is what decides whether a name is
 * a definition or a reference):
 *   inline_refs  replaces the first reference to a record defined in another
 *                embedded file by a copy of that definition;
 *   canon        writes the Parsing Canonical Form;
 *   record_name  finds the full name of the top-level record.
 */
#include "schema.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sf_schema_set {
  sf_schema *items[SF_SCHEMA_SET_MAX];
  size_t n;
  const sf_schema *current[SF_EVENT_TYPE_COUNT];
  struct {
    uint32_t id;
    const sf_schema *schema;
  } ids[SF_SCHEMA_SET_MAX];
  size_t nids;
  /* Full name -> definition of every record in the embedded current files,
   * for inlining named references (owned JSON). */
  json_t *library;
};

/* ---- CRC-64-AVRO ---------------------------------------------------------- */

/* The specification's algorithm, bit by bit instead of with its 256-entry
 * table: fingerprints are computed once per schema at start-up, and a table
 * would be either 2 KB of magic numbers or global mutable state. */
uint64_t sf_schema_crc64_avro(const void *buf, size_t len) {
  const uint64_t empty = 0xc15d213aa4d7a795ULL;
  const unsigned char *p = buf;
  uint64_t fp = empty;
  for (size_t i = 0; i < len; i++) {
    fp ^= p[i];
    for (int k = 0; k < 8; k++) fp = (fp >> 1) ^ (empty & (0 - (fp & 1)));
  }
  return fp;
}

/* ---- names ---------------------------------------------------------------- */

static bool is_primitive(const char *t) {
  static const char *const prims[] = {"null", "boolean", "int",    "long",
                                      "float", "double", "bytes", "string"};
  for (size_t i = 0; i < sizeof prims / sizeof prims[0]; i++)
    if (!strcmp(t, prims[i])) return true;
  return false;
}

static bool is_named(const char *t) {
  return !strcmp(t, "record") || !strcmp(t, "error") || !strcmp(t, "enum") ||
         !strcmp(t, "fixed");
}

/* Full name of a reference or definition `name` in namespace `ns` (spec:
 * a name containing a dot is already full). Writes into out[256]. */
static void full_name(const char *name, const char *ns, char out[256]) {
  if (strchr(name, '.') || !ns || !*ns) snprintf(out, 256, "%s", name);
  else snprintf(out, 256, "%s.%s", ns, name);
}

/* Full name and namespace of a named type's definition object. */
static void def_names(json_t *obj, const char *enclosing_ns, char full[256], char ns[256]) {
  const char *name = json_string_value(json_object_get(obj, "name"));
  json_t *jns = json_object_get(obj, "namespace");
  if (!name) name = "";
  if (strchr(name, '.')) {
    snprintf(full, 256, "%s", name);
  } else if (json_is_string(jns)) {
    full_name(name, json_string_value(jns), full);
  } else {
    full_name(name, enclosing_ns, full);
  }
  snprintf(ns, 256, "%s", full);
  char *dot = strrchr(ns, '.');
  if (dot) *dot = 0;
  else ns[0] = 0;
}

/* A set of names met so far in one walk (a schema has few named types). */
typedef struct {
  char names[32][256];
  size_t n;
} nameset;

static bool nameset_has(const nameset *s, const char *name) {
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return true;
  return false;
}

static int nameset_add(nameset *s, const char *name) {
  if (nameset_has(s, name)) return 0;
  if (s->n == sizeof s->names / sizeof s->names[0]) return -1;
  snprintf(s->names[s->n++], 256, "%s", name);
  return 0;
}

/* ---- inlining named references -------------------------------------------- */

/* Returns the node to use in place of `node` (a new reference, or NULL when a
 * referenced name is unknown or the schema is too deep). */
static json_t *inline_refs(json_t *node, const char *ns, json_t *library, nameset *seen,
                           int depth) {
  if (depth > 64) return NULL;
  if (json_is_string(node)) {
    const char *t = json_string_value(node);
    char full[256];
    if (is_primitive(t)) return json_incref(node);
    full_name(t, ns, full);
    if (nameset_has(seen, full)) return json_incref(node);
    json_t *def = json_object_get(library, full);
    if (!def) return json_incref(node); /* let the Avro parser name the error */
    json_t *copy = json_deep_copy(def);
    if (!copy) return NULL;
    json_t *res = inline_refs(copy, ns, library, seen, depth + 1);
    json_decref(copy);
    return res;
  }
  if (json_is_array(node)) {
    for (size_t i = 0; i < json_array_size(node); i++) {
      json_t *r = inline_refs(json_array_get(node, i), ns, library, seen, depth + 1);
      if (!r) return NULL;
      json_array_set_new(node, i, r);
    }
    return json_incref(node);
  }
  if (!json_is_object(node)) return json_incref(node);
  json_t *type = json_object_get(node, "type");
  const char *t = json_string_value(type);
  if (t && is_named(t)) {
    char full[256], inner_ns[256];
    def_names(node, ns, full, inner_ns);
    if (nameset_add(seen, full)) return NULL;
    json_t *fields = json_object_get(node, "fields");
    for (size_t i = 0; json_is_array(fields) && i < json_array_size(fields); i++) {
      json_t *f = json_array_get(fields, i);
      json_t *ft = json_object_get(f, "type");
      if (!ft) continue;
      json_t *r = inline_refs(ft, inner_ns, library, seen, depth + 1);
      if (!r) return NULL;
      json_object_set_new(f, "type", r);
    }
    return json_incref(node);
  }
  const char *key = t && !strcmp(t, "array") ? "items" : t && !strcmp(t, "map") ? "values"
                                                                                 : "type";
  json_t *child = json_object_get(node, key);
  if (child) {
    json_t *r = inline_refs(child, ns, library, seen, depth + 1);
    if (!r) return NULL;
    json_object_set_new(node, key, r);
  }
  return json_incref(node);
}

/* ---- Parsing Canonical Form ------------------------------------------------ */

typedef struct {
  char *buf;
  size_t len, cap;
  int failed;
} sbuf;

static void put(sbuf *b, const char *s) {
  size_t n = strlen(s);
  if (b->failed) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = (b->len + n + 1) * 2;
    char *nb = realloc(b->buf, cap);
    if (!nb) {
      b->failed = 1;
      return;
    }
    b->buf = nb;
    b->cap = cap;
  }
  memcpy(b->buf + b->len, s, n + 1);
  b->len += n;
}

/* [STRINGS]: a JSON string with only the escapes JSON requires; non-ASCII
 * UTF-8 is written as is. Avro names are [A-Za-z0-9_.] anyway. */
static void put_str(sbuf *b, const char *s) {
  put(b, "\"");
  for (const char *p = s; *p; p++) {
    char tmp[8];
    unsigned char c = (unsigned char)*p;
    if (c == '"' || c == '\\') snprintf(tmp, sizeof tmp, "\\%c", c);
    else if (c < 0x20) snprintf(tmp, sizeof tmp, "\\u%04x", c);
    else tmp[0] = (char)c, tmp[1] = 0;
    put(b, tmp);
  }
  put(b, "\"");
}

/* Writes the canonical form of `node`; returns -1 on a malformed schema. The
 * attribute order is the specification's: name, type, fields, symbols,
 * items, values, size; everything else (doc, default, aliases, namespace,
 * logicalType, order, ...) is stripped, and names become full names. */
static int canon(sbuf *b, json_t *node, const char *ns, nameset *seen, int depth) {
  if (depth > 64) return -1;
  if (json_is_string(node)) {
    const char *t = json_string_value(node);
    char full[256];
    if (is_primitive(t)) {
      put_str(b, t);
    } else {
      full_name(t, ns, full);
      put_str(b, full);
    }
    return 0;
  }
  if (json_is_array(node)) {
    put(b, "[");
    for (size_t i = 0; i < json_array_size(node); i++) {
      if (i) put(b, ",");
      if (canon(b, json_array_get(node, i), ns, seen, depth + 1)) return -1;
    }
    put(b, "]");
    return 0;
  }
  if (!json_is_object(node)) return -1;
  json_t *type = json_object_get(node, "type");
  const char *t = json_string_value(type);
  if (!t) return canon(b, type, ns, seen, depth + 1); /* {"type": {...}} or [...] */
  if (is_primitive(t)) {                               /* [PRIMITIVES] */
    put_str(b, t);
    return 0;
  }
  if (is_named(t)) {
    char full[256], inner_ns[256];
    def_names(node, ns, full, inner_ns);
    if (nameset_has(seen, full)) { /* a second definition: not a valid schema */
      return -1;
    }
    if (nameset_add(seen, full)) return -1;
    put(b, "{\"name\":");
    put_str(b, full);
    put(b, ",\"type\":");
    put_str(b, t);
    if (!strcmp(t, "enum")) {
      json_t *syms = json_object_get(node, "symbols");
      if (!json_is_array(syms)) return -1;
      put(b, ",\"symbols\":[");
      for (size_t i = 0; i < json_array_size(syms); i++) {
        const char *s = json_string_value(json_array_get(syms, i));
        if (!s) return -1;
        if (i) put(b, ",");
        put_str(b, s);
      }
      put(b, "]");
    } else if (!strcmp(t, "fixed")) {
      json_t *size = json_object_get(node, "size");
      if (!json_is_integer(size)) return -1;
      char tmp[32]; /* [INTEGERS] */
      snprintf(tmp, sizeof tmp, ",\"size\":%lld", (long long)json_integer_value(size));
      put(b, tmp);
    } else {
      json_t *fields = json_object_get(node, "fields");
      if (!json_is_array(fields)) return -1;
      put(b, ",\"fields\":[");
      for (size_t i = 0; i < json_array_size(fields); i++) {
        json_t *f = json_array_get(fields, i);
        const char *fname = json_string_value(json_object_get(f, "name"));
        json_t *ft = json_object_get(f, "type");
        if (!fname || !ft) return -1;
        if (i) put(b, ",");
        put(b, "{\"name\":");
        put_str(b, fname);
        put(b, ",\"type\":");
        if (canon(b, ft, inner_ns, seen, depth + 1)) return -1;
        put(b, "}");
      }
      put(b, "]");
    }
    put(b, "}");
    return 0;
  }
  if (!strcmp(t, "array") || !strcmp(t, "map")) {
    bool arr = !strcmp(t, "array");
    json_t *child = json_object_get(node, arr ? "items" : "values");
    if (!child) return -1;
    put(b, arr ? "{\"type\":\"array\",\"items\":" : "{\"type\":\"map\",\"values\":");
    if (canon(b, child, ns, seen, depth + 1)) return -1;
    put(b, "}");
    return 0;
  }
  /* {"type": "SomeName"}: a reference in object form. */
  return canon(b, type, ns, seen, depth + 1);
}

static sf_code canonical_of(json_t *root, char **out, sf_err *err) {
  sbuf b = {0};
  nameset *seen = calloc(1, sizeof *seen);
  if (!seen) return sf_err_set(err, SF_ENOMEM, "out of memory canonicalising a schema");
  int rc = canon(&b, root, "", seen, 0);
  free(seen);
  if (rc || b.failed || !b.buf) {
    free(b.buf);
    return b.failed ? sf_err_set(err, SF_ENOMEM, "out of memory canonicalising a schema")
                    : sf_err_set(err, SF_EINVAL,
                                 "the schema is malformed (a named type without name, "
                                 "fields or symbols, or defined twice)");
  }
  *out = b.buf;
  return SF_OK;
}

sf_code sf_schema_canonical(const char *json, size_t len, char **out, sf_err *err) {
  json_error_t je;
  json_t *root = json_loadb(json, len, JSON_DECODE_ANY, &je);
  if (!root)
    return sf_err_set(err, SF_EINVAL, "schema is not JSON: line %d: %s", je.line, je.text);
  sf_code rc = canonical_of(root, out, err);
  json_decref(root);
  return rc;
}

/* ---- the set ------------------------------------------------------------- */

static void schema_free(sf_schema *s) {
  if (!s) return;
  free(s->canonical);
  free(s->json);
  if (s->avro) avro_schema_decref(s->avro);
  free(s);
}

void sf_schema_set_free(sf_schema_set *set) {
  if (!set) return;
  for (size_t i = 0; i < set->n; i++) schema_free(set->items[i]);
  json_decref(set->library);
  free(set);
}

size_t sf_schema_set_count(const sf_schema_set *set) { return set->n; }

const sf_schema *sf_schema_set_at(const sf_schema_set *set, size_t i) {
  return i < set->n ? set->items[i] : NULL;
}

const sf_schema *sf_schema_current(const sf_schema_set *set, sf_event_type type) {
  return (unsigned)type < SF_EVENT_TYPE_COUNT ? set->current[type] : NULL;
}

const sf_schema *sf_schema_by_fingerprint(const sf_schema_set *set, uint64_t fingerprint) {
  for (size_t i = 0; i < set->n; i++)
    if (set->items[i]->fingerprint == fingerprint) return set->items[i];
  return NULL;
}

const sf_schema *sf_schema_by_id(const sf_schema_set *set, uint32_t id) {
  for (size_t i = 0; i < set->nids; i++)
    if (set->ids[i].id == id) return set->ids[i].schema;
  return NULL;
}

bool sf_schema_id_of(const sf_schema_set *set, const sf_schema *s, uint32_t *id) {
  for (size_t i = 0; i < set->nids; i++)
    if (set->ids[i].schema == s) {
      if (id) *id = set->ids[i].id;
      return true;
    }
  return false;
}

/* Parses, inlines, canonicalises and fingerprints one schema text into a new
 * sf_schema (caller frees with schema_free). */
static sf_code load_one(sf_schema_set *set, const char *json, size_t len, const char *origin,
                        sf_schema **out, sf_err *err) {
  json_error_t je;
  json_t *root = json_loadb(json, len, 0, &je);
  if (!root)
    return sf_err_set(err, SF_EINVAL, "schema %s is not a JSON object: line %d: %s", origin,
                      je.line, je.text);
  sf_code rc = SF_OK;
  sf_schema *s = calloc(1, sizeof *s);
  nameset *seen = calloc(1, sizeof *seen);
  json_t *resolved = NULL;
  if (!s || !seen) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory loading schema %s", origin);
    goto done;
  }
  snprintf(s->origin, sizeof s->origin, "%s", origin);
  char full[256], ns[256];
  def_names(root, "", full, ns);
  if (sf_event_type_parse(full, &s->type, NULL) != SF_OK || strncmp(full, "segforge.events.", 16)) {
    rc = sf_err_set(err, SF_EINVAL,
                    "schema %s defines '%s'; an event schema is one of the records "
                    "segforge.events.ShardStaged, SegmentsCommitted or ShardRejected",
                    origin, full);
    goto done;
  }
  resolved = inline_refs(root, "", set->library, seen, 0);
  if (!resolved) {
    rc = sf_err_set(err, SF_EINVAL, "schema %s nests too deep or defines too many names",
                    origin);
    goto done;
  }
  s->json = json_dumps(resolved, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!s->json) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory loading schema %s", origin);
    goto done;
  }
  if (avro_schema_from_json_length(s->json, strlen(s->json), &s->avro)) {
    s->avro = NULL;
    rc = sf_err_set(err, SF_EINVAL, "schema %s does not parse as Avro: %s", origin,
                    avro_strerror());
    goto done;
  }
  if ((rc = canonical_of(resolved, &s->canonical, err)) != SF_OK) {
    sf_err_prefix(err, "schema %s", origin);
    goto done;
  }
  s->fingerprint = sf_schema_crc64_avro(s->canonical, strlen(s->canonical));
done:
  free(seen);
  json_decref(resolved);
  json_decref(root);
  if (rc != SF_OK) schema_free(s);
  else *out = s;
  return rc;
}

static sf_code push(sf_schema_set *set, sf_schema *s, sf_err *err) {
  if (set->n == SF_SCHEMA_SET_MAX) {
    sf_code rc = sf_err_set(err, SF_ELIMIT, "more than %d schemas registered (at %s)",
                            SF_SCHEMA_SET_MAX, s->origin);
    schema_free(s);
    return rc;
  }
  s->index = set->n;
  set->items[set->n++] = s;
  return SF_OK;
}

/* The embedded <Record>.avsc files (no ".v<N>" part) are the current ones. */
static bool is_current_file(const char *name) {
  const char *dot = strchr(name, '.');
  return dot && !strcmp(dot, ".avsc");
}

/* Whether an embedded file defines one of the event records (schemas/ also
 * holds nested records such as SegmentInfo and non-event schemas such as the
 * catalog's, which are embedded for their own readers). */
static bool is_event_source(const sf_schema_source *src) {
  json_t *root = json_loadb((const char *)src->text, src->len, 0, NULL);
  char full[256], ns[256];
  sf_event_type t;
  bool yes = false;
  if (json_is_object(root)) {
    def_names(root, "", full, ns);
    yes = !strcmp(ns, "segforge.events") && sf_event_type_parse(full, &t, NULL) == SF_OK;
  }
  json_decref(root);
  return yes;
}

sf_code sf_schema_set_new(sf_schema_set **out, sf_err *err) {
  *out = NULL;
  sf_schema_set *set = calloc(1, sizeof *set);
  if (!set || !(set->library = json_object())) {
    free(set);
    return sf_err_set(err, SF_ENOMEM, "out of memory creating the schema set");
  }
  sf_code rc = SF_OK;
  /* Pass 1: every current record definition, for inlining by name. */
  for (size_t i = 0; i < sf_schema_sources_count; i++) {
    const sf_schema_source *src = &sf_schema_sources[i];
    if (!is_current_file(src->name)) continue;
    json_error_t je;
    json_t *root = json_loadb((const char *)src->text, src->len, 0, &je);
    if (!json_is_object(root)) {
      json_decref(root);
      rc = sf_err_set(err, SF_EINVAL, "embedded schema %s is not a JSON object", src->name);
      goto fail;
    }
    char full[256], ns[256];
    def_names(root, "", full, ns);
    json_object_set_new(set->library, full, root);
  }
  /* Pass 2: the event schemas, current and older versions. */
  for (size_t i = 0; i < sf_schema_sources_count; i++) {
    const sf_schema_source *src = &sf_schema_sources[i];
    if (!is_event_source(src)) continue; /* nested records, the catalog, ... */
    sf_schema *s;
    if ((rc = load_one(set, (const char *)src->text, src->len, src->name, &s, err)) != SF_OK)
      goto fail;
    s->current = is_current_file(src->name);
    if (s->current) set->current[s->type] = s;
    if ((rc = push(set, s, err)) != SF_OK) goto fail;
  }
  for (unsigned t = 0; t < SF_EVENT_TYPE_COUNT; t++)
    if (!set->current[t]) {
      rc = sf_err_set(err, SF_EINVAL, "no embedded schema for %s (schemas/%s.avsc)",
                      sf_event_type_name((sf_event_type)t),
                      sf_event_type_name((sf_event_type)t));
      goto fail;
    }
  *out = set;
  return SF_OK;
fail:
  sf_schema_set_free(set);
  return rc;
}

sf_code sf_schema_set_add(sf_schema_set *set, const char *json, size_t len,
                          const char *origin, const sf_schema **out, sf_err *err) {
  sf_schema *s;
  sf_code rc = load_one(set, json, len, origin ? origin : "(added)", &s, err);
  if (rc != SF_OK) return rc;
  const sf_schema *have = sf_schema_by_fingerprint(set, s->fingerprint);
  if (have) {
    schema_free(s);
    if (out) *out = have;
    return SF_OK;
  }
  /* Refuse now, with the resolver's reason, a version that the current one
   * cannot read, rather than at the first event written with it. */
  const sf_schema *cur = set->current[s->type];
  avro_value_iface_t *probe = avro_resolved_writer_new(s->avro, cur->avro);
  if (!probe) {
    rc = sf_err_set(err, SF_EMISMATCH,
                    "schema %s cannot be read as the current %s: %s (a new field needs a "
                    "default; see docs/events.md)",
                    s->origin, sf_event_type_name(s->type), avro_strerror());
    schema_free(s);
    return rc;
  }
  avro_value_iface_decref(probe);
  if ((rc = push(set, s, err)) != SF_OK) return rc;
  if (out) *out = s;
  return SF_OK;
}

sf_code sf_schema_set_map_id(sf_schema_set *set, uint32_t id, const sf_schema *s,
                             sf_err *err) {
  const sf_schema *have = sf_schema_by_id(set, id);
  if (have == s) return SF_OK;
  if (have)
    return sf_err_set(err, SF_EEXIST, "schema id %u is already mapped to %s (%s)", id,
                      sf_event_type_name(have->type), have->origin);
  if (set->nids == SF_SCHEMA_SET_MAX)
    return sf_err_set(err, SF_ELIMIT, "more than %d schema ids configured", SF_SCHEMA_SET_MAX);
  set->ids[set->nids].id = id;
  set->ids[set->nids].schema = s;
  set->nids++;
  return SF_OK;
}

sf_code sf_schema_set_parse_id(sf_schema_set *set, const char *spec, sf_err *err) {
  const char *eq = spec ? strchr(spec, '=') : NULL;
  char type[64];
  if (!eq || (size_t)(eq - spec) >= sizeof type)
    return sf_err_set(err, SF_EINVAL,
                      "schema id '%s' must be TYPE=ID, e.g. ShardStaged=17", spec ? spec : "");
  memcpy(type, spec, (size_t)(eq - spec));
  type[eq - spec] = 0;
  sf_event_type t;
  sf_code rc = sf_event_type_parse(type, &t, err);
  if (rc != SF_OK) return rc;
  char *end;
  unsigned long long v = strtoull(eq + 1, &end, 10);
  if (!eq[1] || *end || eq[1] == '-' || v > UINT32_MAX)
    return sf_err_set(err, SF_EINVAL, "schema id '%s' must be a number 0..4294967295",
                      eq + 1);
  return sf_schema_set_map_id(set, (uint32_t)v, set->current[t], err);
}

sf_code sf_framing_parse(const char *s, sf_framing *out, sf_err *err) {
  static const char *const names[] = {"auto", "single", "confluent"};
  for (unsigned i = 0; s && i < 3; i++)
    if (!strcmp(s, names[i])) {
      *out = (sf_framing)i;
      return SF_OK;
    }
  return sf_err_set(err, SF_EINVAL, "unknown framing '%s': use single, confluent or auto",
                    s ? s : "");
}
