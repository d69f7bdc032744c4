/*
 * types.h - the vocabulary shared by every module: index types, metrics,
 * row ids, and the limits every reader checks outside numbers against.
 */
#ifndef SF_TYPES_H
#define SF_TYPES_H

#include <stdint.h>

#include "core/base/error.h"

typedef enum sf_index_type {
  SF_IVF_FLAT = 0, /* float32 vectors */
  SF_IVF_SQ = 1,   /* 8-bit scalar quantization, per-dimension ranges */
  SF_IVF_PQ = 2,   /* product quantization, m sub-quantizers x 256 codes */
} sf_index_type;

typedef enum sf_metric {
  SF_L2 = 0,     /* squared Euclidean distance */
  SF_COSINE = 1, /* vectors are normalised, then ranked by inner product */
  SF_DOT = 2,    /* inner product, larger is closer */
} sf_metric;

/* Row id = (fragment << 32) | offset within the fragment. */
typedef uint64_t sf_rowid;
#define SF_ROWID(frag, off) (((uint64_t)(frag) << 32) | (uint32_t)(off))
#define SF_ROWID_FRAG(id) ((uint32_t)((id) >> 32))
#define SF_ROWID_OFF(id) ((uint32_t)(id))

/* Sane limits: every count read from outside is checked against these before
 * anything is allocated from it. */
#define SF_MAX_DIM 65536u
#define SF_MAX_NLIST (1u << 20)
#define SF_MAX_PQ_M 1024u

/* Names as they appear in events, files and flags ("IVF_PQ", "COSINE"). */
const char *sf_index_type_name(sf_index_type t);
const char *sf_metric_name(sf_metric m);
/* Parse a name (case-insensitive); SF_EINVAL with a message listing the
 * accepted names otherwise. */
sf_code sf_index_type_parse(const char *s, sf_index_type *out, sf_err *err);
sf_code sf_metric_parse(const char *s, sf_metric *out, sf_err *err);

#endif
