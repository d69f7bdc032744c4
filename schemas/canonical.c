/*
 * canonical.c - see canonical.h.
 *
 * Two JSON walks over jansson trees, each in document order (the order in
 * which an Avro parser meets names, which decides whether a name is a
 * definition or a reference):
 *   inline_refs  replaces the first reference to a record defined in another
 *                file by a copy of that definition;
 *   canon        writes the Parsing Canonical Form.
 */
#include "canonical.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- CRC-64-AVRO ---------------------------------------------------------- */

/* The specification's algorithm, bit by bit instead of with its 256-entry
 * table: fingerprints are computed once per schema at start-up, and a table
 * would be either 2 KB of magic numbers or global mutable state. */
uint64_t sf_canonical_crc64(const void *buf, size_t len) {
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
  static const char *const prims[] = {"null",  "boolean", "int",   "long",
                                      "float", "double",  "bytes", "string"};
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
  if (strchr(name, '.') || !ns || !*ns)
    snprintf(out, 256, "%s", name);
  else
    snprintf(out, 256, "%s.%s", ns, name);
}

/* Full name and namespace of a named type's definition object. */
void sf_canonical_names(json_t *obj, const char *enclosing_ns, char full[256],
                        char ns[256]) {
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
  if (dot)
    *dot = 0;
  else
    ns[0] = 0;
}

/* A set of names met so far in one walk (a schema has few named types). */
typedef struct {
  char names[32][256];
  size_t n;
  bool oom; /* a walk stopped for lack of memory, not for the schema */
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

/* Returns the node to use in place of `node` (a new reference, or NULL when
 * the schema is too deep or names too many types, or seen->oom). */
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
    if (!copy) {
      seen->oom = true;
      return NULL;
    }
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
    sf_canonical_names(node, ns, full, inner_ns);
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
  const char *key = t && !strcmp(t, "array") ? "items"
                    : t && !strcmp(t, "map") ? "values"
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
    if (c == '"' || c == '\\')
      snprintf(tmp, sizeof tmp, "\\%c", c);
    else if (c < 0x20)
      snprintf(tmp, sizeof tmp, "\\u%04x", c);
    else
      tmp[0] = (char)c, tmp[1] = 0;
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
  if (is_primitive(t)) {                              /* [PRIMITIVES] */
    put_str(b, t);
    return 0;
  }
  if (is_named(t)) {
    char full[256], inner_ns[256];
    sf_canonical_names(node, ns, full, inner_ns);
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

sf_code sf_canonical_form(json_t *root, char **out, sf_err *err) {
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

sf_code sf_canonical_form_text(const char *json, size_t len, char **out, sf_err *err) {
  json_error_t je;
  json_t *root = json_loadb(json, len, JSON_DECODE_ANY, &je);
  if (!root)
    return sf_err_set(err, SF_EINVAL, "schema is not JSON: line %d: %s", je.line,
                      je.text);
  sf_code rc = sf_canonical_form(root, out, err);
  json_decref(root);
  return rc;
}

sf_code sf_canonical_inline(json_t *root, json_t *library, json_t **out, sf_err *err) {
  *out = NULL;
  nameset *seen = calloc(1, sizeof *seen);
  if (!seen) return sf_err_set(err, SF_ENOMEM, "out of memory inlining a schema");
  *out = inline_refs(root, "", library, seen, 0);
  bool oom = seen->oom;
  free(seen);
  if (*out) return SF_OK;
  if (oom) return sf_err_set(err, SF_ENOMEM, "out of memory inlining a schema");
  return sf_err_set(err, SF_EINVAL,
                    "it nests deeper than 64 or defines more than 32 names");
}
