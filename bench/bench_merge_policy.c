/*
 * bench_merge_policy.c - the merge policy (core/merge_policy) over a
 * simulated life of continuous ingestion: JOBS jobs of varied sizes each
 * commit one segment (a large one may commit several, as the build splits
 * it by the budget); after each commit the policy is asked for merges,
 * which the simulation applies at once (the merged segment's bytes are the
 * sum of its inputs', as a block copy writes), until it wants none - or, with
 * --merges-per-job K, at most K merges per commit.
 *
 * Job sizes: log-normal rows around a median (500 rows by default, sigma
 * 1), times the bytes of a row (136: an IVF_SQ code of dim 128 and its row
 * id), plus rare large jobs (0.1%, 10k..1M rows, log-uniform).
 *
 * It prints, for each order (fragment order, segforge's default, and size
 * order, Lucene's TieredMergePolicy, the reference):
 *   - the segment count over time and its maximum, beside the policy's bound
 *     at that moment: the allowed count (sf_mpolicy_allowed_segments) plus the
 *     segments too large to merge, and how often the count exceeded it;
 *   - write amplification = (bytes the jobs wrote + bytes merges wrote) /
 *     bytes the jobs wrote, beside the estimate and the hard bound of
 *     docs/compaction.md; and the most times any byte was rewritten;
 *   - the largest segment, and the CPU time one policy call takes;
 *   - how many final segments cover one contiguous run of the jobs in
 *     fragment order, and (fragment order) how many merges had to fall back
 *     to size order.
 *
 *   bench_merge_policy [--jobs N] [--seed S] [--order fragments|size|both]
 *       [--merges-per-job K] [--floor-segment-bytes B] [--max-segment-bytes B]
 *       [--segments-per-tier N] [--max-merge-at-once N] [--rows R]
 *       [--row-bytes B] [--sigma S] [--large P] [--late P] [--quiet]
 *
 * --late P: a fraction P of jobs commit after the next one (concurrent
 * builds), so fragment order is not commit order. Built and run by
 * bench/bench_merge_policy.sh; never part of the tests.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/base/rng.h"
#include "core/pipeline/merge_policy.h"

typedef struct seg {
  char id[48];
  uint64_t bytes, rows;
  uint32_t first_fragment;
  unsigned depth;  /* the most times any of its bytes was rewritten */
  uint32_t *frags; /* the first fragments of the job pieces it holds (owned) */
  size_t nfrags;
} seg;

typedef struct opts {
  long jobs, merges_per_job;
  uint64_t seed, rows, row_bytes;
  double sigma, large, late;
  int quiet;
  sf_mpolicy_params p;
} opts;

typedef struct stats {
  uint64_t ingested, written, largest, min_job, max_job;
  size_t max_count, final_count, over_bound, max_excess, bound_at_max, final_bound;
  long max_count_job, merges, merged_segs, calls, out_of_order;
  unsigned max_depth;
  double call_s, call_max_s;
  size_t call_max_n;
  double *call_t; /* every call's seconds, for the percentile */
  size_t call_cap;
  size_t contiguous; /* final segments whose pieces are one run in fragment order */
  uint64_t contiguous_bytes; /* their bytes */
  size_t runs;               /* runs summed over the final segments */
} stats;

/* CPU time of this thread: what a call costs, without the time the
 * scheduler gives to other processes of a busy machine. */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *human(uint64_t b, char *buf, size_t n) {
  const char *u = "BKMGTP";
  double v = (double)b;
  while (v >= 1024 && u[1]) v /= 1024, u++;
  snprintf(buf, n, *u == 'B' ? "%.0f%c" : "%.1f%c", v, *u);
  return buf;
}

static uint64_t parse_bytes(const char *s) {
  char *end;
  double v = strtod(s, &end);
  switch (*end) {
    case 'K':
    case 'k':
      v *= 1024;
      break;
    case 'M':
    case 'm':
      v *= 1024 * 1024;
      break;
    case 'G':
    case 'g':
      v *= 1024.0 * 1024 * 1024;
      break;
    case 'T':
    case 't':
      v *= 1024.0 * 1024 * 1024 * 1024;
      break;
    default:
      break;
  }
  return (uint64_t)v;
}

/* The rows of one job. */
static uint64_t job_rows(sf_rng *r, const opts *o) {
  if (sf_rng_uniform(r) < o->large)
    return (uint64_t)exp(log(10e3) + sf_rng_uniform(r) * log(100.0));
  double v = (double)o->rows * exp(o->sigma * sf_rng_normal(r));
  return v < 1 ? 1 : (uint64_t)v;
}

/* The bound the policy promises for segs[n] (docs/compaction.md): the
 * allowed count of the segments it counts, plus those too large to merge. */
static size_t bound(const opts *o, const seg *s, size_t n) {
  uint64_t counted = 0, min = UINT64_MAX;
  size_t large = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i].bytes < min) min = s[i].bytes;
    if (s[i].bytes > o->p.max_segment_bytes / 2)
      large++;
    else
      counted += s[i].bytes;
  }
  return (size_t)sf_mpolicy_allowed_segments(&o->p, counted, n ? min : 0) + large;
}

/* One policy call on segs[*n]; applies its merges. Returns how many. */
static size_t step(const opts *o, seg *s, size_t *n, sf_mpolicy_segment *in,
                   long *next_id, stats *st) {
  for (size_t i = 0; i < *n; i++)
    in[i] = (sf_mpolicy_segment){.id = s[i].id,
                                 .bytes = s[i].bytes,
                                 .num_rows = s[i].rows,
                                 .first_fragment = s[i].first_fragment};
  sf_mpolicy_plan *plan;
  sf_err err;
  double t0 = cpu_now();
  if (sf_mpolicy_find(&o->p, in, *n, (size_t)o->merges_per_job, &plan, &err)) {
    fprintf(stderr, "bench_merge_policy: %s\n", err.msg);
    exit(1);
  }
  double dt = cpu_now() - t0;
  if ((size_t)st->calls == st->call_cap) {
    st->call_cap = st->call_cap ? 2 * st->call_cap : 4096;
    st->call_t = realloc(st->call_t, st->call_cap * sizeof *st->call_t);
    if (!st->call_t) abort();
  }
  st->call_t[st->calls++] = dt;
  st->call_s += dt;
  if (dt > st->call_max_s) st->call_max_s = dt, st->call_max_n = *n;
  size_t nm = plan->nmerges;
  unsigned char *gone = calloc(*n ? *n : 1, 1);
  seg *out = malloc((nm ? nm : 1) * sizeof *out);
  if (!gone || !out) abort();
  for (size_t k = 0; k < nm; k++) {
    const sf_mpolicy_merge *m = &plan->merges[k];
    seg *r = &out[k];
    memset(r, 0, sizeof *r);
    snprintf(r->id, sizeof r->id, "m%09ld", (*next_id)++);
    r->first_fragment = UINT32_MAX;
    for (size_t j = 0; j < m->nsegs; j++) r->nfrags += s[m->segs[j]].nfrags;
    r->frags = malloc(r->nfrags * sizeof *r->frags);
    if (!r->frags) abort();
    r->nfrags = 0;
    for (size_t j = 0; j < m->nsegs; j++) {
      seg *x = &s[m->segs[j]];
      memcpy(r->frags + r->nfrags, x->frags, x->nfrags * sizeof *x->frags);
      r->nfrags += x->nfrags;
      free(x->frags);
      gone[m->segs[j]] = 1;
      r->bytes += x->bytes;
      r->rows += x->rows;
      if (x->first_fragment < r->first_fragment) r->first_fragment = x->first_fragment;
      if (x->depth + 1 > r->depth) r->depth = x->depth + 1;
    }
    if (r->bytes != m->bytes) abort();
    st->written += r->bytes;
    st->merges++;
    if (o->p.order == SF_MPOLICY_ORDER_FRAGMENTS && !m->contiguous) st->out_of_order++;
    st->merged_segs += (long)m->nsegs;
    if (r->depth > st->max_depth) st->max_depth = r->depth;
    if (r->bytes > st->largest) st->largest = r->bytes;
  }
  size_t w = 0;
  for (size_t i = 0; i < *n; i++)
    if (!gone[i]) s[w++] = s[i];
  for (size_t k = 0; k < nm; k++) s[w++] = out[k];
  *n = w;
  free(gone);
  free(out);
  sf_mpolicy_plan_free(plan);
  return nm;
}

typedef struct piece {
  uint32_t frag;
  size_t seg;
} piece;

static int cmp_piece(const void *a, const void *b) {
  const piece *x = a, *y = b;
  return x->frag < y->frag ? -1 : x->frag > y->frag;
}

/* How many runs of consecutive job pieces (in fragment order) each final
 * segment holds: 1 when it covers one contiguous stretch of the index. */
static void contiguity(const seg *s, size_t n, stats *st) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += s[i].nfrags;
  piece *p = malloc((total ? total : 1) * sizeof *p);
  size_t *runs = calloc(n ? n : 1, sizeof *runs);
  if (!p || !runs) abort();
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < s[i].nfrags; j++) p[k++] = (piece){s[i].frags[j], i};
  qsort(p, total, sizeof *p, cmp_piece);
  for (size_t i = 0; i < total; i++)
    if (i == 0 || p[i - 1].seg != p[i].seg) runs[p[i].seg]++;
  for (size_t i = 0; i < n; i++) {
    st->runs += runs[i];
    if (runs[i] == 1) st->contiguous++, st->contiguous_bytes += s[i].bytes;
  }
  free(p);
  free(runs);
}

static void simulate(const opts *o, stats *st) {
  memset(st, 0, sizeof *st);
  st->min_job = UINT64_MAX;
  sf_rng r;
  sf_rng_seed(&r, o->seed);
  size_t cap = 1024, n = 0;
  seg *s = malloc(cap * sizeof *s);
  sf_mpolicy_segment *in = malloc(cap * sizeof *in);
  long next_id = 0, report = o->jobs / 20 ? o->jobs / 20 : 1;
  uint32_t held_frag = 0;
  uint64_t held_rows = 0;
  long held_j = 0;
  int holding = 0;
  if (!o->quiet)
    printf("  %9s %9s %9s %10s %6s %10s\n", "job", "segments", "bound", "ingested", "WA",
           "largest");
  for (long j = 0; j < o->jobs; j++) {
    uint64_t rows = job_rows(&r, o);
    uint32_t frag = (uint32_t)j * 16; /* room for a large job's pieces */
    /* A late job commits after the next one: hold it for one round. */
    if (!holding && j + 1 < o->jobs && sf_rng_uniform(&r) < o->late) {
      holding = 1, held_frag = frag, held_rows = rows, held_j = j;
      continue;
    }
    long jid = j;
    for (int round = 0; round < 1 + holding; round++) {
      if (round) rows = held_rows, frag = held_frag, jid = held_j, holding = 0;
      uint64_t bytes = rows * o->row_bytes;
      if (bytes < st->min_job) st->min_job = bytes;
      if (bytes > st->max_job) st->max_job = bytes;
      /* The build splits a job over the budget (here: the max) into pieces. */
      uint64_t pieces = (bytes + o->p.max_segment_bytes - 1) / o->p.max_segment_bytes;
      for (uint64_t k = 0; k < pieces; k++) {
        if (n + 1 > cap) {
          cap *= 2;
          s = realloc(s, cap * sizeof *s);
          in = realloc(in, cap * sizeof *in);
          if (!s || !in) abort();
        }
        seg *x = &s[n++];
        memset(x, 0, sizeof *x);
        snprintf(x->id, sizeof x->id, "j%09ld.%02" PRIu64, jid, k);
        x->bytes = bytes / pieces + (k < bytes % pieces);
        x->rows = rows / pieces + (k < rows % pieces);
        x->first_fragment = frag + (uint32_t)k;
        x->frags = malloc(sizeof *x->frags);
        if (!x->frags) abort();
        x->frags[0] = x->first_fragment;
        x->nfrags = 1;
        st->ingested += x->bytes;
        st->written += x->bytes;
        if (x->bytes > st->largest) st->largest = x->bytes;
      }
      while (step(o, s, &n, in, &next_id, st) && !o->merges_per_job) {
      }
      size_t b = bound(o, s, n);
      if (n > st->max_count)
        st->max_count = n, st->max_count_job = j, st->bound_at_max = b;
      if (n > b) {
        st->over_bound++;
        if (n - b > st->max_excess) st->max_excess = n - b;
      }
      st->final_bound = b;
    }
    if (!o->quiet && ((j + 1) % report == 0 || j + 1 == o->jobs)) {
      char h1[16], h2[16];
      printf("  %9ld %9zu %9zu %10s %6.2f %10s\n", j + 1, n, bound(o, s, n),
             human(st->ingested, h1, sizeof h1),
             (double)st->written / (double)st->ingested,
             human(st->largest, h2, sizeof h2));
    }
  }
  st->final_count = n;
  contiguity(s, n, st);
  for (size_t i = 0; i < n; i++) free(s[i].frags);
  free(s);
  free(in);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The base b of a counter that fits `slots` segments between sizes s and F:
 * (b - 1) * log_b(F / s) = slots (docs/compaction.md, "write amplification"). */
static double ladder_base(double ratio, double slots) {
  /* The growth guard never lets a merge grow its largest input by less than
   * 1.5, so neither does the model (a tier too small for a ladder). */
  double lo = 1.5, hi = ratio > 2 ? ratio : 2;
  if ((lo - 1) * log(ratio) / log(lo) > slots) return lo;
  for (int i = 0; i < 200; i++) {
    double b = (lo + hi) / 2;
    if ((b - 1) * log(ratio) / log(b) > slots)
      hi = b;
    else
      lo = b;
  }
  return (lo + hi) / 2;
}

static void print(const opts *o, stats *st) {
  char a[16], b[16], c[16], d[16], e[16];
  const sf_mpolicy_params *p = &o->p;
  uint32_t f = p->max_merge_at_once < p->segments_per_tier ? p->max_merge_at_once
                                                           : p->segments_per_tier;
  double med = (double)(o->rows * o->row_bytes), max = (double)p->max_segment_bytes;
  double fl = (double)p->floor_segment_bytes;
  double wa = (double)st->written / (double)st->ingested;
  /* The model: a counter of base b below the floor, tiers of f above it. */
  double below =
      med < fl ? log(fl / med) / log(ladder_base(fl / med, p->segments_per_tier)) : 0;
  double above = log(max / fmax(fl, fmin(med, max))) / log(f);
  double hard = 2 + log(max / (2.0 * (double)st->min_job)) / log(1.5);
  qsort(st->call_t, (size_t)st->calls, sizeof *st->call_t, cmp_double);
  double p99 = st->call_t[(size_t)((double)(st->calls - 1) * 0.99)];
  printf(
      "  segments: at most %zu (after job %ld; bound then %zu), %zu at the end (bound "
      "%zu);"
      " above the bound after %zu of %ld commits\n",
      st->max_count, st->max_count_job + 1, st->bound_at_max, st->final_count,
      st->final_bound, st->over_bound, o->jobs);
  printf(
      "  write amplification: %.2f = (jobs' + merges' bytes) / jobs' bytes;"
      " model 1 + %.2f below the floor + %.2f above = %.2f; hard bound %.1f\n",
      wa, below, above, 1 + below + above, hard);
  printf(
      "  most rewrites of one byte: %u; largest segment %s (max %s); ingested %s in jobs"
      " of %s..%s\n",
      st->max_depth, human(st->largest, a, sizeof a),
      human(p->max_segment_bytes, b, sizeof b), human(st->ingested, c, sizeof c),
      human(st->min_job, d, sizeof d), human(st->max_job, e, sizeof e));
  printf(
      "  contiguous in fragment order: %zu of %zu segments, %.1f%% of the bytes; %.2f "
      "runs"
      " per segment\n",
      st->contiguous, st->final_count,
      100.0 * (double)st->contiguous_bytes / (double)st->ingested,
      st->final_count ? (double)st->runs / (double)st->final_count : 0.0);
  if (o->p.order == SF_MPOLICY_ORDER_FRAGMENTS)
    printf("  merges in size order because no adjacent run would do: %ld of %ld\n",
           st->out_of_order, st->merges);
  printf(
      "  merges: %ld, %.1f segments each; policy calls: %ld, CPU mean %.1f us, p99 %.1f "
      "us,"
      " max %.1f us (%zu segments)\n",
      st->merges, st->merges ? (double)st->merged_segs / (double)st->merges : 0.0,
      st->calls, 1e6 * st->call_s / (double)st->calls, 1e6 * p99, 1e6 * st->call_max_s,
      st->call_max_n);
  free(st->call_t);
}

static void usage(void) {
  fprintf(
      stderr,
      "usage: bench_merge_policy [--jobs N] [--seed S] [--order fragments|size|both]\n"
      "  [--merges-per-job K] [--floor-segment-bytes B] [--max-segment-bytes B]\n"
      "  [--segments-per-tier N] [--max-merge-at-once N] [--rows R] [--row-bytes B]\n"
      "  [--sigma S] [--large P] [--late P] [--quiet]\n");
  exit(2);
}

int main(int argc, char **argv) {
  opts o = {.jobs = 100000,
            .seed = 11,
            .rows = 500,
            .row_bytes = 136,
            .sigma = 1.0,
            .large = 0.001};
  sf_mpolicy_params_default(&o.p);
  int orders = 3; /* bit 0: fragments, bit 1: size */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--quiet")) {
      o.quiet = 1;
      continue;
    }
    if (!v) usage();
    i++;
    if (!strcmp(a, "--jobs"))
      o.jobs = atol(v);
    else if (!strcmp(a, "--seed"))
      o.seed = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--merges-per-job"))
      o.merges_per_job = atol(v);
    else if (!strcmp(a, "--floor-segment-bytes"))
      o.p.floor_segment_bytes = parse_bytes(v);
    else if (!strcmp(a, "--max-segment-bytes"))
      o.p.max_segment_bytes = parse_bytes(v);
    else if (!strcmp(a, "--segments-per-tier"))
      o.p.segments_per_tier = (uint32_t)atoi(v);
    else if (!strcmp(a, "--max-merge-at-once"))
      o.p.max_merge_at_once = (uint32_t)atoi(v);
    else if (!strcmp(a, "--rows"))
      o.rows = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--row-bytes"))
      o.row_bytes = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--sigma"))
      o.sigma = atof(v);
    else if (!strcmp(a, "--large"))
      o.large = atof(v);
    else if (!strcmp(a, "--late"))
      o.late = atof(v);
    else if (!strcmp(a, "--order"))
      orders = !strcmp(v, "fragments") ? 1
               : !strcmp(v, "size")    ? 2
               : !strcmp(v, "both")    ? 3
                                       : 0;
    else
      usage();
  }
  sf_err err;
  if (sf_mpolicy_params_check(&o.p, &err)) {
    fprintf(stderr, "bench_merge_policy: %s\n", err.msg);
    usage();
  }
  if (!orders || o.jobs < 1 || o.merges_per_job < 0 || !o.rows || !o.row_bytes) usage();
  char fl[16], mx[16];
  printf("%ld jobs, median %" PRIu64 " rows x %" PRIu64
         " bytes, sigma %.2f, %.2f%% large,"
         " %.1f%% late, seed %" PRIu64
         "; policy: floor %s, max %s, %u per tier, %u at once, %s\n",
         o.jobs, o.rows, o.row_bytes, o.sigma, 100 * o.large, 100 * o.late, o.seed,
         human(o.p.floor_segment_bytes, fl, sizeof fl),
         human(o.p.max_segment_bytes, mx, sizeof mx), o.p.segments_per_tier,
         o.p.max_merge_at_once,
         o.merges_per_job ? "merges limited per commit" : "merges run to quiescence");
  for (int k = 0; k < 2; k++) {
    if (!(orders & (1 << k))) continue;
    o.p.order = k ? SF_MPOLICY_ORDER_SIZE : SF_MPOLICY_ORDER_FRAGMENTS;
    printf("%s:\n", k ? "size order (Lucene's TieredMergePolicy, the reference)"
                      : "fragment order (segforge's default)");
    stats st;
    simulate(&o, &st);
    print(&o, &st);
  }
  return 0;
}
