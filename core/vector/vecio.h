/*
 * vecio.h - texmex vector files (.fvecs, .ivecs, .bvecs), streamed.
 *
 * Each record is a little-endian int32 dimension followed by that many
 * elements: float32 (.fvecs), int32 (.ivecs) or uint8 (.bvecs). The reader
 * checks the first dimension against SF_MAX_DIM and the file size against the
 * record size before it reads anything else, and checks every later record's
 * dimension as it streams, so a truncated or inconsistent file fails with the
 * file name, the row and what was expected, never with a crash or a huge
 * allocation. Memory is one caller-sized batch; the file is never loaded whole.
 */
#ifndef SF_VECIO_H
#define SF_VECIO_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/types.h"

typedef enum sf_vec_kind {
  SF_VEC_FVECS = 0,
  SF_VEC_IVECS = 1,
  SF_VEC_BVECS = 2
} sf_vec_kind;

/* The kind named by a path's extension; SF_EINVAL for any other extension. */
sf_code sf_vec_kind_of(const char *path, sf_vec_kind *kind, sf_err *err);

typedef struct sf_vecreader sf_vecreader;

/* Opens path (kind from its extension) and validates its size and first
 * dimension. *out is freed by sf_vecreader_free. */
sf_code sf_vecreader_open(const char *path, sf_vecreader **out, sf_err *err);
void sf_vecreader_free(sf_vecreader *r);

sf_vec_kind sf_vecreader_kind(const sf_vecreader *r);
uint32_t sf_vecreader_dim(const sf_vecreader *r);
/* Rows in the file (file size / record size, checked exact at open). */
uint64_t sf_vecreader_rows(const sf_vecreader *r);

/* Positions the next read at row `row` (<= rows). */
sf_code sf_vecreader_seek(sf_vecreader *r, uint64_t row, sf_err *err);

/* Reads up to max_rows rows into dst (max_rows * dim elements), converting
 * to float (.ivecs and .bvecs widen). *nread is 0 at end of file. */
sf_code sf_vecreader_read_f32(sf_vecreader *r, float *dst, size_t max_rows, size_t *nread,
                              sf_err *err);
/* The same for .ivecs as int32 (ground-truth files); SF_EINVAL for others. */
sf_code sf_vecreader_read_i32(sf_vecreader *r, int32_t *dst, size_t max_rows,
                              size_t *nread, sf_err *err);

/* Convenience: reads rows [first, first+count) of a file into a malloc'd
 * float array (caller frees); count == UINT64_MAX means to the end. Refuses
 * more than max_bytes of floats with SF_ELIMIT. */
sf_code sf_vec_load_f32(const char *path, uint64_t first, uint64_t count,
                        size_t max_bytes, float **out, uint64_t *rows, uint32_t *dim,
                        sf_err *err);

typedef struct sf_vecwriter sf_vecwriter;

/* Creates path (kind from its extension) for rows of `dim` elements; the
 * data becomes visible under path only at sf_vecwriter_close (written to a
 * temporary name, fsynced, renamed). */
sf_code sf_vecwriter_open(const char *path, uint32_t dim, sf_vecwriter **out,
                          sf_err *err);
/* Appends n rows given as float (.fvecs; .bvecs rounds and clamps to 0..255). */
sf_code sf_vecwriter_write_f32(sf_vecwriter *w, const float *src, size_t n, sf_err *err);
/* Appends n rows given as int32 (.ivecs). */
sf_code sf_vecwriter_write_i32(sf_vecwriter *w, const int32_t *src, size_t n,
                               sf_err *err);
/* Flushes, fsyncs and renames into place; frees w whatever the outcome. */
sf_code sf_vecwriter_close(sf_vecwriter *w, sf_err *err);
/* Discards a writer without publishing its file. Accepts NULL. */
void sf_vecwriter_abort(sf_vecwriter *w);

#endif
