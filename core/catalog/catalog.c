/*
 * catalog.c - reading catalog versions, the rules every version keeps, and
 * the queries search and inspect need. Commit lives in catalog_commit.c,
 * the Avro container codec in catalog_codec.c.
 *
 * The newest version is simply the highest-numbered file whose name parses
 * as a version. Writers publish a version only by link(2) of a complete,
 * fsynced file, so a name that parses always holds a whole file; a writer
 * that died mid-write leaves only a temporary name, which no reader ever
 * considers. A newest version that fails to decode is reported, never
 * skipped: falling back to an older version would silently undo commits.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/base/dirlist.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog_internal.h"

/* ---- ownership ----------------------------------------------------------- */

void sf_catalog_index_clear(sf_catalog_index *ix) {
  if (!ix) return;
  for (size_t i = 0; i < ix->nsegs; i++) {
    sf_seginfo_clear(&ix->segs[i].info);
    free(ix->segs[i].staging_id);
  }
  free(ix->segs);
  free(ix->name);
  free(ix->column);
  memset(ix, 0, sizeof *ix);
}

void sf_catalog_job_clear(sf_catalog_job *j) {
  if (!j) return;
  for (size_t i = 0; i < j->nsegment_ids; i++) free(j->segment_ids[i]);
  free(j->segment_ids);
  free(j->staging_id);
  free(j->index_name);
  memset(j, 0, sizeof *j);
}

void sf_catalog_chunk_ref_clear(sf_catalog_chunk_ref *r) {
  if (!r) return;
  free(r->name);
  memset(r, 0, sizeof *r);
}

void sf_catalog_clear(sf_catalog *c) {
  for (size_t i = 0; i < c->nix; i++) sf_catalog_index_clear(&c->ix[i]);
  for (size_t i = 0; i < c->njobs; i++) sf_catalog_job_clear(&c->jobs[i]);
  for (size_t i = 0; i < c->narchive; i++) sf_catalog_chunk_ref_clear(&c->archive[i]);
  free(c->ix);
  free(c->jobs);
  free(c->archive);
  free(c->dataset);
  memset(c, 0, sizeof *c);
}

void sf_catalog_free(sf_catalog *c) {
  if (!c) return;
  sf_catalog_clear(c);
  free(c);
}

sf_code sf_catalog_seginfo_copy(sf_seginfo *dst, const sf_seginfo *src, sf_err *err) {
  *dst = *src;
  dst->segment_id = strdup(src->segment_id);
  dst->path = strdup(src->path);
  dst->fragments = roaring_bitmap_copy(src->fragments);
  dst->shard_ids =
      src->num_shards ? calloc(src->num_shards, sizeof *dst->shard_ids) : NULL;
  int bad = !dst->segment_id || !dst->path || !dst->fragments ||
            (src->num_shards && !dst->shard_ids);
  for (uint32_t i = 0; !bad && i < src->num_shards; i++)
    bad = !(dst->shard_ids[i] = strdup(src->shard_ids[i]));
  if (bad) {
    if (!dst->shard_ids) dst->num_shards = 0;
    sf_seginfo_clear(dst);
    return sf_err_set(err, SF_ENOMEM, "out of memory copying a segment description");
  }
  return SF_OK;
}

/* ---- rules --------------------------------------------------------------- */

static int has_control(const char *s) {
  for (; *s; s++)
    if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
  return 0;
}

sf_code sf_catalog_check_id(const char *field, const char *s, sf_err *err) {
  if (!s || !*s) return sf_err_set(err, SF_EINVAL, "%s is empty", field);
  size_t n = strlen(s);
  if (n > SF_CATALOG_MAX_ID)
    return sf_err_set(err, SF_EINVAL, "%s is %zu bytes long (at most %u)", field, n,
                      SF_CATALOG_MAX_ID);
  if (strchr(s, '/') || has_control(s) || !strcmp(s, ".") || !strcmp(s, ".."))
    return sf_err_set(
        err, SF_EINVAL,
        "%s '%s' is not a valid id: it names a file, so it may not contain '/' "
        "or control characters, nor be '.' or '..'",
        field, s);
  return SF_OK;
}

sf_code sf_catalog_check_text(const char *field, const char *s, sf_err *err) {
  if (!s || !*s) return sf_err_set(err, SF_EINVAL, "%s is empty", field);
  size_t n = strlen(s);
  if (n > SF_CATALOG_MAX_TEXT || has_control(s))
    return sf_err_set(err, SF_EINVAL, "%s must be 1..%u bytes without control characters",
                      field, SF_CATALOG_MAX_TEXT);
  return SF_OK;
}

sf_code sf_catalog_check_segpath(const char *field, const char *s, sf_err *err) {
  static const char prefix[] = "segments/";
  if (!s || strncmp(s, prefix, sizeof prefix - 1) ||
      sf_catalog_check_id(field, s + sizeof prefix - 1, NULL))
    return sf_err_set(
        err, SF_EINVAL,
        "%s '%s' must be 'segments/<file name>' (relative to <dataset>/_indices/)", field,
        s ? s : "");
  return SF_OK;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The first string that occurs twice in s[n], or NULL (also on ENOMEM,
 * which only costs the check, never a false report). */
static const char *find_dup(const char **s, size_t n) {
  if (n < 2) return NULL;
  qsort(s, n, sizeof *s, cmp_str);
  for (size_t i = 1; i < n; i++)
    if (!strcmp(s[i - 1], s[i])) return s[i];
  return NULL;
}

static sf_code check_index(const sf_catalog *c, const sf_catalog_index *ix, sf_err *err) {
  sf_code rc;
  if ((rc = sf_catalog_check_id("name", ix->name, err)) ||
      (rc = sf_catalog_check_text("column", ix->column, err)))
    return rc;
  if ((unsigned)ix->index_type > SF_IVF_PQ || (unsigned)ix->metric > SF_DOT ||
      ix->dim < 1 || ix->dim > SF_MAX_DIM || ix->nlist < 1 || ix->nlist > SF_MAX_NLIST)
    return sf_err_set(err, SF_EINVAL, "type, metric, dim or nlist out of range");
  if (ix->nsegs > SF_CATALOG_MAX_SEGMENTS)
    return sf_err_set(err, SF_ELIMIT, "%zu segments (at most %u)", ix->nsegs,
                      SF_CATALOG_MAX_SEGMENTS);
  roaring_bitmap_t *seen = roaring_bitmap_create();
  if (!seen) return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (size_t i = 0; i < ix->nsegs && !rc; i++) {
    const sf_catalog_segment *s = &ix->segs[i];
    if ((rc = sf_catalog_check_id("segment_id", s->info.segment_id, err)) ||
        (rc = sf_catalog_check_segpath("path", s->info.path, err)) ||
        (rc = sf_catalog_check_id("staging_id", s->staging_id, err)))
      break;
    for (uint32_t k = 0; k < s->info.num_shards && !rc; k++)
      rc = sf_catalog_check_id("shard_ids[]", s->info.shard_ids[k], err);
    if (rc) break;
    if (s->info.bytes > INT64_MAX || s->info.num_rows > INT64_MAX || s->added_in < 1 ||
        s->added_in > c->version || s->info.num_shards > SF_CATALOG_MAX_SHARDS)
      rc = sf_err_set(err, SF_EINVAL,
                      "bytes, num_rows, added_in or shard count out of range");
    else if (!s->info.fragments || roaring_bitmap_is_empty(s->info.fragments))
      rc = sf_err_set(err, SF_EINVAL, "no fragments");
    else if (roaring_bitmap_intersect(seen, s->info.fragments))
      rc = sf_err_set(err, SF_EOVERLAP,
                      "shares fragments with another segment of the index");
    else
      roaring_bitmap_or_inplace(seen, s->info.fragments);
    if (rc) sf_err_prefix(err, "segment %s", s->info.segment_id);
  }
  sf_fragset_free(seen);
  return rc;
}

sf_code sf_catalog_check_job(const sf_catalog_job *j, uint64_t newest, sf_err *err) {
  sf_code rc;
  if ((rc = sf_catalog_check_id("staging_id", j->staging_id, err)) ||
      (rc = sf_catalog_check_id("index_name", j->index_name, err)))
    return rc;
  if (j->version < 1 || j->version > newest || j->nsegment_ids > SF_CATALOG_MAX_SEGMENTS)
    return sf_err_set(err, SF_EINVAL, "version or segment count out of range");
  for (size_t k = 0; k < j->nsegment_ids; k++)
    if ((rc = sf_catalog_check_id("segment_ids[]", j->segment_ids[k], err))) return rc;
  return SF_OK;
}

/* Duplicates among n names (sorted in place). */
static sf_code no_dups(const char **names, size_t n, const char *what, sf_err *err) {
  const char *d = find_dup(names, n);
  return d ? sf_err_set(err, SF_EINVAL, "%s '%s' appears twice", what, d) : SF_OK;
}

static sf_code check_unique(const sf_catalog *c, sf_err *err) {
  size_t nseg = 0, k;
  for (size_t i = 0; i < c->nix; i++) nseg += c->ix[i].nsegs;
  size_t most = nseg > c->nix ? nseg : c->nix;
  if (c->njobs > most) most = c->njobs;
  if (most < 2) return SF_OK;
  const char **names = malloc(most * sizeof *names);
  if (!names) return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (k = 0; k < c->nix; k++) names[k] = c->ix[k].name;
  sf_code rc = no_dups(names, k, "index name", err);
  for (k = 0; !rc && k < c->njobs; k++) names[k] = c->jobs[k].staging_id;
  if (!rc) rc = no_dups(names, k, "staging id", err);
  k = 0;
  for (size_t i = 0; !rc && i < c->nix; i++)
    for (size_t j = 0; j < c->ix[i].nsegs; j++)
      names[k++] = c->ix[i].segs[j].info.segment_id;
  if (!rc) rc = no_dups(names, k, "segment id", err);
  free(names);
  return rc;
}

sf_code sf_catalog_validate(const sf_catalog *c, sf_err *err) {
  sf_code rc = SF_OK;
  if (c->version < 1 || c->version > INT64_MAX || c->nix > SF_CATALOG_MAX_INDEXES ||
      c->njobs > SF_CATALOG_MAX_JOBS || c->narchive > SF_CATALOG_MAX_JOBS)
    rc = sf_err_set(err, SF_EINVAL, "version, index count or job count out of range");
  for (size_t i = 0; i < c->nix && !rc; i++)
    if ((rc = check_index(c, &c->ix[i], err)))
      sf_err_prefix(err, "index %s", c->ix[i].name ? c->ix[i].name : "?");
  for (size_t i = 0; i < c->njobs && !rc; i++)
    if ((rc = sf_catalog_check_job(&c->jobs[i], c->version, err)))
      sf_err_prefix(err, "job %s", c->jobs[i].staging_id ? c->jobs[i].staging_id : "?");
  if (!rc) rc = sf_catalog_check_archive(c, err);
  if (!rc) rc = check_unique(c, err);
  /* A version that breaks a rule is a damaged (or forged) file when read,
   * and a bug when about to be written: either way not the caller's input. */
  if (rc && rc != SF_ENOMEM) {
    rc = SF_ECORRUPT;
    if (err) err->code = rc;
  }
  return rc;
}

/* ---- the canonical form of a dataset ------------------------------------- */

static int hexval(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

/* The path of a file: URI (RFC 8089) whose scheme the caller matched, s
 * pointing after "file:": "///p", "//localhost/p" or "/p", percent-escapes
 * decoded; malloc'd into *path. */
static sf_code file_uri_path(const char *uri, const char *s, char **path, sf_err *err) {
  if (!strncmp(s, "//", 2)) {
    s += 2;
    if (!strncasecmp(s, "localhost/", 10)) s += 9;
    if (*s != '/')
      return sf_err_set(err, SF_EINVAL,
                        "dataset URI '%s' names another host or no absolute path: only "
                        "local paths are supported (file:///data/ds)",
                        uri);
  } else if (*s != '/') {
    return sf_err_set(
        err, SF_EINVAL,
        "dataset URI '%s' must name an absolute local path (file:///data/ds)", uri);
  }
  if (strpbrk(s, "?#"))
    return sf_err_set(err, SF_EINVAL,
                      "dataset URI '%s' has a query or fragment: a dataset is a path "
                      "(write '?' as %%3F and '#' as %%23)",
                      uri);
  char *out = malloc(strlen(s) + 1), *w = out;
  if (!out) return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (; *s; s++) {
    if (*s != '%') {
      *w++ = *s;
      continue;
    }
    int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);
    if (lo < 0 || (hi == 0 && lo == 0)) {
      free(out);
      return sf_err_set(err, SF_EINVAL,
                        "dataset URI '%s' has a bad percent-escape (%%XX with two hex "
                        "digits, not %%00)",
                        uri);
    }
    *w++ = (char)(hi << 4 | lo);
    s += 2;
  }
  *w = 0;
  *path = out;
  return SF_OK;
}

sf_code sf_catalog_dataset_path(const char *dataset, char **path, sf_err *err) {
  *path = NULL;
  if (!dataset || !*dataset) return sf_err_set(err, SF_EINVAL, "no dataset given");
  if (!strncasecmp(dataset, "file:", 5))
    return file_uri_path(dataset, dataset + 5, path, err);
  if (strstr(dataset, "://"))
    return sf_err_set(err, SF_EINVAL,
                      "dataset '%s': only local paths and file:// URIs are supported",
                      dataset);
  if (!(*path = strdup(dataset))) return sf_err_set(err, SF_ENOMEM, "out of memory");
  return SF_OK;
}

sf_code sf_catalog_resolve_dataset(const char *dataset, char **dir, sf_err *err) {
  *dir = NULL;
  char *p = NULL;
  sf_code rc = sf_catalog_dataset_path(dataset, &p, err);
  if (rc) return rc;
  char *r = realpath(p, NULL);
  int e = errno;
  free(p);
  if (!r) {
    rc = sf_err_errno(err,
                      e == ENOENT   ? SF_ENOTFOUND
                      : e == ENOMEM ? SF_ENOMEM
                                    : SF_EIO,
                      e, "dataset %s", dataset);
    errno = e; /* the cause, for callers that must tell whose fault it is */
    return rc;
  }
  struct stat st;
  if (stat(r, &st) || !S_ISDIR(st.st_mode)) {
    free(r);
    rc = sf_err_set(err, SF_EINVAL, "dataset %s is not a directory", dataset);
    errno = ENOTDIR;
    return rc;
  }
  *dir = r;
  return SF_OK;
}

/* ---- files --------------------------------------------------------------- */

void sf_catalog_version_name(uint64_t version, char *buf, size_t size) {
  snprintf(buf, size, "v%020" PRIu64 ".avro", version);
}

int sf_catalog_parse_version_name(const char *name, uint64_t *version) {
  /* Exactly "v" + 20 digits + ".avro": a temporary name never matches. */
  if (strlen(name) != 26 || name[0] != 'v' || strcmp(name + 21, ".avro")) return 0;
  uint64_t v = 0;
  for (int i = 1; i <= 20; i++) {
    if (name[i] < '0' || name[i] > '9') return 0;
    if (v > (UINT64_MAX - 9) / 10) return 0;
    v = v * 10 + (uint64_t)(name[i] - '0');
  }
  if (v == 0 || v > INT64_MAX) return 0;
  *version = v;
  return 1;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static sf_code list_in(const char *dsdir, uint64_t **versions, size_t *n, sf_err *err) {
  *versions = NULL;
  *n = 0;
  char *dir;
  DIR *d;
  sf_code rc = sf_dirlist_open(dsdir, SF_CATALOG_DIR, &dir, &d, err);
  if (rc || !d) return rc;
  size_t cap = 0;
  uint64_t *v = NULL, x;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!sf_catalog_parse_version_name(e->d_name, &x)) continue;
    if (*n == cap) {
      uint64_t *nv = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof *v);
      if (!nv) {
        rc = sf_err_set(err, SF_ENOMEM, "out of memory");
        break;
      }
      v = nv;
    }
    v[(*n)++] = x;
  }
  closedir(d);
  free(dir);
  if (rc) {
    free(v);
    *n = 0;
    return rc;
  }
  if (*n) qsort(v, *n, sizeof *v, cmp_u64);
  *versions = v;
  return SF_OK;
}

sf_code sf_catalog_list_versions(const char *dataset, uint64_t **versions, size_t *n,
                                 sf_err *err) {
  char *ds;
  *versions = NULL;
  *n = 0;
  sf_code rc = sf_catalog_resolve_dataset(dataset, &ds, err);
  if (rc) return rc;
  rc = list_in(ds, versions, n, err);
  free(ds);
  return rc;
}

/* Opens version v of the resolved dataset directory ds (ownership of ds
 * passes to the catalog on success). */
static sf_code open_in(char *ds, uint64_t v, sf_catalog **out, sf_err *err) {
  char name[32], rel[64];
  sf_catalog_version_name(v, name, sizeof name);
  snprintf(rel, sizeof rel, "%s/%s", SF_CATALOG_DIR, name);
  char *path = sf_fs_join(ds, rel);
  sf_catalog *c = calloc(1, sizeof *c);
  if (!path || !c) {
    free(path);
    free(c);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  sf_fs_map m;
  sf_code rc = sf_fs_map_open(path, &m, err);
  if (!rc) {
    rc = sf_catalog_decode(m.data, m.size, path, c, err);
    sf_fs_map_close(&m);
  }
  if (!rc && c->version != v)
    rc =
        sf_err_set(err, SF_ECORRUPT, "%s holds version %llu, not the version of its name",
                   path, (unsigned long long)c->version);
  free(path);
  if (rc) {
    sf_catalog_free(c);
    return rc;
  }
  c->dataset = ds;
  *out = c;
  return SF_OK;
}

sf_code sf_catalog_open_version(const char *dataset, uint64_t version, sf_catalog **out,
                                sf_err *err) {
  char *ds;
  *out = NULL;
  sf_code rc = sf_catalog_resolve_dataset(dataset, &ds, err);
  if (rc) return rc;
  if ((rc = open_in(ds, version, out, err))) free(ds);
  return rc;
}

sf_code sf_catalog_open_latest(const char *dataset, sf_catalog **out, sf_err *err) {
  char *ds;
  *out = NULL;
  sf_code rc = sf_catalog_resolve_dataset(dataset, &ds, err);
  if (rc) return rc;
  /* gc may drop the version we listed if newer ones appeared meanwhile:
   * list again (a few times) rather than report a vanished file. */
  for (int attempt = 0; attempt < 8; attempt++) {
    uint64_t *v;
    size_t n;
    if ((rc = list_in(ds, &v, &n, err))) break;
    if (n == 0) {
      rc = sf_err_set(err, SF_ENOTFOUND, "dataset %s has no catalog version yet (in %s/)",
                      dataset, SF_CATALOG_DIR);
      break;
    }
    uint64_t newest = v[n - 1];
    free(v);
    if ((rc = open_in(ds, newest, out, err)) != SF_ENOTFOUND) break;
  }
  if (rc) free(ds);
  return rc;
}

/* ---- queries ------------------------------------------------------------- */

uint64_t sf_catalog_version(const sf_catalog *c) {
  return c->version;
}
uint64_t sf_catalog_created_at_ms(const sf_catalog *c) {
  return c->created_at_ms;
}
const char *sf_catalog_dataset(const sf_catalog *c) {
  return c->dataset;
}

sf_code sf_catalog_sync(const sf_catalog *c, sf_err *err) {
  char *dir = sf_fs_join(c->dataset, SF_CATALOG_DIR);
  if (!dir) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_code rc = sf_fs_fsync_dir(dir, err);
  free(dir);
  return rc;
}
size_t sf_catalog_num_indexes(const sf_catalog *c) {
  return c->nix;
}
size_t sf_catalog_num_jobs(const sf_catalog *c) {
  return c->njobs;
}

const sf_catalog_index *sf_catalog_index_at(const sf_catalog *c, size_t i) {
  return i < c->nix ? &c->ix[i] : NULL;
}

const sf_catalog_job *sf_catalog_job_at(const sf_catalog *c, size_t i) {
  return i < c->njobs ? &c->jobs[i] : NULL;
}

const sf_catalog_index *sf_catalog_find_index(const sf_catalog *c, const char *name) {
  for (size_t i = 0; i < c->nix; i++)
    if (!strcmp(c->ix[i].name, name)) return &c->ix[i];
  return NULL;
}

size_t sf_catalog_num_archive_chunks(const sf_catalog *c) {
  return c->narchive;
}

const char *sf_catalog_archive_chunk_name(const sf_catalog *c, size_t i) {
  return i < c->narchive ? c->archive[i].name : NULL;
}

uint64_t sf_catalog_num_jobs_total(const sf_catalog *c) {
  uint64_t n = c->njobs;
  for (size_t i = 0; i < c->narchive; i++) n += c->archive[i].count;
  return n;
}

char *sf_catalog_segment_path(const sf_catalog *c, const sf_catalog_segment *s) {
  size_t n = strlen(c->dataset) + strlen(s->info.path) + sizeof "/_indices/";
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s/_indices/%s", c->dataset, s->info.path);
  return p;
}

char *sf_catalog_quantizer_path(const sf_catalog *c, const sf_catalog_index *ix) {
  size_t n = strlen(c->dataset) + sizeof SF_CATALOG_QUANTIZERS_DIR + 20;
  char *p = malloc(n);
  if (p)
    snprintf(p, n, "%s/%s/%016" PRIx64, c->dataset, SF_CATALOG_QUANTIZERS_DIR,
             ix->quantizer_checksum);
  return p;
}

int sf_catalog_segment_is_merged(const sf_catalog_segment *s) {
  return s->info.num_shards == 0 && s->staging_id &&
         !strcmp(s->staging_id, s->info.segment_id);
}

void sf_catalog_explain_corrupt(const sf_catalog *c, const sf_catalog_index *ix,
                                sf_err *err) {
  static const char tag[] = " (file corrupt; ";
  if (!c || !ix || !err || err->code != SF_ECORRUPT) return;
  char *at = strstr(err->msg, tag);
  if (!at) return;
  const sf_catalog_segment *seg = NULL;
  for (size_t i = 0; i < ix->nsegs && !seg; i++) {
    const char *p = strstr(err->msg, ix->segs[i].info.path);
    if (p && p < at && p[strlen(ix->segs[i].info.path)] == ':') seg = &ix->segs[i];
  }
  if (!seg) return;
  char fix[SF_ERR_MSG_MAX];
  int n;
  if (sf_catalog_segment_is_merged(seg)) {
    n = snprintf(
        fix, sizeof fix,
        "segment %s of index %s, catalog version %" PRIu64
        ", was merged by a compaction (version %" PRIu64
        "); its inputs are not kept once gc runs: restore the file from a backup",
        seg->info.segment_id, ix->name, c->version, seg->added_in);
  } else {
    char root[4096];
    struct stat st;
    int r = snprintf(root, sizeof root, "%s/%s/%s", c->dataset, SF_CATALOG_STAGING_DIR,
                     seg->staging_id ? seg->staging_id : "");
    int have = r > 0 && (size_t)r < sizeof root && seg->staging_id &&
               stat(root, &st) == 0 && S_ISDIR(st.st_mode);
    n = snprintf(fix, sizeof fix,
                 "segment %s of index %s, catalog version %" PRIu64
                 ", was committed by job %s: restore the file from a backup%s",
                 seg->info.segment_id, ix->name, c->version,
                 seg->staging_id ? seg->staging_id : "?",
                 have
                     ? ", or rebuild it from the job's shards, still in its staging root "
                       "(move the damaged file aside, then segforge build)"
                     : " (gc has removed the job's staging root and its shards)");
  }
  if (n < 0) return;
  /* Cut to fit, if need be: the path and what is wrong come first. */
  size_t keep = (size_t)(at - err->msg) + sizeof tag - 1;
  snprintf(err->msg + keep, sizeof err->msg - keep, "%s)", fix);
}

void sf_catalog_explain_corrupt_in(const char *dataset, uint64_t version,
                                   const char *index, sf_err *err) {
  if (!err || err->code != SF_ECORRUPT || !dataset || !index) return;
  sf_catalog *c = NULL;
  sf_err ignored = {0};
  if (sf_catalog_open_version(dataset, version, &c, &ignored)) return;
  sf_catalog_explain_corrupt(c, sf_catalog_find_index(c, index), err);
  sf_catalog_free(c);
}

void sf_catalog_paths_free(char **paths, size_t n) {
  for (size_t i = 0; paths && i < n; i++) free(paths[i]);
  free(paths);
}

sf_code sf_catalog_segment_paths(const sf_catalog *c, const sf_catalog_index *ix,
                                 char ***paths, size_t *n, sf_err *err) {
  *paths = calloc(ix->nsegs ? ix->nsegs : 1, sizeof **paths);
  *n = 0;
  if (!*paths) return sf_err_set(err, SF_ENOMEM, "out of memory");
  for (size_t i = 0; i < ix->nsegs; i++) {
    if (!((*paths)[i] = sf_catalog_segment_path(c, &ix->segs[i]))) {
      sf_catalog_paths_free(*paths, i);
      *paths = NULL;
      return sf_err_set(err, SF_ENOMEM, "out of memory");
    }
  }
  *n = ix->nsegs;
  return SF_OK;
}

/* ---- JSON ---------------------------------------------------------------- */

static json_t *strings_json(char *const *s, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    if (json_array_append_new(a, json_string(s[i]))) {
      json_decref(a);
      return NULL;
    }
  return a;
}

static json_t *segment_json(const sf_catalog_segment *s) {
  char *frag = sf_fragset_format(s->info.fragments);
  json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:s?, s:o?, s:s, s:I}", "segment_id",
                        s->info.segment_id, "path", s->info.path, "bytes",
                        (json_int_t)s->info.bytes, "num_rows",
                        (json_int_t)s->info.num_rows, "fragments", frag, "shard_ids",
                        strings_json(s->info.shard_ids, s->info.num_shards), "staging_id",
                        s->staging_id, "added_in", (json_int_t)s->added_in);
  free(frag);
  return o;
}

static json_t *index_json(const sf_catalog *c, const sf_catalog_index *ix) {
  char cs[17], *qpath = sf_catalog_quantizer_path(c, ix);
  snprintf(cs, sizeof cs, "%016" PRIx64, ix->quantizer_checksum);
  uint64_t rows = 0, bytes = 0;
  json_t *segs = json_array();
  for (size_t i = 0; segs && i < ix->nsegs; i++) {
    rows += ix->segs[i].info.num_rows;
    bytes += ix->segs[i].info.bytes;
    json_t *s = segment_json(&ix->segs[i]);
    if (!s || json_array_append_new(segs, s)) {
      json_decref(segs);
      segs = NULL;
    }
  }
  json_t *o = json_pack(
      "{s:s, s:s, s:s, s:s, s:i, s:i, s:s, s:s?, s:I, s:I, s:o?}", "name", ix->name,
      "column", ix->column, "index_type", sf_index_type_name(ix->index_type), "metric",
      sf_metric_name(ix->metric), "dim", (int)ix->dim, "nlist", (int)ix->nlist,
      "quantizer_checksum", cs, "quantizer_path", qpath, "num_rows", (json_int_t)rows,
      "bytes", (json_int_t)bytes, "segments", segs);
  free(qpath);
  if (o && !segs) {
    json_decref(o);
    o = NULL;
  }
  return o;
}

static json_t *job_json(const sf_catalog_job *j) {
  return json_pack("{s:s, s:s, s:I, s:I, s:o?}", "staging_id", j->staging_id,
                   "index_name", j->index_name, "version", (json_int_t)j->version,
                   "committed_at_ms", (json_int_t)j->committed_at_ms, "segment_ids",
                   strings_json(j->segment_ids, j->nsegment_ids));
}

json_t *sf_catalog_describe_json(const sf_catalog *c, const char *index_name) {
  json_t *ixs = json_array(), *jobs = json_array();
  int bad = !ixs || !jobs;
  for (size_t i = 0; !bad && i < c->nix; i++)
    if (!index_name || !strcmp(index_name, c->ix[i].name))
      bad = json_array_append_new(ixs, index_json(c, &c->ix[i])) != 0;
  for (size_t i = 0; !bad && i < c->njobs; i++)
    if (!index_name || !strcmp(index_name, c->jobs[i].index_name))
      bad = json_array_append_new(jobs, job_json(&c->jobs[i])) != 0;
  json_t *arch = bad ? NULL : json_array();
  for (size_t i = 0; arch && i < c->narchive; i++) {
    const sf_catalog_chunk_ref *r = &c->archive[i];
    char prefix[17];
    snprintf(prefix, sizeof prefix, "%016" PRIx64, r->prefix);
    if (json_array_append_new(
            arch, json_pack("{s:s, s:s, s:i, s:I}", "name", r->name, "prefix", prefix,
                            "depth", (int)r->depth, "count", (json_int_t)r->count))) {
      json_decref(arch);
      arch = NULL;
    }
  }
  if (bad || !arch) {
    json_decref(ixs);
    json_decref(jobs);
    return NULL;
  }
  return json_pack("{s:I, s:I, s:o, s:o, s:I, s:o}", "version", (json_int_t)c->version,
                   "created_at_ms", (json_int_t)c->created_at_ms, "indexes", ixs, "jobs",
                   jobs, "jobs_total", (json_int_t)sf_catalog_num_jobs_total(c),
                   "job_archive", arch);
}
