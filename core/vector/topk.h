/*
 * topk.h - the k best (smallest-score) candidates seen so far: a bounded
 * max-heap, so a scan of n rows costs O(n log k) and k slots of memory.
 * Ties are broken by the smaller id, so results are deterministic whatever
 * order files, partitions or rows are scanned in.
 */
#ifndef SF_TOPK_H
#define SF_TOPK_H

#include <stddef.h>
#include <stdint.h>

typedef struct sf_topk {
  uint32_t k, n;
  float *score; /* heap of n <= k entries, worst at [0] */
  uint64_t *id;
} sf_topk;

/* Initialises for k results; allocates 12*k bytes freed by sf_topk_free.
 * Returns 0 on success, -1 on allocation failure. */
int sf_topk_init(sf_topk *t, uint32_t k);
void sf_topk_free(sf_topk *t);
void sf_topk_reset(sf_topk *t);

/* The score a candidate must beat to enter (INFINITY while not full). */
float sf_topk_bound(const sf_topk *t);

/* Offers a candidate; kept if it is among the k best so far. */
void sf_topk_push(sf_topk *t, float score, uint64_t id);

/* Sorts the heap in place, best first, and returns the count (<= k). After
 * this the heap is no longer valid for pushes until sf_topk_reset. */
uint32_t sf_topk_sort(sf_topk *t);

#endif
