/*
 * fault_sim.h - the test half of the fault module (core/base/fault.h): injected
 * allocation failures and simulated power loss, after SQLite's
 * src/test_malloc.c and src/test6.c.
 *
 * Both work by wrapping C library calls at link time: a test program
 * linked with -Wl,--wrap=malloc,... (CMakeLists.txt lists the programs and
 * the symbols) sends every call that segforge's static libraries and the
 * test itself make to the __wrap_ functions of fault_sim.c, which pass them
 * on to the C library (or to AddressSanitizer's interceptors) unless a
 * fault is armed. Calls made inside shared libraries (avro-c, CRoaring,
 * zstd, jansson, librdkafka, the C library itself) are not wrapped: their
 * own allocations never fail here, and their writes are seen only at the
 * fsync that follows them.
 *
 * Not thread-safe to arm or disarm while the code under test runs; the
 * wrappers themselves are safe to call from any thread.
 */
#ifndef SF_FAULT_SIM_H
#define SF_FAULT_SIM_H

#include <stddef.h>

/* ---- allocation failures ------------------------------------------------ */
/* Wrapped: malloc, calloc, realloc, strdup, strndup, realpath (and free,
 * to track what is live). */

/* From now on, the n-th allocation call (n >= 1) returns NULL with errno
 * ENOMEM; with `persistent`, every call after it fails too. Also starts
 * leak tracking (below). */
void fsim_oom_arm(unsigned long n, int persistent);
/* Stops injecting; returns 1 if a failure was injected since the arm. */
int fsim_oom_disarm(void);
/* Allocation calls counted since the last arm. */
unsigned long fsim_oom_calls(void);

/* Leak tracking: every block allocated through the wrappers after
 * fsim_track_start is remembered until it is freed. fsim_track_stop stops
 * and returns how many are still live, describing up to `max` of them in
 * `buf` (size bytes, may be NULL) as "<bytes> bytes from <caller>". */
void fsim_track_start(void);
size_t fsim_track_stop(char *buf, size_t size, size_t max);

/* ---- power loss ----------------------------------------------------------- */
/* Wrapped: fsync, fdatasync. The model, after SQLite's crash tests
 * (src/test6.c), at the granularity the file system promises:
 *   - a regular file's durable content is what it held at its last
 *     fsync/fdatasync (or when recording started);
 *   - a directory's durable entries are those it held at its last fsync (or
 *     when recording started): creating, renaming, linking or removing a
 *     name is durable only once the directory holding it is fsynced;
 *   - a power loss keeps the durable state and does one of these with the
 *     rest, per file and per directory as the policy says: drops it (the
 *     durable content, or nothing for a file never synced; the durable
 *     entries), garbles it (every byte that differs from the durable
 *     content, and every byte past it, becomes random), or keeps it (the
 *     write or the directory operation reached the disk anyway).
 * Inodes are told apart by number and birth time (statx), so a number
 * reused after an unlink is another file. Writes made inside shared
 * libraries (avro-c's FILE*) are seen like any other: the state of the file
 * at its fsync is what counts. Only directories and regular files exist in
 * the model (no symlinks, no directory renames). */

/* With on, fsync and fdatasync return 0 at once: for tests that run the
 * write paths thousands of times and do not look at durability. */
void fsim_sync_skip(int on);

/* Takes every file and directory under root (absolute) as durable now,
 * keeping the record in `shadow`, an empty directory outside root. */
void fsim_pl_snapshot(const char *root, const char *shadow);

/* Starts recording in this process (a forked child): each fsync or
 * fdatasync of a file or directory under root records its state in shadow
 * and returns 0 without syncing anything; the `crash_at`-th of them (from
 * 1; 0 = none) kills the process with SIGKILL instead, before recording. */
void fsim_pl_record(const char *root, const char *shadow, unsigned long crash_at);
/* Syncs recorded by this process so far. */
unsigned long fsim_pl_syncs(void);

typedef enum fsim_pl_names {
  FSIM_NAMES_REVERT,
  FSIM_NAMES_KEEP,
  FSIM_NAMES_MIXED
} fsim_pl_names;
typedef enum fsim_pl_data {
  FSIM_DATA_DROP,
  FSIM_DATA_GARBLE,
  FSIM_DATA_KEEP
} fsim_pl_data;
/* What a power loss does with the unsynced: directory entries (MIXED:
 * each directory, by a coin seeded with `seed`, reverts or keeps), and
 * file contents. */
typedef struct fsim_pl_policy {
  fsim_pl_names names;
  fsim_pl_data data;
  unsigned long seed;
  const char *label;
} fsim_pl_policy;

/* After the recording process died (or ended): builds at `out` (a path that
 * does not exist) the tree root would hold after a power loss at that
 * moment, from the shadow and root's current state, which it leaves as it
 * is. */
void fsim_pl_restore(const char *root, const char *shadow, const char *out,
                     const fsim_pl_policy *p);

#endif
