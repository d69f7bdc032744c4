/*
 * schema.c - see schema.h. The JSON algorithms (inlining, canonical form,
 * fingerprint) are in canonical.c.
 */
#include "schema.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "canonical.h"

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

size_t sf_schema_set_count(const sf_schema_set *set) {
  return set->n;
}

const sf_schema *sf_schema_set_at(const sf_schema_set *set, size_t i) {
  return i < set->n ? set->items[i] : NULL;
}

const sf_schema *sf_schema_current(const sf_schema_set *set, sf_event_type type) {
  return (unsigned)type < SF_EVENT_TYPE_COUNT ? set->current[type] : NULL;
}

const sf_schema *sf_schema_by_fingerprint(const sf_schema_set *set,
                                          uint64_t fingerprint) {
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
static sf_code load_one(sf_schema_set *set, const char *json, size_t len,
                        const char *origin, sf_schema **out, sf_err *err) {
  json_error_t je;
  json_t *root = json_loadb(json, len, 0, &je);
  if (!root)
    return sf_err_set(err, SF_EINVAL, "schema %s is not a JSON object: line %d: %s",
                      origin, je.line, je.text);
  sf_code rc = SF_OK;
  sf_schema *s = calloc(1, sizeof *s);
  json_t *resolved = NULL;
  if (!s) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory loading schema %s", origin);
    goto done;
  }
  snprintf(s->origin, sizeof s->origin, "%s", origin);
  char full[256], ns[256];
  sf_canonical_names(root, "", full, ns);
  if (sf_event_type_parse(full, &s->type, NULL) != SF_OK ||
      strncmp(full, "segforge.events.", 16)) {
    rc = sf_err_set(err, SF_EINVAL,
                    "schema %s defines '%s'; an event schema is one of the records "
                    "segforge.events.ShardStaged, SegmentsCommitted, ShardRejected or "
                    "SegmentsCompacted",
                    origin, full);
    goto done;
  }
  if ((rc = sf_canonical_inline(root, set->library, &resolved, err))) {
    sf_err_prefix(err, "schema %s", origin);
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
  if ((rc = sf_canonical_form(resolved, &s->canonical, err)) != SF_OK) {
    sf_err_prefix(err, "schema %s", origin);
    goto done;
  }
  s->fingerprint = sf_canonical_crc64(s->canonical, strlen(s->canonical));
done:
  json_decref(resolved);
  json_decref(root);
  if (rc != SF_OK)
    schema_free(s);
  else
    *out = s;
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
    sf_canonical_names(root, "", full, ns);
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
      rc = sf_err_set(err, SF_EINVAL, "embedded schema %s is not a JSON object",
                      src->name);
      goto fail;
    }
    char full[256], ns[256];
    sf_canonical_names(root, "", full, ns);
    json_object_set_new(set->library, full, root);
  }
  /* Pass 2: the event schemas, current and older versions. */
  for (size_t i = 0; i < sf_schema_sources_count; i++) {
    const sf_schema_source *src = &sf_schema_sources[i];
    if (!is_event_source(src)) continue; /* nested records, the catalog, ... */
    sf_schema *s;
    if ((rc = load_one(set, (const char *)src->text, src->len, src->name, &s, err)) !=
        SF_OK)
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
  avro_schema_t reader;
  if ((rc = sf_schema_reader_for(set, s, &reader, err)) != SF_OK) {
    schema_free(s);
    return rc;
  }
  avro_value_iface_t *probe = avro_resolved_writer_new(s->avro, reader);
  avro_schema_decref(reader);
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

/* Drops from the reader record the fields the writer record lacks, in
 * records nested through fields, arrays and maps. */
static sf_code prune(json_t *rd, json_t *wr, const char *where, sf_err *err, int depth) {
  if (depth > 64 || !json_is_object(rd) || !json_is_object(wr)) return SF_OK;
  const char *rt = json_string_value(json_object_get(rd, "type"));
  const char *wt = json_string_value(json_object_get(wr, "type"));
  if (!rt || !wt || strcmp(rt, wt)) return SF_OK; /* avro-c judges the rest */
  if (!strcmp(rt, "array") || !strcmp(rt, "map")) {
    const char *k = rt[0] == 'a' ? "items" : "values";
    return prune(json_object_get(rd, k), json_object_get(wr, k), where, err, depth + 1);
  }
  if (strcmp(rt, "record")) return SF_OK;
  json_t *rf = json_object_get(rd, "fields"), *wf = json_object_get(wr, "fields");
  for (size_t i = 0; i < json_array_size(rf);) {
    json_t *f = json_array_get(rf, i), *match = NULL;
    const char *name = json_string_value(json_object_get(f, "name"));
    for (size_t j = 0; name && j < json_array_size(wf); j++) {
      const char *wname =
          json_string_value(json_object_get(json_array_get(wf, j), "name"));
      if (wname && !strcmp(name, wname)) match = json_array_get(wf, j);
    }
    if (match) {
      sf_code rc = prune(json_object_get(f, "type"), json_object_get(match, "type"),
                         where, err, depth + 1);
      if (rc != SF_OK) return rc;
      i++;
    } else if (json_object_get(f, "default")) {
      json_array_remove(rf, i);
    } else {
      return sf_err_set(err, SF_EMISMATCH,
                        "schema %s cannot be read as the current version: it lacks field "
                        "'%s', which has no default (a new field needs a default; see "
                        "docs/events.md)",
                        where, name ? name : "?");
    }
  }
  return SF_OK;
}

sf_code sf_schema_reader_for(const sf_schema_set *set, const sf_schema *writer,
                             avro_schema_t *out, sf_err *err) {
  const sf_schema *cur = set->current[writer->type];
  json_t *rd = json_loads(cur->json, 0, NULL), *wr = json_loads(writer->json, 0, NULL);
  char *text = NULL;
  sf_code rc = SF_OK;
  if (!rd || !wr) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory resolving schema %s", writer->origin);
    goto done;
  }
  if ((rc = prune(rd, wr, writer->origin, err, 0)) != SF_OK) goto done;
  if (!(text = json_dumps(rd, JSON_COMPACT))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory resolving schema %s", writer->origin);
    goto done;
  }
  if (avro_schema_from_json_length(text, strlen(text), out))
    rc = sf_err_set(err, SF_EINVAL, "schema %s: the reader schema does not parse: %s",
                    writer->origin, avro_strerror());
done:
  free(text);
  json_decref(rd);
  json_decref(wr);
  return rc;
}

sf_code sf_schema_set_map_id(sf_schema_set *set, uint32_t id, const sf_schema *s,
                             sf_err *err) {
  const sf_schema *have = sf_schema_by_id(set, id);
  if (have == s) return SF_OK;
  if (have)
    return sf_err_set(err, SF_EEXIST, "schema id %u is already mapped to %s (%s)", id,
                      sf_event_type_name(have->type), have->origin);
  if (set->nids == SF_SCHEMA_SET_MAX)
    return sf_err_set(err, SF_ELIMIT, "more than %d schema ids configured",
                      SF_SCHEMA_SET_MAX);
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
                      "schema id '%s' must be TYPE=ID, e.g. ShardStaged=17",
                      spec ? spec : "");
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
