/*
 * offsets.h - the watermark per partition: how far the consumer group's
 * committed offset may move without losing a shard.
 *
 * The design's rule: offsets are committed only up to the oldest event whose
 * job is not yet committed or failed. So every message read is *pending*
 * from the moment it is read (sf_offsets_track) until the processor is done
 * with it (sf_offsets_done): its job was committed and announced, or its
 * dead letter was delivered, or it needed nothing. The watermark of a
 * partition, the offset to commit, is the oldest pending offset, or one
 * past the newest offset read when nothing is pending. A crash at any point
 * therefore re-reads every event whose work was not finished.
 *
 * Jobs end in any order, so "done" marks holes in the middle. A partition
 * keeps its pending offsets in one ascending array; done entries become
 * tombstones, skipped when they reach the front and compacted when they
 * outnumber the live ones. Memory is thus bounded by the number of pending
 * messages (which the processor bounds with back-pressure), not by the
 * message rate times the age of the oldest open job; track and done are
 * O(1) amortised and O(log n) respectively.
 *
 * Rebalances: a partition is tracked between sf_offsets_assign and
 * sf_offsets_revoke. Each assignment gets a new generation; a position is
 * (partition, generation, offset), and sf_offsets_done ignores positions of
 * an older generation, so the late end of a job dropped by a revoke can
 * never move the offset of a later assignment of the same partition.
 *
 * No Kafka calls here and no threads: the poll loop owns it.
 */
#ifndef SF_OFFSETS_H
#define SF_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"

typedef struct sf_offsets sf_offsets;

/* Partition ids accepted (Kafka's are int32; a sane bound on the array). */
#define SF_OFFSETS_MAX_PARTITION 1000000

/* An empty tracker; freed by sf_offsets_free (accepts NULL). */
sf_code sf_offsets_new(sf_offsets **out, sf_err *err);
void sf_offsets_free(sf_offsets *o);

/* Starts tracking partition p afresh (nothing pending, nothing read) and
 * returns its new generation (never 0). SF_EINVAL for p outside
 * [0, SF_OFFSETS_MAX_PARTITION], SF_ENOMEM. */
sf_code sf_offsets_assign(sf_offsets *o, int32_t p, uint32_t *gen, sf_err *err);
/* Stops tracking p and forgets what was pending there. */
void sf_offsets_revoke(sf_offsets *o, int32_t p);
/* The generation of p's current assignment, or 0 when p is not assigned. */
uint32_t sf_offsets_generation(const sf_offsets *o, int32_t p);

/* A message read at `offset` of p is pending. SF_EINVAL when p is not
 * assigned; SF_ENOMEM. An offset at or below one already tracked (a seek
 * back) is accepted and kept in order. */
sf_code sf_offsets_track(sf_offsets *o, int32_t p, int64_t offset, sf_err *err);
/* The message at `offset` of p (assignment `gen`) needs nothing more. A
 * stale generation or an offset not pending is ignored (returns 0);
 * returns 1 when something was released. */
int sf_offsets_done(sf_offsets *o, int32_t p, uint32_t gen, int64_t offset);

/* The offset p may be committed at (the next one a restart should read):
 * its oldest pending offset, else one past the newest read; -1 when p is
 * not assigned or nothing was read since the assignment. */
int64_t sf_offsets_watermark(sf_offsets *o, int32_t p);

/* The assigned partitions whose watermark moved past what was last
 * recorded with sf_offsets_committed: up to max pairs into parts/offsets;
 * returns how many. */
size_t sf_offsets_uncommitted(sf_offsets *o, int32_t *parts, int64_t *offsets,
                              size_t max);
/* Records that p's offset `offset` was committed. */
void sf_offsets_committed(sf_offsets *o, int32_t p, int64_t offset);

/* The heap bytes the pending offsets take, for the processor's memory
 * bound: 32 each, since a partition's array holds at most twice as many
 * entries as are pending (tombstones included) and grows by doubling. The
 * arrays keep their capacity once the offsets are done (a high-water mark
 * that the bound was kept at when it was reached); that is not counted,
 * or memory no pending work holds would keep the consumer paused. */
size_t sf_offsets_bytes(const sf_offsets *o);

/* Messages pending on all assigned partitions. */
size_t sf_offsets_pending(const sf_offsets *o);
/* Pending messages of p. */
size_t sf_offsets_pending_on(const sf_offsets *o, int32_t p);

#endif
