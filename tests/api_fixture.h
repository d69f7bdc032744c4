/*
 * api_fixture.h - what the tests of the public API share: clustered
 * vectors with their row ids, a trained staging root, and checks that a
 * call failed with a given status and a message saying a given thing.
 * Written against include/segforge.h only, like a program outside the tree.
 */
#ifndef SF_API_FIXTURE_H
#define SF_API_FIXTURE_H

#include <segforge.h>
#include <stdint.h>

/* n rows of dim floats around nc cluster centres, deterministic for seed;
 * malloc'd (caller frees). */
float *af_vectors(uint64_t n, uint32_t dim, uint32_t nc, uint64_t seed);

/* Row ids of n rows laid out in fragments of `per` rows starting at
 * fragment `first`: row i is fragment first + i / per, offset i % per. */
uint64_t *af_row_ids(uint64_t n, uint32_t per, uint32_t first);

/* Options from "key=value" strings, NULL-terminated; freed by
 * sf_options_free. Fails the test on an error. */
sf_options *af_options(const char *kv, ...);

/* A new dataset directory under the test scratch root and its staging root
 * for staging id `job`, with a quantizer trained on x (n x dim) with the
 * given options. Both strings malloc'd into *dataset and *root. */
void af_staged_dataset(const char *tag, const char *job, const float *x, uint64_t n,
                       uint32_t dim, sf_options *train, char **dataset, char **root);

/* Asserts that rc is `want` and err says so with a message containing
 * `needle` (may be NULL). */
void af_assert_fails(int rc, const sf_error *err, int want, const char *needle);

#endif
