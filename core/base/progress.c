/* progress.c - see progress.h. */
#include "core/base/progress.h"

#include <stdio.h>
#include <time.h>

#include "core/base/clock.h"

double sf_progress_now(void) {
  return sf_clock_mono_s();
}

void sf_progress_init(sf_progress *p, double now, double min_interval) {
  p->start = now;
  p->last = now - min_interval - 1;
  p->min_interval = min_interval;
}

void sf_progress_bytes(uint64_t bytes, char *buf, size_t len) {
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = (double)bytes;
  unsigned u = 0;
  while (v >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%llu B", (unsigned long long)bytes);
  else
    snprintf(buf, len, "%.1f %s", v, units[u]);
}

int sf_progress_line(sf_progress *p, double now, uint64_t done, uint64_t total,
                     const char *extra, int final, char *buf, size_t len) {
  if (!final && now - p->last < p->min_interval) return 0;
  p->last = now;
  char d[32], t[32], rate[48] = "-", eta[32] = "ETA -";
  sf_progress_bytes(done, d, sizeof d);
  sf_progress_bytes(total, t, sizeof t);
  double secs = now - p->start;
  double bps = secs > 0 ? (double)done / secs : 0;
  if (bps >= 1) {
    char r[32];
    sf_progress_bytes((uint64_t)bps, r, sizeof r);
    snprintf(rate, sizeof rate, "%s/s", r);
    if (done < total) {
      unsigned long long left = (unsigned long long)((double)(total - done) / bps + 0.5);
      if (left >= 3600)
        snprintf(eta, sizeof eta, "ETA %llu:%02llu:%02llu", left / 3600, left / 60 % 60,
                 left % 60);
      else
        snprintf(eta, sizeof eta, "ETA %llu:%02llu", left / 60, left % 60);
    } else {
      snprintf(eta, sizeof eta, "%.1f s", secs);
    }
  }
  unsigned pct = total ? (unsigned)(done >= total ? 100 : done * 100 / total) : 100;
  snprintf(buf, len, "%s / %s  %u%%  %s  %s%s%s", d, t, pct, rate, eta, extra ? "  " : "",
           extra ? extra : "");
  return 1;
}
