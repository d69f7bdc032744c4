/*
 * train.c - the coordinator of a build trains the quantizer that every
 * worker will encode its shard with, from vectors in memory.
 *
 *   train DATASET STAGING_ID [INDEX_TYPE]
 *
 * e.g. train /data/ds job-7 IVF_SQ
 *
 * The vectors here are made up: the rows of fragments 0-3, each row a
 * function of its row id (the same function as in worker_publish.c and
 * searcher.c, so that the examples agree). A real coordinator would read a
 * sample of the column instead.
 *
 * Build against the installed library:
 *   cc train.c -o train $(pkg-config --cflags --libs segforge)
 */
#include <segforge.h>
#include <stdio.h>
#include <stdlib.h>

#define DIM 32
#define ROWS_PER_FRAGMENT 1000

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

int main(int argc, char **argv) {
  if (argc < 3 || argc > 4) {
    fprintf(stderr, "usage: %s DATASET STAGING_ID [IVF_FLAT|IVF_SQ|IVF_PQ]\n", argv[0]);
    return 2;
  }
  const char *type = argc == 4 ? argv[3] : "IVF_FLAT";
  sf_error err = {0};
  char *root = NULL;
  sf_options *opts = NULL;
  int status = 1;

  /* 1. The sample: rows of fragments 0-3 (4000 x 32 floats). */
  uint64_t n = 4 * ROWS_PER_FRAGMENT;
  float *x = malloc(n * DIM * sizeof *x);
  if (!x) return 1;
  for (uint64_t i = 0; i < n; i++)
    make_vector(SF_ROW_ID(i / ROWS_PER_FRAGMENT, i % ROWS_PER_FRAGMENT), x + i * DIM);

  /* 2. Where the job's files go: <dataset>/_indices/_staging/<staging id>
   *    (a string we own and free with sf_free). */
  if (sf_staging_root(argv[1], argv[2], &root, &err)) goto fail;

  /* 3. The index's parameters, as string options (any binding or config
   *    file can pass them through); a misspelled key is refused. */
  if (!(opts = sf_options_new())) goto out;
  if (sf_options_set(opts, "index_type", type, &err) ||
      sf_options_set(opts, "metric", "L2", &err) ||
      sf_options_set(opts, "nlist", "16", &err) ||
      sf_options_set(opts, "pq_m", type[4] == 'P' ? "8" : "0", &err))
    goto fail;
  if (sf_train(x, n, DIM, opts, root, &err)) goto fail;
  printf("trained %s nlist 16 on %llu rows into %s/quantizer\n", type,
         (unsigned long long)n, root);
  status = 0;
  goto out;
fail:
  fprintf(stderr, "train: %s: %s\n", sf_status_name(err.code), err.message);
out:
  sf_options_free(opts);
  sf_free(root);
  free(x);
  return status;
}
