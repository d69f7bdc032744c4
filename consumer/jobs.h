/*
 * jobs.h - the job table of the stream processor: ShardStaged events grouped
 * by dataset and staging id, with the design's job rules, completion by fragment
 * coverage, and staging timeouts. No Kafka and no threads here: the table is
 * fed one event at a time by the processor's poll loop (processor/processor.h)
 * and says what that event means, so every rule can be tested as data.
 *
 * A job is keyed by its dataset in the canonical form
 * (sf_catalog_resolve_dataset: one string for /p, /p/ and file:///p) and
 * its staging id: two datasets may use the same staging id (a "nightly"
 * build of each) without meeting. The caller canonicalises the dataset
 * (the processor through sf_intake_dataset, with a cache) and passes it;
 * the table keeps one copy of each dataset's name, shared by its jobs.
 * Events of one job may spell the dataset differently: only the canonical
 * form is compared.
 *
 * One call, sf_jobs_add, classifies an event against its job:
 *
 *   NEW        a shard the open job did not have; the job is still incomplete
 *   COMPLETE   that shard made the union of the job's fragments equal to its
 *              expected_fragments: the job is now READY for finalize
 *   DUPLICATE  a redelivery (same shard_id, same content): nothing changed;
 *              the event's position is attached to the job so its offset
 *              moves only when the job ends
 *   REJECTED   this event alone is refused (its file is missing, corrupt or
 *              does not match it; or its job failed before, JOB_FAILED; or
 *              it conflicts with a job already handed to finalize, or with
 *              one committed, COMMITTED_CONFLICT): the job, if any, is
 *              unchanged and the event goes to the dead letters
 *   FAILED     the event failed its open job: same shard_id with other
 *              content (DUPLICATE_CONFLICT), a fragment already in another
 *              shard (FRAGMENT_OVERLAP), job parameters that differ
 *              (PARAM_MISMATCH, or CHECKSUM_MISMATCH for the quantizer), or
 *              read from another partition than the job's first shard
 *              (INVALID_FIELD: a job's events must share a partition). The
 *              job is FAILED; every event of it goes to the dead letters
 *   LATE       a redelivery of a committed job: nothing to do
 *   HELD       the event cannot be classified yet, for its dataset's sake:
 *              a hook failed with an I/O error or could not read the
 *              dataset's catalog (err says what), or an earlier event of
 *              its job waits already. The table keeps it, unclassified,
 *              in its job's waiting queue (see "Held at intake" below)
 *   ERROR      the process's own failure (out of memory): err says what;
 *              the caller stops, and a restart retries
 *
 * "Same content" means every field except event_id and staged_at_ms: a
 * worker that re-announces the same shard file after a restart (new event
 * id, new time) is a redelivery, not a conflict.
 *
 * Once a job is READY (handed to finalize) it is consistent and complete; a
 * later event that contradicts it is REJECTED alone, never fails the job
 * retroactively, because its commit may already be durable.
 *
 * Committed jobs: the terminal record of a job this process committed
 * whole keeps 64-bit digests of its job parameters (expected fragments
 * included) and of each shard (shard_id; its path, size, rows and
 * fragments). A later event of it is LATE when it is a redelivery (same
 * parameters, a shard id it had with the same content), and REJECTED with
 * COMMITTED_CONFLICT when it contradicts it: a shard id it did not have,
 * the same shard id with other content, other parameters. Such an event
 * was dropped silently before; its sender must learn that its work is not
 * in the index. A job whose content this process does not know (committed
 * earlier and read again after a restart, or found in the catalog after it
 * failed) takes every later event as LATE, as does a staging id whose
 * terminal record was dropped (it is found again in the catalog).
 *
 * Outside checks are hooks (sf_jobs_hooks), so the table stays pure: when a
 * job is seen first (`open`: does the service serve its dataset? is it
 * marked failed on disk, or committed?) and when a new shard is about to join a job
 * (`check`: does its file exist inside the staging root, open as a valid shard and match
 * the event?). Redeliveries and events that fail a job never reach `check`,
 * so no file is opened twice for the same shard.
 *
 * Held at intake: when a hook fails not by the event's fault nor for
 * want of memory (an I/O error of the dataset's file system, a catalog
 * version that does not read), the event is neither refused nor a reason
 * to stop: it is HELD. The table keeps it whole, with its bytes and its
 * position, at the end of its job's `waiting` queue; a job seen first by
 * that event is a WAITING record with no shard. Every later event of the
 * job (same dataset, same staging id) queues behind it unclassified, so
 * none overtakes it: the job's outcome is the one its events would have
 * given in the order read. The caller retries: sf_jobs_take_waiting hands
 * the queue back, in order, to be added again one by one (the first that
 * is HELD again queues the rest behind it once more). A job with events
 * waiting never times out (its missing shards may be among them): at its
 * deadline it gets a full timeout more. Other jobs, of the same dataset
 * too, are classified as usual.
 *
 * Timeouts: a job's deadline is the arrival time of its first event plus
 * the staging timeout, plus the time the processor kept its consumer paused
 * since (sf_jobs_extend_deadlines). Arrival (not staged_at_ms) is used so
 * that a restart after a long outage re-reads old events without failing
 * every job at once. Open jobs are kept in arrival order, so expiry is O(1)
 * per job.
 *
 * Memory: an open job owns its decoded events and their original bytes (a
 * dead letter carries them); a finished job keeps only a small terminal
 * record (its key and state, and for a committed job the digests above)
 * so late redeliveries are recognised without I/O. At most `max_terminal`
 * such records are kept, and at most `max_terminal_bytes` of them, oldest
 * dropped first; a staging id whose record was dropped is recognised again
 * from the catalog or its failed marker by the processor.
 *
 * What a job costs is counted as the heap sees it, since the processor's
 * memory bound (--max-pending-bytes) is only as true as the count: every
 * block it holds at its real size (core/base/memcost.h: malloc's rounding and
 * header included; CRoaring's bitmaps estimated from their containers),
 * in j->cost; the table adds its dataset names and 48 bytes per entry of
 * its hash maps (sf_jobs_stats.bytes; a map is kept at least 3/8 full
 * while it grows, and its capacity left after jobs end is a high-water
 * mark no pending work holds, not counted).
 *
 * What need not be held is not: a shard keeps only its own fields of its
 * event (the job's parameters once, in its first shard; no event id,
 * dataset_uri or staging id), a job of one shard has no separate union
 * bitmap and no shard index, and arrays grow from one slot.
 * tests/test_jobs.c checks the count against what malloc hands out.
 *
 * Not thread-safe: one thread (the poll loop) owns the table. A READY job is
 * read (never written) by one finalize worker while the poll loop may still
 * append positions to its `refs`: the worker must read only the fields
 * documented as immutable once READY.
 */
#ifndef SF_JOBS_H
#define SF_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "core/base/error.h"
#include "core/pipeline/plan.h"
#include "schemas/event.h"

/* Where an event was read: partition, offset, and the generation of the
 * partition's assignment (consumer/offsets.h) so a stale position is ignored. */
typedef struct sf_jobs_ref {
  int32_t partition;
  uint32_t gen;
  int64_t offset;
} sf_jobs_ref;

typedef enum sf_jobs_outcome {
  SF_JOBS_NEW = 0,
  SF_JOBS_COMPLETE,
  SF_JOBS_DUPLICATE,
  SF_JOBS_REJECTED,
  SF_JOBS_FAILED,
  SF_JOBS_LATE,
  SF_JOBS_HELD,
  SF_JOBS_ERROR,
} sf_jobs_outcome;

/* "NEW", "COMPLETE", ... */
const char *sf_jobs_outcome_name(sf_jobs_outcome o);

typedef enum sf_job_state {
  SF_JOB_OPEN = 0,  /* collecting shards */
  SF_JOB_READY,     /* complete; handed to finalize (immutable but refs) */
  SF_JOB_FAILED,    /* failed; its events await the dead letters */
  SF_JOB_COMMITTED, /* terminal record */
  SF_JOB_DEAD,      /* terminal record of a failed job */
  SF_JOB_WAITING,   /* no shard yet: its first event(s) are held at intake */
  SF_JOB_DROPPED,   /* taken out of the table (revoked); freed by its holder */
} sf_job_state;

/* One shard of a job: its event (owned), original bytes (owned) and where
 * it was first read. The event is kept without the parts the job holds
 * once: event_id, dataset_uri and staging_id are NULL in every shard; and
 * index_name, column and expected_fragments in every shard but the first
 * (shards[0] holds the job's parameters; the others were found equal). */
typedef struct sf_jobs_shard {
  sf_shard_staged ev;
  uint8_t *raw;
  size_t raw_len;
  sf_jobs_ref ref;
  char *path; /* the shard file, absolute (from the check hook); owned */
} sf_jobs_shard;

/* A job. Read-only for callers. Fields marked (R) are immutable once READY. */
typedef struct sf_job {
  char *staging_id;    /* (R) owned */
  const char *dataset; /* (R) the dataset in canonical form; the table's, shared */
  sf_job_state state;
  sf_event_reason reason; /* why it failed (FAILED, DEAD) */
  char *message;          /* what a person needs to fix it (FAILED); owned */
  sf_jobs_shard *shards;  /* (R) nshards, in arrival order */
  size_t nshards;
  /* (R) union of the shards' fragments; NULL while the job has one shard
   * (then its fragments are the union). */
  roaring_bitmap_t *covered;
  int64_t first_staged_at_ms; /* (R) smallest staged_at_ms of its shards */
  /* (R) the open hook found it committed already (SF_EEXIST): READY from
   * its first event, whatever its shards; its later events join it as
   * redeliveries until it ends, then are LATE. */
  int committed_earlier;
  int64_t first_seen_ms; /* arrival of the first event (caller's clock) */
  int64_t deadline_ms;   /* first_seen_ms + timeout + time paused since */
  /* Every position read for the job (shards, redeliveries, and the event
   * that failed it): all are released together when the job ends. The poll
   * loop may append to it while the job is READY. */
  sf_jobs_ref *refs;
  size_t nrefs, refs_cap;
  /* The event that failed the job (FAILED by an event), owned; its reason is
   * `reason`, the others are dead-lettered as JOB_FAILED. */
  sf_jobs_shard *trigger;
  void *user; /* the caller's (the processor's in-flight state) */
  /* Events held at intake, in arrival order (an OPEN or WAITING job only;
   * see "Held at intake"): each owns its whole event, its original bytes
   * and its position, which is not in `refs` (it joins them when the event
   * is classified). */
  sf_jobs_shard *waiting;
  size_t nwaiting, waiting_cap;
  size_t waiting_cost; /* heap bytes of their parts beyond the array */
  /* Table internals. */
  struct sf_job *prev, *next; /* open list (arrival order) or terminal FIFO */
  uint32_t *index; /* shard_id -> shards[] slot, open addressing; beyond 8 shards */
  size_t index_cap;
  size_t cost;                /* heap bytes the job holds, all counted (see "Memory") */
  size_t shards_cost;         /* of which its shards' parts beyond their slots */
  struct sf_jobs_dataset *ds; /* the interned dataset (dataset points into it) */
  /* A job this process committed whole: digests of its parameters and of
   * each shard, so that its terminal record tells a redelivery from a
   * contradiction (see "Committed jobs" above). NULL: unknown. */
  uint64_t params_digest;
  struct sf_jobs_seen *seen; /* nseen, sorted */
  size_t nseen;
} sf_job;

/* The outside checks (see the top of this file). Each returns SF_OK, or a
 * failure with *reason set to the event's fault (the event is REJECTED with
 * that reason and err's message) or left SF_REASON_NONE: not the event's
 * fault. Then SF_ENOMEM is the process's (ERROR); any other code says the
 * dataset could not be read (an I/O error, an unreadable catalog), and the
 * event is HELD. */
typedef struct sf_jobs_hooks {
  /* A (dataset, staging id) with no job: may it open one? A dataset the
   * service does not serve is refused (PATH_ESCAPE); a staging id marked
   * failed gives reason JOB_FAILED. SF_EEXIST says the job was committed
   * earlier: a restart is reading its events again, maybe from the middle,
   * so it skips the check hook and is READY at once for the caller to
   * announce it again. NULL: every job may open. */
  sf_code (*open)(void *ctx, const char *dataset, const sf_shard_staged *ev,
                  sf_event_reason *reason, sf_err *err);
  /* A new shard about to join the job (whose dataset is `dataset`): on
   * success *path is the malloc'd absolute path of its file. NULL: accept
   * every shard, its path the event's shard_path. */
  sf_code (*check)(void *ctx, const char *dataset, const sf_shard_staged *ev, char **path,
                   sf_event_reason *reason, sf_err *err);
  void *ctx;
} sf_jobs_hooks;

typedef struct sf_jobs_opts {
  int64_t timeout_ms;        /* staging timeout; <= 0: never */
  size_t max_terminal;       /* terminal records kept; 0 = 65536 */
  size_t max_terminal_bytes; /* and the heap bytes they may take; 0 = any */
  sf_jobs_hooks hooks;
} sf_jobs_opts;

typedef struct sf_jobs sf_jobs;

/* A new empty table (o copied); freed by sf_jobs_free. */
sf_code sf_jobs_new(const sf_jobs_opts *o, sf_jobs **out, sf_err *err);
/* Frees the table and every job it holds (not DROPPED jobs: their holder
 * frees them with sf_jobs_job_free). Accepts NULL. */
void sf_jobs_free(sf_jobs *t);

/* Classifies *ev of `dataset` (its dataset_uri in canonical form; NULL:
 * dataset_uri as it is), read at `ref`, its original bytes raw[len],
 * arriving at now_ms (see the top of this file). On NEW, COMPLETE, FAILED
 * and HELD the table takes over *ev (which is left zeroed) and copies raw;
 * otherwise *ev stays the caller's to clear. *job (may be NULL) is the job
 * concerned, or NULL when there is none (REJECTED before a job exists,
 * LATE). On REJECTED and FAILED, *reason and err say why; on HELD and
 * ERROR, err (for an event queued behind another held one, that it
 * waits). */
sf_jobs_outcome sf_jobs_add(sf_jobs *t, const char *dataset, sf_shard_staged *ev,
                            const uint8_t *raw, size_t len, sf_jobs_ref ref,
                            int64_t now_ms, sf_job **job, sf_event_reason *reason,
                            sf_err *err);

/* The open job with the earliest deadline if it is at or before now_ms, now
 * FAILED with JOB_TIMEOUT; NULL when none has expired. Call until NULL. */
sf_job *sf_jobs_expire(sf_jobs *t, int64_t now_ms);

/* The earliest deadline of the open jobs, or INT64_MAX (the poll loop's
 * sleep bound). */
int64_t sf_jobs_next_deadline(const sf_jobs *t);

/* Moves the deadline of every open job ms later. The processor calls it
 * when its consumer resumes after a pause of ms: while paused it held the
 * jobs' remaining shards back itself, unread in their partitions, and that
 * time must not count against the workers who staged them. O(open jobs),
 * once per pause; the arrival order (= deadline order) is unchanged. */
void sf_jobs_extend_deadlines(sf_jobs *t, int64_t ms);

/* Fails an open or READY job (finalize refused it): state FAILED with
 * reason and message. */
void sf_jobs_fail(sf_jobs *t, sf_job *j, sf_event_reason reason, const char *message);

/* Ends a READY or FAILED job: its events and shards are freed and a terminal
 * record remains, so later events of the staging id are LATE (COMMITTED) or
 * REJECTED with JOB_FAILED (DEAD). `refs` stay valid until this call: read
 * them first. committed != 0 records COMMITTED, also for a FAILED job (a
 * timed-out job that the catalog turns out to hold: late redeliveries of a
 * job committed before a restart); committed == 0 records DEAD. */
void sf_jobs_finish(sf_jobs *t, sf_job *j, int committed);

/* Forgets a job that another consumer now owns (its partition was revoked):
 * it leaves the table with no terminal record. An OPEN or WAITING job is
 * freed now, with its events held at intake (returns NULL); a READY or FAILED job is
 * marked DROPPED and returned: a worker (finalize, dead letters) may still read it, and
 * its holder frees it with sf_jobs_job_free when the worker is done. */
sf_job *sf_jobs_drop(sf_jobs *t, sf_job *j);
/* Frees a DROPPED job. Accepts NULL. */
void sf_jobs_job_free(sf_job *j);

/* Calls fn for every OPEN, READY, FAILED or WAITING job with a position on
 * `partition`, its events held at intake included (a rebalance uses it to
 * drop them); fn may drop the job. */
void sf_jobs_foreach_on_partition(sf_jobs *t, int32_t partition,
                                  void (*fn)(void *ctx, sf_job *j), void *ctx);

/* Calls fn for every live job (OPEN, READY, FAILED, WAITING), in no
 * particular order; fn must not change the table. O(table capacity): for a
 * status report, not for the hot path. */
void sf_jobs_foreach(const sf_jobs *t, void (*fn)(void *ctx, const sf_job *j), void *ctx);

/* The job of (dataset in canonical form, staging id) in any state but
 * DROPPED, or NULL. */
sf_job *sf_jobs_find(const sf_jobs *t, const char *dataset, const char *staging_id);

/* Holds *ev at intake without asking the hooks: the caller could not even
 * tell its dataset (resolving it failed with an I/O error) and keys it
 * under `key`, a name no canonical dataset has, so that the events of the
 * job wait together. Queues it behind the OPEN or WAITING job of (key, ev's
 * staging id), or in a new WAITING record. HELD (the table took *ev over
 * and copied raw) or ERROR (out of memory, or that job is in another
 * state). */
sf_jobs_outcome sf_jobs_hold(sf_jobs *t, const char *key, sf_shard_staged *ev,
                             const uint8_t *raw, size_t len, sf_jobs_ref ref,
                             sf_job **job, sf_err *err);

/* Hands the events held at intake of j back to the caller, in arrival
 * order, to be added again (sf_jobs_add) now that its dataset may read:
 * *n events, each owning its event, bytes and position; the caller owns
 * the array and frees it with sf_jobs_waiting_free, after adding them. A WAITING job (no
 * shard yet) is freed by this call; an OPEN one stays, with nothing waiting. NULL with *n
 * == 0 when nothing waits. */
sf_jobs_shard *sf_jobs_take_waiting(sf_jobs *t, sf_job *j, size_t *n);
/* Frees w[0..n) (what is left of their events, and their bytes) and w.
 * Accepts NULL. */
void sf_jobs_waiting_free(sf_jobs_shard *w, size_t n);

typedef struct sf_jobs_stats {
  size_t open, ready, failed, terminal; /* jobs by state */
  size_t held;   /* jobs with events held at intake (OPEN or WAITING) */
  size_t events; /* positions held by live jobs */
  /* Heap bytes the table holds (see "Memory" above): everything, the
   * bound the processor keeps; of which live jobs', and terminal
   * records'. And the original event bytes live jobs hold. */
  size_t bytes, live_bytes, terminal_bytes;
  size_t raw_bytes;
} sf_jobs_stats;
void sf_jobs_get_stats(const sf_jobs *t, sf_jobs_stats *s);

/* The job's shards as the planner sees them, borrowed from j (valid while j
 * is): out[j->nshards] is caller storage. params.kind/code_size/pq_m are 0. */
void sf_jobs_plan_shards(const sf_job *j, sf_plan_shard *out);

#endif
