/*
 * clock.h - the one place that reads the clocks.
 *
 * Two clocks, never mixed: CLOCK_REALTIME for times that are recorded or
 * compared across processes (catalog versions, events, file ages), and
 * CLOCK_MONOTONIC for durations, deadlines and liveness inside one process,
 * which a wall-clock step must not disturb. Condition variables that wait
 * with sf_clock_deadline must use CLOCK_MONOTONIC (pthread_condattr_setclock).
 */
#ifndef SF_CLOCK_H
#define SF_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t sf_clock_wall_ms(void);
/* Milliseconds of CLOCK_MONOTONIC: only differences mean anything. */
int64_t sf_clock_mono_ms(void);
/* Seconds of CLOCK_MONOTONIC, to the nanosecond: for durations. */
double sf_clock_mono_s(void);
/* Nanoseconds of CLOCK_MONOTONIC (also a cheap source of seed bits). */
uint64_t sf_clock_mono_ns(void);
/* The CLOCK_MONOTONIC time ms milliseconds from now (ms >= 0), for
 * pthread_cond_timedwait. */
struct timespec sf_clock_deadline(int64_t ms);

#endif
