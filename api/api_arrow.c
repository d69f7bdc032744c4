/*
 * api_arrow.c - the shard writer's Arrow input (the Arrow C Data Interface,
 * https://arrow.apache.org/docs/format/CDataInterface.html).
 *
 * Reading follows the specification's layout: a FixedSizeList<float32>[d]
 * array has one buffer (validity) and one child, a float32 array with two
 * (validity, values); a uint64 array has two (validity, values); a struct
 * array has one (validity) and a child per field. An array's offset counts
 * in its own slots, and a parent's offset applies on top of its children's
 * (row i of a struct is slot parent.offset + i of each child, i.e. child
 * element child.offset + parent.offset + i). A NULL validity buffer means
 * no nulls. Nothing is copied: once every level is checked, the values of
 * the rows are contiguous in the input and go to sf_shard_writer_add as
 * they are. Nothing is released either: the caller owns the arrays.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"

/* A column: the array, the slot of its first row (all offsets applied),
 * and the rows. */
typedef struct {
  const struct ArrowSchema *schema;
  const struct ArrowArray *array;
  int64_t first, length;
  const char *what; /* names it in messages */
} column;

/* The first slot of [first, first + n) whose validity bit is 0, or -1. */
static int64_t first_null(const struct ArrowArray *a, int64_t first, int64_t n) {
  if (a->null_count == 0 || a->n_buffers < 1 || !a->buffers || !a->buffers[0]) return -1;
  const uint8_t *bits = a->buffers[0];
  for (int64_t i = 0; i < n; i++) {
    int64_t s = first + i;
    if (!(bits[s >> 3] & (1u << (s & 7)))) return i;
  }
  return -1;
}

static int check_array(const struct ArrowSchema *s, const struct ArrowArray *a,
                       const char *what, int64_t buffers, int64_t children,
                       sf_error *err) {
  if (!s || !a || !s->format)
    return sf_api_fail(err, SF_STATUS_INVALID, "Arrow %s: the schema or array is NULL",
                       what);
  if (!a->release || !s->release)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s has been released (its release callback is NULL); pass "
                       "a live array",
                       what);
  if (s->dictionary || a->dictionary)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s is dictionary-encoded; decode it to plain values first",
                       what);
  if (a->length < 0 || a->offset < 0)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s has a negative length (%lld) or offset (%lld)", what,
                       (long long)a->length, (long long)a->offset);
  if (a->offset > INT64_MAX - a->length)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s has offset %lld and length %lld, whose sum overflows; "
                       "pass the array's real offset and length",
                       what, (long long)a->offset, (long long)a->length);
  if (a->n_buffers != buffers || (buffers && !a->buffers))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s (format '%s') has %lld buffers; its layout has %lld",
                       what, s->format, (long long)a->n_buffers, (long long)buffers);
  if (a->n_children != children || s->n_children != children ||
      (children && (!a->children || !s->children)))
    return sf_api_fail(
        err, SF_STATUS_INVALID,
        "Arrow %s (format '%s') has %lld children in the array and %lld in "
        "the schema; its layout has %lld",
        what, s->format, (long long)a->n_children, (long long)s->n_children,
        (long long)children);
  return SF_STATUS_OK;
}

/* The specification recommends, but does not require, buffers aligned to
 * their type; the values are read in place as floats and uint64s, which C
 * allows only at aligned addresses. */
static int check_aligned(const void *buf, size_t align, const char *what, sf_error *err) {
  if ((uintptr_t)buf % align == 0) return SF_STATUS_OK;
  return sf_api_fail(err, SF_STATUS_INVALID,
                     "Arrow %s has a values buffer at address %p, not aligned to %zu "
                     "bytes; copy the array into aligned memory (any Arrow library's "
                     "default allocation is)",
                     what, buf, align);
}

static int null_error(const char *what, int64_t row, sf_error *err) {
  return sf_api_fail(err, SF_STATUS_INVALID,
                     "Arrow %s is null at row %lld; a vector and its row id must both be "
                     "present (drop or fill the nulls first)",
                     what, (long long)row);
}

/* Reads a FixedSizeList<float32>[dim] column: *x points at its first row. */
static int read_vectors(const column *c, const float **x, uint32_t *dim, sf_error *err) {
  const struct ArrowSchema *s = c->schema;
  const struct ArrowArray *a = c->array;
  int rc;
  if ((rc = check_array(s, a, c->what, 1, 1, err))) return rc;
  char *end = NULL;
  long long d = strncmp(s->format, "+w:", 3) ? -1 : strtoll(s->format + 3, &end, 10);
  if (d < 1 || d > 65536 || *end || !s->children[0] || !s->children[0]->format ||
      strcmp(s->children[0]->format, "f"))
    return sf_api_fail(
        err, SF_STATUS_INVALID,
        "Arrow %s has format '%s' of '%s'; vectors must be "
        "FixedSizeList<float32>[dim] (format '+w:<dim>' of 'f')",
        c->what, s->format,
        s->children[0] && s->children[0]->format ? s->children[0]->format : "?");
  if (c->first + c->length > a->offset + a->length)
    return sf_api_fail(err, SF_STATUS_INVALID, "Arrow %s is shorter than its parent",
                       c->what);
  int64_t bad = first_null(a, c->first, c->length);
  if (bad >= 0) return null_error(c->what, bad, err);
  const struct ArrowArray *v = a->children[0];
  char what[160];
  int n = snprintf(what, sizeof what, "%s (its float32 values)", c->what);
  if (n < 0 || (size_t)n >= sizeof what) what[0] = '\0';
  if ((rc = check_array(s->children[0], v, what, 2, 0, err))) return rc;
  /* Slot r of the list holds elements [r * d, (r + 1) * d) of the child.
   * Compared by division, so that no product can overflow: first + length
   * is at most the list's offset + length (checked above), and what passes
   * here keeps (first + length) * d within the child's length. */
  if (c->first + c->length > v->length / d)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s has %lld values for %lld vectors of %lld", what,
                       (long long)v->length, (long long)(c->first + c->length), d);
  int64_t e0 = v->offset + c->first * d, ne = c->length * d;
  bad = first_null(v, e0, ne);
  if (bad >= 0)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s has a null element at row %lld, element %lld; vectors "
                       "must be complete",
                       c->what, (long long)(bad / d), (long long)(bad % d));
  if (ne && !v->buffers[1])
    return sf_api_fail(err, SF_STATUS_INVALID, "Arrow %s has no values buffer", what);
  if ((rc = check_aligned(v->buffers[1], sizeof(float), what, err))) return rc;
  *x = (const float *)v->buffers[1] + e0;
  *dim = (uint32_t)d;
  return SF_STATUS_OK;
}

/* Reads a uint64 column: *ids points at its first row. */
static int read_ids(const column *c, const uint64_t **ids, sf_error *err) {
  const struct ArrowSchema *s = c->schema;
  const struct ArrowArray *a = c->array;
  int rc;
  if ((rc = check_array(s, a, c->what, 2, 0, err))) return rc;
  if (strcmp(s->format, "L"))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "Arrow %s has format '%s'; row ids must be uint64 (format 'L'), "
                       "fragment << 32 | offset",
                       c->what, s->format);
  if (c->first + c->length > a->offset + a->length)
    return sf_api_fail(err, SF_STATUS_INVALID, "Arrow %s is shorter than its parent",
                       c->what);
  int64_t bad = first_null(a, c->first, c->length);
  if (bad >= 0) return null_error(c->what, bad, err);
  if (c->length && !a->buffers[1])
    return sf_api_fail(err, SF_STATUS_INVALID, "Arrow %s has no values buffer", c->what);
  if ((rc = check_aligned(a->buffers[1], sizeof(uint64_t), c->what, err))) return rc;
  *ids = (const uint64_t *)a->buffers[1] + c->first;
  return SF_STATUS_OK;
}

static int add_columns(sf_shard_writer *w, const column *vc, const column *ic,
                       sf_error *err) {
  const float *x = NULL;
  const uint64_t *ids = NULL;
  uint32_t dim = 0;
  int rc;
  if ((rc = read_vectors(vc, &x, &dim, err)) || (rc = read_ids(ic, &ids, err))) return rc;
  if (vc->length == 0) return SF_STATUS_OK;
  return sf_shard_writer_add(w, x, ids, (uint64_t)vc->length, dim, err);
}

int sf_shard_writer_add_arrow_columns(sf_shard_writer *w,
                                      const struct ArrowSchema *vectors_schema,
                                      const struct ArrowArray *vectors,
                                      const struct ArrowSchema *row_ids_schema,
                                      const struct ArrowArray *row_ids, sf_error *err) {
  if (!w) return sf_api_fail(err, SF_STATUS_INVALID, "the writer is NULL");
  if (!vectors || !row_ids || !vectors_schema || !row_ids_schema)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_shard_writer_add_arrow_columns needs both arrays and schemas");
  if (vectors->length != row_ids->length)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "the Arrow vector array has %lld rows but the row id array %lld; "
                       "give one row id per vector",
                       (long long)vectors->length, (long long)row_ids->length);
  column vc = {vectors_schema, vectors, vectors->offset, vectors->length, "vector array"};
  column ic = {row_ids_schema, row_ids, row_ids->offset, row_ids->length, "row id array"};
  return add_columns(w, &vc, &ic, err);
}

/* The child of a struct for one field: by name, or the only one whose
 * format is like `want` ("+w:" prefix, or exactly "L"). */
static int pick(const struct ArrowSchema *s, const char *name, const char *want,
                int prefix, const char *role, int64_t *at, sf_error *err) {
  *at = -1;
  for (int64_t i = 0; i < s->n_children; i++) {
    const struct ArrowSchema *c = s->children[i];
    if (!c || !c->format) continue;
    int match = name ? c->name && !strcmp(c->name, name)
                     : (prefix ? !strncmp(c->format, want, strlen(want))
                               : !strcmp(c->format, want));
    if (!match) continue;
    if (*at >= 0)
      return sf_api_fail(err, SF_STATUS_INVALID,
                         "the Arrow struct has several %s columns ('%s' and '%s'); name "
                         "the one to use",
                         role, s->children[*at]->name ? s->children[*at]->name : "?",
                         c->name ? c->name : "?");
    *at = i;
  }
  if (*at < 0)
    return name ? sf_api_fail(err, SF_STATUS_INVALID,
                              "the Arrow struct has no field '%s' (the %s column)", name,
                              role)
                : sf_api_fail(err, SF_STATUS_INVALID,
                              "the Arrow struct has no %s column (format '%s%s'); add "
                              "one or name it",
                              role, want, prefix ? "<dim>" : "");
  return SF_STATUS_OK;
}

int sf_shard_writer_add_arrow(sf_shard_writer *w, const struct ArrowSchema *schema,
                              const struct ArrowArray *array, const char *vector_field,
                              const char *rowid_field, sf_error *err) {
  int rc;
  if (!w) return sf_api_fail(err, SF_STATUS_INVALID, "the writer is NULL");
  if (!schema || !array || !schema->format)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_shard_writer_add_arrow needs a schema and an array");
  if (strcmp(schema->format, "+s"))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "the Arrow input has format '%s'; give a struct array (format "
                       "'+s') with a vector and a row id column, or use "
                       "sf_shard_writer_add_arrow_columns for two arrays",
                       schema->format);
  if ((rc = check_array(schema, array, "struct", 1, schema->n_children, err))) return rc;
  int64_t bad = first_null(array, array->offset, array->length);
  if (bad >= 0) return null_error("struct", bad, err);
  int64_t vi, ii;
  if ((rc = pick(schema, vector_field, "+w:", 1, "vector", &vi, err)) ||
      (rc = pick(schema, rowid_field, "L", 0, "row id", &ii, err)))
    return rc;
  char vwhat[160], iwhat[160];
  const char *vn = schema->children[vi]->name, *in = schema->children[ii]->name;
  int n1 = snprintf(vwhat, sizeof vwhat, "column '%.100s'", vn ? vn : "?");
  int n2 = snprintf(iwhat, sizeof iwhat, "column '%.100s'", in ? in : "?");
  if (n1 < 0 || n2 < 0) return sf_api_fail(err, SF_STATUS_INVALID, "bad field names");
  if (!array->children[vi] || !array->children[ii])
    return sf_api_fail(err, SF_STATUS_INVALID, "the Arrow struct has a NULL child array");
  /* A row of the struct is slot child.offset + parent.offset + i of a
   * child: that sum must not overflow (each is checked >= 0 by then). */
  int64_t vo = array->children[vi]->offset, io = array->children[ii]->offset;
  if (vo < 0 || io < 0 || vo > INT64_MAX - array->offset - array->length ||
      io > INT64_MAX - array->offset - array->length)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "the Arrow struct's children have offsets (%lld, %lld) that are "
                       "negative or overflow with the struct's offset %lld; pass the "
                       "arrays' real offsets",
                       (long long)vo, (long long)io, (long long)array->offset);
  column vc = {schema->children[vi], array->children[vi],
               array->children[vi]->offset + array->offset, array->length, vwhat};
  column ic = {schema->children[ii], array->children[ii],
               array->children[ii]->offset + array->offset, array->length, iwhat};
  return add_columns(w, &vc, &ic, err);
}
