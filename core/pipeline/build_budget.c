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
  int granted; /* set by a release that handed this waiter its slot */
} waiter;

struct sf_build_budget {
  pthread_mutex_t mu; /* guards everything below */
  pthread_cond_t cv;  /* a slot was handed to some waiter */
  unsigned slots;     /* the bound */
  unsigned running;   /* slots held */
  unsigned peak;      /* most slots ever held at once */
  uint64_t acquired;  /* slots taken, in total */
  waiter *head, *tail;
  size_t waiting;
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
}

sf_code sf_build_budget_acquire(sf_build_budget *b, int (*stop)(void *ctx), void *ctx) {
  pthread_mutex_lock(&b->mu);
  if (!b->head && b->running < b->slots) {
    b->running++;
    took_one(b);
    pthread_mutex_unlock(&b->mu);
    return SF_OK;
  }
  waiter w = {0};
  if (b->tail)
    b->tail->next = &w;
  else
    b->head = &w;
  b->tail = &w;
  b->waiting++;
  while (!w.granted) {
    if (stop && stop(ctx)) {
      unlink_waiter(b, &w);
      pthread_mutex_unlock(&b->mu);
      return SF_ECANCELED;
    }
    struct timespec until = sf_clock_deadline(STOP_POLL_MS);
    int e = pthread_cond_timedwait(&b->cv, &b->mu, &until);
    (void)e; /* ETIMEDOUT or a wake-up: both check again */
  }
  pthread_mutex_unlock(&b->mu); /* the releaser counted the slot for us */
  return SF_OK;
}

void sf_build_budget_release(sf_build_budget *b) {
  pthread_mutex_lock(&b->mu);
  waiter *w = b->head;
  if (w) {
    /* Hand the slot over: running stays, the oldest waiter holds it now. */
    b->head = w->next;
    if (!b->head) b->tail = NULL;
    b->waiting--;
    w->granted = 1;
    took_one(b);
    pthread_cond_broadcast(&b->cv);
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
  pthread_mutex_unlock(&b->mu);
}
