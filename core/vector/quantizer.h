/*
 * quantizer.h - the trained, shared part of an IVF index: nlist coarse
 * centroids plus, for IVF_SQ, per-dimension ranges of the residuals and, for
 * IVF_PQ, m codebooks of 256 sub-centroids of the residuals. Every worker of
 * a build encodes against the same quantizer; its 64-bit checksum (of the
 * file bytes) is its identity in events and shard headers.
 *
 * The life of a vector:
 *   sf_quant_prepare  -> the metric's form (unit length for COSINE)
 *   sf_quant_assign   -> its list (nearest centroid under the metric)
 *   sf_quant_encode   -> its code_size-byte code in that list
 * and of a query: prepare, sf_quant_probe for the nprobe nearest lists, then
 * a scanner (set_query once, set_list per list, scan per block of codes)
 * turns codes into scores. All scores are "smaller is closer" and comparable
 * across the lists of one query, so one top-k serves the whole search.
 *
 * Codes: IVF_FLAT = the prepared vector as dim little-endian float32;
 * IVF_SQ = dim bytes, the residual x - centroid quantized to 256 levels per
 * dimension; IVF_PQ = m bytes, the nearest sub-centroid of each slice of the
 * residual. Encoding residuals rather than vectors spends the 8 bits on what
 * distinguishes the rows of one list, not on where the list is.
 *
 * Metrics: L2 trains plain k-means and ranks lists by distance. COSINE and
 * DOT train spherical k-means: lists are ranked by inner product with the
 * unit-length centroid directions, while the stored centroids (the base of
 * residuals, and the <q,centroid> term of DOT scores) are the lists' means;
 * see quantizer.c for why. IVF_SQ/IVF_PQ scores under COSINE come from the
 * L2 tables of the unit vectors: 0.5*||q - x^||^2 - 1, i.e. -cos for a unit
 * x^ (see quantizer_scan.c).
 *
 * A quantizer is immutable after train/load, so threads may share one; a
 * scanner holds one query's state and belongs to one thread.
 */
#ifndef SF_QUANTIZER_H
#define SF_QUANTIZER_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/types.h"

/* The first 8 bytes of every quantizer file, for sniffing. */
#define SF_QUANT_MAGIC "SFQUANT1"
#define SF_QUANT_MAGIC_LEN 8

typedef struct sf_quant sf_quant;
typedef struct sf_quant_scanner sf_quant_scanner;

typedef struct sf_quant_params {
  sf_index_type type;
  sf_metric metric;
  uint32_t dim;            /* 1..SF_MAX_DIM */
  uint32_t nlist;          /* 1..SF_MAX_NLIST, and <= n */
  uint32_t pq_m;           /* IVF_PQ: sub-quantizers, dim % pq_m == 0; else 0 */
  uint64_t seed;           /* training is deterministic for a seed */
  uint64_t max_train_rows; /* sample cap; 0 = max(256 * nlist, 65536 for PQ) */
  uint32_t kmeans_iters;   /* Lloyd iterations; 0 = 20 */
  uint32_t nthreads;       /* training threads (0 or 1: the caller's only); the
                              result is identical for any count */
} sf_quant_params;

#define SF_QUANT_DEFAULT_ITERS 20u
#define SF_QUANT_PQ_KSUB 256u /* codes per PQ sub-quantizer (8 bits) */

/* Checks p alone (types, ranges, dim % pq_m) with a message naming the
 * field and the fix. */
sf_code sf_quant_params_check(const sf_quant_params *p, sf_err *err);

/* Trains on n rows of x (n * p->dim floats, as given: COSINE normalises
 * copies). Needs n >= nlist, and n >= 256 for IVF_PQ. *out is freed by
 * sf_quant_free. */
sf_code sf_quant_train(const sf_quant_params *p, const float *x, size_t n, sf_quant **out,
                       sf_err *err);
void sf_quant_free(sf_quant *q);

sf_index_type sf_quant_type(const sf_quant *q);
sf_metric sf_quant_metric(const sf_quant *q);
uint32_t sf_quant_dim(const sf_quant *q);
uint32_t sf_quant_nlist(const sf_quant *q);
uint32_t sf_quant_pq_m(const sf_quant *q); /* 0 unless IVF_PQ */
/* Bytes per encoded row: 4*dim (IVF_FLAT), dim (IVF_SQ), pq_m (IVF_PQ). */
size_t sf_quant_code_size(const sf_quant *q);
/* XXH3-64 of the serialized quantizer: equal for equal files. */
uint64_t sf_quant_checksum(const sf_quant *q);
/* The nlist*dim centroids (owned by q). */
const float *sf_quant_centroids(const sf_quant *q);

/* out[dim] = x in the metric's form: normalised for COSINE, copied
 * otherwise (x == out is allowed). */
void sf_quant_prepare(const sf_quant *q, const float *x, float *out);
/* The list of a prepared row: its nearest centroid. */
uint32_t sf_quant_assign(const sf_quant *q, const float *prepared);
/* lists[i] for n prepared rows (blocked; much faster than one by one). */
void sf_quant_assign_batch(const sf_quant *q, const float *prepared, size_t n,
                           uint32_t *lists);
/* Writes the code_size-byte code of a prepared row in `list`. */
void sf_quant_encode(const sf_quant *q, const float *prepared, uint32_t list,
                     uint8_t *code);
/* Codes of n prepared rows (codes: n * code_size bytes). SF_ENOMEM only. */
sf_code sf_quant_encode_batch(const sf_quant *q, const float *prepared, size_t n,
                              const uint32_t *lists, uint8_t *codes, sf_err *err);

/* lists[0..min(nprobe,nlist)) = the nearest centroids of a prepared query,
 * nearest first (ties to the lower list). Returns the count written.
 * SF_ENOMEM is reported as 0. */
uint32_t sf_quant_probe(const sf_quant *q, const float *prepared_query, uint32_t nprobe,
                        uint32_t *lists);

/* IVF_PQ under L2 and COSINE splits the distance to a code of list l into
 *   ||q - c_l||^2  +  sum_j ||w_jk||^2 - 2<q_j, w_jk>  +  sum_j 2<c_lj, w_jk>
 * (per list, once per probed list; per query, once; per list and code,
 * fixed), as FAISS does with its precomputed tables. The last term is a
 * table of nlist * pq_m * 256 floats held by the quantizer, built on the
 * first scanner's creation. It is built only when it takes at most this
 * many bytes (nlist * pq_m <= 131072, e.g. nlist 4096 with pq_m 32); above,
 * scanners build each probed list's table from the query's residual
 * (256 * dim multiply-adds per list instead of pq_m * 256 additions). */
#define SF_QUANT_PQ_PRECOMPUTE_MAX ((size_t)128 << 20)

/* Flags of sf_quant_scanner_new_ex. */
/* IVF_PQ: per-list tables only, never the quantizer's precomputed one. */
#define SF_QUANT_SCAN_NO_PRECOMPUTE 1u

/* A scanner for q (which must outlive it); freed by sf_quant_scanner_free
 * (accepts NULL). Allocates all its tables here, none while scanning.
 * The first scanner of an IVF_PQ quantizer under L2 or COSINE also builds
 * the quantizer's precomputed table (see SF_QUANT_PQ_PRECOMPUTE_MAX); if
 * that allocation fails the scanner takes the per-list path instead. */
sf_code sf_quant_scanner_new(const sf_quant *q, sf_quant_scanner **out, sf_err *err);
/* The same with SF_QUANT_SCAN_* flags (0: as sf_quant_scanner_new). */
sf_code sf_quant_scanner_new_ex(const sf_quant *q, unsigned flags, sf_quant_scanner **out,
                                sf_err *err);
void sf_quant_scanner_free(sf_quant_scanner *s);
/* Sets the prepared query (copied). */
void sf_quant_scanner_set_query(sf_quant_scanner *s, const float *prepared_query);
/* Sets the list the next codes belong to (IVF_PQ under L2 without the
 * precomputed table builds the m x 256 table of the query's residual here). */
void sf_quant_scanner_set_list(sf_quant_scanner *s, uint32_t list);
/* scores[i] for n codes (n * code_size bytes, IVF_FLAT codes 4-byte
 * aligned). Call set_query and set_list first. */
void sf_quant_scanner_scan(const sf_quant_scanner *s, const uint8_t *codes, size_t n,
                           float *scores);
/* 1 when the scores of s take a term per code and list that does not depend
 * on the query (IVF_PQ under L2 or COSINE on the precomputed path; see
 * quantizer_scan.c): a caller may keep them to skip half the lookups of
 * later queries. */
int sf_quant_scanner_has_terms(const sf_quant_scanner *s);
/* sf_quant_scanner_scan for a scanner with terms: known == 0 computes the
 * codes' terms for the current list into terms[n] along with the scores;
 * known == 1 takes terms[n] from an earlier call over the same codes and
 * list. The scores have the same bits either way, and as _scan's. */
void sf_quant_scanner_scan_terms(const sf_quant_scanner *s, const uint8_t *codes,
                                 size_t n, float *terms, int known, float *scores);

/* Writes q to path atomically (temporary file, fsync, rename). */
sf_code sf_quant_save(const sf_quant *q, const char *path, sf_err *err);
/* Serializes q into a malloc'd buffer (caller frees): the file's bytes. */
sf_code sf_quant_serialize(const sf_quant *q, uint8_t **buf, size_t *len, sf_err *err);
/* Reads a quantizer file, trusting nothing in it: SF_EFORMAT for another
 * kind of file or version, SF_ECORRUPT for bad sizes, counts or checksum;
 * the message names the file. *out is freed by sf_quant_free. */
sf_code sf_quant_load(const char *path, sf_quant **out, sf_err *err);
/* The same from len bytes of memory; `name` names them in errors. Never
 * reads outside buf[0..len). */
sf_code sf_quant_load_mem(const uint8_t *buf, size_t len, const char *name,
                          sf_quant **out, sf_err *err);
/* The checksum a quantizer file declares, after validating the header and
 * the checksum itself, without loading the payload into memory. */
sf_code sf_quant_checksum_of_file(const char *path, uint64_t *checksum, sf_err *err);

/* {"type","metric","dim","nlist","pq_m","code_size","checksum" (16 hex
 * digits), "seed","train_rows","kmeans_iters"}: a new reference the caller
 * json_decref()s; NULL on allocation failure. */
json_t *sf_quant_describe_json(const sf_quant *q);

#endif
