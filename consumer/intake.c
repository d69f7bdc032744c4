/* intake.c - see intake.h. */
#include "consumer/intake.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"

static sf_code refuse(sf_event_reason *reason, sf_event_reason r, sf_err *err,
                      sf_code code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static sf_code refuse(sf_event_reason *reason, sf_event_reason r, sf_err *err,
                      sf_code code, const char *fmt, ...) {
  va_list ap;
  char msg[SF_ERR_MSG_MAX];
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  *reason = r;
  return sf_err_set(err, code, "%s", msg);
}

/* Whose fault an errno of resolving or opening an event-supplied path is.
 * The path came from the event, so almost every failure is the event's: a
 * name too long, a link loop, a component that is a file, a file the
 * service may not read. Only a shortage of memory or descriptors and a real
 * I/O error are the machine's (NONE): those stop the service so that a
 * restart retries, while an event's fault must never stop it, or one bad
 * event would crash-loop the service on every restart. */
static sf_event_reason path_errno_reason(int e) {
  switch (e) {
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EIO:
    case ENOBUFS:
    case EINTR:
    case EAGAIN:
    case ESTALE:
      return SF_REASON_NONE;
    case ENAMETOOLONG:
      return SF_REASON_INVALID_FIELD;
    case ELOOP:
      return SF_REASON_PATH_ESCAPE; /* links that never resolve */
    case EISDIR:
    case ENXIO:
    case ENODEV:
    case EOVERFLOW:
    case EFBIG:
      return SF_REASON_CORRUPT_FILE; /* not a readable regular file */
    default:                         /* ENOENT, ENOTDIR, EACCES, EPERM, ... */
      return SF_REASON_MISSING_FILE;
  }
}

/* A failure to resolve or open `path` (errno e) for the event: refused with
 * the reason of e, or an error the caller does not blame on the event. */
static sf_code path_error(sf_event_reason *reason, sf_err *err, int e, const char *what,
                          const char *path) {
  sf_event_reason r = path_errno_reason(e);
  if (r == SF_REASON_NONE)
    return sf_err_errno(err, e == ENOMEM ? SF_ENOMEM : SF_EIO, e, "%s: resolving %s",
                        what, path);
  char why[160];
  snprintf(why, sizeof why, "%s", strerror(e));
  return refuse(reason, r, err, e == ENOENT || e == ENOTDIR ? SF_ENOTFOUND : SF_EINVAL,
                "%s: %s cannot be used: %s", what, path, why);
}

/* Direct-mapped: a job's events usually come together, and a miss costs
 * only the realpath that the cache saves. */
#define CACHE_SLOTS 64

struct sf_intake {
  struct {
    char *root;     /* <dataset>/_indices/_staging/<staging_id> */
    char *resolved; /* its realpath */
  } slot[CACHE_SLOTS];
  struct {
    char *uri;       /* a dataset_uri as events spell it */
    char *canonical; /* sf_catalog_resolve_dataset of it */
  } ds[CACHE_SLOTS];
  char **roots; /* the dataset roots, resolved; none: any dataset */
  size_t nroots;
};

sf_code sf_intake_new(sf_intake **out, const char *const *roots, size_t n, sf_err *err) {
  sf_intake *in = *out = calloc(1, sizeof **out);
  if (!in || (n && !(in->roots = calloc(n, sizeof *in->roots)))) {
    sf_intake_free(in);
    *out = NULL;
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    char *r = realpath(roots[i], NULL);
    struct stat st;
    if (!r || stat(r, &st) || !S_ISDIR(st.st_mode)) {
      int e = r ? ENOTDIR : errno;
      free(r);
      sf_intake_free(in);
      *out = NULL;
      return sf_err_errno(err, SF_EINVAL, e,
                          "dataset root '%s' is not a directory that exists: create it "
                          "or fix the path",
                          roots[i]);
    }
    in->roots[in->nroots++] = r;
  }
  return SF_OK;
}

void sf_intake_free(sf_intake *in) {
  if (!in) return;
  for (size_t i = 0; i < CACHE_SLOTS; i++) {
    free(in->slot[i].root);
    free(in->slot[i].resolved);
    free(in->ds[i].uri);
    free(in->ds[i].canonical);
  }
  for (size_t i = 0; i < in->nroots; i++) free(in->roots[i]);
  free(in->roots);
  free(in);
}

/* Whether the resolved directory dir is one of the roots or lies below one. */
static int under_a_root(const sf_intake *in, const char *dir) {
  for (size_t i = 0; i < in->nroots; i++) {
    const char *r = in->roots[i];
    size_t n = strlen(r);
    if (n == 1 && r[0] == '/') return 1;
    if (!strncmp(dir, r, n) && (dir[n] == '/' || !dir[n])) return 1;
  }
  return 0;
}

/* "a, b, c" of the roots, cut to fit buf. */
static const char *roots_list(const sf_intake *in, char *buf, size_t size) {
  buf[0] = 0;
  for (size_t i = 0, at = 0; i < in->nroots && at < size; i++)
    at += (size_t)snprintf(buf + at, size - at, "%s%s", i ? ", " : "", in->roots[i]);
  return buf;
}

/* The directories of a dataset that the service writes into or reads
 * shards from: each, if it exists, must resolve under a root too, or a link
 * inside a served dataset would lead the service's writes out of it. */
static const char *const dataset_dirs[] = {"_indices",
                                           SF_CATALOG_DIR,
                                           SF_CATALOG_QUANTIZERS_DIR,
                                           SF_CATALOG_SEGMENTS_DIR,
                                           SF_CATALOG_STAGING_DIR,
                                           SF_INTAKE_FAILED_DIR};

/* Whether one of dataset_dirs under the resolved dataset dir is a link
 * that leads outside the roots, or to nowhere (the service would fail on
 * it, or follow it once someone creates its target); one that does not
 * exist yet is fine. If so (1), *rel names it and *target is its malloc'd
 * resolved path (NULL for nowhere, or without memory). -1 when one cannot
 * be resolved for another reason (an I/O error, a loop, no permission:
 * the dataset's state, not the event's) or memory runs out: *rel names it
 * and *eno says why. */
static int dir_escaping(const sf_intake *in, const char *dir, const char **rel,
                        char **target, int *eno) {
  *target = NULL;
  for (size_t i = 0; i < sizeof dataset_dirs / sizeof dataset_dirs[0]; i++) {
    char *p = sf_fs_join(dir, dataset_dirs[i]);
    if (!p) return *rel = dataset_dirs[i], *eno = ENOMEM, -1;
    char *r = realpath(p, NULL);
    int e = errno;
    struct stat st;
    int nowhere = !r && e == ENOENT && !lstat(p, &st) && S_ISLNK(st.st_mode);
    free(p);
    if (!r && e != ENOENT && e != ENOTDIR) return *rel = dataset_dirs[i], *eno = e, -1;
    if (nowhere || (r && !under_a_root(in, r))) {
      *rel = dataset_dirs[i];
      *target = r;
      return 1;
    }
    free(r);
  }
  return 0;
}

/* realpath(root), through the cache; the result is owned by the cache (or,
 * without one, by the caller through *owned). NULL with errno on failure. */
static const char *resolve_root(sf_intake *in, const char *root, char **owned) {
  *owned = NULL;
  size_t k = in ? XXH3_64bits(root, strlen(root)) % CACHE_SLOTS : 0;
  if (in && in->slot[k].root && !strcmp(in->slot[k].root, root))
    return in->slot[k].resolved;
  char *r = realpath(root, NULL);
  if (!r) return NULL;
  char *key = in ? strdup(root) : NULL;
  if (!key) {
    *owned = r; /* no cache (or no memory for it): the caller frees */
    return r;
  }
  free(in->slot[k].root);
  free(in->slot[k].resolved);
  in->slot[k].root = key;
  in->slot[k].resolved = r;
  return r;
}

static char *marker_path(const char *dataset, const char *staging_id) {
  char *dir = sf_fs_join(dataset, SF_INTAKE_FAILED_DIR);
  char *p = dir ? sf_fs_join(dir, staging_id) : NULL;
  free(dir);
  return p;
}

int sf_intake_is_failed(const char *dataset, const char *staging_id) {
  char *p = marker_path(dataset, staging_id);
  if (!p) return errno = ENOMEM, -1;
  struct stat st;
  int r = stat(p, &st) == 0 ? 1 : errno == ENOENT || errno == ENOTDIR ? 0 : -1;
  int e = errno;
  free(p);
  errno = e;
  return r;
}

const char *sf_intake_dataset(sf_intake *in, const sf_shard_staged *ev, char **owned,
                              sf_event_reason *reason, sf_err *err) {
  *owned = NULL;
  const char *uri = ev->dataset_uri;
  size_t k = in ? XXH3_64bits(uri, strlen(uri)) % CACHE_SLOTS : 0;
  if (in && in->ds[k].uri && !strcmp(in->ds[k].uri, uri)) return in->ds[k].canonical;
  sf_err e = {0};
  char *dir = NULL;
  sf_code rc = sf_catalog_resolve_dataset(uri, &dir, &e);
  int eno = errno;
  if (rc == SF_ENOTFOUND) {
    refuse(reason, SF_REASON_MISSING_FILE, err, rc, "dataset of job '%s': %s",
           ev->staging_id, e.msg);
    return NULL;
  }
  if (rc == SF_EINVAL) {
    refuse(reason, SF_REASON_INVALID_FIELD, err, rc, "dataset_uri of job '%s': %s",
           ev->staging_id, e.msg);
    return NULL;
  }
  if (rc == SF_EIO) {
    char what[SF_EVENT_ID_MAX + 32];
    snprintf(what, sizeof what, "dataset of job '%s'", ev->staging_id);
    path_error(reason, err, eno, what, uri);
    return NULL;
  }
  if (rc) {
    sf_err_set(err, rc, "%s", e.msg);
    return NULL;
  }
  char *key = in ? strdup(uri) : NULL;
  if (!key) {
    *owned = dir; /* no cache (or no memory for it): the caller frees */
    return dir;
  }
  free(in->ds[k].uri);
  free(in->ds[k].canonical);
  in->ds[k].uri = key;
  in->ds[k].canonical = dir;
  return dir;
}

sf_code sf_intake_open(void *ctx, const char *dir, const sf_shard_staged *ev,
                       sf_event_reason *reason, sf_err *err) {
  const sf_intake *in = ctx;
  char roots[256];
  int eno = 0;
  if (in && in->nroots && !under_a_root(in, dir)) {
    return refuse(reason, SF_REASON_PATH_ESCAPE, err, SF_EINVAL,
                  "dataset_uri of job '%s': %s is outside the dataset roots this "
                  "service serves (%s); stage under one of them, or start the "
                  "service with --dataset-root for it",
                  ev->staging_id, dir, roots_list(in, roots, sizeof roots));
  }
  const char *rel = NULL;
  char *out = NULL;
  int escaping = in && in->nroots ? dir_escaping(in, dir, &rel, &out, &eno) : 0;
  if (escaping < 0)
    return sf_err_errno(err, eno == ENOMEM ? SF_ENOMEM : SF_EIO, eno,
                        "dataset of job '%s': cannot resolve %s/%s to tell whether it "
                        "stays inside the dataset roots",
                        ev->staging_id, dir, rel);
  if (escaping) {
    sf_code r = refuse(reason, SF_REASON_PATH_ESCAPE, err, SF_EINVAL,
                       "dataset of job '%s': %s/%s is a link to %s, outside the dataset "
                       "roots this service serves (%s); make it a real directory",
                       ev->staging_id, dir, rel, out ? out : "a path that does not exist",
                       roots_list(in, roots, sizeof roots));
    free(out);
    return r;
  }
  int failed = sf_intake_is_failed(dir, ev->staging_id);
  eno = errno;
  if (failed < 0)
    return sf_err_errno(err, eno == ENOMEM ? SF_ENOMEM : SF_EIO, eno,
                        "job '%s': cannot tell whether it failed earlier: cannot stat "
                        "%s/%s/%s",
                        ev->staging_id, dir, SF_INTAKE_FAILED_DIR, ev->staging_id);
  if (failed) {
    return refuse(
        reason, SF_REASON_JOB_FAILED, err, SF_ECANCELED,
        "job '%s' failed earlier (marker %s/%s exists); it stays failed: stage it "
        "again under a new staging id",
        ev->staging_id, SF_INTAKE_FAILED_DIR, ev->staging_id);
  }
  /* A staging id the catalog holds was committed earlier, and a restart is
   * reading its events again from where the group's offsets stood, maybe
   * the middle of the job: it needs no shard check (gc may have removed its
   * staging root) nor its other shards, only its announcement again. A
   * catalog that cannot be read cannot tell: taking the job as new could
   * dead-letter a committed job's events (its staging root gone) or time it
   * out, and the commit would fail on that catalog anyway. It is the
   * dataset's state, not the event's fault: the event is held until the
   * catalog reads (reason NONE, not out of memory). */
  sf_catalog *c = NULL;
  sf_err ce = {0};
  sf_code rc = sf_catalog_open_latest(dir, &c, &ce);
  if (rc == SF_ENOTFOUND) return SF_OK; /* no version yet */
  if (rc)
    return sf_err_set(err, rc,
                      "job '%s': the newest catalog version of %s does not read, so the "
                      "job cannot be told from one committed earlier (%s); restore or "
                      "repair that version",
                      ev->staging_id, dir, ce.msg);
  /* The window, then its archive chunk: a chunk that does not read cannot
   * tell either. */
  int held = 0;
  rc = sf_catalog_lookup_job_cached(c, ev->staging_id, NULL, &held, &ce);
  sf_catalog_free(c);
  if (rc)
    return sf_err_set(err, rc,
                      "job '%s': the job archive of %s does not read, so the job cannot "
                      "be told from one committed earlier (%s); restore or repair it",
                      ev->staging_id, dir, ce.msg);
  return held ? SF_EEXIST : SF_OK;
}

/* Compares the file's header with the event. */
static sf_code match(const sf_seg_reader *r, const char *path, const sf_shard_staged *ev,
                     sf_event_reason *reason, sf_err *err) {
  const sf_seg_params *fp = sf_seg_get_params(r);
  const char *sid = ev->shard_id;
  if (fp->kind != SF_SEG_KIND_SHARD)
    return refuse(reason, SF_REASON_CORRUPT_FILE, err, SF_EFORMAT,
                  "%s is a %s file, not a shard (shard '%s')", path,
                  sf_seg_kind_name(fp->kind), sid);
  if (fp->type != ev->index_type || fp->metric != ev->metric)
    return refuse(reason, SF_REASON_PARAM_MISMATCH, err, SF_EMISMATCH,
                  "shard '%s': the event says %s/%s but %s is %s/%s", sid,
                  sf_index_type_name(ev->index_type), sf_metric_name(ev->metric), path,
                  sf_index_type_name(fp->type), sf_metric_name(fp->metric));
  if (fp->dim != (uint32_t)ev->dim || fp->nlist != (uint32_t)ev->num_partitions)
    return refuse(
        reason, SF_REASON_PARAM_MISMATCH, err, SF_EMISMATCH,
        "shard '%s': the event says dim %d, %d partitions but %s has dim %u, %u "
        "partitions",
        sid, ev->dim, ev->num_partitions, path, fp->dim, fp->nlist);
  if (fp->quantizer_checksum != ev->quantizer_checksum)
    return refuse(reason, SF_REASON_CHECKSUM_MISMATCH, err, SF_ECHECKSUM,
                  "shard '%s': the event says quantizer %016llx but %s was encoded with "
                  "%016llx",
                  sid, (unsigned long long)ev->quantizer_checksum, path,
                  (unsigned long long)fp->quantizer_checksum);
  if (!roaring_bitmap_equals(sf_seg_fragments(r), ev->fragments)) {
    char *a = sf_fragset_format_short(ev->fragments, 6);
    char *b = sf_fragset_format_short(sf_seg_fragments(r), 6);
    sf_code rc = refuse(reason, SF_REASON_INVALID_FIELD, err, SF_EMISMATCH,
                        "shard '%s': the event says fragments %s but %s holds %s", sid,
                        a ? a : "?", path, b ? b : "?");
    free(a);
    free(b);
    return rc;
  }
  if (sf_seg_num_rows(r) != (uint64_t)ev->num_rows ||
      sf_seg_file_bytes(r) != (uint64_t)ev->shard_bytes)
    return refuse(
        reason, SF_REASON_INVALID_FIELD, err, SF_EMISMATCH,
        "shard '%s': the event says %lld rows, %lld bytes but %s has %llu rows, "
        "%llu bytes",
        sid, (long long)ev->num_rows, (long long)ev->shard_bytes, path,
        (unsigned long long)sf_seg_num_rows(r), (unsigned long long)sf_seg_file_bytes(r));
  return SF_OK;
}

/* sf_seg_open_meta failed with SF_EIO, which keeps no errno: open the file once
 * more to learn whether the event named something unreadable (its fault)
 * or the machine failed (a real I/O error). */
static sf_code open_error(const char *path, const sf_shard_staged *ev, const sf_err *e,
                          sf_event_reason *reason, sf_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    int eno = errno;
    if (path_errno_reason(eno) != SF_REASON_NONE)
      return path_error(reason, err, eno, "shard_path", path);
    return sf_err_set(err, SF_EIO, "%s", e->msg);
  }
  struct stat st;
  int regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  close(fd);
  if (!regular)
    return refuse(reason, SF_REASON_CORRUPT_FILE, err, SF_EINVAL,
                  "shard '%s' of job '%s': %s is not a regular file", ev->shard_id,
                  ev->staging_id, path);
  return sf_err_set(err, SF_EIO, "%s", e->msg);
}

sf_code sf_intake_check(void *ctx, const char *dataset, const sf_shard_staged *ev,
                        char **path, sf_event_reason *reason, sf_err *err) {
  char *staging = sf_fs_join(dataset, SF_CATALOG_STAGING_DIR);
  char *root = staging ? sf_fs_join(staging, ev->staging_id) : NULL;
  char *rfile = NULL, *owned = NULL;
  sf_seg_reader *r = NULL;
  sf_code rc = SF_OK;
  free(staging);
  if (!root) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  const char *rroot = resolve_root(ctx, root, &owned);
  if (!rroot) {
    int e = errno;
    if (e == ENOENT || e == ENOTDIR)
      rc = refuse(reason, SF_REASON_MISSING_FILE, err, SF_ENOTFOUND,
                  "shard '%s' of job '%s': the staging root %s does not exist",
                  ev->shard_id, ev->staging_id, root);
    else
      rc = path_error(reason, err, e, "the staging root", root);
    goto out;
  }
  const sf_intake *in = ctx;
  if (in && in->nroots && !under_a_root(in, rroot)) {
    char roots[256];
    rc = refuse(reason, SF_REASON_PATH_ESCAPE, err, SF_EINVAL,
                "shard '%s' of job '%s': the staging root %s resolves to %s, outside the "
                "dataset roots this service serves (%s)",
                ev->shard_id, ev->staging_id, root, rroot,
                roots_list(in, roots, sizeof roots));
    goto out;
  }
  if (!(rfile = sf_fs_join(rroot, ev->shard_path))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  /* The file must be inside the root with every link resolved. The usual
   * shard_path, one plain file name, needs no realpath: lstat says it is
   * not a link. */
  struct stat st;
  int simple =
      !strchr(ev->shard_path, '/') && lstat(rfile, &st) == 0 && S_ISREG(st.st_mode);
  if (!simple) {
    char *real = realpath(rfile, NULL);
    if (!real) {
      int e = errno;
      if (e == ENOENT || e == ENOTDIR)
        rc = refuse(reason, SF_REASON_MISSING_FILE, err, SF_ENOTFOUND,
                    "shard '%s' of job '%s': %s does not exist", ev->shard_id,
                    ev->staging_id, rfile);
      else
        rc = path_error(reason, err, e, "shard_path", rfile);
      goto out;
    }
    size_t n = strlen(rroot);
    if (strncmp(real, rroot, n) || real[n] != '/') {
      rc =
          refuse(reason, SF_REASON_PATH_ESCAPE, err, SF_EINVAL,
                 "shard '%s' of job '%s': %s resolves to %s, outside the staging root %s",
                 ev->shard_id, ev->staging_id, rfile, real, rroot);
      free(real);
      goto out;
    }
    free(rfile);
    rfile = real;
    /* A directory, FIFO or device is no shard; a FIFO must be refused
     * before anything opens it, since opening one blocks. */
    if (stat(rfile, &st) == 0 && !S_ISREG(st.st_mode)) {
      rc = refuse(reason, SF_REASON_CORRUPT_FILE, err, SF_EINVAL,
                  "shard '%s' of job '%s': %s is not a regular file", ev->shard_id,
                  ev->staging_id, rfile);
      goto out;
    }
  }
  sf_err e = {0};
  rc = sf_seg_open_meta(rfile, &r, &e);
  if (rc == SF_ENOTFOUND)
    rc = refuse(reason, SF_REASON_MISSING_FILE, err, rc, "shard '%s': %s", ev->shard_id,
                e.msg);
  else if (rc == SF_ECORRUPT || rc == SF_EFORMAT || rc == SF_EINVAL || rc == SF_ELIMIT)
    rc = refuse(reason, SF_REASON_CORRUPT_FILE, err, rc, "shard '%s': %s", ev->shard_id,
                e.msg);
  else if (rc == SF_EIO)
    rc = open_error(rfile, ev, &e, reason, err);
  else if (rc)
    rc = sf_err_set(err, rc, "%s", e.msg);
  else
    rc = match(r, rfile, ev, reason, err);
  if (!rc) {
    *path = rfile;
    rfile = NULL;
  }
out:
  sf_seg_close(r);
  free(root);
  free(owned);
  free(rfile);
  return rc;
}

sf_code sf_intake_mark_failed(const char *dataset, const char *staging_id,
                              sf_event_reason reason, const char *message, int64_t now_ms,
                              sf_err *err) {
  char *dir = sf_fs_join(dataset, SF_INTAKE_FAILED_DIR);
  char *path = dir ? sf_fs_join(dir, staging_id) : NULL;
  json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "staging_id", staging_id, "reason",
                        sf_event_reason_name(reason), "message", message ? message : "",
                        "failed_at_ms", (json_int_t)now_ms);
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  sf_code rc;
  if (!path || !text)
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
  else if (!(rc = sf_fs_mkdirs(dir, err))) {
    /* The directory may be new: make its entry in _indices/ durable too. */
    char *indices = sf_fs_dirname(dir);
    rc = indices ? sf_fs_fsync_dir(indices, err)
                 : sf_err_set(err, SF_ENOMEM, "out of memory");
    free(indices);
  }
  if (!rc) {
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps leaves room only for the NUL: write len+1 bytes */
    rc = sf_fs_write_atomic(path, text, len + 1, err);
  }
  json_decref(o);
  free(text);
  free(dir);
  free(path);
  return rc;
}
