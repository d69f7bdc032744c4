/*
 * stage.h - the worker's side of a build: turn the rows of some fragments
 * of a vector file into one shard file in a staging root.
 *
 * Row i of the input is fragment i / R, offset i % R (R rows per fragment);
 * its row id is (fragment << 32) | offset. A worker stages its fragments
 * independently of every other worker: it reads only its own rows, writes
 * only "<staging root>/<shard_id>.sfshard" (atomically: temporary name,
 * fsync, rename), and shares nothing but the read-only quantizer, so any
 * number of workers may stage into one root at once.
 *
 * Memory is bounded whatever the shard's size: a first pass assigns every
 * row to its partition (4 bytes a row), then each further pass encodes the
 * rows of a group of partitions whose codes fit `memory_budget` and writes
 * them, re-reading the input (sequentially, from the page cache when it
 * fits) rather than holding all codes at once.
 */
#ifndef SF_STAGE_H
#define SF_STAGE_H

#include <roaring/roaring.h>
#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/vector/quantizer.h"

#define SF_SHARD_EXT ".sfshard"

typedef struct sf_stage_opts {
  const char *vectors;               /* texmex file (.fvecs/.bvecs) */
  const char *staging_root;          /* directory holding the quantizer */
  const char *shard_id;              /* [A-Za-z0-9._-], 1..128 chars */
  const roaring_bitmap_t *fragments; /* non-empty */
  uint32_t rows_per_fragment;        /* R >= 1 */
  size_t memory_budget;              /* bytes of codes per pass; 0 = 256 MiB */
  /* 1: never replace a shard of the same id (SF_EEXIST, before any work);
   * 0: replace it, as a retry of the same worker does. */
  int exclusive;
  /* Called after each batch with rows encoded so far and the total. */
  void (*progress)(void *arg, uint64_t done, uint64_t total);
  void *progress_arg;
} sf_stage_opts;

typedef struct sf_stage_result {
  char *path;      /* the shard file written (malloc'd; caller frees) */
  uint64_t rows;   /* rows staged */
  uint64_t bytes;  /* size of the shard file */
  uint32_t passes; /* encoding passes over the input */
} sf_stage_result;

/* Checks a shard id: 1..128 characters of [A-Za-z0-9._-], not starting
 * with '.', so it is safe as a file name and in events. */
sf_code sf_stage_check_id(const char *what, const char *id, sf_err *err);

/* Writes the shard for o->fragments of o->vectors encoded with q (whose
 * dimension must match the file's). With o->exclusive, an existing shard of
 * the same id is never replaced: SF_EEXIST before any row is read, or at the
 * end when another writer staged that id meanwhile (its shard is kept). */
sf_code sf_stage_shard(const sf_stage_opts *o, const sf_quant *q, sf_stage_result *res,
                       sf_err *err);

#endif
