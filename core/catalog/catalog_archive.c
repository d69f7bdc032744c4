/*
 * catalog_archive.c - the job archive: where a catalog keeps the committed
 * jobs that left its window (catalog.h says why; docs/catalog.md, "The job
 * archive", shows the layout).
 *
 * Placement: a job belongs to the chunk whose range holds h = XXH3-64 of its
 * staging id, a range being "the hashes whose top `depth` bits are
 * `prefix`" - a node of the binary trie over hashes. A version's chunks are
 * disjoint nodes, sorted; a hash under none of them belongs to no archived
 * job. So a lookup binary-searches the version's refs and reads one chunk,
 * and a chunk that grows past its capacity splits into its two children
 * (the next hash bit), which never touches another chunk. This is
 * extendible hashing with the directory in the version.
 *
 * A chunk is an Avro container file like a version (core/catalog/JobArchive.avsc,
 * the same framing, checksum and bounded decoding, catalog_codec.c) holding
 * its jobs sorted by (hash, staging id), named by the XXH3-128 of its
 * record: content-addressed, so it is written once and never changed, two
 * committers that make the same chunk write the same bytes, and a reader
 * checks the file against the name the version gives it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fsutil.h"
#include "core/catalog/catalog_internal.h"

#define NAME_HEX 32
#define NAME_EXT ".avro"

uint64_t sf_catalog_job_hash(const char *staging_id) {
  return XXH3_64bits(staging_id, strlen(staging_id));
}

static void range_of(uint64_t prefix, uint32_t depth, uint64_t *lo, uint64_t *hi) {
  if (depth == 0) {
    *lo = 0;
    *hi = UINT64_MAX;
    return;
  }
  *lo = depth == 64 ? prefix : prefix << (64 - depth);
  *hi = depth == 64 ? prefix : *lo | ((UINT64_C(1) << (64 - depth)) - 1);
}

void sf_catalog_chunk_range(const sf_catalog_chunk_ref *r, uint64_t *lo, uint64_t *hi) {
  range_of(r->prefix, r->depth, lo, hi);
}

/* The top `depth` bits of h. */
static uint64_t prefix_of(uint64_t h, uint32_t depth) {
  return depth == 0 ? 0 : depth == 64 ? h : h >> (64 - depth);
}

static int name_ok(const char *name) {
  if (strlen(name) != NAME_HEX + strlen(NAME_EXT) || strcmp(name + NAME_HEX, NAME_EXT))
    return 0;
  for (int i = 0; i < NAME_HEX; i++)
    if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
      return 0;
  return 1;
}

sf_code sf_catalog_check_archive(const sf_catalog *c, sf_err *err) {
  uint64_t prev_hi = 0;
  for (size_t i = 0; i < c->narchive; i++) {
    const sf_catalog_chunk_ref *r = &c->archive[i];
    uint64_t lo, hi;
    if (!r->name || !name_ok(r->name))
      return sf_err_set(err, SF_EINVAL,
                        "job_archive[%zu]: name '%s' is not 32 hex digits + " NAME_EXT, i,
                        r->name ? r->name : "");
    if (r->depth > 64 || (r->depth < 64 && r->prefix >> r->depth) || r->count < 1 ||
        r->count > SF_CATALOG_MAX_JOBS)
      return sf_err_set(err, SF_EINVAL,
                        "job_archive[%zu] (%s): prefix, depth or count out of range", i,
                        r->name);
    range_of(r->prefix, r->depth, &lo, &hi);
    if (i && lo <= prev_hi)
      return sf_err_set(err, SF_EINVAL,
                        "job_archive[%zu] (%s): its range is not after the previous "
                        "chunk's (chunks are sorted and disjoint)",
                        i, r->name);
    prev_hi = hi;
  }
  return SF_OK;
}

/* The index of the ref whose range holds h, or -1. */
static ptrdiff_t find_ref(const sf_catalog_chunk_ref *refs, size_t n, uint64_t h) {
  size_t a = 0, b = n;
  while (a < b) {
    size_t m = a + (b - a) / 2;
    uint64_t lo, hi;
    range_of(refs[m].prefix, refs[m].depth, &lo, &hi);
    if (h < lo)
      b = m;
    else if (h > hi)
      a = m + 1;
    else
      return (ptrdiff_t)m;
  }
  return -1;
}

/* ---- chunks in memory ------------------------------------------------------ */

/* A job with its hash; `j` is borrowed (from a window or a loaded chunk). */
typedef struct entry {
  uint64_t h;
  const sf_catalog_job *j;
} entry;

static int cmp_entry(const void *a, const void *b) {
  const entry *x = a, *y = b;
  if (x->h != y->h) return x->h < y->h ? -1 : 1;
  return strcmp(x->j->staging_id, y->j->staging_id);
}

/* A chunk as read: its jobs in file order, i.e. sorted by (hash, id). */
typedef struct chunk {
  uint64_t prefix;
  uint32_t depth;
  sf_catalog_job *jobs;
  uint64_t *h;
  size_t n;
} chunk;

static void chunk_clear(chunk *k) {
  for (size_t i = 0; k->jobs && i < k->n; i++) sf_catalog_job_clear(&k->jobs[i]);
  free(k->jobs);
  free(k->h);
  memset(k, 0, sizeof *k);
}

static char *chunk_path(const char *ds, const char *name) {
  char *dir = sf_fs_join(ds, SF_CATALOG_JOBS_DIR);
  char *p = dir ? sf_fs_join(dir, name) : NULL;
  free(dir);
  return p;
}

static void name_of(const uint8_t *datum, size_t n, char out[NAME_HEX + 8]) {
  XXH128_hash_t h = XXH3_128bits(datum, n);
  snprintf(out, NAME_HEX + 8, "%016" PRIx64 "%016" PRIx64 NAME_EXT, (uint64_t)h.high64,
           (uint64_t)h.low64);
}

/* Decodes a chunk's record into k. Its prefix and depth must be a trie
 * node, and, when `want` is given, the ones the version gives it, with as
 * many jobs; every job must be valid, no newer than `newest`, in the
 * node, and in (hash, id) order. */
static sf_code dec_jobs(avro_value_t *v, const sf_catalog_chunk_ref *want,
                        uint64_t newest, chunk *k, sf_err *err) {
  avro_value_t f, arr, e;
  int32_t i32;
  int64_t prefix;
  size_t n;
  sf_code rc;
  if ((rc = sf_catalog_get(v, "format", &f, err))) return rc;
  if (avro_value_get_int(&f, &i32) || i32 != SF_CATALOG_ARCHIVE_FORMAT)
    return sf_err_set(err, SF_EFORMAT, "archive chunk format is not %d",
                      SF_CATALOG_ARCHIVE_FORMAT);
  if ((rc = sf_catalog_get_long(v, "prefix", INT64_MIN, INT64_MAX, &prefix, err)) ||
      (rc = sf_catalog_get(v, "depth", &f, err)))
    return rc;
  if (avro_value_get_int(&f, &i32) || i32 < 0 || i32 > 64 ||
      (i32 < 64 && (uint64_t)prefix >> i32))
    return sf_err_set(err, SF_ECORRUPT, "prefix or depth out of range");
  k->prefix = (uint64_t)prefix;
  k->depth = (uint32_t)i32;
  if (want && (k->prefix != want->prefix || k->depth != want->depth))
    return sf_err_set(err, SF_ECORRUPT,
                      "the chunk's prefix and depth are not those its version gives it");
  if ((rc = sf_catalog_get_array(v, "jobs", SF_CATALOG_MAX_JOBS, &arr, &n, err)))
    return rc;
  if (want && n != want->count)
    return sf_err_set(err, SF_ECORRUPT, "%zu jobs, its version says %" PRIu64, n,
                      want->count);
  k->jobs = n ? calloc(n, sizeof *k->jobs) : NULL;
  k->h = n ? calloc(n, sizeof *k->h) : NULL;
  if (n && (!k->jobs || !k->h)) return sf_err_set(err, SF_ENOMEM, "out of memory");
  k->n = n;
  for (size_t i = 0; i < n; i++) {
    sf_catalog_job *j = &k->jobs[i];
    if (avro_value_get_by_index(&arr, i, &e, NULL))
      return sf_err_set(err, SF_ECORRUPT, "jobs[%zu]: missing", i);
    if ((rc = sf_catalog_dec_job(&e, j, err)) ||
        (rc = sf_catalog_check_job(j, newest, err))) {
      if (rc != SF_ENOMEM) rc = SF_ECORRUPT;
      if (err) err->code = rc;
      sf_err_prefix(err, "jobs[%zu]", i);
      return rc;
    }
    k->h[i] = sf_catalog_job_hash(j->staging_id);
    if (prefix_of(k->h[i], k->depth) != k->prefix)
      return sf_err_set(err, SF_ECORRUPT, "job %s does not belong in this chunk",
                        j->staging_id);
    if (i && (k->h[i] < k->h[i - 1] ||
              (k->h[i] == k->h[i - 1] &&
               strcmp(k->jobs[i - 1].staging_id, j->staging_id) >= 0)))
      return sf_err_set(err, SF_ECORRUPT, "jobs[%zu] (%s) is out of order or twice", i,
                        j->staging_id);
  }
  return SF_OK;
}

/* Decodes the bytes of a chunk file into k, checked as dec_jobs says and,
 * with `want`, against the name the version gives it (the XXH3-128 of the
 * record). Errors name `what`. */
static sf_code chunk_decode(const uint8_t *buf, size_t len, const char *what,
                            const sf_catalog_chunk_ref *want, uint64_t newest, chunk *k,
                            sf_err *err) {
  memset(k, 0, sizeof *k);
  const uint8_t *datum, *wschema;
  size_t dlen, wslen;
  avro_schema_t schema = NULL;
  avro_value_iface_t *iface = NULL;
  avro_value_t v;
  char name[NAME_HEX + 8];
  sf_code rc =
      sf_catalog_open_container(buf, len, what, &datum, &dlen, &wschema, &wslen, err);
  if (!rc && want) {
    name_of(datum, dlen, name);
    if (strcmp(name, want->name))
      rc = sf_err_set(err, SF_ECORRUPT,
                      "%s holds the record of chunk %s, not of its name", what, name);
  }
  if (!rc) { /* the messages below do not name the file yet */
    if (!(rc = sf_catalog_load_schema(SF_CATALOG_ARCHIVE_SCHEMA_FILE, &schema, err)) &&
        !(rc = sf_catalog_read_record(schema, datum, dlen, wschema, wslen, &v, &iface,
                                      err))) {
      rc = dec_jobs(&v, want, newest, k, err);
      avro_value_decref(&v);
      avro_value_iface_decref(iface);
    }
    if (rc) sf_err_prefix(err, "%s", what);
  }
  if (schema) avro_schema_decref(schema);
  if (rc) chunk_clear(k);
  return rc;
}

sf_code sf_catalog_archive_decode(const uint8_t *buf, size_t len, const char *what,
                                  size_t *njobs, sf_err *err) {
  chunk k;
  sf_code rc = chunk_decode(buf, len, what, NULL, INT64_MAX, &k, err);
  *njobs = rc ? 0 : k.n;
  chunk_clear(&k);
  return rc;
}

/* Reads the chunk r names from the dataset directory ds. */
static sf_code chunk_read(const char *ds, const sf_catalog_chunk_ref *r, uint64_t newest,
                          chunk *k, sf_err *err) {
  memset(k, 0, sizeof *k);
  char *path = chunk_path(ds, r->name);
  if (!path) return sf_err_set(err, SF_ENOMEM, "out of memory");
  sf_fs_map m;
  sf_code rc = sf_fs_map_open(path, &m, err);
  if (rc) {
    sf_err_prefix(err, "job archive chunk of the catalog");
  } else {
    rc = chunk_decode(m.data, m.size, path, r, newest, k, err);
    sf_fs_map_close(&m);
  }
  free(path);
  return rc;
}

/* ---- the chunk cache ----------------------------------------------------------
 *
 * Serve's intake asks, for every new job, whether its staging id was
 * committed (consumer/intake.c), and an id that is not in the window is
 * looked for in the one chunk whose hash range holds it: without a cache,
 * each new job maps, checks and decodes a chunk of up to
 * SF_CATALOG_ARCHIVE_CHUNK_JOBS jobs (tens of KB). A chunk is
 * content-addressed and never changes, so the process keeps, for the chunks
 * it read last, the sorted hashes of their staging ids (8 bytes a job),
 * keyed by dataset and chunk name, the least recently used going first
 * when the hashes held would pass the bound. A new id's hash is not among
 * them, and that answers it exactly, without a read; an id whose hash is
 * there (a redelivered job, or a collision of the 64-bit hash) is looked
 * up in the chunk read from the file, as without the cache. Every lookup
 * that reads a chunk keeps its hashes; only sf_catalog_lookup_job_cached
 * (intake's) answers from them. A version still has to name the chunk for
 * it to be asked, so the answer is what reading the file would give,
 * except that a file removed or damaged after it was read is not noticed
 * by a lookup the hashes answer (commits and gc read the file every time).
 * Hashes of a chunk holding a job newer than the version asked are not
 * used: the read refuses that chunk. */
typedef struct cache_slot {
  char *ds; /* owned; NULL: the slot is empty */
  char name[NAME_HEX + 8];
  uint64_t *h; /* owned, sorted */
  size_t n;
  uint64_t newest; /* the highest version among its jobs */
  uint64_t used;   /* the tick of its last use */
} cache_slot;

static struct {
  pthread_mutex_t mu;
  cache_slot slots[SF_CATALOG_CHUNK_CACHE_SLOTS];
  size_t cap, held; /* hashes kept at most (0: no cache), and now */
  uint64_t tick, hits, misses;
} g_cache = {.mu = PTHREAD_MUTEX_INITIALIZER, .cap = SF_CATALOG_CHUNK_CACHE_DEFAULT};

static void slot_clear(cache_slot *s) {
  g_cache.held -= s->n;
  free(s->ds);
  free(s->h);
  memset(s, 0, sizeof *s);
}

void sf_catalog_chunk_cache_config(size_t hashes) {
  pthread_mutex_lock(&g_cache.mu);
  for (unsigned i = 0; i < SF_CATALOG_CHUNK_CACHE_SLOTS; i++)
    slot_clear(&g_cache.slots[i]);
  g_cache.cap = hashes;
  g_cache.hits = g_cache.misses = 0;
  pthread_mutex_unlock(&g_cache.mu);
}

void sf_catalog_chunk_cache_stats(uint64_t *hits, uint64_t *misses, size_t *chunks,
                                  size_t *hashes) {
  pthread_mutex_lock(&g_cache.mu);
  *hits = g_cache.hits;
  *misses = g_cache.misses;
  *chunks = 0;
  for (unsigned i = 0; i < SF_CATALOG_CHUNK_CACHE_SLOTS; i++)
    *chunks += g_cache.slots[i].ds != NULL;
  *hashes = g_cache.held;
  pthread_mutex_unlock(&g_cache.mu);
}

/* Under the lock: the slot of (ds, name), or NULL. */
static cache_slot *cache_find(const char *ds, const char *name) {
  for (unsigned i = 0; i < SF_CATALOG_CHUNK_CACHE_SLOTS; i++) {
    cache_slot *s = &g_cache.slots[i];
    if (s->ds && !strcmp(s->name, name) && !strcmp(s->ds, ds)) return s;
  }
  return NULL;
}

/* Keeps the hashes of chunk k of (ds, name), taking k->h. */
static void cache_put(const char *ds, const char *name, chunk *k) {
  pthread_mutex_lock(&g_cache.mu);
  if (k->n <= g_cache.cap && !cache_find(ds, name)) { /* another thread may have */
    for (;;) { /* the least recently used go until it fits and a slot is free */
      cache_slot *lru = NULL, *empty = NULL;
      for (unsigned i = 0; i < SF_CATALOG_CHUNK_CACHE_SLOTS; i++) {
        cache_slot *s = &g_cache.slots[i];
        if (!s->ds)
          empty = empty ? empty : s;
        else if (!lru || s->used < lru->used)
          lru = s;
      }
      if (empty && g_cache.held + k->n <= g_cache.cap) {
        if ((empty->ds = strdup(ds))) {
          snprintf(empty->name, sizeof empty->name, "%s", name);
          empty->h = k->h;
          empty->n = k->n;
          k->h = NULL;
          for (size_t i = 0; i < k->n; i++)
            if (k->jobs[i].version > empty->newest) empty->newest = k->jobs[i].version;
          empty->used = ++g_cache.tick;
          g_cache.held += k->n;
        }
        break;
      }
      slot_clear(lru); /* held + n > cap >= n, or no slot free: lru exists */
    }
  }
  pthread_mutex_unlock(&g_cache.mu);
}

static int has_hash(const uint64_t *h, size_t n, uint64_t x) {
  size_t a = 0, b = n;
  while (a < b) {
    size_t m = a + (b - a) / 2;
    if (h[m] == x) return 1;
    if (h[m] < x)
      a = m + 1;
    else
      b = m;
  }
  return 0;
}

/* With the cache: 1 when the kept hashes of chunk r say that no id of hash
 * h is in it (a lookup answered without a read). */
static int cache_says_absent(const sf_catalog *c, const sf_catalog_chunk_ref *r,
                             uint64_t h) {
  pthread_mutex_lock(&g_cache.mu);
  cache_slot *s = cache_find(c->dataset, r->name);
  int absent = 0;
  if (s && s->newest <= c->version) {
    s->used = ++g_cache.tick;
    absent = !has_hash(s->h, s->n, h);
  }
  if (absent)
    g_cache.hits++;
  else
    g_cache.misses++;
  pthread_mutex_unlock(&g_cache.mu);
  return absent;
}

/* The position of staging id s (hash h) in k, or -1. */
static ptrdiff_t chunk_find(const chunk *k, uint64_t h, const char *s) {
  size_t a = 0, b = k->n;
  while (a < b) {
    size_t m = a + (b - a) / 2;
    int c = k->h[m] != h ? (k->h[m] < h ? -1 : 1) : strcmp(k->jobs[m].staging_id, s);
    if (c == 0) return (ptrdiff_t)m;
    if (c < 0)
      a = m + 1;
    else
      b = m;
  }
  return -1;
}

/* ---- lookups ---------------------------------------------------------------- */

sf_code sf_catalog_job_copy(sf_catalog_job *dst, const sf_catalog_job *src, sf_err *err) {
  memset(dst, 0, sizeof *dst);
  dst->version = src->version;
  dst->committed_at_ms = src->committed_at_ms;
  dst->staging_id = strdup(src->staging_id);
  dst->index_name = strdup(src->index_name);
  if (src->nsegment_ids)
    dst->segment_ids = calloc(src->nsegment_ids, sizeof *dst->segment_ids);
  int bad =
      !dst->staging_id || !dst->index_name || (src->nsegment_ids && !dst->segment_ids);
  for (size_t i = 0; !bad && i < src->nsegment_ids; i++, dst->nsegment_ids++)
    bad = !(dst->segment_ids[i] = strdup(src->segment_ids[i]));
  if (bad) {
    sf_catalog_job_clear(dst);
    return sf_err_set(err, SF_ENOMEM, "out of memory copying job %s", src->staging_id);
  }
  return SF_OK;
}

static const sf_catalog_job *in_window(const sf_catalog *c, const char *s) {
  for (size_t i = 0; i < c->njobs; i++)
    if (!strcmp(c->jobs[i].staging_id, s)) return &c->jobs[i];
  return NULL;
}

static sf_code need_dataset(const sf_catalog *c, sf_err *err) {
  return c->dataset ? SF_OK
                    : sf_err_set(err, SF_EINVAL,
                                 "catalog version %" PRIu64
                                 " was decoded without its dataset: its job archive "
                                 "cannot be read",
                                 c->version);
}

static sf_code lookup_job(const sf_catalog *c, const char *staging_id, int use_cache,
                          sf_catalog_job *out, int *found, sf_err *err) {
  *found = 0;
  if (out) memset(out, 0, sizeof *out);
  if (!staging_id) return sf_err_set(err, SF_EINVAL, "no staging id given");
  const sf_catalog_job *j = in_window(c, staging_id);
  if (j) {
    *found = 1;
    return out ? sf_catalog_job_copy(out, j, err) : SF_OK;
  }
  uint64_t h = sf_catalog_job_hash(staging_id);
  ptrdiff_t r = find_ref(c->archive, c->narchive, h);
  if (r < 0) return SF_OK;
  sf_code rc = need_dataset(c, err);
  if (rc || (use_cache && cache_says_absent(c, &c->archive[r], h))) return rc;
  chunk k;
  if ((rc = chunk_read(c->dataset, &c->archive[r], c->version, &k, err))) return rc;
  ptrdiff_t at = chunk_find(&k, h, staging_id);
  if (at >= 0) {
    *found = 1;
    if (out) rc = sf_catalog_job_copy(out, &k.jobs[at], err);
  }
  cache_put(c->dataset, c->archive[r].name, &k);
  chunk_clear(&k);
  return rc;
}

sf_code sf_catalog_lookup_job(const sf_catalog *c, const char *staging_id,
                              sf_catalog_job *out, int *found, sf_err *err) {
  return lookup_job(c, staging_id, 0, out, found, err);
}

sf_code sf_catalog_lookup_job_cached(const sf_catalog *c, const char *staging_id,
                                     sf_catalog_job *out, int *found, sf_err *err) {
  return lookup_job(c, staging_id, 1, out, found, err);
}

typedef struct pending {
  ptrdiff_t ref;
  uint64_t h;
  size_t i;
} pending;

static int cmp_pending(const void *a, const void *b) {
  const pending *x = a, *y = b;
  return x->ref != y->ref ? (x->ref < y->ref ? -1 : 1) : (x->i < y->i ? -1 : x->i > y->i);
}

sf_code sf_catalog_lookup_jobs(const sf_catalog *c, const char *const *ids, size_t n,
                               uint8_t *found, sf_err *err) {
  pending *p = malloc((n ? n : 1) * sizeof *p);
  if (!p) return sf_err_set(err, SF_ENOMEM, "out of memory");
  size_t np = 0;
  for (size_t i = 0; i < n; i++) {
    found[i] = in_window(c, ids[i]) != NULL;
    if (found[i]) continue;
    uint64_t h = sf_catalog_job_hash(ids[i]);
    ptrdiff_t r = find_ref(c->archive, c->narchive, h);
    if (r >= 0) p[np++] = (pending){r, h, i};
  }
  sf_code rc = np ? need_dataset(c, err) : SF_OK;
  if (np) qsort(p, np, sizeof *p, cmp_pending);
  /* One read per chunk: the ids it may hold are consecutive in p. */
  for (size_t a = 0; !rc && a < np;) {
    size_t b = a;
    while (b < np && p[b].ref == p[a].ref) b++;
    chunk k;
    if (!(rc = chunk_read(c->dataset, &c->archive[p[a].ref], c->version, &k, err))) {
      for (size_t x = a; x < b; x++)
        found[p[x].i] = chunk_find(&k, p[x].h, ids[p[x].i]) >= 0;
      cache_put(c->dataset, c->archive[p[a].ref].name, &k);
      chunk_clear(&k);
    }
    a = b;
  }
  free(p);
  return rc;
}

/* ---- writing: the spill ------------------------------------------------------ */

typedef struct chunk_out {
  uint64_t prefix;
  uint32_t depth;
  const entry *e;
  size_t n;
} chunk_out;

static sf_code fill_chunk(avro_value_t *v, const void *ctx, sf_err *err) {
  const chunk_out *k = ctx;
  avro_value_t f, arr, e;
  uint8_t zero[8] = {0};
  if (avro_value_get_by_name(v, "format", &f, NULL) ||
      avro_value_set_int(&f, SF_CATALOG_ARCHIVE_FORMAT) ||
      avro_value_get_by_name(v, "prefix", &f, NULL) ||
      avro_value_set_long(&f, (int64_t)k->prefix) ||
      avro_value_get_by_name(v, "depth", &f, NULL) ||
      avro_value_set_int(&f, (int32_t)k->depth) ||
      avro_value_get_by_name(v, "checksum", &f, NULL) ||
      avro_value_set_fixed(&f, zero, sizeof zero) ||
      avro_value_get_by_name(v, "jobs", &arr, NULL))
    goto failed;
  for (size_t i = 0; i < k->n; i++)
    if (avro_value_append(&arr, &e, NULL) || sf_catalog_put_job(&e, k->e[i].j))
      goto failed;
  return SF_OK;
failed:
  return sf_err_set(err, SF_ENOMEM, "cannot encode a job archive chunk: %s",
                    avro_strerror());
}

/* What a spill builds: the new refs, and the chunk files they name, written
 * but not yet durable (see publish_chunks). */
typedef struct spill {
  const char *ds;
  size_t cmax;
  avro_schema_t schema;
  sf_catalog_chunk_ref *refs; /* new */
  sf_fs_tmpfile *files;       /* one per new ref: written, not synced */
  size_t nrefs, cap;
  int have_dir;
} spill;

static sf_code ensure_dir(spill *s, sf_err *err) {
  if (s->have_dir) return SF_OK;
  char *dir = sf_fs_join(s->ds, SF_CATALOG_JOBS_DIR);
  if (!dir) return sf_err_set(err, SF_ENOMEM, "out of memory");
  struct stat st;
  sf_code rc = SF_OK;
  if (stat(dir, &st)) { /* new: its name must be as durable as the chunks in it */
    char *parent = sf_fs_dirname(dir);
    if (!parent)
      rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    else if (!(rc = sf_fs_mkdirs(dir, err)))
      rc = sf_fs_fsync_dir(parent, err);
    free(parent);
  }
  free(dir);
  s->have_dir = !rc;
  return rc;
}

static sf_code grow(spill *s, sf_err *err) {
  if (s->nrefs < s->cap) return SF_OK;
  size_t cap = s->cap ? 2 * s->cap : 8;
  sf_catalog_chunk_ref *nr = realloc(s->refs, cap * sizeof *nr);
  if (nr) s->refs = nr;
  sf_fs_tmpfile *nf = nr ? realloc(s->files, cap * sizeof *nf) : NULL;
  if (nf) s->files = nf;
  if (!nr || !nf) return sf_err_set(err, SF_ENOMEM, "out of memory");
  s->cap = cap;
  return SF_OK;
}

/* Writes one chunk of k->n (>= 1) sorted entries to a temporary file and
 * adds its ref. */
static sf_code write_chunk(spill *s, const chunk_out *k, sf_err *err) {
  uint8_t *datum = NULL, *buf = NULL;
  char *path = NULL;
  size_t n = 0, len = 0;
  char name[NAME_HEX + 8];
  sf_code rc = ensure_dir(s, err);
  if (!rc) rc = grow(s, err);
  if (!rc)
    rc = sf_catalog_encode_record(s->schema, fill_chunk, k, "a job archive chunk", &datum,
                                  &n, err);
  if (rc) return rc;
  name_of(datum, n, name);
  if (!(path = chunk_path(s->ds, name)))
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  else
    rc = sf_catalog_frame_container(s->schema, datum, n, name, &buf, &len, err);
  sf_fs_tmpfile *t = &s->files[s->nrefs];
  sf_catalog_chunk_ref *r = &s->refs[s->nrefs];
  memset(r, 0, sizeof *r);
  if (!rc && !(rc = sf_fs_tmpfile_open(t, path, err))) {
    if ((rc = sf_fs_write_all(t->fd, buf, len, t->tmp_path, err)) ||
        !(r->name = strdup(name))) {
      if (!rc) rc = sf_err_set(err, SF_ENOMEM, "out of memory");
      sf_fs_tmpfile_abort(t);
    } else {
      r->prefix = k->prefix;
      r->depth = k->depth;
      r->count = k->n;
      s->nrefs++;
    }
  }
  free(buf);
  free(path);
  free(datum);
  return rc;
}

/* Makes the written chunks durable under their names: each file fsynced
 * and renamed into place (a file already there under a name holds the
 * same jobs - content addressing - or is a crashed writer's: replaced by
 * the same bytes), then the directory fsynced once. All files are written
 * before the first fsync, so that the file system flushes them together;
 * a spill of many chunks costs about one sync, not one per chunk. */
static sf_code publish_chunks(spill *s, sf_err *err) {
  sf_code rc = SF_OK;
  for (size_t i = 0; !rc && i < s->nrefs; i++)
    if (fsync(s->files[i].fd))
      rc = sf_err_errno(err, SF_EIO, errno, "cannot fsync %s", s->files[i].tmp_path);
  for (size_t i = 0; !rc && i < s->nrefs; i++) {
    sf_fs_tmpfile *t = &s->files[i];
    if (rename(t->tmp_path, t->path))
      rc = sf_err_errno(err, SF_EIO, errno, "cannot rename %s to %s", t->tmp_path,
                        t->path);
    else {
      free(t->tmp_path); /* renamed: nothing to unlink */
      t->tmp_path = NULL;
    }
  }
  if (!rc && s->nrefs) {
    char *dir = sf_fs_join(s->ds, SF_CATALOG_JOBS_DIR);
    rc = dir ? sf_fs_fsync_dir(dir, err) : sf_err_set(err, SF_ENOMEM, "out of memory");
    free(dir);
  }
  return rc;
}

/* Writes the sorted entries e[n] (all in the range of prefix/depth) as one
 * chunk, or as the chunks of its two halves while it holds more than cmax
 * (empty halves are left out: a hash in no chunk is in no job). */
static sf_code emit(spill *s, const entry *e, size_t n, uint64_t prefix, uint32_t depth,
                    sf_err *err) {
  if (!n) return SF_OK;
  if (n <= s->cmax || depth == 64) {
    chunk_out k = {prefix, depth, e, n};
    return write_chunk(s, &k, err);
  }
  size_t left = 0; /* sorted by hash: the next bit is 0 for a prefix of e */
  while (left < n && !((e[left].h >> (63 - depth)) & 1)) left++;
  sf_code rc = emit(s, e, left, prefix << 1, depth + 1, err);
  return rc ? rc : emit(s, e + left, n - left, prefix << 1 | 1, depth + 1, err);
}

/* Whether [lo, hi] meets a range of refs[n] (sorted, disjoint) or of the
 * new refs. */
static int meets(const sf_catalog_chunk_ref *refs, size_t n, const spill *s, uint64_t lo,
                 uint64_t hi) {
  size_t a = 0, b = n; /* the first ref whose range ends at or after lo */
  while (a < b) {
    size_t m = a + (b - a) / 2;
    uint64_t rl, rh;
    range_of(refs[m].prefix, refs[m].depth, &rl, &rh);
    if (rh < lo)
      a = m + 1;
    else
      b = m;
  }
  if (a < n) {
    uint64_t rl, rh;
    range_of(refs[a].prefix, refs[a].depth, &rl, &rh);
    if (rl <= hi) return 1;
  }
  for (size_t i = 0; i < s->nrefs; i++) {
    uint64_t rl, rh;
    range_of(s->refs[i].prefix, s->refs[i].depth, &rl, &rh);
    if (rl <= hi && lo <= rh) return 1;
  }
  return 0;
}

static int cmp_ref(const void *a, const void *b) {
  uint64_t x, y, hx, hy;
  range_of(((const sf_catalog_chunk_ref *)a)->prefix,
           ((const sf_catalog_chunk_ref *)a)->depth, &x, &hx);
  range_of(((const sf_catalog_chunk_ref *)b)->prefix,
           ((const sf_catalog_chunk_ref *)b)->depth, &y, &hy);
  return x < y ? -1 : x > y;
}

/* Merges the moved entries m[n] (sorted) with chunk k into *out (malloc'd,
 * sorted). A staging id in both is a job committed twice: the catalog is
 * damaged. */
static sf_code merge_into(const entry *m, size_t n, const chunk *k, entry **out,
                          size_t *nout, sf_err *err) {
  entry *e = malloc((n + k->n) * sizeof *e);
  if (!e) return sf_err_set(err, SF_ENOMEM, "out of memory");
  size_t a = 0, b = 0, o = 0;
  while (a < n || b < k->n) {
    entry kb = b < k->n ? (entry){k->h[b], &k->jobs[b]} : (entry){0, NULL};
    int c = a == n ? 1 : b == k->n ? -1 : cmp_entry(&m[a], &kb);
    if (c == 0) {
      free(e);
      return sf_err_set(err, SF_ECORRUPT,
                        "job %s is both in the window and in the job archive",
                        m[a].j->staging_id);
    }
    e[o++] = c < 0 ? m[a++] : (b++, kb);
  }
  *out = e;
  *nout = o;
  return SF_OK;
}

/* The moved entries m[n] that fall in no chunk: each run of them goes into
 * the largest free trie node around its first hash (one that meets no
 * chunk, old or new), split further if it must be. */
static sf_code place_in_gap(spill *s, const sf_catalog *c, const entry *m, size_t n,
                            sf_err *err) {
  for (size_t a = 0; a < n;) {
    uint64_t h = m[a].h, lo = 0, hi = UINT64_MAX;
    uint32_t d = 0;
    for (;; d++) { /* terminates: the node of depth 64 is {h}, in no chunk */
      range_of(prefix_of(h, d), d, &lo, &hi);
      if (!meets(c->archive, c->narchive, s, lo, hi)) break;
    }
    size_t b = a;
    while (b < n && m[b].h <= hi) b++;
    sf_code rc = emit(s, m + a, b - a, prefix_of(h, d), d, err);
    if (rc) return rc;
    a = b;
  }
  return SF_OK;
}

/* Replaces c's refs: the old ones not in `gone`, and s's new ones. */
static sf_code swap_refs(sf_catalog *c, spill *s, const uint8_t *gone, sf_err *err) {
  size_t keep = 0;
  for (size_t i = 0; i < c->narchive; i++) keep += !gone[i];
  sf_catalog_chunk_ref *r = malloc((keep + s->nrefs + 1) * sizeof *r);
  if (!r) return sf_err_set(err, SF_ENOMEM, "out of memory");
  size_t n = 0;
  for (size_t i = 0; i < c->narchive; i++) {
    if (gone[i])
      sf_catalog_chunk_ref_clear(&c->archive[i]);
    else
      r[n++] = c->archive[i];
  }
  for (size_t i = 0; i < s->nrefs; i++) {
    r[n++] = s->refs[i];
    sf_fs_tmpfile_abort(&s->files[i]); /* renamed: frees the names only */
  }
  s->nrefs = 0; /* moved into r */
  qsort(r, n, sizeof *r, cmp_ref);
  free(c->archive);
  c->archive = r;
  c->narchive = n;
  return SF_OK;
}

sf_code sf_catalog_archive_spill(sf_catalog *c, const char *ds, size_t window,
                                 size_t chunk_max, sf_err *err) {
  /* Hysteresis: the window fills to half as much again before a spill
   * empties it back to `window`, so most commits write no chunk and the
   * chunks a spill rewrites are synced together. */
  if (c->njobs <= window + window / 2) return SF_OK;
  size_t nm = c->njobs - window;
  spill s = {.ds = ds, .cmax = chunk_max ? chunk_max : 1};
  entry *m = malloc(nm * sizeof *m), *merged = NULL;
  uint8_t *gone = calloc(c->narchive + 1, 1);
  sf_code rc = m && gone ? SF_OK : sf_err_set(err, SF_ENOMEM, "out of memory");
  if (!rc) rc = sf_catalog_load_schema(SF_CATALOG_ARCHIVE_SCHEMA_FILE, &s.schema, err);
  if (rc) goto out;
  for (size_t i = 0; i < nm; i++)
    m[i] = (entry){sf_catalog_job_hash(c->jobs[i].staging_id), &c->jobs[i]};
  qsort(m, nm, sizeof *m, cmp_entry);
  /* Sorted by hash, the entries of one chunk (or of one gap between
   * chunks) are consecutive. */
  for (size_t a = 0; !rc && a < nm;) {
    ptrdiff_t r = find_ref(c->archive, c->narchive, m[a].h);
    size_t b = a + 1;
    if (r < 0) {
      while (b < nm && find_ref(c->archive, c->narchive, m[b].h) < 0) b++;
      rc = place_in_gap(&s, c, m + a, b - a, err);
    } else {
      while (b < nm && find_ref(c->archive, c->narchive, m[b].h) == r) b++;
      chunk k;
      size_t nmerged = 0;
      if (!(rc = chunk_read(ds, &c->archive[r], c->version, &k, err))) {
        if (!(rc = merge_into(m + a, b - a, &k, &merged, &nmerged, err)))
          rc = emit(&s, merged, nmerged, c->archive[r].prefix, c->archive[r].depth, err);
        free(merged);
        merged = NULL;
        chunk_clear(&k);
      }
      gone[r] = 1;
    }
    a = b;
  }
  if (rc || (rc = publish_chunks(&s, err)) || (rc = swap_refs(c, &s, gone, err)))
    goto out;
  /* The moved jobs now live in chunks: drop them from the window. */
  for (size_t i = 0; i < nm; i++) sf_catalog_job_clear(&c->jobs[i]);
  memmove(c->jobs, c->jobs + nm, window * sizeof *c->jobs);
  c->njobs = window;
out:
  for (size_t i = 0; i < s.nrefs; i++) { /* not moved into c: failed */
    sf_catalog_chunk_ref_clear(&s.refs[i]);
    sf_fs_tmpfile_abort(&s.files[i]);
  }
  free(s.refs);
  free(s.files);
  if (s.schema) avro_schema_decref(s.schema);
  free(m);
  free(gone);
  return rc;
}
