/*
 * jobs.c - the job table (see jobs.h for the rules).
 *
 * Data structures, chosen so that the poll loop does O(1) work per event
 * apart from the bitmap operations the rules need:
 *  - one open-addressing hash table (linear probing, backward-shift
 *    deletion, XXH3 of the staging id) maps a staging id to its job, live or
 *    terminal;
 *  - each job indexes its shards by shard_id in a small open-addressing
 *    array of slot numbers, so a redelivery is found without a scan;
 *  - open jobs sit on a list in arrival order: since every job gets the same
 *    timeout, that is deadline order, and expiry looks only at the head;
 *  - terminal records sit on a FIFO and the oldest is dropped beyond
 *    max_terminal.
 */
#include "consumer/jobs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "core/base/fragset.h"
#include "core/base/memcost.h"

/* An open-addressing hash map of pointers (linear probing, backward-shift
 * deletion, the hash kept beside each entry); the caller says what a key
 * is. Used for the jobs, keyed by (dataset, staging id), and for the
 * datasets, keyed by name. */
typedef struct slot {
  uint64_t h;
  void *p; /* NULL: empty */
} slot;

typedef struct pmap {
  slot *tab;
  size_t cap, count;
} pmap;

/* An interned dataset name: one string shared by every job of the dataset,
 * live or terminal, and freed with the last of them. */
typedef struct sf_jobs_dataset {
  size_t refs;
  uint64_t h;
  struct sf_jobs *t; /* whose map holds it; NULL once that table is freed */
  char name[];
} dsname;

struct sf_jobs {
  sf_jobs_opts o;
  pmap jobs;     /* (dataset, staging id) -> sf_job, live or terminal */
  pmap datasets; /* name -> dsname */
  sf_job open;   /* sentinel of the open list (arrival order) */
  sf_job term;   /* sentinel of the terminal FIFO (oldest first) */
  size_t nopen, nready, nfailed, nterm, nevents;
  size_t nheld;   /* jobs with events held at intake */
  size_t nraw;    /* original event bytes held by live jobs */
  size_t nbytes;  /* heap bytes of live jobs (the sum of their cost) */
  size_t tbytes;  /* heap bytes of terminal records */
  size_t dsbytes; /* heap bytes of the interned dataset names */
};

static const char *const outcome_names[] = {"NEW",    "COMPLETE", "DUPLICATE", "REJECTED",
                                            "FAILED", "LATE",     "HELD",      "ERROR"};

const char *sf_jobs_outcome_name(sf_jobs_outcome o) {
  return (unsigned)o <= SF_JOBS_ERROR ? outcome_names[o] : "UNKNOWN";
}

/* ---- lists -------------------------------------------------------------- */

static void list_init(sf_job *s) {
  s->prev = s->next = s;
}
static void list_unlink(sf_job *j) {
  if (!j->next) return;
  j->prev->next = j->next;
  j->next->prev = j->prev;
  j->prev = j->next = NULL;
}
static void list_append(sf_job *s, sf_job *j) {
  j->prev = s->prev;
  j->next = s;
  s->prev->next = j;
  s->prev = j;
}

/* ---- the maps ------------------------------------------------------------ */

static uint64_t hash_str(const char *s) {
  return XXH3_64bits(s, strlen(s));
}

/* The slot of the entry for which eq(entry, key) holds, or the empty slot
 * where it would go. */
static size_t pmap_find(const pmap *m, uint64_t h, int (*eq)(const void *, const void *),
                        const void *key) {
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask)
    if (!m->tab[i].p || (m->tab[i].h == h && eq(m->tab[i].p, key))) return i;
}

static sf_code pmap_grow(pmap *m, sf_err *err) {
  size_t ncap = m->cap ? m->cap * 2 : 64;
  slot *n = calloc(ncap, sizeof *n);
  if (!n) return sf_err_set(err, SF_ENOMEM, "out of memory growing the job table");
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->tab[i].p) continue;
    size_t k = m->tab[i].h & (ncap - 1);
    while (n[k].p) k = (k + 1) & (ncap - 1);
    n[k] = m->tab[i];
  }
  free(m->tab);
  m->tab = n;
  m->cap = ncap;
  return SF_OK;
}

/* Adds p, whose key the map does not hold yet. */
static sf_code pmap_put(pmap *m, uint64_t h, void *p, sf_err *err) {
  if ((m->count + 1) * 4 > m->cap * 3 && pmap_grow(m, err)) return SF_ENOMEM;
  size_t mask = m->cap - 1, i = h & mask;
  while (m->tab[i].p) i = (i + 1) & mask;
  m->tab[i] = (slot){h, p};
  m->count++;
  return SF_OK;
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void pmap_del(pmap *m, uint64_t h, const void *p) {
  if (!m->cap) return;
  size_t mask = m->cap - 1, i = h & mask;
  while (m->tab[i].p && m->tab[i].p != p) i = (i + 1) & mask;
  if (!m->tab[i].p) return;
  m->tab[i].p = NULL;
  m->count--;
  for (size_t k = (i + 1) & mask; m->tab[k].p; k = (k + 1) & mask) {
    size_t home = m->tab[k].h & mask;
    /* Move k back into the hole unless its home lies cyclically in (i, k]. */
    if (i <= k ? (home <= i || home > k) : (home <= i && home > k)) {
      m->tab[i] = m->tab[k];
      m->tab[k].p = NULL;
      i = k;
    }
  }
}

static int ds_eq(const void *entry, const void *name) {
  return !strcmp(((const dsname *)entry)->name, name);
}

/* The interned dataset of that name with one more reference, or NULL when
 * out of memory. */
static dsname *ds_get(sf_jobs *t, const char *name, sf_err *err) {
  uint64_t h = hash_str(name);
  dsname *d =
      t->datasets.cap ? t->datasets.tab[pmap_find(&t->datasets, h, ds_eq, name)].p : NULL;
  if (!d) {
    size_t n = strlen(name);
    if (!(d = malloc(sizeof *d + n + 1))) {
      sf_err_set(err, SF_ENOMEM, "out of memory");
      return NULL;
    }
    *d = (dsname){.refs = 0, .h = h, .t = t};
    memcpy(d->name, name, n + 1);
    if (pmap_put(&t->datasets, h, d, err)) {
      free(d);
      return NULL;
    }
    t->dsbytes += sf_mem_of(d);
  }
  d->refs++;
  return d;
}

/* Drops a reference; the last one frees it. */
static void ds_put(dsname *d) {
  if (!d || --d->refs) return;
  if (d->t) {
    pmap_del(&d->t->datasets, d->h, d);
    d->t->dsbytes -= sf_mem_of(d);
  }
  free(d);
}

typedef struct job_key {
  const dsname *ds;
  const char *staging_id;
} job_key;

static uint64_t job_hash(const dsname *ds, const char *staging_id) {
  return XXH3_64bits_withSeed(staging_id, strlen(staging_id), ds->h);
}

static int job_eq(const void *entry, const void *key) {
  const sf_job *j = entry;
  const job_key *k = key;
  return j->ds == k->ds && !strcmp(j->staging_id, k->staging_id);
}

static sf_code map_put(sf_jobs *t, sf_job *j, sf_err *err) {
  return pmap_put(&t->jobs, job_hash(j->ds, j->staging_id), j, err);
}

static void map_del(sf_jobs *t, const sf_job *j) {
  pmap_del(&t->jobs, job_hash(j->ds, j->staging_id), j);
}

sf_job *sf_jobs_find(const sf_jobs *t, const char *dataset, const char *staging_id) {
  if (!t->datasets.cap || !t->jobs.cap) return NULL;
  uint64_t h = hash_str(dataset);
  const dsname *ds = t->datasets.tab[pmap_find(&t->datasets, h, ds_eq, dataset)].p;
  if (!ds) return NULL;
  job_key k = {ds, staging_id};
  return t->jobs.tab[pmap_find(&t->jobs, job_hash(ds, staging_id), job_eq, &k)].p;
}

/* ---- jobs ----------------------------------------------------------------- */

static void shard_clear(sf_jobs_shard *s) {
  sf_shard_staged_clear(&s->ev);
  free(s->raw);
  free(s->path);
  memset(s, 0, sizeof *s);
}

/* Frees the parts of a shard's event that the job keeps once, so that a
 * pending job costs what it must (docs/serve.md, Back-pressure): every
 * shard's event id (the raw bytes carry it), dataset_uri (the job's
 * canonical name) and staging id (the job's); and, but for the first
 * shard, whose event holds the job's parameters, the parameters that
 * param_mismatch found equal to the first's. */
static void shard_trim(sf_jobs_shard *s, int first) {
  sf_shard_staged *e = &s->ev;
  free(e->event_id);
  free(e->dataset_uri);
  free(e->staging_id);
  e->event_id = e->dataset_uri = e->staging_id = NULL;
  if (first) return;
  free(e->index_name);
  free(e->column);
  sf_fragset_free(e->expected_fragments);
  e->index_name = e->column = NULL;
  e->expected_fragments = NULL;
}

/* The heap bytes a shard holds beyond its slot. */
static size_t shard_cost(const sf_jobs_shard *s) {
  const sf_shard_staged *e = &s->ev;
  return sf_mem_of(s->raw) + sf_mem_of(s->path) + sf_mem_of(e->event_id) +
         sf_mem_of(e->dataset_uri) + sf_mem_of(e->index_name) + sf_mem_of(e->column) +
         sf_mem_of(e->staging_id) + sf_mem_of(e->shard_id) + sf_mem_of(e->shard_path) +
         sf_fragset_mem(e->fragments) + sf_fragset_mem(e->expected_fragments);
}

static int terminal(sf_job_state s) {
  return s == SF_JOB_COMMITTED || s == SF_JOB_DEAD;
}

/* Sets j->cost to what j holds now (the shards' parts are summed in
 * shards_cost as they join) and moves the table's count with it. A
 * DROPPED job is no longer counted. */
static void recost(sf_jobs *t, sf_job *j) {
  size_t c = sf_mem_of(j) + sf_mem_of(j->staging_id) + sf_mem_of(j->shards) +
             sf_mem_of(j->index) + sf_mem_of(j->refs) + sf_fragset_mem(j->covered) +
             sf_mem_of(j->message) + sf_mem_of(j->trigger) + sf_mem_of(j->seen) +
             j->shards_cost + sf_mem_of(j->waiting) + j->waiting_cost;
  if (j->state != SF_JOB_DROPPED) {
    size_t *b = terminal(j->state) ? &t->tbytes : &t->nbytes;
    *b = *b - j->cost + c;
  }
  j->cost = c;
}

/* Takes j's cost out of the table's count (before a change of bucket or
 * its end). */
static void uncost(sf_jobs *t, sf_job *j) {
  if (j->state != SF_JOB_DROPPED)
    *(terminal(j->state) ? &t->tbytes : &t->nbytes) -= j->cost;
  j->cost = 0;
}

/* The union of the job's fragments: its own bitmap from the second shard
 * on, the first shard's fragments until then. */
static const roaring_bitmap_t *covered(const sf_job *j) {
  return j->covered ? j->covered : j->shards[0].ev.fragments;
}

/* Frees what a live job holds, keeping the staging id (a terminal record). */
static void job_release(sf_job *j) {
  for (size_t i = 0; i < j->nshards; i++) shard_clear(&j->shards[i]);
  free(j->shards);
  j->shards = NULL;
  j->nshards = 0;
  if (j->trigger) shard_clear(j->trigger);
  free(j->trigger);
  j->trigger = NULL;
  free(j->refs);
  j->refs = NULL;
  j->nrefs = j->refs_cap = 0;
  free(j->index);
  j->index = NULL;
  j->index_cap = 0;
  if (j->covered) roaring_bitmap_free(j->covered); /* CRoaring's free rejects NULL */
  j->covered = NULL;
  free(j->message);
  j->message = NULL;
  j->shards_cost = 0;
  for (size_t i = 0; i < j->nwaiting; i++) shard_clear(&j->waiting[i]);
  free(j->waiting);
  j->waiting = NULL;
  j->nwaiting = j->waiting_cap = j->waiting_cost = 0;
}

void sf_jobs_job_free(sf_job *j) {
  if (!j) return;
  job_release(j);
  free(j->seen);
  ds_put(j->ds);
  free(j->staging_id);
  free(j);
}

static sf_code add_ref(sf_jobs *t, sf_job *j, sf_jobs_ref ref, sf_err *err) {
  if (j->nrefs == j->refs_cap) {
    size_t ncap = j->refs_cap ? j->refs_cap * 2 : 2; /* most jobs have few events */
    sf_jobs_ref *n = realloc(j->refs, ncap * sizeof *n);
    if (!n) return sf_err_set(err, SF_ENOMEM, "out of memory");
    j->refs = n;
    j->refs_cap = ncap;
  }
  j->refs[j->nrefs++] = ref;
  t->nevents++;
  return SF_OK;
}

/* Jobs of up to this many shards have no index: a scan is as fast. */
#define INDEX_MIN 8

/* The shard slot of shard_id, or -1. */
static long shard_find(const sf_job *j, const char *shard_id) {
  if (!j->index_cap) {
    for (size_t i = 0; i < j->nshards; i++)
      if (!strcmp(j->shards[i].ev.shard_id, shard_id)) return (long)i;
    return -1;
  }
  size_t m = j->index_cap - 1;
  for (size_t i = hash_str(shard_id) & m; j->index[i]; i = (i + 1) & m)
    if (!strcmp(j->shards[j->index[i] - 1].ev.shard_id, shard_id))
      return (long)j->index[i] - 1;
  return -1;
}

static void index_insert(sf_job *j, size_t slot_no) {
  if (!j->index_cap) return;
  size_t m = j->index_cap - 1, i = hash_str(j->shards[slot_no].ev.shard_id) & m;
  while (j->index[i]) i = (i + 1) & m;
  j->index[i] = (uint32_t)slot_no + 1;
}

/* Room for one more shard in the array (its capacity the power of two at
 * or above the count: one slot for a job of one shard) and, beyond
 * INDEX_MIN shards, in the index (kept at most half full). */
static sf_code shard_reserve(sf_job *j, sf_err *err) {
  size_t n = j->nshards + 1;
  if ((j->nshards & (j->nshards - 1)) == 0) { /* full: 0, 1, 2, 4, ... slots */
    sf_jobs_shard *s = realloc(j->shards, (j->nshards ? 2 * j->nshards : 1) * sizeof *s);
    if (!s) return sf_err_set(err, SF_ENOMEM, "out of memory");
    j->shards = s;
  }
  if (n > INDEX_MIN && n * 2 > j->index_cap) {
    size_t ncap = j->index_cap ? j->index_cap * 2 : 4 * INDEX_MIN;
    uint32_t *ix = calloc(ncap, sizeof *ix);
    if (!ix) return sf_err_set(err, SF_ENOMEM, "out of memory");
    free(j->index);
    j->index = ix;
    j->index_cap = ncap;
    for (size_t i = 0; i < j->nshards; i++) index_insert(j, i);
  }
  return SF_OK;
}

/* ev as compared with a shard r of its job, in *x: the job's key already
 * says that both name its dataset, whatever their spelling. A shallow
 * copy, valid while ev is. */
static const sf_shard_staged *same_dataset(const sf_shard_staged *r,
                                           const sf_shard_staged *ev,
                                           sf_shard_staged *x) {
  *x = *ev;
  x->dataset_uri = r->dataset_uri;
  return x;
}

/* Whether ev is a redelivery of shard k: the job's fields and quantizer
 * (held by the first shard) and the shard's own fields are ev's; the
 * delivery fields (event_id, staged_at_ms, producer) may differ. */
static int same_shard(const sf_job *j, size_t k, const sf_shard_staged *ev) {
  const sf_shard_staged *p = &j->shards[0].ev, *r = &j->shards[k].ev;
  char a[8], b[8];
  sf_shard_staged x;
  return !sf_shard_staged_diff(p, same_dataset(p, ev, &x),
                               SF_FIELD_JOB | SF_FIELD_QUANTIZER, a, b, sizeof a) &&
         !sf_shard_staged_diff(r, ev, SF_FIELD_SHARD, a, b, sizeof a);
}

/* The job-level parameters of ev against the job's first shard: SF_OK, or
 * the reason and a message naming the field and both values. */
static sf_event_reason param_mismatch(const sf_job *j, const sf_shard_staged *ev,
                                      sf_err *err) {
  const sf_shard_staged *r = &j->shards[0].ev;
  char a[SF_EVENT_ID_MAX + 64], b[sizeof a];
  sf_shard_staged x;
  const char *f = sf_shard_staged_job_diff(r, same_dataset(r, ev, &x), a, b, sizeof a);
  if (f) {
    sf_err_set(err, SF_EMISMATCH,
               "shard '%s' of job '%s' has %s %s but the job's first shard '%s' has %s",
               ev->shard_id, j->staging_id, f, b, r->shard_id, a);
    return SF_REASON_PARAM_MISMATCH;
  }
  if (sf_shard_staged_diff(r, ev, SF_FIELD_QUANTIZER, a, b, sizeof a)) {
    sf_err_set(err, SF_ECHECKSUM,
               "shard '%s' of job '%s' was encoded with quantizer %016llx but the job's "
               "first shard '%s' with %016llx: restage it with the job's quantizer",
               ev->shard_id, j->staging_id, (unsigned long long)ev->quantizer_checksum,
               r->shard_id, (unsigned long long)r->quantizer_checksum);
    return SF_REASON_CHECKSUM_MISMATCH;
  }
  return SF_REASON_NONE;
}

/* Moves *ev into the shard slot s (the caller reserved room) with a copy of
 * raw, and takes over path; first: s is the job's first shard (it keeps
 * the job's parameters). On failure nothing was moved: *ev and path are
 * still the caller's. */
static sf_code shard_take(sf_jobs *t, sf_job *j, sf_jobs_shard *s, sf_shard_staged *ev,
                          const uint8_t *raw, size_t len, sf_jobs_ref ref, char *path,
                          int first, sf_err *err) {
  uint8_t *copy = NULL;
  if (len && !(copy = malloc(len))) return sf_err_set(err, SF_ENOMEM, "out of memory");
  if (add_ref(t, j, ref, err)) {
    free(copy);
    return SF_ENOMEM;
  }
  if (len) memcpy(copy, raw, len);
  t->nraw += len;
  memset(s, 0, sizeof *s);
  s->raw = copy;
  s->raw_len = len;
  s->ref = ref;
  s->ev = *ev;
  s->path = path;
  memset(ev, 0, sizeof *ev);
  shard_trim(s, first);
  j->shards_cost += shard_cost(s);
  return SF_OK;
}

/* The original bytes of the events held at intake of j. */
static size_t waiting_bytes(const sf_job *j) {
  size_t n = 0;
  for (size_t i = 0; i < j->nwaiting; i++) n += j->waiting[i].raw_len;
  return n;
}

/* The original bytes a live job holds (its shards', its trigger's and its
 * events' held at intake). */
static size_t job_bytes(const sf_job *j) {
  size_t n = j->trigger ? j->trigger->raw_len : 0;
  for (size_t i = 0; i < j->nshards; i++) n += j->shards[i].raw_len;
  return n + waiting_bytes(j);
}

/* ---- what a committed job held ------------------------------------------- */

/* 64-bit digests of the parts of an event that a committed job is compared
 * on, walks of the event's field table by role (schemas/event.h). Staging
 * id and dataset are the key; the delivery fields (event_id, staged_at_ms,
 * producer) change on a re-announcement. */
struct sf_jobs_seen {
  uint64_t id;      /* of shard_id */
  uint64_t content; /* of the shard's own fields (SF_FIELD_SHARD) */
};

/* The job-level fields and the quantizer, without the dataset (the key). */
static uint64_t params_digest(const sf_shard_staged *e) {
  sf_shard_staged x = *e; /* a shallow copy: only its dataset changes */
  x.dataset_uri = NULL;
  return sf_shard_staged_digest(&x, SF_FIELD_JOB | SF_FIELD_QUANTIZER);
}

static struct sf_jobs_seen shard_digest(const sf_shard_staged *e) {
  return (struct sf_jobs_seen){XXH3_64bits(e->shard_id, strlen(e->shard_id)),
                               sf_shard_staged_digest(e, SF_FIELD_SHARD)};
}

static int seen_cmp(const void *a, const void *b) {
  uint64_t x = ((const struct sf_jobs_seen *)a)->id,
           y = ((const struct sf_jobs_seen *)b)->id;
  return x < y ? -1 : x > y;
}

/* Keeps the digests of the READY job j's content for its terminal record.
 * Without memory for them the record knows nothing, and later events of
 * the staging id are LATE as before. */
static void remember(sf_job *j) {
  struct sf_jobs_seen *s = malloc(j->nshards * sizeof *s);
  if (!s || !j->nshards) {
    free(s);
    return;
  }
  for (size_t i = 0; i < j->nshards; i++) s[i] = shard_digest(&j->shards[i].ev);
  qsort(s, j->nshards, sizeof *s, seen_cmp);
  j->params_digest = params_digest(&j->shards[0].ev);
  j->seen = s;
  j->nseen = j->nshards;
}

/* Whether ev contradicts the committed job j: COMMITTED_CONFLICT and a
 * message, or NONE (a redelivery, or a job whose content is unknown). */
static sf_event_reason committed_conflict(const sf_job *j, const sf_shard_staged *ev,
                                          sf_err *err) {
  if (!j->seen) return SF_REASON_NONE;
  const char *why = NULL;
  struct sf_jobs_seen d = shard_digest(ev);
  const struct sf_jobs_seen *k = bsearch(&d, j->seen, j->nseen, sizeof d, seen_cmp);
  if (params_digest(ev) != j->params_digest)
    why =
        "has other job parameters (index, column, type, metric, dim, partitions, "
        "quantizer, budget or expected fragments) than it";
  else if (!k)
    why = "is a shard it did not have";
  else if (k->content != d.content)
    why = "has other content (path, size, rows or fragments) than its shard of that id";
  if (!why) return SF_REASON_NONE;
  sf_err_set(err, SF_ECONFLICT,
             "job '%s' in %s is committed (%zu shards); shard '%s' (event '%s') %s: the "
             "committed index is unchanged and the event is refused; stage new work "
             "under a new staging id",
             j->staging_id, j->dataset, j->nseen, ev->shard_id, ev->event_id, why);
  return SF_REASON_COMMITTED_CONFLICT;
}

/* ---- the table ---------------------------------------------------------- */

sf_code sf_jobs_new(const sf_jobs_opts *o, sf_jobs **out, sf_err *err) {
  sf_jobs *t = calloc(1, sizeof *t);
  if (!t) return sf_err_set(err, SF_ENOMEM, "out of memory");
  t->o = *o;
  if (!t->o.max_terminal) t->o.max_terminal = 65536;
  list_init(&t->open);
  list_init(&t->term);
  if (pmap_grow(&t->jobs, err) || pmap_grow(&t->datasets, err)) {
    free(t->jobs.tab);
    free(t);
    return SF_ENOMEM;
  }
  *out = t;
  return SF_OK;
}

void sf_jobs_free(sf_jobs *t) {
  if (!t) return;
  for (size_t i = 0; i < t->jobs.cap; i++)
    if (t->jobs.tab[i].p) sf_jobs_job_free(t->jobs.tab[i].p);
  /* What is left is held by DROPPED jobs, which outlive the table. */
  for (size_t i = 0; i < t->datasets.cap; i++)
    if (t->datasets.tab[i].p) ((dsname *)t->datasets.tab[i].p)->t = NULL;
  free(t->jobs.tab);
  free(t->datasets.tab);
  free(t);
}

static void count_state(sf_jobs *t, sf_job_state s, int d) {
  switch (s) {
    case SF_JOB_OPEN:
      t->nopen += d;
      break;
    case SF_JOB_READY:
      t->nready += d;
      break;
    case SF_JOB_FAILED:
      t->nfailed += d;
      break;
    case SF_JOB_COMMITTED:
    case SF_JOB_DEAD:
      t->nterm += d;
      break;
    case SF_JOB_WAITING: /* counted in nheld, as the OPEN jobs with events held */
    case SF_JOB_DROPPED:
      break;
  }
}

static void set_state(sf_jobs *t, sf_job *j, sf_job_state s) {
  count_state(t, j->state, -1);
  j->state = s;
  count_state(t, s, +1);
}

/* Takes what the live job j holds out of the table's counts (before it
 * ends, is dropped or freed). */
static void forget(sf_jobs *t, sf_job *j) {
  t->nevents -= j->nrefs + j->nwaiting;
  t->nraw -= job_bytes(j);
  if (j->nwaiting) t->nheld--;
  uncost(t, j);
}

/* Makes j a terminal record (its live parts freed) at the FIFO's tail, and
 * drops the oldest records beyond max_terminal or max_terminal_bytes (never
 * j itself: the caller may still look at it). */
static void make_terminal(sf_jobs *t, sf_job *j, sf_job_state s) {
  list_unlink(j);
  forget(t, j);
  job_release(j);
  set_state(t, j, s);
  recost(t, j);
  list_append(&t->term, j);
  while ((t->nterm > t->o.max_terminal ||
          (t->o.max_terminal_bytes && t->tbytes > t->o.max_terminal_bytes)) &&
         t->term.next != j) {
    sf_job *old = t->term.next;
    list_unlink(old);
    map_del(t, old);
    uncost(t, old);
    count_state(t, old->state, -1);
    sf_jobs_job_free(old);
  }
}

/* ---- events held at intake ------------------------------------------------ */

/* Queues *ev (taken over) with a copy of raw at the end of j's events held
 * at intake. On failure (out of memory) nothing was moved and err says so;
 * on success err is left as it was (why the event is held). */
static sf_code wait_push(sf_jobs *t, sf_job *j, sf_shard_staged *ev, const uint8_t *raw,
                         size_t len, sf_jobs_ref ref, sf_err *err) {
  uint8_t *copy = NULL;
  if (len && !(copy = malloc(len))) return sf_err_set(err, SF_ENOMEM, "out of memory");
  if (j->nwaiting == j->waiting_cap) { /* most jobs never hold more than one */
    size_t ncap = j->waiting_cap ? 2 * j->waiting_cap : 1;
    sf_jobs_shard *w = realloc(j->waiting, ncap * sizeof *w);
    if (!w) {
      free(copy);
      return sf_err_set(err, SF_ENOMEM, "out of memory");
    }
    j->waiting = w;
    j->waiting_cap = ncap;
  }
  if (len) memcpy(copy, raw, len);
  sf_jobs_shard *s = &j->waiting[j->nwaiting++];
  memset(s, 0, sizeof *s);
  s->ev = *ev;
  s->raw = copy;
  s->raw_len = len;
  s->ref = ref;
  memset(ev, 0, sizeof *ev);
  if (j->nwaiting == 1) t->nheld++;
  t->nevents++;
  t->nraw += len;
  j->waiting_cost += shard_cost(s);
  recost(t, j);
  return SF_OK;
}

/* Takes the WAITING record j out of the table and frees it with whatever
 * it holds. */
static void waiting_free(sf_jobs *t, sf_job *j) {
  map_del(t, j);
  forget(t, j);
  count_state(t, j->state, -1);
  sf_jobs_job_free(j);
}

/* ev cannot be classified now, for its dataset's sake (err says why): it
 * is held behind the events j holds already, or, without a job (j NULL),
 * in a new WAITING record of (dataset, its staging id). HELD, or ERROR
 * when out of memory (then *ev is still the caller's). */
static sf_jobs_outcome hold_event(sf_jobs *t, sf_job *j, const char *dataset,
                                  sf_shard_staged *ev, const uint8_t *raw, size_t len,
                                  sf_jobs_ref ref, sf_job **out, sf_err *err) {
  sf_job *made = NULL;
  if (!j) {
    made = j = calloc(1, sizeof *j);
    if (!j || !(j->staging_id = strdup(ev->staging_id)) ||
        !(j->ds = ds_get(t, dataset, err)) || map_put(t, j, err)) {
      sf_jobs_job_free(j); /* never in the map: map_put failed last */
      sf_err_set(err, SF_ENOMEM, "out of memory");
      return SF_JOBS_ERROR;
    }
    j->dataset = j->ds->name;
    j->state = SF_JOB_WAITING;
    count_state(t, SF_JOB_WAITING, +1);
    j->deadline_ms = INT64_MAX;
    recost(t, j);
  }
  if (wait_push(t, j, ev, raw, len, ref, err)) {
    if (made) waiting_free(t, made);
    return SF_JOBS_ERROR;
  }
  *out = j;
  return SF_JOBS_HELD;
}

/* A hook failed with rc, not by the event's fault: the process's own
 * failure (out of memory: ERROR), or its dataset's, which holds the event. */
static sf_jobs_outcome not_the_events(sf_jobs *t, sf_job *j, const char *dataset,
                                      sf_code rc, sf_shard_staged *ev, const uint8_t *raw,
                                      size_t len, sf_jobs_ref ref, sf_job **out,
                                      sf_err *err) {
  if (rc == SF_ENOMEM) return SF_JOBS_ERROR;
  return hold_event(t, j, dataset, ev, raw, len, ref, out, err);
}

sf_jobs_outcome sf_jobs_hold(sf_jobs *t, const char *key, sf_shard_staged *ev,
                             const uint8_t *raw, size_t len, sf_jobs_ref ref,
                             sf_job **job, sf_err *err) {
  sf_job *dummy;
  if (!job) job = &dummy;
  *job = NULL;
  sf_job *j = sf_jobs_find(t, key, ev->staging_id);
  if (j && j->state != SF_JOB_OPEN && j->state != SF_JOB_WAITING) {
    sf_err_set(err, SF_EINVAL, "job '%s' of %s cannot hold events: it is not open",
               ev->staging_id, key);
    return SF_JOBS_ERROR;
  }
  return hold_event(t, j, key, ev, raw, len, ref, job, err);
}

sf_jobs_shard *sf_jobs_take_waiting(sf_jobs *t, sf_job *j, size_t *n) {
  sf_jobs_shard *w = j->waiting;
  *n = j->nwaiting;
  if (!w) return NULL;
  t->nevents -= j->nwaiting;
  t->nraw -= waiting_bytes(j);
  t->nheld--;
  j->waiting = NULL; /* handed back: not freed with the job */
  j->nwaiting = j->waiting_cap = j->waiting_cost = 0;
  if (j->state == SF_JOB_WAITING)
    waiting_free(t, j); /* a record of nothing now */
  else
    recost(t, j);
  return w;
}

void sf_jobs_waiting_free(sf_jobs_shard *w, size_t n) {
  for (size_t i = 0; w && i < n; i++) shard_clear(&w[i]);
  free(w);
}

/* A new job for (dataset, ev's staging id): a terminal DEAD record when the
 * open hook says it failed before (reason JOB_FAILED), otherwise an open
 * job whose first shard is ev. */
static sf_jobs_outcome job_open(sf_jobs *t, const char *dataset, sf_shard_staged *ev,
                                const uint8_t *raw, size_t len, sf_jobs_ref ref,
                                int64_t now_ms, sf_job **out, sf_event_reason *reason,
                                sf_err *err) {
  char *path = NULL;
  const sf_jobs_hooks *h = &t->o.hooks;
  sf_code rc = h->open ? h->open(h->ctx, dataset, ev, reason, err) : SF_OK;
  if (rc && *reason == SF_REASON_JOB_FAILED) {
    /* Remember it, so the next events of this staging id cost no I/O. */
    sf_job *j = calloc(1, sizeof *j);
    if (j && (j->staging_id = strdup(ev->staging_id)) &&
        (j->ds = ds_get(t, dataset, NULL)) && !map_put(t, j, NULL)) {
      j->dataset = j->ds->name;
      j->state = SF_JOB_OPEN;
      count_state(t, SF_JOB_OPEN, +1);
      j->reason = SF_REASON_JOB_FAILED;
      recost(t, j);
      make_terminal(t, j, SF_JOB_DEAD);
      *out = j;
    } else {
      sf_jobs_job_free(j);
    }
    return SF_JOBS_REJECTED;
  }
  const int earlier = rc == SF_EEXIST;
  if (earlier) rc = SF_OK;
  if (rc && *reason) return SF_JOBS_REJECTED;
  if (rc) return not_the_events(t, NULL, dataset, rc, ev, raw, len, ref, out, err);
  rc = h->check && !earlier ? h->check(h->ctx, dataset, ev, &path, reason, err) : SF_OK;
  if (!rc && (earlier || !h->check) && !(path = strdup(ev->shard_path)))
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  if (rc && *reason) return SF_JOBS_REJECTED;
  if (rc) return not_the_events(t, NULL, dataset, rc, ev, raw, len, ref, out, err);
  sf_job *j = calloc(1, sizeof *j);
  int in_map = 0;
  if (!j || !(j->staging_id = strdup(ev->staging_id)))
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  if (!rc && !(j->ds = ds_get(t, dataset, err))) rc = SF_ENOMEM;
  if (!rc) rc = shard_reserve(j, err);
  if (!rc && !(rc = map_put(t, j, err))) in_map = 1;
  if (!rc) rc = shard_take(t, j, &j->shards[0], ev, raw, len, ref, path, 1, err);
  if (rc) { /* ev and path were not moved in */
    if (in_map) map_del(t, j);
    free(path);
    sf_jobs_job_free(j);
    return SF_JOBS_ERROR;
  }
  j->dataset = j->ds->name;
  j->nshards = 1;
  j->first_staged_at_ms = j->shards[0].ev.staged_at_ms;
  j->first_seen_ms = now_ms;
  j->deadline_ms = t->o.timeout_ms > 0 ? now_ms + t->o.timeout_ms : INT64_MAX;
  j->state = SF_JOB_OPEN;
  count_state(t, SF_JOB_OPEN, +1);
  recost(t, j);
  list_append(&t->open, j);
  *out = j;
  j->committed_earlier = earlier;
  if (earlier || roaring_bitmap_equals(covered(j), j->shards[0].ev.expected_fragments)) {
    list_unlink(j);
    set_state(t, j, SF_JOB_READY);
    return SF_JOBS_COMPLETE;
  }
  return SF_JOBS_NEW;
}

/* A redelivery of the job j (its position waits with the job's). */
static sf_jobs_outcome redelivered(sf_jobs *t, sf_job *j, sf_jobs_ref ref, sf_err *err) {
  if (add_ref(t, j, ref, err)) return SF_JOBS_ERROR;
  recost(t, j);
  return SF_JOBS_DUPLICATE;
}

/* ev fails the open job j: ev becomes its trigger. */
static sf_jobs_outcome job_fail_by(sf_jobs *t, sf_job *j, sf_shard_staged *ev,
                                   const uint8_t *raw, size_t len, sf_jobs_ref ref,
                                   sf_event_reason reason, sf_err *err) {
  sf_jobs_shard *s = calloc(1, sizeof *s);
  sf_err e2 = {0};
  if (!s || shard_take(t, j, s, ev, raw, len, ref, NULL, 0, &e2)) {
    free(s);
    sf_err_set(err, SF_ENOMEM, "out of memory");
    return SF_JOBS_ERROR;
  }
  j->trigger = s;
  j->reason = reason;
  free(j->message);
  j->message = strdup(err->msg); /* NULL when out of memory: the reason remains */
  list_unlink(j);
  set_state(t, j, SF_JOB_FAILED);
  recost(t, j);
  return SF_JOBS_FAILED;
}

sf_jobs_outcome sf_jobs_add(sf_jobs *t, const char *dataset, sf_shard_staged *ev,
                            const uint8_t *raw, size_t len, sf_jobs_ref ref,
                            int64_t now_ms, sf_job **job, sf_event_reason *reason,
                            sf_err *err) {
  sf_job *dummy;
  sf_event_reason rdummy;
  sf_err edummy;
  if (!job) job = &dummy;
  if (!reason) reason = &rdummy;
  if (!err) err = &edummy;
  *job = NULL;
  *reason = SF_REASON_NONE;
  sf_err_clear(err);

  if (!dataset) dataset = ev->dataset_uri;
  sf_job *j = sf_jobs_find(t, dataset, ev->staging_id);
  if (!j) return job_open(t, dataset, ev, raw, len, ref, now_ms, job, reason, err);
  *job = j;
  if (j->nwaiting) { /* no event of the job overtakes one held at intake */
    sf_err_set(err, SF_EIO,
               "job '%s' has an event held at intake (partition %d offset %lld): "
               "shard '%s' waits behind it",
               j->staging_id, (int)j->waiting[0].ref.partition,
               (long long)j->waiting[0].ref.offset, ev->shard_id);
    return wait_push(t, j, ev, raw, len, ref, err) ? SF_JOBS_ERROR : SF_JOBS_HELD;
  }
  switch (j->state) {
    case SF_JOB_COMMITTED:
      if ((*reason = committed_conflict(j, ev, err))) return SF_JOBS_REJECTED;
      return SF_JOBS_LATE;
    case SF_JOB_DEAD:
    case SF_JOB_FAILED:
      *reason = SF_REASON_JOB_FAILED;
      sf_err_set(err, SF_ECANCELED,
                 "job '%s' failed earlier (%s); it stays failed: stage it "
                 "again under a new staging id",
                 j->staging_id, sf_event_reason_name(j->reason));
      return SF_JOBS_REJECTED;
    default:
      break;
  }
  /* Committed earlier and being announced again: whatever else of it the
   * restart reads is part of what was committed. */
  if (j->committed_earlier) return redelivered(t, j, ref, err);
  int open = j->state == SF_JOB_OPEN;
  long k = shard_find(j, ev->shard_id);
  sf_event_reason why = SF_REASON_NONE;
  if (ref.partition != j->shards[0].ref.partition) {
    /* One owner per job relies on one partition per job: a job spread over
     * two would be dropped whole when one of them is revoked, leaving the
     * events on the other pending for good (and two owners could build
     * it). Events are keyed by staging_id so this cannot happen unless a
     * producer keys them otherwise (or the partition count changed). */
    why = SF_REASON_INVALID_FIELD;
    sf_err_set(err, SF_EINVAL,
               "shard '%s' of job '%s' was read from partition %d but the job's first "
               "shard '%s' from partition %d: all events of a staging_id must share a "
               "partition (key them by staging_id)",
               ev->shard_id, j->staging_id, (int)ref.partition, j->shards[0].ev.shard_id,
               (int)j->shards[0].ref.partition);
  } else if (k >= 0) {
    if (same_shard(j, (size_t)k, ev)) return redelivered(t, j, ref, err);
    why = SF_REASON_DUPLICATE_CONFLICT;
    sf_err_set(
        err, SF_ECONFLICT,
        "shard '%s' of job '%s' was announced twice with different content (event "
        "'%s', and the one at partition %d offset %lld): a shard id names one file",
        ev->shard_id, j->staging_id, ev->event_id, (int)j->shards[k].ref.partition,
        (long long)j->shards[k].ref.offset);
  } else if (!(why = param_mismatch(j, ev, err)) &&
             roaring_bitmap_intersect(covered(j), ev->fragments)) {
    roaring_bitmap_t *both = roaring_bitmap_and(covered(j), ev->fragments);
    char *list = both ? sf_fragset_format_short(both, 8) : NULL;
    why = SF_REASON_FRAGMENT_OVERLAP;
    sf_err_set(err, SF_EOVERLAP, "shard '%s' of job '%s' holds fragments %s that %s",
               ev->shard_id, j->staging_id, list ? list : "?",
               open ? "another shard of the job already holds"
                    : "the complete job already holds (the job is being committed)");
    free(list);
    if (both) roaring_bitmap_free(both);
  }
  if (why) {
    *reason = why;
    return open ? job_fail_by(t, j, ev, raw, len, ref, why, err) : SF_JOBS_REJECTED;
  }
  if (!open) { /* cannot happen: a fragment-free shard is invalid */
    *reason = SF_REASON_FRAGMENT_OVERLAP;
    sf_err_set(err, SF_EOVERLAP, "job '%s' is complete; shard '%s' is not part of it",
               j->staging_id, ev->shard_id);
    return SF_JOBS_REJECTED;
  }
  const sf_jobs_hooks *h = &t->o.hooks;
  char *path = NULL;
  sf_code rc = h->check ? h->check(h->ctx, j->dataset, ev, &path, reason, err) : SF_OK;
  if (!rc && !h->check && !(path = strdup(ev->shard_path)))
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  if (rc && *reason) return SF_JOBS_REJECTED;
  if (rc) return not_the_events(t, j, j->dataset, rc, ev, raw, len, ref, job, err);
  /* The job's own union from its second shard on (see covered()). */
  roaring_bitmap_t *u = j->covered ? NULL : roaring_bitmap_copy(covered(j));
  sf_jobs_shard *s = NULL;
  if ((j->covered || u) && !shard_reserve(j, err)) s = &j->shards[j->nshards];
  if (!s || shard_take(t, j, s, ev, raw, len, ref, path, 0, err)) {
    if (!j->covered && !u) sf_err_set(err, SF_ENOMEM, "out of memory");
    sf_fragset_free(u);
    free(path);
    return SF_JOBS_ERROR;
  }
  if (u) j->covered = u;
  roaring_bitmap_or_inplace(j->covered, s->ev.fragments);
  roaring_bitmap_shrink_to_fit(j->covered); /* no spare capacity held or counted */
  index_insert(j, j->nshards);
  j->nshards++;
  if (s->ev.staged_at_ms < j->first_staged_at_ms)
    j->first_staged_at_ms = s->ev.staged_at_ms;
  recost(t, j);
  if (roaring_bitmap_equals(j->covered, j->shards[0].ev.expected_fragments)) {
    list_unlink(j);
    set_state(t, j, SF_JOB_READY);
    return SF_JOBS_COMPLETE;
  }
  return SF_JOBS_NEW;
}

sf_job *sf_jobs_expire(sf_jobs *t, int64_t now_ms) {
  sf_job *j;
  /* A job with events held at intake does not time out: its missing shards
   * may be among them. It gets a full timeout more, which keeps the list
   * in deadline order (no deadline lies beyond now + timeout). */
  while ((j = t->open.next) != &t->open && j->deadline_ms <= now_ms && j->nwaiting) {
    j->deadline_ms = now_ms + t->o.timeout_ms;
    list_unlink(j);
    list_append(&t->open, j);
  }
  if (j == &t->open || j->deadline_ms > now_ms) return NULL;
  char *missing = NULL;
  roaring_bitmap_t *m =
      roaring_bitmap_andnot(j->shards[0].ev.expected_fragments, covered(j));
  if (m) missing = sf_fragset_format_short(m, 8);
  if (m) roaring_bitmap_free(m);
  char msg[SF_ERR_MSG_MAX];
  snprintf(msg, sizeof msg,
           "job '%s' was not complete within the staging timeout (%lld ms): %zu shard(s) "
           "arrived, fragments %s are missing",
           j->staging_id, (long long)t->o.timeout_ms, j->nshards,
           missing ? missing : "?");
  free(missing);
  sf_jobs_fail(t, j, SF_REASON_JOB_TIMEOUT, msg);
  return j;
}

int64_t sf_jobs_next_deadline(const sf_jobs *t) {
  return t->open.next == &t->open ? INT64_MAX : t->open.next->deadline_ms;
}

void sf_jobs_extend_deadlines(sf_jobs *t, int64_t ms) {
  if (ms <= 0) return;
  for (sf_job *j = t->open.next; j != &t->open; j = j->next)
    if (j->deadline_ms != INT64_MAX)
      j->deadline_ms = j->deadline_ms > INT64_MAX - ms ? INT64_MAX : j->deadline_ms + ms;
}

void sf_jobs_fail(sf_jobs *t, sf_job *j, sf_event_reason reason, const char *message) {
  if (j->state != SF_JOB_OPEN && j->state != SF_JOB_READY) return;
  list_unlink(j);
  j->reason = reason;
  free(j->message);
  j->message = strdup(message ? message : "");
  set_state(t, j, SF_JOB_FAILED);
  recost(t, j);
}

void sf_jobs_finish(sf_jobs *t, sf_job *j, int committed) {
  if (j->state != SF_JOB_READY && j->state != SF_JOB_FAILED) return;
  /* Only a job committed whole, from its own events, says what its
   * content is: one committed earlier (a restart read part of it) or
   * found in the catalog after it failed does not. */
  if (committed && j->state == SF_JOB_READY && !j->committed_earlier) remember(j);
  make_terminal(t, j, committed ? SF_JOB_COMMITTED : SF_JOB_DEAD);
}

sf_job *sf_jobs_drop(sf_jobs *t, sf_job *j) {
  if (j->state == SF_JOB_DROPPED) return j;
  map_del(t, j);
  list_unlink(j);
  forget(t, j);
  count_state(t, j->state, -1);
  if (j->state == SF_JOB_READY || j->state == SF_JOB_FAILED) {
    j->state = SF_JOB_DROPPED;
    return j;
  }
  sf_jobs_job_free(j);
  return NULL;
}

void sf_jobs_foreach_on_partition(sf_jobs *t, int32_t partition,
                                  void (*fn)(void *ctx, sf_job *j), void *ctx) {
  /* Collect first: fn may drop jobs, which reshuffles the table. */
  size_t n = 0, cap = 0;
  sf_job **list = NULL;
  for (size_t i = 0; i < t->jobs.cap; i++) {
    sf_job *j = t->jobs.tab[i].p;
    if (!j || terminal(j->state)) continue;
    for (size_t r = 0; r < j->nrefs + j->nwaiting; r++)
      if ((r < j->nrefs ? j->refs[r] : j->waiting[r - j->nrefs].ref).partition ==
          partition) {
        if (n == cap) {
          size_t ncap = cap ? cap * 2 : 16;
          sf_job **nl = realloc(list, ncap * sizeof *nl);
          if (!nl) break; /* out of memory: visit what we have */
          list = nl;
          cap = ncap;
        }
        list[n++] = j;
        break;
      }
  }
  for (size_t i = 0; i < n; i++) fn(ctx, list[i]);
  free(list);
}

void sf_jobs_foreach(const sf_jobs *t, void (*fn)(void *ctx, const sf_job *j),
                     void *ctx) {
  for (size_t i = 0; i < t->jobs.cap; i++) {
    const sf_job *j = t->jobs.tab[i].p;
    if (j && !terminal(j->state)) fn(ctx, j);
  }
}

void sf_jobs_get_stats(const sf_jobs *t, sf_jobs_stats *s) {
  s->open = t->nopen;
  s->ready = t->nready;
  s->failed = t->nfailed;
  s->terminal = t->nterm;
  s->held = t->nheld;
  s->events = t->nevents;
  s->raw_bytes = t->nraw;
  s->live_bytes = t->nbytes;
  s->terminal_bytes = t->tbytes;
  /* A map is kept at least 3/8 full once grown: 48 bytes a 16-byte slot
   * in use, at most. Not its capacity: it never shrinks, and a high-water
   * mark held by no pending work must not keep the consumer paused. */
  s->bytes = t->nbytes + t->tbytes + t->dsbytes +
             (t->jobs.count + t->datasets.count) * 3 * sizeof(slot);
}

void sf_jobs_plan_shards(const sf_job *j, sf_plan_shard *out) {
  for (size_t i = 0; i < j->nshards; i++) {
    const sf_shard_staged *e = &j->shards[i].ev;
    memset(&out[i], 0, sizeof out[i]);
    out[i].shard_id = e->shard_id;
    out[i].path = j->shards[i].path;
    out[i].bytes = (uint64_t)e->shard_bytes;
    out[i].num_rows = (uint64_t)e->num_rows;
    out[i].params.kind = SF_SEG_KIND_SHARD;
    out[i].params.type = e->index_type;
    out[i].params.metric = e->metric;
    out[i].params.dim = (uint32_t)e->dim;
    out[i].params.nlist = (uint32_t)e->num_partitions;
    out[i].params.quantizer_checksum = e->quantizer_checksum;
    out[i].fragments = e->fragments;
  }
}
