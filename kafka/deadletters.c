/* deadletters.c - the dead-letter watch of one job (see deadletters.h). */
#include "kafka/deadletters.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/catalog/catalog.h"
#include "schemas/event_decode.h"

#define METADATA_TIMEOUT_MS 10000

struct sf_dlwatch {
  rd_kafka_t *rk;
  sf_schema_set *schemas;
  sf_event_decoder *dec;
  char *dataset; /* canonical */
  char *staging_id;
  char *topic;
};

void sf_dlwatch_free(sf_dlwatch *w) {
  if (!w) return;
  if (w->rk) {
    rd_kafka_consumer_close(w->rk);
    rd_kafka_destroy(w->rk);
  }
  sf_event_decoder_free(w->dec);
  sf_schema_set_free(w->schemas);
  free(w->dataset);
  free(w->staging_id);
  free(w->topic);
  free(w);
}

/* Assigns every partition of the topic from the first offset at or after
 * since_ms (the end where none is). */
static sf_code assign_from(sf_dlwatch *w, int64_t since_ms, sf_err *err) {
  rd_kafka_topic_t *t = rd_kafka_topic_new(w->rk, w->topic, NULL);
  const struct rd_kafka_metadata *md = NULL;
  rd_kafka_resp_err_t e = t ? rd_kafka_metadata(w->rk, 0, t, &md, METADATA_TIMEOUT_MS)
                            : RD_KAFKA_RESP_ERR__FAIL;
  if (t) rd_kafka_topic_destroy(t);
  if (e || !md || md->topic_cnt != 1 || md->topics[0].err) {
    sf_code rc =
        sf_err_set(err, SF_EIO, "no metadata for the dead-letter topic %s: %s", w->topic,
                   rd_kafka_err2str(e                     ? e
                                    : md && md->topic_cnt ? md->topics[0].err
                                                          : RD_KAFKA_RESP_ERR__FAIL));
    if (md) rd_kafka_metadata_destroy(md);
    return rc;
  }
  rd_kafka_topic_partition_list_t *l =
      rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
  for (int i = 0; i < md->topics[0].partition_cnt; i++)
    rd_kafka_topic_partition_list_add(l, w->topic, md->topics[0].partitions[i].id)
        ->offset = since_ms;
  rd_kafka_metadata_destroy(md);
  e = rd_kafka_offsets_for_times(w->rk, l, METADATA_TIMEOUT_MS);
  for (int i = 0; i < l->cnt; i++)
    if (e || l->elems[i].err || l->elems[i].offset < 0)
      l->elems[i].offset = e ? RD_KAFKA_OFFSET_BEGINNING : RD_KAFKA_OFFSET_END;
  e = rd_kafka_assign(w->rk, l);
  rd_kafka_topic_partition_list_destroy(l);
  return e ? sf_err_set(err, SF_EIO, "cannot read %s: %s", w->topic, rd_kafka_err2str(e))
           : SF_OK;
}

sf_code sf_dlwatch_new(const sf_kconf *k, const char *dataset, const char *staging_id,
                       int64_t since_ms, sf_dlwatch **out, sf_err *err) {
  *out = NULL;
  if (!sf_kconf_has(k, "bootstrap.servers"))
    return sf_err_set(err, SF_EINVAL, "watching dead letters needs bootstrap.servers");
  sf_dlwatch *w = calloc(1, sizeof *w);
  sf_kconf *c = sf_kconf_dup(k);
  sf_framing framing = SF_FRAMING_AUTO;
  rd_kafka_conf_t *conf = NULL;
  sf_code rc = SF_OK;
  if (!w || !c || !(w->staging_id = strdup(staging_id)) ||
      !(w->topic = strdup(
            sf_kconf_get_or(k, SF_KCONF_TOPIC_REJECTED, SF_TOPIC_REJECTED_DEFAULT)))) {
    rc = sf_err_set(err, SF_ENOMEM, "out of memory");
    goto out;
  }
  if ((rc = sf_catalog_resolve_dataset(dataset, &w->dataset, err)) ||
      (rc = sf_framing_parse(sf_kconf_get_or(k, SF_KCONF_FRAMING, "auto"), &framing,
                             err)) ||
      (rc = sf_schema_set_new(&w->schemas, err)) ||
      (rc = sf_event_decoder_new(w->schemas, framing, 0, &w->dec, err)))
    goto out;
  /* A reader, not a member: no group state is kept or committed. */
  if ((rc = sf_kconf_set(c, "group.id", "segforge-wait", err)) ||
      (rc = sf_kconf_set(c, "enable.auto.commit", "false", err)) ||
      (rc = sf_kconf_set(c, "enable.auto.offset.store", "false", err)))
    goto out;
  if ((rc = sf_kconf_build_err(c, &conf, err))) goto out;
  char es[512];
  if (!(w->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, es, sizeof es))) {
    rd_kafka_conf_destroy(conf);
    rc = sf_err_set(err, SF_EINVAL, "cannot create the consumer: %s", es);
    goto out;
  }
  rd_kafka_poll_set_consumer(w->rk);
  rc = assign_from(w, since_ms, err);
out:
  sf_kconf_free(c);
  if (rc)
    sf_dlwatch_free(w);
  else
    *out = w;
  return rc;
}

/* Whether the dead letter r is of the watched job. */
static int is_ours(sf_dlwatch *w, const sf_shard_rejected *r) {
  if (!r->staging_id || strcmp(r->staging_id, w->staging_id)) return 0;
  sf_shard_staged ev = {0};
  sf_event_reason why;
  int ours = 1;
  if (r->original_value &&
      !sf_event_decode_shard_staged(w->dec, r->original_value, r->original_value_len, &ev,
                                    &why, NULL)) {
    char *dir = NULL;
    ours = !sf_catalog_resolve_dataset(ev.dataset_uri, &dir, NULL) &&
           !strcmp(dir, w->dataset);
    free(dir);
  }
  sf_shard_staged_clear(&ev);
  return ours;
}

sf_code sf_dlwatch_poll(sf_dlwatch *w, int timeout_ms, int *found, sf_dlwatch_hit *hit,
                        sf_err *err) {
  *found = 0;
  int wait = timeout_ms > 0 ? timeout_ms : 0;
  rd_kafka_message_t *m;
  while ((m = rd_kafka_consumer_poll(w->rk, wait))) {
    wait = 0; /* then only what is there already */
    if (!m->err) {
      sf_event ev = {0};
      sf_event_reason why;
      if (!sf_event_decode(w->dec, m->payload, m->len, &ev, &why, NULL) &&
          ev.type == SF_EVENT_SHARD_REJECTED && is_ours(w, &ev.u.rejected)) {
        const sf_shard_rejected *r = &ev.u.rejected;
        *found = 1;
        snprintf(hit->reason, sizeof hit->reason, "%s",
                 r->reason ? r->reason : "UNKNOWN");
        if (snprintf(hit->message, sizeof hit->message,
                     "%s (shard %s; dead letter %s[%d]@%lld)",
                     r->message ? r->message : "", r->shard_id ? r->shard_id : "?",
                     w->topic, (int)m->partition,
                     (long long)m->offset) >= (int)sizeof hit->message)
          memcpy(hit->message + sizeof hit->message - 4, "...", 4);
      }
      sf_event_clear(&ev);
    } else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      sf_err_set(err, SF_EIO, "reading %s: %s", w->topic, rd_kafka_message_errstr(m));
      int fatal = m->err == RD_KAFKA_RESP_ERR__FATAL;
      rd_kafka_message_destroy(m);
      if (fatal) return SF_EIO;
      continue;
    }
    rd_kafka_message_destroy(m);
    if (*found) return SF_OK;
  }
  return SF_OK;
}
