/*
 * rng.h - a small, fast, seedable generator (splitmix64 seeding xoshiro256**)
 * so that training, sampling and generated data are reproducible from a seed
 * on every platform, which rand() is not.
 */
#ifndef SF_RNG_H
#define SF_RNG_H

#include <stdint.h>

typedef struct sf_rng {
  uint64_t s[4];
} sf_rng;

void sf_rng_seed(sf_rng *r, uint64_t seed);
uint64_t sf_rng_next(sf_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t sf_rng_below(sf_rng *r, uint64_t n);
/* Uniform in [0, 1). */
double sf_rng_uniform(sf_rng *r);
/* Standard normal (Box-Muller). */
double sf_rng_normal(sf_rng *r);

#endif
