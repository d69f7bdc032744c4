/* api_producer.c - sf_producer: ShardStaged announcements over the worker
 * API of producer/ (producer/worker.h, producer/publisher.h). */
#include <stdlib.h>
#include <string.h>

#include "api/api_internal.h"
#include "core/base/fragset.h"
#include "kafka/kconf.h"
#include "producer/publisher.h"
#include "producer/worker.h"

struct sf_producer {
  sf_kconf *conf;
  sf_publisher *pub;
};

static const char *const event_keys[] = {"dataset",
                                         "index",
                                         "column",
                                         "staging_id",
                                         "expected_fragments",
                                         "shard_id",
                                         "target_segment_bytes",
                                         "topic",
                                         "event_id",
                                         NULL};

int sf_producer_new(const char *const *keys, const char *const *values, size_t n,
                    sf_producer **out, sf_error *err) {
  sf_err e = {0};
  if (!out) return sf_api_fail(err, SF_STATUS_INVALID, "sf_producer_new: out is NULL");
  *out = NULL;
  if (n && (!keys || !values))
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_producer_new: %zu properties but no key or value array", n);
  sf_producer *p = calloc(1, sizeof *p);
  if (!p || !(p->conf = sf_kconf_new())) {
    free(p);
    return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) {
    if (!keys[i] || !values[i]) {
      sf_producer_free(p, 0);
      return sf_api_fail(err, SF_STATUS_INVALID, "Kafka property %zu has a NULL %s", i,
                         keys[i] ? "value" : "key");
    }
    if (sf_kconf_set(p->conf, keys[i], values[i], &e)) goto fail;
  }
  if (!sf_kconf_has(p->conf, "bootstrap.servers")) {
    sf_producer_free(p, 0);
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "the Kafka property bootstrap.servers is required (e.g. "
                       "\"kafka1:9092\")");
  }
  if (sf_publisher_new(p->conf, SF_FRAMING_AUTO, &p->pub, &e)) goto fail;
  *out = p;
  return SF_STATUS_OK;
fail:
  sf_producer_free(p, 0);
  return sf_api_from_err(err, &e);
}

int sf_producer_free(sf_producer *p, int timeout_ms) {
  if (!p) return 0;
  int left = sf_publisher_free(p->pub, timeout_ms);
  sf_kconf_free(p->conf);
  free(p);
  return left;
}

/* The shard id a path implies: its file name without ".sfshard". */
static char *shard_id_of(const char *path) {
  const char *base = strrchr(path, '/');
  base = base ? base + 1 : path;
  size_t n = strlen(base), ext = strlen(".sfshard");
  if (n > ext && !strcmp(base + n - ext, ".sfshard")) n -= ext;
  return strndup(base, n);
}

int sf_producer_publish_shard(sf_producer *p, const char *shard_path,
                              const sf_options *event, int timeout_ms,
                              sf_delivery_report *report, sf_error *err) {
  static const char *const required[] = {"dataset", "index", "column", "staging_id",
                                         "expected_fragments"};
  int rc;
  if (!p || !shard_path)
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "sf_producer_publish_shard needs a producer and a shard path");
  if ((rc = sf_api_opts_check(event, "sf_producer_publish_shard", event_keys, err)))
    return rc;
  for (size_t i = 0; i < sizeof required / sizeof *required; i++)
    if (!sf_options_get(event, required[i]))
      return sf_api_fail(err, SF_STATUS_INVALID,
                         "option %s is required to announce a shard (the event's "
                         "dataset, index, column, staging_id and expected_fragments)",
                         required[i]);
  uint64_t target = 0;
  roaring_bitmap_t *expected = NULL;
  if ((rc = sf_api_opt_size(event, "target_segment_bytes", 0, &target, err)) ||
      (rc = sf_api_opt_fragments(event, "expected_fragments", &expected, err)))
    return rc;
  if (target > INT64_MAX) {
    sf_fragset_free(expected);
    return sf_api_fail(err, SF_STATUS_INVALID,
                       "option target_segment_bytes is too large");
  }
  char *derived = NULL;
  const char *shard_id = sf_options_get(event, "shard_id");
  if (!shard_id && !(shard_id = derived = shard_id_of(shard_path))) {
    sf_fragset_free(expected);
    return sf_api_fail(err, SF_STATUS_NOMEM, "out of memory");
  }
  sf_worker_info info = {.dataset_uri = sf_options_get(event, "dataset"),
                         .index_name = sf_options_get(event, "index"),
                         .column = sf_options_get(event, "column"),
                         .staging_id = sf_options_get(event, "staging_id"),
                         .shard_id = shard_id,
                         .expected_fragments = expected,
                         .target_segment_bytes = (int64_t)target,
                         .event_id = sf_options_get(event, "event_id")};
  sf_shard_staged ev;
  sf_delivery dr = {.partition = -1, .offset = -1};
  sf_err e = {0};
  memset(&ev, 0, sizeof ev);
  if (!sf_worker_fill_staged(&info, shard_path, &ev, &e))
    sf_worker_publish(p->pub, sf_options_get(event, "topic"), &ev, timeout_ms, &dr, &e);
  if (report) {
    memset(report, 0, sizeof *report);
    report->partition = dr.partition;
    report->offset = dr.offset;
    if (ev.event_id) {
      size_t n = strlen(ev.event_id);
      if (n >= sizeof report->event_id) n = sizeof report->event_id - 1;
      memcpy(report->event_id, ev.event_id, n);
    }
  }
  sf_shard_staged_clear(&ev);
  sf_fragset_free(expected);
  free(derived);
  return e.code ? sf_api_from_err(err, &e) : SF_STATUS_OK;
}
