/*
 * progress.h - the arithmetic of a progress line: rate, ETA and throttling,
 * kept out of the CLI so that it can be tested, and out of the pipeline so
 * that the library never prints (the caller decides where a line goes).
 *
 * A line looks like
 *   "1.2 GiB / 3.4 GiB  35%  410.5 MiB/s  ETA 0:06  <extra>"
 */
#ifndef SF_PROGRESS_H
#define SF_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct sf_progress {
  double start;        /* seconds, sf_progress_now() clock */
  double last;         /* when the last line was due; < start before the first */
  double min_interval; /* seconds between two lines */
} sf_progress;

/* Monotonic seconds. */
double sf_progress_now(void);

/* Starts the clock at `now`; lines at most every min_interval seconds. */
void sf_progress_init(sf_progress *p, double now, double min_interval);

/* Whether a line is due at `now` (always when `final`); if so, records the
 * time and formats the line into buf (always NUL-terminated). The rate is
 * the average since start: steadier than an instantaneous one, and right
 * for a pipeline whose speed is the disk's. */
int sf_progress_line(sf_progress *p, double now, uint64_t done, uint64_t total,
                     const char *extra, int final, char *buf, size_t len);

/* Formats a byte count with a binary unit ("512 B", "1.5 MiB"). */
void sf_progress_bytes(uint64_t bytes, char *buf, size_t len);

#endif
