/*
 * dataset_fixture.h - a small real dataset for the fault tests: generated
 * vectors, a trained quantizer, staged shards; and the integrity check that
 * every fault test runs on a dataset after a failure or a crash.
 */
#ifndef SF_DATASET_FIXTURE_H
#define SF_DATASET_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#define DFX_ROWS_PER_FRAGMENT 16u
#define DFX_FRAGMENTS 16u /* rows in the vector file: 256 */

/* The shared inputs: <dir>/vectors.fvecs and <dir>/quantizer (IVF_SQ, L2,
 * dim 8, nlist 4), made once by dfx_init. */
typedef struct dfx {
  char dir[2048];
  char vectors[2100];
  char quantizer[2100];
  uint64_t checksum;
} dfx;

void dfx_init(dfx *x, const char *tag);

/* Makes <ds>/_indices/_staging/<staging_id>/ with the quantizer and
 * `nshards` shards s0, s1, ... of two fragments each, from fragment
 * `first` on. */
void dfx_stage(const dfx *x, const char *ds, const char *staging_id, uint32_t first,
               unsigned nshards);

/* The integrity every failure and crash must preserve: the newest catalog
 * version reads (or there is none yet), and every version present names an
 * intact quantizer (its checksum) and intact segments (opened and verified
 * block by block, with the size, rows, fragments and parameters the
 * version records). 0 if so; otherwise 1 with the first problem in why. */
int dfx_check(const char *ds, char *why, size_t size);

/* Whether the newest version holds staging_id (0 when there is none). */
int dfx_committed(const char *ds, const char *staging_id);

/* Points SF_TEST_TMP (tu_tmpdir) at a new directory on a memory file
 * system when /dev/shm is there, for tests that simulate the disk or skip
 * its syncs: they need a file system that holds bytes, not a fast one, and
 * thousands of files created and removed cost seconds there instead of
 * minutes on a disk mounted with `discard`. dfx_scratch_remove (at exit)
 * removes that directory. */
void dfx_scratch_in_memory(void);
void dfx_scratch_remove(void);

/* rm -rf; and cp -a of a tree (regular files and directories only). */
void dfx_rm_rf(const char *path);
void dfx_copy_tree(const char *src, const char *dst);

#endif
