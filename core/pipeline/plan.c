/*
 * plan.c - see plan.h.
 *
 * Validation works on an index array sorted by lowest fragment: that is the
 * plan order, and it makes the overlap check a single pass with a running
 * union (only an actual overlap pays a second pass to name the other shard).
 */
#include "core/pipeline/plan.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"

#define ID_PREFIX_MAX 40
/* Fragment lists in messages stop after this many ranges. */
#define MSG_RANGES 16

static sf_code oom(sf_err *err) {
  return sf_err_set(err, SF_ENOMEM, "out of memory while planning");
}

void sf_plan_params_from_quant(const sf_quant *q, sf_seg_params *out) {
  memset(out, 0, sizeof *out);
  out->type = sf_quant_type(q);
  out->metric = sf_quant_metric(q);
  out->dim = sf_quant_dim(q);
  out->nlist = sf_quant_nlist(q);
  out->pq_m = sf_quant_pq_m(q);
  out->code_size = (uint32_t)sf_quant_code_size(q);
  out->quantizer_checksum = sf_quant_checksum(q);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

sf_code sf_plan_segment_id(const char *staging_id, const char *const *shard_ids, size_t n,
                           char **out, sf_err *err) {
  *out = NULL;
  /* Hash a set, not a sequence: sort a copy of the pointers. Ids are NUL
   * terminated and the NULs go into the hash, so ("ab","c") != ("a","bc"). */
  const char **sorted = malloc((n ? n : 1) * sizeof *sorted);
  if (!sorted) return oom(err);
  size_t len = strlen(staging_id) + 1;
  for (size_t i = 0; i < n; i++) {
    sorted[i] = shard_ids[i];
    len += strlen(shard_ids[i]) + 1;
  }
  qsort(sorted, n, sizeof *sorted, cmp_str);
  char *buf = malloc(len);
  if (!buf) {
    free(sorted);
    return oom(err);
  }
  size_t at = strlen(staging_id) + 1;
  memcpy(buf, staging_id, at);
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(sorted[i]) + 1;
    memcpy(buf + at, sorted[i], l);
    at += l;
  }
  uint64_t h = XXH3_64bits(buf, len);
  free(buf);
  free(sorted);

  /* The readable prefix must be a safe file name whatever the staging id
   * holds (it comes from events): no '/', no leading '.', no control bytes. */
  char *id = malloc(ID_PREFIX_MAX + 1 + 16 + 1);
  if (!id) return oom(err);
  size_t k = 0;
  for (const char *s = staging_id; *s && k < ID_PREFIX_MAX; s++) {
    char c = *s;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '-' || c == '_' || (c == '.' && k > 0);
    id[k++] = ok ? c : '_';
  }
  if (k == 0) {
    memcpy(id, "seg", 3);
    k = 3;
  }
  snprintf(id + k, 1 + 16 + 1, "-%016" PRIx64, h);
  *out = id;
  return SF_OK;
}

/* ---- validation ---------------------------------------------------------- */

typedef struct {
  uint32_t min;
  size_t idx;
  const char *id;
} order_key;

static int cmp_order(const void *a, const void *b) {
  const order_key *x = a, *y = b;
  if (x->min != y->min) return x->min < y->min ? -1 : 1;
  return strcmp(x->id, y->id);
}

static int cmp_id(const void *a, const void *b) {
  const order_key *x = a, *y = b;
  return strcmp(x->id, y->id);
}

/* Compares one field; fills err naming shard, field and both values. */
static sf_code field_mismatch(const sf_plan_shard *s, const char *field, const char *have,
                              const char *want, const char *ref, sf_err *err) {
  return sf_err_set(
      err, SF_EMISMATCH,
      "shard '%s' (%s): %s is %s but %s has %s; every shard of a job must be "
      "encoded with the same quantizer",
      s->shard_id, s->path, field, have, ref, want);
}

static sf_code check_params(const sf_plan_shard *s, const sf_seg_params *want,
                            const char *ref, sf_err *err) {
  const sf_seg_params *p = &s->params;
  char a[32], b[32];
  if (p->type != want->type)
    return field_mismatch(s, "index type", sf_index_type_name(p->type),
                          sf_index_type_name(want->type), ref, err);
  if (p->metric != want->metric)
    return field_mismatch(s, "metric", sf_metric_name(p->metric),
                          sf_metric_name(want->metric), ref, err);
#define NUM_FIELD(f, name)                                \
  if (p->f != want->f) {                                  \
    snprintf(a, sizeof a, "%" PRIu64, (uint64_t)p->f);    \
    snprintf(b, sizeof b, "%" PRIu64, (uint64_t)want->f); \
    return field_mismatch(s, name, a, b, ref, err);       \
  }
  NUM_FIELD(dim, "dim")
  NUM_FIELD(nlist, "nlist")
  if (p->pq_m && want->pq_m) NUM_FIELD(pq_m, "pq_m")
  if (p->code_size && want->code_size) NUM_FIELD(code_size, "code size")
#undef NUM_FIELD
  if (p->quantizer_checksum != want->quantizer_checksum) {
    snprintf(a, sizeof a, "%016" PRIx64, p->quantizer_checksum);
    snprintf(b, sizeof b, "%016" PRIx64, want->quantizer_checksum);
    return field_mismatch(s, "quantizer checksum", a, b, ref, err);
  }
  return SF_OK;
}

/* Names the shard before `upto` (in plan order) that shares fragments with
 * shards[ord[upto]], and the shared fragments. */
static sf_code overlap_error(const sf_plan_shard *shards, const order_key *ord,
                             size_t upto, sf_err *err) {
  const sf_plan_shard *s = &shards[ord[upto].idx];
  for (size_t j = 0; j < upto; j++) {
    const sf_plan_shard *t = &shards[ord[j].idx];
    if (!roaring_bitmap_intersect(t->fragments, s->fragments)) continue;
    roaring_bitmap_t *both = roaring_bitmap_and(t->fragments, s->fragments);
    char *list = both ? sf_fragset_format_short(both, MSG_RANGES) : NULL;
    sf_err_set(err, SF_EOVERLAP,
               "shards '%s' (%s) and '%s' (%s) both hold fragment(s) %s; each fragment "
               "must be indexed by exactly one shard",
               t->shard_id, t->path, s->shard_id, s->path, list ? list : "?");
    free(list);
    sf_fragset_free(both);
    return SF_EOVERLAP;
  }
  return sf_err_set(err, SF_EOVERLAP, "shard '%s' overlaps another shard", s->shard_id);
}

static sf_code check_coverage(const sf_plan_shard *shards, const order_key *ord, size_t n,
                              const roaring_bitmap_t *all, const roaring_bitmap_t *want,
                              sf_err *err) {
  roaring_bitmap_t *missing = roaring_bitmap_andnot(want, all);
  if (!missing) return oom(err);
  if (!roaring_bitmap_is_empty(missing)) {
    char *list = sf_fragset_format_short(missing, MSG_RANGES);
    sf_err_set(
        err, SF_EINCOMPLETE,
        "the shards cover %" PRIu64 " of %" PRIu64
        " expected fragments; missing: %s (stage shards for them, or narrow "
        "--expected-fragments)",
        roaring_bitmap_get_cardinality(want) - roaring_bitmap_get_cardinality(missing),
        roaring_bitmap_get_cardinality(want), list ? list : "?");
    free(list);
    sf_fragset_free(missing);
    return SF_EINCOMPLETE;
  }
  sf_fragset_free(missing);
  for (size_t i = 0; i < n; i++) {
    const sf_plan_shard *s = &shards[ord[i].idx];
    roaring_bitmap_t *extra = roaring_bitmap_andnot(s->fragments, want);
    if (!extra) return oom(err);
    if (!roaring_bitmap_is_empty(extra)) {
      char *list = sf_fragset_format_short(extra, MSG_RANGES);
      sf_err_set(err, SF_EINVAL,
                 "shard '%s' (%s) holds fragment(s) %s outside the expected fragments",
                 s->shard_id, s->path, list ? list : "?");
      free(list);
      sf_fragset_free(extra);
      return SF_EINVAL;
    }
    sf_fragset_free(extra);
  }
  return SF_OK;
}

/* Everything that makes a job unplannable, in the order a person would fix
 * it: malformed input, parameters, overlaps, coverage, requested type. */
static sf_code validate(const sf_plan_shard *shards, size_t n, const sf_plan_opts *o,
                        order_key *ord, roaring_bitmap_t *all, sf_err *err) {
  if (!o->staging_id || !*o->staging_id)
    return sf_err_set(err, SF_EINVAL, "a staging id is required to name segments");
  /* The commit refuses what the catalog cannot hold: refuse it before a
   * single segment is built. */
  if (sf_catalog_check_id("staging id", o->staging_id, err)) return SF_EINVAL;
  if (n == 0) return sf_err_set(err, SF_EINVAL, "no shards to plan");
  for (size_t i = 0; i < n; i++) {
    const sf_plan_shard *s = &shards[i];
    if (!s->shard_id || !*s->shard_id || !s->path)
      return sf_err_set(err, SF_EINVAL, "shard #%zu has no id or no path", i);
    if (sf_catalog_check_id("shard id", s->shard_id, err)) return SF_EINVAL;
    if (!s->fragments || roaring_bitmap_is_empty(s->fragments))
      return sf_err_set(err, SF_EINVAL, "shard '%s' (%s) holds no fragments", s->shard_id,
                        s->path);
    ord[i] = (order_key){roaring_bitmap_minimum(s->fragments), i, s->shard_id};
  }
  qsort(ord, n, sizeof *ord, cmp_id);
  for (size_t i = 1; i < n; i++)
    if (!strcmp(ord[i - 1].id, ord[i].id))
      return sf_err_set(err, SF_EINVAL, "shard id '%s' is given twice (%s and %s)",
                        ord[i].id, shards[ord[i - 1].idx].path, shards[ord[i].idx].path);
  qsort(ord, n, sizeof *ord, cmp_order);

  const sf_seg_params *want = o->quantizer ? o->quantizer : &shards[ord[0].idx].params;
  char ref[300];
  if (o->quantizer)
    snprintf(ref, sizeof ref, "the quantizer");
  else
    snprintf(ref, sizeof ref, "shard '%s'", shards[ord[0].idx].shard_id);
  for (size_t i = 0; i < n; i++) {
    sf_code rc = check_params(&shards[ord[i].idx], want, ref, err);
    if (rc) return rc;
  }

  for (size_t i = 0; i < n; i++) {
    const sf_plan_shard *s = &shards[ord[i].idx];
    if (roaring_bitmap_intersect(all, s->fragments))
      return overlap_error(shards, ord, i, err);
    roaring_bitmap_or_inplace(all, s->fragments);
  }
  if (o->expected_fragments) {
    sf_code rc = check_coverage(shards, ord, n, all, o->expected_fragments, err);
    if (rc) return rc;
  }
  if (o->index_type >= 0 && (sf_index_type)o->index_type != want->type)
    return sf_err_set(
        err, SF_EMISMATCH,
        "index type %s was requested but the shards are %s: a merge copies "
        "codes verbatim and cannot change the type (re-stage the shards as %s)",
        sf_index_type_name((sf_index_type)o->index_type), sf_index_type_name(want->type),
        sf_index_type_name((sf_index_type)o->index_type));
  return SF_OK;
}

/* ---- planning ------------------------------------------------------------ */

static sf_code copy_shard(sf_plan_shard *dst, const sf_plan_shard *src, sf_err *err) {
  *dst = *src;
  dst->shard_id = strdup(src->shard_id);
  dst->path = strdup(src->path);
  dst->fragments = roaring_bitmap_copy(src->fragments);
  if (!dst->shard_id || !dst->path || !dst->fragments) return oom(err);
  return SF_OK;
}

/* Greedy packing into consecutive groups (see plan.h): the plan order is
 * what makes a rebuilt plan identical, so nothing here looks ahead. */
static sf_code group(sf_plan *p, sf_err *err) {
  p->segments = calloc(p->num_shards, sizeof *p->segments);
  if (!p->segments) return oom(err);
  uint64_t budget = p->target_segment_bytes;
  for (size_t i = 0; i < p->num_shards; i++) {
    const sf_plan_shard *s = &p->shards[i];
    sf_plan_segment *cur = p->num_segments ? &p->segments[p->num_segments - 1] : NULL;
    int join = budget && cur && cur->bytes <= budget && s->bytes <= budget &&
               s->bytes <= budget - cur->bytes;
    if (!join) {
      cur = &p->segments[p->num_segments++];
      cur->first = i;
      cur->fragments = roaring_bitmap_create();
      if (!cur->fragments) return oom(err);
    }
    cur->count++;
    cur->bytes += s->bytes;
    cur->num_rows += s->num_rows;
    roaring_bitmap_or_inplace(cur->fragments, s->fragments);
  }
  const char **ids = malloc(p->num_shards * sizeof *ids);
  if (!ids) return oom(err);
  for (size_t g = 0; g < p->num_segments; g++) {
    sf_plan_segment *seg = &p->segments[g];
    roaring_bitmap_run_optimize(seg->fragments);
    for (size_t k = 0; k < seg->count; k++) ids[k] = p->shards[seg->first + k].shard_id;
    sf_code rc =
        sf_plan_segment_id(p->staging_id, ids, seg->count, &seg->segment_id, err);
    if (rc) {
      free(ids);
      return rc;
    }
  }
  free(ids);
  return SF_OK;
}

sf_code sf_plan_make(const sf_plan_shard *shards, size_t n, const sf_plan_opts *o,
                     sf_plan **out, sf_err *err) {
  *out = NULL;
  order_key *ord = malloc((n ? n : 1) * sizeof *ord);
  roaring_bitmap_t *all = roaring_bitmap_create();
  sf_plan *p = calloc(1, sizeof *p);
  if (!ord || !all || !p) {
    free(ord);
    sf_fragset_free(all);
    free(p);
    return oom(err);
  }
  p->fragments = all;
  sf_code rc = validate(shards, n, o, ord, all, err);
  if (rc) goto fail;
  rc = SF_ENOMEM;
  p->staging_id = strdup(o->staging_id);
  p->shards = calloc(n, sizeof *p->shards);
  if (!p->staging_id || !p->shards) {
    oom(err);
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    p->num_shards = i + 1;
    if ((rc = copy_shard(&p->shards[i], &shards[ord[i].idx], err))) goto fail;
    p->total_bytes += shards[ord[i].idx].bytes;
    p->total_rows += shards[ord[i].idx].num_rows;
  }
  p->params = o->quantizer ? *o->quantizer : p->shards[0].params;
  p->params.kind = SF_SEG_KIND_SEGMENT;
  p->input_kind = o->input_kind ? o->input_kind : SF_SEG_KIND_SHARD;
  p->target_segment_bytes = o->target_segment_bytes;
  roaring_bitmap_run_optimize(all);
  if ((rc = group(p, err))) goto fail;
  free(ord);
  *out = p;
  return SF_OK;
fail:
  free(ord);
  sf_plan_free(p);
  return rc;
}

void sf_plan_shards_free(sf_plan_shard *shards, size_t n) {
  if (!shards) return;
  for (size_t i = 0; i < n; i++) {
    free(shards[i].shard_id);
    free(shards[i].path);
    if (shards[i].fragments) sf_fragset_free(shards[i].fragments);
  }
  free(shards);
}

void sf_plan_free(sf_plan *p) {
  if (!p) return;
  sf_plan_shards_free(p->shards, p->num_shards);
  if (p->segments)
    for (size_t g = 0; g < p->num_segments; g++) {
      free(p->segments[g].segment_id);
      if (p->segments[g].fragments) sf_fragset_free(p->segments[g].fragments);
    }
  free(p->segments);
  if (p->fragments) sf_fragset_free(p->fragments);
  free(p->staging_id);
  free(p);
}

/* ---- staging directories ------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a > b && !memcmp(s + a - b, suffix, b);
}

/* The *.sfshard names in root, sorted, as a malloc'd array of malloc'd
 * strings (caller frees both). Temporary files ("x.sfshard.tmp.N") and
 * hidden files are not shards. */
static sf_code list_shards(const char *root, char ***names, size_t *n, sf_err *err) {
  *names = NULL;
  *n = 0;
  DIR *d = opendir(root);
  if (!d)
    return sf_err_errno(err, SF_ENOTFOUND, errno, "cannot open staging root %s", root);
  size_t cap = 0;
  sf_code rc = SF_OK;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.' || !ends_with(e->d_name, SF_PLAN_SHARD_EXT)) continue;
    if (*n == cap) {
      cap = cap ? cap * 2 : 16;
      char **nn = realloc(*names, cap * sizeof *nn);
      if (!nn) {
        rc = oom(err);
        break;
      }
      *names = nn;
    }
    if (!((*names)[*n] = strdup(e->d_name))) {
      rc = oom(err);
      break;
    }
    (*n)++;
  }
  closedir(d);
  if (!rc) qsort(*names, *n, sizeof **names, cmp_str);
  return rc;
}

static sf_code read_shard(const char *root, const char *name, sf_plan_shard *s,
                          sf_err *err) {
  memset(s, 0, sizeof *s);
  s->path = sf_fs_join(root, name);
  s->shard_id = strndup(name, strlen(name) - strlen(SF_PLAN_SHARD_EXT));
  if (!s->path || !s->shard_id) return oom(err);
  sf_seg_reader *r;
  sf_code rc = sf_seg_open_meta(s->path, &r, err); /* metadata only: no mapping */
  if (rc) return rc;
  s->params = *sf_seg_get_params(r);
  if (s->params.kind != SF_SEG_KIND_SHARD) {
    rc = sf_err_set(err, SF_EFORMAT,
                    "%s is a %s file, not a shard; only shards belong in a "
                    "staging root",
                    s->path, sf_seg_kind_name(s->params.kind));
  } else {
    s->bytes = sf_seg_file_bytes(r);
    s->num_rows = sf_seg_num_rows(r);
    s->fragments = roaring_bitmap_copy(sf_seg_fragments(r));
    if (!s->fragments) rc = oom(err);
  }
  sf_seg_close(r);
  return rc;
}

sf_code sf_plan_scan_staging(const char *root, sf_plan_shard **shards, size_t *n,
                             sf_seg_params *quantizer, sf_err *err) {
  *shards = NULL;
  *n = 0;
  char *qpath = sf_fs_join(root, SF_PLAN_QUANTIZER_NAME);
  if (!qpath) return oom(err);
  sf_quant *q;
  sf_code rc = sf_quant_load(qpath, &q, err);
  free(qpath);
  if (rc) return rc;
  sf_plan_params_from_quant(q, quantizer);
  sf_quant_free(q);

  char **names;
  size_t count;
  if ((rc = list_shards(root, &names, &count, err))) goto done;
  if (count == 0) {
    rc = sf_err_set(err, SF_ENOTFOUND, "no *%s files in staging root %s",
                    SF_PLAN_SHARD_EXT, root);
    goto done;
  }
  *shards = calloc(count, sizeof **shards);
  if (!*shards) {
    rc = oom(err);
    goto done;
  }
  for (size_t i = 0; i < count && !rc; i++) {
    *n = i + 1;
    rc = read_shard(root, names[i], &(*shards)[i], err);
  }
done:
  for (size_t i = 0; names && i < count; i++) free(names[i]);
  free(names);
  if (rc) {
    sf_plan_shards_free(*shards, *n);
    *shards = NULL;
    *n = 0;
  }
  return rc;
}

/* The last non-empty component of path in a malloc'd string. */
static char *last_component(const char *path) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/') len--;
  size_t at = len;
  while (at > 0 && path[at - 1] != '/') at--;
  return strndup(path + at, len - at);
}

sf_code sf_plan_staging(const char *root, const sf_plan_opts *o, sf_plan **out,
                        sf_err *err) {
  *out = NULL;
  if (o->staging_id && sf_catalog_check_id("staging id", o->staging_id, err))
    return SF_EINVAL; /* before the root is read */
  sf_plan_shard *shards;
  size_t n;
  sf_seg_params q;
  sf_code rc = sf_plan_scan_staging(root, &shards, &n, &q, err);
  if (rc) return rc;
  sf_plan_opts opts = *o;
  opts.quantizer = &q;
  char *base = NULL;
  if (!opts.staging_id) {
    /* The last non-empty component: "a/b/" names b; "." and ".." name the
     * directory they resolve to. */
    base = last_component(root);
    if (base && (!strcmp(base, ".") || !strcmp(base, ".."))) {
      char *real = realpath(root, NULL);
      free(base);
      base = real ? last_component(real) : NULL;
      free(real);
    }
    if (!base) {
      sf_plan_shards_free(shards, n);
      return oom(err);
    }
    opts.staging_id = base;
  }
  rc = sf_plan_make(shards, n, &opts, out, err);
  free(base);
  sf_plan_shards_free(shards, n);
  return rc;
}

/* ---- JSON ---------------------------------------------------------------- */

static int set_new(json_t *o, const char *k, json_t *v) {
  return json_object_set_new(o, k, v);
}

static json_t *fragments_json(const roaring_bitmap_t *b) {
  char *s = sf_fragset_format(b);
  json_t *j = s ? json_string(s) : NULL;
  free(s);
  return j;
}

static json_t *shard_json(const sf_plan_shard *s) {
  json_t *o = json_object();
  if (!o || set_new(o, "shard_id", json_string(s->shard_id)) ||
      set_new(o, "path", json_string(s->path)) ||
      set_new(o, "bytes", json_integer((json_int_t)s->bytes)) ||
      set_new(o, "num_rows", json_integer((json_int_t)s->num_rows)) ||
      set_new(o, "fragments", fragments_json(s->fragments))) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static json_t *shards_json(const sf_plan *p, const sf_plan_segment *g) {
  json_t *arr = json_array();
  for (size_t k = 0; arr && k < g->count; k++)
    if (json_array_append_new(arr, shard_json(&p->shards[g->first + k]))) {
      json_decref(arr);
      return NULL;
    }
  return arr;
}

static json_t *segment_json(const sf_plan *p, const sf_plan_segment *g) {
  json_t *o = json_object();
  if (!o || set_new(o, "segment_id", json_string(g->segment_id)) ||
      set_new(o, "bytes", json_integer((json_int_t)g->bytes)) ||
      set_new(o, "num_rows", json_integer((json_int_t)g->num_rows)) ||
      set_new(o, "fragments", fragments_json(g->fragments)) ||
      set_new(o, "shards", shards_json(p, g))) {
    json_decref(o);
    return NULL;
  }
  return o;
}

static json_t *segments_json(const sf_plan *p) {
  json_t *arr = json_array();
  for (size_t g = 0; arr && g < p->num_segments; g++)
    if (json_array_append_new(arr, segment_json(p, &p->segments[g]))) {
      json_decref(arr);
      return NULL;
    }
  return arr;
}

json_t *sf_plan_to_json(const sf_plan *p) {
  char hex[17];
  snprintf(hex, sizeof hex, "%016" PRIx64, p->params.quantizer_checksum);
  json_t *o = json_object();
  if (!o || set_new(o, "staging_id", json_string(p->staging_id)) ||
      set_new(o, "target_segment_bytes",
              json_integer((json_int_t)p->target_segment_bytes)) ||
      set_new(o, "index_type", json_string(sf_index_type_name(p->params.type))) ||
      set_new(o, "metric", json_string(sf_metric_name(p->params.metric))) ||
      set_new(o, "dim", json_integer(p->params.dim)) ||
      set_new(o, "nlist", json_integer(p->params.nlist)) ||
      set_new(o, "quantizer_checksum", json_string(hex)) ||
      set_new(o, "total_bytes", json_integer((json_int_t)p->total_bytes)) ||
      set_new(o, "total_rows", json_integer((json_int_t)p->total_rows)) ||
      set_new(o, "fragments", fragments_json(p->fragments)) ||
      set_new(o, "segments", segments_json(p))) {
    json_decref(o);
    return NULL;
  }
  return o;
}
