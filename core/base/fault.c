/*
 * fault.c - see fault.h.
 *
 * The table of armed points is process-wide, written once under a mutex
 * when the first point is reached and read without a lock afterwards (the
 * `loaded` flag publishes it). It lives in static storage, so reading the
 * environment allocates nothing: the allocation-failure tests run with the
 * module in place and see no allocation of its own.
 */
#include "core/base/fault.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SF_FAULT_MAX_LEN 4096 /* longer values are refused, not parsed */

static const struct {
  const char *name;
  int can_fail; /* the call site returns the error to its caller */
} points[] = {
    {"build.mid_segment", 1},           {"build.after_segment", 0},
    {"build.slow_partition", 0},        {"catalog.before_quantizer_rename", 1},
    {"catalog.torn_temp", 0},           {"catalog.before_link", 1},
    {"catalog.after_link", 1},          {"catalog.pause_before_lock", 0},
    {"serve.after_consume", 0},         {"serve.after_commit", 0},
    {"serve.after_publish", 0},         {"serve.producer_fatal", 0},
    {"serve.compact_mid", 0},           {"serve.after_compact", 0},
    {"segwrite.no_copy_file_range", 0},
};
#define NPOINTS (sizeof points / sizeof points[0])

static pthread_mutex_t load_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int loaded; /* the table below reflects SF_FAULT */
static int any;           /* some point is armed */
static sf_fault_action armed[NPOINTS];
static char bad[160]; /* the first wrong entry, for check_env */

static int find(const char *name, size_t len) {
  for (size_t i = 0; i < NPOINTS; i++)
    if (strlen(points[i].name) == len && !memcmp(points[i].name, name, len))
      return (int)i;
  return -1;
}

/* One entry "<point>[=<action>]" of length len; records what is wrong in
 * `bad` (first problem only) and arms nothing for it. */
static void parse_entry(const char *s, size_t len) {
  const char *eq = memchr(s, '=', len);
  size_t nlen = eq ? (size_t)(eq - s) : len;
  int i = find(s, nlen);
  sf_fault_action a = SF_FAULT_CRASH;
  if (eq) {
    size_t alen = len - nlen - 1;
    if (alen == 4 && !memcmp(eq + 1, "fail", 4))
      a = SF_FAULT_FAIL;
    else if (!(alen == 5 && !memcmp(eq + 1, "crash", 5)))
      a = SF_FAULT_OFF;
  }
  /* A point named twice would be armed by whichever comes last: a crash
   * test would quietly run as a failure test, or the other way round. */
  if (i >= 0 && armed[i] != SF_FAULT_OFF) {
    if (!bad[0])
      snprintf(bad, sizeof bad, "'%.*s': the point is named twice; name it once",
               (int)(nlen > 64 ? 64 : nlen), s);
    return;
  }
  if (i >= 0 && a != SF_FAULT_OFF && (a != SF_FAULT_FAIL || points[i].can_fail)) {
    armed[i] = a;
    any = 1;
    return;
  }
  if (bad[0]) return;
  const char *why = i < 0               ? "no such fault point"
                    : a == SF_FAULT_OFF ? "the action must be crash or fail"
                                        : "this point cannot fail, only crash";
  snprintf(bad, sizeof bad, "'%.*s': %s", len > 64 ? 64 : (int)len, s, why);
}

static void load(void) {
  pthread_mutex_lock(&load_mu);
  if (!atomic_load_explicit(&loaded, memory_order_relaxed)) {
    memset(armed, 0, sizeof armed);
    any = 0;
    bad[0] = '\0';
    const char *f = getenv(SF_FAULT_ENV);
    if (f && strlen(f) > SF_FAULT_MAX_LEN) {
      strcpy(bad, "the value is longer than 4096 bytes");
      f = NULL;
    }
    if (f && !*f) f = NULL; /* set but empty: nothing armed */
    while (f) {
      const char *e = strchr(f, ',');
      size_t len = e ? (size_t)(e - f) : strlen(f);
      if (len)
        parse_entry(f, len);
      else if (!bad[0]) /* ",", "x,,y", a comma at either end: a typo */
        strcpy(bad, "an empty entry (two commas, or one at either end)");
      f = e ? e + 1 : NULL;
    }
    atomic_store_explicit(&loaded, 1, memory_order_release);
  }
  pthread_mutex_unlock(&load_mu);
}

sf_fault_action sf_fault_get(const char *point) {
  if (!atomic_load_explicit(&loaded, memory_order_acquire)) load();
  if (!any) return SF_FAULT_OFF;
  int i = find(point, strlen(point));
  return i < 0 ? SF_FAULT_OFF : armed[i];
}

_Noreturn void sf_fault_crash(void) {
  raise(SIGKILL);
  _exit(137); /* not reached: SIGKILL cannot be caught */
}

sf_code sf_fault_point(const char *point, sf_err *err) {
  switch (sf_fault_get(point)) {
    case SF_FAULT_CRASH:
      sf_fault_crash();
    case SF_FAULT_FAIL:
      return sf_err_set(err, SF_EIO, "a failure injected at fault point %s (%s)", point,
                        SF_FAULT_ENV);
    default:
      return SF_OK;
  }
}

sf_code sf_fault_check_env(sf_err *err) {
  if (!atomic_load_explicit(&loaded, memory_order_acquire)) load();
  if (!bad[0]) return SF_OK;
  return sf_err_set(err, SF_EINVAL, "%s: %s (the points are listed in docs/testing.md)",
                    SF_FAULT_ENV, bad);
}

void sf_fault_reload(void) {
  pthread_mutex_lock(&load_mu);
  atomic_store_explicit(&loaded, 0, memory_order_relaxed);
  pthread_mutex_unlock(&load_mu);
  load();
}
