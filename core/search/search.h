/*
 * search.h - k-nearest-neighbour search over a list of shard or segment
 * files that share one quantizer: probe the nprobe nearest centroids once,
 * scan those partitions in every file, keep one top-k across all of them.
 *
 * The files of one logical index have pairwise disjoint fragments (checked
 * at open), so a row is never counted twice. With nprobe = nlist on
 * IVF_FLAT every row is scored exactly, and the answer equals brute force
 * (ties broken by the smaller row id, as everywhere).
 *
 * sf_search_open_dataset does the same for one logical index of a dataset:
 * the newest catalog version names its segment files and its quantizer.
 *
 * IVF_PQ under L2 or COSINE: each code's score has a term of its list that
 * no query changes (sf_quant_scanner_has_terms). A searcher keeps the terms
 * of each partition it has scanned, 4 bytes a row, so later queries look
 * up one table per code instead of two; the scores are the same bits
 * either way. A searcher keeps at most SF_SEARCH_TERMS_MAX bytes of them
 * (16M rows); a file that does not fit is scanned without.
 *
 * A searcher holds one query's scratch state and belongs to one thread;
 * open one per thread to search in parallel (the files are mapped, so the
 * pages are shared).
 */
#ifndef SF_SEARCH_H
#define SF_SEARCH_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/base/types.h"
#include "core/vector/quantizer.h"

typedef struct sf_search sf_search;

/* The most bytes of IVF_PQ terms one searcher keeps. */
#define SF_SEARCH_TERMS_MAX ((size_t)64 << 20)

/* For tests: drops the terms s kept and lets it keep at most bytes (capped
 * at SF_SEARCH_TERMS_MAX) from its next query on, so that a file that does
 * not fit can be had without a 64 MiB index. Answers do not change. */
void sf_search_set_terms_budget(sf_search *s, size_t bytes);
/* The bytes of IVF_PQ terms s keeps now (charged to its budget). */
size_t sf_search_terms_bytes(const sf_search *s);

/* Opens n files for searching with q (which must outlive the searcher).
 * Every file's parameters must match q (SF_EMISMATCH naming the file and the
 * field) and no fragment may be in two files (SF_EOVERLAP). *out is freed by
 * sf_search_free. */
sf_code sf_search_open(const sf_quant *q, const char *const *paths, size_t n,
                       sf_search **out, sf_err *err);
void sf_search_free(sf_search *s);

/* Opens index `index` of the newest catalog version of `dataset` (a
 * directory or file:// URI): every segment the version lists for it, with
 * the index's quantizer, or with the quantizer file `quantizer` when it is
 * not NULL. The searcher owns the quantizer it loads (sf_search_quant).
 * SF_ENOTFOUND when the version has no such index; otherwise the errors of
 * sf_catalog_open_latest, sf_quant_load and sf_search_open. *out is freed
 * by sf_search_free. */
sf_code sf_search_open_dataset(const char *dataset, const char *index,
                               const char *quantizer, sf_search **out, sf_err *err);

/* The quantizer the searcher scores with; owned by the caller of
 * sf_search_open, or by the searcher after sf_search_open_dataset. */
const sf_quant *sf_search_quant(const sf_search *s);

/* The number of files searched. */
size_t sf_search_files(const sf_search *s);

/* Total rows over all files. */
uint64_t sf_search_rows(const sf_search *s);

/* Verifies every block of every file once (CRCs, row ids), after which
 * scans skip the per-block CRC check. Without it, each block's CRC is
 * checked every time it is scanned. */
sf_code sf_search_verify(sf_search *s, sf_err *err);

/* The k nearest rows of query (dim floats, as given: COSINE normalises a
 * copy) among the nprobe nearest partitions. ids[k] and scores[k] receive
 * the results best first; *n the count (< k only when fewer rows exist). */
sf_code sf_search_query(sf_search *s, const float *query, uint32_t k, uint32_t nprobe,
                        sf_rowid *ids, float *scores, uint32_t *n, sf_err *err);

/* Rows scored by the last query (for reporting the work done). */
uint64_t sf_search_last_scanned(const sf_search *s);

#endif
