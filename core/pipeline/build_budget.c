/*
 * build_budget.c - the process-wide bound on segment builds (see build.h).
 *
 * Slots are handed out first come, first served: a release with waiters
 * hands its slot straight to the oldest of them (which never lets a
 * newcomer overtake it), so a job whose builds queued first finishes
 * first, and the oldest pending offsets are the first to move. Waiters are
 * stack nodes in one FIFO list under the budget's mutex; they wake on one
 * condition variable and each checks its own `granted` flag. Waiting is
 * in slices of STOP_POLL_MS so that a stop condition set without a signal
 * (an atomic cancel flag of a revoked job) is noticed promptly; the few
 * wake-ups a second per waiting thread cost nothing next to a build.
 *
 * Background builds (compaction in serve) queue behind every foreground
 * one: a foreground waiter is inserted before the first background waiter,
 * so a slot goes to a background build only when no foreground build
 * waits. A background build that holds a slot calls sf_build_budget_yield
 * between partitions: when a foreground build waits, the slot is handed to
 * it and the background build queues again at the tail. A job's build
 * therefore waits behind a compaction for at most the partition copy that
 * compaction is in the middle of.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/base/clock.h"
#include "core/pipeline/build.h"

#define STOP_POLL_MS 50

typedef struct waiter {
  struct waiter *next;
  int granted;    /* set by a release that handed this waiter its slot */
  int background; /* queued behind every foreground waiter */
} waiter;

struct sf_build_budget {
  pthread_mutex_t mu; /* guards everything below */
  pthread_cond_t cv;  /* a slot was handed to some waiter */
  unsigned slots;     /* the bound */
  unsigned running;   /* slots held */
  unsigned peak;      /* most slots ever held at once */
  uint64_t acquired;  /* slots taken, in total */
  uint64_t yields;    /* slots a background build handed to a foreground one */
  waiter *head, *tail;
  size_t waiting;
  size_t waiting_fg; /* foreground waiters among them (all ahead of the others) */
};

sf_code sf_build_budget_new(unsigned slots, sf_build_budget **out, sf_err *err) {
  *out = NULL;
  if (!slots) return sf_err_set(err, SF_EINVAL, "a build budget needs at least one slot");
  sf_build_budget *b = calloc(1, sizeof *b);
  if (!b) return sf_err_set(err, SF_ENOMEM, "out of memory");
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  int e = pthread_mutex_init(&b->mu, NULL);
  if (!e && (e = pthread_cond_init(&b->cv, &ca))) pthread_mutex_destroy(&b->mu);
  pthread_condattr_destroy(&ca);
  if (e) {
    free(b);
    return sf_err_errno(err, SF_ENOMEM, e, "cannot create the build budget");
  }
  b->slots = slots;
  *out = b;
  return SF_OK;
}

void sf_build_budget_free(sf_build_budget *b) {
  if (!b) return;
  pthread_cond_destroy(&b->cv);
  pthread_mutex_destroy(&b->mu);
  free(b);
}

static void took_one(sf_build_budget *b) {
  b->acquired++;
  if (b->running > b->peak) b->peak = b->running;
}

/* Takes w out of the queue (it gave up before being granted). */
static void unlink_waiter(sf_build_budget *b, waiter *w) {
  waiter **pp = &b->head, *prev = NULL;
  while (*pp && *pp != w) prev = *pp, pp = &(*pp)->next;
  if (!*pp) return;
  *pp = w->next;
  if (b->tail == w) b->tail = prev;
  b->waiting--;
  if (!w->background) b->waiting_fg--;
}

/* Queues w: a background waiter at the tail, a foreground one behind the
 * other foreground waiters and before the first background one. */
static void enqueue(sf_build_budget *b, waiter *w) {
  waiter **pp = &b->head;
  while (*pp && (w->background || !(*pp)->background)) pp = &(*pp)->next;
  w->next = *pp;
  *pp = w;
  if (!w->next) b->tail = w;
  b->waiting++;
  if (!w->background) b->waiting_fg++;
}

/* Waits, under the lock, until w is granted (SF_OK) or stop says so. */
static sf_code wait_granted(sf_build_budget *b, waiter *w, int (*stop)(void *ctx),
                            void *ctx) {
  while (!w->granted) {
    if (stop && stop(ctx)) {
      unlink_waiter(b, w);
      return SF_ECANCELED;
    }
    struct timespec until = sf_clock_deadline(STOP_POLL_MS);
    int e = pthread_cond_timedwait(&b->cv, &b->mu, &until);
    (void)e; /* ETIMEDOUT or a wake-up: both check again */
  }
  return SF_OK; /* the releaser counted the slot for us */
}

static sf_code acquire(sf_build_budget *b, int background, int (*stop)(void *ctx),
                       void *ctx) {
  pthread_mutex_lock(&b->mu);
  if (!b->head && b->running < b->slots) {
    b->running++;
    took_one(b);
    pthread_mutex_unlock(&b->mu);
    return SF_OK;
  }
  waiter w = {.background = background};
  enqueue(b, &w);
  sf_code rc = wait_granted(b, &w, stop, ctx);
  pthread_mutex_unlock(&b->mu);
  return rc;
}

sf_code sf_build_budget_acquire(sf_build_budget *b, int (*stop)(void *ctx), void *ctx) {
  return acquire(b, 0, stop, ctx);
}

sf_code sf_build_budget_acquire_background(sf_build_budget *b, int (*stop)(void *ctx),
                                           void *ctx) {
  return acquire(b, 1, stop, ctx);
}

/* Hands the slot held by the caller to the head waiter. Under the lock. */
static void hand_over(sf_build_budget *b) {
  waiter *w = b->head;
  b->head = w->next;
  if (!b->head) b->tail = NULL;
  b->waiting--;
  if (!w->background) b->waiting_fg--;
  w->granted = 1;
  took_one(b);
  pthread_cond_broadcast(&b->cv);
}

sf_code sf_build_budget_yield(sf_build_budget *b, int (*stop)(void *ctx), void *ctx,
                              int *yielded) {
  if (yielded) *yielded = 0;
  pthread_mutex_lock(&b->mu);
  if (!b->waiting_fg) {
    pthread_mutex_unlock(&b->mu);
    return SF_OK;
  }
  hand_over(b); /* the head is a foreground waiter: they queue first */
  b->yields++;
  if (yielded) *yielded = 1;
  waiter w = {.background = 1};
  enqueue(b, &w);
  sf_code rc = wait_granted(b, &w, stop, ctx);
  pthread_mutex_unlock(&b->mu);
  return rc;
}

void sf_build_budget_release(sf_build_budget *b) {
  pthread_mutex_lock(&b->mu);
  if (b->head) {
    /* Hand the slot over: running stays, the oldest waiter holds it now. */
    hand_over(b);
  } else if (b->running) {
    b->running--;
  }
  pthread_mutex_unlock(&b->mu);
}

void sf_build_budget_get_stats(sf_build_budget *b, sf_build_budget_stats *s) {
  pthread_mutex_lock(&b->mu);
  s->slots = b->slots;
  s->running = b->running;
  s->peak = b->peak;
  s->waiting = b->waiting;
  s->acquired = b->acquired;
  s->yields = b->yields;
  pthread_mutex_unlock(&b->mu);
}
