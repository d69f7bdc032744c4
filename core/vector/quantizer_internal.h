/*
 * quantizer_internal.h - the inside of sf_quant, shared by the files of the
 * quantizer module only (quantizer.c: training and encoding;
 * quantizer_scan.c: query scanning; quantizer_io.c: the file format).
 * Not part of the library's interface.
 */
#ifndef SF_QUANTIZER_INTERNAL_H
#define SF_QUANTIZER_INTERNAL_H

#include <stdatomic.h>

#include "core/vector/kmeans.h"
#include "core/vector/quantizer.h"

struct sf_quant {
  sf_quant_params p;   /* pq_m == 0 unless IVF_PQ; kmeans_iters resolved */
  uint64_t train_rows; /* rows the training actually used (recorded) */
  uint64_t checksum;   /* XXH3-64 of the serialized bytes */
  uint32_t dsub;       /* IVF_PQ: dim / pq_m */

  float *centroids;       /* nlist * dim */
  sf_kmeans_panel coarse; /* the centroids laid out for assignment/probing */

  /* IVF_SQ: residual r_j is coded as floor((r_j - vmin_j) / step_j) clamped
   * to 0..255 and decoded as vmin_j + (code + 0.5) * step_j; step_j =
   * vdiff_j / 256 (0 for a constant dimension). */
  float *sq_vmin, *sq_vdiff; /* dim each, as stored in the file */
  float *sq_step, *sq_inv;   /* dim each, derived: step and 1/step (or 0) */

  /* IVF_PQ: codebook j is pq_cb[j*256*dsub ...], 256 sub-centroids of
   * dsub floats; one panel per codebook for batch encoding. */
  float *pq_cb;
  sf_kmeans_panel *pq_panels; /* pq_m of them */

  /* IVF_PQ under L2 and COSINE: the per-list term of the distance tables,
   * pq_pre[(l*pq_m + j)*256 + k] = 2<c_lj, w_jk> (c_lj: slice j of
   * centroid l; w_jk: code k of codebook j). Built by the first scanner
   * that needs it (quantizer_scan.c) and installed with a compare-and-swap,
   * so a quantizer shared by threads stays read-only to its users; NULL
   * until then, and for good when it would exceed SF_QUANT_PQ_PRECOMPUTE_MAX
   * or could not be allocated. Freed by sf_quant_free. */
  _Atomic(float *) pq_pre;
};

/* Allocates the arrays for q->p (which must be valid) and zeroes them. */
sf_code sf_quant_alloc(sf_quant *q, sf_err *err);
/* Derives sq_step/sq_inv and builds the panels once the stored arrays are
 * filled, then computes the checksum. */
sf_code sf_quant_finish(sf_quant *q, sf_err *err);
/* Size of the serialized file for valid params. */
uint64_t sf_quant_file_size(const sf_quant_params *p);

#endif
