/*
 * searcher.c - search a committed index from several threads at once.
 *
 *   searcher DATASET ROW_ID...
 *
 * e.g. searcher /data/ds 4294967296 7
 *
 * Each ROW_ID's vector (made up from the row id as in worker_publish.c) is
 * a query; with every partition probed the nearest row of an IVF_FLAT
 * index is the row itself. The queries run in one thread each, on one
 * shared index handle: sf_index_search is thread-safe. Exit status 0 when
 * every query found its own row first.
 *
 * Build against the installed library:
 *   cc searcher.c -o searcher -pthread $(pkg-config --cflags --libs segforge)
 */
#include <pthread.h>
#include <segforge.h>
#include <stdio.h>
#include <stdlib.h>

#define DIM 32
#define K 5
#define MAX_QUERIES 64

/* The vector of a row id: one of 16 clusters plus noise, from a hash. */
static void make_vector(uint64_t row_id, float *v) {
  uint64_t h = row_id * 0x9e3779b97f4a7c15ull + 1;
  unsigned cluster = (unsigned)((row_id * 2654435761u) >> 7) % 16;
  for (int j = 0; j < DIM; j++) {
    h ^= h >> 31, h *= 0xbf58476d1ce4e5b9ull, h ^= h >> 29;
    float noise = (float)(h >> 40) / (float)(1u << 24) - 0.5f;
    v[j] = (float)((cluster * 7 + j * 3) % 11) + noise;
  }
}

typedef struct {
  sf_index *ix;
  uint64_t row_id;
  uint64_t ids[K];
  float dist[K];
  sf_error err;
  int rc;
} query;

static void *run(void *arg) {
  query *q = arg;
  float v[DIM];
  make_vector(q->row_id, v);
  /* nprobe = nlist: every partition, so IVF_FLAT is exact. */
  q->rc = sf_index_search(q->ix, v, 1, DIM, K, sf_index_nlist(q->ix), q->ids, q->dist,
                          &q->err);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3 || argc - 2 > MAX_QUERIES) {
    fprintf(stderr, "usage: %s DATASET ROW_ID... (at most %d)\n", argv[0], MAX_QUERIES);
    return 2;
  }
  sf_error err = {0};
  sf_index *ix = NULL;
  if (sf_index_open(argv[1], "emb_idx", &ix, &err)) {
    fprintf(stderr, "searcher: %s: %s\n", sf_status_name(err.code), err.message);
    return 1;
  }
  printf("index emb_idx: %s %s, %llu rows in %zu segment(s), catalog version %llu\n",
         sf_index_algorithm(ix), sf_index_metric(ix),
         (unsigned long long)sf_index_num_rows(ix), sf_index_num_segments(ix),
         (unsigned long long)sf_index_version(ix));
  int nq = argc - 2, found = 0, failed = 0;
  query q[MAX_QUERIES] = {{0}};
  pthread_t t[MAX_QUERIES];
  for (int i = 0; i < nq; i++) {
    q[i].ix = ix;
    q[i].row_id = strtoull(argv[i + 2], NULL, 10);
    if (pthread_create(&t[i], NULL, run, &q[i])) run(&q[i]), t[i] = 0;
  }
  for (int i = 0; i < nq; i++) {
    if (t[i]) pthread_join(t[i], NULL);
    if (q[i].rc) {
      fprintf(stderr, "searcher: %s: %s\n", sf_status_name(q[i].err.code),
              q[i].err.message);
      failed++;
      continue;
    }
    printf("row %llu (fragment %u, offset %u):", (unsigned long long)q[i].row_id,
           SF_ROW_ID_FRAGMENT(q[i].row_id), SF_ROW_ID_OFFSET(q[i].row_id));
    for (int j = 0; j < K && q[i].ids[j] != SF_NO_ROW_ID; j++)
      printf(" %llu (%.3f)", (unsigned long long)q[i].ids[j], q[i].dist[j]);
    printf("\n");
    found += q[i].ids[0] == q[i].row_id;
  }
  printf("%d of %d queries found their own row first\n", found, nq);
  sf_index_close(ix);
  return failed || found != nq;
}
