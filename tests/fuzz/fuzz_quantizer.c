/*
 * fuzz_quantizer.c - libFuzzer target for the quantizer reader
 * (sf_quant_load_mem) and, when a load succeeds, for everything a loaded
 * quantizer is then used for: describe, assign, probe, encode and scan.
 *
 * Each input runs twice: as given (nearly every mutation breaks the XXH3
 * trailer, so this exercises the magic, version, count and size checks in
 * front of it), and again with the trailer recomputed, so that mutations
 * reach what lies behind the hash: the float checks and a quantizer built
 * from hostile numbers.
 *
 * Seed corpus (no binary files in the repository):
 *   SF_FUZZ_WRITE_SEEDS=corpus ./fuzz_quantizer   # writes small valid files
 *   ./fuzz_quantizer corpus -max_total_time=30
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "core/vector/gen.h"
#include "core/vector/quantizer.h"

/* Uses a loaded quantizer the way a search does, on a fixed query. */
static void exercise(const sf_quant *q) {
  json_t *j = sf_quant_describe_json(q);
  json_decref(j);
  const uint32_t d = sf_quant_dim(q);
  if (d > 4096) return; /* keep each input fast */
  float *v = calloc(d, sizeof(float));
  uint8_t *code = calloc(sf_quant_code_size(q) + 4, 1);
  sf_quant_scanner *s = NULL;
  uint32_t lists[4];
  float score[1];
  if (v && code && !sf_quant_scanner_new(q, &s, NULL)) {
    for (uint32_t i = 0; i < d; i++) v[i] = (float)(i % 7) - 3.0f;
    sf_quant_prepare(q, v, v);
    uint32_t l = sf_quant_assign(q, v);
    sf_quant_encode(q, v, l, code);
    uint32_t np = sf_quant_probe(q, v, 4, lists);
    sf_quant_scanner_set_query(s, v);
    for (uint32_t i = 0; i < np; i++) {
      sf_quant_scanner_set_list(s, lists[i]);
      sf_quant_scanner_scan(s, code, 1, score);
    }
  }
  sf_quant_scanner_free(s);
  free(v);
  free(code);
}

static void load(const uint8_t *data, size_t size) {
  sf_quant *q = NULL;
  sf_err err = {0};
  if (sf_quant_load_mem(data, size, "fuzz", &q, &err) == SF_OK) {
    exercise(q);
    sf_quant_free(q);
  } else if (!err.msg[0]) {
    abort(); /* every refusal must say why */
  }
}

static void write_seeds(const char *dir) {
  mkdir(dir, 0755);
  float x[300 * 8];
  sf_gen_clustered(x, 300, 8, 5, 0.3f, 1, 2);
  for (int t = SF_IVF_FLAT; t <= SF_IVF_PQ; t++)
    for (int m = SF_L2; m <= SF_DOT; m++) {
      sf_quant_params p = {.type = (sf_index_type)t,
                           .metric = (sf_metric)m,
                           .dim = 8,
                           .nlist = 2,
                           .pq_m = t == SF_IVF_PQ ? 2 : 0,
                           .seed = 1,
                           .kmeans_iters = 2};
      sf_quant *q;
      uint8_t *buf;
      size_t len;
      if (sf_quant_train(&p, x, 300, &q, NULL)) continue;
      if (!sf_quant_serialize(q, &buf, &len, NULL)) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%d-%d", dir, t, m);
        FILE *f = fopen(path, "wb");
        if (f) {
          fwrite(buf, 1, len, f);
          fclose(f);
        }
        free(buf);
      }
      sf_quant_free(q);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *dir = getenv("SF_FUZZ_WRITE_SEEDS");
  if (dir && *dir) {
    write_seeds(dir);
    exit(0);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  load(data, size);
  if (size >= 72) {
    uint8_t *b = malloc(size);
    if (!b) return 0;
    memcpy(b, data, size);
    uint64_t h = XXH3_64bits(b, size - 8);
    memcpy(b + size - 8, &h, 8);
    load(b, size);
    free(b);
  }
  return 0;
}
