/* rng.c - see rng.h. */
#include "core/base/rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

void sf_rng_seed(sf_rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

uint64_t sf_rng_next(sf_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint64_t sf_rng_below(sf_rng *r, uint64_t n) {
  /* Lemire's multiply-shift; the bias is below 2^-64 * n, fine for sampling. */
  return (uint64_t)(((unsigned __int128)sf_rng_next(r) * n) >> 64);
}

double sf_rng_uniform(sf_rng *r) {
  return (double)(sf_rng_next(r) >> 11) * 0x1.0p-53;
}

double sf_rng_normal(sf_rng *r) {
  double u = sf_rng_uniform(r), v = sf_rng_uniform(r);
  if (u < 1e-300) u = 1e-300;
  return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}
