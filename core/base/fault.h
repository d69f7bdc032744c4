/*
 * fault.h - named fault points that tests can make crash or fail (after
 * SQLite's test hooks), read from one environment variable:
 *
 *   SF_FAULT=<point>[=<action>][,<point>[=<action>]...]
 *
 * <action> is `crash` (the default): the process dies by SIGKILL at the
 * point, as close to a power cut as a process can make it (no cleanup, no
 * atexit, temporary files left where they are); or `fail`, at the points
 * marked (f) below: the operation fails there with SF_EIO, as a failed
 * write would. The variable is read once per process, on first use, by any
 * thread; afterwards a point costs one atomic load and one branch when
 * SF_FAULT is unset.
 *
 * The points (docs/testing.md lists them with the tests that use them):
 *   build.mid_segment (f)   half the partitions of a segment are copied: its
 *                           temporary file exists, its final name does not
 *   build.after_segment     the first segment of a run is renamed in place
 *   build.slow_partition    no crash: every segment build sleeps 50 ms after
 *                           each partition, so tests can watch builds overlap
 *   catalog.before_quantizer_rename (f)
 *                           the quantizer copy is written and not yet renamed
 *   catalog.torn_temp       the new version's temporary file is cut to half
 *                           its size, then the process dies (a torn write)
 *   catalog.before_link (f) the new version is written and fsynced under its
 *                           temporary name, not yet linked
 *   catalog.after_link (f)  the version is published; its directory is not
 *                           yet fsynced nor the temporary removed
 *   catalog.pause_before_lock
 *                           no crash: the commit sleeps half a second before
 *                           it takes the shared lock (tests of gc racing it)
 *   serve.after_consume     the first ShardStaged of a job joined the table
 *   serve.after_commit      sf_finalize returned (the version is durable),
 *                           SegmentsCommitted not yet published
 *   serve.after_publish     SegmentsCommitted was delivered, the job's
 *                           offsets not yet released
 *   serve.producer_fatal    no crash: the producer gets a fatal error at
 *                           start, as an idempotence sequence gap would
 *   serve.compact_mid       a merge of serve's background compaction has
 *                           copied half its bytes: its temporary file exists
 *   serve.after_compact     a compaction is committed, SegmentsCompacted
 *                           not yet published
 *   segwrite.no_copy_file_range
 *                           no crash: segment merges copy through user space
 *                           instead of copy_file_range(2)
 *
 * Allocation-failure and power-loss simulation, which wrap C library calls
 * at link time, are the test half of this module: tests/fault_sim.h.
 */
#ifndef SF_FAULT_H
#define SF_FAULT_H

#include "core/base/error.h"

#define SF_FAULT_ENV "SF_FAULT"

typedef enum sf_fault_action {
  SF_FAULT_OFF = 0, /* the point is not named */
  SF_FAULT_CRASH,   /* SIGKILL at the point */
  SF_FAULT_FAIL,    /* the operation fails there with SF_EIO */
} sf_fault_action;

/* What SF_FAULT asks of `point` (one of the names above). */
sf_fault_action sf_fault_get(const char *point);

/* The usual call site: kills the process when `point` is armed to crash,
 * returns SF_EIO with a message naming the point when it is armed to fail,
 * SF_OK otherwise. */
sf_code sf_fault_point(const char *point, sf_err *err);

/* Dies now by SIGKILL. */
_Noreturn void sf_fault_crash(void);

/* SF_OK when SF_FAULT is unset or names only known points with actions they
 * support; otherwise SF_EINVAL saying which entry is wrong. Programs call it
 * at start so that a misspelt point is an error, not a test that silently
 * never crashes. */
sf_code sf_fault_check_env(sf_err *err);

/* Reads SF_FAULT again. For tests that change the variable in a forked
 * child: call it while no other thread of the process is at a fault point. */
void sf_fault_reload(void);

#endif
