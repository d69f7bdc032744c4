/*
 * search.c - see search.h.
 *
 * Per query: prepare the query, probe once, then for each file and each
 * probed partition read its chunks, score their codes with the scanner and
 * offer the rows that beat the current k-th score to the heap. Row ids are
 * decoded only for chunks that hold at least one such row, which after the
 * first few chunks is a minority: most of a scan never touches the id
 * blocks.
 */
#include "core/search/search.h"

#include <stdlib.h>
#include <string.h>

#include "core/base/fragset.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"
#include "core/vector/topk.h"

/* The kept IVF_PQ terms of one file (see search.h): set up on the first
 * scan of the file, then filled partition by partition. */
typedef struct terms_cache {
  int tried;      /* setup ran (terms NULL: the file is scanned without) */
  float *terms;   /* one per row of the file, partition after partition */
  uint64_t *off;  /* nlist + 1: the first row of each partition */
  uint8_t *known; /* nlist: the partition's terms are filled */
  size_t bytes;   /* charged to the searcher's terms_left */
} terms_cache;

static void terms_release(terms_cache *t, size_t *left) {
  *left += t->bytes;
  free(t->terms);
  free(t->off);
  free(t->known);
  memset(t, 0, sizeof *t);
}

/* Sets up the kept terms of file r, charging *left (the searcher's budget);
 * leaves t->terms NULL when the budget or the memory does not allow (scans
 * then compute the terms every time). */
static void terms_setup(terms_cache *t, const sf_seg_reader *r, uint32_t nlist,
                        size_t *left) {
  t->tried = 1;
  uint64_t rows = sf_seg_num_rows(r);
  if (rows == 0 || rows > SF_SEARCH_TERMS_MAX / sizeof(float)) return;
  size_t bytes =
      (size_t)rows * sizeof(float) + (size_t)(nlist + 1) * sizeof(uint64_t) + nlist;
  if (bytes > *left) return;
  *left -= bytes;
  t->bytes = bytes;
  t->terms = malloc((size_t)rows * sizeof(float));
  t->off = malloc((size_t)(nlist + 1) * sizeof(uint64_t));
  t->known = calloc(nlist, 1);
  if (!t->terms || !t->off || !t->known) {
    terms_release(t, left);
    t->tried = 1;
    return;
  }
  t->off[0] = 0;
  for (uint32_t l = 0; l < nlist; l++)
    t->off[l + 1] = t->off[l] + sf_seg_partition_rows(r, l);
  if (t->off[nlist] != rows) { /* not what the format promises: keep nothing */
    terms_release(t, left);
    t->tried = 1;
  }
}

struct sf_search {
  const sf_quant *q;
  sf_quant *owned_q; /* q, when sf_search_open_dataset loaded it */
  /* sf_search_open_dataset's index, so that a corrupt segment found later
   * is explained by the catalog (sf_catalog_explain_corrupt); owned. */
  char *ds_dataset, *ds_index;
  uint64_t ds_version;
  sf_seg_reader **files;
  size_t nfiles;
  uint64_t rows, scanned;
  sf_quant_scanner *scanner;
  sf_seg_scratch *scratch;
  uint32_t *lists;
  float *prepared, *scores;
  terms_cache *tc;   /* nfiles, when the scanner has terms */
  size_t terms_left; /* of SF_SEARCH_TERMS_MAX */
  float *tbuf;       /* max_chunk: terms not kept */
  uint32_t max_chunk;
  unsigned read_flags; /* SF_SEG_READ_NO_CRC once every file is verified */
  sf_topk top;
  int top_ready;
};

void sf_search_free(sf_search *s) {
  if (!s) return;
  for (size_t i = 0; i < s->nfiles; i++) sf_seg_close(s->files[i]);
  free(s->files);
  sf_quant_scanner_free(s->scanner);
  sf_seg_scratch_free(s->scratch);
  free(s->lists);
  free(s->prepared);
  free(s->scores);
  if (s->tc)
    for (size_t i = 0; i < s->nfiles; i++) terms_release(&s->tc[i], &s->terms_left);
  free(s->tc);
  free(s->tbuf);
  if (s->top_ready) sf_topk_free(&s->top);
  sf_quant_free(s->owned_q);
  free(s->ds_dataset);
  free(s->ds_index);
  free(s);
}

/* A corrupt segment of a dataset's index: the remedy its catalog knows. */
static sf_code explained(const sf_search *s, sf_code rc, sf_err *err) {
  if (rc == SF_ECORRUPT && s->ds_dataset)
    sf_catalog_explain_corrupt_in(s->ds_dataset, s->ds_version, s->ds_index, err);
  return rc;
}

/* Checks that file f was built with quantizer q. */
static sf_code check_params(const sf_quant *q, const sf_seg_reader *f, sf_err *err) {
  const sf_seg_params *p = sf_seg_get_params(f);
  const char *path = sf_seg_path(f), *field = NULL;
  unsigned long long have = 0, want = 0;
  if (p->type != sf_quant_type(q)) {
    return sf_err_set(err, SF_EMISMATCH, "%s is an %s index but the quantizer is %s",
                      path, sf_index_type_name(p->type),
                      sf_index_type_name(sf_quant_type(q)));
  } else if (p->metric != sf_quant_metric(q)) {
    return sf_err_set(err, SF_EMISMATCH, "%s uses metric %s but the quantizer uses %s",
                      path, sf_metric_name(p->metric),
                      sf_metric_name(sf_quant_metric(q)));
  } else if (p->dim != sf_quant_dim(q)) {
    field = "dim", have = p->dim, want = sf_quant_dim(q);
  } else if (p->nlist != sf_quant_nlist(q)) {
    field = "nlist", have = p->nlist, want = sf_quant_nlist(q);
  } else if (p->code_size != sf_quant_code_size(q)) {
    field = "code_size", have = p->code_size, want = sf_quant_code_size(q);
  } else if (p->quantizer_checksum != sf_quant_checksum(q)) {
    return sf_err_set(err, SF_ECHECKSUM,
                      "%s was encoded with quantizer %016llx but the quantizer given is "
                      "%016llx; search it with the quantizer of its staging root",
                      path, (unsigned long long)p->quantizer_checksum,
                      (unsigned long long)sf_quant_checksum(q));
  }
  if (field)
    return sf_err_set(err, SF_EMISMATCH, "%s has %s %llu but the quantizer has %llu",
                      path, field, have, want);
  return SF_OK;
}

sf_code sf_search_open(const sf_quant *q, const char *const *paths, size_t n,
                       sf_search **out, sf_err *err) {
  *out = NULL;
  if (n == 0) return sf_err_set(err, SF_EINVAL, "no shard or segment files to search");
  sf_search *s = calloc(1, sizeof *s);
  if (!s) return sf_err_set(err, SF_ENOMEM, "out of memory");
  s->q = q;
  s->files = calloc(n, sizeof *s->files);
  s->lists = malloc(sizeof(uint32_t) * sf_quant_nlist(q));
  s->prepared = malloc(sizeof(float) * sf_quant_dim(q));
  s->scratch = sf_seg_scratch_new();
  sf_code rc = SF_OK;
  if (!s->files || !s->lists || !s->prepared || !s->scratch) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = sf_quant_scanner_new(q, &s->scanner, err))) goto fail;
  roaring_bitmap_t *seen = roaring_bitmap_create();
  if (!seen) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    if ((rc = sf_seg_open(paths[i], &s->files[i], err))) break;
    s->nfiles++;
    if ((rc = check_params(q, s->files[i], err))) break;
    const roaring_bitmap_t *fr = sf_seg_fragments(s->files[i]);
    if (roaring_bitmap_intersect(seen, fr)) {
      roaring_bitmap_t *both = roaring_bitmap_and(seen, fr);
      char *list = both ? sf_fragset_format_short(both, 8) : NULL;
      rc =
          sf_err_set(err, SF_EOVERLAP,
                     "%s holds fragments %s that an earlier file also holds; search each "
                     "fragment in one file only",
                     paths[i], list ? list : "?");
      free(list);
      if (both) sf_fragset_free(both);
      break;
    }
    roaring_bitmap_or_inplace(seen, fr);
    s->rows += sf_seg_num_rows(s->files[i]);
    uint32_t mc = sf_seg_max_chunk_rows(s->files[i]);
    if (mc > s->max_chunk) s->max_chunk = mc;
  }
  sf_fragset_free(seen);
  if (rc) goto fail;
  s->scores = malloc(sizeof(float) * (s->max_chunk ? s->max_chunk : 1));
  if (s->scores && sf_quant_scanner_has_terms(s->scanner)) {
    s->tc = calloc(s->nfiles ? s->nfiles : 1, sizeof *s->tc);
    s->terms_left = SF_SEARCH_TERMS_MAX;
    s->tbuf = malloc(sizeof(float) * (s->max_chunk ? s->max_chunk : 1));
  }
  if (!s->scores || (sf_quant_scanner_has_terms(s->scanner) && (!s->tc || !s->tbuf))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto fail;
  }
  *out = s;
  return SF_OK;
fail:
  sf_search_free(s);
  return rc;
}

void sf_search_set_terms_budget(sf_search *s, size_t bytes) {
  if (!s->tc) return;
  for (size_t i = 0; i < s->nfiles; i++) terms_release(&s->tc[i], &s->terms_left);
  s->terms_left = bytes < SF_SEARCH_TERMS_MAX ? bytes : SF_SEARCH_TERMS_MAX;
}

size_t sf_search_terms_bytes(const sf_search *s) {
  size_t n = 0;
  for (size_t i = 0; s->tc && i < s->nfiles; i++) n += s->tc[i].bytes;
  return n;
}

uint64_t sf_search_rows(const sf_search *s) {
  return s->rows;
}
uint64_t sf_search_last_scanned(const sf_search *s) {
  return s->scanned;
}

sf_code sf_search_verify(sf_search *s, sf_err *err) {
  for (size_t i = 0; i < s->nfiles; i++) {
    sf_code rc = sf_seg_verify(s->files[i], err);
    if (rc) return explained(s, rc, err);
  }
  s->read_flags = SF_SEG_READ_NO_CRC;
  return SF_OK;
}

static sf_code query(sf_search *s, const float *query, uint32_t k, uint32_t nprobe,
                     sf_rowid *ids, float *scores, uint32_t *n, sf_err *err);

sf_code sf_search_query(sf_search *s, const float *q, uint32_t k, uint32_t nprobe,
                        sf_rowid *ids, float *scores, uint32_t *n, sf_err *err) {
  return explained(s, query(s, q, k, nprobe, ids, scores, n, err), err);
}

static sf_code query(sf_search *s, const float *query, uint32_t k, uint32_t nprobe,
                     sf_rowid *ids, float *scores, uint32_t *n, sf_err *err) {
  *n = 0;
  if (k == 0) return sf_err_set(err, SF_EINVAL, "k must be at least 1");
  if (!s->top_ready || s->top.k != k) {
    if (s->top_ready) sf_topk_free(&s->top);
    s->top_ready = 0;
    if (sf_topk_init(&s->top, k)) return sf_err_set(err, SF_ENOMEM, "out of memory");
    s->top_ready = 1;
  }
  sf_topk_reset(&s->top);
  sf_quant_prepare(s->q, query, s->prepared);
  uint32_t np = sf_quant_probe(s->q, s->prepared, nprobe ? nprobe : 1, s->lists);
  if (np == 0) return sf_err_set(err, SF_ENOMEM, "out of memory probing centroids");
  sf_quant_scanner_set_query(s->scanner, s->prepared);
  s->scanned = 0;
  for (uint32_t li = 0; li < np; li++) {
    uint32_t list = s->lists[li];
    sf_quant_scanner_set_list(s->scanner, list);
    for (size_t f = 0; f < s->nfiles; f++) {
      uint32_t nc = sf_seg_partition_num_chunks(s->files[f], list);
      terms_cache *tc = s->tc ? &s->tc[f] : NULL;
      if (tc && !tc->tried)
        terms_setup(tc, s->files[f], sf_quant_nlist(s->q), &s->terms_left);
      float *kept = tc && tc->terms ? tc->terms + tc->off[list] : NULL;
      const uint64_t nkept = kept ? tc->off[list + 1] - tc->off[list] : 0;
      const int known = kept && tc->known[list];
      uint64_t row = 0;
      for (uint32_t c = 0; c < nc; c++) {
        sf_seg_chunk ch;
        sf_code rc = sf_seg_read_chunk_ex(s->files[f], list, c, s->scratch,
                                          s->read_flags | SF_SEG_READ_NO_IDS, &ch, err);
        if (rc) return rc;
        if (!tc) {
          sf_quant_scanner_scan(s->scanner, ch.codes, ch.nrows, s->scores);
        } else if (kept && row + ch.nrows <= nkept) {
          sf_quant_scanner_scan_terms(s->scanner, ch.codes, ch.nrows, kept + row, known,
                                      s->scores);
        } else {
          sf_quant_scanner_scan_terms(s->scanner, ch.codes, ch.nrows, s->tbuf, 0,
                                      s->scores);
        }
        row += ch.nrows;
        s->scanned += ch.nrows;
        float bound = sf_topk_bound(&s->top);
        uint32_t i = 0;
        while (i < ch.nrows && s->scores[i] > bound) i++;
        if (i == ch.nrows) continue; /* nothing here beats the k-th: ids not needed */
        /* The CRCs were checked above (or by verify); decode the ids only. */
        rc = sf_seg_read_chunk_ex(s->files[f], list, c, s->scratch, SF_SEG_READ_NO_CRC,
                                  &ch, err);
        if (rc) return rc;
        for (; i < ch.nrows; i++)
          if (s->scores[i] <= sf_topk_bound(&s->top))
            sf_topk_push(&s->top, s->scores[i], ch.ids[i]);
      }
      if (kept && row == nkept) tc->known[list] = 1;
    }
  }
  uint32_t got = sf_topk_sort(&s->top);
  for (uint32_t i = 0; i < got; i++) {
    ids[i] = s->top.id[i];
    scores[i] = s->top.score[i];
  }
  *n = got;
  return SF_OK;
}

sf_code sf_search_open_dataset(const char *dataset, const char *index,
                               const char *quantizer, sf_search **out, sf_err *err) {
  *out = NULL;
  sf_catalog *cat = NULL;
  sf_quant *q = NULL;
  char *qdefault = NULL, **paths = NULL;
  size_t npaths = 0;
  sf_code rc = sf_catalog_open_latest(dataset, &cat, err);
  if (rc) return rc;
  const sf_catalog_index *ix = sf_catalog_find_index(cat, index);
  if (!ix) {
    rc = sf_err_set(err, SF_ENOTFOUND, "catalog version %llu of %s has no index '%s'",
                    (unsigned long long)sf_catalog_version(cat), dataset, index);
    goto out;
  }
  if ((rc = sf_catalog_segment_paths(cat, ix, &paths, &npaths, err))) goto out;
  if (!quantizer && !(quantizer = qdefault = sf_catalog_quantizer_path(cat, ix))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = sf_quant_load(quantizer, &q, err))) goto out;
  if ((rc = sf_search_open(q, (const char *const *)paths, npaths, out, err))) {
    sf_catalog_explain_corrupt(cat, ix, err);
    goto out;
  }
  (*out)->owned_q = q;
  q = NULL;
  (*out)->ds_version = sf_catalog_version(cat);
  if (!((*out)->ds_dataset = strdup(sf_catalog_dataset(cat))) ||
      !((*out)->ds_index = strdup(index))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    sf_search_free(*out);
    *out = NULL;
    goto out;
  }
out:
  sf_quant_free(q);
  free(qdefault);
  sf_catalog_paths_free(paths, npaths);
  sf_catalog_free(cat);
  return rc;
}

const sf_quant *sf_search_quant(const sf_search *s) {
  return s->q;
}

size_t sf_search_files(const sf_search *s) {
  return s->nfiles;
}
