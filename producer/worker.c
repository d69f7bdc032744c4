/*
 * worker.c - a ShardStaged from a shard file and what the worker knows.
 *
 * Paths are compared after realpath(3) of both the staging root and the
 * shard file, so "..", symlinks and a relative --staging all end up as the
 * same canonical names the processor will resolve. The check is a
 * courtesy to the worker (the processor checks again, as it must trust
 * nothing), but it turns a PATH_ESCAPE or MISSING_FILE dead letter minutes
 * later into an error now, where the mistake was made.
 */
#include "producer/worker.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/base/clock.h"
#include "core/base/fragset.h"
#include "core/base/fsutil.h"
#include "core/catalog/catalog.h"
#include "core/format/segfile.h"
#include "core/vector/quantizer.h"
#include "kafka/deadletters.h"

/* realpath with errors that name the path and what it is. */
static sf_code resolve(const char *path, const char *what, char **out, sf_err *err) {
  *out = realpath(path, NULL);
  if (*out) return SF_OK;
  int e = errno;
  return sf_err_errno(err, e == ENOENT || e == ENOTDIR ? SF_ENOTFOUND : SF_EIO, e,
                      "%s %s", what, path);
}

/* <dataset>/_indices/_staging/<staging_id>, canonical. */
static sf_code staging_root(const sf_worker_info *info, char **out, sf_err *err) {
  *out = NULL;
  const char *sid = info->staging_id;
  if (!*sid || strchr(sid, '/') || !strcmp(sid, ".") || !strcmp(sid, ".."))
    return sf_err_set(err, SF_EINVAL,
                      "staging_id '%s' cannot name a directory (no '/', not '.' or '..')",
                      sid);
  char *ds = NULL;
  sf_code rc = sf_catalog_resolve_dataset(info->dataset_uri, &ds, err);
  if (rc) return rc;
  size_t n = strlen(ds) + strlen(sid) + 32;
  char *root = malloc(n);
  if (!root) {
    free(ds);
    return sf_err_set(err, SF_ENOMEM, "out of memory");
  }
  snprintf(root, n, "%s/_indices/_staging/%s", ds, sid);
  free(ds);
  rc = resolve(root, "staging root", out, err);
  free(root);
  return rc;
}

/* The shard's path relative to root (both canonical), or an error when it
 * is not below it. */
static sf_code relative_to(const char *root, const char *file, const char *given,
                           char **out, sf_err *err) {
  size_t rl = strlen(root);
  if (strncmp(file, root, rl) || file[rl] != '/' || !file[rl + 1])
    return sf_err_set(
        err, SF_EINVAL,
        "shard file %s (%s) is not inside the staging root %s of its dataset "
        "and staging id; stage it there, or fix --dataset-uri/--staging-id",
        given, file, root);
  if (!(*out = strdup(file + rl + 1))) return sf_err_set(err, SF_ENOMEM, "out of memory");
  return SF_OK;
}

void sf_worker_event_id(const sf_shard_staged *e, char *buf, size_t size) {
  /* The content that makes an announcement what it is; not staged_at_ms,
   * so that a retried announcement keeps its id. */
  char *text = NULL;
  size_t tl = 0;
  FILE *f = open_memstream(&text, &tl);
  uint64_t h1 = 0, h2 = 0;
  if (f) {
    fprintf(f, "%s\n%s\n%s\n%s\n%s\n%s\n%s\n%lld %lld %d %d %d %d %016llx %d %lld\n",
            e->dataset_uri, e->index_name, e->column, e->staging_id, e->shard_id,
            e->shard_path, "", (long long)e->shard_bytes, (long long)e->num_rows,
            (int)e->index_type, (int)e->metric, e->dim, e->num_partitions,
            (unsigned long long)e->quantizer_checksum, e->has_target_segment_bytes,
            (long long)e->target_segment_bytes);
    const roaring_bitmap_t *sets[2] = {e->fragments, e->expected_fragments};
    for (int i = 0; i < 2; i++) {
      uint8_t *b = NULL;
      size_t bl = 0;
      if (sets[i] && !sf_fragset_encode(sets[i], &b, &bl, NULL)) fwrite(b, 1, bl, f);
      free(b);
    }
    if (!fclose(f)) {
      XXH128_hash_t h = XXH3_128bits(text, tl);
      h1 = h.high64;
      h2 = h.low64;
    }
    free(text);
  }
  int n = snprintf(buf, size, "%s/%s@%016llx", e->staging_id, e->shard_id,
                   (unsigned long long)h2);
  if (n < 0 || (size_t)n >= size || n > SF_EVENT_ID_MAX)
    snprintf(buf, size, "sf-%016llx%016llx", (unsigned long long)h1,
             (unsigned long long)h2);
}

void sf_worker_producer(char *buf, size_t size) {
  char host[256];
  if (!size) return;
  if (gethostname(host, sizeof host)) snprintf(host, sizeof host, "unknown");
  host[sizeof host - 1] = 0; /* POSIX leaves a cut name unterminated */
  for (char *c = host; *c; c++)
    if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) *c = '?';
  /* The pid names the process: a host name too long for buf is cut so that
   * the pid stays whole. */
  char pid[24];
  int np = snprintf(pid, sizeof pid, "/%ld", (long)getpid());
  size_t room = size > (size_t)np ? size - (size_t)np - 1 : 0;
  if (snprintf(buf, size, "%.*s%s", (int)(room < sizeof host ? room : sizeof host),
               *host ? host : "unknown", pid) >= (int)size)
    buf[size - 1] = 0; /* buf is smaller than a pid: cut, still terminated */
}

static sf_code dup_str(char **dst, const char *src, sf_err *err) {
  if (!(*dst = strdup(src))) return sf_err_set(err, SF_ENOMEM, "out of memory");
  return SF_OK;
}

/* The shard's quantizer must be its staging root's: a shard trained
 * against another quantizer would fail the job with CHECKSUM_MISMATCH. */
static sf_code check_quantizer(const char *root, uint64_t sum, sf_err *err) {
  char *q = sf_fs_join(root, "quantizer");
  if (!q) return sf_err_set(err, SF_ENOMEM, "out of memory");
  uint64_t want = 0;
  sf_err e2 = {0};
  sf_code rc = sf_quant_checksum_of_file(q, &want, &e2);
  if (rc == SF_ENOTFOUND)
    rc = SF_OK; /* nothing to compare with; the processor decides */
  else if (rc)
    sf_err_set(err, rc, "%s", e2.msg);
  else if (want != sum)
    rc = sf_err_set(err, SF_ECHECKSUM,
                    "the shard was encoded with quantizer %016llx, but %s is %016llx; "
                    "re-stage it with this build's quantizer",
                    (unsigned long long)sum, q, (unsigned long long)want);
  free(q);
  return rc;
}

sf_code sf_worker_fill_staged(const sf_worker_info *info, const char *shard_file,
                              sf_shard_staged *out, sf_err *err) {
  memset(out, 0, sizeof *out);
  if (!info->dataset_uri || !info->index_name || !info->column || !info->staging_id ||
      !info->shard_id || !info->expected_fragments || !shard_file)
    return sf_err_set(err, SF_EINVAL,
                      "a worker event needs dataset_uri, index_name, column, staging_id, "
                      "shard_id, expected_fragments and the shard file");
  if (info->target_segment_bytes < 0)
    return sf_err_set(err, SF_EINVAL, "target_segment_bytes %lld < 0",
                      (long long)info->target_segment_bytes);
  char *root = NULL, *file = NULL, *rel = NULL;
  sf_seg_reader *r = NULL;
  sf_code rc;
  if ((rc = staging_root(info, &root, err))) goto out;
  if ((rc = resolve(shard_file, "shard file", &file, err))) goto out;
  if ((rc = relative_to(root, file, shard_file, &rel, err))) goto out;
  if ((rc = sf_seg_open_meta(file, &r, err))) goto out;
  const sf_seg_params *p = sf_seg_get_params(r);
  if (p->kind != SF_SEG_KIND_SHARD) {
    rc = sf_err_set(err, SF_EFORMAT, "%s is a %s file, not a shard", shard_file,
                    sf_seg_kind_name(p->kind));
    goto out;
  }
  if ((rc = check_quantizer(root, p->quantizer_checksum, err))) goto out;

  if ((rc = dup_str(&out->dataset_uri, info->dataset_uri, err)) ||
      (rc = dup_str(&out->index_name, info->index_name, err)) ||
      (rc = dup_str(&out->column, info->column, err)) ||
      (rc = dup_str(&out->staging_id, info->staging_id, err)) ||
      (rc = dup_str(&out->shard_id, info->shard_id, err)))
    goto out;
  out->shard_path = rel;
  rel = NULL;
  out->shard_bytes = (int64_t)sf_seg_file_bytes(r);
  out->num_rows = (int64_t)sf_seg_num_rows(r);
  out->fragments = roaring_bitmap_copy(sf_seg_fragments(r));
  out->expected_fragments = roaring_bitmap_copy(info->expected_fragments);
  if (!out->fragments || !out->expected_fragments) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  out->index_type = p->type;
  out->metric = p->metric;
  out->dim = (int32_t)p->dim;
  out->num_partitions = (int32_t)p->nlist;
  out->quantizer_checksum = p->quantizer_checksum;
  out->has_target_segment_bytes = info->target_segment_bytes > 0;
  out->target_segment_bytes = info->target_segment_bytes;
  out->staged_at_ms = info->staged_at_ms > 0 ? info->staged_at_ms : sf_clock_wall_ms();
  char me[SF_EVENT_ID_MAX + 1];
  if (!info->producer) sf_worker_producer(me, sizeof me);
  const char *producer = info->producer ? info->producer : me;
  if (*producer && (rc = dup_str(&out->producer, producer, err))) goto out;
  if (info->event_id) {
    rc = dup_str(&out->event_id, info->event_id, err);
  } else {
    char id[SF_EVENT_ID_MAX + 1];
    sf_worker_event_id(out, id, sizeof id);
    rc = dup_str(&out->event_id, id, err);
  }
  if (rc) goto out;
  rc = sf_shard_staged_validate(out, NULL, err);
out:
  if (rc) sf_shard_staged_clear(out);
  sf_seg_close(r);
  free(root);
  free(file);
  free(rel);
  return rc;
}

sf_code sf_worker_check(const sf_worker_info *info, const roaring_bitmap_t *fragments,
                        const char *staging_dir, sf_err *err) {
  if (!info->dataset_uri || !info->index_name || !info->column || !info->staging_id ||
      !info->shard_id || !info->expected_fragments || !fragments || !staging_dir)
    return sf_err_set(err, SF_EINVAL,
                      "a worker event needs dataset_uri, index_name, column, staging_id, "
                      "shard_id, expected_fragments and the shard's fragments");
  if (info->target_segment_bytes < 0)
    return sf_err_set(err, SF_EINVAL, "target_segment_bytes %lld < 0",
                      (long long)info->target_segment_bytes);
  /* The event's own rules, on a draft whose fields from the file are
   * placeholders: ids, column, URI, fragments inside expected_fragments. */
  sf_shard_staged d = {.dim = 1,
                       .num_partitions = 1,
                       .has_target_segment_bytes = info->target_segment_bytes > 0,
                       .target_segment_bytes = info->target_segment_bytes};
  size_t pl = strlen(info->shard_id) + sizeof ".sfshard";
  sf_code rc;
  if ((rc = dup_str(&d.event_id, info->event_id ? info->event_id : "draft", err)) ||
      (rc = dup_str(&d.dataset_uri, info->dataset_uri, err)) ||
      (rc = dup_str(&d.index_name, info->index_name, err)) ||
      (rc = dup_str(&d.column, info->column, err)) ||
      (rc = dup_str(&d.staging_id, info->staging_id, err)) ||
      (rc = dup_str(&d.shard_id, info->shard_id, err)))
    goto out;
  d.shard_path = malloc(pl);
  d.fragments = roaring_bitmap_copy(fragments);
  d.expected_fragments = roaring_bitmap_copy(info->expected_fragments);
  if (!d.shard_path || !d.fragments || !d.expected_fragments) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  snprintf(d.shard_path, pl, "%s.sfshard", info->shard_id);
  if ((rc = sf_shard_staged_validate(&d, NULL, err))) goto out;
  /* The shard must land in the staging root the event will name. */
  char *root = NULL, *dir = NULL;
  if (!(rc = staging_root(info, &root, err)) &&
      !(rc = resolve(staging_dir, "staging directory", &dir, err)) && strcmp(root, dir))
    rc =
        sf_err_set(err, SF_EINVAL,
                   "the staging directory %s (%s) is not the staging root %s of the "
                   "dataset and staging id the event names; stage into that root, or fix "
                   "the dataset URI or staging id",
                   staging_dir, dir, root);
  free(root);
  free(dir);
out:
  sf_shard_staged_clear(&d);
  return rc;
}

sf_code sf_worker_publish(sf_publisher *p, const char *topic, const sf_shard_staged *ev,
                          int timeout_ms, sf_delivery *dr, sf_err *err) {
  sf_code rc = sf_shard_staged_validate(ev, NULL, err);
  if (rc) return rc;
  return sf_publish_staged(p, topic, ev, timeout_ms, dr, err);
}

/* The dead-letter watch as a probe of the wait. */
static sf_code dl_probe(void *ctx, int budget_ms, sf_jobstatus *st, sf_err *err) {
  sf_dlwatch_hit hit;
  int found = 0;
  sf_code rc = sf_dlwatch_poll(ctx, budget_ms, &found, &hit, err);
  if (!rc && found) {
    st->state = SF_JOBSTATUS_DEAD_LETTER;
    snprintf(st->reason, sizeof st->reason, "%s", hit.reason);
    snprintf(st->message, sizeof st->message, "%s", hit.message);
  }
  return rc;
}

sf_code sf_worker_wait(const sf_worker_wait_req *req, sf_jobstatus *st, sf_err *err) {
  sf_dlwatch *w = NULL;
  sf_code rc = SF_OK;
  if (req->kconf && sf_kconf_has(req->kconf, "bootstrap.servers")) {
    int64_t since = req->since_ms > 0 ? req->since_ms : sf_clock_wall_ms() - 3600 * 1000;
    if ((rc = sf_dlwatch_new(req->kconf, req->dataset, req->staging_id, since, &w, err)))
      return rc;
  }
  sf_jobstatus_wait_opts o = {.timeout_ms = req->timeout_ms,
                              .probe = w ? dl_probe : NULL,
                              .probe_ctx = w,
                              .cancel = req->cancel};
  rc = sf_jobstatus_wait(req->dataset, req->staging_id, req->index_name, &o, st, err);
  sf_dlwatch_free(w);
  return rc;
}
