/* topk.c - see topk.h. */
#include "core/vector/topk.h"

#include <math.h>
#include <stdlib.h>

/* a is worse than b: larger score, or equal score and larger id. */
static inline int worse(float sa, uint64_t ia, float sb, uint64_t ib) {
  return sa > sb || (sa == sb && ia > ib);
}

int sf_topk_init(sf_topk *t, uint32_t k) {
  t->k = k ? k : 1;
  t->n = 0;
  t->score = malloc(sizeof(float) * t->k);
  t->id = malloc(sizeof(uint64_t) * t->k);
  if (!t->score || !t->id) {
    sf_topk_free(t);
    return -1;
  }
  return 0;
}

void sf_topk_free(sf_topk *t) {
  free(t->score);
  free(t->id);
  t->score = NULL;
  t->id = NULL;
  t->n = 0;
}

void sf_topk_reset(sf_topk *t) {
  t->n = 0;
}

float sf_topk_bound(const sf_topk *t) {
  return t->n < t->k ? INFINITY : t->score[0];
}

static void sift_down(sf_topk *t, uint32_t i, uint32_t n) {
  for (;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && worse(t->score[l], t->id[l], t->score[m], t->id[m])) m = l;
    if (r < n && worse(t->score[r], t->id[r], t->score[m], t->id[m])) m = r;
    if (m == i) return;
    float s = t->score[i];
    uint64_t d = t->id[i];
    t->score[i] = t->score[m];
    t->id[i] = t->id[m];
    t->score[m] = s;
    t->id[m] = d;
    i = m;
  }
}

void sf_topk_push(sf_topk *t, float score, uint64_t id) {
  if (t->n < t->k) {
    uint32_t i = t->n++;
    while (i > 0) {
      uint32_t p = (i - 1) / 2;
      if (!worse(score, id, t->score[p], t->id[p])) break;
      t->score[i] = t->score[p];
      t->id[i] = t->id[p];
      i = p;
    }
    t->score[i] = score;
    t->id[i] = id;
    return;
  }
  if (!worse(t->score[0], t->id[0], score, id)) return;
  t->score[0] = score;
  t->id[0] = id;
  sift_down(t, 0, t->n);
}

uint32_t sf_topk_sort(sf_topk *t) {
  /* Heap sort: repeatedly move the worst to the end. */
  for (uint32_t n = t->n; n > 1; n--) {
    float s = t->score[0];
    uint64_t d = t->id[0];
    t->score[0] = t->score[n - 1];
    t->id[0] = t->id[n - 1];
    t->score[n - 1] = s;
    t->id[n - 1] = d;
    sift_down(t, 0, n - 1);
  }
  return t->n;
}
