/* clock.c - see clock.h. */
#include "core/base/clock.h"

static struct timespec read_clock(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return ts;
}

int64_t sf_clock_wall_ms(void) {
  struct timespec ts = read_clock(CLOCK_REALTIME);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sf_clock_mono_ms(void) {
  struct timespec ts = read_clock(CLOCK_MONOTONIC);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double sf_clock_mono_s(void) {
  struct timespec ts = read_clock(CLOCK_MONOTONIC);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

uint64_t sf_clock_mono_ns(void) {
  struct timespec ts = read_clock(CLOCK_MONOTONIC);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec sf_clock_deadline(int64_t ms) {
  struct timespec ts = read_clock(CLOCK_MONOTONIC);
  int64_t ns = ts.tv_nsec + ms * 1000000;
  ts.tv_sec += ns / 1000000000;
  ts.tv_nsec = ns % 1000000000;
  return ts;
}
